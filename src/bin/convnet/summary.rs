//! `convnet summary`: the Keras summary table of a ready-made model.

use clap::Args;

/// Arguments of `convnet summary`.
#[derive(Args)]
pub struct SummaryArgs {
    /// The model: lenet or alexnet.
    #[arg(long, default_value = "lenet")]
    model: String,
}

/// The table, then the execution plan (which layers run fused).
pub fn run(args: SummaryArgs) -> convnet::Result<()> {
    let mut model = convnet::models::by_name(&args.model, 0)?;
    model.summary()?;
    print!("{}", model.plan_string()?);
    Ok(())
}
