//! `Rescaling`: `y = x · scale + offset`, e.g. bytes to `[0, 1]` with
//! `scale = 1/255` inside the model, so that it takes raw pixels.

use ndarray::ArrayD;

use super::config::{Config, Fields, config, with_input_shape};
use super::{Layer, resize, values, values_mut};
use crate::initializers::Rng;
use crate::{Error, Result};

/// Multiplies by `scale` and adds `offset` (Keras `Rescaling`).
///
/// ```
/// use convnet::layers::Rescaling;
/// let to_unit = Rescaling::new(1.0 / 255.0, 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct Rescaling {
    scale: f32,
    offset: f32,
    input_shape: Option<Vec<usize>>,
}

impl Rescaling {
    /// `y = x · scale + offset`.
    pub fn new(scale: f32, offset: f32) -> Self {
        Rescaling {
            scale,
            offset,
            input_shape: None,
        }
    }

    /// The shape of one input sample; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(Rescaling {
            input_shape: fields.input_shape()?,
            ..Rescaling::new(
                fields.number("scale", None)?,
                fields.number("offset", Some(0.0))?,
            )
        })
    }
}

impl Layer for Rescaling {
    fn class_name(&self) -> &'static str {
        "Rescaling"
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        if !(self.scale.is_finite() && self.offset.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "Rescaling needs a finite scale and offset, got {} and {}",
                self.scale, self.offset
            )));
        }
        Ok(input_shape.to_vec())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        resize(output, input.shape());
        let (scale, offset) = (self.scale, self.offset);
        let pairs = values_mut(output).iter_mut().zip(values(input));
        pairs.for_each(|(y, x)| *y = x * scale + offset);
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        _output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        if let Some(grad_input) = grad_input {
            resize(grad_input, input.shape());
            let pairs = values_mut(grad_input).iter_mut().zip(values(grad_output));
            pairs.for_each(|(dx, dy)| *dx = dy * self.scale);
        }
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        let fields = config([("scale", self.scale.into()), ("offset", self.offset.into())]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }
}
