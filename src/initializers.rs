//! Weight initialisation, with Keras's defaults, and the random generator
//! that makes runs reproducible.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// The random generator used everywhere in convnet: seeded, portable, fast.
pub type Rng = ChaCha8Rng;

/// Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`,
/// Keras's default kernel initialiser.
pub fn glorot_uniform(rng: &mut Rng, len: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..len).map(|_| rng.random_range(-limit..limit)).collect()
}
