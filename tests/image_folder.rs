//! Training on the user's own pictures: `convnet train --data-dir` on an
//! image folder that the test writes from MNIST digits (one sub-folder per
//! digit), a CNN with BatchNormalization from an architecture file, then
//! `convnet predict` on the saved model naming the classes.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{assert_error, convnet, stderr, stdout};
use convnet::datasets::mnist;
use image::GrayImage;
use ndarray::{Array3, Axis};

/// Training and held-out digits written as pictures.
const TRAIN: usize = 6000;
const HELD_OUT: usize = 1000;

/// A small CNN with BatchNormalization, as a user would write it, in
/// the format of `convnet summary --json` without the layer names: the
/// file README's "Train on your own pictures" uses. Its moving averages'
/// momentum is 0.9, not Keras's 0.99, so that they settle within a run
/// this short.
fn architecture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits_cnn.json")
}

/// The digits `range` of `images` as PNG files `dir/<digit>/<i>.png`.
fn write_digits(dir: &Path, images: &Array3<u8>, labels: &[u8], range: std::ops::Range<usize>) {
    for i in range {
        let class = dir.join(labels[i].to_string());
        std::fs::create_dir_all(&class).unwrap();
        let pixels = images.index_axis(Axis(0), i).iter().copied().collect();
        let picture = GrayImage::from_raw(28, 28, pixels).unwrap();
        picture.save(class.join(format!("{i}.png"))).unwrap();
    }
}

/// `train/` and `test/` folders of MNIST digits, with a broken file.
fn digit_folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let ((images, labels), _) = mnist::load_data_from(&data, true).unwrap();
    let labels = labels.to_vec();
    let (train, test) = (root.path().join("train"), root.path().join("test"));
    write_digits(&train, &images, &labels, 0..TRAIN);
    write_digits(&test, &images, &labels, TRAIN..TRAIN + HELD_OUT);
    std::fs::write(train.join("3/empty.png"), b"").unwrap();
    (root, train, test)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_batchnorm_cnn_learns_an_image_folder_and_predicts_class_names() {
    let (root, train, test) = digit_folders();
    let architecture = architecture();
    let (model, metrics) = (
        root.path().join("m.safetensors"),
        root.path().join("m.json"),
    );
    let out = convnet(&[
        "train",
        "--data-dir",
        path(&train),
        "--test-dir",
        path(&test),
        "--model",
        path(&architecture),
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--verbose",
        "2",
        "--save",
        path(&model),
        "--metrics-out",
        path(&metrics),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: skipped") && stderr(&out).contains("empty.png"),
        "{}",
        stderr(&out)
    );
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("on {TRAIN} pictures of 10 classes")),
        "{printed}"
    );
    assert!(printed.contains("Input: decoding took"), "{printed}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    let accuracy = report["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");

    // The model file keeps the class names; predict reads a picture as
    // training did and names its class.
    let seven = test
        .join("7")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = convnet(&[
        "predict",
        "--json",
        "--model-file",
        path(&model),
        path(&seven),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let prediction: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(prediction["class_name"], "7", "{prediction}");
}

#[test]
fn bad_folders_and_architectures_are_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("pictures");
    std::fs::create_dir_all(folder.join("cat")).unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data-dir", path(&folder), "--epochs", "1"];
        args.extend_from_slice(extra);
        convnet(&args)
    };
    assert_error(&train(&[]), &["cat: this class folder has no pictures"]);
    std::fs::write(folder.join("cat/1.png"), b"").unwrap();
    assert_error(
        &train(&[]),
        &["none of its 1 pictures can be read", "empty"],
    );
    GrayImage::new(8, 8).save(folder.join("cat/2.png")).unwrap();
    assert_error(
        &train(&["--model", "lenet", "--image-size", "8"]),
        &["--model lenet cannot take 8x8x1 pictures"],
    );
    assert_error(
        &train(&["--image-size", "0"]),
        &["--image-size", "not a picture size"],
    );
    assert_error(&train(&["--color-mode", "cmyk"]), &["grayscale or rgb"]);

    let architecture = root.path().join("bad.json");
    let cases: [(&str, &[&str]); 4] = [
        ("{not json", &["bad.json", "not valid JSON"]),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv3D"}]}}"#,
            &["bad.json", "layer 0", "Conv3D"],
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [
                {"class_name": "Dense", "config": {"units": "ten", "batch_input_shape": [null, 4]}}]}}"#,
            &["bad.json", "layer 0", "units"],
        ),
        (
            r#"{"class_name": "Sequential", "config": {"layers": [
                {"class_name": "Flatten", "config": {"batch_input_shape": [null, 28, 28, 1]}},
                {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}]}}"#,
            &["bad.json", "output is [3]", "1 classes"],
        ),
    ];
    for (text, needles) in cases {
        std::fs::write(&architecture, text).unwrap();
        assert_error(&train(&["--model", path(&architecture)]), needles);
    }
}

/// CIFAR-10's binary files (six, of `records` random records each) train
/// vgg-small with augmentation, and the model names CIFAR-10's classes.
#[test]
fn cifar10_files_train_with_augmentation_and_name_their_classes() {
    let root = tempfile::tempdir().unwrap();
    let files = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (i, name) in files.iter().enumerate() {
        let records: Vec<u8> = (0..4u8)
            .flat_map(|r| {
                let pixels = (0..3072).map(move |p| (p as u8).wrapping_mul(r + 1));
                std::iter::once((r + i as u8) % 10).chain(pixels)
            })
            .collect();
        std::fs::write(root.path().join(name), records).unwrap();
    }
    let model = root.path().join("m.safetensors");
    let out = convnet(&[
        "train",
        "--data-dir",
        path(root.path()),
        "--model",
        "vgg-small",
        "--augment",
        "flip,rotate",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--save",
        path(&model),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("on 20 CIFAR-10 pictures (4 test)"),
        "{}",
        stdout(&out)
    );
    let picture = root.path().join("p.png");
    image::RgbImage::new(40, 30).save(&picture).unwrap();
    let out = convnet(&[
        "predict",
        "--json",
        "--model-file",
        path(&model),
        path(&picture),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let prediction: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let name = prediction["class_name"].as_str().unwrap();
    assert!(
        convnet::datasets::cifar10::CLASS_NAMES.contains(&name),
        "{prediction}"
    );
    let flags = ["--image-size", "28"];
    let out = convnet(&[&["train", "--data-dir", path(root.path())][..], &flags].concat());
    assert_error(
        &out,
        &["--image-size and --color-mode are for image folders"],
    );
}
