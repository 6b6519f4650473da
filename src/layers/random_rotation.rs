//! `RandomRotation`: while training, turns each image about its centre by
//! a random angle; at inference, passes images through unchanged.

use super::augment::{
    Affine, Draws, Factor, Sampling, Warp, augmentation_layer, check_range, lerp, sampling_builders,
};
use super::config::{Config, Fields, config, range};
use crate::Result;

/// Random rotations while training (Keras `RandomRotation`); the identity
/// at inference. The angle is drawn uniformly in `factor · 2π`, positive
/// counter-clockwise, and the corners that come from outside the image are
/// filled as [`FillMode`](super::FillMode) says.
///
/// ```
/// use convnet::layers::{FillMode, RandomRotation};
/// // Up to a tenth of a turn either way, corners filled with zeros.
/// let rotate = RandomRotation::new(0.1).fill_mode(FillMode::Constant);
/// // Between no turn and a quarter turn counter-clockwise.
/// let quarter = RandomRotation::new((0.0, 0.25));
/// ```
#[derive(Clone, Debug)]
pub struct RandomRotation {
    /// `(lower, upper)`, in turns.
    factor: (f32, f32),
    warp: Warp,
}

impl RandomRotation {
    /// Angles drawn in `factor` turns (`factor · 2π` radians): `f` for
    /// `[-f, f]`, or `(lower, upper)`.
    pub fn new(factor: impl Into<Factor>) -> Self {
        RandomRotation {
            factor: factor.into().0,
            warp: Warp::new(Sampling::default()),
        }
    }

    /// The layer of a Keras config ([`super::Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let layer = RandomRotation {
            factor: fields.range("factor", None)?,
            warp: Warp::from_config(fields)?,
        };
        layer.check()?;
        Ok(layer)
    }

    fn check(&self) -> Result<()> {
        check_range("RandomRotation", "factor", self.factor, None)
    }

    /// Keras's rotation about the centre: output pixel `(x, y)` reads
    /// the input at `(x, y)` turned by the angle about `((w-1)/2, (h-1)/2)`.
    fn map(&self, draws: Draws, (h, w): (usize, usize)) -> Affine {
        let angle = lerp(self.factor, draws[0]) * std::f64::consts::TAU;
        let (sin, cos) = angle.sin_cos();
        let (w1, h1) = ((w - 1) as f64, (h - 1) as f64);
        Affine {
            x_map: [cos, -sin, (w1 - (cos * w1 - sin * h1)) / 2.0],
            y_map: [sin, cos, (h1 - (sin * w1 + cos * h1)) / 2.0],
        }
    }

    fn own_config(&self) -> Config {
        let mut fields = config([("factor", range(self.factor))]);
        self.warp.sampling.write(&mut fields);
        fields
    }
}

augmentation_layer!(RandomRotation);
sampling_builders!(RandomRotation);
