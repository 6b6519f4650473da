//! Winograd against the direct definition of the convolution and of its
//! gradients, computed in f64, on every code path this CPU has.

use super::*;
use crate::kernels::im2col::Padding;

/// A deterministic pseudo-random value in [-1, 1).
fn noise(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn noise_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut seed = seed;
    (0..len).map(|_| noise(&mut seed)).collect()
}

/// The code paths: transforms compiled for AVX-512, AVX2, or neither.
#[derive(Clone, Copy, Debug)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn paths() -> Vec<Isa> {
    let mut paths = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::has_avx2_fma() {
            paths.push(Isa::Avx2);
        }
        if crate::kernels::has_avx512() {
            paths.push(Isa::Avx512);
        }
    }
    paths
}

struct Case {
    w: Window2d,
    filters: usize,
    images: usize,
    scheme: Scheme,
}

fn case(h: usize, w: usize, channels: usize, filters: usize, padding: Padding) -> Case {
    case_of(3, (h, w, channels, filters), padding)
}

fn case5(h: usize, w: usize, channels: usize, filters: usize, padding: Padding) -> Case {
    case_of(5, (h, w, channels, filters), padding)
}

fn case_of(
    side: usize,
    (h, w, channels, filters): (usize, usize, usize, usize),
    padding: Padding,
) -> Case {
    let window = Window2d::new((h, w, channels), (side, side), (1, 1), padding).unwrap();
    let scheme = if side == 5 {
        Scheme::F2x2
    } else {
        Scheme::F4x4
    };
    Case {
        w: window,
        filters,
        images: 3,
        scheme,
    }
}

/// A 3x3 case by F(6x6, 3x3).
fn case6(h: usize, w: usize, channels: usize, filters: usize, padding: Padding) -> Case {
    Case {
        scheme: Scheme::F6x6,
        ..case(h, w, channels, filters, padding)
    }
}

/// A case of inputs past the reach of every output and of every tile
/// (8 outputs: two tiles of 4, reaching 10 inputs, or of 6, reaching
/// 14): their input gradient is 0.
fn past_reach(scheme: Scheme) -> Case {
    let c = case(10, 10, 16, 16, Padding::Valid);
    Case {
        w: Window2d {
            in_h: 16,
            in_w: 15,
            ..c.w
        },
        scheme,
        ..c
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(8, 8, 16, 16, Padding::Same),
        case(30, 30, 32, 32, Padding::Valid),
        case(15, 15, 32, 64, Padding::Same),
        case(13, 11, 17, 20, Padding::Valid),
        case(5, 9, 33, 35, Padding::Same),
        case(3, 3, 16, 16, Padding::Valid),
        case(6, 5, 130, 140, Padding::Same),
        case(7, 7, 256, 64, Padding::Valid),
        case5(8, 8, 16, 16, Padding::Same),
        case5(27, 27, 32, 48, Padding::Same),
        case5(13, 11, 17, 20, Padding::Valid),
        case5(5, 5, 33, 35, Padding::Valid),
        case5(6, 7, 96, 64, Padding::Same),
        past_reach(Scheme::F4x4),
        case6(8, 8, 16, 16, Padding::Same),
        case6(30, 30, 32, 32, Padding::Valid),
        case6(13, 13, 32, 64, Padding::Valid),
        case6(13, 11, 17, 20, Padding::Valid),
        case6(5, 9, 33, 35, Padding::Same),
        case6(3, 3, 16, 16, Padding::Valid),
        case6(9, 7, 130, 140, Padding::Same),
        past_reach(Scheme::F6x6),
    ]
}

/// Whether every input pixel lies under some output's window.
fn reached_by_outputs(c: &Case) -> bool {
    let w = &c.w;
    w.out_h + w.k_h > w.in_h + w.pad_top && w.out_w + w.k_w > w.in_w + w.pad_left
}

/// Kernel values of a case: side x side x channels x filters.
fn kernel_len_of(c: &Case) -> usize {
    c.w.k_h * c.w.k_w * c.w.channels * c.filters
}

/// `x[n, y, x, c]` or 0 in the padding, for output pixel `(oy, ox)`'s tap
/// `(r, s)`.
fn tap(c: &Case, n: usize, (oy, ox): (usize, usize), (r, s): (usize, usize)) -> Option<usize> {
    let y = (oy + r).checked_sub(c.w.pad_top)?;
    let xx = (ox + s).checked_sub(c.w.pad_left)?;
    (y < c.w.in_h && xx < c.w.in_w).then(|| ((n * c.w.in_h + y) * c.w.in_w + xx) * c.w.channels)
}

/// Every (input index, kernel index, output index) of the convolution.
fn products(c: &Case, mut visit: impl FnMut(usize, usize, usize)) {
    let (ch, f, side) = (c.w.channels, c.filters, c.w.k_h);
    for n in 0..c.images {
        for oy in 0..c.w.out_h {
            for ox in 0..c.w.out_w {
                let out = ((n * c.w.out_h + oy) * c.w.out_w + ox) * f;
                for r in 0..side {
                    for s in 0..side {
                        let Some(at) = tap(c, n, (oy, ox), (r, s)) else {
                            continue;
                        };
                        for ci in 0..ch {
                            for fi in 0..f {
                                visit(at + ci, ((r * side + s) * ch + ci) * f + fi, out + fi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How far a scheme's results may lie from the direct definition, as a
/// part of the sum of the absolute products behind each value. Measured
/// worst over the cases: F(4x4, 3x3) 2.8e-6 (output), F(2x2, 5x5) 1.0e-5
/// (kernel gradient), F(6x6, 3x3) 2.0e-5 (kernel gradient; 4.3e-6 input
/// gradient, 2.9e-6 output).
fn relative_tolerance(scheme: Scheme) -> f64 {
    match scheme {
        Scheme::F4x4 | Scheme::F2x2 => 2e-5,
        Scheme::F6x6 => 1e-4,
    }
}

/// |got - want| <= tolerance · scale + 1e-6 everywhere, where scale is
/// the sum of the absolute products behind each value and tolerance the
/// case's [`relative_tolerance`].
fn assert_close(what: &str, c: &Case, got: &[f32], (want, scale): (&[f64], &[f64])) {
    assert_eq!(got.len(), want.len());
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tolerance = relative_tolerance(c.scheme) * s + 1e-6;
        assert!(
            (g as f64 - w).abs() <= tolerance,
            "{what}[{i}] = {g}, direct {w} (tolerance {tolerance})"
        );
    }
}

/// (The scratch starts as NaN: a value read before it is written shows.)
fn run_forward(
    isa: Isa,
    c: &Case,
    x: &[f32],
    u: &Transformed,
    bias: &[f32],
    relu: bool,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; c.images * c.w.out_pixels() * c.filters];
    run_forward_into(isa, c, (x, u, bias, relu), Output::Plain(&mut y));
    y
}

/// The pooled output and winners of a forward pass with relu.
fn run_forward_pooled(
    isa: Isa,
    c: &Case,
    x: &[f32],
    u: &Transformed,
    bias: &[f32],
) -> (Vec<f32>, Vec<u8>) {
    let len = c.images * (c.w.out_h / 2) * (c.w.out_w / 2) * c.filters;
    let (mut y, mut winners) = (vec![f32::NAN; len], vec![u8::MAX; len]);
    let out = Output::Pooled {
        y: &mut y,
        winners: &mut winners,
    };
    run_forward_into(isa, c, (x, u, bias, true), out);
    (y, winners)
}

fn run_forward_into(
    isa: Isa,
    c: &Case,
    (x, u, bias, relu): (&[f32], &Transformed, &[f32], bool),
    out: Output,
) {
    let pooled = matches!(out, Output::Pooled { .. });
    let values_per_tile = c.w.channels + c.filters;
    let t = Tiling::new(
        &c.w,
        c.filters,
        c.images,
        c.scheme,
        (values_per_tile, pooled),
    );
    let planes = plane(t.block, c.w.channels) + plane(t.block, c.filters);
    let mut scratch = vec![f32::NAN; t.positions() * planes];
    let args = (t, x, &u.u.mats, bias, relu, out, &mut scratch[..]);
    match isa {
        Isa::Portable => for_scheme!(c.scheme, forward_portable(args)),
        // SAFETY: only listed by `paths` where the CPU has them.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { for_scheme!(c.scheme, forward_avx2(args)) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { for_scheme!(c.scheme, forward_avx512(args)) },
    }
}

/// A kernel packed for the forward pass and, transposed, for the input
/// gradient.
struct Transformed {
    u: TransformedKernel,
    u_t: TransformedKernel,
}

fn transformed(c: &Case, kernel: &[f32]) -> Transformed {
    Transformed {
        u: transform_kernel(&c.w, c.filters, kernel, false, c.scheme),
        u_t: transform_kernel(&c.w, c.filters, kernel, true, c.scheme),
    }
}

#[test]
fn forward_matches_direct_convolution() {
    for (k, c) in cases().iter().enumerate() {
        let x = noise_vec(c.images * c.w.in_len(), 1 + k as u64);
        let kernel = noise_vec(kernel_len_of(c), 100 + k as u64);
        let bias = noise_vec(c.filters, 200 + k as u64);
        let out_len = c.images * c.w.out_pixels() * c.filters;
        let (mut want, mut scale) = (vec![0.0f64; out_len], vec![0.0f64; out_len]);
        products(c, |i, g, o| {
            let product = x[i] as f64 * kernel[g] as f64;
            want[o] += product;
            scale[o] += product.abs();
        });
        for (o, value) in want.iter_mut().enumerate() {
            *value += bias[o % c.filters] as f64;
        }
        let u = transformed(c, &kernel);
        for isa in paths() {
            let y = run_forward(isa, c, &x, &u, &bias, false);
            assert_close(&format!("{isa:?} y"), c, &y, (&want, &scale));
            let y = run_forward(isa, c, &x, &u, &bias, true);
            let relu: Vec<f64> = want.iter().map(|v| v.max(0.0)).collect();
            assert_close(&format!("{isa:?} relu(y)"), c, &y, (&relu, &scale));
        }
    }
}

#[test]
fn the_public_forward_agrees_with_its_paths() {
    let c = &cases()[1];
    let x = noise_vec(c.images * c.w.in_len(), 7);
    let kernel = noise_vec(kernel_len_of(c), 8);
    let bias = noise_vec(c.filters, 9);
    let u = transformed(c, &kernel);
    let mut y = vec![0.0; c.images * c.w.out_pixels() * c.filters];
    forward(
        &c.w,
        c.filters,
        &x,
        &u.u,
        &bias,
        true,
        Output::Plain(&mut y),
        &mut Vec::new(),
    );
    let fastest = *paths().last().unwrap();
    assert_eq!(y, run_forward(fastest, c, &x, &u, &bias, true));
}

/// The kernel, bias and input gradients (the last all NaN unless
/// `with_dx`) from the output gradient `dy`.
fn run_backward(
    isa: Isa,
    c: &Case,
    (x, dy): (&[f32], OutputGrad),
    u: &Transformed,
    with_dx: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let pooled = matches!(dy, OutputGrad::Pooled { .. });
    run_backward_tiled(isa, c, (x, dy), u, (with_dx, pooled, false))
}

/// [`run_backward`], with the tiles of the pooled outputs only if
/// `pooled`, and the input gradient through relu's derivative at `x` if
/// `relu_of_input`.
fn run_backward_tiled(
    isa: Isa,
    c: &Case,
    (x, dy): (&[f32], OutputGrad),
    u: &Transformed,
    (with_dx, pooled, relu_of_input): (bool, bool, bool),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut d_kernel = vec![f32::NAN; kernel_len_of(c)];
    let mut d_bias = vec![f32::NAN; c.filters];
    let mut dx = vec![f32::NAN; x.len()];
    let values_per_tile = 2 * c.w.channels + c.filters;
    let t = Tiling::new(
        &c.w,
        c.filters,
        c.images,
        c.scheme,
        (values_per_tile, pooled),
    );
    let mut scratch = vec![f32::NAN; backward_scratch_len(&t)];
    let dx_arg = with_dx.then_some((&mut dx[..], &u.u_t.mats, relu_of_input));
    let d_params = (&mut d_kernel[..], &mut d_bias[..]);
    let args = (t, (x, dy), d_params, dx_arg, &mut scratch[..]);
    match isa {
        Isa::Portable => for_scheme!(c.scheme, backward_portable(args)),
        // SAFETY: only listed by `paths` where the CPU has them.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { for_scheme!(c.scheme, backward_avx2(args)) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { for_scheme!(c.scheme, backward_avx512(args)) },
    }
    (d_kernel, d_bias, dx)
}

#[test]
fn gradients_match_the_direct_definitions() {
    for (k, c) in cases().iter().enumerate() {
        let x = noise_vec(c.images * c.w.in_len(), 300 + k as u64);
        let dy = noise_vec(c.images * c.w.out_pixels() * c.filters, 400 + k as u64);
        let kernel = noise_vec(kernel_len_of(c), 500 + k as u64);
        let (mut d_kernel, mut d_kernel_scale) =
            (vec![0.0f64; kernel.len()], vec![0.0f64; kernel.len()]);
        let (mut dx, mut dx_scale) = (vec![0.0f64; x.len()], vec![0.0f64; x.len()]);
        let (mut d_bias, mut d_bias_scale) = (vec![0.0f64; c.filters], vec![0.0f64; c.filters]);
        for (o, &g) in dy.iter().enumerate() {
            d_bias[o % c.filters] += g as f64;
            d_bias_scale[o % c.filters] += g.abs() as f64;
        }
        products(c, |i, g, o| {
            let kernel_term = x[i] as f64 * dy[o] as f64;
            d_kernel[g] += kernel_term;
            d_kernel_scale[g] += kernel_term.abs();
            let input_term = kernel[g] as f64 * dy[o] as f64;
            dx[i] += input_term;
            dx_scale[i] += input_term.abs();
        });
        let u = transformed(c, &kernel);
        for isa in paths() {
            let dy = OutputGrad::Linear(&dy);
            let (got_kernel, got_bias, got_dx) = run_backward(isa, c, (&x, dy), &u, true);
            let kernel_want = (&d_kernel[..], &d_kernel_scale[..]);
            assert_close(&format!("{isa:?} d_kernel"), c, &got_kernel, kernel_want);
            let bias_want = (&d_bias[..], &d_bias_scale[..]);
            assert_close(&format!("{isa:?} d_bias"), c, &got_bias, bias_want);
            assert_close(&format!("{isa:?} dx"), c, &got_dx, (&dx, &dx_scale));
            let (only_kernel, only_bias, untouched) = run_backward(isa, c, (&x, dy), &u, false);
            assert_eq!(
                (only_kernel, only_bias),
                (got_kernel, got_bias),
                "the parameter gradients do not depend on dx"
            );
            assert!(
                untouched.iter().all(|v| v.is_nan()),
                "dx is left alone when not asked for"
            );
        }
    }
}

#[test]
fn every_path_gives_the_same_bits() {
    // The transforms do the same operations in the same order on every
    // path; the products are the same GEMM. So the paths agree exactly.
    let all = cases();
    for c in [&all[3], &all[10], &all[17]] {
        let x = noise_vec(c.images * c.w.in_len(), 11);
        let dy = noise_vec(c.images * c.w.out_pixels() * c.filters, 12);
        let u = transformed(c, &noise_vec(kernel_len_of(c), 13));
        let bias = noise_vec(c.filters, 14);
        let portable = (
            run_forward(Isa::Portable, c, &x, &u, &bias, false),
            run_backward(Isa::Portable, c, (&x, OutputGrad::Linear(&dy)), &u, true),
        );
        for isa in paths() {
            let other = (
                run_forward(isa, c, &x, &u, &bias, false),
                run_backward(isa, c, (&x, OutputGrad::Linear(&dy)), &u, true),
            );
            assert!(other == portable, "{isa:?} differs from the portable path");
        }
    }
}

#[test]
fn the_kernel_transform_gives_the_same_bits_on_every_path() {
    let all = cases();
    for c in [&all[4], &all[11], &all[18]] {
        let values = noise_vec(kernel_len_of(c), 15);
        let (rows, cols) = (c.w.channels, c.filters);
        let kernel = KernelRows {
            values: &values,
            rows,
            cols,
        };
        let row = |isa| {
            let mut out = vec![f32::NAN; c.scheme.positions() * cols];
            match isa {
                Isa::Portable => kernel.transform_row_on::<Portable>(c.scheme, 1, &mut out),
                // SAFETY: only listed by `paths` where the CPU has them.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { kernel.transform_row_avx2(c.scheme, 1, &mut out) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { kernel.transform_row_avx512(c.scheme, 1, &mut out) },
            }
            out
        };
        let portable = row(Isa::Portable);
        assert!(
            portable.iter().all(|v| v.is_finite()),
            "every value written"
        );
        for isa in paths() {
            assert!(
                row(isa) == portable,
                "{isa:?} differs from the portable path"
            );
        }
    }
}

#[test]
fn a_kernel_turns_into_filters_x_channels() {
    let (rows, cols) = (37, 20);
    let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
    let mut dst = vec![f32::NAN; rows * cols];
    transpose(&src, rows, cols, &mut dst);
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(dst[c * rows + r], src[r * cols + c]);
        }
    }
}

#[test]
fn applies_to_3x3_and_5x5_stride_1_layers_of_16_to_512_channels() {
    let window = |channels, stride, kernel| {
        Window2d::new((16, 16, channels), kernel, stride, Padding::Same).unwrap()
    };
    assert!(applies(&window(32, (1, 1), (3, 3)), 64));
    assert!(
        applies(&window(384, (1, 1), (3, 3)), 256),
        "AlexNet's conv5"
    );
    assert!(
        !applies(&window(3, (1, 1), (3, 3)), 32),
        "an RGB first layer"
    );
    assert!(!applies(&window(32, (2, 2), (3, 3)), 32), "strides");
    assert!(applies(&window(96, (1, 1), (5, 5)), 256), "AlexNet's conv2");
    assert!(!applies(&window(32, (1, 1), (7, 7)), 32), "7x7");
    assert!(!applies(&window(32, (1, 1), (3, 5)), 32), "3x5");
    assert!(!applies(&window(1024, (1, 1), (3, 3)), 64), "too wide");
}

#[test]
fn a_chunk_holds_a_block_of_tiles() {
    let window = |side| Window2d::new((side, side, 64), (3, 3), (1, 1), Padding::Same).unwrap();
    assert_eq!(
        images_per_block(&window(32), false),
        2,
        "64 tiles, two images at least"
    );
    assert_eq!(images_per_block(&window(13), false), 4, "16 tiles each");
    assert_eq!(images_per_block(&window(2), false), 64, "one tile each");
    let window5 = Window2d::new((27, 27, 96), (5, 5), (1, 1), Padding::Same).unwrap();
    assert_eq!(images_per_block(&window5, false), 2, "196 tiles of 2x2");
    let valid = Window2d::new((32, 32, 32), (3, 3), (1, 1), Padding::Valid).unwrap();
    assert_eq!(images_per_block(&valid, false), 3, "25 tiles of 6x6");
    let valid13 = Window2d::new((15, 15, 64), (3, 3), (1, 1), Padding::Valid).unwrap();
    assert_eq!(images_per_block(&valid13, false), 4, "16 tiles of 4x4");
    assert_eq!(
        images_per_block(&valid13, true),
        8,
        "pooled: 9 tiles of 4x4"
    );
}

#[test]
fn f6x6_runs_where_it_transforms_a_quarter_fewer_values() {
    let window = |side, padding| Window2d::new((side, side, 32), (3, 3), (1, 1), padding).unwrap();
    let valid30 = window(32, Padding::Valid);
    assert_eq!(
        Scheme::of(&valid30, false),
        Scheme::F6x6,
        "25 tiles of 64, not 64 of 36"
    );
    assert_eq!(Scheme::of(&valid30, true), Scheme::F6x6);
    let same32 = window(32, Padding::Same);
    assert_eq!(
        Scheme::of(&same32, false),
        Scheme::F4x4,
        "36 tiles of 64, 64 of 36"
    );
    let valid13 = window(15, Padding::Valid);
    assert_eq!(
        Scheme::of(&valid13, false),
        Scheme::F4x4,
        "9 of 64, 16 of 36"
    );
    assert_eq!(
        Scheme::of(&valid13, true),
        Scheme::F4x4,
        "pooled 12x12: 4 of 64, 9 of 36"
    );
    let five = Window2d::new((27, 27, 96), (5, 5), (1, 1), Padding::Same).unwrap();
    assert_eq!(Scheme::of(&five, true), Scheme::F2x2);
}

/// `dy` through relu's derivative at its output `y`, as the separate
/// pass computes it.
fn relu_derivative(dy: &[f32], y: &[f32]) -> Vec<f32> {
    let mut grad = dy.to_vec();
    crate::kernels::activation::relu_backward(y, &mut grad);
    grad
}

#[test]
fn relu_at_the_input_gives_the_bits_of_a_separate_pass() {
    // The input gradient through the derivative of a relu before the
    // layer, applied to each tile's share as it is written.
    for (k, c) in cases().iter().enumerate() {
        // Some inputs at or below 0: their gradient is 0.
        let x: Vec<f32> = noise_vec(c.images * c.w.in_len(), 51 + k as u64)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let dy = noise_vec(c.images * c.w.out_pixels() * c.filters, 52);
        let u = transformed(c, &noise_vec(kernel_len_of(c), 53));
        for isa in paths() {
            let plain = run_backward(isa, c, (&x, OutputGrad::Linear(&dy)), &u, true);
            let grad = (&x[..], OutputGrad::Linear(&dy));
            let (d_kernel, d_bias, dx) = run_backward_tiled(isa, c, grad, &u, (true, false, true));
            assert!(
                (&d_kernel, &d_bias) == (&plain.0, &plain.1),
                "{isa:?}, case {k}"
            );
            assert!(dx == relu_derivative(&plain.2, &x), "{isa:?}, case {k}");
        }
    }
}

#[test]
fn relu_applied_as_read_gives_the_bits_of_a_separate_pass() {
    for (k, c) in cases().iter().enumerate() {
        let x = noise_vec(c.images * c.w.in_len(), 21 + k as u64);
        let len = c.images * c.w.out_pixels() * c.filters;
        let (dy, y) = (noise_vec(len, 22), noise_vec(len, 23));
        let u = transformed(c, &noise_vec(kernel_len_of(c), 24));
        for isa in paths() {
            let fused = run_backward(isa, c, (&x, OutputGrad::Relu { dy: &dy, y: &y }), &u, true);
            let linear = relu_derivative(&dy, &y);
            let separate = run_backward(isa, c, (&x, OutputGrad::Linear(&linear)), &u, true);
            assert!(fused == separate, "{isa:?}, case {k}");
        }
    }
}

#[test]
fn pooled_gradients_give_the_bits_of_unpooling_first() {
    for (k, ref c) in pooled_cases() {
        let pool = pool_window(c);
        let x = noise_vec(c.images * c.w.in_len(), 31 + k as u64);
        let conv_y = noise_vec(c.images * c.w.out_pixels() * c.filters, 32);
        let (pooled, winners) = max_pooled(c, &conv_y);
        let dy = noise_vec(pooled.len(), 33);
        let mut unpooled = vec![f32::NAN; conv_y.len()];
        crate::kernels::pool::max_pool_backward(&pool, &winners, &dy, Some(&pooled), &mut unpooled);
        let u = transformed(c, &noise_vec(kernel_len_of(c), 34));
        for isa in paths() {
            let grad = OutputGrad::Pooled {
                dy: &dy,
                y: &pooled,
                winners: &winners,
            };
            let fused = run_backward(isa, c, (&x, grad), &u, true);
            // Over the same tiles (those the pooling reads), the same bits.
            let linear = OutputGrad::Linear(&unpooled);
            let separate = run_backward_tiled(isa, c, (&x, linear), &u, (true, true, false));
            assert!(fused == separate, "{isa:?}, case {k}");
            // Over all the tiles, only the sums' rounding differs.
            let all_tiles = run_backward(isa, c, (&x, linear), &u, true);
            for (got, want) in [
                (&fused.0, &all_tiles.0),
                (&fused.1, &all_tiles.1),
                (&fused.2, &all_tiles.2),
            ] {
                let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * largest,
                        "{isa:?}, case {k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn tiles_cover_the_inputs_of_valid_and_same_layers() {
    let all = cases();
    let covers = |c: &Case| {
        let t = Tiling::new(&c.w, c.filters, c.images, c.scheme, (1, false));
        t.reach == (c.w.in_h, c.w.in_w)
    };
    for (k, c) in all.iter().enumerate() {
        assert_eq!(covers(c), reached_by_outputs(c), "case {k}");
    }
    assert_eq!(
        all.iter().filter(|c| !reached_by_outputs(c)).count(),
        2,
        "two cases of inputs past every output"
    );
    // Tiles of the pooled outputs only: 13x11 valid, 11x9 outputs, 10x8
    // pooled, whose windows reach 12 rows and 10 columns: 3x2 tiles of
    // 4, or 2x2 of 6 (which reach further, all 13 x 11, but read no more).
    let t = Tiling::new(&all[3].w, 20, 3, Scheme::F4x4, (1, true));
    assert_eq!((t.tiles_h, t.tiles_w, t.reach), (3, 2, (12, 10)));
    let t = Tiling::new(&all[3].w, 20, 3, Scheme::F6x6, (1, true));
    assert_eq!((t.tiles_h, t.tiles_w, t.reach), (2, 2, (12, 10)));
}

#[test]
fn pooling_as_stored_gives_the_bits_of_pooling_after() {
    for (k, ref c) in pooled_cases() {
        let x = noise_vec(c.images * c.w.in_len(), 41 + k as u64);
        let u = transformed(c, &noise_vec(kernel_len_of(c), 42));
        // A bias that makes some whole windows negative, so relu ties them at 0.
        let bias: Vec<f32> = noise_vec(c.filters, 43).iter().map(|b| b - 2.0).collect();
        for isa in paths() {
            let y = run_forward(isa, c, &x, &u, &bias, true);
            let fused = run_forward_pooled(isa, c, &x, &u, &bias);
            assert!(fused == max_pooled(c, &y), "{isa:?}, case {k}");
        }
    }
}

/// 2x2 max pooling, stride 2, over a case's output.
fn pool_window(c: &Case) -> Window2d {
    let shape = (c.w.out_h, c.w.out_w, c.filters);
    Window2d::new(shape, (2, 2), (2, 2), Padding::Valid).unwrap()
}

/// The cases whose output has a 2x2 window to pool, with their index.
fn pooled_cases() -> impl Iterator<Item = (usize, Case)> {
    cases()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.w.out_h >= 2 && c.w.out_w >= 2)
}

/// `y` (a case's output) max-pooled by `kernels::pool`: values and winners.
fn max_pooled(c: &Case, y: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let len = c.images * pool_window(c).out_pixels() * c.filters;
    let (mut pooled, mut winners) = (vec![0.0; len], vec![0; len]);
    let columns = &mut Default::default();
    crate::kernels::pool::max_pool_forward(&pool_window(c), y, &mut pooled, &mut winners, columns);
    (pooled, winners)
}
