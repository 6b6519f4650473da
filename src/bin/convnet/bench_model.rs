//! `convnet bench --model NAME`: how fast a ready-made network trains and
//! predicts here, on random pictures of its input size, measured the way
//! `compare/bench_models.py` measures PyTorch and Keras on the same layout.
//!
//! The data is [`DATA_BATCHES`] random batches, held in memory; one pass
//! over them warms up (buffers, caches, thread pool), then whole passes are
//! timed until at least `--steps` training steps ran. Training is SGD
//! (learning rate 0.01) on categorical cross-entropy, as the peers do.
//! Inference predicts the same pictures at the training batch size, best
//! of three passes.

use std::time::Instant;

use convnet::data::Samples;
use convnet::optimizers::SGD;
use convnet::{Error, Fit, Loss, Result, Sequential};
use ndarray::{Array2, Array4};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bench::{layer_profile, peak_rss_mb, train_flops};

/// Distinct random batches the data holds.
pub const DATA_BATCHES: usize = 4;

/// What to measure (from `convnet bench`'s arguments).
pub struct ModelBench<'a> {
    pub name: &'a str,
    pub batch_size: Option<usize>,
    pub steps: Option<usize>,
    pub layer_runs: Option<u32>,
    pub fastest: bool,
    pub cpu_time: bool,
    pub layers_only: bool,
    pub threads: usize,
}

/// The figures of one model's bench (also written as JSON).
pub struct ModelFigures {
    pub json: serde_json::Value,
}

/// The batch size the comparison uses for `name` (the layouts:
/// 16 for AlexNet, 128 for the small networks).
fn default_batch(name: &str) -> usize {
    if name.eq_ignore_ascii_case("alexnet") {
        16
    } else {
        128
    }
}

/// `DATA_BATCHES` batches of random pictures in [0, 1) and one-hot labels.
fn random_data(input: [usize; 3], classes: usize, images: usize) -> (Array4<f32>, Array2<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let [h, w, c] = input;
    let x = Array4::from_shape_simple_fn((images, h, w, c), || rng.random::<f32>());
    let mut y = Array2::zeros((images, classes));
    for mut row in y.rows_mut() {
        row[rng.random_range(0..classes)] = 1.0;
    }
    (x, y)
}

fn compiled(name: &str) -> Result<Sequential> {
    let mut model = convnet::models::by_name(name, 1)?;
    model.compile(Loss::CategoricalCrossentropy, SGD::new(0.01), &[])?;
    Ok(model)
}

/// Images per second of `passes` timed training passes over `x`, `y`.
fn training_rate(
    model: &mut Sequential,
    (x, y): (&Array4<f32>, &Array2<f32>),
    batch_size: usize,
    passes: usize,
) -> Result<f64> {
    let options = |epochs| Fit {
        batch_size,
        epochs,
        verbose: 0,
        ..Fit::default()
    };
    model.fit(x, y, options(1))?; // warm-up
    let started = Instant::now();
    model.fit(x, y, options(passes))?;
    Ok((passes * x.shape()[0]) as f64 / started.elapsed().as_secs_f64())
}

/// Images per second predicting `x` at `batch_size`, best of three.
fn inference_rate(model: &Sequential, x: &Array4<f32>, batch_size: usize) -> Result<f64> {
    model.predict_with_batch_size(x, batch_size)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        model.predict_with_batch_size(x, batch_size)?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(x.shape()[0] as f64 / best)
}

/// Runs the bench and prints it; the figures come back for `--json`.
pub fn run(bench: ModelBench) -> Result<ModelFigures> {
    let batch_size = bench
        .batch_size
        .unwrap_or_else(|| default_batch(bench.name));
    if batch_size == 0 {
        return Err(Error::InvalidArgument(
            "--batch-size must be at least 1".into(),
        ));
    }
    let mut model = compiled(bench.name)?;
    model.build()?;
    let input = convnet::models::default_input(bench.name)?;
    let classes = model.output_shape()[0];
    let images = batch_size
        .checked_mul(DATA_BATCHES)
        .filter(|&n| n.saturating_mul(input.iter().product()) <= 1 << 30)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--batch-size {batch_size} is too large: {DATA_BATCHES} batches of {input:?} \
                 pictures must fit in 2^30 values"
            ))
        })?;
    let train = train_flops(&model);
    let forward: f64 = model.layers().map(|l| l.forward_flops() as f64).sum();
    println!(
        "{} on random {}x{}x{} pictures, {classes} classes, batch {batch_size}, {} thread(s), \
         {} kernels",
        bench.name,
        input[0],
        input[1],
        input[2],
        bench.threads,
        kernel_set()
    );
    println!(
        "cost per image: {:.1} MFLOP forward, {:.1} MFLOP training (matrix products only)",
        forward / 1e6,
        train / 1e6
    );
    let (x, y) = random_data(input, classes, images);
    // Time enough steps for about 2e11 FLOP of training, within 24..=400.
    let per_step = (train * batch_size as f64).max(1.0);
    let steps = bench
        .steps
        .unwrap_or(((2e11 / per_step).ceil() as usize).clamp(24, 400));
    let runs = bench
        .layer_runs
        .unwrap_or(if per_step > 1e10 { 5 } else { 21 });
    let profile = layer_profile(
        &mut model,
        (&x as &dyn Samples, &y as &dyn Samples),
        batch_size,
        runs,
        (bench.fastest, bench.cpu_time),
    )?;
    print_profile(&profile);
    print!("{}", model.plan_string()?);
    let mut json = serde_json::json!({
        "framework": "convnet",
        "version": env!("CARGO_PKG_VERSION"),
        "model": bench.name,
        "threads": bench.threads,
        "batch_size": batch_size,
        "forward_mflop_per_image": forward / 1e6,
        "train_mflop_per_image": train / 1e6,
        "layers": profile.iter().map(|(n, f, b)| serde_json::json!({"layer": n, "forward_ms": f, "backward_ms": b})).collect::<Vec<_>>(),
    });
    if !bench.layers_only {
        let passes = steps.div_ceil(DATA_BATCHES);
        let training = training_rate(&mut model, (&x, &y), batch_size, passes)?;
        let train_peak = peak_rss_mb();
        let inference = inference_rate(&model, &x, batch_size)?;
        let peak = peak_rss_mb();
        println!(
            "\ntraining: {training:.1} images/s, {:.1} GFLOP/s ({} steps)",
            training * train / 1e9,
            passes * DATA_BATCHES
        );
        println!(
            "inference: {inference:.1} images/s, {:.1} GFLOP/s",
            inference * forward / 1e9
        );
        if let (Some(train_peak), Some(peak)) = (train_peak, peak) {
            // Inference adds the kernels layers keep between batches.
            println!(
                "peak resident memory of this process: {train_peak:.0} MB training, \
                 {peak:.0} MB after inference"
            );
        }
        json["train_images_per_sec"] = training.into();
        json["inference_images_per_sec"] = inference.into();
        json["train_gflops"] = (training * train / 1e9).into();
        json["inference_gflops"] = (inference * forward / 1e9).into();
        json["steps"] = (passes * DATA_BATCHES).into();
        json["peak_train_rss_mb"] = train_peak.into();
        json["peak_rss_mb"] = peak.into();
    }
    Ok(ModelFigures { json })
}

fn print_profile(profile: &[(String, f64, f64)]) {
    println!(
        "\n{:<22} {:>12} {:>13}",
        "layer", "forward ms", "backward ms"
    );
    for (name, fwd, bwd) in profile {
        println!("{name:<22} {fwd:>12.3} {bwd:>13.3}");
    }
    let (fwd, bwd): (f64, f64) = profile
        .iter()
        .fold((0.0, 0.0), |(f, b), (_, x, y)| (f + x, b + y));
    println!("{:<22} {fwd:>12.3} {bwd:>13.3}", "total");
    if profile.iter().any(|(_, f, b)| *f == 0.0 || *b == 0.0) {
        println!(
            "(0: the layer runs inside the fused stage of the layer above it, or its backward \
             pass inside the stage after it: see \"hands over\" below)"
        );
    }
}

/// The SIMD kernels this run uses: AVX-512 where the CPU has it (and
/// `--no-avx512` did not turn it off), else AVX2, else portable loops.
fn kernel_set() -> &'static str {
    if convnet::kernels::has_avx512() {
        "AVX-512"
    } else if convnet::kernels::has_avx2_fma() {
        "AVX2"
    } else {
        "portable"
    }
}
