//! Single-threaded GFLOP/s of `kernels::gemm::matmul` on the products of
//! AlexNet (batch 16) and a CIFAR CNN: the AVX-512 kernel
//! (`kernels::sgemm`) against the `matrixmultiply` crate (what `matmul`
//! runs with AVX-512 switched off), best of 5 runs each.
//!
//! Run with `cargo run --release --example gemm_bench`.
//!
//! On Linux a run is timed by the CPU time of its thread, so that other
//! processes on a shared machine do not count (elsewhere by the clock).

use std::time::Instant;

use convnet::kernels::gemm::{Mat, PackedMats, matmul, matmul_packed_par};
use convnet::kernels::{allow_avx512, has_avx512};

/// How A or B is stored.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    RowMajor,
    /// Stored as its transpose, read through strides.
    Transposed,
}

/// Seconds of the fastest of 5 runs of `product`.
fn best_of_5(mut product: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
            product();
            match (cpu_start, thread_cpu_seconds()) {
                (Some(from), Some(to)) => to - from,
                _ => start.elapsed().as_secs_f64(),
            }
        })
        .fold(f64::INFINITY, f64::min)
}

/// The CPU time this thread has used, in seconds.
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        seconds: i64,
        nanoseconds: i64,
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    unsafe extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    let mut time = Timespec {
        seconds: 0,
        nanoseconds: 0,
    };
    // SAFETY: clock_gettime (from the C library every Linux program links)
    // writes one timespec, 64-bit on the 64-bit targets this example
    // times, to the valid place it is given.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) } == 0;
    ok.then_some(time.seconds as f64 + time.nanoseconds as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}

fn main() {
    use Layout::*;
    // (m, k, n, layout of A, layout of B, what it is)
    let shapes = [
        (2916, 2400, 256, RowMajor, RowMajor, "AlexNet conv2 forward"),
        (676, 2304, 384, RowMajor, RowMajor, "AlexNet conv3 forward"),
        (676, 3456, 384, RowMajor, RowMajor, "AlexNet conv4 forward"),
        (6050, 363, 96, RowMajor, RowMajor, "AlexNet conv1 forward"),
        (2400, 2916, 256, Transposed, RowMajor, "conv2 kernel grad"),
        (2916, 256, 2400, RowMajor, Transposed, "conv2 input grad"),
        (7200, 288, 32, RowMajor, RowMajor, "CIFAR conv2 forward"),
        (8192, 27, 32, RowMajor, RowMajor, "CIFAR conv1 forward"),
        (64, 2304, 512, RowMajor, RowMajor, "CIFAR dense, 64 samples"),
        (
            64,
            512,
            2304,
            RowMajor,
            Transposed,
            "CIFAR dense input grad",
        ),
        (
            2304,
            64,
            512,
            Transposed,
            RowMajor,
            "CIFAR dense kernel grad",
        ),
        (16, 9216, 4096, RowMajor, RowMajor, "dense, batch 16"),
        (
            16,
            4096,
            9216,
            RowMajor,
            Transposed,
            "dense input grad, batch 16",
        ),
        (
            9216,
            16,
            4096,
            Transposed,
            RowMajor,
            "dense kernel grad, batch 16",
        ),
    ];
    if !has_avx512() {
        println!("no AVX-512 on this CPU: both columns are matrixmultiply");
    }
    // GFLOP/s: 2 m k n floating-point operations per product.
    println!(
        "{:>5} {:>5} {:>5}  {:>8} {:>14}  shape",
        "m", "k", "n", "sgemm", "matrixmultiply"
    );
    for (m, k, n, a_layout, b_layout, what) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let a = match a_layout {
            RowMajor => Mat::new(&a, m, k),
            Transposed => Mat::new(&a, k, m).t(),
        };
        let b = match b_layout {
            RowMajor => Mat::new(&b, k, n),
            Transposed => Mat::new(&b, n, k).t(),
        };
        let mut c = vec![0.0; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let ours = best_of_5(|| matmul(a, b, &mut c, 0.0));
        allow_avx512(false);
        let theirs = best_of_5(|| matmul(a, b, &mut c, 0.0));
        allow_avx512(true);
        println!(
            "{m:>5} {k:>5} {n:>5}  {:>8.1} {:>14.1}  {what}{}{}",
            flops / ours / 1e9,
            flops / theirs / 1e9,
            if a_layout == Transposed {
                ", A transposed"
            } else {
                ""
            },
            if b_layout == Transposed {
                ", B transposed"
            } else {
                ""
            },
        );
    }
    kept_dense_kernel();
}

/// The dense product at batch 16 with its kernel packed beforehand, as a
/// Dense layer keeps it between inference batches: B streams from memory
/// once, with no packing (`matmul_packed_par` on a pool of one thread,
/// timed on that thread).
fn kept_dense_kernel() {
    let (m, k, n) = (16, 9216, 4096);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let packed = PackedMats::new(1, k, n, |_| Mat::new(&b, k, n));
    let mut c = vec![0.0; m * n];
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a pool of one thread");
    let seconds = one_thread.install(|| {
        best_of_5(|| matmul_packed_par(Mat::new(&a, m, k), packed.get(0), &mut c, 0.0))
    });
    println!(
        "{m:>5} {k:>5} {n:>5}  {:>8.1} {:>14}  dense, batch 16, B packed beforehand",
        2.0 * (m * k * n) as f64 / seconds / 1e9,
        "-"
    );
}
