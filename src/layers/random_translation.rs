//! `RandomTranslation`: while training, shifts each image by a random
//! fraction of its height and width; at inference, passes images through
//! unchanged.

use super::augment::{
    Affine, Draws, Factor, Sampling, Warp, augmentation_layer, check_range, lerp, sampling_builders,
};
use super::config::{Config, Fields, config, range};
use crate::Result;

/// Random shifts while training (Keras `RandomTranslation`); the identity
/// at inference. A factor `f` shifts by up to `f` of the size either way;
/// `(lower, upper)` by a fraction drawn in it (positive: down or right).
/// The part that comes from outside the image is filled as
/// [`FillMode`](super::FillMode) says.
///
/// ```
/// use convnet::layers::{FillMode, RandomTranslation};
/// // Up to 10% up or down, 0 to 20% to the right, the edge pixels repeated.
/// let shift = RandomTranslation::new(0.1, (0.0, 0.2)).fill_mode(FillMode::Nearest);
/// ```
#[derive(Clone, Debug)]
pub struct RandomTranslation {
    height_factor: (f32, f32),
    width_factor: (f32, f32),
    warp: Warp,
}

impl RandomTranslation {
    /// Shifts by fractions of the height and width drawn in the factors:
    /// `f` (for `(-f, f)`) or `(lower, upper)`, each within `[-1, 1]`.
    pub fn new(height_factor: impl Into<Factor>, width_factor: impl Into<Factor>) -> Self {
        RandomTranslation {
            height_factor: height_factor.into().0,
            width_factor: width_factor.into().0,
            warp: Warp::new(Sampling::default()),
        }
    }

    /// The layer of a Keras config ([`super::Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let layer = RandomTranslation {
            height_factor: fields.range("height_factor", None)?,
            width_factor: fields.range("width_factor", None)?,
            warp: Warp::from_config(fields)?,
        };
        layer.check()?;
        Ok(layer)
    }

    fn check(&self) -> Result<()> {
        check_range(
            "RandomTranslation",
            "height_factor",
            self.height_factor,
            Some(1.0),
        )?;
        check_range(
            "RandomTranslation",
            "width_factor",
            self.width_factor,
            Some(1.0),
        )
    }

    /// Output pixel `(x, y)` reads the input at `(x - dx, y - dy)`.
    fn map(&self, draws: Draws, (h, w): (usize, usize)) -> Affine {
        let dy = lerp(self.height_factor, draws[0]) * h as f64;
        let dx = lerp(self.width_factor, draws[1]) * w as f64;
        Affine {
            x_map: [1.0, 0.0, -dx],
            y_map: [0.0, 1.0, -dy],
        }
    }

    fn own_config(&self) -> Config {
        let mut fields = config([
            ("height_factor", range(self.height_factor)),
            ("width_factor", range(self.width_factor)),
        ]);
        self.warp.sampling.write(&mut fields);
        fields
    }
}

augmentation_layer!(RandomTranslation);
sampling_builders!(RandomTranslation);
