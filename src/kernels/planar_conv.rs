//! The first layer of a grey-image model (one input channel, stride 1), on
//! CPUs with AVX2 and FMA: the fastest way found to run LeNet's first
//! convolution, whose 6 filters are too few for a matrix product.
//!
//! Eight neighbouring output pixels of one filter form a SIMD vector. For
//! each kernel tap, the eight input pixels under those outputs are one
//! unaligned load from the (zero-padded) image row, and the tap's weight is
//! broadcast: `acc[f] += x[iy, ox+kx .. ox+kx+8] · W[ky, kx, f]`, for up to
//! [`GROUP`] filters at once, all accumulators in registers. The input is
//! read straight from the image: nothing is copied per tap (no im2col), and
//! each loaded vector serves every filter of the group.
//!
//! The kernel gradient is the same loop turned around: for each tap,
//! `acc[f] += x[iy, ox+kx ..] · dy[f][oy, ox ..]`, summed over the whole
//! image in registers, with `dy` first laid out filter by filter.

use super::{Window2d, has_avx2_fma};

/// Filters per register group.
pub const GROUP: usize = 8;
const VEC: usize = 8;

/// Whether this path handles the geometry on this CPU.
pub fn applies(w: &Window2d) -> bool {
    w.channels == 1 && w.stride_h == 1 && w.stride_w == 1 && has_avx2_fma()
}

/// Output vectors per row.
fn vectors(w: &Window2d) -> usize {
    w.out_w.div_ceil(VEC)
}

/// Width of a padded image row: every load of every tap stays inside it.
fn padded_width(w: &Window2d) -> usize {
    vectors(w) * VEC + w.k_w - 1
}

/// Values of one padded image.
pub fn padded_len(w: &Window2d) -> usize {
    w.in_h * padded_width(w)
}

/// Values of the per-image scratch used by [`kernel_grad`].
pub fn scratch_len(w: &Window2d, filters: usize) -> usize {
    filters * w.out_h * vectors(w) * VEC
}

/// Copies a chunk of images into zero-padded rows: `padded[iy][ix + pad_left] = x[iy][ix]`.
pub fn pad(w: &Window2d, x: &[f32], padded: &mut [f32]) {
    let pw = padded_width(w);
    for (image, out) in x
        .chunks_exact(w.in_len())
        .zip(padded.chunks_exact_mut(padded_len(w)))
    {
        out.fill(0.0);
        for (row, out_row) in image.chunks_exact(w.in_w).zip(out.chunks_exact_mut(pw)) {
            out_row[w.pad_left..w.pad_left + w.in_w].copy_from_slice(row);
        }
    }
}

/// Input rows that output row `oy` reads, as (kernel row, image row) pairs.
fn rows_for(w: &Window2d, oy: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..w.k_h).filter_map(move |ky| {
        let iy = (oy + ky) as isize - w.pad_top as isize;
        (iy >= 0 && iy < w.in_h as isize).then_some((ky, iy as usize))
    })
}

/// `y = x ⋆ kernel + bias` for a chunk of padded images (NHWC output).
pub fn forward(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    kernel: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    assert!(has_avx2_fma(), "planar_conv needs AVX2 and FMA");
    assert_eq!(kernel.len(), w.k_h * w.k_w * filters);
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(y.chunks_exact_mut(w.out_pixels() * filters));
    for (image, out) in images {
        for oy in 0..w.out_h {
            for v in 0..vectors(w) {
                for group in (0..filters).step_by(GROUP) {
                    let size = GROUP.min(filters - group);
                    let mut sums = [[0.0f32; VEC]; GROUP];
                    // SAFETY: AVX2 and FMA are present (asserted above); every
                    // load lies inside `image` (rows are padded to
                    // `padded_width`) and `kernel` (length asserted above).
                    unsafe {
                        x86::forward_vector(
                            w, image, kernel, filters, group, size, oy, v, &mut sums,
                        )
                    };
                    let pixels = VEC.min(w.out_w - v * VEC);
                    let first = (oy * w.out_w + v * VEC) * filters + group;
                    for (p, out) in out[first..].chunks_mut(filters).take(pixels).enumerate() {
                        for (g, out) in out[..size].iter_mut().enumerate() {
                            *out = sums[g][p] + bias[group + g];
                        }
                    }
                }
            }
        }
    }
}

/// The kernel gradient of a chunk, `d_kernel[tap, f] = Σ x[.., tap] · dy[.., f]`,
/// written (not added). `scratch` holds [`scratch_len`] values.
pub fn kernel_grad(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    dy: &[f32],
    d_kernel: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(has_avx2_fma(), "planar_conv needs AVX2 and FMA");
    assert_eq!(d_kernel.len(), w.k_h * w.k_w * filters);
    assert_eq!(scratch.len(), scratch_len(w, filters));
    let row = vectors(w) * VEC;
    d_kernel.fill(0.0);
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    for (image, dy) in images {
        // dy filter by filter, rows padded with zeros to whole vectors.
        scratch.fill(0.0);
        for (oy, dy_row) in dy.chunks_exact(w.out_w * filters).enumerate() {
            for (ox, g) in dy_row.chunks_exact(filters).enumerate() {
                for (f, &value) in g.iter().enumerate() {
                    scratch[(f * w.out_h + oy) * row + ox] = value;
                }
            }
        }
        for ky in 0..w.k_h {
            for kx in 0..w.k_w {
                for group in (0..filters).step_by(GROUP) {
                    let size = GROUP.min(filters - group);
                    // SAFETY: as in `forward`; `scratch` has `scratch_len` values.
                    let sums = unsafe { x86::grad_tap(w, image, scratch, group, size, ky, kx) };
                    for (g, sum) in sums.iter().enumerate().take(size) {
                        d_kernel[(ky * w.k_w + kx) * filters + group + g] += sum;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{GROUP, VEC, Window2d, padded_width, rows_for, vectors};
    use std::arch::x86_64::*;

    /// The sums of output vector `v` of row `oy`, for filters
    /// `group..group + size`.
    /// Runs `$f::<N>` for the group size `$size` (1 to [`GROUP`]), so that
    /// every group size gets a fully unrolled loop with its sums in registers.
    macro_rules! by_group_size {
        ($size:expr, $f:ident($($arg:expr),*)) => {
            match $size {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                4 => $f::<4>($($arg),*),
                5 => $f::<5>($($arg),*),
                6 => $f::<6>($($arg),*),
                7 => $f::<7>($($arg),*),
                _ => $f::<8>($($arg),*),
            }
        };
    }

    /// The sums of output vector `v` of row `oy`, for filters
    /// `group..group + size`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward_vector(
        w: &Window2d,
        image: &[f32],
        kernel: &[f32],
        filters: usize,
        group: usize,
        size: usize,
        oy: usize,
        v: usize,
        out: &mut [[f32; VEC]; GROUP],
    ) {
        unsafe {
            by_group_size!(
                size,
                forward_vector_n(w, image, kernel, filters, group, oy, v, out)
            )
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_vector_n<const N: usize>(
        w: &Window2d,
        image: &[f32],
        kernel: &[f32],
        filters: usize,
        group: usize,
        oy: usize,
        v: usize,
        out: &mut [[f32; VEC]; GROUP],
    ) {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            let pw = padded_width(w);
            for (ky, iy) in rows_for(w, oy) {
                for kx in 0..w.k_w {
                    let x = _mm256_loadu_ps(image.as_ptr().add(iy * pw + v * VEC + kx));
                    let weights = kernel.as_ptr().add((ky * w.k_w + kx) * filters + group);
                    for (g, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(x, _mm256_broadcast_ss(&*weights.add(g)), *acc);
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out[g].as_mut_ptr(), *acc);
            }
        }
    }

    /// `Σ_{oy, ox} x[oy + ky, ox + kx] · dy[f][oy, ox]` for filters
    /// `group..group + size` of one image.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn grad_tap(
        w: &Window2d,
        image: &[f32],
        dy: &[f32],
        group: usize,
        size: usize,
        ky: usize,
        kx: usize,
    ) -> [f32; GROUP] {
        unsafe { by_group_size!(size, grad_tap_n(w, image, dy, group, ky, kx)) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_tap_n<const N: usize>(
        w: &Window2d,
        image: &[f32],
        dy: &[f32],
        group: usize,
        ky: usize,
        kx: usize,
    ) -> [f32; GROUP] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            let (pw, row) = (padded_width(w), vectors(w) * VEC);
            for oy in 0..w.out_h {
                let iy = (oy + ky) as isize - w.pad_top as isize;
                if iy < 0 || iy >= w.in_h as isize {
                    continue;
                }
                for v in 0..vectors(w) {
                    let x = _mm256_loadu_ps(image.as_ptr().add(iy as usize * pw + v * VEC + kx));
                    for (g, acc) in acc.iter_mut().enumerate() {
                        let g = _mm256_loadu_ps(
                            dy.as_ptr()
                                .add(((group + g) * w.out_h + oy) * row + v * VEC),
                        );
                        *acc = _mm256_fmadd_ps(x, g, *acc);
                    }
                }
            }
            let mut sums = [0.0f32; GROUP];
            for (sum, acc) in sums.iter_mut().zip(&acc) {
                let mut lanes = [0.0f32; VEC];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
                *sum = lanes.iter().sum();
            }
            sums
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! Never called: `applies` is false off x86-64.
    use super::{GROUP, VEC, Window2d};
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_vector(
        _: &Window2d,
        _: &[f32],
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &mut [[f32; VEC]; GROUP],
    ) {
        unreachable!("planar_conv::applies is false off x86-64")
    }
    pub unsafe fn grad_tap(
        _: &Window2d,
        _: &[f32],
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) -> [f32; GROUP] {
        unreachable!("planar_conv::applies is false off x86-64")
    }
}
