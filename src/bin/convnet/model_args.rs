//! Where the commands that use a trained model (evaluate, predict) get it.

use std::path::PathBuf;

use clap::Args;
use convnet::optimizers::Adam;
use convnet::{Loss, Metric, Result, Sequential};

/// The trained model: weights saved by `convnet train --save-weights`,
/// loaded into a freshly built model of the named architecture.
#[derive(Args)]
pub struct ModelArgs {
    /// Weights saved by `convnet train --save-weights`.
    #[arg(long)]
    weights: PathBuf,
    /// The model the weights belong to.
    #[arg(long, default_value = "lenet")]
    model: String,
}

impl ModelArgs {
    /// The model, built, compiled (evaluate needs a loss and a metric) and
    /// holding the trained weights: the one place that knows where a
    /// trained model comes from.
    pub fn load(&self) -> Result<Sequential> {
        let mut model = convnet::models::by_name(&self.model, 0)?;
        model.compile(
            Loss::CategoricalCrossentropy,
            Adam::default(),
            &[Metric::Accuracy],
        )?;
        model.load_weights(&self.weights)?;
        Ok(model)
    }
}
