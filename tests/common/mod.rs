//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(feature = "cli")]
pub mod cli;

use convnet::initializers::Rng;
use convnet::layers::Layer;
use convnet::optimizers::Adam;
use convnet::{Loss, Metric, Sequential};
use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};

pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// LeNet-5 with the reference recipe's loss, optimizer and metric.
pub fn compiled_lenet(seed: u64) -> Sequential {
    let mut model = convnet::models::lenet(seed);
    model
        .compile(
            Loss::CategoricalCrossentropy,
            Adam::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
    model
}

/// An array of `shape` with values uniform in `[-1, 1)`.
pub fn random(shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    let len = shape.iter().product();
    let values = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

/// The layer's output on `x` (inference mode).
pub fn forward(layer: &mut dyn Layer, x: &ArrayD<f32>) -> ArrayD<f32> {
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    layer.forward(x, &mut y);
    y
}

/// `Σ y · weights` in f64: a scalar "loss" whose gradient with respect to
/// the layer output is `weights`.
fn weighted_sum(y: &ArrayD<f32>, weights: &ArrayD<f32>) -> f64 {
    y.iter()
        .zip(weights)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Whether an analytic derivative agrees with the central difference, or
/// (at a kink of relu or max pooling, where the two sides differ) with one
/// of the one-sided differences.
pub fn agrees(analytic: f64, plus: f64, minus: f64, centre: f64, h: f64, tolerance: f64) -> bool {
    let close = |numeric: f64| (analytic - numeric).abs() <= tolerance * (1.0 + numeric.abs());
    close((plus - minus) / (2.0 * h)) || close((plus - centre) / h) || close((centre - minus) / h)
}

/// Checks a layer's input and parameter gradients against finite
/// differences of `Σ output · r` for a random `r`, the probes run as
/// inference (which must agree with training).
pub fn check_gradients(layer: &mut dyn Layer, sample_shape: &[usize], batch: usize, seed: u64) {
    check_gradients_of(layer, sample_shape, (batch, seed), false);
}

/// [`check_gradients`] for a layer whose training output is not its
/// inference output (BatchNormalization): the probes run as training.
pub fn check_training_gradients(
    layer: &mut dyn Layer,
    sample_shape: &[usize],
    batch: usize,
    seed: u64,
) {
    check_gradients_of(layer, sample_shape, (batch, seed), true);
}

fn check_gradients_of(
    layer: &mut dyn Layer,
    sample_shape: &[usize],
    (batch, seed): (usize, u64),
    training_probes: bool,
) {
    let probe = |layer: &mut dyn Layer, x: &ArrayD<f32>| {
        if training_probes {
            let mut y = ArrayD::zeros(IxDyn(&[0]));
            layer.forward_train(x, &mut y, convnet::layers::TrainingStep::default());
            y
        } else {
            forward(layer, x)
        }
    };
    let mut rng = rng(seed);
    let out_shape = layer.build(sample_shape, &mut rng).expect("layer builds");
    let mut x_shape = vec![batch];
    x_shape.extend_from_slice(sample_shape);
    let mut y_shape = vec![batch];
    y_shape.extend_from_slice(&out_shape);
    let x = random(&x_shape, &mut rng);
    let r = random(&y_shape, &mut rng);

    // The pass that backward follows must be a training one (layers keep
    // what backward needs only then); the probes below run as inference.
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    layer.forward_train(&x, &mut y, convnet::layers::TrainingStep::default());
    assert_eq!(y.shape(), &y_shape[..], "output shape");
    // Inference may use another kernel (another summation order): agree closely.
    let inference = if training_probes {
        y.clone()
    } else {
        forward(layer, &x)
    };
    for (a, b) in y.iter().zip(inference.iter()) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
            "training and inference outputs differ: {a} vs {b}"
        );
    }
    let mut dy = r.clone();
    let mut dx = ArrayD::zeros(IxDyn(&[0]));
    layer.backward(&x, &y, &mut dy, Some(&mut dx));
    assert_eq!(dx.shape(), x.shape(), "input gradient shape");
    let centre = weighted_sum(&y, &r);
    let h = 1e-2;
    let tolerance = 2e-2;

    let mut failures = Vec::new();
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += h as f32;
        let plus = weighted_sum(&probe(layer, &xp), &r);
        xp.as_slice_mut().unwrap()[i] -= 2.0 * h as f32;
        let minus = weighted_sum(&probe(layer, &xp), &r);
        let analytic = dx.as_slice().unwrap()[i] as f64;
        if !agrees(analytic, plus, minus, centre, h, tolerance) {
            failures.push(format!(
                "input[{i}]: analytic {analytic}, numeric {}",
                (plus - minus) / (2.0 * h)
            ));
        }
    }

    let grads: Vec<ArrayD<f32>> = layer.params().iter().map(|p| p.grad.clone()).collect();
    for (p, grad) in grads.iter().enumerate() {
        for i in 0..grad.len() {
            let nudge = |layer: &mut dyn Layer, by: f32| {
                layer.params_mut()[p].value.as_slice_mut().unwrap()[i] += by;
            };
            nudge(layer, h as f32);
            let plus = weighted_sum(&probe(layer, &x), &r);
            nudge(layer, -2.0 * h as f32);
            let minus = weighted_sum(&probe(layer, &x), &r);
            nudge(layer, h as f32);
            let analytic = grad.as_slice().unwrap()[i] as f64;
            if !agrees(analytic, plus, minus, centre, h, tolerance) {
                failures.push(format!(
                    "param {p}[{i}]: analytic {analytic}, numeric {}",
                    (plus - minus) / (2.0 * h)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} gradient(s) of {} disagree with finite differences:\n{}",
        failures.len(),
        layer.class_name(),
        failures.join("\n")
    );
}
