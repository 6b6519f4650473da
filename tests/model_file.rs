//! One-file models and checkpoints: save then load predicts the same bit
//! for bit; a resumed run equals an uninterrupted one; every bad file is a
//! clear error.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::cli::convnet;
use common::{random, rng};
use convnet::Activation::{Relu, Softmax, Tanh};
use convnet::initializers::Initializer;
use convnet::layers::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    FlipMode, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D, Padding, RandomFlip,
    RandomTranslation, Rescaling, Reshape, ZeroPadding2D,
};
use convnet::optimizers::{Adam, SGD};
use convnet::{Fit, Loss, Metric, Sequential};
use ndarray::{ArrayD, IxDyn};

fn one_hot(samples: usize, classes: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[samples, classes]), |i| {
        ((i[0] * 5) % classes == i[1]) as u8 as f32
    })
}

/// Every layer kind and argument: strides, same padding, 3x3/2 pooling,
/// BatchNormalization, an Activation layer, Dropout, no bias. An AlexNet
/// in small.
fn every_layer_kind() -> Sequential {
    let mut model = Sequential::with_seed(3);
    model.add(
        Conv2D::new(8, (5, 5))
            .strides((2, 2))
            .activation(Relu)
            .input_shape(&[23, 23, 3]),
    );
    model.add(
        AveragePooling2D::new((3, 3))
            .strides((2, 2))
            .padding(Padding::Same),
    );
    model.add(
        Conv2D::new(16, (3, 3))
            .padding(Padding::Same)
            .use_bias(false),
    );
    model.add(BatchNormalization::new().momentum(0.9));
    model.add(ActivationLayer::new(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(12).activation(Tanh));
    model.add(Dropout::new(0.3));
    model.add(Dense::new(4).activation(Softmax));
    model
}

/// Trains `model` briefly, saves it, loads it back: the same predictions
/// bit for bit, the same summary, and it goes on training the same way.
fn round_trip(mut model: Sequential, input: &[usize], classes: usize) {
    model
        .compile(
            Loss::CategoricalCrossentropy,
            SGD::new(0.05).momentum(0.9),
            &[Metric::Accuracy],
        )
        .unwrap();
    let x = random(&[&[10], input].concat(), &mut rng(1));
    let y = one_hot(10, classes);
    let fit = || Fit {
        batch_size: 4,
        verbose: 0,
        ..Fit::default()
    };
    model.fit(&x, &y, fit()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model.save(&path).unwrap();
    let mut loaded = Sequential::load(&path).unwrap();
    assert_eq!(loaded.predict(&x).unwrap(), model.predict(&x).unwrap());
    assert_eq!(
        loaded.summary_string().unwrap(),
        model.summary_string().unwrap()
    );
    assert_eq!(
        loaded.evaluate(&x, &y).unwrap(),
        model.evaluate(&x, &y).unwrap()
    );
    assert_eq!(loaded.steps(), model.steps());
    // A model file keeps the optimizer's settings, not its state (a
    // checkpoint keeps both): both go on from fresh momentum.
    let saved = dir.path().join("again.safetensors");
    loaded.save(&saved).unwrap();
    assert_eq!(
        Sequential::load(&saved).unwrap().to_json().unwrap(),
        model.to_json().unwrap()
    );
}

#[test]
fn saved_models_predict_exactly_as_before() {
    round_trip(convnet::models::lenet(2), &[28, 28, 1], 10);
    round_trip(every_layer_kind(), &[23, 23, 3], 4);
    for global_max in [false, true] {
        let mut model = Sequential::with_seed(4);
        model.add(Reshape::new(&[Some(9), Some(9), None]).input_shape(&[162]));
        model.add(Rescaling::new(2.0, -0.5));
        model.add(ZeroPadding2D::new(((1, 0), (2, 1))));
        model.add(RandomTranslation::new(0.1, 0.1));
        model.add(RandomFlip::new(FlipMode::Horizontal));
        model.add(
            Conv2D::new(5, (3, 3))
                .activation(Relu)
                .dilation_rate((2, 1))
                .kernel_initializer(Initializer::HeNormal),
        );
        if global_max {
            model.add(GlobalMaxPooling2D::new());
        } else {
            model.add(GlobalAveragePooling2D::new());
        }
        model.add(
            Dense::new(3)
                .activation(Softmax)
                .kernel_initializer(Initializer::LecunUniform),
        );
        round_trip(model, &[162], 3);
    }
}

#[test]
fn the_architecture_round_trips_through_json() {
    let alexnet = convnet::models::alexnet(1);
    let json = alexnet.to_json().unwrap();
    let mut copy = Sequential::from_json(&json).unwrap();
    copy.build().unwrap();
    assert_eq!(copy.count_params(), 62_378_344);
    assert_eq!(copy.to_json().unwrap(), json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["config"]["layers"][0]["config"]["batch_input_shape"],
        serde_json::json!([null, 227, 227, 3])
    );
    assert_eq!(
        value["config"]["layers"][0]["config"]["strides"],
        serde_json::json!([4, 4])
    );
    assert_eq!(
        value["config"]["layers"][1]["config"]["name"],
        "max_pooling2d"
    );
}

#[test]
fn conv2d_dilation_and_initializers_round_trip_and_are_checked() {
    let mut model = Sequential::with_seed(2);
    model.add(
        Conv2D::new(4, (3, 3))
            .dilation_rate((2, 3))
            .kernel_initializer(Initializer::GlorotNormal)
            .input_shape(&[12, 12, 1]),
    );
    model.add(Conv2D::new(2, (2, 2)).kernel_initializer(Initializer::Zeros));
    let json = model.to_json().unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let first = &value["config"]["layers"][0]["config"];
    assert_eq!(first["dilation_rate"], serde_json::json!([2, 3]));
    assert_eq!(first["kernel_initializer"], "glorot_normal");
    let mut copy = Sequential::from_json(&json).unwrap();
    assert_eq!(copy.to_json().unwrap(), json);
    copy.build().unwrap();
    // Valid windows spanning (3 - 1) · rate + 1 pixels: 12 - 5 + 1 = 8 rows
    // and 12 - 7 + 1 = 6 columns, then a 2x2 window: 7x5.
    assert_eq!(copy.output_shape(), [7, 5, 2]);
    let zeros = copy.layers().nth(1).unwrap().params()[0].value.clone();
    assert!(zeros.iter().all(|&v| v == 0.0));
    // Keras refuses strides and dilation together; so does build.
    let mut strided = Sequential::new();
    strided.add(
        Conv2D::new(4, (3, 3))
            .strides((2, 2))
            .dilation_rate((2, 2))
            .input_shape(&[12, 12, 1]),
    );
    let error = strided.build().unwrap_err().to_string();
    assert!(
        error.contains("dilation rate above 1 needs strides of 1"),
        "{error}"
    );
}

#[test]
fn malformed_architectures_are_clear_errors() {
    let cases = [
        ("not json", "architecture JSON"),
        (r#"{"class_name": "Functional"}"#, "\"Sequential\""),
        (
            r#"{"class_name": "Sequential", "config": {}}"#,
            "\"layers\"",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv3D"}]}}"#,
            "unknown layer class \"Conv3D\"",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {}}]}}"#,
            "field \"units\" is missing",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": "ten"}}]}}"#,
            "field \"units\" must be",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": [3, 0]}}]}}"#,
            "\"kernel_size\"",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 3, "activation": "swish"}}]}}"#,
            "unknown activation",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Flatten", "config": {"name": "flat"}}]}}"#,
            "named \"flat\"",
        ),
        (
            r#"{"class_name": "Sequential", "seed": -1, "config": {"layers": []}}"#,
            "\"seed\"",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3, "kernel_initializer": "he"}}]}}"#,
            "unknown initializer \"he\": use one of \"glorot_uniform\"",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 3, "kernel_initializer": "uniform"}}]}}"#,
            "\"he_normal\"",
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3, "dilation_rate": [2, 0]}}]}}"#,
            "\"dilation_rate\"",
        ),
    ];
    for (json, needle) in cases {
        let error = Sequential::from_json(json)
            .err()
            .unwrap_or_else(|| panic!("{json} was accepted"));
        assert!(error.to_string().contains(needle), "{json}: {error}");
    }
}

/// A safetensors file with `metadata` and one tensor per `(name, shape)`.
fn write_file(path: &Path, metadata: HashMap<String, String>, tensors: &[(&str, Vec<usize>)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let views = tensors.iter().zip(&data).map(|((name, shape), bytes)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .unwrap();
        (name.to_string(), view)
    });
    let bytes = safetensors::serialize(views, Some(metadata)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Sequential::with_seed(1);
    model.add(Dense::new(2).input_shape(&[3]));
    let good = dir.path().join("good.safetensors");
    model.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let metadata = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let architecture = model.to_json().unwrap();
    let tensors = [("dense.kernel", vec![3, 2]), ("dense.bias", vec![2])];
    let check = |name: &str, needles: &[&str]| {
        let path = dir.path().join(name);
        let error = Sequential::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"))
            .to_string();
        for needle in needles {
            assert!(
                error.contains(needle),
                "{name}: missing {needle:?} in {error}"
            );
        }
    };
    std::fs::write(dir.path().join("truncated"), &bytes[..bytes.len() - 5]).unwrap();
    check("truncated", &["truncated"]);
    std::fs::write(dir.path().join("text"), "hello").unwrap();
    check("text", &["not a readable safetensors file"]);
    check("missing", &["missing"]);
    check("", &["is a folder"]);
    let v1 = [
        ("format", "convnet"),
        ("format_version", "1"),
        ("steps", "0"),
    ];
    write_file(
        &dir.path().join("newer"),
        metadata(&[("format", "convnet"), ("format_version", "2")]),
        &tensors,
    );
    check("newer", &["newer convnet", "format version 2"]);
    write_file(
        &dir.path().join("weights-only"),
        metadata(&[("format", "convnet")]),
        &tensors,
    );
    check("weights-only", &["weights only", "load_weights"]);
    write_file(&dir.path().join("foreign"), metadata(&[]), &tensors);
    check("foreign", &["not a convnet model file"]);
    let broken = [&v1[..], &[("architecture", "{\"class_name\": \"Sequential\", \"config\": {\"layers\": [{\"class_name\": \"Dense\"}]}}")]].concat();
    write_file(
        &dir.path().join("bad-architecture"),
        metadata(&broken),
        &tensors,
    );
    check(
        "bad-architecture",
        &["bad-architecture", "\"units\" is missing"],
    );
    let with_arch = [&v1[..], &[("architecture", architecture.as_str())]].concat();
    write_file(
        &dir.path().join("wrong-shape"),
        metadata(&with_arch),
        &[("dense.kernel", vec![2, 3]), ("dense.bias", vec![2])],
    );
    check("wrong-shape", &["dense.kernel", "[3, 2]"]);
    write_file(
        &dir.path().join("no-bias"),
        metadata(&with_arch),
        &tensors[..1],
    );
    check("no-bias", &["dense.bias", "no such tensor"]);
}

/// A checkpoint restores the optimizer's moments and the step count:
/// training on from it equals training on without stopping.
#[test]
fn a_checkpoint_resumes_training_exactly() {
    let make = || {
        let mut model = every_layer_kind();
        model
            .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
            .unwrap();
        model
    };
    let x = random(&[12, 23, 23, 3], &mut rng(2));
    let y = one_hot(12, 4);
    let fit = |initial_epoch, epochs| Fit {
        batch_size: 5,
        initial_epoch,
        epochs,
        verbose: 0,
        ..Fit::default()
    };
    let mut whole = make();
    let history = whole.fit(&x, &y, fit(0, 3)).unwrap();

    let mut first = make();
    let before = first.fit(&x, &y, fit(0, 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let checkpoint = convnet::io::Checkpoint {
        epoch: 1,
        history: before.clone(),
    };
    convnet::io::save_checkpoint(&first, &checkpoint, &path).unwrap();
    let (mut resumed, checkpoint) = convnet::io::load_checkpoint(&path).unwrap();
    assert_eq!(checkpoint.epoch, 1);
    assert_eq!(checkpoint.history, before);
    let after = resumed.fit(&x, &y, fit(1, 3)).unwrap();
    assert_eq!(
        before.history["loss"]
            .iter()
            .chain(&after.history["loss"])
            .copied()
            .collect::<Vec<_>>(),
        history.history["loss"]
    );
    for (a, b) in resumed.params().iter().zip(whole.params()) {
        assert_eq!(a.value, b.value);
    }
    // A model file (no optimizer state) would not resume exactly.
    assert!(convnet::io::load_checkpoint(&dir.path().join("none")).is_err());
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `--epochs 1 --checkpoint-dir D`, then `--epochs 2 --resume D`, gives
/// the history, test scores and model of `--epochs 2` in one run.
#[test]
fn the_cli_resumes_a_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let tiny = [
        "--train-limit",
        "700",
        "--test-limit",
        "200",
        "--batch-size",
        "64",
        "--verbose",
        "0",
    ];
    let run = |extra: &[&str]| {
        let out = convnet(&[&["train"], &tiny[..], extra].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "--epochs",
        "2",
        "--metrics-out",
        &path("whole.json"),
        "--save",
        &path("whole.model"),
    ]);
    run(&["--epochs", "1", "--checkpoint-dir", &path("ck")]);
    assert!(dir.path().join("ck/last.safetensors").is_file());
    assert!(dir.path().join("ck/best.safetensors").is_file());
    run(&[
        "--epochs",
        "2",
        "--resume",
        &path("ck"),
        "--metrics-out",
        &path("resumed.json"),
        "--save",
        &path("resumed.model"),
    ]);
    let (whole, resumed) = (
        metrics(&dir.path().join("whole.json")),
        metrics(&dir.path().join("resumed.json")),
    );
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(whole["history"][key], resumed["history"][key], "{key}");
    }
    assert_eq!(whole["test_loss"], resumed["test_loss"]);
    let (a, b) = (
        Sequential::load(path("whole.model")).unwrap(),
        Sequential::load(path("resumed.model")).unwrap(),
    );
    for (a, b) in a.params().iter().zip(b.params()) {
        assert_eq!(a.value, b.value);
    }

    // evaluate and predict take the model file alone.
    let out = convnet(&[
        "evaluate",
        "--model-file",
        &path("whole.model"),
        "--test-limit",
        "200",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["loss"], whole["test_loss"]);
    let out = convnet(&[
        "predict",
        "--model-file",
        &path("whole.model"),
        "data/images/three.png",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("three.png: digit"));

    // Resuming with another model, or from a folder with no checkpoint.
    let out = convnet(
        &[
            &["train"],
            &tiny[..],
            &[
                "--epochs",
                "3",
                "--resume",
                &path("ck"),
                "--model",
                "alexnet",
            ],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("another model") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = convnet(&[&["train"], &tiny[..], &["--resume", &path("empty")]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no checkpoint"),
        "{stderr}"
    );
}

/// Sizes in an architecture are checked before anything is allocated.
#[test]
fn huge_layers_in_an_architecture_are_errors_not_allocations() {
    let huge_dense = r#"{"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"units": 100000000000, "batch_input_shape": [null, 100000]}}]}}"#;
    let huge_input = r#"{"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Flatten", "config": {"batch_input_shape": [null, 100000, 100000, 1000]}}]}}"#;
    for json in [huge_dense, huge_input] {
        let mut model = Sequential::from_json(json).unwrap();
        let error = model.build().unwrap_err().to_string();
        assert!(error.contains("more than"), "{error}");
    }
}

#[test]
fn keras_padding_forms_are_read() {
    for (padding, shape) in [
        ("2", [6, 6, 1]),
        ("[1, 2]", [4, 6, 1]),
        ("[[0, 1], [2, 0]]", [3, 4, 1]),
    ] {
        let json = format!(
            r#"{{"class_name": "Sequential", "config": {{"layers": [{{"class_name": "ZeroPadding2D",
               "config": {{"padding": {padding}, "batch_input_shape": [null, 2, 2, 1]}}}}]}}}}"#
        );
        let mut model = Sequential::from_json(&json).unwrap();
        model.build().unwrap();
        assert_eq!(model.output_shape(), shape, "{padding}");
    }
}

/// Found in review: sizes that overflow, a checkpoint claiming too many
/// epochs, optimizer state that does not fit, a rate of 0, activations too
/// large for a batch.
#[test]
fn hostile_sizes_and_states_are_errors() {
    let pool = r#"{"class_name": "Sequential", "config": {"layers": [
        {"class_name": "MaxPooling2D", "config": {"pool_size": [4294967296, 4294967296], "padding": "same", "batch_input_shape": [null, 4, 4, 1]}}]}}"#;
    let conv = r#"{"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Conv2D", "config": {"filters": 1, "kernel_size": [4, 18446744073709551615], "strides": [1, 18446744073709551615], "padding": "same", "batch_input_shape": [null, 4, 4, 1]}}]}}"#;
    for json in [pool, conv] {
        let mut model = Sequential::from_json(json).unwrap();
        assert!(model.build().is_err(), "{json}");
    }

    // A 1-wide input into 2^29 units: one sample fits, a batch does not.
    let mut wide = Sequential::with_seed(1);
    wide.add(Dense::new(1 << 29).input_shape(&[1]));
    wide.build().unwrap();
    let x = ArrayD::zeros(IxDyn(&[300, 1]));
    let error = wide.predict(&x).unwrap_err().to_string();
    assert!(error.contains("smaller batch size"), "{error}");
    drop(wide);

    // Optimizer state of the wrong size starts afresh instead of panicking.
    let mut model = every_layer_kind();
    model
        .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
        .unwrap();
    let x = random(&[4, 23, 23, 3], &mut rng(3));
    let y = one_hot(4, 4);
    let mut adam = Adam::default();
    use convnet::optimizers::Optimizer;
    adam.set_state(convnet::optimizers::OptimizerState {
        iterations: 3,
        slots: vec![
            ("m".into(), vec![vec![0.0; 5]]),
            ("v".into(), vec![vec![0.0; 5]]),
        ],
    })
    .unwrap();
    model
        .compile(Loss::CategoricalCrossentropy, adam, &[])
        .unwrap();
    model
        .fit(
            &x,
            &y,
            Fit {
                verbose: 0,
                ..Fit::default()
            },
        )
        .unwrap();

    // A rate of 0 saves and loads.
    model
        .compile(Loss::CategoricalCrossentropy, SGD::new(0.1), &[])
        .unwrap();
    model
        .optimizer_mut()
        .unwrap()
        .set_learning_rate(0.0)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero.safetensors");
    model.save(&path).unwrap();
    assert_eq!(
        Sequential::load(&path)
            .unwrap()
            .optimizer()
            .unwrap()
            .learning_rate(),
        0.0
    );

    // A checkpoint whose history does not hold its epochs.
    let checkpoint = convnet::io::Checkpoint {
        epoch: 1_000_000_000_000,
        history: Default::default(),
    };
    convnet::io::save_checkpoint(&model, &checkpoint, &path).unwrap();
    let error = convnet::io::load_checkpoint(&path)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("does not hold"), "{error}");
}

/// The loss's options and AdamW's settings come back from a model file,
/// and a checkpoint of AdamW with clipping resumes its state.
#[test]
fn loss_options_and_adamw_settings_round_trip() {
    use convnet::optimizers::AdamW;
    let mut model = Sequential::with_seed(6);
    model.add(Dense::new(4).activation(Tanh).input_shape(&[3]));
    model.add(Dense::new(2));
    let loss = Loss::BinaryCrossentropy
        .from_logits(true)
        .unwrap()
        .label_smoothing(0.1)
        .unwrap();
    let adamw = AdamW::new(0.01)
        .weight_decay(0.02)
        .unwrap()
        .clipnorm(0.5)
        .unwrap();
    model.compile(loss, adamw, &[Metric::Accuracy]).unwrap();
    let x = random(&[8, 3], &mut rng(7));
    let y = ArrayD::from_shape_fn(IxDyn(&[8, 2]), |i| ((i[0] + i[1]) % 2) as f32);
    let fit = || Fit {
        batch_size: 4,
        verbose: 0,
        ..Fit::default()
    };
    model.fit(&x, &y, fit()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bce.safetensors");
    let checkpoint = convnet::io::Checkpoint::default();
    convnet::io::save_checkpoint(&model, &checkpoint, &path).unwrap();
    let (mut loaded, _) = convnet::io::load_checkpoint(&path).unwrap();
    assert_eq!(loaded.loss().unwrap(), loss);
    let (config, original) = (
        loaded.optimizer().unwrap().config(),
        model.optimizer().unwrap().config(),
    );
    assert_eq!(config, original);
    assert_eq!(config["name"], "adamw");
    assert_eq!(config["clipnorm"], 0.5);
    assert_eq!(
        model.evaluate(&x, &y).unwrap(),
        loaded.evaluate(&x, &y).unwrap()
    );
    // Both go on training the same way: AdamW's moments came back too.
    model.fit(&x, &y, fit()).unwrap();
    loaded.fit(&x, &y, fit()).unwrap();
    assert_eq!(model.predict(&x).unwrap(), loaded.predict(&x).unwrap());
}

/// The compile config of a file written before the loss options holds
/// the loss by name; a loss with options is an object.
#[test]
fn the_loss_is_stored_by_name_without_options() {
    let stored = |loss: Loss| {
        let mut model = Sequential::with_seed(1);
        model.add(Dense::new(2).input_shape(&[3]));
        model.compile(loss, SGD::new(0.1), &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let compile = &header.metadata().as_ref().unwrap()["compile"];
        let value: serde_json::Value = serde_json::from_str(compile).unwrap();
        assert_eq!(Sequential::load(&path).unwrap().loss().unwrap(), loss);
        value["loss"].clone()
    };
    assert_eq!(
        stored(Loss::CategoricalCrossentropy),
        "categorical_crossentropy"
    );
    let smoothed = Loss::CategoricalCrossentropy.label_smoothing(0.2).unwrap();
    let object = stored(smoothed);
    assert_eq!(object["class_name"], "CategoricalCrossentropy");
    assert_eq!(object["config"]["label_smoothing"], 0.2f32 as f64);
}
