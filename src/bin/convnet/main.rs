//! The `convnet` command line: each subcommand lives in its own module.

mod bench;
mod summary;
mod train;

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
    /// Train a model on MNIST (default: the classic Keras LeNet recipe).
    Train(train::TrainArgs),
    /// Measure training and inference speed of LeNet on MNIST.
    Bench(bench::BenchArgs),
    /// Print a model's layers, output shapes and parameter counts.
    Summary(summary::SummaryArgs),
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
        Command::Train(args) => train::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
