//! Weight initialisation, with Keras's names, definitions and defaults,
//! and the random generator that makes runs reproducible.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// The random generator used everywhere in convnet: seeded, portable, fast.
pub type Rng = ChaCha8Rng;

/// Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`,
/// Keras's default kernel initialiser.
pub fn glorot_uniform(rng: &mut Rng, len: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    uniform(rng, len, (6.0 / (fan_in + fan_out) as f64).sqrt())
}

/// Keras's kernel initialisers (`kernel_initializer="he_normal"`).
///
/// The "normal" ones draw from a normal distribution truncated at two
/// standard deviations, scaled up (by `1 / 0.87962566103423978`) so that
/// the truncated distribution has the nominal standard deviation, exactly
/// as Keras's `VarianceScaling` does.
///
/// ```
/// use convnet::initializers::{Initializer, Rng};
/// use rand::SeedableRng;
/// let he: Initializer = "he_normal".parse().unwrap();
/// let kernel = he.sample(&mut Rng::seed_from_u64(0), 9 * 16, 9, 9 * 32);
/// assert_eq!(kernel.len(), 144);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Initializer {
    /// `U(-l, l)`, `l = sqrt(6 / (fan_in + fan_out))` (the default).
    #[default]
    GlorotUniform,
    /// Truncated normal, std `sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Truncated normal, std `sqrt(2 / fan_in)`.
    HeNormal,
    /// `U(-l, l)`, `l = sqrt(6 / fan_in)`.
    HeUniform,
    /// Truncated normal, std `sqrt(1 / fan_in)`.
    LecunNormal,
    /// `U(-l, l)`, `l = sqrt(3 / fan_in)`.
    LecunUniform,
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
}

/// Every initialiser with its Keras name.
const NAMES: [(Initializer, &str); 8] = [
    (Initializer::GlorotUniform, "glorot_uniform"),
    (Initializer::GlorotNormal, "glorot_normal"),
    (Initializer::HeNormal, "he_normal"),
    (Initializer::HeUniform, "he_uniform"),
    (Initializer::LecunNormal, "lecun_normal"),
    (Initializer::LecunUniform, "lecun_uniform"),
    (Initializer::Zeros, "zeros"),
    (Initializer::Ones, "ones"),
];

/// The standard deviation of a standard normal truncated to `[-2, 2]`:
/// Keras divides by it so that truncation keeps the intended variance.
const TRUNCATED_STD: f64 = 0.879_625_661_034_239_8;

impl Initializer {
    /// The Keras name, e.g. `"he_normal"`.
    pub fn name(self) -> &'static str {
        crate::error::name_of(&self, &NAMES)
    }

    /// `len` values for a kernel with `fan_in` inputs and `fan_out`
    /// outputs per value (Keras's fans: `k_h·k_w·in_channels` and
    /// `k_h·k_w·filters` for a convolution).
    pub fn sample(self, rng: &mut Rng, len: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
        let (n_in, n_avg) = (fan_in.max(1) as f64, (fan_in + fan_out).max(1) as f64 / 2.0);
        match self {
            // The same draws as ever for the default, to the last bit.
            Initializer::GlorotUniform => glorot_uniform(rng, len, fan_in, fan_out),
            Initializer::GlorotNormal => truncated_normal(rng, len, (1.0 / n_avg).sqrt()),
            Initializer::HeNormal => truncated_normal(rng, len, (2.0 / n_in).sqrt()),
            Initializer::HeUniform => uniform(rng, len, (6.0 / n_in).sqrt()),
            Initializer::LecunNormal => truncated_normal(rng, len, (1.0 / n_in).sqrt()),
            Initializer::LecunUniform => uniform(rng, len, (3.0 / n_in).sqrt()),
            Initializer::Zeros => vec![0.0; len],
            Initializer::Ones => vec![1.0; len],
        }
    }
}

impl std::str::FromStr for Initializer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        crate::error::by_name("initializer", s, &NAMES)
    }
}

/// `len` draws of `U(-limit, limit)`.
fn uniform(rng: &mut Rng, len: usize, limit: f64) -> Vec<f32> {
    let limit = limit as f32;
    (0..len).map(|_| rng.random_range(-limit..limit)).collect()
}

/// `len` draws of a normal of standard deviation `std / TRUNCATED_STD`,
/// redrawn until within two of those deviations (Keras's truncated normal).
fn truncated_normal(rng: &mut Rng, len: usize, std: f64) -> Vec<f32> {
    let scale = std / TRUNCATED_STD;
    (0..len)
        .map(|_| {
            loop {
                let z = standard_normal(rng);
                if z.abs() <= 2.0 {
                    break (z * scale) as f32;
                }
            }
        })
        .collect()
}

/// One draw of `N(0, 1)` (Box–Muller; the second value is dropped, which
/// keeps each draw a pure function of the generator's position).
fn standard_normal(rng: &mut Rng) -> f64 {
    // 1 - U(0, 1) lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Mean and standard deviation.
    fn moments(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    fn sample(init: Initializer, fan_in: usize, fan_out: usize) -> Vec<f32> {
        init.sample(&mut Rng::seed_from_u64(5), 100_000, fan_in, fan_out)
    }

    #[test]
    fn normal_initializers_have_keras_standard_deviations() {
        let cases = [
            (Initializer::HeNormal, (2.0f64 / 50.0).sqrt()),
            (Initializer::LecunNormal, (1.0f64 / 50.0).sqrt()),
            (Initializer::GlorotNormal, (2.0f64 / 150.0).sqrt()),
        ];
        for (init, std) in cases {
            let values = sample(init, 50, 100);
            let (mean, got) = moments(&values);
            assert!(mean.abs() < 0.01 * std, "{init:?}: mean {mean}");
            assert!(
                (got / std - 1.0).abs() < 0.01,
                "{init:?}: std {got} vs {std}"
            );
            // Truncated at two (scaled) deviations.
            let bound = 2.0 * std / TRUNCATED_STD;
            assert!(values.iter().all(|&v| (v as f64).abs() <= bound + 1e-6));
        }
    }

    #[test]
    fn uniform_initializers_fill_their_bounds() {
        let cases = [
            (Initializer::GlorotUniform, (6.0f64 / 150.0).sqrt()),
            (Initializer::HeUniform, (6.0f64 / 50.0).sqrt()),
            (Initializer::LecunUniform, (3.0f64 / 50.0).sqrt()),
        ];
        for (init, limit) in cases {
            let values = sample(init, 50, 100);
            let max = values.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
            assert!(
                max <= limit && max > 0.99 * limit,
                "{init:?}: {max} vs {limit}"
            );
            let (_, std) = moments(&values);
            assert!((std / (limit / 3f64.sqrt()) - 1.0).abs() < 0.01, "{init:?}");
        }
    }

    #[test]
    fn glorot_uniform_draws_what_it_always_drew() {
        // The default must not change the weights of existing seeds.
        let mut a = Rng::seed_from_u64(1);
        let mut b = Rng::seed_from_u64(1);
        assert_eq!(
            glorot_uniform(&mut a, 20, 3, 4),
            Initializer::GlorotUniform.sample(&mut b, 20, 3, 4)
        );
    }

    #[test]
    fn constants_names_and_unknown_names() {
        assert_eq!(sample(Initializer::Zeros, 1, 1)[..3], [0.0; 3]);
        assert_eq!(sample(Initializer::Ones, 1, 1)[..3], [1.0; 3]);
        for (init, name) in NAMES {
            assert_eq!(name.parse::<Initializer>().unwrap(), init);
            assert_eq!(init.name(), name);
        }
        let error = "he".parse::<Initializer>().unwrap_err().to_string();
        assert!(
            error.contains("\"he\"") && error.contains("he_uniform"),
            "{error}"
        );
    }
}
