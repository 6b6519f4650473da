//! `convnet summary`: the Keras summary table of a ready-made model or of
//! an architecture file, or its architecture as JSON to start one from.

use clap::Args;
use convnet::{Error, Result};

use super::model_spec::ModelSpec;

/// Arguments of `convnet summary`.
#[derive(Args)]
pub struct SummaryArgs {
    /// The model: lenet, cifar10-cnn, vgg-small or alexnet, or an architecture file
    /// (FILE.json).
    #[arg(long, default_value = "lenet")]
    model: String,
    /// Print the architecture as JSON instead (Sequential::to_json): a
    /// file to edit and give to `train --model FILE.json`.
    #[arg(long)]
    json: bool,
}

/// The table, then the execution plan (which layers run fused); or the JSON.
pub fn run(args: SummaryArgs) -> Result<()> {
    let mut model = ModelSpec::parse(&args.model)?.model(0)?;
    if args.json {
        let value: serde_json::Value = serde_json::from_str(&model.to_json()?)
            .map_err(|e| Error::Data(format!("cannot read the architecture back: {e}")))?;
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Error::Data(format!("cannot write the architecture: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    model.summary()?;
    print!("{}", model.plan_string()?);
    Ok(())
}
