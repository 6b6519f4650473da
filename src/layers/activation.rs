//! `Activation`: applies an activation function as a layer of its own.

use ndarray::ArrayD;

use super::config::{Config, Fields, config, with_input_shape};
use super::{Layer, OutputActivation, PlanRole, resize, values, values_mut};
use crate::initializers::Rng;
use crate::{Activation, Result};

/// An activation as a separate layer (Keras `Activation`).
///
/// ```
/// use convnet::layers::ActivationLayer;
/// use convnet::Activation;
/// let softmax = ActivationLayer::new(Activation::Softmax);
/// ```
#[derive(Clone, Debug)]
pub struct ActivationLayer {
    output_activation: OutputActivation,
    input_shape: Option<Vec<usize>>,
}

impl ActivationLayer {
    /// A layer applying `activation`.
    pub fn new(activation: Activation) -> Self {
        ActivationLayer {
            output_activation: OutputActivation::new(activation),
            input_shape: None,
        }
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(ActivationLayer {
            input_shape: fields.input_shape()?,
            ..ActivationLayer::new(fields.activation("activation")?)
        })
    }

    /// The shape of one input sample; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }
}

fn last_axis(array: &ArrayD<f32>) -> usize {
    array.shape().last().copied().unwrap_or(1)
}

impl Layer for ActivationLayer {
    fn class_name(&self) -> &'static str {
        "Activation"
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(input_shape.to_vec())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        resize(output, input.shape());
        values_mut(output).copy_from_slice(values(input));
        self.output_activation
            .forward(values_mut(output), last_axis(input));
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let width = last_axis(output);
        self.output_activation
            .backward(values(output), values_mut(grad_output), width);
        if let Some(grad_input) = grad_input {
            resize(grad_input, input.shape());
            values_mut(grad_input).copy_from_slice(values(grad_output));
        }
    }

    fn activation(&self) -> Activation {
        self.output_activation.activation
    }

    fn skip_activation_derivative(&mut self, skip: bool) {
        self.output_activation.derivative_skipped = skip;
    }

    fn config(&self) -> Option<Config> {
        let fields = config([(
            "activation",
            self.output_activation.activation.name().into(),
        )]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }

    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::Activation(self.output_activation.activation)
    }
}
