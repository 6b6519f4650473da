//! The hot loops, and only those: matrix products, im2col/col2im, pooling and
//! element-wise activation loops. Layers in [`crate::layers`] decide *what* to
//! compute; these functions say *how*, on plain `f32` slices in NHWC order.
//!
//! Everything here is single-threaded: the layers split a batch into chunks of
//! whole images and run these kernels on the chunks in parallel. The chunks
//! have a fixed size that does not depend on the number of threads, so a
//! training run gives the same numbers, bit for bit, on 1 or 16 threads.

pub mod activation;
pub mod direct_conv;
pub mod filter_conv;
pub mod gemm;
pub mod im2col;
pub mod linear;
pub mod pool;
pub mod scratch;
#[cfg(target_arch = "x86_64")]
mod sgemm;
pub mod winograd;

pub use im2col::Window2d;

use std::sync::atomic::{AtomicBool, Ordering};

static AVX512_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Whether this CPU has AVX-512F and the kernels may use it (see
/// [`allow_avx512`]); checked at run time.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        AVX512_ALLOWED.load(Ordering::Relaxed)
            && has_avx2_fma()
            && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the kernels may use AVX-512 where the CPU has it (default:
/// yes). Turning it off keeps them to AVX2, to test or time those kernels
/// on an AVX-512 machine. Results stay correct either way, but may differ
/// in the last bits, so switch before training, not during it.
pub fn allow_avx512(allowed: bool) {
    AVX512_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// Whether this CPU has AVX2 and FMA, which the hand-vectorised kernels
/// need (checked at run time, cached by the standard library).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `a` and `b` hold the same values, bit for bit (NaNs and signed
/// zeros included): the tests' check of kernels that promise the same
/// result however the work is split.
#[cfg(test)]
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `dst = src` for short runs (im2col's windows, padded image rows),
/// without the call to `memcpy` that `copy_from_slice` makes for lengths
/// unknown at compile time.
#[inline]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut dst_blocks = dst.chunks_exact_mut(8);
    let mut src_blocks = src.chunks_exact(8);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        let s: &[f32; 8] = s.try_into().expect("8 values");
        d.copy_from_slice(s);
    }
    for (d, s) in dst_blocks
        .into_remainder()
        .iter_mut()
        .zip(src_blocks.remainder())
    {
        *d = *s;
    }
}

/// Asks the CPU to bring `values[range]` into the L1 cache, one request
/// per 64-byte line, where a loop will read or write them soon: the
/// hardware prefetcher follows one stream well, but not a tile's rows of
/// a tensor the layer before just wrote, which then stall the loads at
/// memory's pace. Out-of-range parts are skipped: a hint, never a read.
/// (Lines to be written are fetched the same way: `prefetchw`, which
/// would fetch them owned, needs the `prfchw` target feature, and
/// without it `_MM_HINT_ET0` compiles to this same `prefetcht0`.)
#[inline(always)]
pub(crate) fn prefetch<T>(values: &[T], range: std::ops::Range<usize>) {
    let end = range.end.min(values.len());
    #[cfg(target_arch = "x86_64")]
    if range.start < end {
        let first = values[range.start..].as_ptr().cast::<u8>();
        // From the start of the line holding the first value to the end of
        // the range.
        let skip = first as usize % 64;
        let bytes = skip + (end - range.start) * std::mem::size_of::<T>();
        for offset in (0..bytes).step_by(64) {
            let line = first.wrapping_add(offset).wrapping_sub(skip);
            // SAFETY: a prefetch reads nothing and cannot fault; every
            // line holds values of `values`.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(line.cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, end);
}

#[cfg(test)]
mod tests {
    use super::prefetch;

    #[test]
    fn prefetch_takes_any_range_without_reading_past_the_slice() {
        let values = vec![1.0f32; 100];
        for range in [0..100, 0..0, 99..100, 50..1000, 100..200, 500..600] {
            prefetch(&values, range);
        }
        prefetch(&values[100..], 0..16);
        prefetch(&[7u8; 3], 1..5);
    }
}
