//! `RandomFlip`: while training, mirrors each image left-right and/or
//! upside down, each with probability one half; at inference, passes
//! images through unchanged.

use super::augment::{Affine, Draws, Sampling, Warp, augmentation_layer};
use super::config::{Config, Fields, config};
use crate::error::{by_name, name_of};
use crate::{Error, Result};

/// Which flips [`RandomFlip`] draws (Keras `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlipMode {
    /// Left-right.
    Horizontal,
    /// Upside down.
    Vertical,
    /// Each of the two, drawn independently (the default).
    #[default]
    HorizontalAndVertical,
}

const FLIP_MODES: [(FlipMode, &str); 3] = [
    (FlipMode::Horizontal, "horizontal"),
    (FlipMode::Vertical, "vertical"),
    (FlipMode::HorizontalAndVertical, "horizontal_and_vertical"),
];

impl FlipMode {
    /// The Keras name, e.g. `"horizontal"`.
    ///
    /// ```
    /// use convnet::layers::FlipMode;
    /// assert_eq!(FlipMode::default().name(), "horizontal_and_vertical");
    /// ```
    pub fn name(self) -> &'static str {
        name_of(&self, &FLIP_MODES)
    }
}

impl std::str::FromStr for FlipMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        by_name("flip mode", s, &FLIP_MODES)
    }
}

/// Random flips while training (Keras `RandomFlip`); the identity at
/// inference. A flip moves whole pixels, so it is exact.
///
/// ```
/// use convnet::layers::{FlipMode, RandomFlip};
/// let flip = RandomFlip::new(FlipMode::Horizontal).input_shape(&[32, 32, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct RandomFlip {
    mode: FlipMode,
    warp: Warp,
}

impl RandomFlip {
    /// Flips drawn as `mode` says.
    pub fn new(mode: FlipMode) -> Self {
        RandomFlip {
            mode,
            // Flipped pixels land on pixels: the sampling never reads outside.
            warp: Warp::new(Sampling::default()),
        }
    }

    /// The layer of a Keras config ([`super::Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let mut layer = RandomFlip::new(fields.named("mode", "horizontal_and_vertical")?);
        layer.warp.input_shape = fields.input_shape()?;
        Ok(layer)
    }

    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Flips left-right when the first draw is below one half, upside down
    /// when the second is (as far as the mode allows).
    fn map(&self, draws: Draws, (h, w): (usize, usize)) -> Affine {
        let horizontal = self.mode != FlipMode::Vertical && draws[0] < 0.5;
        let vertical = self.mode != FlipMode::Horizontal && draws[1] < 0.5;
        let mut map = Affine::IDENTITY;
        if horizontal {
            map.x_map = [-1.0, 0.0, (w - 1) as f64];
        }
        if vertical {
            map.y_map = [0.0, -1.0, (h - 1) as f64];
        }
        map
    }

    fn own_config(&self) -> Config {
        config([("mode", self.mode.name().into())])
    }
}

augmentation_layer!(RandomFlip);
