//! `convnet train`: the reference Keras program, in one command.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::checkpoints;
use super::cluster::Cluster;
use super::model_spec::{Augment, ModelSpec};
use super::train_data::{self, DataKind, DataRequest, TrainingData};
use convnet::callbacks::{Callback, EarlyStopping};
use convnet::datasets::image_folder::ColorMode;
use convnet::datasets::mnist;
use convnet::io::Checkpoint;
use convnet::optimizers::Optimizer;
use convnet::schedules::{CosineDecay, ExponentialDecay, LearningRateSchedule, OneCycle};
use convnet::{Error, Fit, Loss, Metric, Result, Sequential, optimizers};
use ndarray::{Array3, Axis, s};

/// Arguments of `convnet train`; the defaults are the reference program's.
#[derive(Args)]
pub struct TrainArgs {
    /// The model: lenet, cifar10-cnn, vgg-small or alexnet, made for the data's
    /// pictures and classes; or an architecture file (FILE.json, as
    /// Sequential::to_json writes it) whose input and output fit them.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Samples per gradient step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// adam, adamw, sgd or rmsprop.
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
    /// The data: a folder with the four MNIST IDX files (the default:
    /// $CONVNET_DATA, else data/mnist), with CIFAR-10's binary files
    /// (data_batch_1.bin...), or an image folder: one sub-folder of
    /// pictures (PNG, JPEG, BMP) per class, named after it.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// An image folder of test pictures, with the same class folders as
    /// --data-dir's, scored after training.
    #[arg(long, value_name = "DIR")]
    test_dir: Option<PathBuf>,
    /// The size image-folder pictures are resized to: N (square) or
    /// HEIGHTxWIDTH (default: the model's input, e.g. 28 for lenet, 32 for
    /// vgg-small).
    #[arg(long, value_name = "SIZE", value_parser = parse_image_size)]
    pub image_size: Option<(usize, usize)>,
    /// grayscale or rgb: the colours of image-folder pictures (default:
    /// the model's, grayscale for lenet, rgb for the others).
    #[arg(long, value_parser = parse_color_mode)]
    pub color_mode: Option<ColorMode>,
    /// Don't check the files' SHA-256 against MNIST's (for other IDX data).
    #[arg(long)]
    skip_checksum: bool,
    /// Train on the first N training images only (for an image folder,
    /// the first N after shuffling).
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
    /// Save the whole trained model (architecture, weights, optimizer
    /// settings) to this one safetensors file, for `convnet predict` and
    /// `convnet evaluate --model-file`.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Write a checkpoint after every epoch into this folder
    /// (last.safetensors, and best.safetensors for the lowest val_loss).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Resume the run whose checkpoints are in this folder, up to --epochs
    /// counted from its start (the model, optimizer and seed come from the
    /// checkpoint); checkpoints go on being written there.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop when val_loss has not improved for PATIENCE epochs, and keep
    /// the weights of the best epoch (even without a stop).
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
    /// Change the learning rate (--lr, or the optimizer's default) at
    /// every step.
    #[arg(long, value_enum)]
    lr_schedule: Option<Schedule>,
    /// Change each training picture at random: any of flip, translate,
    /// rotate, zoom, comma-separated; alone, translate,rotate,zoom. The
    /// layers go in front of the model (and its file), and do nothing at
    /// inference.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0..=1, value_name = "LIST")]
    augment: Option<Vec<Augment>>,
    /// Decoupled weight decay (AdamW's; for the other optimizers, Keras's
    /// weight_decay option): each step also multiplies the weights by
    /// 1 - lr * decay.
    #[arg(long, value_name = "DECAY")]
    weight_decay: Option<f32>,
    /// Clip each weight tensor's gradient to this norm.
    #[arg(long, value_name = "NORM")]
    clipnorm: Option<f32>,
    /// Clip each gradient value to [-VALUE, VALUE].
    #[arg(long, value_name = "VALUE")]
    clipvalue: Option<f32>,
    /// Smooth the one-hot targets: y * (1 - E) + E / classes.
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    label_smoothing: Option<f32>,
    /// Validate on this fraction of the training pictures instead of on
    /// the test ones, which still give the final test scores: MNIST's and
    /// CIFAR-10's last ones, an image folder's last ones after a shuffle
    /// by --seed (Keras's validation_split).
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    validation_split: Option<f32>,
    /// Draw the loss and accuracy per epoch, training and validation, into this PNG file.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Write one self-contained HTML page (pictures embedded): the model, the training
    /// curves, the test scores, the confusion matrix, misclassified images, the kernels.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Train across the processes mpiexec starts (`mpiexec -n 2 convnet
    /// train --distributed`; a build with --features mpi): each trains on
    /// its share of every batch; rank 0 prints and writes the files.
    #[arg(long)]
    distributed: bool,
}

/// `--image-size`: `N` or `HEIGHTxWIDTH`.
fn parse_image_size(text: &str) -> std::result::Result<(usize, usize), String> {
    let side = |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if (1..=8192).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a picture size: give N or HEIGHTxWIDTH, sides of 1 to 8192 pixels"
        )),
    };
    match text.split_once(['x', 'X']) {
        Some((height, width)) => Ok((side(height)?, side(width)?)),
        None => side(text).map(|n| (n, n)),
    }
}

fn parse_color_mode(text: &str) -> std::result::Result<ColorMode, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

/// The choices of `--lr-schedule`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Schedule {
    /// Cosine decay from the rate to 0 over all the steps of all the epochs.
    Cosine,
    /// One cycle over all the steps: up from rate/25 to the rate in the
    /// first 30%, then down to rate/25/1e4 (PyTorch's OneCycleLR).
    Onecycle,
    /// The rate halved after every epoch (a staircase exponential decay).
    Step,
}

impl Schedule {
    /// The schedule from `lr`, for `epochs` epochs of `steps` steps.
    fn of(self, lr: f32, epochs: usize, steps: usize) -> Box<dyn LearningRateSchedule> {
        let total = (epochs * steps) as u64;
        match self {
            Schedule::Cosine => Box::new(CosineDecay::new(lr, total)),
            Schedule::Onecycle => Box::new(OneCycle::new(lr, total)),
            Schedule::Step => Box::new(ExponentialDecay {
                staircase: true,
                ..ExponentialDecay::new(lr, steps as u64, 0.5)
            }),
        }
    }
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
    mnist::load_data_from(&dir, verify).map_err(mnist_hint)
}

/// The flags that fix an MNIST error: `--data-dir` for a missing file,
/// `--skip-checksum` for other IDX data.
pub fn mnist_hint(e: Error) -> Error {
    match e {
        Error::Io { path, source } if source.kind() == ErrorKind::NotFound => {
            let source = std::io::Error::new(
                ErrorKind::NotFound,
                format!("{source} (use --data-dir DIR)"),
            );
            Error::Io { path, source }
        }
        Error::Data(message) if message.contains("checksum mismatch") => {
            Error::Data(format!("{message} (use --skip-checksum)"))
        }
        other => other,
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cluster = Cluster::start(args.distributed)?;
    let result = train(args, &cluster);
    cluster.finish(result)
}

fn train(args: TrainArgs, cluster: &Cluster) -> Result<()> {
    super::set_threads(args.threads)?;
    if let Some(fraction) = args.validation_split
        && !(0.0..1.0).contains(&fraction)
    {
        return Err(Error::InvalidArgument(format!(
            "--validation-split must be in [0, 1), got {fraction}"
        )));
    }
    let outputs = [
        ("--metrics-out", &args.metrics_out),
        ("--save-weights", &args.save_weights),
        ("--save", &args.save),
        ("--plot", &args.plot),
        ("--report", &args.report),
    ];
    let outputs: Vec<_> = outputs
        .iter()
        .filter_map(|(flag, path)| Some((*flag, path.as_deref()?)))
        .collect();
    convnet::io::check_outputs(&outputs, &[])?;
    if args.resume.is_some() && args.early_stopping.is_some() {
        return Err(Error::InvalidArgument(
            "--early-stopping cannot be resumed (a checkpoint does not keep its patience): \
             resume without it"
                .into(),
        ));
    }
    let spec = ModelSpec::parse(&args.model)?;
    let kind = train_data::kind_of(args.data_dir.as_deref());
    let data = train_data::load(&data_request(&args, &spec)?)?;
    let train_count = data.train.len();
    let augment = augmentations(&args);
    let checkpoint_dir = args.checkpoint_dir.as_ref().or(args.resume.as_ref());
    if let Some(dir) = args.checkpoint_dir.as_ref().filter(|_| cluster.is_root()) {
        checkpoints::prepare_dir(dir)?;
    }
    let (mut model, done) = match &args.resume {
        Some(dir) => checkpoints::resume(dir, |seed| spec.model_for(&data, seed, &augment))?,
        None => (
            new_model(&args, &spec, &data, &augment)?,
            Checkpoint::default(),
        ),
    };
    // MNIST's classes are the digits themselves; named classes are kept
    // in the model for `predict`, which also reads pictures as training
    // read them: digit models make each picture an MNIST digit first.
    if kind != DataKind::Mnist {
        model.set_class_names(data.class_names.iter().cloned());
    }
    // A checkpoint keeps the base rate, not the schedule: given again here.
    set_schedule(model.optimizer_mut()?, &args, train_count)?;
    cluster.attach(&mut model);
    if args.verbose > 0 && cluster.is_root() {
        println!(
            "Training {} on {} {} ({}{}), batch {}, {} epochs, {} threads{}, seed {}",
            spec.name(),
            train_count,
            data.kind,
            held_out(data.held_out()),
            data.test
                .as_ref()
                .map_or("no test".into(), |t| format!("{} test", t.len())),
            args.batch_size,
            args.epochs,
            rayon::current_num_threads(),
            cluster.describe(),
            model.seed()
        );
    }
    let mut callbacks: Vec<Box<dyn Callback>> = Vec::new();
    if let Some(patience) = args.early_stopping {
        let early = EarlyStopping::new().patience(patience);
        callbacks.push(Box::new(
            early.restore_best_weights(true).verbose(args.verbose),
        ));
    }
    let before = done.history.clone();
    if let Some(dir) = checkpoint_dir.filter(|_| cluster.is_root()) {
        callbacks.push(Box::new(checkpoints::Writer::new(dir, done.clone())));
    }
    let validation = data.validation.as_ref().or(data.test.as_ref());
    let history = model
        .fit(
            &data.train.x,
            &data.train.y,
            Fit {
                batch_size: args.batch_size,
                epochs: args.epochs,
                initial_epoch: done.epoch,
                verbose: args.verbose,
                validation_data: validation.map(|v| (&v.x as _, &v.y as _)),
                validation_split: 0.0,
                shuffle: true,
                replicas: args.replicas,
                callbacks,
            },
        )
        .map_err(|e| match e {
            Error::NonFinite(message) => Error::NonFinite(format!("{message} (use --lr)")),
            other => other,
        })?;
    if !cluster.is_root() {
        return Ok(());
    }
    report_loading(&history, args.verbose);
    let history = checkpoints::joined(before, &history);
    let (scored, final_part) = match (&data.test, &data.validation) {
        (Some(test), _) => ("Test", Some(test)),
        (None, Some(validation)) => ("Validation", Some(validation)),
        (None, None) => ("", None),
    };
    let score = match final_part {
        Some(part) => Some(model.evaluate(&part.x, &part.y)?),
        None => None,
    };
    if let Some(score) = &score {
        println!("{scored} loss: {:.4}", score.loss);
        println!("{scored} accuracy: {:.4}", score.accuracy().unwrap_or(0.0));
    }

    if let Some(path) = &args.save_weights {
        model.save_weights(path)?;
    }
    if let Some(path) = &args.save {
        model.save(path)?;
    }
    if let Some(path) = &args.metrics_out {
        let mut history_json = serde_json::to_value(&history.history).map_err(json_error)?;
        history_json["epoch_seconds"] = serde_json::json!(history.epoch_seconds);
        let mut report = serde_json::json!({
            "framework": "convnet",
            "version": env!("CARGO_PKG_VERSION"),
            "model": spec.name(),
            "data": data.kind,
            "classes": data.class_names,
            "threads": rayon::current_num_threads(),
            "seed": model.seed(),
            "batch_size": args.batch_size,
            "replicas": history.replicas,
            "epochs": args.epochs,
            "history": history_json,
        });
        if let Some(score) = &score {
            let key = scored.to_lowercase();
            report[format!("{key}_loss")] = serde_json::json!(score.loss);
            report[format!("{key}_accuracy")] = serde_json::json!(score.accuracy());
        }
        let text = serde_json::to_string_pretty(&report).map_err(json_error)? + "\n";
        convnet::io::write_atomic(path, text.as_bytes())?;
    }
    let run = super::visuals::Run {
        model_name: &spec.name(),
        data: &data,
        history: &history,
        scored: final_part
            .zip(score.as_ref())
            .map(|(part, s)| (scored, part, s)),
        batch_size: args.batch_size,
    };
    super::visuals::after_training(
        args.plot.as_deref(),
        args.report.as_deref(),
        &mut model,
        &run,
    )
}

/// After training on pictures decoded from files: how fast the loader
/// decoded them, and whether training had to wait for it.
fn report_loading(history: &convnet::History, verbose: u8) {
    let loading: f64 = history.loading_seconds.iter().sum();
    if verbose == 0 || loading == 0.0 {
        return;
    }
    let waiting: f64 = history.waiting_seconds.iter().sum();
    let training: f64 = history.epoch_seconds.iter().sum();
    println!(
        "Input: decoding took {loading:.1} s in the background; training waited {waiting:.1} s \
         of {training:.1} s for pictures"
    );
}

/// Where `train`'s data is and how to read it: the flags, and for an image
/// folder the picture size and colours the model takes.
fn data_request<'a>(args: &'a TrainArgs, spec: &ModelSpec) -> Result<DataRequest<'a>> {
    let dir = args.data_dir.as_deref();
    let folder = train_data::kind_of(dir) == DataKind::ImageFolder;
    if !folder && (args.image_size.is_some() || args.color_mode.is_some()) {
        return Err(Error::InvalidArgument(
            "--image-size and --color-mode are for image folders; MNIST and CIFAR-10 pictures \
             keep their size and colours"
                .into(),
        ));
    }
    let [height, width, channels] = spec.input_for_folders(args)?;
    let color_mode = ColorMode::with_channels(channels).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the model takes {channels} channels; image folders give 1 (grayscale) or 3 (rgb)"
        ))
    })?;
    Ok(DataRequest {
        dir,
        verify: !args.skip_checksum,
        train_limit: args.train_limit,
        test_limit: args.test_limit,
        validation_split: args.validation_split.unwrap_or(0.0),
        image_size: (height, width),
        color_mode,
        seed: args.seed,
        test_dir: args.test_dir.as_deref(),
    })
}

/// The model `--model` names (a ready-made one, or an architecture file),
/// for the data's pictures and classes, compiled as the flags say.
fn new_model(
    args: &TrainArgs,
    spec: &ModelSpec,
    data: &TrainingData,
    augment: &[Augment],
) -> Result<Sequential> {
    let mut model = spec.model_for(data, args.seed, augment)?;
    let mut optimizer = optimizers::by_name(&args.optimizer, args.lr)?;
    let settings = [
        ("weight_decay", args.weight_decay),
        ("clipnorm", args.clipnorm),
        ("clipvalue", args.clipvalue),
    ];
    for (name, value) in settings {
        if let Some(value) = value {
            let flag = format!("--{}", name.replace('_', "-"));
            optimizer
                .apply_settings(&[(name.to_string(), value)])
                .map_err(|e| flag_error(e, name, &flag))?;
        }
    }
    let mut loss = Loss::CategoricalCrossentropy;
    if let Some(epsilon) = args.label_smoothing {
        loss = loss
            .label_smoothing(epsilon)
            .map_err(|e| flag_error(e, "label_smoothing", "--label-smoothing"))?;
    }
    model.compile_boxed(loss, optimizer, &[Metric::Accuracy])?;
    Ok(model)
}

/// The augmentation layers `--augment` asks for, in a fixed order.
fn augmentations(args: &TrainArgs) -> Vec<Augment> {
    match &args.augment {
        None => Vec::new(),
        Some(list) if list.is_empty() => Augment::DEFAULT.to_vec(),
        Some(list) => {
            let mut kinds = list.clone();
            kinds.sort_by_key(|&k| k as u8);
            kinds.dedup();
            kinds
        }
    }
}

/// A library message about `name`, in the words of its flag.
fn flag_error(e: Error, name: &str, flag: &str) -> Error {
    match e {
        Error::InvalidArgument(message) => {
            Error::InvalidArgument(format!("{flag}: {}", message.replace(name, flag)))
        }
        other => other,
    }
}

/// `"N held out for validation, "`, or nothing without a validation split.
fn held_out(count: usize) -> String {
    match count {
        0 => String::new(),
        _ => format!("{count} held out for validation, "),
    }
}

/// Gives `optimizer` the `--lr-schedule`, over the steps of training on
/// `train_count` images.
fn set_schedule(optimizer: &mut dyn Optimizer, args: &TrainArgs, train_count: usize) -> Result<()> {
    let Some(schedule) = args.lr_schedule else {
        return Ok(());
    };
    let steps = train_count.div_ceil(args.batch_size.max(1));
    // The schedule starts from --lr or the optimizer's default, not from
    // the rate a resumed checkpoint had reached.
    let base = match args.lr {
        Some(lr) => lr,
        None => optimizers::by_name(optimizer.name(), None)?.learning_rate(),
    };
    let schedule = schedule.of(base, args.epochs, steps);
    optimizer.set_schedule(schedule).map_err(|e| match e {
        Error::InvalidArgument(message) => {
            Error::InvalidArgument(format!("--lr-schedule: {message}"))
        }
        other => other,
    })
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Data(format!("cannot encode the metrics as JSON: {e}"))
}
