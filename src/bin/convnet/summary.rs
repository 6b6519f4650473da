//! `convnet summary`: the Keras summary table of a ready-made model.

use clap::Args;

/// Arguments of `convnet summary`.
#[derive(Args)]
pub struct SummaryArgs {
    /// The model: lenet or alexnet.
    #[arg(long, default_value = "lenet")]
    model: String,
}

pub fn run(args: SummaryArgs) -> convnet::Result<()> {
    convnet::models::by_name(&args.model, 0)?.summary()
}
