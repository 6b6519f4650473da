//! The `convnet` command line: each subcommand lives in `convnet::cli::<name>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_convolve;
mod convolve;

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
    /// Time convolve2d and fftconvolve on a 512x512 image (compare with scipy).
    BenchConvolve(bench_convolve::BenchConvolveArgs),
    /// Convolve a photo with a kernel (edge detection by default) and write a PNG.
    Convolve(convolve::ConvolveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: convnet::Result<()> = match cli.command {
        Command::BenchConvolve(args) => bench_convolve::run(args),
        Command::Convolve(args) => convolve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
