//! Activation functions, by their Keras names.

use crate::kernels::activation as k;
use crate::{Error, Result};

/// An element-wise (or, for softmax, row-wise) activation.
///
/// ```
/// use convnet::Activation;
/// let relu: Activation = "relu".parse().unwrap();
/// let mut x = [-1.0, 2.0];
/// relu.forward(&mut x, 2);
/// assert_eq!(x, [0.0, 2.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// The identity (Keras `None` / `"linear"`).
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `e^x_i / Σ_j e^x_j` over the last axis.
    Softmax,
}

impl Activation {
    /// The Keras name: `"relu"`, `"softmax"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
        }
    }

    /// Applies the activation in place; `width` is the length of the last
    /// axis (the rows softmax normalises).
    pub fn forward(self, x: &mut [f32], width: usize) {
        match self {
            Activation::Linear => {}
            Activation::Relu => k::relu(x),
            Activation::Sigmoid => k::sigmoid(x),
            Activation::Tanh => k::tanh(x),
            Activation::Softmax => k::softmax(x, width),
        }
    }

    /// Turns `grad`, the gradient with respect to the activation's output
    /// `y`, into the gradient with respect to its input, in place.
    pub fn backward(self, y: &[f32], grad: &mut [f32], width: usize) {
        match self {
            Activation::Linear => {}
            Activation::Relu => k::relu_backward(y, grad),
            Activation::Sigmoid => k::sigmoid_backward(y, grad),
            Activation::Tanh => k::tanh_backward(y, grad),
            Activation::Softmax => k::softmax_backward(y, grad, width),
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linear" | "none" | "" => Ok(Activation::Linear),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "tanh" => Ok(Activation::Tanh),
            "softmax" => Ok(Activation::Softmax),
            _ => Err(Error::InvalidArgument(format!(
                "unknown activation {s:?}: use linear, relu, sigmoid, tanh or softmax"
            ))),
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
