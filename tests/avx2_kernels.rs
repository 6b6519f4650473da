//! The AVX2 kernels on a machine that would pick AVX-512 (as CI's does):
//! with AVX-512 turned off, the filter-vectorised convolution kernels
//! (wide, narrow, narrow over grey images, and the sparse input gradient)
//! still pass the finite-difference checks and agree with the AVX-512 ones. One test only,
//! since the switch is process-wide.

mod common;

use common::{check_gradients, random, rng};
use convnet::kernels::allow_avx512;
use convnet::layers::{Conv2D, Layer, Padding};
use ndarray::{ArrayD, IxDyn};

/// Output, input gradient and parameter gradients of one training step.
fn step(layer: &mut Conv2D, x: &ArrayD<f32>, dy: &ArrayD<f32>) -> Vec<ArrayD<f32>> {
    let (mut y, mut dx) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
    layer.forward(x, &mut y, true);
    let mut dy = dy.clone();
    layer.backward(x, &y, &mut dy, Some(&mut dx));
    let grads = layer
        .params()
        .iter()
        .map(|p| p.grad.clone())
        .collect::<Vec<_>>();
    [vec![y, dx], grads].concat()
}

#[test]
fn avx2_kernels_agree_with_avx512_and_finite_differences() {
    for (case, (filters, channels, padding)) in [
        (16, 6, Padding::Valid),
        (32, 3, Padding::Same),
        (16, 13, Padding::Valid),
        (6, 1, Padding::Valid),
        (5, 1, Padding::Same),
        (3, 2, Padding::Valid),
    ]
    .into_iter()
    .enumerate()
    {
        let mut layer = Conv2D::new(filters, (5, 3)).padding(padding);
        let mut r = rng(case as u64);
        let out = layer.build(&[9, 8, channels], &mut r).unwrap();
        let x = random(&[3, 9, 8, channels], &mut r);
        let mut dy = random(&[3, out[0], out[1], out[2]], &mut r);
        // Mostly zeros, as behind max pooling (the sparse input gradient).
        dy.iter_mut()
            .enumerate()
            .filter(|(i, _)| i % 4 != 1)
            .for_each(|(_, v)| *v = 0.0);
        allow_avx512(true);
        let wide = step(&mut layer, &x, &dy);
        allow_avx512(false);
        let narrow = step(&mut layer, &x, &dy);
        for (i, (a, b)) in wide.iter().zip(&narrow).enumerate() {
            for (u, v) in a.iter().zip(b) {
                assert!(
                    (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                    "case {case}, result {i}: {u} (AVX-512) vs {v} (AVX2)"
                );
            }
        }
        check_gradients(
            &mut Conv2D::new(filters, (3, 3)).padding(padding),
            &[6, 7, channels],
            2,
            40 + case as u64,
        );
    }
    allow_avx512(true);
}
