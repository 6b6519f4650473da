//! `AveragePooling2D`: the mean of each window, per channel. With padding
//! `"same"` a window at the border averages only the pixels inside the
//! image, as Keras does (the padding is not counted). Backward, each
//! output gradient is shared equally by the pixels of its window.

use ndarray::ArrayD;
use rayon::prelude::*;

use super::config::{Config, Fields};
use super::pooling::Pooling;
use super::{Layer, Padding, resize, values, values_mut};
use crate::Result;
use crate::initializers::Rng;
use crate::kernels::Window2d;

/// Average pooling over NHWC images (Keras `AveragePooling2D`).
///
/// ```
/// use convnet::layers::AveragePooling2D;
/// let pool = AveragePooling2D::new((2, 2)); // strides default to the pool size
/// ```
#[derive(Clone, Debug)]
pub struct AveragePooling2D {
    pooling: Pooling,
}

impl AveragePooling2D {
    /// Windows of `pool_size` (height, width), moved by the same amount,
    /// padding `"valid"`: the Keras defaults.
    pub fn new(pool_size: (usize, usize)) -> Self {
        AveragePooling2D {
            pooling: Pooling::new(pool_size),
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

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(AveragePooling2D {
            pooling: Pooling::from_config(fields)?,
        })
    }

    fn window(&self) -> Window2d {
        self.pooling.window()
    }
}

/// The input rows (or columns) under window `o` of an axis: `start..end`
/// clipped to the image.
fn span(o: usize, stride: usize, pad: usize, size: usize, len: usize) -> std::ops::Range<usize> {
    let start = (o * stride).saturating_sub(pad);
    let end = (o * stride + size).saturating_sub(pad).min(len);
    start..end
}

/// Calls `visit(output pixel, input pixel, 1 / pixels in the window)` for
/// every input pixel under every window of one image.
fn each_window(w: &Window2d, mut visit: impl FnMut(usize, usize, f32)) {
    for oy in 0..w.out_h {
        let rows = span(oy, w.stride_h, w.pad_top, w.k_h, w.in_h);
        for ox in 0..w.out_w {
            let cols = span(ox, w.stride_w, w.pad_left, w.k_w, w.in_w);
            let share = 1.0 / (rows.len() * cols.len()).max(1) as f32;
            for y in rows.clone() {
                for x in cols.clone() {
                    visit(oy * w.out_w + ox, y * w.in_w + x, share);
                }
            }
        }
    }
}

impl Layer for AveragePooling2D {
    fn class_name(&self) -> &'static str {
        "AveragePooling2D"
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.pooling.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.pooling.build("AveragePooling2D", input_shape)
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        let w = self.window();
        let c = w.channels;
        let batch = input.shape()[0];
        resize(output, &[batch, w.out_h, w.out_w, c]);
        values_mut(output)
            .par_chunks_mut(w.out_pixels() * c)
            .zip(values(input).par_chunks(w.in_len()))
            .for_each(|(y, x)| {
                y.fill(0.0);
                each_window(&w, |out, inp, share| {
                    let (y, x) = (&mut y[out * c..(out + 1) * c], &x[inp * c..(inp + 1) * c]);
                    y.iter_mut().zip(x).for_each(|(y, x)| *y += x * share);
                });
            });
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        _output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let Some(grad_input) = grad_input else { return };
        let w = self.window();
        let c = w.channels;
        resize(grad_input, input.shape());
        values_mut(grad_input)
            .par_chunks_mut(w.in_len())
            .zip(values(grad_output).par_chunks(w.out_pixels() * c))
            .for_each(|(dx, dy)| {
                dx.fill(0.0);
                each_window(&w, |out, inp, share| {
                    let (dx, dy) = (&mut dx[inp * c..(inp + 1) * c], &dy[out * c..(out + 1) * c]);
                    dx.iter_mut().zip(dy).for_each(|(dx, dy)| *dx += dy * share);
                });
            });
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        Some(self.pooling.config())
    }
}
