//! The AVX2 kernels on a machine that would pick AVX-512 (as CI's does):
//! with AVX-512 turned off, the filter-vectorised convolution kernels
//! (wide, narrow, narrow over grey images, and the sparse input gradient)
//! still pass the finite-difference checks and agree with the AVX-512 ones,
//! 2x2 and 3x3/2 max pooling give the same outputs and gradients either
//! way, a Dense layer predicts alike with its kernel kept packed or not,
//! and so does training a model end to end (also one whose first
//! convolution feeds the next chunk by chunk). One test only, since the
//! switch is process-wide.
//!
//! On a CPU without AVX-512 (or without AVX2 and FMA) both runs would take
//! the same kernels and the comparisons would pass without comparing
//! anything: the test then says so on stderr (`SKIPPED: ...`, shown by
//! `cargo test -- --nocapture`) and returns.

mod common;

use common::{check_gradients, random, rng};
use convnet::Activation;
use convnet::kernels::{allow_avx512, has_avx2_fma, has_avx512};
use convnet::layers::{ActivationLayer, Conv2D, Dense, Layer, MaxPooling2D, Padding};
use ndarray::{ArrayD, IxDyn};

/// Output, input gradient and parameter gradients of one training step.
fn step(layer: &mut Conv2D, x: &ArrayD<f32>, dy: &ArrayD<f32>) -> Vec<ArrayD<f32>> {
    let (mut y, mut dx) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
    layer.forward_train(x, &mut y, convnet::layers::TrainingStep::default());
    let mut dy = dy.clone();
    layer.backward(x, &y, &mut dy, Some(&mut dx));
    let grads = layer
        .params()
        .iter()
        .map(|p| p.grad.clone())
        .collect::<Vec<_>>();
    [vec![y, dx], grads].concat()
}

/// One training step of `layer` with AVX-512 and one without: the
/// output and every gradient agree up to rounding. (Leaves AVX-512 off.)
fn step_on_both_kernel_sets(layer: &mut Conv2D, (x, dy): (&ArrayD<f32>, &ArrayD<f32>), what: &str) {
    allow_avx512(true);
    let wide = step(layer, x, dy);
    allow_avx512(false);
    let narrow = step(layer, x, dy);
    for (i, (a, b)) in wide.iter().zip(&narrow).enumerate() {
        for (u, v) in a.iter().zip(b) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                "{what}, result {i}: {u} (AVX-512) vs {v} (AVX2)"
            );
        }
    }
}

/// Whether this CPU runs both kernel sets; if not, prints why `test`
/// compares nothing, as a line `SKIPPED: <test>: <reason>` on stderr.
fn both_kernel_sets_run(test: &str) -> bool {
    allow_avx512(true);
    let reason = if !has_avx2_fma() {
        "this CPU has no AVX2 and FMA, so neither the AVX2 nor the AVX-512 kernels run"
    } else if !has_avx512() {
        "this CPU has no AVX-512, so the AVX2 and AVX-512 kernels cannot be compared"
    } else {
        return true;
    };
    eprintln!("SKIPPED: {test}: {reason}");
    false
}

#[test]
fn avx2_kernels_agree_with_avx512_and_finite_differences() {
    if !both_kernel_sets_run("avx2_kernels_agree_with_avx512_and_finite_differences") {
        return; // SKIPPED, not passed: nothing to compare on this CPU.
    }
    for (case, (filters, channels, padding)) in [
        (16, 6, Padding::Valid),
        (32, 3, Padding::Same),
        (48, 4, Padding::Valid), // a pair of 16-filter groups, then one group
        (16, 32, Padding::Same), // the input gradient as a convolution of dy
        (32, 16, Padding::Valid),
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
        step_on_both_kernel_sets(&mut layer, (&x, &dy), &format!("case {case}"));
        check_gradients(
            &mut Conv2D::new(filters, (3, 3)).padding(padding),
            &[6, 7, channels],
            2,
            40 + case as u64,
        );
    }
    // 3x3 and 5x5 layers of 16 or more channels run as Winograd F(4x4,
    // 3x3), F(6x6, 3x3) and F(2x2, 5x5): their transforms compiled for
    // AVX2 against those for AVX-512.
    // (An 8x13 input, 6x11 output, runs as F(6x6, 3x3).)
    let winograd_cases = [
        (3, 16, 32, Padding::Same, (10, 9)),
        (3, 20, 17, Padding::Valid, (10, 9)),
        (3, 20, 17, Padding::Valid, (8, 13)),
        (5, 16, 32, Padding::Same, (10, 9)),
        (5, 20, 17, Padding::Valid, (10, 9)),
    ];
    for (case, (side, filters, channels, padding, (h, w))) in winograd_cases.into_iter().enumerate()
    {
        let mut layer = Conv2D::new(filters, (side, side)).padding(padding);
        let mut r = rng(60 + case as u64);
        let out = layer.build(&[h, w, channels], &mut r).unwrap();
        let x = random(&[3, h, w, channels], &mut r);
        let dy = random(&[3, out[0], out[1], out[2]], &mut r);
        step_on_both_kernel_sets(&mut layer, (&x, &dy), &format!("Winograd case {case}"));
    }
    max_pooling_agrees_with_and_without_avx512();
    a_dense_layer_predicts_alike_with_and_without_avx512();
    a_model_trains_alike_with_and_without_avx512();
    a_fed_model_trains_alike_with_and_without_avx512();
    allow_avx512(true);
}

/// `fit` end to end on the AVX2 kernels (what a CPU without AVX-512 runs:
/// no fused convolution + pooling) and on the AVX-512 ones (fused, both
/// convolution families): the same predictions, up to rounding.
fn a_model_trains_alike_with_and_without_avx512() {
    let train = |avx512| {
        allow_avx512(avx512);
        let mut model = convnet::Sequential::with_seed(3);
        model.add(
            Conv2D::new(6, (5, 5))
                .activation(Activation::Relu)
                .input_shape(&[14, 14, 1]),
        );
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Conv2D::new(16, (3, 3)).activation(Activation::Relu));
        model.add(MaxPooling2D::new((2, 2)));
        model.add(convnet::layers::Flatten::new());
        model.add(convnet::layers::Dense::new(3).activation(Activation::Softmax));
        let adam = convnet::optimizers::Adam::default();
        trained_predictions(model, adam, &[14, 14, 1], (24, 8, 9))
    };
    assert_alike(&train(true), &train(false), 1e-4);
}

/// `model` (built, not compiled) trained for two epochs with `optimizer`
/// on `images` random pictures of shape `input` and 3 classes (seed
/// `seed`), in batches of `batch_size`: its predictions on them.
fn trained_predictions(
    mut model: convnet::Sequential,
    optimizer: impl convnet::optimizers::Optimizer + 'static,
    input: &[usize],
    (images, batch_size, seed): (usize, usize, u64),
) -> ArrayD<f32> {
    let loss = convnet::Loss::CategoricalCrossentropy;
    model.compile(loss, optimizer, &[]).unwrap();
    let x = random(&[&[images], input].concat(), &mut rng(seed));
    let y = ArrayD::from_shape_fn(IxDyn(&[images, 3]), |i| (i[0] % 3 == i[1]) as u8 as f32);
    let options = convnet::Fit {
        batch_size,
        epochs: 2,
        verbose: 0,
        ..convnet::Fit::default()
    };
    model.fit(&x, &y, options).unwrap();
    model.predict(&x).unwrap()
}

/// Predictions with AVX-512 (`wide`) and without (`narrow`) agree up to
/// rounding: within `tolerance`.
fn assert_alike(wide: &ArrayD<f32>, narrow: &ArrayD<f32>, tolerance: f32) {
    for (a, b) in wide.iter().zip(narrow) {
        assert!((a - b).abs() <= tolerance, "{a} (AVX-512) vs {b} (AVX2)");
    }
}

/// A first convolution that feeds the Winograd one after it chunk by
/// chunk, in training and at inference (the plan says so on both kernel
/// sets), trains alike on the AVX2 and the AVX-512 kernels: the same
/// predictions, up to rounding.
fn a_fed_model_trains_alike_with_and_without_avx512() {
    let train = |avx512| {
        allow_avx512(avx512);
        let mut model = convnet::Sequential::with_seed(4);
        let first = Conv2D::new(16, (3, 3))
            .padding(Padding::Same)
            .activation(Activation::Relu);
        model.add(first.input_shape(&[18, 18, 3]));
        model.add(Conv2D::new(16, (3, 3)).activation(Activation::Relu));
        model.add(MaxPooling2D::new((2, 2)));
        model.add(convnet::layers::Flatten::new());
        model.add(Dense::new(3).activation(Activation::Softmax));
        let plan = model.plan_string().unwrap();
        assert!(
            plan.contains("training: conv2d runs chunk by chunk into conv2d_1"),
            "AVX-512 {avx512}: {plan}"
        );
        let sgd = convnet::optimizers::SGD::new(0.05);
        trained_predictions(model, sgd, &[18, 18, 3], (20, 10, 10))
    };
    // The two kernel sets run different Winograd schemes here (F(6x6,
    // 3x3) pooled, F(4x4, 3x3) apart), and a rounding difference can flip
    // a max-pooling winner or a relu at zero for a sample in training,
    // which then moves every weight a little: this seed gave 2.3e-4 after
    // the transforms' fused multiply-adds (3e-7 with seeds 11-13, and
    // before). A wrong kernel is off by far more.
    assert_alike(&train(true), &train(false), 1e-3);
}

/// Output and input gradient of 2x2 max pooling, and of 3x3 windows moved
/// by 2 (AlexNet's), over relu'd values (many ties at zero, a NaN and a
/// -inf), with and without the relu derivative handed to the pooling
/// layer, on both kernel sets. Channel counts cover a masked vector, a
/// whole one and one and a half; some sizes leave a row or a column
/// outside every window.
fn max_pooling_agrees_with_and_without_avx512() {
    let cases = [(6, 8, 6), (7, 5, 16), (4, 4, 20), (5, 6, 1)]
        .map(|shape| ((2, 2), shape))
        .into_iter()
        .chain([
            ((3, 3), (7, 8, 6)),
            ((3, 3), (9, 7, 17)),
            ((3, 3), (6, 5, 96)),
        ]);
    for (case, (window, (h, w, channels))) in cases.enumerate() {
        let pooling = || MaxPooling2D::new(window).strides((2, 2));
        let mut r = rng(100 + case as u64);
        let mut x = random(&[3, h, w, channels], &mut r).mapv(|v| v.max(0.0));
        x[[0, 0, 0, 0]] = f32::NAN;
        x[[1, 1, 1, 0]] = f32::NEG_INFINITY;
        let out = pooling().build(&[h, w, channels], &mut r).unwrap();
        let dy = random(&[3, out[0], out[1], channels], &mut r);
        let mut results: Vec<ArrayD<f32>> = Vec::new();
        for avx512 in [true, false] {
            allow_avx512(avx512);
            for relu_input in [false, true] {
                let mut pool = pooling();
                pool.build(&[h, w, channels], &mut r).unwrap();
                if relu_input {
                    assert!(pool.take_relu_derivative_of_input(true));
                }
                let (mut y, mut dx) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
                pool.forward_train(&x, &mut y, convnet::layers::TrainingStep::default());
                pool.backward(&x, &y, &mut dy.clone(), Some(&mut dx));
                if relu_input {
                    // The same as relu's own derivative applied after pooling's.
                    let mut relu = ActivationLayer::new(Activation::Relu);
                    relu.build(&[h, w, channels], &mut r).unwrap();
                    let mut through_relu = ArrayD::zeros(IxDyn(&[0]));
                    let plain = results.last().expect("the pass without relu");
                    relu.backward(&x, &x, &mut plain.clone(), Some(&mut through_relu));
                    assert_eq!(dx, through_relu, "case {case}: relu derivative");
                }
                results.extend([y, dx]);
            }
        }
        for (i, (a, b)) in results[..4].iter().zip(&results[4..]).enumerate() {
            let same = a
                .iter()
                .zip(b)
                .all(|(u, v)| u == v || (u.is_nan() && v.is_nan()));
            assert!(
                same,
                "case {case}, result {i}: AVX-512 and scalar pooling differ"
            );
        }
    }
}

/// A Dense layer predicting a few samples at a time, with its kernel
/// kept packed for AVX-512's products, or read where it lies without: the
/// same outputs up to rounding, batch after batch.
fn a_dense_layer_predicts_alike_with_and_without_avx512() {
    if !both_kernel_sets_run("a_dense_layer_predicts_alike_with_and_without_avx512") {
        return; // SKIPPED, not passed: nothing to compare on this CPU.
    }
    let mut r = rng(120);
    let mut dense = Dense::new(300).activation(Activation::Relu);
    dense.build(&[600], &mut r).unwrap();
    let x = random(&[16, 600], &mut r);
    let mut outputs = Vec::new();
    for avx512 in [true, false] {
        allow_avx512(avx512);
        let layer = dense.clone();
        for _ in 0..2 {
            let mut y = ArrayD::zeros(IxDyn(&[0]));
            layer.forward(&x, &mut y);
            outputs.push(y);
        }
    }
    for (i, y) in outputs.iter().enumerate() {
        for (u, v) in y.iter().zip(&outputs[0]) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                "prediction {i}: {u} vs {v} (AVX-512, first)"
            );
        }
    }
}
