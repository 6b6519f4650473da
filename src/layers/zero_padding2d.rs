//! `ZeroPadding2D`: adds rows and columns of zeros around each image, so
//! that a following convolution or pooling sees the border as it wants.
//! Backward, the gradient of the padded image is cropped back.

use ndarray::ArrayD;
use rayon::prelude::*;
use serde_json::Value;

use super::config::{Config, Fields, config, pair, with_input_shape};
use super::{Layer, resize, tensor_len, values, values_mut};
use crate::Result;
use crate::initializers::Rng;

/// Zero rows above and below, zero columns left and right of each image
/// (Keras `ZeroPadding2D`).
///
/// ```
/// use convnet::layers::ZeroPadding2D;
/// let pad = ZeroPadding2D::new(((1, 1), (2, 2))); // 28x28 -> 30x32
/// ```
#[derive(Clone, Debug)]
pub struct ZeroPadding2D {
    /// `((top, bottom), (left, right))`.
    padding: ((usize, usize), (usize, usize)),
    input_shape: Option<Vec<usize>>,
    /// `(h, w, c)` of an input image, set by `build`.
    image: (usize, usize, usize),
}

impl ZeroPadding2D {
    /// `((top, bottom), (left, right))` rows and columns of zeros.
    pub fn new(padding: ((usize, usize), (usize, usize))) -> Self {
        ZeroPadding2D {
            padding,
            input_shape: None,
            image: (0, 0, 0),
        }
    }

    /// The shape of one input image; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The layer of a Keras config ([`Layer::config`]): `padding` as `n`,
    /// `[rows, columns]` or `[[top, bottom], [left, right]]`.
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        Ok(ZeroPadding2D {
            input_shape: fields.input_shape()?,
            ..ZeroPadding2D::new(fields.padding_amounts("padding")?)
        })
    }

    /// `(padded row length, offset of the image in it)` per image row, and
    /// the padded image's length.
    fn geometry(&self) -> (usize, usize, usize) {
        let (h, w, c) = self.image;
        let ((top, bottom), (left, right)) = self.padding;
        let out_w = w + left + right;
        let padded = (h + top + bottom) * out_w * c;
        (out_w * c, (top * out_w + left) * c, padded)
    }
}

impl Layer for ZeroPadding2D {
    fn class_name(&self) -> &'static str {
        "ZeroPadding2D"
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let &[h, w, c] = input_shape else {
            return Err(crate::Error::Shape(format!(
                "ZeroPadding2D expects images of shape (height, width, channels), got {input_shape:?}"
            )));
        };
        let ((top, bottom), (left, right)) = self.padding;
        let out = [
            h.saturating_add(top).saturating_add(bottom),
            w.saturating_add(left).saturating_add(right),
            c,
        ];
        tensor_len("the padded image", &out)?;
        self.image = (h, w, c);
        Ok(out.to_vec())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        let (h, w, c) = self.image;
        let (row_len, offset, padded) = self.geometry();
        let batch = input.shape()[0];
        let (out_h, out_w) = (padded / row_len, row_len / c);
        resize(output, &[batch, out_h, out_w, c]);
        values_mut(output)
            .par_chunks_mut(padded)
            .zip(values(input).par_chunks(h * w * c))
            .for_each(|(y, x)| {
                y.fill(0.0);
                for (row, x) in x.chunks(w * c).enumerate() {
                    let start = offset + row * row_len;
                    y[start..start + w * c].copy_from_slice(x);
                }
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
        let (h, w, c) = self.image;
        let (row_len, offset, padded) = self.geometry();
        resize(grad_input, input.shape());
        values_mut(grad_input)
            .par_chunks_mut(h * w * c)
            .zip(values(grad_output).par_chunks(padded))
            .for_each(|(dx, dy)| {
                for (row, dx) in dx.chunks_mut(w * c).enumerate() {
                    let start = offset + row * row_len;
                    dx.copy_from_slice(&dy[start..start + w * c]);
                }
            });
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        let ((top, bottom), (left, right)) = self.padding;
        let padding = Value::from(vec![pair((top, bottom)), pair((left, right))]);
        let fields = config([("padding", padding)]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }
}
