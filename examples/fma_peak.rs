//! The AVX-512 multiply-add peak of the core this runs on, five times:
//! 24 independent chains of `_mm512_fmadd_ps`, no memory traffic.
//!
//! Run one copy per vCPU at once to see whether the host gives them
//! separate physical cores (each copy near one core's peak) or the two
//! hyperthreads of one (each near half), before trusting a benchmark
//! campaign on a shared machine:
//!
//! ```text
//! cargo build --release --example fma_peak
//! taskset -c 0 target/release/examples/fma_peak & taskset -c 1 target/release/examples/fma_peak; wait
//! ```

use std::time::Instant;

/// Multiply-add steps per chain per measurement (about 0.1 s at 170
/// GFLOP/s).
const STEPS: usize = 20_000_000;
/// Independent accumulators: enough to cover the FMA latency on two units.
const CHAINS: usize = 24;

fn main() {
    if !convnet::kernels::has_avx512() {
        eprintln!("this CPU has no AVX-512: nothing to measure");
        std::process::exit(1);
    }
    for _ in 0..5 {
        let started = Instant::now();
        // SAFETY: the CPU has AVX-512F (checked above).
        let checksum = unsafe { chains(STEPS) };
        let seconds = started.elapsed().as_secs_f64();
        // 16 lanes, 2 FLOP per multiply-add.
        let gflops = (STEPS * CHAINS * 32) as f64 / seconds / 1e9;
        println!("{gflops:.1} GFLOP/s (checksum {checksum})");
    }
}

/// `CHAINS` accumulators, each multiplied and added to `steps` times;
/// their sum (so that the work is not optimised away).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains(steps: usize) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..steps {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(a, *r, b);
        }
    }
    _mm512_reduce_add_ps(
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r)),
    )
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn chains(_steps: usize) -> f32 {
    unreachable!("has_avx512() is false off x86_64")
}
