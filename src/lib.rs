//! # convnet
//!
//! Convolutional neural networks in Rust with a Keras-style API.
#![warn(missing_docs)]

pub mod error;
pub mod signal;

pub use error::{Error, Result};
