//! `convnet plot-activations`: sigmoid, tanh and ReLU with their
//! derivatives, in one picture.

use std::path::PathBuf;

use clap::Args;
use convnet::Result;

/// Arguments of `convnet plot-activations`.
#[derive(Args)]
pub struct PlotActivationsArgs {
    /// The PNG file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

pub fn run(args: PlotActivationsArgs) -> Result<()> {
    convnet::io::check_outputs(&[("-o", &args.output)], &[])?;
    convnet::plots::save_png(&convnet::plots::activations()?, &args.output)?;
    println!("Wrote {}", args.output.display());
    Ok(())
}
