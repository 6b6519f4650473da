//! Every layer's backward pass against finite differences of its forward
//! pass, for input and parameter gradients; every loss's gradient likewise.

mod common;

use common::{agrees, check_gradients, check_training_gradients, random, rng};
use convnet::Activation::{self, *};
use convnet::Loss;
use convnet::layers::{
    ActivationLayer, Conv2D, Dense, Dropout, FillMode, Flatten, FlipMode, Interpolation, Layer,
    MaxPooling2D, Padding, RandomFlip, RandomRotation, RandomTranslation, RandomZoom,
};
use ndarray::{ArrayD, Axis, IxDyn, Slice};

const ACTIVATIONS: [Activation; 5] = [Linear, Relu, Sigmoid, Tanh, Softmax];

#[test]
fn conv2d_gradients_for_every_activation() {
    for (seed, activation) in ACTIVATIONS.into_iter().enumerate() {
        let mut layer = Conv2D::new(3, (3, 3)).activation(activation);
        check_gradients(&mut layer, &[6, 5, 2], 2, seed as u64);
    }
}

#[test]
fn conv2d_gradients_over_grey_images() {
    // One input channel and at most 8 filters: the pixel-pair kernels on
    // AVX-512 CPUs. Odd and even output widths, with and without padding.
    for (seed, (filters, shape, padding)) in [
        (6, [9, 12, 1], Padding::Valid),
        (3, [7, 9, 1], Padding::Valid),
        (8, [6, 7, 1], Padding::Same),
    ]
    .into_iter()
    .enumerate()
    {
        let mut layer = Conv2D::new(filters, (3, 4))
            .activation(Tanh)
            .padding(padding);
        check_gradients(&mut layer, &shape, 3, 60 + seed as u64);
    }
}

#[test]
fn conv2d_gradients_with_rows_of_whole_register_blocks() {
    // 3- and 5-wide kernels over rows of at least 16 (grey, 6 filters) or 8
    // (16 filters) output pixels: the AVX-512 kernels that keep a kernel
    // row's inputs in registers.
    let cases = [
        (6, (5, 5), [8, 20, 1]),
        (6, (3, 3), [5, 19, 1]),
        (16, (5, 5), [7, 12, 3]),
        (16, (3, 3), [4, 10, 2]),
    ];
    for (seed, (filters, kernel, shape)) in cases.into_iter().enumerate() {
        let mut layer = Conv2D::new(filters, kernel).activation(Tanh);
        check_gradients(&mut layer, &shape, 2, 80 + seed as u64);
    }
}

#[test]
fn conv2d_gradients_with_strides_same_padding_and_no_bias() {
    let cases = [
        ((2, 2), Padding::Same, true, (3, 2)),
        ((2, 1), Padding::Valid, false, (2, 3)),
        ((1, 1), Padding::Same, true, (4, 4)),
        ((3, 3), Padding::Same, true, (5, 5)),
    ];
    for (seed, (strides, padding, use_bias, kernel)) in cases.into_iter().enumerate() {
        let mut layer = Conv2D::new(2, kernel)
            .strides(strides)
            .padding(padding)
            .use_bias(use_bias)
            .activation(Tanh);
        check_gradients(&mut layer, &[7, 6, 3], 2, 10 + seed as u64);
    }
}

#[test]
fn dilated_conv2d_gradients() {
    let cases = [
        ((3, 3), (2, 2), Padding::Valid, [7, 8, 2], 3),
        ((2, 3), (3, 1), Padding::Same, [6, 5, 3], 16),
        ((3, 2), (1, 2), Padding::Same, [5, 6, 1], 4),
    ];
    for (seed, (kernel, rate, padding, shape, filters)) in cases.into_iter().enumerate() {
        let mut layer = Conv2D::new(filters, kernel)
            .dilation_rate(rate)
            .padding(padding)
            .activation(Tanh);
        check_gradients(&mut layer, &shape, 2, 110 + seed as u64);
    }
}

#[test]
fn conv2d_gradients_with_16_and_32_filters() {
    // Multiples of 16 filters take the filter-vectorised path on AVX2 CPUs.
    check_gradients(&mut Conv2D::new(16, (3, 3)), &[6, 7, 2], 2, 25);
    let same = Conv2D::new(32, (2, 3))
        .padding(Padding::Same)
        .activation(Tanh);
    check_gradients(&mut same.clone(), &[5, 6, 3], 2, 26);
}

#[test]
fn conv2d_input_gradient_as_a_convolution_of_dy() {
    // Channels in whole 16-lane groups and windows too wide for the sparse
    // kernel (over 12 vectors): on AVX2 CPUs the input gradient runs as dy
    // convolved with the turned kernel, padding included.
    let valid = Conv2D::new(32, (5, 4)).activation(Tanh);
    check_gradients(&mut valid.clone(), &[7, 6, 16], 2, 27);
    let same = Conv2D::new(16, (3, 3)).padding(Padding::Same);
    check_gradients(&mut same.clone(), &[5, 7, 32], 2, 28);
    let wide = Conv2D::new(48, (3, 2)).padding(Padding::Same);
    check_gradients(&mut wide.clone(), &[4, 6, 64], 2, 29);
}

#[test]
fn conv2d_gradients_by_winograd() {
    // 3x3, stride 1, 16 to 512 channels and filters: Winograd F(4x4, 3x3).
    // Edge tiles cut by the image (7x9 and 9x7 outputs), channels and
    // filters not in whole 16-lane groups. (Relu, which the output transform
    // applies, is checked against the direct convolution in the kernel's
    // tests: with this many products per weight, finite differences cross
    // its kink, on every path.)
    let same = Conv2D::new(16, (3, 3))
        .padding(Padding::Same)
        .activation(Sigmoid);
    check_gradients(&mut same.clone(), &[7, 9, 16], 2, 30);
    let odd = Conv2D::new(20, (3, 3)).activation(Tanh);
    check_gradients(&mut odd.clone(), &[9, 11, 17], 3, 31);
    // A 6x11 output runs as F(6x6, 3x3): two 6x6 tiles (the second cut
    // by the image) transform 128 values, six of 4x4 would 216.
    let f6 = Conv2D::new(20, (3, 3)).activation(Tanh);
    check_gradients(&mut f6.clone(), &[8, 13, 17], 2, 32);
}

#[test]
fn conv2d_gradients_by_winograd_5x5() {
    // 5x5, stride 1, 16 to 512 channels and filters: Winograd F(2x2, 5x5),
    // with an odd output side (edge tiles cut in half) and masked lanes.
    let same = Conv2D::new(16, (5, 5))
        .padding(Padding::Same)
        .activation(Sigmoid);
    check_gradients(&mut same.clone(), &[7, 6, 16], 2, 34);
    let odd = Conv2D::new(18, (5, 5)).activation(Tanh);
    check_gradients(&mut odd.clone(), &[9, 10, 17], 2, 35);
}

#[test]
fn winograd_kernel_gradient_shares_of_several_chunks_add_up() {
    // 34x34 images: a 32x32 output is two images per chunk, so a batch of
    // five is three chunks, each with its own share of the gradients.
    let (shape, batch) = ([34, 34, 16], 5);
    let mut layer = Conv2D::new(16, (3, 3)).activation(Tanh);
    let mut r = rng(33);
    let out = layer.build(&shape, &mut r).unwrap();
    let x = random(&[batch, 34, 34, 16], &mut r);
    let dy = random(&[batch, out[0], out[1], out[2]], &mut r);
    let grads = |layer: &mut Conv2D, x: ArrayD<f32>, mut dy: ArrayD<f32>| {
        let mut y = ArrayD::zeros(IxDyn(&[0]));
        layer.forward_train(&x, &mut y, Default::default());
        layer.backward(&x, &y, &mut dy, None);
        layer
            .params()
            .iter()
            .map(|p| p.grad.clone())
            .collect::<Vec<_>>()
    };
    let whole = grads(&mut layer, x.clone(), dy.clone());
    let mut summed: Vec<ArrayD<f32>> = whole.iter().map(|g| g.mapv(|_| 0.0)).collect();
    for image in 0..batch {
        let one = |a: &ArrayD<f32>| {
            a.slice_axis(Axis(0), Slice::from(image..image + 1))
                .to_owned()
        };
        for (sum, g) in summed.iter_mut().zip(grads(&mut layer, one(&x), one(&dy))) {
            *sum += &g;
        }
    }
    // Each value sums thousands of products, with Winograd's rounding: a
    // share lost or added twice would be off by about a fifth.
    for (w, s) in whole.iter().zip(&summed) {
        for (a, b) in w.iter().zip(s) {
            assert!(
                (a - b).abs() <= 2e-3 * (1.0 + b.abs()),
                "{a} (batch) vs {b} (images summed)"
            );
        }
    }
}

#[test]
fn winograd_relu_derivative_applied_as_read_is_a_separate_pass() {
    // A Winograd layer with relu applies relu's derivative as its
    // transforms read the gradient: the same bits as applying it first.
    let mut layer = Conv2D::new(32, (3, 3))
        .padding(Padding::Same)
        .activation(Relu);
    let mut r = rng(36);
    let out = layer.build(&[12, 10, 16], &mut r).unwrap();
    let x = random(&[3, 12, 10, 16], &mut r);
    let dy = random(&[3, out[0], out[1], out[2]], &mut r);
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    layer.forward_train(&x, &mut y, Default::default());
    let grads = |layer: &mut Conv2D, mut dy: ArrayD<f32>| {
        let mut dx = ArrayD::zeros(IxDyn(&[0]));
        layer.backward(&x, &y, &mut dy, Some(&mut dx));
        let params = layer.params().iter().map(|p| p.grad.clone()).collect();
        (params, dx)
    };
    let fused: (Vec<_>, _) = grads(&mut layer, dy.clone());
    let masked = ndarray::Zip::from(&dy)
        .and(&y)
        .map_collect(|&g, &y| if y > 0.0 { g } else { 0.0 });
    let mut separate = layer.clone();
    separate.skip_activation_derivative(true);
    assert!(fused == grads(&mut separate, masked));
    assert!(y.iter().any(|&v| v <= 0.0) && y.iter().any(|&v| v > 0.0));
}

#[test]
fn conv2d_gradients_across_parallel_chunks() {
    // A batch large enough to be split into several chunks, whose partial
    // gradients must add up.
    let mut layer = Conv2D::new(2, (2, 2)).activation(Linear);
    check_gradients(&mut layer, &[30, 30, 1], 5, 20);
}

#[test]
fn dense_gradients_for_every_activation() {
    for (seed, activation) in ACTIVATIONS.into_iter().enumerate() {
        let mut layer = Dense::new(4).activation(activation);
        check_gradients(&mut layer, &[5], 3, 30 + seed as u64);
    }
    let mut layer = Dense::new(3).use_bias(false);
    check_gradients(&mut layer, &[4], 70, 36);
    // More inputs than one block of kernel rows in the backward pass (32).
    check_gradients(&mut Dense::new(3).activation(Tanh), &[70], 3, 37);
}

#[test]
fn max_pooling_gradients() {
    let cases = [
        ((2, 2), None, Padding::Valid),
        ((3, 3), Some((2, 2)), Padding::Valid),
        ((2, 2), None, Padding::Same),
        ((3, 2), Some((1, 2)), Padding::Same),
    ];
    for (seed, (pool, strides, padding)) in cases.into_iter().enumerate() {
        let mut layer = MaxPooling2D::new(pool).padding(padding);
        if let Some(strides) = strides {
            layer = layer.strides(strides);
        }
        check_gradients(&mut layer, &[5, 7, 2], 2, 40 + seed as u64);
    }
    // Windows that tile the image exactly (as in LeNet) take a faster path.
    check_gradients(&mut MaxPooling2D::new((2, 2)), &[6, 4, 3], 3, 45);
    check_gradients(&mut MaxPooling2D::new((3, 2)), &[6, 4, 2], 2, 46);
    // AlexNet's overlapping 3x3 windows moved by 2 take vector loops: 17
    // channels are a whole vector and a masked one, the even width leaves
    // a column outside every window.
    let alexnet_pool = || MaxPooling2D::new((3, 3)).strides((2, 2));
    check_gradients(&mut alexnet_pool(), &[7, 8, 17], 2, 47);
    check_gradients(&mut alexnet_pool(), &[9, 7, 3], 2, 48);
}

/// Max pooling that takes over relu's derivative (every path: clipped and
/// overlapping windows, tiling ones, 2x2 with a row left over) gives what
/// pooling's own backward pass followed by relu's gives.
#[test]
fn max_pooling_applies_relu_derivative_of_its_input() {
    let cases = [
        ((3, 3), (2, 2), Padding::Valid, [7, 7, 2]),
        ((3, 3), (2, 2), Padding::Valid, [8, 9, 20]),
        ((3, 2), (1, 2), Padding::Same, [5, 7, 3]),
        ((2, 2), (2, 2), Padding::Same, [5, 5, 2]),
        ((3, 2), (3, 2), Padding::Valid, [6, 4, 2]),
        ((2, 2), (2, 2), Padding::Valid, [5, 6, 20]),
    ];
    for (case, (pool_size, strides, padding, shape)) in cases.into_iter().enumerate() {
        let mut r = rng(80 + case as u64);
        // Mostly zeros, so that some windows hold no positive value.
        let x = random(&[2, shape[0], shape[1], shape[2]], &mut r).mapv(|v| (v - 0.6).max(0.0));
        let mut grads = Vec::new();
        for take in [false, true] {
            let mut pool = MaxPooling2D::new(pool_size)
                .strides(strides)
                .padding(padding);
            pool.build(&shape, &mut r).unwrap();
            assert!(pool.take_relu_derivative_of_input(take));
            let (mut y, mut dx) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
            pool.forward_train(&x, &mut y, convnet::layers::TrainingStep::default());
            let dy = ArrayD::from_shape_fn(y.raw_dim(), |i| 1.0 + (i[1] + 2 * i[2] + i[3]) as f32);
            pool.backward(&x, &y, &mut dy.clone(), Some(&mut dx));
            grads.push(dx);
        }
        let mut relu = ActivationLayer::new(Relu);
        relu.build(&shape, &mut r).unwrap();
        let mut expected = ArrayD::zeros(IxDyn(&[0]));
        relu.backward(&x, &x, &mut grads[0].clone(), Some(&mut expected));
        assert_ne!(
            grads[0], expected,
            "case {case}: some windows should be all zero"
        );
        assert_eq!(grads[1], expected, "case {case}");
    }
}

/// A Winograd convolution after a relu applies relu's derivative to the
/// input gradient it writes: the bits of relu's own backward pass after
/// it. Off the Winograd path a convolution declines.
#[test]
fn winograd_conv_applies_relu_derivative_of_its_input() {
    for (case, (side, shape)) in [(3, [9, 10, 16]), (3, [8, 13, 17]), (5, [9, 9, 16])]
        .into_iter()
        .enumerate()
    {
        let mut r = rng(95 + case as u64);
        let x = random(&[2, shape[0], shape[1], shape[2]], &mut r).mapv(|v| v.max(0.0));
        let mut grads = Vec::new();
        for take in [false, true] {
            let mut conv = Conv2D::new(20, (side, side)).activation(Tanh);
            let mut r = rng(99);
            conv.build(&shape, &mut r).unwrap();
            assert_eq!(conv.take_relu_derivative_of_input(take), take);
            let (mut y, mut dx) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
            conv.forward_train(&x, &mut y, convnet::layers::TrainingStep::default());
            let dy = random(y.shape(), &mut rng(98));
            conv.backward(&x, &y, &mut dy.clone(), Some(&mut dx));
            grads.push(dx);
        }
        let mut relu = ActivationLayer::new(Relu);
        relu.build(&shape, &mut r).unwrap();
        let mut expected = ArrayD::zeros(IxDyn(&[0]));
        relu.backward(&x, &x, &mut grads[0].clone(), Some(&mut expected));
        assert_ne!(grads[0], expected, "case {case}: some inputs are 0");
        assert_eq!(grads[1], expected, "case {case}");
    }
    let mut first = Conv2D::new(16, (3, 3));
    first.build(&[8, 8, 3], &mut rng(97)).unwrap();
    assert!(
        !first.take_relu_derivative_of_input(true),
        "3 channels: not on the Winograd path"
    );
}

/// A model compiled again starts afresh: compiled first with cross-entropy/// A model compiled again starts afresh: compiled first with cross-entropy
/// (which takes over softmax's derivative), then with mean squared error,
/// its gradients are those of the second loss, softmax included.
#[test]
fn compiling_again_restores_activation_derivatives() {
    let mut model = convnet::Sequential::with_seed(3);
    model.add(Dense::new(3).activation(Softmax).input_shape(&[4]));
    let adam = convnet::optimizers::Adam::default;
    model
        .compile(Loss::CategoricalCrossentropy, adam(), &[])
        .unwrap();
    model.compile(Loss::MeanSquaredError, adam(), &[]).unwrap();
    let mut r = rng(90);
    let x = random(&[5, 4], &mut r);
    let y = ArrayD::from_shape_fn(IxDyn(&[5, 3]), |i| (i[0] % 3 == i[1]) as u8 as f32);
    model.profile_step(&x, &y, &[0, 1, 2, 3, 4]).unwrap();
    let analytic: Vec<f32> = model.params()[0].grad.iter().copied().collect();
    let h = 1e-2;
    for (i, &g) in analytic.iter().enumerate() {
        let mut loss_with = |delta: f32| {
            model.params_mut()[0].value.as_slice_mut().unwrap()[i] += delta;
            let loss = model.evaluate(&x, &y).unwrap().loss;
            model.params_mut()[0].value.as_slice_mut().unwrap()[i] -= delta;
            loss
        };
        let (plus, minus, centre) = (loss_with(h), loss_with(-h), loss_with(0.0));
        assert!(
            agrees(g as f64, plus, minus, centre, h as f64, 2e-2),
            "kernel [{i}]: analytic {g}, numeric {}",
            (plus - minus) / (2.0 * h as f64)
        );
    }
}

#[test]
fn flatten_and_activation_layer_gradients() {
    check_gradients(&mut Flatten::new(), &[3, 2, 2], 2, 50);
    for (seed, activation) in ACTIVATIONS.into_iter().enumerate() {
        check_gradients(
            &mut ActivationLayer::new(activation),
            &[6],
            3,
            51 + seed as u64,
        );
    }
}

#[test]
fn dropout_scales_kept_values_and_routes_gradients_through_them() {
    let mut layer = Dropout::new(0.5);
    let mut rng = rng(60);
    layer.build(&[1000], &mut rng).unwrap();
    let x = random(&[2, 1000], &mut rng).mapv(|v| v + 2.0); // never zero
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    layer.forward_train(&x, &mut y, convnet::layers::TrainingStep::default());
    let dropped = y.iter().filter(|&&v| v == 0.0).count();
    assert!((800..1200).contains(&dropped), "dropped {dropped} of 2000");
    for (&xi, &yi) in x.iter().zip(&y) {
        assert!(yi == 0.0 || (yi - 2.0 * xi).abs() < 1e-5);
    }
    // The layer is linear given its mask: dx = dy · y / x.
    let mut dy = random(&[2, 1000], &mut rng);
    let mut dx = ArrayD::zeros(IxDyn(&[0]));
    layer.backward(&x, &y, &mut dy.clone(), Some(&mut dx));
    for i in 0..x.len() {
        let (xi, yi) = (x.as_slice().unwrap()[i], y.as_slice().unwrap()[i]);
        let want = dy.as_slice_mut().unwrap()[i] * yi / xi;
        assert!((dx.as_slice().unwrap()[i] - want).abs() < 1e-5);
    }
    // At inference, dropout is the identity.
    layer.forward(&x, &mut y);
    assert_eq!(x, y);
}

/// The augmentation layers are linear given their draws (which depend on
/// the step, not the input): their backward passes are exact adjoints.
/// Probes run as training, with the same step, so the same draws.
#[test]
fn augmentation_gradients() {
    let constant = FillMode::Constant;
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(RandomFlip::new(FlipMode::HorizontalAndVertical)),
        Box::new(RandomRotation::new(0.2)),
        Box::new(RandomRotation::new(0.3).fill_mode(constant).fill_value(0.5)),
        Box::new(RandomTranslation::new(0.3, (-0.2, 0.4)).fill_mode(FillMode::Wrap)),
        Box::new(RandomZoom::new(0.4).width_factor((-0.3, 0.2))),
        Box::new(RandomZoom::new(0.5).fill_mode(FillMode::Nearest)),
        Box::new(RandomRotation::new(0.5).interpolation(Interpolation::Nearest)),
    ];
    for (seed, mut layer) in layers.into_iter().enumerate() {
        check_training_gradients(layer.as_mut(), &[5, 6, 2], 3, 120 + seed as u64);
    }
}

/// Finite-difference check of a loss's gradient with respect to its input:
/// the predictions, or the logits when fused with a softmax.
fn check_loss(loss: Loss, fused: bool, targets: &[f32], seed: u64) {
    let (batch, width) = (3, 4);
    let logits = random(&[batch, width], &mut rng(seed))
        .into_raw_vec_and_offset()
        .0;
    let prediction = |z: &[f32]| {
        let mut p = z.to_vec();
        if fused || loss != Loss::MeanSquaredError {
            Softmax.forward(&mut p, width);
        }
        p
    };
    let mean_loss =
        |z: &[f32]| loss.compute(&prediction(z), targets, width, fused, None) / batch as f64;
    let mut grad = vec![0.0; batch * width];
    loss.compute(&prediction(&logits), targets, width, fused, Some(&mut grad));
    let h = 1e-3;
    let centre = mean_loss(&logits);
    for i in 0..logits.len() {
        let (mut plus, mut minus) = (logits.clone(), logits.clone());
        plus[i] += h as f32;
        minus[i] -= h as f32;
        let analytic = if fused {
            grad[i] as f64
        } else {
            // Chain through the softmax by hand for the unfused case.
            let p = prediction(&logits);
            let row = i / width;
            let g = &grad[row * width..(row + 1) * width];
            let y = &p[row * width..(row + 1) * width];
            let dot: f32 = g.iter().zip(y).map(|(g, y)| g * y).sum();
            if loss == Loss::MeanSquaredError {
                grad[i] as f64
            } else {
                (y[i % width] * (g[i % width] - dot)) as f64
            }
        };
        let (plus, minus) = if loss == Loss::MeanSquaredError && !fused {
            let direct = |z: &[f32]| loss.compute(z, targets, width, false, None) / batch as f64;
            (direct(&plus), direct(&minus))
        } else {
            (mean_loss(&plus), mean_loss(&minus))
        };
        assert!(
            agrees(analytic, plus, minus, centre, h, 1e-2)
                || analytic.abs() < 1e-6 && ((plus - minus) / (2.0 * h)).abs() < 1e-3,
            "{loss:?} fused={fused} element {i}: analytic {analytic}, numeric {}",
            (plus - minus) / (2.0 * h)
        );
    }
}

#[test]
fn loss_gradients() {
    let one_hot = [0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1.];
    let classes = [1., 0., 3.];
    check_loss(Loss::CategoricalCrossentropy, true, &one_hot, 70);
    check_loss(Loss::CategoricalCrossentropy, false, &one_hot, 71);
    check_loss(Loss::SparseCategoricalCrossentropy, true, &classes, 72);
    check_loss(Loss::SparseCategoricalCrossentropy, false, &classes, 73);
    let soft: Vec<f32> = random(&[3, 4], &mut rng(74))
        .iter()
        .map(|v| v.abs())
        .collect();
    check_loss(Loss::MeanSquaredError, false, &soft, 75);
}

/// Finite-difference check of `loss`'s gradient with respect to the
/// logits `z` of an output `activation` (Linear for `from_logits`): the
/// loss's own gradient when it takes the activation over (`fuses_with`),
/// else the loss's gradient chained through `activation.backward`.
fn check_loss_through(loss: Loss, activation: Activation, targets: &[f32], seed: u64) {
    // Sparse targets are one class index per sample, of 4 classes.
    let sparse = loss.kind() == convnet::losses::LossKind::SparseCategoricalCrossentropy;
    let (batch, width) = (3, if sparse { 4 } else { targets.len() / 3 });
    let logits = random(&[batch, width], &mut rng(seed))
        .mapv(|v| 3.0 * v)
        .into_raw_vec_and_offset()
        .0;
    let fused = loss.fuses_with(activation);
    let prediction = |z: &[f32]| {
        let mut p = z.to_vec();
        activation.forward(&mut p, width);
        p
    };
    let mean_loss =
        |z: &[f32]| loss.compute(&prediction(z), targets, width, fused, None) / batch as f64;
    let p = prediction(&logits);
    let mut grad = vec![0.0; batch * width];
    loss.compute(&p, targets, width, fused, Some(&mut grad));
    if !fused {
        activation.backward(&p, &mut grad, width);
    }
    let h = 1e-3;
    let centre = mean_loss(&logits);
    for (i, &analytic) in grad.iter().enumerate() {
        let (mut plus, mut minus) = (logits.clone(), logits.clone());
        plus[i] += h as f32;
        minus[i] -= h as f32;
        let (plus, minus) = (mean_loss(&plus), mean_loss(&minus));
        assert!(
            agrees(analytic as f64, plus, minus, centre, h, 1e-2),
            "{loss:?} through {activation:?} (fused {fused}) element {i}: analytic {analytic}, \
             numeric {}",
            (plus - minus) / (2.0 * h)
        );
    }
}

#[test]
fn binary_and_smoothed_and_logit_loss_gradients() {
    let bits = [0., 1., 1., 1., 0., 0., 1., 0., 1., 0., 0., 1.];
    let soft: Vec<f32> = random(&[3, 4], &mut rng(80))
        .iter()
        .map(|v| (v + 1.0) / 2.0)
        .collect();
    let one_hot = [0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1.];
    let bce = Loss::BinaryCrossentropy;
    let bce_smooth = bce.label_smoothing(0.2).unwrap();
    let bce_logits = bce.from_logits(true).unwrap();
    let cce = Loss::CategoricalCrossentropy;
    let cce_smooth = cce.label_smoothing(0.1).unwrap();
    let cce_logits = cce.from_logits(true).unwrap();
    let sparse_logits = Loss::SparseCategoricalCrossentropy
        .from_logits(true)
        .unwrap();
    let cases: [(Loss, Activation, &[f32]); 11] = [
        (bce, Sigmoid, &bits),
        (bce, Sigmoid, &soft),
        (bce_smooth, Sigmoid, &bits),
        (bce, Tanh, &soft), // probabilities in (-1, 1) are clipped: zero gradient there
        (bce_logits, Linear, &bits),
        (bce_logits.label_smoothing(0.3).unwrap(), Linear, &soft),
        (cce_smooth, Softmax, &one_hot),
        (cce_smooth, Sigmoid, &one_hot), // not fused: through sigmoid's derivative
        (cce_logits, Linear, &one_hot),
        (cce_logits.label_smoothing(0.2).unwrap(), Linear, &one_hot),
        (sparse_logits, Linear, &[1., 0., 3.]),
    ];
    for (seed, (loss, activation, targets)) in cases.into_iter().enumerate() {
        check_loss_through(loss, activation, targets, 81 + seed as u64);
    }
}

/// Fusing is a shortcut, not a change: the gradient of a fused sigmoid +
/// binary cross-entropy equals the unfused one chained through sigmoid.
#[test]
fn fused_sigmoid_gradient_equals_the_chained_one() {
    let logits = random(&[4, 3], &mut rng(95)).into_raw_vec_and_offset().0;
    let targets: Vec<f32> = (0..12).map(|i| (i % 3 == 0) as u8 as f32).collect();
    let mut p = logits.clone();
    Sigmoid.forward(&mut p, 3);
    let (mut fused, mut chained) = (vec![0.0; 12], vec![0.0; 12]);
    let loss = Loss::BinaryCrossentropy;
    loss.compute(&p, &targets, 3, true, Some(&mut fused));
    loss.compute(&p, &targets, 3, false, Some(&mut chained));
    Sigmoid.backward(&p, &mut chained, 3);
    for (a, b) in fused.iter().zip(&chained) {
        assert!((a - b).abs() < 1e-6, "fused {a}, chained {b}");
    }
}

/// A model whose last layer is linear, with a loss `from_logits`, has
/// the loss and weight gradients of the same model with the activation
/// in its last layer: softmax for categorical, sigmoid for binary.
#[test]
fn from_logits_models_match_their_activation_twins() {
    let mut r = rng(96);
    let x = random(&[6, 5], &mut r);
    let one_hot = ArrayD::from_shape_fn(IxDyn(&[6, 3]), |i| (i[0] % 3 == i[1]) as u8 as f32);
    let bits = ArrayD::from_shape_fn(IxDyn(&[6, 3]), |i| ((i[0] + i[1]) % 2) as f32);
    let cce = Loss::CategoricalCrossentropy.label_smoothing(0.1).unwrap();
    let bce = Loss::BinaryCrossentropy.label_smoothing(0.1).unwrap();
    for (loss, activation, y) in [(cce, Softmax, &one_hot), (bce, Sigmoid, &bits)] {
        let run = |loss: Loss, activation| {
            let mut model = convnet::Sequential::with_seed(4);
            model.add(Dense::new(3).activation(activation).input_shape(&[5]));
            let sgd = convnet::optimizers::SGD::new(0.1);
            model.compile(loss, sgd, &[]).unwrap();
            model.profile_step(&x, y, &[0, 1, 2, 3, 4, 5]).unwrap();
            let grads: Vec<f32> = model
                .params()
                .iter()
                .flat_map(|p| p.grad.iter().copied())
                .collect();
            (model.evaluate(&x, y).unwrap().loss, grads)
        };
        let (with_activation, grads) = run(loss, activation);
        let (from_logits, logit_grads) = run(loss.from_logits(true).unwrap(), Linear);
        assert!(
            (with_activation - from_logits).abs() < 1e-5,
            "{with_activation} vs {from_logits}"
        );
        for (a, b) in grads.iter().zip(&logit_grads) {
            assert!((a - b).abs() < 1e-5, "{loss:?}: {a} vs {b}");
        }
    }
}

/// A sigmoid + binary cross-entropy model's weight gradients (the loss
/// fused with the sigmoid) against finite differences of its loss.
#[test]
fn sigmoid_binary_cross_entropy_model_gradients() {
    let mut model = convnet::Sequential::with_seed(5);
    model.add(Dense::new(4).activation(Tanh).input_shape(&[3]));
    model.add(Dense::new(2).activation(Sigmoid));
    let loss = Loss::BinaryCrossentropy.label_smoothing(0.05).unwrap();
    model
        .compile(loss, convnet::optimizers::SGD::new(0.1), &[])
        .unwrap();
    let x = random(&[5, 3], &mut rng(97));
    let y = ArrayD::from_shape_fn(IxDyn(&[5, 2]), |i| {
        ((i[0] * 2 + i[1]) % 3 == 0) as u8 as f32
    });
    model.profile_step(&x, &y, &[0, 1, 2, 3, 4]).unwrap();
    let analytic: Vec<Vec<f32>> = model
        .params()
        .iter()
        .map(|p| p.grad.iter().copied().collect())
        .collect();
    let h = 1e-2;
    for (k, grads) in analytic.iter().enumerate() {
        for (i, &g) in grads.iter().enumerate() {
            let mut loss_with = |delta: f32| {
                model.params_mut()[k].value.as_slice_mut().unwrap()[i] += delta;
                let loss = model.evaluate(&x, &y).unwrap().loss;
                model.params_mut()[k].value.as_slice_mut().unwrap()[i] -= delta;
                loss
            };
            let (plus, minus, centre) = (loss_with(h), loss_with(-h), loss_with(0.0));
            assert!(
                agrees(g as f64, plus, minus, centre, h as f64, 2e-2),
                "param {k} [{i}]: analytic {g}, numeric {}",
                (plus - minus) / (2.0 * h as f64)
            );
        }
    }
}

#[test]
fn cross_entropy_of_a_confident_mistake_is_large_but_finite() {
    let p = [1.0, 0.0];
    let y = [0.0, 1.0];
    let loss = Loss::CategoricalCrossentropy.compute(&p, &y, 2, true, None);
    assert!((loss - -(1e-7f32 as f64).ln()).abs() < 1e-3, "{loss}");
}

#[test]
fn every_layer_reports_its_class_name() {
    let names: Vec<&str> = [
        Box::new(Conv2D::new(1, (1, 1))) as Box<dyn Layer>,
        Box::new(MaxPooling2D::new((2, 2))),
        Box::new(Flatten::new()),
        Box::new(Dense::new(1)),
        Box::new(ActivationLayer::new(Relu)),
        Box::new(Dropout::new(0.1)),
    ]
    .iter()
    .map(|l| l.class_name())
    .collect();
    assert_eq!(
        names,
        [
            "Conv2D",
            "MaxPooling2D",
            "Flatten",
            "Dense",
            "Activation",
            "Dropout"
        ]
    );
}

/// `compile` hands a convolution's relu derivative to the max pooling
/// after it (the pooling drops the gradients of windows whose maximum is not
/// positive; the convolution skips its own pass): the model's gradients
/// still match finite differences of its loss.
///
/// On AVX-512 CPUs the grey cases here run the convolution and the pooling
/// as one pass (the pool's winners taken before relu): 3- and 5-wide
/// kernels, an odd output left over by the pool, same padding; and the
/// wide case its forward passes.
#[test]
fn model_gradients_with_relu_derivative_handed_to_max_pooling() {
    check_conv_relu_pool_model(4, (3, 3), &[6, 6, 1], Padding::Valid);
    check_conv_relu_pool_model(6, (5, 5), &[11, 10, 1], Padding::Valid);
    check_conv_relu_pool_model(3, (3, 3), &[5, 7, 1], Padding::Same);
    check_conv_relu_pool_model(4, (3, 3), &[6, 6, 2], Padding::Valid);
    // Wide layers: one pass forward, the pool's own backward pass.
    check_conv_relu_pool_model(16, (3, 3), &[6, 7, 2], Padding::Valid);
}

fn check_conv_relu_pool_model(
    filters: usize,
    kernel: (usize, usize),
    input: &[usize],
    padding: Padding,
) {
    let mut model = convnet::Sequential::with_seed(7);
    model.add(
        Conv2D::new(filters, kernel)
            .activation(Relu)
            .padding(padding)
            .input_shape(input),
    );
    model.add(MaxPooling2D::new((2, 2)));
    check_model_gradients(model, input, 2);
}

/// Adds a softmax head to `model`, then checks the gradients of its first
/// `params` parameters against finite differences of the loss.
fn check_model_gradients(model: convnet::Sequential, input: &[usize], params: usize) {
    check_model_gradients_of(model, input, params, false);
}

/// Flatten, a softmax Dense layer of 3 units, and a compile whose
/// optimizer never steps (a learning rate of 0 for the probes).
fn add_probed_head(model: &mut convnet::Sequential) {
    model.add(Flatten::new());
    model.add(Dense::new(3).activation(Softmax));
    model
        .compile(
            Loss::CategoricalCrossentropy,
            convnet::optimizers::SGD::new(0.0),
            &[],
        )
        .unwrap();
}

/// [`check_model_gradients`] with `training_probes`: the loss probed as
/// training computes it, as a model with BatchNormalization (batch
/// statistics) needs; else as inference.
fn check_model_gradients_of(
    mut model: convnet::Sequential,
    input: &[usize],
    params: usize,
    training_probes: bool,
) {
    add_probed_head(&mut model);
    let mut r = rng(60);
    let x = random(&[&[4], input].concat(), &mut r);
    let y = ArrayD::from_shape_fn(IxDyn(&[4, 3]), |i| (i[0] % 3 == i[1]) as u8 as f32);
    model.profile_step(&x, &y, &[0, 1, 2, 3]).unwrap();
    let analytic: Vec<Vec<f32>> = model.params()[..params]
        .iter()
        .map(|p| p.grad.iter().copied().collect())
        .collect();
    let h = 1e-3;
    let mut loss_with = |param: usize, i: usize, delta: f32| {
        let value = &mut model.params_mut()[param].value;
        let saved = value.as_slice().unwrap()[i];
        value.as_slice_mut().unwrap()[i] = saved + delta;
        let loss = if training_probes {
            training_loss(&mut model, &x, &y)
        } else {
            model.evaluate(&x, &y).unwrap().loss
        };
        model.params_mut()[param].value.as_slice_mut().unwrap()[i] = saved;
        loss
    };
    for (param, grads) in analytic.iter().enumerate() {
        for (i, &g) in grads.iter().enumerate() {
            let (plus, minus) = (loss_with(param, i, h), loss_with(param, i, -h));
            let centre = loss_with(param, i, 0.0);
            assert!(
                agrees(g as f64, plus, minus, centre, h as f64, 2e-2),
                "param {param} [{i}]: analytic {g}, numeric {}",
                (plus - minus) / (2.0 * h as f64)
            );
        }
        assert!(grads.iter().any(|&g| g != 0.0), "param {param}: all zero");
    }
}

/// The loss of `model` on all of `(x, y)` as training computes it: one
/// step of `fit` over the whole batch, on one replica, whose optimizer
/// (learning rate 0) leaves the weights as they were.
fn training_loss(model: &mut convnet::Sequential, x: &ArrayD<f32>, y: &ArrayD<f32>) -> f64 {
    let options = convnet::Fit {
        batch_size: x.shape()[0],
        verbose: 0,
        shuffle: false,
        replicas: Some(1),
        ..convnet::Fit::default()
    };
    model.fit(x, y, options).unwrap().history["loss"][0]
}

/// BatchNormalization → Activation(relu), fused into one training stage:
/// once where the stage applies relu's derivative (a convolution
/// follows), once where the max pooling after it does. The gradients of
/// both convolutions and both normalizations match finite differences of
/// the training loss.
#[test]
fn gradients_through_batch_normalization_fused_with_relu() {
    use convnet::layers::BatchNormalization;
    let mut model = convnet::Sequential::with_seed(9);
    let conv = Conv2D::new(3, (3, 3))
        .padding(Padding::Same)
        .use_bias(false);
    model.add(conv.clone().input_shape(&[6, 6, 2]));
    model.add(BatchNormalization::new());
    model.add(ActivationLayer::new(Relu));
    model.add(conv);
    model.add(BatchNormalization::new());
    model.add(ActivationLayer::new(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    let plan = model.plan_string().unwrap();
    assert_eq!(
        plan.matches("in training (relu applied as").count(),
        2,
        "{plan}"
    );
    assert!(
        plan.contains("relu's derivative left to max_pooling2d"),
        "{plan}"
    );
    check_model_gradients_of(model, &[6, 6, 2], 6, true);
}

/// The same stage before a Winograd convolution, which takes over relu's
/// derivative (its input gradient goes through it as it is written): the
/// stage leaves it to the convolution, and the gradients still match.
#[test]
fn batch_normalization_with_relu_leaves_the_derivative_to_winograd() {
    use convnet::layers::BatchNormalization;
    let mut model = convnet::Sequential::with_seed(12);
    let conv = Conv2D::new(16, (3, 3))
        .padding(Padding::Same)
        .use_bias(false);
    model.add(conv.clone().input_shape(&[6, 6, 2]));
    model.add(BatchNormalization::new());
    model.add(ActivationLayer::new(Relu));
    model.add(conv.activation(Tanh));
    model.add(Flatten::new());
    model.add(Dense::new(2));
    let plan = model.plan_string().unwrap();
    assert!(
        plan.contains("relu's derivative left to conv2d_1"),
        "{plan}"
    );
    check_model_gradients_of(model, &[6, 6, 2], 6, true);
}

/// Every fused stage of a plan, at any depth, with relu on the
/// convolution or as an Activation layer of its own: gradients match
/// finite differences. On AVX-512 CPUs the plan fuses each
/// convolution + pooling here (checked); elsewhere the layers run one by
/// one and the same gradients are checked.
#[test]
fn gradients_of_every_fused_stage_at_any_depth() {
    let fuses = convnet::kernels::has_avx512();
    if !fuses {
        eprintln!(
            "SKIPPED (in part): this CPU has no AVX-512, so nothing fuses; gradients checked unfused"
        );
    }
    // A first stage with a separate relu layer (backward in one pass).
    let mut model = convnet::Sequential::with_seed(7);
    model.add(Conv2D::new(4, (3, 3)).input_shape(&[6, 6, 1]));
    model.add(ActivationLayer::new(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    let plan = model.plan_string().unwrap();
    assert_eq!(
        plan.contains("fused: conv2d + activation + max_pooling2d"),
        fuses,
        "{plan}"
    );
    check_model_gradients(model, &[6, 6, 1], 2);

    // Two stages: the second (16 filters, relu as a layer) takes an input
    // gradient, so its backward pass is the pooling's, then the convolution's.
    for relu_layer in [false, true] {
        let mut model = convnet::Sequential::with_seed(8);
        model.add(
            Conv2D::new(4, (3, 3))
                .activation(Relu)
                .input_shape(&[12, 11, 1]),
        );
        model.add(MaxPooling2D::new((2, 2)));
        if relu_layer {
            model.add(Conv2D::new(16, (3, 3)));
            model.add(ActivationLayer::new(Relu));
        } else {
            model.add(Conv2D::new(16, (3, 3)).activation(Relu));
        }
        model.add(MaxPooling2D::new((2, 2)));
        let plan = model.plan_string().unwrap();
        assert_eq!(
            plan.matches("  fused:").count(),
            if fuses { 2 } else { 0 },
            "{plan}"
        );
        check_model_gradients(model, &[12, 11, 1], 4);
    }

    // A Winograd stage (3x3 over 16 channels) that takes an input
    // gradient: it pools as its output transform stores, and undoes the
    // pooling as its output-gradient transform reads, on every CPU.
    let mut model = convnet::Sequential::with_seed(9);
    model.add(Conv2D::new(16, (3, 3)).input_shape(&[11, 12, 2]));
    model.add(Conv2D::new(16, (3, 3)).activation(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    let plan = model.plan_string().unwrap();
    assert!(
        plan.contains("fused: conv2d_1 + max_pooling2d (relu and 2x2 max pooling inside the convolution; backward in one pass too)"),
        "{plan}"
    );
    check_model_gradients(model, &[11, 12, 2], 3);

    // A Winograd layer after a relu one takes over relu's derivative:
    // its input gradient goes on through it as it is written.
    let mut model = convnet::Sequential::with_seed(11);
    model.add(
        Conv2D::new(16, (3, 3))
            .activation(Relu)
            .input_shape(&[9, 10, 2]),
    );
    model.add(Conv2D::new(16, (3, 3)).activation(Tanh));
    model.add(Flatten::new());
    model.add(Dense::new(3));
    check_model_gradients(model, &[9, 10, 2], 3);

    // The same by F(6x6, 3x3): the pooled 3x6 of a 7x13 output are
    // tiled 6x12, in two tiles of 6x6 (128 values, 216 in 4x4 tiles).
    let mut model = convnet::Sequential::with_seed(10);
    model.add(Conv2D::new(16, (3, 3)).input_shape(&[11, 17, 2]));
    model.add(Conv2D::new(16, (3, 3)).activation(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    assert!(
        model
            .plan_string()
            .unwrap()
            .contains("fused: conv2d_1 + max_pooling2d")
    );
    check_model_gradients(model, &[11, 17, 2], 3);
}

/// A model of convolutions (3x3, relu) on 34x34 images, the last pooled
/// or not, then the probed head; with `linear_after`, a linear
/// Activation layer after that convolution (which stops a hand-over).
fn convolutions(
    layers: &[(usize, Padding)],
    channels: usize,
    pooled: bool,
    linear_after: usize,
) -> convnet::Sequential {
    let mut model = convnet::Sequential::with_seed(13);
    for (i, &(filters, padding)) in layers.iter().enumerate() {
        let conv = Conv2D::new(filters, (3, 3))
            .padding(padding)
            .activation(Relu);
        model.add(if i == 0 {
            conv.input_shape(&[34, 34, channels])
        } else {
            conv
        });
        if i == linear_after {
            model.add(ActivationLayer::new(Linear));
        }
    }
    if pooled {
        model.add(MaxPooling2D::new((2, 2)));
    }
    add_probed_head(&mut model);
    model
}

/// The parameter gradients of `handing` (whose plan hands over as
/// `hands_over` says) and of `storing` (which does not there) after a
/// step on the same batch of 5 images: the same but for rounding.
fn compare_hand_over(
    mut handing: convnet::Sequential,
    mut storing: convnet::Sequential,
    hands_over: &str,
) {
    let plan = handing.plan_string().unwrap();
    assert!(plan.contains(hands_over), "{plan}");
    assert!(!storing.plan_string().unwrap().contains(hands_over));
    // 32x32 outputs: two images per chunk of a Winograd stage (three
    // chunks, the last of one image), 16x16 pooled.
    let batch = 5;
    let input = handing.input_shape().to_vec();
    let x = random(&[&[batch], &input[..]].concat(), &mut rng(61));
    let y = ArrayD::from_shape_fn(IxDyn(&[batch, 3]), |i| (i[0] % 3 == i[1]) as u8 as f32);
    let indices: Vec<usize> = (0..batch).collect();
    handing.profile_step(&x, &y, &indices).unwrap();
    storing.profile_step(&x, &y, &indices).unwrap();
    let (a, b) = (handing.params(), storing.params());
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        // A layer handed its output gradient sums its shares over other
        // chunks; every other value is the same sum.
        assert!(b.grad.iter().any(|&g| g != 0.0), "{hands_over}");
        for (g, h) in a.grad.iter().zip(&b.grad) {
            assert!(
                (g - h).abs() <= 1e-5 * (1.0 + h.abs()),
                "{hands_over}: {g} (handed over) vs {h} (stored)"
            );
        }
    }
}

/// A Winograd stage hands its input gradient over chunk by chunk to the
/// convolution before it (the plan says so), and the gradients are those
/// computed from the whole input gradient stored (the same model with a
/// linear Activation layer in between, which stops the hand-over): over
/// several chunks and a short last one, for first layers on each of their
/// paths (16 filters over 3 channels: the filter-vectorised kernels where
/// the CPU has AVX2, else the direct ones; 17 over 3: the direct kernels;
/// 17 over 5: im2col), and for a Winograd layer handed the gradient (its
/// own input gradient computed chunk by chunk too); stages pooling or not.
#[test]
fn handing_the_input_gradient_over_keeps_the_gradients() {
    let same = Padding::Same;
    for pooled in [true, false] {
        for (channels, filters) in [(3, 16), (3, 17), (5, 17)] {
            let layers = [(filters, same), (16, Padding::Valid)];
            compare_hand_over(
                convolutions(&layers, channels, pooled, usize::MAX),
                convolutions(&layers, channels, pooled, 0),
                "hands over: conv2d_1 gives its input gradient to conv2d chunk by chunk",
            );
        }
        let layers = [(16, same), (16, same), (16, same)];
        compare_hand_over(
            convolutions(&layers, 3, pooled, usize::MAX),
            convolutions(&layers, 3, pooled, 1),
            "hands over: conv2d_2 gives its input gradient to conv2d_1 chunk by chunk",
        );
    }
}

/// BatchNormalization's backward pass (batch statistics: the probes run
/// as training), over images and flat features, with and without gamma
/// and beta.
#[test]
fn batch_normalization_gradients() {
    use convnet::layers::BatchNormalization;
    check_training_gradients(&mut BatchNormalization::new(), &[3, 4, 5], 3, 70);
    check_training_gradients(&mut BatchNormalization::new(), &[7], 6, 71);
    let plain = BatchNormalization::new().center(false).scale(false);
    check_training_gradients(&mut plain.clone(), &[2, 2, 3], 4, 72);
}

#[test]
fn global_pooling_gradients() {
    use convnet::layers::{GlobalAveragePooling2D, GlobalMaxPooling2D};
    check_gradients(&mut GlobalAveragePooling2D::new(), &[3, 4, 5], 3, 80);
    check_gradients(&mut GlobalMaxPooling2D::new(), &[3, 4, 5], 3, 81);
    let mut pool = GlobalMaxPooling2D::new();
    pool.build(&[2, 2, 1], &mut rng(0)).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2, 1]), vec![1.0, 4.0, 4.0, -2.0]).unwrap();
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    pool.forward(&x, &mut y);
    assert_eq!(y.as_slice().unwrap(), &[4.0]);
}

#[test]
fn rescaling_and_reshape_gradients() {
    use convnet::layers::{Rescaling, Reshape};
    check_gradients(&mut Rescaling::new(0.5, -1.0), &[2, 3], 3, 90);
    check_gradients(&mut Reshape::new(&[Some(3), None]), &[2, 3, 2], 2, 91);
    let mut reshape = Reshape::new(&[Some(5), None]);
    let error = reshape.build(&[2, 3], &mut rng(0)).unwrap_err().to_string();
    assert!(
        error.contains("cannot make samples of shape [2, 3]"),
        "{error}"
    );
    let mut two_free = Reshape::new(&[None, None]);
    assert!(two_free.build(&[4], &mut rng(0)).is_err());
}

#[test]
fn zero_padding_gradients_and_layout() {
    use convnet::layers::ZeroPadding2D;
    check_gradients(&mut ZeroPadding2D::new(((1, 2), (0, 1))), &[2, 3, 2], 2, 95);
    let mut pad = ZeroPadding2D::new(((1, 0), (0, 1)));
    pad.build(&[1, 2, 1], &mut rng(0)).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 1]), vec![5.0, 6.0]).unwrap();
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    pad.forward(&x, &mut y);
    assert_eq!(y.shape(), &[1, 2, 3, 1]);
    assert_eq!(y.as_slice().unwrap(), &[0.0, 0.0, 0.0, 5.0, 6.0, 0.0]);
}

#[test]
fn average_pooling_gradients_and_same_padding() {
    use convnet::layers::AveragePooling2D;
    check_gradients(&mut AveragePooling2D::new((2, 2)), &[4, 5, 3], 2, 100);
    let same = AveragePooling2D::new((3, 2))
        .strides((2, 1))
        .padding(Padding::Same);
    check_gradients(&mut same.clone(), &[5, 4, 2], 2, 101);
    // Keras averages a border window over the pixels inside the image.
    let mut pool = AveragePooling2D::new((2, 2)).padding(Padding::Same);
    pool.build(&[3, 3, 1], &mut rng(0)).unwrap();
    let x =
        ArrayD::from_shape_vec(IxDyn(&[1, 3, 3, 1]), (1..=9).map(|v| v as f32).collect()).unwrap();
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    pool.forward(&x, &mut y);
    assert_eq!(y.as_slice().unwrap(), &[3.0, 4.5, 7.5, 9.0]);
}
