//! Direct convolution for stride 1 and few input channels (the first layer
//! of an image model), where im2col would copy the image 25 times over and
//! the matrix product would be too thin (6 filters) to run fast.
//!
//! One output row of an NHWC image is a contiguous run of `out_w x filters`
//! values. For one kernel tap `(ky, kx, c)` its contribution to that row is
//! `x[iy, ox + kx, c] · W[ky, kx, c, f]` for every `(ox, f)`: an element-wise
//! product of two runs of the same length, once the input row is "spread"
//! (each value repeated `filters` times) and the tap's weights tiled `out_w`
//! times. Each output row is then `k_h · k_w · C` multiply-adds over long
//! vectors, done in blocks of [`LANES`] values that stay in SIMD registers.
//!
//! The spread image is computed once per image by [`spread`] and shared by
//! the forward and backward passes. Buffers are padded by `LANES` values so
//! that every block can be loaded whole, even at the end of a row.

use super::Window2d;

/// Values per block: four AVX registers, two AVX-512 ones.
pub const LANES: usize = 32;

/// Whether [`forward`] and [`kernel_grad`] handle this geometry (adjacent
/// taps only: they slide the kernel over contiguous runs).
pub fn applies(w: &Window2d) -> bool {
    w.stride_h == 1 && w.stride_w == 1 && w.channels <= 4 && !w.is_dilated()
}

/// Length of one spread input row of one channel.
fn spread_row_len(w: &Window2d, filters: usize) -> usize {
    (w.out_w + w.k_w - 1) * filters
}

/// Values of one output row, rounded up to whole blocks.
fn padded_run(w: &Window2d, filters: usize) -> usize {
    (w.out_w * filters).div_ceil(LANES) * LANES
}

/// Values of one spread image, padding included.
pub fn spread_len(w: &Window2d, filters: usize) -> usize {
    w.in_h * w.channels * spread_row_len(w, filters) + LANES
}

/// Values of the tiled kernel built by [`tile_kernel`], and of the per-tap
/// accumulators used by [`kernel_grad`].
pub fn tiled_len(w: &Window2d, filters: usize) -> usize {
    w.patch_len() * padded_run(w, filters)
}

/// Values of the tiled kernel and bias built by [`tile_kernel`].
pub fn tiled_kernel_len(w: &Window2d, filters: usize) -> usize {
    tiled_len(w, filters) + padded_run(w, filters)
}

/// Repeats each tap's `filters` weights (and then the biases) `out_w`
/// times, so that they line up with a whole output row (zeros in the
/// padding). `tiled` holds [`tiled_kernel_len`] values.
pub fn tile_kernel(w: &Window2d, filters: usize, kernel: &[f32], bias: &[f32], tiled: &mut [f32]) {
    let padded = padded_run(w, filters);
    let (kernel_rows, bias_row) = tiled.split_at_mut(tiled.len() - padded);
    tile(w, filters, kernel, kernel_rows);
    tile(w, filters, bias, bias_row);
}

fn tile(w: &Window2d, filters: usize, kernel: &[f32], tiled: &mut [f32]) {
    let (run, padded) = (w.out_w * filters, padded_run(w, filters));
    for (weights, row) in kernel
        .chunks_exact(filters)
        .zip(tiled.chunks_exact_mut(padded))
    {
        for out in row[..run].chunks_exact_mut(filters) {
            out.copy_from_slice(weights);
        }
        row[run..].fill(0.0);
    }
}

/// Spreads a chunk of images: `spread[(iy · C + c) · R + (ix + pad_left) · F + f]
/// = x[iy, ix, c]` for every filter `f`, zeros in the horizontal padding.
pub fn spread(w: &Window2d, filters: usize, x: &[f32], spread: &mut [f32]) {
    let (c, r) = (w.channels, spread_row_len(w, filters));
    for (image, out) in x
        .chunks_exact(w.in_len())
        .zip(spread.chunks_exact_mut(spread_len(w, filters)))
    {
        out.fill(0.0);
        for iy in 0..w.in_h {
            let pixels = &image[iy * w.in_w * c..(iy + 1) * w.in_w * c];
            for ch in 0..c {
                let row = &mut out[(iy * c + ch) * r + w.pad_left * filters..][..w.in_w * filters];
                for (spread, pixel) in row.chunks_exact_mut(filters).zip(pixels.chunks_exact(c)) {
                    spread.iter_mut().for_each(|v| *v = pixel[ch]);
                }
            }
        }
    }
}

/// `LANES` values of `data` from `start`, as a fixed-size array the
/// compiler can keep in registers.
#[inline(always)]
fn block(data: &[f32], start: usize) -> &[f32; LANES] {
    data[start..start + LANES].try_into().expect("LANES values")
}

/// Where the last block of a row of `run` values starts.
fn last_block(run: usize) -> usize {
    (run - 1) / LANES * LANES
}

/// For one output row: the offsets, in the spread image and in the tiled
/// kernel (or accumulators), of every tap whose input row lies inside the
/// image.
fn row_taps(w: &Window2d, filters: usize, oy: usize, taps: &mut Vec<(usize, usize)>) {
    let (c, r, padded) = (
        w.channels,
        spread_row_len(w, filters),
        padded_run(w, filters),
    );
    taps.clear();
    for ky in 0..w.k_h {
        let iy = (oy + ky) as isize - w.pad_top as isize;
        if iy < 0 || iy >= w.in_h as isize {
            continue;
        }
        for ch in 0..c {
            for kx in 0..w.k_w {
                let tap = (ky * w.k_w + kx) * c + ch;
                taps.push(((iy as usize * c + ch) * r + kx * filters, tap * padded));
            }
        }
    }
}

/// The convolution of a chunk of spread images: `y = x ⋆ kernel + bias`,
/// with `tiled` from [`tile_kernel`].
pub fn forward(w: &Window2d, filters: usize, spread: &[f32], tiled: &[f32], y: &mut [f32]) {
    let bias_row = tiled.len() - padded_run(w, filters);
    let run = w.out_w * filters;
    let mut taps = Vec::with_capacity(w.patch_len());
    let images = spread.chunks_exact(spread_len(w, filters));
    for (image, out) in images.zip(y.chunks_exact_mut(w.out_pixels() * filters)) {
        for (oy, out_row) in out.chunks_exact_mut(run).enumerate() {
            row_taps(w, filters, oy, &mut taps);
            simd::check(&taps, last_block(run), image, tiled);
            for start in (0..run).step_by(LANES) {
                let mut acc = *block(tiled, bias_row + start);
                // SAFETY: `check` passed for this row's last block.
                unsafe { simd::multiply_add_taps(&mut acc, image, tiled, &taps, start) };
                let width = LANES.min(run - start);
                out_row[start..start + width].copy_from_slice(&acc[..width]);
            }
        }
    }
}

/// The kernel gradient of a chunk, `d_kernel[tap, f] = Σ x[.., tap] · dy[.., f]`,
/// written (not added) into `d_kernel`. `accumulators` holds [`tiled_len`]
/// values.
pub fn kernel_grad(
    w: &Window2d,
    filters: usize,
    spread: &[f32],
    dy: &[f32],
    d_kernel: &mut [f32],
    accumulators: &mut [f32],
) {
    let (run, padded) = (w.out_w * filters, padded_run(w, filters));
    let mut taps = Vec::with_capacity(w.patch_len());
    accumulators.fill(0.0);
    let images = spread.chunks_exact(spread_len(w, filters));
    for (image, dy) in images.zip(dy.chunks_exact(w.out_pixels() * filters)) {
        for (oy, dy_row) in dy.chunks_exact(run).enumerate() {
            row_taps(w, filters, oy, &mut taps);
            simd::check(&taps, last_block(run), image, accumulators);
            for start in (0..run).step_by(LANES) {
                // Past the end of the row the gradient block is zero, so the
                // padding of the accumulators only ever receives zeros.
                let mut g = [0.0f32; LANES];
                let width = LANES.min(run - start);
                g[..width].copy_from_slice(&dy_row[start..start + width]);
                // SAFETY: `check` passed for this row's last block.
                unsafe { simd::accumulate_taps(accumulators, image, &g, &taps, start) };
            }
        }
    }
    // Each tap's accumulator holds one partial sum per output column: add them.
    for (d, acc) in d_kernel
        .chunks_exact_mut(filters)
        .zip(accumulators.chunks_exact(padded))
    {
        d.fill(0.0);
        for column in acc[..run].chunks_exact(filters) {
            d.iter_mut().zip(column).for_each(|(d, a)| *d += a);
        }
    }
}

/// The two inner loops, with AVX2 + FMA where the CPU has them (checked at
/// run time) and portable code elsewhere. Both compute the same sums in the
/// same order, with one rounding per multiply-add (`mul_add`).
mod simd {
    use super::{LANES, block};

    /// Panics unless every tap's blocks, up to the one at `last_start`, lie
    /// inside both slices: what makes the unchecked loads of the AVX2 path
    /// safe. Called once per output row, for all its blocks.
    pub fn check(taps: &[(usize, usize)], last_start: usize, first: &[f32], second: &[f32]) {
        let end = last_start + LANES;
        let ok = taps
            .iter()
            .all(|&(a, b)| a + end <= first.len() && b + end <= second.len());
        assert!(ok, "a tap reaches past its buffer");
    }

    /// `acc += Σ_taps input[tap] · weights[tap]`, element-wise over a block.
    ///
    /// # Safety
    /// The taps must have passed [`check`] for a `last_start` of at least
    /// `start`, with `input` and `weights` as its slices.
    pub unsafe fn multiply_add_taps(
        acc: &mut [f32; LANES],
        input: &[f32],
        weights: &[f32],
        taps: &[(usize, usize)],
        start: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::super::has_avx2_fma() {
            // SAFETY: the CPU has the features; the caller's `check` bounds every load.
            unsafe { x86::multiply_add_taps(acc, input, weights, taps, start) };
            return;
        }
        for &(i, w) in taps {
            let (i, w) = (block(input, i + start), block(weights, w + start));
            for l in 0..LANES {
                acc[l] = i[l].mul_add(w[l], acc[l]);
            }
        }
    }

    /// `acc[tap] += input[tap] · g` for every tap, element-wise over a block.
    ///
    /// # Safety
    /// The taps must have passed [`check`] for a `last_start` of at least
    /// `start`, with `input` and `acc` as its slices.
    pub unsafe fn accumulate_taps(
        acc: &mut [f32],
        input: &[f32],
        g: &[f32; LANES],
        taps: &[(usize, usize)],
        start: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::super::has_avx2_fma() {
            // SAFETY: the CPU has the features; the caller's `check` bounds every access.
            unsafe { x86::accumulate_taps(acc, input, g, taps, start) };
            return;
        }
        for &(i, a) in taps {
            let i = block(input, i + start);
            let a = &mut acc[a + start..a + start + LANES];
            for l in 0..LANES {
                a[l] = i[l].mul_add(g[l], a[l]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::LANES;
        use std::arch::x86_64::*;

        const REGS: usize = LANES / 8;

        /// [`super::multiply_add_taps`] with AVX2 and FMA.
        ///
        /// # Safety
        /// The CPU supports AVX2 and FMA, and for every tap `(i, w)`,
        /// `i + start + LANES <= input.len()` and `w + start + LANES <=
        /// weights.len()` (as [`super::check`] asserts): the loads are
        /// unchecked.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn multiply_add_taps(
            acc: &mut [f32; LANES],
            input: &[f32],
            weights: &[f32],
            taps: &[(usize, usize)],
            start: usize,
        ) {
            unsafe {
                let mut sums: [__m256; REGS] =
                    std::array::from_fn(|r| _mm256_loadu_ps(acc.as_ptr().add(8 * r)));
                for &(i, w) in taps {
                    let (i, w) = (
                        input.as_ptr().add(i + start),
                        weights.as_ptr().add(w + start),
                    );
                    for (r, sum) in sums.iter_mut().enumerate() {
                        *sum = _mm256_fmadd_ps(
                            _mm256_loadu_ps(i.add(8 * r)),
                            _mm256_loadu_ps(w.add(8 * r)),
                            *sum,
                        );
                    }
                }
                for (r, sum) in sums.iter().enumerate() {
                    _mm256_storeu_ps(acc.as_mut_ptr().add(8 * r), *sum);
                }
            }
        }

        /// [`super::accumulate_taps`] with AVX2 and FMA.
        ///
        /// # Safety
        /// The CPU supports AVX2 and FMA, and for every tap `(i, a)`,
        /// `i + start + LANES <= input.len()` and `a + start + LANES <=
        /// acc.len()` (as [`super::check`] asserts): the loads and stores
        /// are unchecked.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn accumulate_taps(
            acc: &mut [f32],
            input: &[f32],
            g: &[f32; LANES],
            taps: &[(usize, usize)],
            start: usize,
        ) {
            unsafe {
                let g: [__m256; REGS] =
                    std::array::from_fn(|r| _mm256_loadu_ps(g.as_ptr().add(8 * r)));
                for &(i, a) in taps {
                    let (i, a) = (
                        input.as_ptr().add(i + start),
                        acc.as_mut_ptr().add(a + start),
                    );
                    for (r, g) in g.iter().enumerate() {
                        let sum = _mm256_fmadd_ps(
                            _mm256_loadu_ps(i.add(8 * r)),
                            *g,
                            _mm256_loadu_ps(a.add(8 * r)),
                        );
                        _mm256_storeu_ps(a.add(8 * r), sum);
                    }
                }
            }
        }
    }
}
