//! The affine map at the heart of Dense and Conv2D, `y = x · W + b` over a
//! chunk of rows, and its gradients. `x` is `rows x inputs`, the kernel
//! `inputs x units`, `y` and its gradient `dy` are `rows x units`.

use rayon::prelude::*;

use super::copy_short;
use super::gemm::{Mat, Packed, matmul, matmul_packed_par, matmul_par};

/// `y = x · kernel + bias`.
pub fn forward(x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32], inputs: usize) {
    let units = kernel.len() / inputs;
    forward_with(x, bias, y, (inputs, units), |x, y, beta| {
        matmul(x, Mat::new(kernel, inputs, units), y, beta)
    });
}

/// [`forward`] on the threads of the current rayon pool (the same
/// result, bit for bit).
pub fn forward_par(x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32], inputs: usize) {
    let units = kernel.len() / inputs;
    forward_with(x, bias, y, (inputs, units), |x, y, beta| {
        matmul_par(x, Mat::new(kernel, inputs, units), y, beta)
    });
}

/// [`forward_par`] with the kernel packed beforehand
/// ([`PackedMats`](super::gemm::PackedMats)), for a few rows against a
/// kernel kept between batches (the same result, bit for bit).
pub fn forward_packed_par(x: &[f32], kernel: Packed, bias: Option<&[f32]>, y: &mut [f32]) {
    let (inputs, units) = kernel.shape();
    forward_with(x, bias, y, (inputs, units), |x, y, beta| {
        matmul_packed_par(x, kernel, y, beta)
    });
}

/// `y = bias` (or nothing), then `product(x, y, beta)` adds `x · kernel`.
fn forward_with(
    x: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (inputs, units): (usize, usize),
    product: impl FnOnce(Mat, &mut [f32], f32),
) {
    let rows = x.len() / inputs;
    let beta = match bias {
        Some(bias) => {
            y.chunks_exact_mut(units)
                .for_each(|row| copy_short(row, bias));
            1.0
        }
        None => 0.0,
    };
    product(Mat::new(x, rows, inputs), y, beta);
}

/// The parameter gradients of one chunk, written (not added):
/// `d_kernel = xᵀ · dy` and `d_bias = Σ_rows dy`.
pub fn param_grads(
    x: &[f32],
    dy: &[f32],
    d_kernel: &mut [f32],
    d_bias: Option<&mut [f32]>,
    inputs: usize,
) {
    let units = d_kernel.len() / inputs;
    let rows = x.len() / inputs;
    matmul(
        Mat::new(x, rows, inputs).t(),
        Mat::new(dy, rows, units),
        d_kernel,
        0.0,
    );
    if let Some(d_bias) = d_bias {
        column_sums(dy, d_bias);
    }
}

/// `sums = Σ_rows rows`, for rows as long as `sums`. Narrow rows (a conv
/// layer's 6 channels) are added several at a time, a block of `lcm(width,
/// 8)` values, so that the adds fill whole SIMD vectors.
pub fn column_sums(rows: &[f32], sums: &mut [f32]) {
    const MAX_BLOCK: usize = 256;
    let width = sums.len();
    let block = width / gcd(width, 8) * 8;
    sums.fill(0.0);
    let add = |sums: &mut [f32], row: &[f32]| sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    if block > MAX_BLOCK {
        rows.chunks_exact(width).for_each(|row| add(sums, row));
        return;
    }
    let mut acc = [0.0f32; MAX_BLOCK];
    let acc = &mut acc[..block];
    let mut blocks = rows.chunks_exact(block);
    (&mut blocks).for_each(|b| add(acc, b));
    let partials = acc.chunks_exact(width);
    partials
        .chain(blocks.remainder().chunks_exact(width))
        .for_each(|row| add(sums, row));
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The input gradient of one chunk: `dx = dy · kernelᵀ`.
pub fn input_grad(dy: &[f32], kernel: &[f32], dx: &mut [f32], inputs: usize) {
    input_grad_with(matmul, dy, kernel, dx, inputs);
}

/// [`input_grad`] on the threads of the current rayon pool (the same
/// result, bit for bit).
pub fn input_grad_par(dy: &[f32], kernel: &[f32], dx: &mut [f32], inputs: usize) {
    input_grad_with(matmul_par, dy, kernel, dx, inputs);
}

fn input_grad_with(
    matmul: fn(Mat, Mat, &mut [f32], f32),
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    inputs: usize,
) {
    let units = kernel.len() / inputs;
    let rows = dy.len() / units;
    matmul(
        Mat::new(dy, rows, units),
        Mat::new(kernel, inputs, units).t(),
        dx,
        0.0,
    );
}

/// Values of the total per parallel task of [`sum_partials`].
const SUM_BLOCK: usize = 1 << 14;

/// Adds up per-chunk partial gradients, in chunk order (so that the sum, and
/// the whole training run, do not depend on the number of threads). Large
/// totals (AlexNet's kernels: 16 shares of up to 1.3 million values) are
/// summed a block of values per task, each block in chunk order.
pub fn sum_partials(partials: &[f32], total: &mut [f32]) {
    let len = total.len();
    if len == 0 {
        return;
    }
    total
        .par_chunks_mut(SUM_BLOCK)
        .enumerate()
        .for_each(|(block, total)| {
            let start = block * SUM_BLOCK;
            total.fill(0.0);
            for part in partials.chunks_exact(len) {
                let part = &part[start..start + total.len()];
                total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::same_bits;

    /// Blocks of the total summed in parallel give the chunk-order sums.
    #[test]
    fn partial_sums_add_in_chunk_order_bit_for_bit() {
        let len = 3 * SUM_BLOCK + 17;
        let partials: Vec<f32> = (0..5 * len).map(|i| ((i as f32) * 0.37).sin()).collect();
        let mut want = vec![0.0f32; len];
        for part in partials.chunks_exact(len) {
            want.iter_mut().zip(part).for_each(|(t, p)| *t += p);
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut total = vec![f32::NAN; len];
            pool.install(|| sum_partials(&partials, &mut total));
            assert!(same_bits(&total, &want));
        }
    }
}
