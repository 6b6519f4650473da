//! `Reshape`: gives each sample another shape with the same number of
//! values, in the same (row-major) order; one dimension may be `-1`
//! (`None` here), worked out from the others.

use ndarray::ArrayD;
use serde_json::Value;

use super::config::{Config, Fields, config, with_input_shape};
use super::{Layer, PlanRole, reshaped, reshaped_back};
use crate::initializers::Rng;
use crate::{Error, Result};

/// Reshapes every sample (Keras `Reshape`).
///
/// ```
/// use convnet::layers::Reshape;
/// let to_image = Reshape::new(&[Some(28), Some(28), None]); // (784,) -> (28, 28, 1)
/// ```
#[derive(Clone, Debug)]
pub struct Reshape {
    target_shape: Vec<Option<usize>>,
    input_shape: Option<Vec<usize>>,
    /// The shape `build` worked out.
    output_shape: Vec<usize>,
}

impl Reshape {
    /// The shape of one output sample; at most one `None`, worked out.
    pub fn new(target_shape: &[Option<usize>]) -> Self {
        Reshape {
            target_shape: target_shape.to_vec(),
            input_shape: None,
            output_shape: Vec::new(),
        }
    }

    /// The shape of one input sample; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let target = fields.dims("target_shape")?;
        Ok(Reshape {
            input_shape: fields.input_shape()?,
            ..Reshape::new(&target)
        })
    }

    fn error(&self, input_shape: &[usize]) -> Error {
        Error::Shape(format!(
            "Reshape cannot make samples of shape {input_shape:?} into {:?}: the number of \
             values must stay the same, with at most one free (None / -1) dimension",
            self.target_shape
        ))
    }
}

impl Layer for Reshape {
    fn class_name(&self) -> &'static str {
        "Reshape"
    }

    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::Reshape
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let total: usize = input_shape.iter().product();
        let known = self
            .target_shape
            .iter()
            .flatten()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        let free = self.target_shape.iter().filter(|d| d.is_none()).count();
        let fits = |known: usize| match free {
            0 => known == total,
            1 => known > 0 && total.is_multiple_of(known),
            _ => false,
        };
        let Some(known) = known.filter(|&k| fits(k) && !self.target_shape.contains(&Some(0)))
        else {
            return Err(self.error(input_shape));
        };
        self.output_shape = self
            .target_shape
            .iter()
            .map(|d| d.unwrap_or(total / known))
            .collect();
        Ok(self.output_shape.clone())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        reshaped(input, output, &self.output_shape);
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

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        let dims: Vec<Value> = self
            .target_shape
            .iter()
            .map(|d| d.map_or(Value::from(-1), Value::from))
            .collect();
        let fields = config([("target_shape", Value::Array(dims))]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }
}
