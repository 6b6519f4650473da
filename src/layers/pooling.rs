//! What MaxPooling2D and AveragePooling2D share: the window's size,
//! strides and padding, their Keras config, and the geometry `build`
//! works out from the input shape.

use super::Padding;
use super::config::{Config, Fields, config, pair, with_input_shape};
use crate::kernels::Window2d;
use crate::{Error, Result};

/// The windows of a pooling layer (Keras `pool_size`, `strides`, `padding`).
#[derive(Clone, Debug)]
pub(crate) struct Pooling {
    pub pool_size: (usize, usize),
    pub strides: Option<(usize, usize)>,
    pub padding: Padding,
    pub input_shape: Option<Vec<usize>>,
    /// Set by [`Pooling::build`].
    pub window: Option<Window2d>,
}

impl Pooling {
    /// Windows of `pool_size`, moved by the same amount, padding "valid".
    pub fn new(pool_size: (usize, usize)) -> Self {
        Pooling {
            pool_size,
            strides: None,
            padding: Padding::Valid,
            input_shape: None,
            window: None,
        }
    }

    /// The windows of a Keras config.
    pub fn from_config(fields: &Fields) -> Result<Self> {
        Ok(Pooling {
            strides: fields.optional_pair("strides")?,
            padding: fields.padding()?,
            input_shape: fields.input_shape()?,
            ..Pooling::new(fields.pair("pool_size", Some((2, 2)))?)
        })
    }

    /// The windows over images of `input_shape` (for layer `class`); the
    /// output shape.
    pub fn build(&mut self, class: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let &[h, w, c] = input_shape else {
            return Err(Error::Shape(format!(
                "{class} expects images of shape (height, width, channels), got {input_shape:?}"
            )));
        };
        let strides = self.strides.unwrap_or(self.pool_size);
        let window = Window2d::new((h, w, c), self.pool_size, strides, self.padding)?;
        self.window = Some(window);
        Ok(vec![window.out_h, window.out_w, c])
    }

    /// The geometry worked out by `build`.
    pub fn window(&self) -> Window2d {
        self.window.expect("a pooling layer used before build")
    }

    /// The Keras config of the windows.
    pub fn config(&self) -> Config {
        let strides = self.strides.unwrap_or(self.pool_size);
        let fields = config([
            ("pool_size", pair(self.pool_size)),
            ("strides", pair(strides)),
            ("padding", self.padding.name().into()),
        ]);
        with_input_shape(fields, self.input_shape.as_deref())
    }
}
