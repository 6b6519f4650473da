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
