//! `RandomZoom`: while training, zooms each image in or out about its
//! centre by a random amount; at inference, passes images through
//! unchanged.

use super::augment::{
    Affine, Draws, Factor, Sampling, Warp, augmentation_layer, check_range, lerp, sampling_builders,
};
use super::config::{Config, Fields, config, range};
use crate::Result;

/// Random zooms while training (Keras `RandomZoom`); the identity at
/// inference. A factor drawn in `height_factor` (`f` for `(-f, f)`, or
/// `(lower, upper)`, within `[-1, 1]`) scales the area the output shows:
/// positive zooms out (the image shrinks, its surroundings filled as
/// [`FillMode`](super::FillMode) says), negative zooms in. Without a
/// `width_factor` both axes take the same draw, keeping the aspect ratio.
///
/// ```
/// use convnet::layers::RandomZoom;
/// // Zoom in by up to 20%, the same on both axes.
/// let zoom = RandomZoom::new((-0.2, 0.0));
/// // Stretch: height and width drawn apart.
/// let stretch = RandomZoom::new(0.1).width_factor(0.3);
/// ```
#[derive(Clone, Debug)]
pub struct RandomZoom {
    height_factor: (f32, f32),
    width_factor: Option<(f32, f32)>,
    warp: Warp,
}

impl RandomZoom {
    /// Zooms drawn in `height_factor`, the same on both axes.
    pub fn new(height_factor: impl Into<Factor>) -> Self {
        RandomZoom {
            height_factor: height_factor.into().0,
            width_factor: None,
            warp: Warp::new(Sampling::default()),
        }
    }

    /// Zooms of the width drawn on their own, in `width_factor`.
    pub fn width_factor(mut self, width_factor: impl Into<Factor>) -> Self {
        self.width_factor = Some(width_factor.into().0);
        self
    }

    /// The layer of a Keras config ([`super::Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let layer = RandomZoom {
            height_factor: fields.range("height_factor", None)?,
            width_factor: fields.optional_range("width_factor")?,
            warp: Warp::from_config(fields)?,
        };
        layer.check()?;
        Ok(layer)
    }

    fn check(&self) -> Result<()> {
        check_range("RandomZoom", "height_factor", self.height_factor, Some(1.0))?;
        match self.width_factor {
            Some(width) => check_range("RandomZoom", "width_factor", width, Some(1.0)),
            None => Ok(()),
        }
    }

    /// Keras's zoom about the centre: output pixel `(x, y)` reads the
    /// input at `c + z · ((x, y) - c)`, `c` the centre, `z = 1 + factor`.
    fn map(&self, draws: Draws, (h, w): (usize, usize)) -> Affine {
        let zoom_y = 1.0 + lerp(self.height_factor, draws[0]);
        let zoom_x = self
            .width_factor
            .map_or(zoom_y, |width| 1.0 + lerp(width, draws[1]));
        let (w1, h1) = ((w - 1) as f64, (h - 1) as f64);
        Affine {
            x_map: [zoom_x, 0.0, w1 / 2.0 * (1.0 - zoom_x)],
            y_map: [0.0, zoom_y, h1 / 2.0 * (1.0 - zoom_y)],
        }
    }

    fn own_config(&self) -> Config {
        let width = self.width_factor.map_or(serde_json::Value::Null, range);
        let mut fields = config([
            ("height_factor", range(self.height_factor)),
            ("width_factor", width),
        ]);
        self.warp.sampling.write(&mut fields);
        fields
    }
}

augmentation_layer!(RandomZoom);
sampling_builders!(RandomZoom);
