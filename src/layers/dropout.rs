//! `Dropout`: during training, zeroes a random fraction `rate` of the inputs
//! and scales the rest by `1 / (1 - rate)`, so that nothing changes on
//! average; at inference it passes inputs through unchanged.

use ndarray::ArrayD;
use rand::{RngExt, SeedableRng};

use super::{Layer, resize, resize_buffer, values, values_mut};
use crate::initializers::Rng;
use crate::{Error, Result};

/// Inverted dropout (Keras `Dropout`).
#[derive(Clone, Debug)]
pub struct Dropout {
    rate: f32,
    rng: Rng,
    /// Per value of the last training batch: 0 or `1 / (1 - rate)`.
    mask: Vec<f32>,
}

impl Dropout {
    /// Drops a fraction `rate` (in `[0, 1)`) of the values while training.
    pub fn new(rate: f32) -> Self {
        Dropout {
            rate,
            rng: Rng::seed_from_u64(0),
            mask: Vec::new(),
        }
    }
}

impl Layer for Dropout {
    fn class_name(&self) -> &'static str {
        "Dropout"
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::InvalidArgument(format!(
                "Dropout rate must be in [0, 1), got {}",
                self.rate
            )));
        }
        self.rng = Rng::seed_from_u64(rng.random());
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, training: bool) {
        resize(output, input.shape());
        values_mut(output).copy_from_slice(values(input));
        if !training {
            return;
        }
        let (rate, scale) = (self.rate, 1.0 / (1.0 - self.rate));
        resize_buffer(&mut self.mask, input.len());
        for m in self.mask.iter_mut() {
            *m = if self.rng.random::<f32>() < rate {
                0.0
            } else {
                scale
            };
        }
        values_mut(output)
            .iter_mut()
            .zip(&self.mask)
            .for_each(|(y, m)| *y *= m);
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
            let dx = values_mut(grad_input);
            dx.iter_mut()
                .zip(values(grad_output))
                .zip(&self.mask)
                .for_each(|((dx, dy), m)| *dx = dy * m);
        }
    }
}
