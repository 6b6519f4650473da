//! `convnet inspect`: what a trained model sees in a picture: the first
//! layer's kernels and the feature maps of every layer, or of one.

use std::path::PathBuf;

use clap::Args;
use convnet::plots::{self, FeatureMapOptions};
use convnet::{Error, Result};
use ndarray::Axis;

use super::model_args::ModelArgs;
use super::predict::Reading;

/// Arguments of `convnet inspect`.
#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The picture (PNG, JPEG, BMP), read as `convnet predict` reads it.
    #[arg(long, value_name = "IMAGE")]
    image: PathBuf,
    /// The PNG file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Only this layer's maps, larger (e.g. conv2d; `convnet summary`
    /// lists the names).
    #[arg(long, value_name = "NAME")]
    layer: Option<String>,
    /// Use the picture as it is (it must have the model's input size).
    #[arg(long)]
    no_preprocess: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let inputs = [args.image.as_path()];
    convnet::io::check_outputs(&[("-o", &args.output)], &inputs)?;
    let model = args.model.load()?;
    let input = Reading::of(&model, args.no_preprocess)?.input(&args.image)?;
    let options = FeatureMapOptions {
        layer: args.layer.clone(),
        input_name: args
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    };
    let picture = plots::feature_maps(&model, input.index_axis(Axis(0), 0), &options).map_err(
        |e| match e {
            Error::InvalidArgument(message) => {
                Error::InvalidArgument(format!("--layer: {message}"))
            }
            other => other,
        },
    )?;
    plots::save_png(&picture, &args.output)?;
    println!("Wrote {}", args.output.display());
    Ok(())
}
