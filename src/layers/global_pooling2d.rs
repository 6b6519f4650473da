//! `GlobalAveragePooling2D` and `GlobalMaxPooling2D`: each channel of an
//! image reduced to one number, its mean or its maximum, so that a
//! convolutional stack ends in a vector whatever the image size (the head
//! of most modern CNNs, in place of Flatten).
//!
//! Backward, the mean spreads each gradient evenly over the pixels; the
//! maximum sends it to the pixel that won (the first, on ties).

use ndarray::ArrayD;
use rayon::prelude::*;

use super::config::{Config, Fields, with_input_shape};
use super::{Layer, TrainingStep, resize, resize_buffer, values, values_mut};
use crate::initializers::Rng;
use crate::{Error, Result};

/// Mean of each channel over the image (Keras `GlobalAveragePooling2D`).
///
/// ```
/// use convnet::layers::GlobalAveragePooling2D;
/// let pool = GlobalAveragePooling2D::new(); // (h, w, c) -> (c)
/// ```
#[derive(Clone, Debug, Default)]
pub struct GlobalAveragePooling2D {
    image: Images,
}

/// Maximum of each channel over the image (Keras `GlobalMaxPooling2D`).
///
/// ```
/// use convnet::layers::GlobalMaxPooling2D;
/// let pool = GlobalMaxPooling2D::new(); // (h, w, c) -> (c)
/// ```
#[derive(Clone, Debug, Default)]
pub struct GlobalMaxPooling2D {
    image: Images,
    /// Per output value of the last training batch: the winning pixel.
    winners: Vec<u32>,
}

/// What both global poolings know of their input: its declared shape,
/// and `(pixels, channels)` of an image, set by `build`.
#[derive(Clone, Debug, Default)]
struct Images {
    input_shape: Option<Vec<usize>>,
    geometry: (usize, usize),
}

impl Images {
    /// The `input_shape` of a config of layer `class`; Keras's
    /// `keepdims=True` (output `(1, 1, c)`) is not supported.
    fn from_config(fields: &Fields, class: &str) -> Result<Self> {
        if fields.flag("keepdims", false)? {
            return Err(Error::InvalidArgument(format!(
                "layer {class}: keepdims true is not supported"
            )));
        }
        Ok(Images {
            input_shape: fields.input_shape()?,
            geometry: (0, 0),
        })
    }

    /// The geometry of images of `shape` (an error naming `class`), and
    /// the output shape: one value per channel.
    fn build(&mut self, class: &str, shape: &[usize]) -> Result<Vec<usize>> {
        self.geometry = match *shape {
            [h, w, c] if h * w > 0 && c > 0 && h * w <= u32::MAX as usize => (h * w, c),
            _ => {
                return Err(Error::Shape(format!(
                    "{class} expects images of shape (height, width, channels), got {shape:?}"
                )));
            }
        };
        Ok(vec![self.geometry.1])
    }

    fn config(&self) -> Config {
        with_input_shape(Config::new(), self.input_shape.as_deref())
    }
}

/// Samples per parallel chunk.
const SAMPLES_PER_CHUNK: usize = 16;

impl GlobalAveragePooling2D {
    /// A global average pooling layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shape of one input image; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.image.input_shape = Some(shape.to_vec());
        self
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let image = Images::from_config(fields, "GlobalAveragePooling2D")?;
        Ok(GlobalAveragePooling2D { image })
    }
}

impl GlobalMaxPooling2D {
    /// A global max pooling layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shape of one input image; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.image.input_shape = Some(shape.to_vec());
        self
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let image = Images::from_config(fields, "GlobalMaxPooling2D")?;
        Ok(GlobalMaxPooling2D {
            image,
            ..Self::default()
        })
    }

    /// The maxima of each image's channels, and where they are.
    fn pool(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, winners: &mut Vec<u32>) {
        let (pixels, channels) = self.image.geometry;
        let batch = input.shape()[0];
        resize(output, &[batch, channels]);
        resize_buffer(winners, batch * channels);
        values(input)
            .par_chunks(SAMPLES_PER_CHUNK * pixels * channels)
            .zip(values_mut(output).par_chunks_mut(SAMPLES_PER_CHUNK * channels))
            .zip(winners.par_chunks_mut(SAMPLES_PER_CHUNK * channels))
            .for_each(|((x, y), won)| {
                let images = x.chunks(pixels * channels).zip(y.chunks_mut(channels));
                for ((image, y), won) in images.zip(won.chunks_mut(channels)) {
                    y.copy_from_slice(&image[..channels]);
                    won.fill(0);
                    for (p, pixel) in image.chunks(channels).enumerate().skip(1) {
                        for c in 0..channels {
                            // NaN wins, so that it shows rather than vanishes.
                            if pixel[c] > y[c] || (pixel[c].is_nan() && !y[c].is_nan()) {
                                y[c] = pixel[c];
                                won[c] = p as u32;
                            }
                        }
                    }
                }
            });
    }
}

impl Layer for GlobalAveragePooling2D {
    fn class_name(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.image.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.image.build(self.class_name(), input_shape)
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        let (pixels, channels) = self.image.geometry;
        let batch = input.shape()[0];
        resize(output, &[batch, channels]);
        let scale = 1.0 / pixels as f32;
        values(input)
            .par_chunks(SAMPLES_PER_CHUNK * pixels * channels)
            .zip(values_mut(output).par_chunks_mut(SAMPLES_PER_CHUNK * channels))
            .for_each(|(x, y)| {
                for (image, y) in x.chunks(pixels * channels).zip(y.chunks_mut(channels)) {
                    y.fill(0.0);
                    for pixel in image.chunks(channels) {
                        y.iter_mut().zip(pixel).for_each(|(s, v)| *s += v);
                    }
                    y.iter_mut().for_each(|s| *s *= scale);
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
        let (pixels, channels) = self.image.geometry;
        resize(grad_input, input.shape());
        let scale = 1.0 / pixels as f32;
        values_mut(grad_input)
            .par_chunks_mut(pixels * channels)
            .zip(values(grad_output).par_chunks(channels))
            .for_each(|(dx, dy)| {
                for pixel in dx.chunks_mut(channels) {
                    pixel.iter_mut().zip(dy).for_each(|(d, g)| *d = g * scale);
                }
            });
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        Some(self.image.config())
    }
}

impl Layer for GlobalMaxPooling2D {
    fn class_name(&self) -> &'static str {
        "GlobalMaxPooling2D"
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.image.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.image.build(self.class_name(), input_shape)
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
        input: &ArrayD<f32>,
        _output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let Some(grad_input) = grad_input else { return };
        let (pixels, channels) = self.image.geometry;
        resize(grad_input, input.shape());
        values_mut(grad_input)
            .par_chunks_mut(pixels * channels)
            .zip(values(grad_output).par_chunks(channels))
            .zip(self.winners.par_chunks(channels))
            .for_each(|((dx, dy), won)| {
                dx.fill(0.0);
                for c in 0..channels {
                    dx[won[c] as usize * channels + c] = dy[c];
                }
            });
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn config(&self) -> Option<Config> {
        Some(self.image.config())
    }
}
