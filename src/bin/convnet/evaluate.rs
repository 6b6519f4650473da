//! `convnet evaluate`: test loss and accuracy of saved weights on MNIST.

use std::path::PathBuf;

use clap::Args;
use convnet::data::Rescaled;
use convnet::datasets::to_categorical;
use convnet::optimizers::Adam;
use convnet::{Loss, Metric, Result};
use ndarray::{Axis, s};

/// Arguments of `convnet evaluate`.
#[derive(Args)]
pub struct EvaluateArgs {
    /// Weights saved by `convnet train --save-weights`.
    #[arg(long)]
    weights: PathBuf,
    /// The model the weights belong to.
    #[arg(long, default_value = "lenet")]
    model: String,
    /// Folder with the four MNIST IDX files (default: $CONVNET_DATA, else data/mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_limit: Option<usize>,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    let mut model = convnet::models::by_name(&args.model, 0)?;
    model.compile(
        Loss::CategoricalCrossentropy,
        Adam::default(),
        &[Metric::Accuracy],
    )?;
    model.load_weights(&args.weights)?;
    let (_, (test_x, test_y)) = super::train::load_mnist(args.data_dir.as_deref(), true)?;
    let test_x = super::train::first(&test_x, args.test_limit);
    let test_y = to_categorical(&test_y.slice(s![..test_x.len_of(Axis(0))]), 10)?;
    let score = model.evaluate(&Rescaled::new(&test_x, 1.0 / 255.0), &test_y)?;
    println!("Test loss: {:.4}", score.loss);
    println!("Test accuracy: {:.4}", score.accuracy().unwrap_or(0.0));
    Ok(())
}
