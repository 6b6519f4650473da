//! `convnet bench-convolve`: times `convolve2d` and `fftconvolve` on a square
//! image with square kernels, for comparison with scipy
//! (`scripts/bench_signal.sh` runs both and prints the ratios).

use std::time::Instant;

use clap::{Args, ValueEnum};
use convnet::signal::{Boundary, FftElement, Mode, convolve2d, fftconvolve};
use ndarray::Array2;

/// Options of `convnet bench-convolve`.
#[derive(Args, Debug)]
pub struct BenchConvolveArgs {
    /// Image height and width in pixels.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Kernel sizes to time, comma-separated (each kernel is square).
    #[arg(long, value_delimiter = ',', default_value = "3,5,15")]
    kernels: Vec<usize>,
    /// Timed calls per measurement; the median is reported.
    #[arg(long, default_value_t = 15)]
    repeats: usize,
    /// Element type.
    #[arg(long, value_enum, default_value_t = Precision::F64)]
    dtype: Precision,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The float type the benchmark runs in.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Precision {
    F32,
    F64,
}

/// One kernel size's median times in milliseconds.
struct Timing {
    kernel: usize,
    direct_ms: f64,
    fft_ms: f64,
}

/// Runs the benchmark and prints the times.
pub fn run(args: BenchConvolveArgs) -> convnet::Result<()> {
    if args.size == 0 || args.repeats == 0 || args.kernels.contains(&0) {
        return Err(convnet::Error::InvalidArgument(
            "--size, --repeats and every kernel size must be at least 1".into(),
        ));
    }
    // 16384² values of f64 take 2 GiB; kernels past the image are not timed.
    const MAX_SIZE: usize = 16384;
    if args.size > MAX_SIZE || args.kernels.iter().any(|&k| k > args.size) {
        return Err(convnet::Error::InvalidArgument(format!(
            "--size must be at most {MAX_SIZE} and every kernel size at most --size ({})",
            args.size
        )));
    }
    let timings = match args.dtype {
        Precision::F32 => time_all::<f32>(&args)?,
        Precision::F64 => time_all::<f64>(&args)?,
    };
    if args.json {
        print_json(&args, &timings);
    } else {
        print_table(&args, &timings);
    }
    Ok(())
}

fn time_all<T: FftElement>(args: &BenchConvolveArgs) -> convnet::Result<Vec<Timing>> {
    let image = pseudo_random::<T>(args.size, args.size, 1);
    args.kernels
        .iter()
        .map(|&k| {
            let kernel = pseudo_random::<T>(k, k, 2);
            let direct_ms = median_ms(args.repeats, || {
                convolve2d(
                    image.view(),
                    kernel.view(),
                    Mode::Same,
                    Boundary::Fill(T::zero()),
                )
                .map(drop)
            })?;
            let fft_ms = median_ms(args.repeats, || {
                fftconvolve(image.view(), kernel.view(), Mode::Same).map(drop)
            })?;
            Ok(Timing {
                kernel: k,
                direct_ms,
                fft_ms,
            })
        })
        .collect()
}

/// Median wall time of `repeats` calls after one untimed warm-up call.
fn median_ms(
    repeats: usize,
    mut call: impl FnMut() -> convnet::Result<()>,
) -> convnet::Result<f64> {
    call()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        call()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Values in [0, 1) from a fixed-seed xorshift generator: the benchmark needs
/// realistic, reproducible data, not statistical quality.
fn pseudo_random<T: FftElement>(rows: usize, cols: usize, seed: u64) -> Array2<T> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ seed;
    Array2::from_shape_simple_fn((rows, cols), || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        T::from((state >> 11) as f64 / (1u64 << 53) as f64).expect("a fraction fits every float")
    })
}

fn dtype_name(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => "f32",
        Precision::F64 => "f64",
    }
}

fn print_table(args: &BenchConvolveArgs, timings: &[Timing]) {
    println!(
        "image {0}x{0} {1}, mode same, boundary fill, {2} threads, median of {3} calls",
        args.size,
        dtype_name(args.dtype),
        rayon::current_num_threads(),
        args.repeats
    );
    println!(
        "{:>8} {:>16} {:>16}",
        "kernel", "convolve2d ms", "fftconvolve ms"
    );
    for t in timings {
        let kernel = format!("{0}x{0}", t.kernel);
        println!("{kernel:>8} {:>16.3} {:>16.3}", t.direct_ms, t.fft_ms);
    }
}

fn print_json(args: &BenchConvolveArgs, timings: &[Timing]) {
    let results: Vec<_> = timings
        .iter()
        .map(|t| {
            serde_json::json!({
                "kernel": t.kernel,
                "convolve2d_ms": t.direct_ms,
                "fftconvolve_ms": t.fft_ms,
            })
        })
        .collect();
    let document = serde_json::json!({
        "size": args.size,
        "dtype": dtype_name(args.dtype),
        "threads": rayon::current_num_threads(),
        "repeats": args.repeats,
        "results": results,
    });
    println!("{document}");
}
