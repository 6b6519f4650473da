//! The `convnet` command line: each subcommand lives in its own module.

mod bench;
mod bench_convolve;
mod checkpoints;
mod cluster;
mod convolve;
mod evaluate;
mod inspect;
mod model_args;
mod model_spec;
mod picture;
mod plot_activations;
mod predict;
mod summary;
mod train;
mod train_data;
mod visuals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "convnet",
    version,
    about = "Convolutional neural networks in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on MNIST (the classic Keras LeNet recipe), CIFAR-10 or your own image folder.
    Train(Box<train::TrainArgs>),
    /// Test scores on MNIST of weights saved by `train --save-weights`, per digit too.
    Evaluate(evaluate::EvaluateArgs),
    /// Classify pictures of digits (PNG, JPEG) with weights saved by `train --save-weights`.
    Predict(predict::PredictArgs),
    /// Picture a trained model's first-layer kernels and the feature maps an image produces.
    Inspect(inspect::InspectArgs),
    /// Plot sigmoid, tanh and ReLU with their derivatives to a PNG.
    PlotActivations(plot_activations::PlotActivationsArgs),
    /// Print a model's layers, output shapes and parameter counts.
    Summary(summary::SummaryArgs),
    /// Convolve a photo with a kernel (edge detection by default) and write a PNG.
    Convolve(convolve::ConvolveArgs),
    /// Measure training and inference speed of LeNet on MNIST.
    Bench(bench::BenchArgs),
    /// Time convolve2d and fftconvolve on a 512x512 image (compare with scipy).
    BenchConvolve(bench_convolve::BenchConvolveArgs),
}

/// Sets the size of the thread pool, if asked.
fn set_threads(threads: Option<usize>) -> convnet::Result<()> {
    match threads {
        Some(0) => Err(convnet::Error::InvalidArgument(
            "--threads must be at least 1".into(),
        )),
        Some(n) => convnet::set_num_threads(n),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::PlotActivations(args) => plot_activations::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Convolve(args) => convolve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchConvolve(args) => bench_convolve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
