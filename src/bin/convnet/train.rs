//! `convnet train`: the reference Keras program, in one command.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use clap::Args;
use convnet::data::Rescaled;
use convnet::datasets::{mnist, to_categorical};
use convnet::{Error, Fit, Loss, Metric, Result, optimizers};
use ndarray::{Array3, Axis, s};

/// Arguments of `convnet train`; the defaults are the reference program's.
#[derive(Args)]
pub struct TrainArgs {
    /// The model: lenet (alexnet expects 227x227x3 images, not MNIST).
    #[arg(long, default_value = "lenet")]
    model: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Samples per gradient step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// adam, sgd or rmsprop.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Learning rate (default: the optimizer's Keras default).
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Data-parallel replicas each batch is split between (default: one
    /// per 64 samples of a batch, at most 8). Results do not depend on
    /// --threads, only on this.
    #[arg(long)]
    replicas: Option<usize>,
    /// Folder with the four MNIST IDX files (default: $CONVNET_DATA, else data/mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Don't check the files' SHA-256 against MNIST's (for other IDX data).
    #[arg(long)]
    skip_checksum: bool,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Validate and test on the first N test images only.
    #[arg(long)]
    test_limit: Option<usize>,
    /// 0 silent, 1 progress bar, 2 one line per epoch.
    #[arg(long, default_value_t = 1)]
    verbose: u8,
    /// Write the history and the test scores to this JSON file.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Save the trained weights to this safetensors file.
    #[arg(long)]
    save_weights: Option<PathBuf>,
}

/// The first `limit` images as `(N, 28, 28, 1)`, kept as bytes.
pub fn first(images: &Array3<u8>, limit: Option<usize>) -> ndarray::Array4<u8> {
    let n = limit.unwrap_or(usize::MAX).min(images.len_of(Axis(0)));
    images
        .slice(s![..n, .., ..])
        .to_owned()
        .insert_axis(Axis(3))
}

/// Loads MNIST from `data_dir` (`--data-dir`; default: $CONVNET_DATA, else
/// data/mnist). The library's messages speak of its own API; a missing file's
/// gets the flag that points elsewhere.
pub fn load_mnist(data_dir: Option<&Path>, verify: bool) -> Result<mnist::MnistData> {
    let dir = data_dir.map_or_else(mnist::default_dir, mnist::resolve);
    mnist::load_data_from(&dir, verify).map_err(|e| match e {
        Error::Io { path, source } if source.kind() == ErrorKind::NotFound => {
            let source = std::io::Error::new(
                ErrorKind::NotFound,
                format!("{source} (use --data-dir DIR)"),
            );
            Error::Io { path, source }
        }
        other => other,
    })
}

pub fn run(args: TrainArgs) -> Result<()> {
    super::set_threads(args.threads)?;
    for path in [&args.metrics_out, &args.save_weights]
        .into_iter()
        .flatten()
    {
        check_writable_folder(path)?;
    }
    let ((train_x, train_y), (test_x, test_y)) =
        load_mnist(args.data_dir.as_deref(), !args.skip_checksum).map_err(|e| match e {
            // The library's wording (tests/cli.rs checks it).
            Error::Data(message) if message.contains("checksum mismatch") => {
                Error::Data(format!("{message} (use --skip-checksum)"))
            }
            other => other,
        })?;
    let (train_x, test_x) = (
        first(&train_x, args.train_limit),
        first(&test_x, args.test_limit),
    );
    let train_y = to_categorical(&train_y.slice(s![..train_x.len_of(Axis(0))]), 10)?;
    let test_y = to_categorical(&test_y.slice(s![..test_x.len_of(Axis(0))]), 10)?;
    // Pixels stay bytes in memory; each batch is divided by 255 as it is used.
    let (train_x, test_x) = (
        Rescaled::new(&train_x, 1.0 / 255.0),
        Rescaled::new(&test_x, 1.0 / 255.0),
    );

    let mut model = convnet::models::by_name(&args.model, args.seed)?;
    let optimizer = optimizers::by_name(&args.optimizer, args.lr)?;
    model.compile_boxed(
        Loss::CategoricalCrossentropy,
        optimizer,
        &[Metric::Accuracy],
    )?;
    if args.verbose > 0 {
        println!(
            "Training {} on {} MNIST images ({} test), batch {}, {} epochs, {} threads, seed {}",
            args.model,
            train_y.nrows(),
            test_y.nrows(),
            args.batch_size,
            args.epochs,
            rayon::current_num_threads(),
            args.seed
        );
    }
    let history = model
        .fit(
            &train_x,
            &train_y,
            Fit {
                batch_size: args.batch_size,
                epochs: args.epochs,
                verbose: args.verbose,
                validation_data: Some((&test_x, &test_y)),
                shuffle: true,
                replicas: args.replicas,
                ..Fit::default()
            },
        )
        .map_err(|e| match e {
            Error::NonFinite(message) => Error::NonFinite(format!("{message} (use --lr)")),
            other => other,
        })?;
    let score = model.evaluate(&test_x, &test_y)?;
    let accuracy = score.accuracy().expect("compiled with accuracy");
    println!("Test loss: {:.4}", score.loss);
    println!("Test accuracy: {:.4}", accuracy);

    if let Some(path) = &args.save_weights {
        model.save_weights(path)?;
    }
    if let Some(path) = &args.metrics_out {
        let mut history_json = serde_json::to_value(&history.history).map_err(json_error)?;
        history_json["epoch_seconds"] = serde_json::json!(history.epoch_seconds);
        let report = serde_json::json!({
            "framework": "convnet",
            "version": env!("CARGO_PKG_VERSION"),
            "model": args.model,
            "threads": rayon::current_num_threads(),
            "seed": args.seed,
            "batch_size": args.batch_size,
            "replicas": history.replicas,
            "epochs": args.epochs,
            "history": history_json,
            "test_loss": score.loss,
            "test_accuracy": accuracy,
        });
        let text = serde_json::to_string_pretty(&report).map_err(json_error)? + "\n";
        convnet::io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

/// Fails early, before a long training run, if `path` cannot be written.
fn check_writable_folder(path: &std::path::Path) -> Result<()> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    match folder {
        Some(folder) if !folder.is_dir() => Err(Error::InvalidArgument(format!(
            "{}: the folder {} does not exist; create it first",
            path.display(),
            folder.display()
        ))),
        _ => Ok(()),
    }
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Data(format!("cannot encode the metrics as JSON: {e}"))
}
