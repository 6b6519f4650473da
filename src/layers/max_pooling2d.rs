//! `MaxPooling2D`: keeps the largest value of each window, per channel.
//!
//! Pooling halves (with the default 2x2 window) the height and width, making
//! the next layers cheaper and the features a little shift-invariant. The
//! forward pass remembers which input won each window, so the backward pass
//! just sends each gradient back to its winner. After a relu it also
//! applies relu's derivative for the layer before (`compile` arranges it):
//! a winner is positive exactly when its window's maximum is, so this costs
//! one comparison per output instead of a pass over the whole input.

use ndarray::ArrayD;
use rayon::prelude::*;

use super::config::{Config, Fields};
use super::pooling::Pooling;
use super::{
    Layer, Padding, PlanRole, TrainingStep, resize, resize_buffer, samples_per_chunk, values,
    values_mut,
};
use crate::initializers::Rng;
use crate::kernels::{Window2d, pool};
use crate::{Error, Result};

/// Max pooling over NHWC images (Keras `MaxPooling2D`).
///
/// ```
/// use convnet::layers::MaxPooling2D;
/// let pool = MaxPooling2D::new((2, 2)); // strides default to the pool size
/// ```
#[derive(Clone, Debug)]
pub struct MaxPooling2D {
    pooling: Pooling,
    winners: Vec<u8>,
    /// Whether `backward` applies the relu derivative of the layer before.
    relu_input: bool,
}

impl MaxPooling2D {
    /// Windows of `pool_size` (height, width), moved by the same amount,
    /// padding `"valid"`: the Keras defaults.
    pub fn new(pool_size: (usize, usize)) -> Self {
        MaxPooling2D {
            pooling: Pooling::new(pool_size),
            winners: Vec::new(),
            relu_input: false,
        }
    }

    /// Step of the window (default: the pool size).
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.pooling.strides = Some(strides);
        self
    }

    /// `Padding::Valid` (default) or `Padding::Same`.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.pooling.padding = padding;
        self
    }

    /// The shape of one input image; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.pooling.input_shape = Some(shape.to_vec());
        self
    }

    fn window(&self) -> Window2d {
        self.pooling.window()
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(MaxPooling2D {
            pooling: Pooling::from_config(fields)?,
            ..MaxPooling2D::new((2, 2))
        })
    }

    /// Images per parallel chunk: pooling's work grows with the input size.
    fn chunk(&self) -> usize {
        chunk(&self.window())
    }

    /// The forward pass, recording each window's winner in `winners`
    /// (resized to the batch).
    fn pool(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, winners: &mut Vec<u8>) {
        let w = self.window();
        let batch = input.shape()[0];
        resize(output, &[batch, w.out_h, w.out_w, w.channels]);
        let out_len = w.out_pixels() * w.channels;
        resize_buffer(winners, batch * out_len);
        let chunk = self.chunk();
        values(input)
            .par_chunks(chunk * w.in_len())
            .zip(values_mut(output).par_chunks_mut(chunk * out_len))
            .zip(winners.par_chunks_mut(chunk * out_len))
            .for_each_init(pool::Columns::default, |columns, ((x, y), winners)| {
                pool::max_pool_forward(&w, x, y, winners, columns)
            });
    }
}

/// Images per parallel chunk: pooling's work grows with the input size.
fn chunk(w: &Window2d) -> usize {
    samples_per_chunk(w.in_len() / 8)
}

/// The backward pass of max pooling over windows `w`, from the `winners`
/// its forward pass recorded: each output gradient goes to its winner.
/// With `relu_output` (the pooled output, when the input came out of a
/// relu) a window whose maximum is not positive passes no gradient:
/// relu's derivative for the layer before. Shared with the fused
/// convolution + pooling stage of a `Sequential`'s plan.
pub(crate) fn backward_through_winners(
    w: &Window2d,
    winners: &[u8],
    grad_output: &ArrayD<f32>,
    relu_output: Option<&ArrayD<f32>>,
    grad_input: &mut ArrayD<f32>,
) {
    let batch = grad_output.shape()[0];
    resize(grad_input, &[batch, w.in_h, w.in_w, w.channels]);
    let out_len = w.out_pixels() * w.channels;
    let chunk = chunk(w);
    let relu_chunks = relu_output.map(|y| values(y).par_chunks(chunk * out_len));
    let chunks = values_mut(grad_input)
        .par_chunks_mut(chunk * w.in_len())
        .zip(values(grad_output).par_chunks(chunk * out_len))
        .zip(winners.par_chunks(chunk * out_len));
    match relu_chunks {
        Some(ys) => chunks.zip(ys).for_each(|(((dx, dy), winners), y)| {
            pool::max_pool_backward(w, winners, dy, Some(y), dx)
        }),
        None => {
            chunks.for_each(|((dx, dy), winners)| pool::max_pool_backward(w, winners, dy, None, dx))
        }
    }
}

impl Default for MaxPooling2D {
    fn default() -> Self {
        MaxPooling2D::new((2, 2))
    }
}

impl Layer for MaxPooling2D {
    fn class_name(&self) -> &'static str {
        "MaxPooling2D"
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.pooling.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let (h, w) = self.pooling.pool_size;
        if h.checked_mul(w).is_none_or(|n| n > pool::MAX_WINDOW) {
            return Err(Error::InvalidArgument(format!(
                "MaxPooling2D pool_size {:?} is too large: at most {} positions per window",
                self.pooling.pool_size,
                pool::MAX_WINDOW
            )));
        }
        self.pooling.build("MaxPooling2D", input_shape)
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        self.pool(input, output, &mut Vec::new());
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _: TrainingStep) {
        let mut winners = std::mem::take(&mut self.winners);
        self.pool(input, output, &mut winners);
        self.winners = winners;
    }

    fn backward(
        &mut self,
        _input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let Some(grad_input) = grad_input else { return };
        let relu_output = self.relu_input.then_some(output);
        backward_through_winners(
            &self.window(),
            &self.winners,
            grad_output,
            relu_output,
            grad_input,
        );
    }

    fn config(&self) -> Option<Config> {
        Some(self.pooling.config())
    }

    fn plan_role(&self) -> PlanRole<'_> {
        if pool::is_2x2(&self.window()) {
            PlanRole::MaxPool2x2
        } else {
            PlanRole::Opaque
        }
    }

    fn take_relu_derivative_of_input(&mut self, take: bool) -> bool {
        self.relu_input = take;
        true
    }
}
