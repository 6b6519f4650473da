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

use super::{Layer, Padding, resize, resize_buffer, samples_per_chunk, values, values_mut};
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
    pool_size: (usize, usize),
    strides: Option<(usize, usize)>,
    padding: Padding,
    input_shape: Option<Vec<usize>>,
    window: Option<Window2d>,
    winners: Vec<u8>,
    /// Whether `backward` applies the relu derivative of the layer before.
    relu_input: bool,
}

impl MaxPooling2D {
    /// Windows of `pool_size` (height, width), moved by the same amount,
    /// padding `"valid"`: the Keras defaults.
    pub fn new(pool_size: (usize, usize)) -> Self {
        MaxPooling2D {
            pool_size,
            strides: None,
            padding: Padding::Valid,
            input_shape: None,
            window: None,
            winners: Vec::new(),
            relu_input: false,
        }
    }

    /// Step of the window (default: the pool size).
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.strides = Some(strides);
        self
    }

    /// `Padding::Valid` (default) or `Padding::Same`.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The shape of one input image; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    fn window(&self) -> Window2d {
        self.window.expect("MaxPooling2D used before build")
    }

    /// Whether the windows are 2x2, moved by 2, inside the image: what
    /// [`super::Conv2D`] can pool as it computes (see `Sequential`'s forward pass).
    pub(crate) fn is_2x2(&self) -> bool {
        pool::is_2x2(&self.window())
    }

    /// Whether `backward` applies the relu derivative of the layer before.
    pub(crate) fn applies_relu_derivative(&self) -> bool {
        self.relu_input
    }

    /// The winners of a batch, for the layer before to fill in when it
    /// pools as it computes: one byte per output value, as `forward` records them.
    pub(crate) fn winners_for(&mut self, batch: usize) -> &mut [u8] {
        let w = self.window();
        resize_buffer(&mut self.winners, batch * w.out_pixels() * w.channels);
        &mut self.winners
    }

    /// The winners recorded by the last forward pass (or filled in by the
    /// layer before).
    pub(crate) fn winners(&self) -> &[u8] {
        &self.winners
    }

    /// Images per parallel chunk: pooling's work grows with the input size.
    fn chunk(&self) -> usize {
        samples_per_chunk(self.window().in_len() / 8)
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
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let &[h, w, c] = input_shape else {
            return Err(Error::Shape(format!(
                "MaxPooling2D expects images of shape (height, width, channels), got {input_shape:?}"
            )));
        };
        if self.pool_size.0 * self.pool_size.1 > pool::MAX_WINDOW {
            return Err(Error::InvalidArgument(format!(
                "MaxPooling2D pool_size {:?} is too large: at most {} positions per window",
                self.pool_size,
                pool::MAX_WINDOW
            )));
        }
        let strides = self.strides.unwrap_or(self.pool_size);
        let window = Window2d::new((h, w, c), self.pool_size, strides, self.padding)?;
        self.window = Some(window);
        Ok(vec![window.out_h, window.out_w, c])
    }

    fn forward(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _training: bool) {
        let w = self.window();
        let batch = input.shape()[0];
        resize(output, &[batch, w.out_h, w.out_w, w.channels]);
        let out_len = w.out_pixels() * w.channels;
        resize_buffer(&mut self.winners, batch * out_len);
        let chunk = self.chunk();
        values(input)
            .par_chunks(chunk * w.in_len())
            .zip(values_mut(output).par_chunks_mut(chunk * out_len))
            .zip(self.winners.par_chunks_mut(chunk * out_len))
            .for_each_init(pool::Columns::default, |columns, ((x, y), winners)| {
                pool::max_pool_forward(&w, x, y, winners, columns)
            });
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let Some(grad_input) = grad_input else { return };
        let w = self.window();
        resize(grad_input, input.shape());
        let out_len = w.out_pixels() * w.channels;
        let chunk = self.chunk();
        let relu_input = self.relu_input;
        values_mut(grad_input)
            .par_chunks_mut(chunk * w.in_len())
            .zip(values(grad_output).par_chunks(chunk * out_len))
            .zip(values(output).par_chunks(chunk * out_len))
            .zip(self.winners.par_chunks(chunk * out_len))
            .for_each(|(((dx, dy), y), winners)| {
                let relu_output = relu_input.then_some(y);
                pool::max_pool_backward(&w, winners, dy, relu_output, dx)
            });
    }

    fn take_relu_derivative_of_input(&mut self, take: bool) -> bool {
        self.relu_input = take;
        true
    }
}
