//! `convnet bench`: how fast LeNet trains and predicts on MNIST here;
//! with `--model`, any ready-made network on random pictures
//! (`bench_model`).
//!
//! FLOPs are counted from the layer shapes (see `Layer::forward_flops`):
//! the matrix products of Conv2D and Dense, a multiply-add as 2 operations,
//! the backward pass as twice the forward one except for the first layer,
//! which needs no input gradient. Pooling, activations and the optimizer are
//! not counted. For LeNet that is about 1.5 MFLOP per training image.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use convnet::data::{Rescaled, Samples};
use convnet::datasets::to_categorical;
use convnet::optimizers::Adam;
use convnet::{Error, Fit, Loss, Metric, Result, Sequential};
use ndarray::{Array2, Array4, Axis, s};

/// Arguments of `convnet bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Time this ready-made network on random pictures of its input size
    /// instead: lenet, alexnet, cifar10-cnn or vgg-small (per-layer times,
    /// training and inference images/s, GFLOP/s, peak memory).
    #[arg(long)]
    model: Option<String>,
    /// With --model: training steps to time (default: about 200 GFLOP of
    /// work, 24 to 400 steps).
    #[arg(long, requires = "model", value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Threads for the main measurement (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Training images per measured epoch (default: all 60,000).
    #[arg(long, default_value_t = 60_000)]
    images: usize,
    /// Batch size of training (default 128; with --model, 16 for alexnet).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Batch size of inference.
    #[arg(long, default_value_t = 1000)]
    inference_batch_size: usize,
    /// Skip the scaling measurement (one thread against all, alternated).
    #[arg(long)]
    no_scaling: bool,
    /// Print the time per layer only (quick; also handy under a profiler).
    #[arg(long)]
    layers_only: bool,
    /// Steps timed per layer (default 21; 5 with --model for networks
    /// whose step is over 10 GFLOP).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    layer_runs: Option<u32>,
    /// Report each layer's fastest step instead of the median (steadier
    /// for A/B comparisons on a busy machine).
    #[arg(long)]
    fastest: bool,
    /// Time each layer by the CPU time of the thread running it instead
    /// of the wall clock: with --threads 1, steady even while other
    /// programs share the cores (A/B comparisons of kernels).
    #[arg(long)]
    cpu_time: bool,
    /// Run the AVX2 kernels even where the CPU has AVX-512 (to time the
    /// path of CPUs without it; the results may differ in the last bits).
    #[arg(long)]
    no_avx512: bool,
    /// Folder with the MNIST files (default: $CONVNET_DATA, else data/mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Don't check the files' SHA-256 against MNIST's (for other IDX data).
    #[arg(long)]
    skip_checksum: bool,
    /// Also write the figures to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Mnist {
    train_x: Array4<u8>,
    train_y: Array2<f32>,
    test_x: Array4<u8>,
}

/// Training cost per image: forward, plus backward at twice the forward
/// cost for every layer but the first.
pub fn train_flops(model: &Sequential) -> f64 {
    let forward: Vec<usize> = model.layers().map(|l| l.forward_flops()).collect();
    let first = forward.iter().position(|&f| f > 0).unwrap_or(0);
    let total: usize = forward
        .iter()
        .enumerate()
        .map(|(i, &f)| if i == first { 2 * f } else { 3 * f })
        .sum();
    total as f64
}

fn lenet() -> Result<Sequential> {
    let mut model = convnet::models::lenet(1);
    model.compile(
        Loss::CategoricalCrossentropy,
        Adam::default(),
        &[Metric::Accuracy],
    )?;
    Ok(model)
}

/// Seconds for one epoch over the first `images` training images.
fn epoch_seconds(data: &Mnist, images: usize, batch_size: usize) -> Result<f64> {
    let mut model = lenet()?;
    let x = data.train_x.slice(s![..images, .., .., ..]);
    let x = Rescaled::new(&x, 1.0 / 255.0);
    let y = data.train_y.slice(s![..images, ..]);
    let options = Fit {
        batch_size,
        epochs: 1,
        verbose: 0,
        ..Fit::default()
    };
    Ok(model.fit(&x, &y, options)?.epoch_seconds[0])
}

/// Rounds of the scaling measurement.
const SCALING_ROUNDS: usize = 6;

/// How much faster `threads` threads train than one: in each of
/// [`SCALING_ROUNDS`] rounds, one thread and then `threads` (or the other
/// way round, alternately) train on half of the `images`, back to back,
/// so that both see the same moment of a machine whose speed drifts.
/// (Shorter rounds understate the speed-up: each `fit` has a fixed cost.)
/// Returns the median seconds per 60,000-image epoch of one thread, the
/// median of the rounds' speed-ups, and each round's.
fn scaling(
    data: &Mnist,
    images: usize,
    batch_size: usize,
    threads: usize,
) -> Result<(f64, f64, Vec<f64>)> {
    let share = (images / 2).max(batch_size).min(images);
    let (mut one, mut ratios) = (Vec::new(), Vec::new());
    for round in 0..SCALING_ROUNDS {
        let time = |n| in_pool(n, || epoch_seconds(data, share, batch_size))?;
        let (single, many) = if round % 2 == 0 {
            let single = time(1)?;
            (single, time(threads)?)
        } else {
            let many = time(threads)?;
            (time(1)?, many)
        };
        one.push(single * 60_000.0 / share as f64);
        ratios.push(single / many);
    }
    Ok((median(&one), median(&ratios), ratios))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Best of five: images per second predicting the whole test set.
fn inference_rate(data: &Mnist, batch_size: usize) -> Result<f64> {
    let model = lenet()?;
    let x = Rescaled::new(&data.test_x, 1.0 / 255.0);
    model.predict_with_batch_size(&x, batch_size)?; // warm-up
    // Best of 5 passes, as compare/common.py does for the peers.
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        model.predict_with_batch_size(&x, batch_size)?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(x.len() as f64 / best)
}

/// Median (or fastest) forward and backward milliseconds of each layer on
/// one batch (the first `batch_size` samples of `x` and `y`), over `runs`
/// steps; timed by the calling thread's CPU clock when `cpu_time`.
pub fn layer_profile(
    model: &mut Sequential,
    (x, y): (&dyn Samples, &dyn Samples),
    batch_size: usize,
    runs: u32,
    (fastest, cpu_time): (bool, bool),
) -> Result<Vec<(String, f64, f64)>> {
    let batch: Vec<usize> = (0..batch_size).collect();
    let started = Instant::now();
    let wall = || started.elapsed().as_secs_f64();
    let clock: &dyn Fn() -> f64 = if cpu_time { &thread_cpu_seconds } else { &wall };
    let runs: Vec<_> = (0..runs)
        .map(|_| model.profile_step_with(x, y, &batch, clock))
        .collect::<Result<_>>()?;
    let pick = |v: Vec<f64>| median_or_fastest(v, fastest) * 1e3;
    Ok((0..runs[0].len())
        .map(|i| {
            let forward = pick(runs.iter().map(|r| r[i].1).collect());
            let backward = pick(runs.iter().map(|r| r[i].2).collect());
            (runs[0][i].0.clone(), forward, backward)
        })
        .collect())
}

/// The middle value of `values` (the upper middle of an even count), or
/// the smallest when `fastest`.
pub fn median_or_fastest(mut values: Vec<f64>, fastest: bool) -> f64 {
    values.sort_by(f64::total_cmp);
    values[if fastest { 0 } else { values.len() / 2 }]
}

/// Seconds of CPU time the calling thread has used (for `--cpu-time`).
pub fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// The most memory this process has held (VmHWM), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn in_pool<T: Send>(threads: usize, job: impl FnOnce() -> T + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
    Ok(pool.install(job))
}

pub fn run(args: BenchArgs) -> Result<()> {
    let threads = match args.threads {
        Some(0) => {
            return Err(Error::InvalidArgument(
                "--threads must be at least 1".into(),
            ));
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    for (flag, size) in [
        ("--batch-size", args.batch_size.unwrap_or(1)),
        ("--inference-batch-size", args.inference_batch_size),
    ] {
        if size == 0 {
            return Err(Error::InvalidArgument(format!("{flag} must be at least 1")));
        }
    }
    if let Some(path) = &args.json {
        convnet::io::check_outputs(&[("--json", path)], &[])?;
    }
    if args.no_avx512 {
        convnet::kernels::allow_avx512(false);
    }
    if let Some(name) = &args.model {
        let bench = super::bench_model::ModelBench {
            name,
            batch_size: args.batch_size,
            steps: args.steps.map(|s| s as usize),
            layer_runs: args.layer_runs,
            fastest: args.fastest,
            cpu_time: args.cpu_time,
            layers_only: args.layers_only,
            threads,
        };
        let figures = in_pool(threads, || super::bench_model::run(bench))??;
        return write_json(args.json.as_deref(), &figures.json);
    }
    let batch_size = args.batch_size.unwrap_or(128);
    let layer_runs = args.layer_runs.unwrap_or(21);
    let ((train_x, train_y), (test_x, _)) =
        super::train::load_mnist(args.data_dir.as_deref(), !args.skip_checksum)?;
    let available = train_x.len_of(Axis(0));
    if batch_size > available {
        return Err(Error::InvalidArgument(format!(
            "--batch-size {} is more than the {available} training images; use at most \
             {available}",
            batch_size
        )));
    }
    let images = args.images.clamp(batch_size, available);
    let data = Mnist {
        train_x: train_x.insert_axis(Axis(3)),
        train_y: to_categorical(&train_y, 10)?,
        test_x: test_x.insert_axis(Axis(3)),
    };
    let flops = train_flops(&lenet()?);
    println!(
        "LeNet-5 on MNIST, batch {}, {threads} thread(s)",
        batch_size
    );
    println!(
        "training cost: {:.3} MFLOP per image (matrix products only, forward + backward)",
        flops / 1e6
    );

    let profile = in_pool(threads, || {
        let x = Rescaled::new(&data.train_x, 1.0 / 255.0);
        let timing = (args.fastest, args.cpu_time);
        layer_profile(
            &mut lenet()?,
            (&x, &data.train_y),
            batch_size,
            layer_runs,
            timing,
        )
    })??;
    println!(
        "\n{:<18} {:>12} {:>13}",
        "layer", "forward ms", "backward ms"
    );
    for (name, fwd, bwd) in &profile {
        println!("{name:<18} {fwd:>12.3} {bwd:>13.3}");
    }
    if profile
        .iter()
        .any(|&(_, fwd, bwd)| fwd == 0.0 || bwd == 0.0)
    {
        println!(
            "(0: the layer runs inside the fused stage of the layer above it, or its backward \
             pass inside the stage after it: see \"hands over\" below)"
        );
    }
    print!("{}", lenet()?.plan_string()?);
    if args.layers_only {
        return Ok(());
    }

    let seconds = in_pool(threads, || epoch_seconds(&data, images, batch_size))??;
    let rate = images as f64 / seconds;
    let epoch = 60_000.0 / rate;
    let gflops = rate * flops / 1e9;
    println!(
        "\ntraining: {rate:.0} images/s, {epoch:.2} s per 60,000-image epoch, {gflops:.1} GFLOP/s"
    );
    let (single, speedup) = if args.no_scaling || threads == 1 {
        (None, None)
    } else {
        let (one, speedup, ratios) = scaling(&data, images, batch_size, threads)?;
        let ratios: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "1 thread: {one:.2} s per epoch; {threads} threads are {speedup:.2}x faster \
             (median of {SCALING_ROUNDS} alternated rounds: {})",
            ratios.join(" ")
        );
        (Some(one), Some(speedup))
    };
    let inference = in_pool(threads, || inference_rate(&data, args.inference_batch_size))??;
    println!(
        "inference: {inference:.0} images/s (10,000 test images, batch {})",
        args.inference_batch_size
    );
    let peak = peak_rss_mb();
    if let Some(peak) = peak {
        println!("peak resident memory of this process: {peak:.0} MB");
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "framework": "convnet",
            "version": env!("CARGO_PKG_VERSION"),
            "threads": threads,
            "batch_size": batch_size,
            "train_images_per_sec": rate,
            "epoch_seconds": epoch,
            "epoch_seconds_1_thread": single,
            "speedup_over_1_thread": speedup,
            "gflops": gflops,
            "mflop_per_image": flops / 1e6,
            "inference_images_per_sec": inference,
            "inference_batch_size": args.inference_batch_size,
            "peak_rss_mb": peak,
            "layers": profile.iter().map(|(n, f, b)| serde_json::json!({"layer": n, "forward_ms": f, "backward_ms": b})).collect::<Vec<_>>(),
        });
        write_json(Some(path), &json)?;
    }
    Ok(())
}

/// Writes `json` to `path`, if one was given.
fn write_json(path: Option<&std::path::Path>, json: &serde_json::Value) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(json).expect("plain JSON") + "\n";
        convnet::io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
