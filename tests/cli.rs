//! The `convnet` command: training on a small subset, the summary, and
//! every kind of bad input giving a clear error, a non-zero exit and no panic.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Output;

mod common;

use common::cli::{assert_error, convnet, stdout};

const TINY: [&str; 8] = [
    "--train-limit",
    "600",
    "--test-limit",
    "200",
    "--epochs",
    "1",
    "--batch-size",
    "32",
];

fn train_json(dir: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    train_json_on(dir, name, &TINY, extra)
}

/// `convnet train` with the flags `base` and `extra`: its metrics JSON.
fn train_json_on(dir: &Path, name: &str, base: &[&str], extra: &[&str]) -> serde_json::Value {
    let path = dir.join(name);
    let mut args = vec![
        "train",
        "--verbose",
        "2",
        "--metrics-out",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(base);
    args.extend_from_slice(extra);
    let out = convnet(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn train_on_a_subset_writes_the_metrics_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = train_json(dir.path(), "m.json", &[]);
    for key in [
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "epoch_seconds",
    ] {
        assert_eq!(
            json["history"][key].as_array().map(Vec::len),
            Some(1),
            "history.{key} in {json}"
        );
    }
    let accuracy = json["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.3 && accuracy <= 1.0, "{accuracy}");
    assert!(json["test_loss"].as_f64().unwrap() > 0.0);
    assert_eq!(json["history"]["val_accuracy"][0].as_f64(), Some(accuracy));
}

#[test]
fn one_thread_and_two_threads_give_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut one = train_json(dir.path(), "1.json", &["--threads", "1", "--seed", "4"]);
    let mut two = train_json(dir.path(), "2.json", &["--threads", "2", "--seed", "4"]);
    for json in [&mut one, &mut two] {
        json["history"]["epoch_seconds"] = serde_json::Value::Null;
        json["threads"] = serde_json::Value::Null;
    }
    assert_eq!(one, two);
}

#[test]
fn progress_is_printed_like_keras() {
    let mut args = vec!["train"];
    args.extend_from_slice(&TINY);
    let out = convnet(&args);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("Epoch 1/1"), "{text}");
    assert!(
        text.contains("19/19 [==============================] - "),
        "{text}"
    );
    assert!(
        text.contains("ms/step - loss: ")
            && text.contains(" - accuracy: ")
            && text.contains(" - val_accuracy: "),
        "{text}"
    );
    assert!(text.contains("Test accuracy: "), "{text}");
}

#[test]
fn summary_shows_the_keras_table() {
    let out = convnet(&["summary", "--model", "lenet"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("Total params: 44,426"), "{text}");
    assert!(text.contains("conv2d_1 (Conv2D)"), "{text}");
    let out = convnet(&["summary", "--model", "alexnet"]);
    assert!(
        stdout(&out).contains("Total params: 62,378,344"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn unknown_names_and_bad_numbers_are_refused() {
    assert_error(
        &convnet(&["summary", "--model", "vgg"]),
        &["unknown model", "lenet"],
    );
    assert_error(
        &convnet(&["train", "--optimizer", "adagrad"]),
        &["unknown optimizer", "adam, adamw, sgd or rmsprop"],
    );
    assert_error(&convnet(&["train", "--lr", "-1"]), &["learning rate"]);
    assert_error(&convnet(&["train", "--threads", "0"]), &["--threads"]);
    assert_error(
        &convnet(&["train", "--batch-size", "0", "--train-limit", "10"]),
        &["batch"],
    );
}

#[test]
fn a_model_that_cannot_take_mnist_is_refused() {
    assert_error(
        &convnet(&["train", "--model", "alexnet"]),
        &["--model alexnet cannot take 28x28x1 pictures"],
    );
}

#[test]
fn metrics_are_not_written_into_a_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/folder/m.json");
    let mut args = vec!["train", "--metrics-out", path.to_str().unwrap()];
    args.extend_from_slice(&TINY);
    assert_error(&convnet(&args), &["no/such/folder"]);
    assert!(!path.exists());
}

/// An output that names a folder, or checkpoints that name a file, fail
/// before any training and touch nothing.
#[test]
fn outputs_that_are_folders_or_files_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    for flag in ["--save", "--save-weights", "--metrics-out"] {
        let mut args = vec!["train", flag, folder];
        args.extend_from_slice(&TINY);
        let out = convnet(&args);
        assert_error(&out, &["is a folder"]);
        assert!(!stdout(&out).contains("Epoch"), "{flag}: trained first");
    }
    let file = dir.path().join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    let mut args = vec!["train", "--checkpoint-dir", file.to_str().unwrap()];
    args.extend_from_slice(&TINY);
    assert_error(&convnet(&args), &["is a file, not a folder"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

/// A copy of the MNIST files in a fresh folder, for corrupting.
fn mnist_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn gzip(path: &Path, bytes: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
}

fn train_from(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    convnet(&args)
}

#[test]
fn a_missing_data_file_is_named() {
    let dir = mnist_copy();
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_error(
        &train_from(dir.path(), &[]),
        &["t10k-labels-idx1-ubyte.gz", "not found", "--data-dir"],
    );
    let empty = tempfile::tempdir().unwrap();
    assert_error(
        &train_from(empty.path(), &[]),
        &["no data found", "MNIST", "class folders"],
    );
}

#[test]
fn a_truncated_data_file_is_reported() {
    let dir = mnist_copy();
    let path = dir.path().join("train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(
        &train_from(dir.path(), &[]),
        &["train-labels-idx1-ubyte.gz", "corrupt"],
    );
}

#[test]
fn a_checksum_mismatch_is_reported() {
    let dir = mnist_copy();
    let path = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = gunzip(&path);
    let last = bytes.len() - 1;
    bytes[last] = (bytes[last] + 1) % 10;
    gzip(&path, &bytes);
    assert_error(
        &train_from(dir.path(), &[]),
        &["checksum mismatch", "t10k-labels", "--skip-checksum"],
    );
    // The same file passes with --skip-checksum, since it is still valid IDX.
    assert!(
        train_from(dir.path(), &["--skip-checksum"])
            .status
            .success()
    );
}

#[test]
fn a_wrong_magic_number_or_size_is_reported() {
    let dir = mnist_copy();
    let path = dir.path().join("t10k-images-idx3-ubyte.gz");
    let original = gunzip(&path);
    let mut bytes = original.clone();
    bytes[3] = 0x01;
    gzip(&path, &bytes);
    assert_error(
        &train_from(dir.path(), &["--skip-checksum"]),
        &["wrong magic number", "t10k-images"],
    );
    gzip(&path, &original[..original.len() - 100]);
    assert_error(
        &train_from(dir.path(), &["--skip-checksum"]),
        &["truncated", "t10k-images"],
    );
}

#[test]
fn saved_weights_evaluate_to_the_same_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("lenet.safetensors");
    let json = train_json(
        dir.path(),
        "m.json",
        &["--save-weights", weights.to_str().unwrap()],
    );
    let out = convnet(&[
        "evaluate",
        "--weights",
        weights.to_str().unwrap(),
        "--test-limit",
        "200",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accuracy = json["test_accuracy"].as_f64().unwrap();
    assert!(
        stdout(&out).contains(&format!("Test accuracy: {accuracy:.4}")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn corrupt_or_foreign_weight_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    train_json(
        dir.path(),
        "m.json",
        &["--save-weights", weights.to_str().unwrap()],
    );
    let path = weights.to_str().unwrap();
    assert_error(
        &convnet(&["evaluate", "--weights", path, "--model", "alexnet"]),
        &["conv2d.kernel", "[11, 11, 3, 96]"],
    );
    let bytes = std::fs::read(&weights).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(
        &convnet(&["evaluate", "--weights", truncated.to_str().unwrap()]),
        &["truncated.safetensors", "corrupt"],
    );
    let missing = dir.path().join("missing.safetensors");
    assert_error(
        &convnet(&["evaluate", "--weights", missing.to_str().unwrap()]),
        &["missing.safetensors"],
    );
}

#[test]
fn early_stopping_schedules_and_a_validation_split_train() {
    let dir = tempfile::tempdir().unwrap();
    for schedule in ["cosine", "onecycle", "step"] {
        let extra = [
            "--train-limit",
            "600",
            "--test-limit",
            "200",
            "--epochs",
            "3",
            "--early-stopping",
            "0",
            "--lr-schedule",
            schedule,
            "--validation-split",
            "0.25",
        ];
        let json = train_json_on(dir.path(), &format!("{schedule}.json"), &[], &extra);
        let val_loss: Vec<f64> = json["history"]["val_loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!((1..=3).contains(&val_loss.len()), "{schedule}: {json}");
        // Patience 0: a run ends at the first epoch that is not the best.
        let best = val_loss.iter().copied().fold(f64::INFINITY, f64::min);
        let stopped = val_loss.len() < 3;
        assert_eq!(stopped, val_loss.last() != Some(&best), "{val_loss:?}");
        // Validation is on the 150 held-out images, the test on the 200
        // test images: the validation accuracy counts 150ths.
        let val_accuracy = json["history"]["val_accuracy"][0].as_f64().unwrap();
        let count = val_accuracy * 150.0;
        assert!((count - count.round()).abs() < 1e-6, "{val_accuracy}");
        assert!(json["test_accuracy"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn the_validation_split_is_said_and_bad_values_are_refused() {
    let mut args = vec!["train", "--validation-split", "0.25"];
    args.extend_from_slice(&TINY);
    let out = convnet(&args);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("on 450 MNIST images (150 held out for validation, 200 test)"),
        "{}",
        stdout(&out)
    );
    let bad: [(&[&str], &[&str]); 4] = [
        (
            &["--validation-split", "1"],
            &["--validation-split", "[0, 1)"],
        ),
        (&["--validation-split", "-0.5"], &["--validation-split"]),
        (&["--lr-schedule", "linear"], &["--lr-schedule", "cosine"]),
        (&["--early-stopping", "two"], &["--early-stopping"]),
    ];
    for (extra, needles) in bad {
        let mut args = vec!["train"];
        args.extend_from_slice(&TINY);
        args.extend_from_slice(extra);
        assert_error(&convnet(&args), needles);
    }
    let none_left = ["train", "--train-limit", "1", "--validation-split", "0.5"];
    assert_error(&convnet(&none_left), &["--validation-split", "0 training"]);
    // 1 image in batches of 128, 2 epochs: 2 steps, too few for a cycle.
    let few = ["train", "--train-limit", "1", "--lr-schedule", "onecycle"];
    assert_error(&convnet(&few), &["--lr-schedule", "OneCycle"]);
}

/// `--distributed` says what it lacks: a build with MPI, or mpiexec.
#[test]
fn distributed_needs_mpi_and_mpiexec() {
    let needle = if cfg!(feature = "mpi") {
        "started by mpiexec"
    } else {
        "built with MPI"
    };
    assert_error(
        &convnet(&["train", "--distributed"]),
        &["--distributed", needle],
    );
}

/// `bench --no-avx512` runs (and says it runs) the AVX2 kernels on a CPU
/// with AVX-512, to time the path of CPUs without it.
#[test]
fn bench_runs_the_avx2_kernels_when_asked() {
    if !convnet::kernels::has_avx2_fma() {
        eprintln!("skipped: this CPU has no AVX2, so there are no AVX2 kernels to run");
        return;
    }
    let args = [
        "bench",
        "--model",
        "cifar10-cnn",
        "--batch-size",
        "4",
        "--layers-only",
        "--layer-runs",
        "1",
        "--threads",
        "1",
    ];
    let plain = convnet(&args);
    let expected = if convnet::kernels::has_avx512() {
        "AVX-512 kernels"
    } else {
        "AVX2 kernels"
    };
    assert!(stdout(&plain).contains(expected), "{}", stdout(&plain));
    let avx2 = convnet(&[&args[..], &["--no-avx512"]].concat());
    let text = stdout(&avx2);
    assert!(avx2.status.success(), "{text}");
    assert!(
        text.contains("AVX2 kernels") && text.contains("conv2d_3"),
        "{text}"
    );
}

/// `bench --model` times a ready-made network on random pictures and
/// writes its figures; bad choices are clear errors.
#[test]
fn bench_model_prints_and_writes_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = convnet(&[
        "bench",
        "--model",
        "cifar10-cnn",
        "--batch-size",
        "8",
        "--steps",
        "4",
        "--layer-runs",
        "1",
        "--threads",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for needle in ["conv2d_3", "training:", "inference:", "GFLOP/s"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(figures["model"], "cifar10-cnn");
    assert_eq!(figures["batch_size"], 8);
    assert_eq!(figures["steps"], 4);
    assert!(figures["train_images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(figures["inference_images_per_sec"].as_f64().unwrap() > 0.0);
    // 41.5 MFLOP forward: the count of Keras's cifar10_cnn layout.
    let forward = figures["forward_mflop_per_image"].as_f64().unwrap();
    assert!((forward - 41.5).abs() < 0.1, "{forward}");
    assert_error(
        &convnet(&["bench", "--model", "resnet"]),
        &["unknown model \"resnet\"", "cifar10-cnn"],
    );
    assert_error(
        &convnet(&["bench", "--model", "lenet", "--batch-size", "0"]),
        &["--batch-size must be at least 1"],
    );
    assert_error(&convnet(&["bench", "--steps", "3"]), &["--model"]);
}
