//! `Sequential::feature_maps`: each layer's output, layer by layer, equal
//! to calling each layer's inference pass in turn, and ending in what
//! `predict` returns (which runs the fused and folded execution plan).

mod common;

use common::{compiled_lenet, random, rng};
use convnet::layers::{ActivationLayer, BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D};
use convnet::{Activation::*, Error, Sequential};
use ndarray::{ArrayD, IxDyn};

/// Every layer's `forward` in turn, from `x`.
fn layer_by_layer(model: &Sequential, x: &ArrayD<f32>) -> Vec<ArrayD<f32>> {
    let mut outputs: Vec<ArrayD<f32>> = Vec::new();
    for layer in model.layers() {
        let mut y = ArrayD::zeros(IxDyn(&[0]));
        layer.forward(outputs.last().unwrap_or(x), &mut y);
        outputs.push(y);
    }
    outputs
}

fn check(model: &Sequential, x: &ArrayD<f32>) {
    let maps = model.feature_maps(x).unwrap();
    let names: Vec<&str> = maps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, model.layer_names());
    let expected = layer_by_layer(model, x);
    for ((name, map), want) in maps.iter().zip(&expected) {
        assert_eq!(map, want, "{name}");
    }
    for ((name, map), layer) in maps.iter().zip(model.layers()) {
        assert_eq!(
            map.shape()[0],
            x.shape()[0],
            "{name} ({})",
            layer.class_name()
        );
    }
    let predicted = model.predict(x).unwrap();
    let last = &maps.last().unwrap().1;
    assert_eq!(last.shape(), predicted.shape());
    for (a, b) in last.iter().zip(&predicted) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn lenet_maps_are_the_layers_outputs_and_end_in_predict() {
    let mut model = compiled_lenet(3);
    model.build().unwrap();
    let x = random(&[3, 28, 28, 1], &mut rng(1)).mapv(f32::abs);
    check(&model, &x);
    let maps = model.feature_maps(&x).unwrap();
    // The convolution's own output exists, though the plan may pool it
    // as it computes it.
    assert_eq!(maps[0].1.shape(), [3, 24, 24, 6]);
    assert!(maps[0].1.iter().all(|&v| v >= 0.0), "relu");
}

#[test]
fn maps_show_layers_the_plan_folds() {
    // Conv2D, BatchNormalization, relu, 2x2 max pooling: at inference the
    // plan folds the normalisation into the convolution and pools inside it.
    let mut model = Sequential::with_seed(5);
    model.add(Conv2D::new(4, (3, 3)).input_shape(&[10, 10, 2]));
    model.add(BatchNormalization::new());
    model.add(ActivationLayer::new(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(3).activation(Softmax));
    model.build().unwrap();
    // Moving statistics away from 0 and 1, so that folding does something.
    for buffer in model.buffers_mut() {
        buffer.value.mapv_inplace(|v| 0.5 + v * 0.75);
    }
    let x = random(&[2, 10, 10, 2], &mut rng(2));
    check(&model, &x);
    let maps = model.feature_maps(&x).unwrap();
    let shapes: Vec<&[usize]> = maps.iter().map(|(_, m)| m.shape()).collect();
    assert_eq!(
        shapes,
        [
            &[2, 8, 8, 4][..],
            &[2, 8, 8, 4],
            &[2, 8, 8, 4],
            &[2, 4, 4, 4],
            &[2, 64],
            &[2, 3]
        ]
    );
}

#[test]
fn feature_maps_refuse_inputs_that_do_not_fit() {
    let mut model = compiled_lenet(3);
    model.build().unwrap();
    let wrong = ArrayD::<f32>::zeros(IxDyn(&[1, 27, 28, 1]));
    let error = model.feature_maps(&wrong).unwrap_err();
    assert!(matches!(error, Error::Shape(_)), "{error}");
    let none = ArrayD::<f32>::zeros(IxDyn(&[0, 28, 28, 1]));
    assert!(model.feature_maps(&none).is_err());
    let unbuilt = Sequential::with_seed(1);
    assert!(unbuilt.feature_maps(&wrong).is_err());
}
