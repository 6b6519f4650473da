//! `Dropout`: during training, zeroes a random fraction `rate` of the inputs
//! and scales the rest by `1 / (1 - rate)`, so that nothing changes on
//! average; at inference it passes inputs through unchanged.
//!
//! The draws are keyed on the training step and on each value's position
//! in the batch (one ChaCha stream per step, one word per value), not on
//! the order in which the layer is called: a sample is dropped the same
//! way however the batch is split between data-parallel replicas, so
//! replicas need no random generator of their own and results do not
//! depend on their number.

use ndarray::ArrayD;
use rand::{Rng as _, RngExt, SeedableRng};

use super::config::{Config, Fields, config};
use super::{Layer, TrainingStep, resize, resize_buffer, values, values_mut};
use crate::initializers::Rng;
use crate::{Error, Result};

/// Inverted dropout (Keras `Dropout`).
///
/// ```
/// use convnet::layers::Dropout;
/// let dropout = Dropout::new(0.5); // drops half the values while training
/// ```
#[derive(Clone, Debug)]
pub struct Dropout {
    rate: f32,
    /// Drawn from the model's seed by `build`.
    seed: u64,
    /// Per value of the last training batch: 0 or `1 / (1 - rate)`.
    mask: Vec<f32>,
}

impl Dropout {
    /// Drops a fraction `rate` (in `[0, 1)`) of the values while training.
    pub fn new(rate: f32) -> Self {
        Dropout {
            rate,
            seed: 0,
            mask: Vec::new(),
        }
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(Dropout::new(fields.number("rate", None)?))
    }

    /// The mask of a batch of `len` values (`sample_len` per sample) at
    /// `step`: value `i` of the sample at `first_sample + s` is kept when
    /// word `(first_sample + s) * sample_len + i` of the step's stream,
    /// as a fraction of 2^32, is at least `rate`.
    fn draw_mask(&mut self, len: usize, sample_len: usize, step: TrainingStep) {
        let mut rng = Rng::seed_from_u64(self.seed);
        rng.set_stream(step.step);
        rng.set_word_pos((step.first_sample as u128) * sample_len as u128);
        // The threshold in 32-bit words: P(word < threshold) = rate.
        let threshold = (f64::from(self.rate) * 4_294_967_296.0) as u64;
        let scale = 1.0 / (1.0 - self.rate);
        resize_buffer(&mut self.mask, len);
        for m in self.mask.iter_mut() {
            *m = if u64::from(rng.next_u32()) < threshold {
                0.0
            } else {
                scale
            };
        }
    }
}

impl Layer for Dropout {
    fn class_name(&self) -> &'static str {
        "Dropout"
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        Some(config([("rate", self.rate.into())]))
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::InvalidArgument(format!(
                "Dropout rate must be in [0, 1), got {}",
                self.rate
            )));
        }
        self.seed = rng.random();
        Ok(input_shape.to_vec())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        resize(output, input.shape());
        values_mut(output).copy_from_slice(values(input));
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, step: TrainingStep) {
        let sample_len = input.len() / input.shape()[0].max(1);
        self.draw_mask(input.len(), sample_len, step);
        resize(output, input.shape());
        values_mut(output)
            .iter_mut()
            .zip(values(input).iter().zip(&self.mask))
            .for_each(|(y, (x, m))| *y = x * m);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn built(rate: f32) -> Dropout {
        let mut layer = Dropout::new(rate);
        layer.build(&[50], &mut Rng::seed_from_u64(7)).unwrap();
        layer
    }

    /// A sample's draws depend on its position in the batch and the step,
    /// not on which slice of the batch a replica ran.
    #[test]
    fn a_split_batch_gets_the_whole_batchs_mask() {
        let x = ArrayD::from_elem(IxDyn(&[6, 50]), 1.0f32);
        let (mut whole, mut y) = (built(0.5), ArrayD::zeros(IxDyn(&[0])));
        let step = TrainingStep {
            step: 3,
            first_sample: 0,
        };
        whole.forward_train(&x, &mut y, step);
        let second_half = x.slice(ndarray::s![3.., ..]).to_owned().into_dyn();
        let (mut part, mut y_part) = (built(0.5), ArrayD::zeros(IxDyn(&[0])));
        let step = TrainingStep {
            first_sample: 3,
            ..step
        };
        part.forward_train(&second_half, &mut y_part, step);
        assert_eq!(y.slice(ndarray::s![3.., ..]).into_dyn(), y_part);
        let dropped = y.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (100..200).contains(&dropped),
            "{dropped} of 300 dropped at rate 0.5"
        );
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    }

    #[test]
    fn steps_draw_different_masks_and_inference_passes_through() {
        let x = ArrayD::from_elem(IxDyn(&[2, 50]), 1.0f32);
        let mut layer = built(0.3);
        let (mut a, mut b) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
        layer.forward_train(
            &x,
            &mut a,
            TrainingStep {
                step: 0,
                first_sample: 0,
            },
        );
        layer.forward_train(
            &x,
            &mut b,
            TrainingStep {
                step: 1,
                first_sample: 0,
            },
        );
        assert_ne!(a, b);
        layer.forward(&x, &mut a);
        assert_eq!(a, x);
    }
}
