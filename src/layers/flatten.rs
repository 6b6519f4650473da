//! `Flatten`: turns each sample's feature maps into one long vector, so that
//! `Dense` layers can follow convolutions. NHWC order is kept, as in Keras.

use ndarray::ArrayD;

use super::config::{Config, Fields, with_input_shape};
use super::{Layer, PlanRole, reshaped, reshaped_back};
use crate::Result;
use crate::initializers::Rng;

/// Flattens every sample to one axis (Keras `Flatten`).
#[derive(Clone, Debug, Default)]
pub struct Flatten {
    input_shape: Option<Vec<usize>>,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Self {
        Flatten::default()
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(Flatten {
            input_shape: fields.input_shape()?,
        })
    }

    /// The shape of one input sample; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }
}

impl Layer for Flatten {
    fn class_name(&self) -> &'static str {
        "Flatten"
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(vec![input_shape.iter().product()])
    }

    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::Reshape
    }

    fn config(&self) -> Option<Config> {
        Some(with_input_shape(Config::new(), self.input_shape.as_deref()))
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        let batch = input.shape()[0];
        reshaped(input, output, &[input.len() / batch.max(1)]);
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        _output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        reshaped_back(input, grad_output, grad_input);
    }
}
