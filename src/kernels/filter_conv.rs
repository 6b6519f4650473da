//! Stride-1 convolutions with a multiple of 16 filters (LeNet's second
//! layer: 16) or at most 8 (LeNet's first: 6), on CPUs with AVX2 and FMA:
//! the forward pass and the kernel gradient.
//!
//! In NHWC the filters of one output pixel are contiguous, so they are the
//! SIMD axis here: for each kernel tap `(ky, kx, c)`, the tap's weights for
//! 16 filters are two vector loads, each of four neighbouring output pixels
//! broadcasts its input value, and 8 fused multiply-adds update the 4 x 16
//! sums held in registers. No im2col rows are written or read.
//!
//! The kernel gradient turns the loop around: for one tap `(ky, kx)` and up
//! to [`CHANNELS`] input channels, `d_kernel[ky, kx, c, f] += x[p + (ky, kx),
//! c] · dy[p, f]` is summed in registers over every output pixel `p` of
//! every image of the chunk, `dy[p]` being two vector loads.
//!
//! With 8 filters or fewer, one masked vector holds them all ("narrow"):
//! the forward pass keeps 8 output pixels in registers, and the kernel
//! gradient up to 12 taps of one kernel row (`k_w · channels` values that
//! lie side by side in the image row).

use super::{Window2d, has_avx2_fma};

const PIXELS: usize = 4;
/// Input channels whose kernel-gradient sums (2 vectors each) stay in registers.
const CHANNELS: usize = 6;
/// Output pixels, and kernel-gradient taps, whose narrow sums stay in registers.
const NARROW_PIXELS: usize = 8;
const NARROW_TAPS: usize = 12;
const VEC: usize = 8;
/// Filters per register group (two AVX vectors).
const GROUP: usize = 2 * VEC;

/// Whether this path handles the geometry on this CPU.
pub fn applies(w: &Window2d, filters: usize) -> bool {
    let fits = filters % GROUP == 0 || filters <= VEC;
    w.stride_h == 1 && w.stride_w == 1 && fits && has_avx2_fma()
}

/// Whether all filters fit in one (masked) vector.
fn narrow(filters: usize) -> bool {
    filters <= VEC
}

/// Width of a zero-padded image row, in pixels.
fn padded_w(w: &Window2d) -> usize {
    w.out_w + w.k_w - 1
}

/// Values of one zero-padded image (NHWC, padding on every side).
pub fn padded_len(w: &Window2d) -> usize {
    (w.out_h + w.k_h - 1) * padded_w(w) * w.channels
}

/// Copies a chunk of images into `padded` ([`padded_len`] values each),
/// zeros around each.
pub fn pad(w: &Window2d, x: &[f32], padded: &mut [f32]) {
    let (c, pw) = (w.channels, padded_w(w));
    let images = x
        .chunks_exact(w.in_len())
        .zip(padded.chunks_exact_mut(padded_len(w)));
    for (image, padded) in images {
        padded.fill(0.0);
        for (iy, row) in image.chunks_exact(w.in_w * c).enumerate() {
            let at = ((iy + w.pad_top) * pw + w.pad_left) * c;
            padded[at..at + row.len()].copy_from_slice(row);
        }
    }
}

/// `y = x ⋆ kernel + bias` for a chunk of images, zero-padded by [`pad`].
pub fn forward(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    kernel: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    assert!(applies(w, filters), "filter_conv does not apply");
    assert_eq!(kernel.len(), w.patch_len() * filters);
    assert_eq!(bias.len(), filters);
    assert_eq!(
        padded.len() / padded_len(w),
        y.len() / (w.out_pixels() * filters)
    );
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(y.chunks_exact_mut(w.out_pixels() * filters));
    for (scratch, out) in images {
        for oy in 0..w.out_h {
            let row = &mut out[oy * w.out_w * filters..(oy + 1) * w.out_w * filters];
            if narrow(filters) {
                for ox in (0..w.out_w).step_by(NARROW_PIXELS) {
                    let pixels = NARROW_PIXELS.min(w.out_w - ox);
                    // SAFETY: as below; masked loads and stores touch the
                    // `filters` values of each tap and pixel only.
                    unsafe {
                        x86::narrow_pixels(w, filters, scratch, kernel, bias, row, oy, ox, pixels)
                    };
                }
                continue;
            }
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

/// The kernel gradient of a chunk, `d_kernel[ky, kx, c, f] = Σ x[p + (ky,
/// kx), c] · dy[p, f]` over the output pixels `p` of its images (padded by
/// [`pad`]), written (not added).
pub fn kernel_grad(w: &Window2d, filters: usize, padded: &[f32], dy: &[f32], d_kernel: &mut [f32]) {
    assert!(applies(w, filters), "filter_conv does not apply");
    assert_eq!(d_kernel.len(), w.patch_len() * filters);
    assert_eq!(dy.len() % (w.out_pixels() * filters), 0);
    assert_eq!(
        padded.len() / padded_len(w),
        dy.len() / (w.out_pixels() * filters)
    );
    if narrow(filters) {
        let row_taps = w.k_w * w.channels;
        for ky in 0..w.k_h {
            for first in (0..row_taps).step_by(NARROW_TAPS) {
                let taps = NARROW_TAPS.min(row_taps - first);
                // SAFETY: AVX2/FMA checked by `applies`; the taps
                // `first..first + taps` of kernel row `ky` lie inside the
                // padded image for every output pixel; masked loads and
                // stores touch the `filters` values of each pixel and tap only.
                unsafe { x86::narrow_grad(w, filters, padded, dy, d_kernel, ky, first, taps) };
            }
        }
        return;
    }
    for group in (0..filters).step_by(GROUP) {
        for ky in 0..w.k_h {
            for kx in 0..w.k_w {
                for c in (0..w.channels).step_by(CHANNELS) {
                    let channels = CHANNELS.min(w.channels - c);
                    // SAFETY: AVX2/FMA checked by `applies`; every pixel
                    // `p + (ky, kx)` lies inside its padded image, the images
                    // of `padded` and `dy` pair up (asserted), `group + GROUP
                    // <= filters` and `c + channels <= w.channels`.
                    unsafe {
                        x86::grad(
                            w,
                            filters,
                            padded,
                            dy,
                            d_kernel,
                            (ky, kx),
                            c,
                            channels,
                            group,
                        )
                    };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CHANNELS, PIXELS, VEC, Window2d, padded_len, padded_w};
    use std::arch::x86_64::*;

    /// Runs `$f::<N>(args)` for `$n` in 1..=12, so that each count gets a
    /// fully unrolled loop with its sums in registers.
    macro_rules! unrolled {
        ($n:expr, $f:ident($($arg:expr),*)) => {
            match $n {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                4 => $f::<4>($($arg),*),
                5 => $f::<5>($($arg),*),
                6 => $f::<6>($($arg),*),
                7 => $f::<7>($($arg),*),
                8 => $f::<8>($($arg),*),
                9 => $f::<9>($($arg),*),
                10 => $f::<10>($($arg),*),
                11 => $f::<11>($($arg),*),
                _ => $f::<12>($($arg),*),
            }
        };
    }

    /// The mask of the first `filters` (at most 8) lanes.
    #[target_feature(enable = "avx2,fma")]
    fn lanes(filters: usize) -> __m256i {
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(filters as i32), index)
    }

    /// Narrow forward: output pixels `ox..ox + pixels` of row `oy`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn narrow_pixels(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        kernel: &[f32],
        bias: &[f32],
        row: &mut [f32],
        oy: usize,
        ox: usize,
        pixels: usize,
    ) {
        unsafe {
            // One input channel (a grey image) gets its own copy, whose
            // input offsets are constants.
            if w.channels == 1 && pixels == 8 {
                narrow_sums::<8, 1>(w, filters, padded, kernel, bias, row, oy, ox)
            } else {
                unrolled!(
                    pixels,
                    narrow_sums_any(w, filters, padded, kernel, bias, row, oy, ox)
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn narrow_sums_any<const P: usize>(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        kernel: &[f32],
        bias: &[f32],
        row: &mut [f32],
        oy: usize,
        ox: usize,
    ) {
        unsafe { narrow_sums::<P, 0>(w, filters, padded, kernel, bias, row, oy, ox) }
    }

    /// `C` is the channel count when it is known at compile time, else 0.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn narrow_sums<const P: usize, const C: usize>(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        kernel: &[f32],
        bias: &[f32],
        row: &mut [f32],
        oy: usize,
        ox: usize,
    ) {
        unsafe {
            let mask = lanes(filters);
            let mut acc = [_mm256_maskload_ps(bias.as_ptr(), mask); P];
            let c = if C == 0 { w.channels } else { C };
            let pw = padded_w(w);
            for ky in 0..w.k_h {
                let input_row = padded.as_ptr().add(((oy + ky) * pw + ox) * c);
                let taps = kernel.as_ptr().add(ky * w.k_w * c * filters);
                for kx in 0..w.k_w {
                    for ch in 0..c {
                        let tap = _mm256_maskload_ps(taps.add((kx * c + ch) * filters), mask);
                        for (p, acc) in acc.iter_mut().enumerate() {
                            let x = _mm256_broadcast_ss(&*input_row.add((p + kx) * c + ch));
                            *acc = _mm256_fmadd_ps(x, tap, *acc);
                        }
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                _mm256_maskstore_ps(row.as_mut_ptr().add((ox + p) * filters), mask, *acc);
            }
        }
    }

    /// Narrow kernel gradient: taps `first..first + taps` of kernel row
    /// `ky` (tap `kx · channels + c`), summed over every output pixel of the chunk.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn narrow_grad(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        dy: &[f32],
        d_kernel: &mut [f32],
        ky: usize,
        first: usize,
        taps: usize,
    ) {
        unsafe {
            unrolled!(
                taps,
                narrow_grad_n(w, filters, padded, dy, d_kernel, ky, first)
            )
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn narrow_grad_n<const T: usize>(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        dy: &[f32],
        d_kernel: &mut [f32],
        ky: usize,
        first: usize,
    ) {
        unsafe {
            let mask = lanes(filters);
            let mut acc = [_mm256_setzero_ps(); T];
            let (c, pw) = (w.channels, padded_w(w));
            let images = padded
                .chunks_exact(padded_len(w))
                .zip(dy.chunks_exact(w.out_pixels() * filters));
            for (image, dy) in images {
                for oy in 0..w.out_h {
                    let x_row = image.as_ptr().add((oy + ky) * pw * c + first);
                    let dy_row = dy.as_ptr().add(oy * w.out_w * filters);
                    for ox in 0..w.out_w {
                        let g = _mm256_maskload_ps(dy_row.add(ox * filters), mask);
                        let x = x_row.add(ox * c);
                        for (t, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*x.add(t)), g, *acc);
                        }
                    }
                }
            }
            let out = d_kernel
                .as_mut_ptr()
                .add((ky * w.k_w * c + first) * filters);
            for (t, acc) in acc.iter().enumerate() {
                _mm256_maskstore_ps(out.add(t * filters), mask, *acc);
            }
        }
    }

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

    /// `d_kernel` at tap `(ky, kx)`, channels `c..c + channels`, filters
    /// `group..group + 16`, summed over every output pixel of the chunk.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn grad(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        dy: &[f32],
        d_kernel: &mut [f32],
        tap: (usize, usize),
        c: usize,
        channels: usize,
        group: usize,
    ) {
        unsafe {
            match channels {
                CHANNELS => grad_n::<CHANNELS>(w, filters, padded, dy, d_kernel, tap, c, group),
                5 => grad_n::<5>(w, filters, padded, dy, d_kernel, tap, c, group),
                4 => grad_n::<4>(w, filters, padded, dy, d_kernel, tap, c, group),
                3 => grad_n::<3>(w, filters, padded, dy, d_kernel, tap, c, group),
                2 => grad_n::<2>(w, filters, padded, dy, d_kernel, tap, c, group),
                _ => grad_n::<1>(w, filters, padded, dy, d_kernel, tap, c, group),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_n<const N: usize>(
        w: &Window2d,
        filters: usize,
        padded: &[f32],
        dy: &[f32],
        d_kernel: &mut [f32],
        (ky, kx): (usize, usize),
        c: usize,
        group: usize,
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; N];
            let (channels, pw) = (w.channels, padded_w(w));
            let images = padded
                .chunks_exact(padded_len(w))
                .zip(dy.chunks_exact(w.out_pixels() * filters));
            for (image, dy) in images {
                for oy in 0..w.out_h {
                    let x_row = image.as_ptr().add(((oy + ky) * pw + kx) * channels + c);
                    let dy_row = dy.as_ptr().add(oy * w.out_w * filters + group);
                    for ox in 0..w.out_w {
                        let g = dy_row.add(ox * filters);
                        let (g0, g1) = (_mm256_loadu_ps(g), _mm256_loadu_ps(g.add(VEC)));
                        let x = x_row.add(ox * channels);
                        for (ch, acc) in acc.iter_mut().enumerate() {
                            let x = _mm256_broadcast_ss(&*x.add(ch));
                            acc[0] = _mm256_fmadd_ps(x, g0, acc[0]);
                            acc[1] = _mm256_fmadd_ps(x, g1, acc[1]);
                        }
                    }
                }
            }
            for (ch, acc) in acc.iter().enumerate() {
                let out = d_kernel
                    .as_mut_ptr()
                    .add(((ky * w.k_w + kx) * channels + c + ch) * filters + group);
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
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn narrow_pixels(
        _: &Window2d,
        _: usize,
        _: &[f32],
        _: &[f32],
        _: &[f32],
        _: &mut [f32],
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("filter_conv::applies is false off x86-64")
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn narrow_grad(
        _: &Window2d,
        _: usize,
        _: &[f32],
        _: &[f32],
        _: &mut [f32],
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("filter_conv::applies is false off x86-64")
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn grad(
        _: &Window2d,
        _: usize,
        _: &[f32],
        _: &[f32],
        _: &mut [f32],
        _: (usize, usize),
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("filter_conv::applies is false off x86-64")
    }
}
