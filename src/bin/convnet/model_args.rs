//! Where the commands that use a trained model (evaluate, predict) get it.

use std::path::PathBuf;

use clap::Args;
use convnet::optimizers::Adam;
use convnet::{Error, Loss, Metric, Result, Sequential};

/// The trained model: a one-file model saved by `convnet train --save`,
/// or weights saved by `convnet train --save-weights`, loaded into a
/// freshly built model of the named architecture.
#[derive(Args)]
pub struct ModelArgs {
    /// A whole model saved by `convnet train --save` (architecture and weights).
    #[arg(long, conflicts_with_all = ["weights", "model"])]
    model_file: Option<PathBuf>,
    /// Weights saved by `convnet train --save-weights` (with --model).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The model the --weights belong to.
    #[arg(long)]
    model: Option<String>,
}

impl ModelArgs {
    /// The model, built, compiled (evaluate needs a loss and a metric) and
    /// holding the trained weights: the one place that knows where a
    /// trained model comes from.
    pub fn load(&self) -> Result<Sequential> {
        let mut model = match (&self.model_file, &self.weights) {
            (Some(file), _) => Sequential::load(file)?,
            (None, Some(weights)) => {
                let mut model =
                    convnet::models::by_name(self.model.as_deref().unwrap_or("lenet"), 0)?;
                model.build()?;
                model.load_weights(weights)?;
                model
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "no trained model given: use --model-file FILE (from train --save) or \
                     --weights FILE (from train --save-weights)"
                        .into(),
                ));
            }
        };
        if !model.is_compiled() {
            let metrics = [Metric::Accuracy];
            model.compile(Loss::CategoricalCrossentropy, Adam::default(), &metrics)?;
        }
        Ok(model)
    }
}
