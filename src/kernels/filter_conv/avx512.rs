//! The AVX-512 kernels of `filter_conv`, for wide layers: 16 filters are
//! one vector, so a block holds twice the sums of the AVX2 kernels and each
//! instruction does twice the work.

use super::{GROUP, MAX_BLOCK, Shape, padded_len};
use std::arch::x86_64::*;

/// Output pixels per block of the forward pass.
const PIXELS: usize = 8;

/// Output row `oy` of one padded image.
///
/// # Safety
/// AVX-512F present; `image` is one padded image, `kernel` and `bias` the
/// layer's, `row` one whole output row; the layer is wide.
#[target_feature(enable = "avx512f")]
pub unsafe fn forward_row(
    s: &Shape,
    image: &[f32],
    kernel: &[f32],
    bias: &[f32],
    row: &mut [f32],
    oy: usize,
) {
    let (c, filters, out_w) = (s.w.channels, s.filters, s.w.out_w);
    unsafe {
        let input = image.as_ptr().add(oy * s.row_len);
        for group in (0..filters).step_by(GROUP) {
            for ox in (0..out_w).step_by(PIXELS) {
                let (x, y) = (
                    input.add(ox * c),
                    row.as_mut_ptr().add(ox * filters + group),
                );
                let (k, b) = (kernel.as_ptr().add(group), bias.as_ptr().add(group));
                unrolled!(PIXELS.min(out_w - ox), sums(s, x, k, b, y));
            }
        }
    }
}

/// 16 filters of `P` output pixels: `x` points at the first pixel's
/// window, `kernel`, `bias` and `out` at the group's first filter.
#[target_feature(enable = "avx512f")]
unsafe fn sums<const P: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    let (c, filters) = (s.w.channels, s.filters);
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias); P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), kernel.add(ky * s.row_taps * filters));
            for t in 0..s.row_taps {
                let w = _mm512_loadu_ps(taps.add(t * filters));
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(p * c + t)), w, *acc);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(p * filters), *acc);
        }
    }
}

/// The kernel gradient of a chunk, written.
///
/// # Safety
/// AVX-512F present; `padded` and `dy` hold the same images, `d_kernel`
/// has the kernel's length; the layer is wide.
#[target_feature(enable = "avx512f")]
pub unsafe fn kernel_grad(s: &Shape, padded: &[f32], dy: &[f32], d_kernel: &mut [f32]) {
    let d_kernel = d_kernel.as_mut_ptr();
    for group in (0..s.filters).step_by(GROUP) {
        for ky in 0..s.w.k_h {
            for first in (0..s.row_taps).step_by(MAX_BLOCK) {
                let taps = MAX_BLOCK.min(s.row_taps - first);
                let at = (ky, first, group);
                unsafe { unrolled!(taps, grad(s, padded, dy, d_kernel, at)) }
            }
        }
    }
}

/// Taps `first..first + T` of kernel row `ky`, filters `group..group +
/// 16`: `at = (ky, first, group)`.
#[target_feature(enable = "avx512f")]
unsafe fn grad<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    d_kernel: *mut f32,
    (ky, first, group): (usize, usize, usize),
) {
    let (w, filters) = (&s.w, s.filters);
    let mut acc = [_mm512_setzero_ps(); T];
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    unsafe {
        for (image, dy) in images {
            for oy in 0..w.out_h {
                let x_row = image.as_ptr().add((oy + ky) * s.row_len + first);
                let dy_row = dy.as_ptr().add(oy * w.out_w * filters + group);
                for ox in 0..w.out_w {
                    let g = _mm512_loadu_ps(dy_row.add(ox * filters));
                    let x = x_row.add(ox * w.channels);
                    for (t, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(t)), g, *acc);
                    }
                }
            }
        }
        let out = d_kernel.add((ky * s.row_taps + first) * filters + group);
        for (t, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(t * filters), *acc);
        }
    }
}
