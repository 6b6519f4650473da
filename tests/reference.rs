//! Conv2D and MaxPooling2D forward passes against plain direct loops, on
//! random shapes, strides and paddings; and small cases computed by hand.

mod common;

use common::{forward, random, rng};
use convnet::Activation;
use convnet::kernels::has_avx512;
use convnet::layers::{Conv2D, Dense, Layer, MaxPooling2D, Padding};
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;

/// TensorFlow's padding: output size and padding before.
fn geometry(input: usize, k: usize, stride: usize, padding: Padding) -> (usize, isize) {
    match padding {
        Padding::Valid => ((input - k) / stride + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + k).saturating_sub(input);
            (out, (total / 2) as isize)
        }
    }
}

/// The textbook definition: out[n,y,x,f] = b[f] + Σ in[n, y·s+i-p, x·s+j-p, c] · k[i,j,c,f].
fn direct_conv(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    bias: &[f32],
    strides: (usize, usize),
    padding: Padding,
) -> ArrayD<f32> {
    let (n, h, w, c) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (kh, kw, f) = (kernel.shape()[0], kernel.shape()[1], kernel.shape()[3]);
    let (oh, pt) = geometry(h, kh, strides.0, padding);
    let (ow, pl) = geometry(w, kw, strides.1, padding);
    let mut out = ArrayD::zeros(IxDyn(&[n, oh, ow, f]));
    for b in 0..n {
        for y in 0..oh {
            for xo in 0..ow {
                for fi in 0..f {
                    let mut sum = bias[fi] as f64;
                    for i in 0..kh {
                        for j in 0..kw {
                            let iy = (y * strides.0 + i) as isize - pt;
                            let ix = (xo * strides.1 + j) as isize - pl;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for ci in 0..c {
                                sum += x[[b, iy as usize, ix as usize, ci]] as f64
                                    * kernel[[i, j, ci, fi]] as f64;
                            }
                        }
                    }
                    out[[b, y, xo, fi]] = sum as f32;
                }
            }
        }
    }
    out
}

fn direct_max_pool(
    x: &ArrayD<f32>,
    pool: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> ArrayD<f32> {
    let (n, h, w, c) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oh, pt) = geometry(h, pool.0, strides.0, padding);
    let (ow, pl) = geometry(w, pool.1, strides.1, padding);
    let mut out = ArrayD::from_elem(IxDyn(&[n, oh, ow, c]), f32::NEG_INFINITY);
    for b in 0..n {
        for y in 0..oh {
            for xo in 0..ow {
                for i in 0..pool.0 {
                    for j in 0..pool.1 {
                        let iy = (y * strides.0 + i) as isize - pt;
                        let ix = (xo * strides.1 + j) as isize - pl;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        for ci in 0..c {
                            let v = x[[b, iy as usize, ix as usize, ci]];
                            let o = &mut out[[b, y, xo, ci]];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
    }
    out
}

fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn conv2d_matches_a_direct_loop_on_random_cases() {
    let mut r = rng(1);
    for case in 0..40 {
        let (kh, kw) = (r.random_range(1..6), r.random_range(1..6));
        let padding = if r.random_bool(0.5) {
            Padding::Same
        } else {
            Padding::Valid
        };
        let (h, w) = (kh + r.random_range(0..9), kw + r.random_range(0..9));
        // Every fourth case has 16 or 32 filters (the filter-vectorised path).
        let f = if case % 4 == 3 {
            16 * r.random_range(1..3)
        } else {
            r.random_range(1..5)
        };
        let c = r.random_range(1..4);
        let strides = (r.random_range(1..4), r.random_range(1..4));
        let batch = r.random_range(1..4);
        // Every other case with relu (which the fast kernels fuse into their stores).
        let relu = case % 2 == 0;
        let activation = if relu {
            Activation::Relu
        } else {
            Activation::Linear
        };
        let mut layer = Conv2D::new(f, (kh, kw))
            .strides(strides)
            .padding(padding)
            .activation(activation);
        layer.build(&[h, w, c], &mut rng(case)).unwrap();
        let bias = random(&[f], &mut r);
        layer.params_mut()[1].value.assign(&bias);
        let x = random(&[batch, h, w, c], &mut r);
        let kernel = layer.params()[0].value.clone();
        let mut want = direct_conv(&x, &kernel, bias.as_slice().unwrap(), strides, padding);
        if relu {
            want.mapv_inplace(|v| v.max(0.0));
        }
        let what = format!(
            "case {case}: {h}x{w}x{c}, kernel {kh}x{kw}x{f}, strides {strides:?}, {padding:?}"
        );
        assert_close(&forward(&mut layer, &x), &want, &what);
    }
}

#[test]
fn conv2d_matches_a_direct_loop_on_lenet_shapes() {
    // LeNet's two layers (whole register blocks of the fast kernels), with relu.
    let mut r = rng(7);
    for (case, (f, c, size)) in [(6, 1, 28), (16, 6, 12), (6, 1, 21), (16, 6, 13)]
        .into_iter()
        .enumerate()
    {
        let mut layer = Conv2D::new(f, (5, 5)).activation(Activation::Relu);
        layer
            .build(&[size, size, c], &mut rng(case as u64))
            .unwrap();
        let bias = random(&[f], &mut r);
        layer.params_mut()[1].value.assign(&bias);
        let x = random(&[3, size, size, c], &mut r);
        let kernel = layer.params()[0].value.clone();
        let mut want = direct_conv(
            &x,
            &kernel,
            bias.as_slice().unwrap(),
            (1, 1),
            Padding::Valid,
        );
        want.mapv_inplace(|v| v.max(0.0));
        assert_close(
            &forward(&mut layer, &x),
            &want,
            &format!("{size}x{size}x{c}, {f} filters"),
        );
    }
}

#[test]
fn conv2d_matches_a_direct_loop_on_a_large_strided_layer() {
    // AlexNet-style 11x11/4 over RGB: an image has more im2col rows than
    // one cache-sized block (361 of 363 values), so both passes make
    // and multiply them a block at a time, across the padded border too.
    let mut r = rng(8);
    for padding in [Padding::Same, Padding::Valid] {
        let mut layer = Conv2D::new(8, (11, 11))
            .strides((4, 4))
            .padding(padding)
            .activation(Activation::Relu);
        layer.build(&[95, 91, 3], &mut rng(9)).unwrap();
        let bias = random(&[8], &mut r);
        layer.params_mut()[1].value.assign(&bias);
        let x = random(&[2, 95, 91, 3], &mut r);
        let kernel = layer.params()[0].value.clone();
        let mut want = direct_conv(&x, &kernel, bias.as_slice().unwrap(), (4, 4), padding);
        want.mapv_inplace(|v| v.max(0.0));
        assert!(want.shape()[1] * want.shape()[2] > 361, "several blocks");
        assert_close(&forward(&mut layer, &x), &want, &format!("{padding:?}"));
        let mut y = ArrayD::zeros(IxDyn(&[0]));
        layer.forward_train(&x, &mut y, Default::default());
        assert_close(&y, &want, &format!("{padding:?}, training"));
        // The kernel gradient reads the rows that training kept, block by
        // block: against its definition, Σ x · dy over every window.
        let mut linear = Conv2D::new(8, (11, 11)).strides((4, 4)).padding(padding);
        linear.build(&[95, 91, 3], &mut rng(9)).unwrap();
        linear.forward_train(&x, &mut y, Default::default());
        let mut dy = random(y.shape(), &mut r);
        let want_dy = dy.clone();
        linear.backward(&x, &y, &mut dy, None);
        let d_kernel = &linear.params()[0].grad;
        let want = direct_kernel_grad(&x, &want_dy, 11, 4, padding);
        assert_close(d_kernel, &want, &format!("{padding:?}, kernel gradient"));
    }
}

/// `dk[i,j,c,f] = Σ x[n, y·s+i-p, x·s+j-p, c] · dy[n,y,x,f]`, square
/// kernel of side `k` and stride `s`.
fn direct_kernel_grad(
    x: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    k: usize,
    s: usize,
    padding: Padding,
) -> ArrayD<f32> {
    let (n, h, w, c) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oh, ow, f) = (dy.shape()[1], dy.shape()[2], dy.shape()[3]);
    let (_, pt) = geometry(h, k, s, padding);
    let (_, pl) = geometry(w, k, s, padding);
    let mut dk = ArrayD::<f64>::zeros(IxDyn(&[k, k, c, f]));
    for b in 0..n {
        for y in 0..oh {
            for xo in 0..ow {
                for i in 0..k {
                    for j in 0..k {
                        let iy = (y * s + i) as isize - pt;
                        let ix = (xo * s + j) as isize - pl;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        for ci in 0..c {
                            let xv = x[[b, iy as usize, ix as usize, ci]] as f64;
                            for fi in 0..f {
                                dk[[i, j, ci, fi]] += xv * dy[[b, y, xo, fi]] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    dk.mapv(|v| v as f32)
}

/// Whether a layer holds a kernel kept for inference (its Debug output
/// says so).
fn holds_kept_kernel(layer: &dyn std::fmt::Debug) -> bool {
    format!("{layer:?}").contains("kept: true")
}

/// Changes one value of the layer's kernel by the smallest step there is.
fn nudge_one_kernel_value(layer: &mut dyn Layer) {
    let mut params = layer.params_mut();
    let value = &mut params[0].value.as_slice_mut().unwrap()[5];
    *value = f32::from_bits(value.to_bits() + 1);
}

#[test]
fn a_winograd_layer_predicts_with_its_current_weights() {
    // Inference keeps the transformed kernel between batches: it must
    // follow every change of the weights, however made.
    let mut r = rng(10);
    let mut layer = Conv2D::new(16, (3, 3)).padding(Padding::Same);
    layer.build(&[9, 9, 16], &mut rng(11)).unwrap();
    let x = random(&[2, 9, 9, 16], &mut r);
    let direct = |layer: &Conv2D| {
        let kernel = layer.params()[0].value.clone();
        let bias = layer.params()[1].value.clone();
        direct_conv(&x, &kernel, bias.as_slice().unwrap(), (1, 1), Padding::Same)
    };
    let first = forward(&mut layer, &x);
    assert_close(&first, &direct(&layer), "first batch");
    assert!(
        holds_kept_kernel(&layer),
        "predicting keeps the transformed kernel"
    );
    assert_eq!(forward(&mut layer, &x), first, "the kept kernel, same bits");
    layer.params_mut()[0].value.mapv_inplace(|v| -2.0 * v);
    assert_close(&forward(&mut layer, &x), &direct(&layer), "new weights");
    nudge_one_kernel_value(&mut layer);
    let mut fresh = layer.clone();
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    fresh.forward_train(&x, &mut y, Default::default());
    assert_eq!(
        forward(&mut layer, &x),
        y,
        "as a fresh transform of the kernel"
    );
    layer.forward_train(&x, &mut y, Default::default());
    assert!(!holds_kept_kernel(&layer), "training drops it");
}

#[test]
fn a_dense_layer_predicts_with_its_current_weights() {
    // A few samples at a time, inference keeps the packed kernel between
    // batches: it must follow every change of the weights, however made.
    // 16 x 600 x 300 multiply-adds: enough to run on several threads.
    let (batch, inputs, units) = (16, 600, 300);
    let mut r = rng(12);
    let mut layer = Dense::new(units);
    layer.build(&[inputs], &mut rng(13)).unwrap();
    layer.params_mut()[1].value = random(&[units], &mut r);
    let x = random(&[batch, inputs], &mut r);
    let direct = |layer: &Dense| {
        let (kernel, bias) = (&layer.params()[0].value, &layer.params()[1].value);
        ArrayD::from_shape_fn(IxDyn(&[batch, units]), |at| {
            let (b, u) = (at[0], at[1]);
            let sum: f64 = (0..inputs)
                .map(|i| x[[b, i]] as f64 * kernel[[i, u]] as f64)
                .sum();
            (sum + bias[u] as f64) as f32
        })
    };
    let training = |layer: &Dense| {
        let mut fresh = layer.clone();
        let mut y = ArrayD::zeros(IxDyn(&[0]));
        fresh.forward_train(&x, &mut y, Default::default());
        y
    };
    let first = forward(&mut layer, &x);
    assert_close(&first, &direct(&layer), "first batch");
    assert_eq!(first, training(&layer), "as the unpacked kernel, same bits");
    assert_eq!(forward(&mut layer, &x), first, "the kept kernel, same bits");
    layer.params_mut()[0].value.mapv_inplace(|v| -2.0 * v);
    assert_close(&forward(&mut layer, &x), &direct(&layer), "new weights");
    nudge_one_kernel_value(&mut layer);
    assert_eq!(forward(&mut layer, &x), training(&layer), "one ulp changed");
    // Training frees the kept kernel (the weights are about to change).
    let holds_one = |layer: &Dense| holds_kept_kernel(layer);
    if has_avx512() {
        assert!(holds_one(&layer), "predicting keeps a packed kernel");
    } else {
        eprintln!("SKIPPED (part): no AVX-512, so no packed kernel to keep");
    }
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    layer.forward_train(&x, &mut y, Default::default());
    assert!(!holds_one(&layer), "training drops it");
    // An empty batch: an empty output, nothing packed.
    let empty = forward(&mut layer, &ArrayD::zeros(IxDyn(&[0, inputs])));
    assert_eq!(empty.shape(), &[0, units]);
    assert!(!holds_one(&layer), "nothing to keep for no samples");
}

#[test]
fn max_pooling_matches_a_direct_loop_on_random_cases() {
    let mut r = rng(2);
    for case in 0..40 {
        let pool = (r.random_range(1..4), r.random_range(1..4));
        let strides = (r.random_range(1..4), r.random_range(1..4));
        let padding = if r.random_bool(0.5) {
            Padding::Same
        } else {
            Padding::Valid
        };
        let (h, w, c) = (
            pool.0 + r.random_range(0..7),
            pool.1 + r.random_range(0..7),
            r.random_range(1..4),
        );
        let mut layer = MaxPooling2D::new(pool).strides(strides).padding(padding);
        layer.build(&[h, w, c], &mut rng(0)).unwrap();
        let x = random(&[2, h, w, c], &mut r);
        let what =
            format!("case {case}: {h}x{w}x{c}, pool {pool:?}, strides {strides:?}, {padding:?}");
        assert_close(
            &forward(&mut layer, &x),
            &direct_max_pool(&x, pool, strides, padding),
            &what,
        );
    }
}

#[test]
fn conv2d_by_hand() {
    // A 3x3 image 1..9 and the kernel [[1, 0], [0, -1]]: each output is
    // top-left minus bottom-right of its window, i.e. always -4; bias 0.5.
    let mut layer = Conv2D::new(1, (2, 2));
    layer.build(&[3, 3, 1], &mut rng(0)).unwrap();
    layer.params_mut()[0]
        .value
        .assign(&ArrayD::from_shape_vec(IxDyn(&[2, 2, 1, 1]), vec![1.0, 0.0, 0.0, -1.0]).unwrap());
    layer.params_mut()[1].value.fill(0.5);
    let x =
        ArrayD::from_shape_vec(IxDyn(&[1, 3, 3, 1]), (1..=9).map(|v| v as f32).collect()).unwrap();
    let y = forward(&mut layer, &x);
    assert_eq!(y.shape(), &[1, 2, 2, 1]);
    assert_eq!(y.as_slice().unwrap(), &[-3.5, -3.5, -3.5, -3.5]);

    // Same padding, 3x3 box kernel: corners see 4 pixels, centre all 9.
    let mut layer = Conv2D::new(1, (3, 3))
        .padding(Padding::Same)
        .use_bias(false);
    layer.build(&[3, 3, 1], &mut rng(0)).unwrap();
    layer.params_mut()[0].value.fill(1.0);
    let y = forward(&mut layer, &x);
    assert_eq!(
        y.as_slice().unwrap(),
        &[12., 21., 16., 27., 45., 33., 24., 39., 28.]
    );
}

#[test]
fn max_pooling_windows_of_nan_or_minus_infinity_stay_in_the_image() {
    // Windows clipped by "same" padding whose values never beat -inf: the
    // winner must still be a pixel of the image, and its gradient land there.
    for fill in [f32::NAN, f32::NEG_INFINITY] {
        let mut pool = MaxPooling2D::new((3, 3))
            .strides((1, 1))
            .padding(Padding::Same);
        let out = pool.build(&[4, 4, 1], &mut rng(0)).unwrap();
        let x = ArrayD::from_elem(IxDyn(&[1, 4, 4, 1]), fill);
        let mut y = ArrayD::zeros(IxDyn(&[0]));
        pool.forward_train(&x, &mut y, convnet::layers::TrainingStep::default());
        let mut dy = ArrayD::from_elem(IxDyn(&[1, out[0], out[1], out[2]]), 1.0);
        let mut dx = ArrayD::zeros(IxDyn(&[0]));
        pool.backward(&x, &y, &mut dy, Some(&mut dx));
        assert_eq!(
            dx.sum(),
            16.0,
            "every window's gradient reaches the image ({fill})"
        );
    }
}

#[test]
fn max_pooling_by_hand() {
    let x = ArrayD::from_shape_vec(
        IxDyn(&[1, 4, 4, 1]),
        vec![
            1., 5., 2., 0., 3., 4., 8., 1., 0., 0., 1., 2., 9., 0., 3., 7.,
        ],
    )
    .unwrap();
    let mut layer = MaxPooling2D::new((2, 2));
    layer.build(&[4, 4, 1], &mut rng(0)).unwrap();
    assert_eq!(
        forward(&mut layer, &x).as_slice().unwrap(),
        &[5., 8., 9., 7.]
    );
}

/// On AVX-512 CPUs a Sequential runs a Conv2D with relu and the 2x2
/// max pooling after it as one pass that never stores the convolution's
/// output: its predictions must be exactly those of the two layers run one
/// after the other (on other CPUs both are the plain layers).
#[test]
fn conv_relu_pool_pair_in_a_model_matches_its_layers_one_by_one() {
    let mut r = rng(11);
    // LeNet's two stages, odd output sizes (a row left out by the pool),
    // narrow and short rows, same padding, 3-wide kernels, 1 to 8 filters
    // of grey images and 16 or 32 of any.
    let cases = [
        (6, (5, 5), (28, 28, 1), Padding::Valid),
        (6, (5, 5), (14, 27, 1), Padding::Valid),
        (8, (3, 3), (9, 30, 1), Padding::Same),
        (1, (3, 5), (7, 8, 1), Padding::Valid),
        (3, (2, 3), (6, 6, 1), Padding::Valid),
        (16, (5, 5), (12, 12, 6), Padding::Valid),
        (16, (5, 5), (15, 26, 2), Padding::Valid),
        (32, (3, 3), (9, 11, 3), Padding::Same),
        (16, (4, 3), (7, 5, 1), Padding::Valid),
    ];
    for (case, (filters, kernel, (h, w, c), padding)) in cases.into_iter().enumerate() {
        let conv = Conv2D::new(filters, kernel)
            .padding(padding)
            .activation(Activation::Relu)
            .input_shape(&[h, w, c]);
        let mut model = convnet::Sequential::with_seed(case as u64);
        model.add(conv.clone());
        model.add(MaxPooling2D::new((2, 2)));
        model.build().unwrap();
        // The same weights in stand-alone layers, with a bias that is not zero.
        let bias = random(&[filters], &mut r);
        model.params_mut()[1].value.assign(&bias);
        let (mut conv, mut pool) = (conv, MaxPooling2D::new((2, 2)));
        let shape = conv.build(&[h, w, c], &mut rng(0)).unwrap();
        pool.build(&shape, &mut rng(0)).unwrap();
        let weights: Vec<_> = model.params().iter().map(|p| p.value.clone()).collect();
        for (p, w) in conv.params_mut().into_iter().zip(weights) {
            p.value = w;
        }
        let x = random(&[5, h, w, c], &mut r);
        let want = forward(&mut pool, &forward(&mut conv, &x));
        let got = model.predict(&x).unwrap();
        let what = format!("case {case}: {h}x{w}x{c}, {filters} filters {kernel:?}");
        assert_eq!(got, want, "{what}");
    }
}

/// `kernel` with `rate - 1` zero taps inserted between its taps: the
/// undilated kernel a dilated convolution is.
fn zero_inserted(kernel: &ArrayD<f32>, (rh, rw): (usize, usize)) -> ArrayD<f32> {
    let &[kh, kw, c, f] = kernel.shape() else {
        panic!("a 4-D kernel")
    };
    let shape = [(kh - 1) * rh + 1, (kw - 1) * rw + 1, c, f];
    let mut spread = ArrayD::zeros(IxDyn(&shape));
    for ((i, j, ci, fi), &v) in kernel
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        spread[[i * rh, j * rw, ci, fi]] = v;
    }
    spread
}

#[test]
fn dilated_conv2d_is_conv2d_with_a_zero_inserted_kernel() {
    let mut r = rng(90);
    let cases = [
        ((3, 3), (2, 2), Padding::Valid, [9, 8, 2], 3),
        ((2, 3), (3, 1), Padding::Same, [7, 6, 3], 16),
        ((3, 2), (1, 2), Padding::Same, [5, 8, 1], 5),
    ];
    for (case, (kernel_size, rate, padding, shape, filters)) in cases.into_iter().enumerate() {
        let mut dilated = Conv2D::new(filters, kernel_size)
            .dilation_rate(rate)
            .padding(padding);
        dilated.build(&shape, &mut rng(case as u64)).unwrap();
        let bias = random(&[filters], &mut r);
        dilated.params_mut()[1].value.assign(&bias);
        let x = random(&[2, shape[0], shape[1], shape[2]], &mut r);
        let kernel = zero_inserted(&dilated.params()[0].value, rate);
        let want = direct_conv(&x, &kernel, bias.as_slice().unwrap(), (1, 1), padding);
        assert_close(&forward(&mut dilated, &x), &want, &format!("case {case}"));
    }
}
