//! End to end: LeNet learns MNIST; the model API checks its inputs; the same
//! seed gives the same run.

mod common;

use common::compiled_lenet;
use convnet::data::Rescaled;
use convnet::datasets::{mnist, to_categorical};
use convnet::layers::{Conv2D, Dense, Flatten};
use convnet::optimizers::{Adam, RMSprop, SGD};
use convnet::{Activation::*, Error, Fit, History, Loss, Metric, Sequential};
use ndarray::{Array2, Array4, Axis, s};

struct Subset {
    train_x: Array4<u8>,
    train_y: Array2<f32>,
    test_x: Array4<u8>,
    test_y: Array2<f32>,
}

fn mnist_subset(train: usize, test: usize) -> Subset {
    let ((train_x, train_y), (test_x, test_y)) =
        mnist::load_data().expect("MNIST ships in data/mnist");
    Subset {
        train_x: train_x
            .slice(s![..train, .., ..])
            .to_owned()
            .insert_axis(Axis(3)),
        train_y: to_categorical(&train_y.slice(s![..train]), 10).unwrap(),
        test_x: test_x
            .slice(s![..test, .., ..])
            .to_owned()
            .insert_axis(Axis(3)),
        test_y: to_categorical(&test_y.slice(s![..test]), 10).unwrap(),
    }
}

fn train_lenet(data: &Subset, seed: u64, epochs: usize) -> (History, f64) {
    let mut model = compiled_lenet(seed);
    let train_x = Rescaled::new(&data.train_x, 1.0 / 255.0);
    let test_x = Rescaled::new(&data.test_x, 1.0 / 255.0);
    let options = Fit {
        batch_size: 32,
        epochs,
        verbose: 0,
        validation_data: Some((&test_x, &data.test_y)),
        ..Fit::default()
    };
    let history = model.fit(&train_x, &data.train_y, options).unwrap();
    let accuracy = model
        .evaluate(&test_x, &data.test_y)
        .unwrap()
        .accuracy()
        .unwrap();
    (history, accuracy)
}

#[test]
fn lenet_learns_mnist_from_2000_images() {
    let data = mnist_subset(2000, 1000);
    let (history, accuracy) = train_lenet(&data, 1, 5);
    assert!(
        accuracy >= 0.90,
        "test accuracy {accuracy} after 5 epochs on 2,000 images"
    );
    let loss = &history.history["loss"];
    assert!(
        loss.last() < loss.first(),
        "training loss did not fall: {loss:?}"
    );
    assert_eq!(
        history.history["val_accuracy"].last().copied(),
        Some(accuracy)
    );
    assert_eq!(history.epoch_seconds.len(), 5);
}

#[test]
fn the_same_seed_gives_the_same_run_bit_for_bit() {
    let data = mnist_subset(600, 200);
    let (a, acc_a) = train_lenet(&data, 7, 1);
    let (b, acc_b) = train_lenet(&data, 7, 1);
    let (c, _) = train_lenet(&data, 8, 1);
    assert_eq!(a.history, b.history);
    assert_eq!(acc_a, acc_b);
    assert_ne!(a.history["loss"], c.history["loss"]);
}

/// `fit` trains on two halves of each batch at once (the model and a
/// twin, see `Sequential::fit`), with one thread one after the other: the
/// run is the same bit for bit.
#[test]
fn a_run_does_not_depend_on_the_thread_count() {
    let data = mnist_subset(600, 200);
    let in_pool = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| train_lenet(&data, 7, 1))
    };
    let ((one, acc_one), (two, acc_two)) = (in_pool(1), in_pool(2));
    assert_eq!(one.history, two.history);
    assert_eq!(acc_one, acc_two);
}

#[test]
fn predict_returns_probabilities_matching_evaluate() {
    let data = mnist_subset(500, 300);
    let model = compiled_lenet(3);
    let x = data.test_x.mapv(|v| v as f32 / 255.0);
    let p = model.predict(&x).unwrap();
    assert_eq!(p.shape(), &[300, 10]);
    for row in p.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-4);
    }
    let p = p.into_dimensionality::<ndarray::Ix2>().unwrap();
    let correct = p
        .rows()
        .into_iter()
        .zip(data.test_y.rows())
        .filter(|(p, y)| {
            convnet::metrics::argmax(p.as_slice().unwrap())
                == convnet::metrics::argmax(y.as_slice().unwrap())
        })
        .count();
    let scores = model.evaluate(&x, &data.test_y).unwrap();
    assert_eq!(scores.accuracy(), Some(correct as f64 / 300.0));
    // Batch size changes nothing.
    let again = model.predict_with_batch_size(&x, 7).unwrap();
    assert_eq!(again.into_dimensionality::<ndarray::Ix2>().unwrap(), p);
}

#[test]
fn every_optimizer_and_loss_reduces_the_loss() {
    let data = mnist_subset(512, 10);
    let x = Rescaled::new(&data.train_x, 1.0 / 255.0);
    let labels: Array2<f32> = data
        .train_y
        .map_axis(Axis(1), |r| {
            convnet::metrics::argmax(r.as_slice().unwrap()) as f32
        })
        .insert_axis(Axis(1));
    let cases: Vec<(Loss, Box<dyn convnet::optimizers::Optimizer>, &Array2<f32>)> = vec![
        (
            Loss::CategoricalCrossentropy,
            Box::new(SGD::new(0.1).momentum(0.9)),
            &data.train_y,
        ),
        (
            Loss::CategoricalCrossentropy,
            Box::new(SGD::new(0.1).momentum(0.9).nesterov(true)),
            &data.train_y,
        ),
        (
            Loss::CategoricalCrossentropy,
            Box::new(RMSprop::default()),
            &data.train_y,
        ),
        (
            Loss::SparseCategoricalCrossentropy,
            Box::new(Adam::default()),
            &labels,
        ),
        (
            Loss::MeanSquaredError,
            Box::new(Adam::default()),
            &data.train_y,
        ),
    ];
    for (loss, optimizer, y) in cases {
        let name = optimizer.name();
        let mut model = Sequential::with_seed(5);
        model.add(
            Conv2D::new(4, (5, 5))
                .strides((2, 2))
                .activation(Relu)
                .input_shape(&[28, 28, 1]),
        );
        model.add(Flatten::new());
        model.add(Dense::new(10).activation(Softmax));
        model
            .compile_boxed(loss, optimizer, &[Metric::Accuracy])
            .unwrap();
        let history = model
            .fit(
                &x,
                y,
                Fit {
                    batch_size: 32,
                    epochs: 3,
                    verbose: 0,
                    ..Fit::default()
                },
            )
            .unwrap();
        let losses = &history.history["loss"];
        assert!(
            losses[2] < losses[0] * 0.8,
            "{loss:?} with {name}: {losses:?}"
        );
        assert!(
            history.history["accuracy"][2] > 0.5,
            "{loss:?} with {name}: {:?}",
            history.history
        );
    }
}

#[test]
fn fit_rejects_inputs_that_do_not_fit() {
    let mut model = compiled_lenet(1);
    let x = Array4::<f32>::zeros((10, 28, 28, 1));
    let y = Array2::<f32>::zeros((9, 10));
    let err = model.fit(&x, &y, Fit::default()).unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    assert!(err.to_string().contains("10 samples but y has 9"), "{err}");

    let flat = ndarray::Array3::<f32>::zeros((10, 28, 28));
    let err = model
        .fit(&flat, &Array2::<f32>::zeros((10, 10)), Fit::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("[28, 28]") && err.to_string().contains("[28, 28, 1]"),
        "{err}"
    );

    let err = model
        .fit(&x, &Array2::<f32>::zeros((10, 3)), Fit::default())
        .unwrap_err();
    assert!(err.to_string().contains("target"), "{err}");

    let err = model
        .fit(
            &x,
            &Array2::<f32>::zeros((10, 10)),
            Fit {
                batch_size: 0,
                ..Fit::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

#[test]
fn models_must_be_built_from_an_input_shape_and_compiled_before_fit() {
    let mut model = Sequential::with_seed(1);
    model.add(Dense::new(3));
    assert!(
        model
            .build()
            .unwrap_err()
            .to_string()
            .contains("input_shape")
    );

    let mut model = Sequential::with_seed(1);
    model.add(Dense::new(3).input_shape(&[4]));
    let x = Array2::<f32>::zeros((2, 4));
    let err = model
        .fit(&x, &Array2::<f32>::zeros((2, 3)), Fit::default())
        .unwrap_err();
    assert!(err.to_string().contains("compile"), "{err}");

    let mut model = Sequential::with_seed(1);
    model.add(Dense::new(3).input_shape(&[4, 4]));
    let err = model.build().unwrap_err();
    assert!(err.to_string().contains("Flatten"), "{err}");
}

#[test]
fn a_diverging_run_stops_with_an_error() {
    let mut model = Sequential::with_seed(1);
    model.add(Dense::new(1).input_shape(&[1]));
    model
        .compile(Loss::MeanSquaredError, SGD::new(10.0), &[])
        .unwrap();
    let x = Array2::from_shape_fn((64, 1), |(i, _)| i as f32);
    let y = x.mapv(|v| 3.0 * v);
    let err = model
        .fit(
            &x,
            &y,
            Fit {
                batch_size: 8,
                epochs: 20,
                verbose: 0,
                ..Fit::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("learning rate"), "{err}");
}

#[test]
fn summary_matches_keras() {
    let mut model = convnet::models::lenet(1);
    let table = model.summary_string().unwrap();
    for line in [
        "│ conv2d (Conv2D)                 │ (None, 24, 24, 6)      │           156 │",
        "│ max_pooling2d_1 (MaxPooling2D)  │ (None, 4, 4, 16)       │             0 │",
        "│ dense_2 (Dense)                 │ (None, 10)             │           850 │",
        " Total params: 44,426 (173.54 KB)",
    ] {
        assert!(table.contains(line), "missing {line:?} in\n{table}");
    }
}

#[test]
fn weights_survive_a_save_and_load() {
    let data = mnist_subset(300, 100);
    let x = data.test_x.mapv(|v| v as f32 / 255.0);
    let mut trained = compiled_lenet(1);
    let train_x = Rescaled::new(&data.train_x, 1.0 / 255.0);
    trained
        .fit(
            &train_x,
            &data.train_y,
            Fit {
                epochs: 1,
                verbose: 0,
                ..Fit::default()
            },
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    trained.save_weights(&path).unwrap();

    let mut fresh = compiled_lenet(99);
    assert_ne!(fresh.predict(&x).unwrap(), trained.predict(&x).unwrap());
    fresh.load_weights(&path).unwrap();
    assert_eq!(fresh.predict(&x).unwrap(), trained.predict(&x).unwrap());

    // A model with other layers refuses the file and keeps its own weights.
    let mut other = Sequential::with_seed(1);
    other.add(Dense::new(10).input_shape(&[784]));
    other.build().unwrap();
    let before: Vec<_> = other.params().iter().map(|p| p.value.clone()).collect();
    assert!(other.load_weights(&path).is_err());
    let after: Vec<_> = other.params().iter().map(|p| p.value.clone()).collect();
    assert_eq!(before, after);
}

/// Points of the plane, labelled 1 above the line y = x / 2 (a second
/// output: 1 right of the y axis): a tiny binary, two-label problem.
fn binary_points(n: usize) -> (Array2<f32>, Array2<f32>) {
    let mut rng = common::rng(11);
    let x = common::random(&[n, 2], &mut rng)
        .into_dimensionality()
        .unwrap();
    let y = Array2::from_shape_fn((n, 2), |(i, j)| {
        let (a, b): (f32, f32) = (x[[i, 0]], x[[i, 1]]);
        (if j == 0 { b > a / 2.0 } else { a > 0.0 }) as u8 as f32
    });
    (x, y)
}

/// Binary cross-entropy trains a sigmoid model (fused) and a linear one
/// (from logits) with AdamW and clipping; accuracy is binary accuracy.
#[test]
fn binary_cross_entropy_learns_a_two_label_problem() {
    let (x, y) = binary_points(256);
    let bce = Loss::BinaryCrossentropy;
    let cases: [(
        Loss,
        convnet::Activation,
        Box<dyn convnet::optimizers::Optimizer>,
    ); 3] = [
        (bce, Sigmoid, Box::new(Adam::new(0.02))),
        (
            bce.label_smoothing(0.05).unwrap(),
            Sigmoid,
            Box::new(convnet::optimizers::AdamW::new(0.02).clipnorm(1.0).unwrap()),
        ),
        (
            bce.from_logits(true).unwrap(),
            Linear,
            Box::new(SGD::new(0.5).momentum(0.9).clipvalue(0.5).unwrap()),
        ),
    ];
    for (loss, activation, optimizer) in cases {
        let mut model = Sequential::with_seed(2);
        model.add(Dense::new(8).activation(Tanh).input_shape(&[2]));
        model.add(Dense::new(2).activation(activation));
        model
            .compile_boxed(loss, optimizer, &[Metric::Accuracy])
            .unwrap();
        let fit = Fit {
            batch_size: 32,
            epochs: 15,
            verbose: 0,
            ..Fit::default()
        };
        let history = model.fit(&x, &y, fit).unwrap();
        let (losses, accuracy) = (&history.history["loss"], &history.history["accuracy"]);
        assert!(losses[14] < losses[0] * 0.5, "{loss:?}: {losses:?}");
        assert!(accuracy[14] > 0.9, "{loss:?}: {accuracy:?}");
        // Binary accuracy counts each label: halves appear.
        let score = model.evaluate(
            &x.slice(s![..1, ..]).to_owned(),
            &y.slice(s![..1, ..]).to_owned(),
        );
        let one = score.unwrap().accuracy().unwrap();
        assert!([0.0, 0.5, 1.0].contains(&one), "{one}");
    }
}
