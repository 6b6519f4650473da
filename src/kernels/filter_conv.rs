//! Stride-1 convolutions with a multiple of 8 filters (LeNet's second
//! layer: 16), on CPUs with AVX2 and FMA, forward pass only.
//!
//! In NHWC the filters of one output pixel are contiguous, so they are the
//! SIMD axis here: for each kernel tap `(ky, kx, c)`, the tap's weights for
//! 16 filters are two vector loads, each of four neighbouring output pixels
//! broadcasts its input value, and 8 fused multiply-adds update the 4 x 16
//! sums held in registers. No im2col rows are written or read.

use super::{Window2d, has_avx2_fma};

const PIXELS: usize = 4;
const VEC: usize = 8;
/// Filters per register group (two AVX vectors).
const GROUP: usize = 2 * VEC;

/// Whether this path handles the geometry on this CPU.
pub fn applies(w: &Window2d, filters: usize) -> bool {
    w.stride_h == 1 && w.stride_w == 1 && filters % GROUP == 0 && has_avx2_fma()
}

/// Width of a zero-padded image row, in pixels.
fn padded_w(w: &Window2d) -> usize {
    w.out_w + w.k_w - 1
}

/// Values of one zero-padded image (NHWC, padding on every side).
pub fn padded_len(w: &Window2d) -> usize {
    (w.out_h + w.k_h - 1) * padded_w(w) * w.channels
}

/// Copies one image into `padded`, zeros around it.
fn pad(w: &Window2d, image: &[f32], padded: &mut [f32]) {
    let (c, pw) = (w.channels, padded_w(w));
    padded.fill(0.0);
    for (iy, row) in image.chunks_exact(w.in_w * c).enumerate() {
        let at = ((iy + w.pad_top) * pw + w.pad_left) * c;
        padded[at..at + row.len()].copy_from_slice(row);
    }
}

/// `y = x ⋆ kernel + bias` for a chunk of images; `scratch` holds
/// [`padded_len`] values.
pub fn forward(
    w: &Window2d,
    filters: usize,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(applies(w, filters), "filter_conv does not apply");
    assert_eq!(kernel.len(), w.patch_len() * filters);
    assert_eq!(bias.len(), filters);
    assert_eq!(scratch.len(), padded_len(w));
    let images = x
        .chunks_exact(w.in_len())
        .zip(y.chunks_exact_mut(w.out_pixels() * filters));
    for (image, out) in images {
        pad(w, image, scratch);
        for oy in 0..w.out_h {
            let row = &mut out[oy * w.out_w * filters..(oy + 1) * w.out_w * filters];
            for group in (0..filters).step_by(GROUP) {
                let mut ox = 0;
                while ox < w.out_w {
                    let pixels = PIXELS.min(w.out_w - ox);
                    // SAFETY: AVX2/FMA checked by `applies`; the padded image
                    // covers every tap of every output pixel (its size is
                    // `padded_len`, asserted), the kernel has `patch_len · filters`
                    // values and `group + GROUP <= filters`; the output row
                    // has `out_w · filters` values and `ox + pixels <= out_w`.
                    unsafe {
                        x86::pixels(
                            w, filters, scratch, kernel, bias, row, oy, ox, pixels, group,
                        )
                    };
                    ox += pixels;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PIXELS, VEC, Window2d, padded_w};
    use std::arch::x86_64::*;

    /// Output pixels `ox..ox + pixels` of row `oy`, filters `group..group + 16`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pixels(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        kernel: &[f32],
        bias: &[f32],
        row: &mut [f32],
        oy: usize,
        ox: usize,
        pixels: usize,
        group: usize,
    ) {
        unsafe {
            match pixels {
                PIXELS => sums::<PIXELS>(w, filters, padded, kernel, bias, row, oy, ox, group),
                3 => sums::<3>(w, filters, padded, kernel, bias, row, oy, ox, group),
                2 => sums::<2>(w, filters, padded, kernel, bias, row, oy, ox, group),
                _ => sums::<1>(w, filters, padded, kernel, bias, row, oy, ox, group),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sums<const P: usize>(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        kernel: &[f32],
        bias: &[f32],
        row: &mut [f32],
        oy: usize,
        ox: usize,
        group: usize,
    ) {
        unsafe {
            let b = bias.as_ptr().add(group);
            let mut acc = [[_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(VEC))]; P];
            let (c, pw) = (w.channels, padded_w(w));
            for ky in 0..w.k_h {
                let input_row = padded.as_ptr().add(((oy + ky) * pw + ox) * c);
                for kx in 0..w.k_w {
                    for ch in 0..c {
                        let tap = ((ky * w.k_w + kx) * c + ch) * filters + group;
                        let w0 = _mm256_loadu_ps(kernel.as_ptr().add(tap));
                        let w1 = _mm256_loadu_ps(kernel.as_ptr().add(tap + VEC));
                        for (p, acc) in acc.iter_mut().enumerate() {
                            let x = _mm256_broadcast_ss(&*input_row.add((p + kx) * c + ch));
                            acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                            acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
                        }
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                let out = row.as_mut_ptr().add((ox + p) * filters + group);
                _mm256_storeu_ps(out, acc[0]);
                _mm256_storeu_ps(out.add(VEC), acc[1]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! Never called: `applies` is false off x86-64.
    use super::Window2d;
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn pixels(
        _: &Window2d,
        _: usize,
        _: &[f32],
        _: &[f32],
        _: &[f32],
        _: &mut [f32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("filter_conv::applies is false off x86-64")
    }
}
