//! # convnet
//!
//! Convolutional neural networks in Rust, with the API of Keras: build a
//! [`Sequential`] model from [`layers`], `compile` it with a [`Loss`], an
//! [optimizer](optimizers) and [`Metric`]s, then `fit`, `evaluate` and
//! `predict`. Arrays are `ndarray` arrays, images NHWC (channels last), `f32`.
//!
//! ```no_run
//! use convnet::datasets::{mnist, to_categorical};
//! use convnet::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
//! use convnet::{Activation::*, Fit, Loss, Metric, Sequential, optimizers::Adam};
//! use ndarray::Axis;
//!
//! let ((train_x, train_y), (test_x, test_y)) = mnist::load_data()?;
//! let train_x = train_x.insert_axis(Axis(3)).mapv(|v| v as f32 / 255.0); // (N, 28, 28, 1)
//! let test_x = test_x.insert_axis(Axis(3)).mapv(|v| v as f32 / 255.0);
//! let (train_y, test_y) = (to_categorical(&train_y, 10)?, to_categorical(&test_y, 10)?);
//!
//! let mut model = Sequential::new();
//! model.add(Conv2D::new(6, (5, 5)).activation(Relu).input_shape(&[28, 28, 1]));
//! model.add(MaxPooling2D::new((2, 2)));
//! model.add(Flatten::new());
//! model.add(Dense::new(10).activation(Softmax));
//! model.compile(Loss::CategoricalCrossentropy, Adam::default(), &[Metric::Accuracy])?;
//! model.fit(&train_x, &train_y, Fit { batch_size: 128, epochs: 2, validation_data: Some((&test_x, &test_y)), ..Fit::default() })?;
//! let score = model.evaluate(&test_x, &test_y)?;
//! # Ok::<(), convnet::Error>(())
//! ```
#![warn(missing_docs)]

pub mod activations;
pub mod callbacks;
pub mod data;
pub mod datasets;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod error;
pub mod initializers;
pub mod io;
#[doc(hidden)]
pub mod kernels;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod models;
pub mod optimizers;
#[cfg(feature = "plots")]
pub mod plots;
pub mod preprocess;
pub mod schedules;
pub mod signal;
pub mod summary;

pub use activations::Activation;
pub use error::{Error, Result};
pub use losses::Loss;
pub use metrics::Metric;
pub use model::{Fit, History, Scores, Sequential};

/// Sets the number of threads used for training and inference (default:
/// one per core). Call it once, before any other work.
pub fn set_num_threads(threads: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Error::InvalidArgument(format!("cannot set {threads} threads: {e}")))
}
