//! The `convnet` command line: each subcommand lives in its own module.

mod bench;
mod bench_convolve;
mod bench_model;
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
mod signals;
mod summary;
mod train;
mod train_data;
mod visuals;

use std::io::Write;
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

/// What to print when the standard output cannot be written (a closed
/// pipe, a full disk): `println!` panics then, and this hook turns that
/// panic into a one-line error and exit status 1.
fn exit_cleanly_when_stdout_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        match message.strip_prefix("failed printing to stdout: ") {
            Some(reason) => stdout_failed(&reason),
            None => default(info),
        }
    }));
}

/// Reports that the standard output failed with `reason`, and exits.
fn stdout_failed(reason: &dyn std::fmt::Display) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "error: cannot write to the standard output ({reason}): it is a closed pipe or a full \
         disk; redirect it to a file that can be written"
    );
    std::process::exit(1)
}

fn main() -> ExitCode {
    signals::ignore_file_size_signal();
    signals::remove_temporaries_on_signals();
    exit_cleanly_when_stdout_fails();
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
    if let Err(e) = std::io::stdout().flush() {
        stdout_failed(&e);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err}");
            ExitCode::FAILURE
        }
    }
}
