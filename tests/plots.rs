//! The pictures: `train --plot` and `--report`, `evaluate
//! --confusion-matrix` and `--misclassified`, `inspect`, `plot-activations`:
//! each written, decodable, of the expected size; and their bad inputs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use convnet::plots::{self, ACTIVATIONS_SIZE, CONFUSION_CELL, CURVES_SIZE, MISCLASSIFIED_TILE};
use convnet::{History, Sequential};
use image::RgbImage;
use ndarray::{Array3, array};

mod common;

use common::cli::{assert_error, convnet, stdout};

/// A folder for this file's outputs, and a LeNet trained briefly (2
/// epochs on 1000 digits), made once per run, with its curves and report.
fn trained() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let out = convnet(&[
            "train",
            "--epochs",
            "2",
            "--train-limit",
            "1000",
            "--test-limit",
            "200",
            "--verbose",
            "0",
            "--save",
            &path("lenet.safetensors"),
            "--plot",
            &path("history.png"),
            "--report",
            &path("report.html"),
        ]);
        assert!(out.status.success(), "{}", common::cli::stderr(&out));
        dir
    })
}

fn model_file() -> String {
    trained()
        .join("lenet.safetensors")
        .to_str()
        .unwrap()
        .to_string()
}

fn picture(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Whether some pixel is within 40 of `colour` in every channel.
fn has_colour(picture: &RgbImage, colour: [u8; 3]) -> bool {
    picture
        .pixels()
        .any(|p| p.0.iter().zip(colour).all(|(&a, b)| a.abs_diff(b) <= 40))
}

/// Asserts that `folder` holds exactly the files `names` (no partial or
/// temporary file).
fn assert_files(folder: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, names);
}

#[test]
fn train_plots_the_curves() {
    let curves = picture(&trained().join("history.png"));
    assert_eq!(curves.dimensions(), CURVES_SIZE);
    // Training's blue and validation's orange lines are drawn.
    assert!(has_colour(&curves, [31, 119, 180]));
    assert!(has_colour(&curves, [255, 127, 14]));
}

/// Standard base64, as the report embeds pictures.
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_report_is_one_self_contained_page() {
    let html = std::fs::read_to_string(trained().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for heading in [
        "Run",
        "Model",
        "Training curves",
        "Scores",
        "First-layer kernels",
    ] {
        assert!(html.contains(&format!("<h2>{heading}</h2>")), "{heading}");
    }
    assert!(html.contains("Confusion matrix (test data)"));
    assert!(html.contains("conv2d (Conv2D)"), "the model summary");
    assert!(html.contains("test accuracy"));
    // Nothing is fetched: no URL but the embedded pictures'.
    let text: String = html
        .split("data:image/png;base64,")
        .map(|part| part.split_once('"').map_or(part, |(_, rest)| rest))
        .collect();
    assert!(text.len() < 20_000, "the pictures are all that is long");
    for external in [
        "http:", "https:", "//", "<link", "<script", "url(", "@import",
    ] {
        assert!(!text.contains(external), "{external}");
    }
    let sources: Vec<&str> = html.split("src=\"").skip(1).collect();
    assert_eq!(
        sources.len(),
        4,
        "curves, confusion, misclassified, kernels"
    );
    for source in sources {
        let data = source.split('"').next().unwrap();
        let encoded = data
            .strip_prefix("data:image/png;base64,")
            .unwrap_or_else(|| panic!("not an embedded PNG: {}", &data[..40.min(data.len())]));
        let picture = image::load_from_memory(&unbase64(encoded)).unwrap();
        assert!(picture.width() > 200 && picture.height() > 100);
    }
    let first = html.split("src=\"data:image/png;base64,").nth(1).unwrap();
    let curves = image::load_from_memory(&unbase64(first.split('"').next().unwrap())).unwrap();
    assert_eq!((curves.width(), curves.height()), CURVES_SIZE);
}

#[test]
fn evaluate_draws_the_confusion_matrix_and_the_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let (cm, wrong) = (dir.path().join("cm.png"), dir.path().join("wrong.png"));
    let out = convnet(&[
        "evaluate",
        "--model-file",
        &model_file(),
        "--test-limit",
        "200",
        "--confusion-matrix",
        cm.to_str().unwrap(),
        "--misclassified",
        wrong.to_str().unwrap(),
        "--misclassified-count",
        "12",
    ]);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    assert!(stdout(&out).contains("most confused"), "{}", stdout(&out));
    let matrix = picture(&cm);
    let cells = 10 * CONFUSION_CELL;
    assert!(matrix.width() > cells && matrix.width() < cells + 400);
    assert!(matrix.height() > cells && matrix.height() < cells + 400);
    assert!(has_colour(&matrix, [8, 48, 107]), "dark blue diagonal");
    let mistakes = picture(&wrong);
    // 12 tiles, 10 to a row: two rows.
    assert!(
        mistakes.width() >= 10 * MISCLASSIFIED_TILE,
        "{:?}",
        mistakes.dimensions()
    );
    assert!(mistakes.height() >= 2 * MISCLASSIFIED_TILE);
    assert!(mistakes.height() < 3 * MISCLASSIFIED_TILE + 200);
    assert_files(dir.path(), &["cm.png", "wrong.png"]);

    // --json stays one JSON object.
    let out = convnet(&[
        "evaluate",
        "--model-file",
        &model_file(),
        "--test-limit",
        "50",
        "--json",
        "--confusion-matrix",
        cm.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap();
}

#[test]
fn inspect_pictures_kernels_and_feature_maps() {
    let dir = tempfile::tempdir().unwrap();
    let (all, one) = (dir.path().join("maps.png"), dir.path().join("conv.png"));
    let inspect = |output: &Path, layer: Option<&str>| {
        let mut args = vec![
            "inspect",
            "--model-file",
            Box::leak(model_file().into_boxed_str()),
            "--image",
            "data/images/three.png",
            "-o",
            output.to_str().unwrap(),
        ];
        args.extend(layer.iter().flat_map(|l| ["--layer", *l]));
        convnet(&args)
    };
    let out = inspect(&all, None);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    let maps = picture(&all);
    // The widest row: conv2d_1's 16 maps of about 72 pixels.
    assert!(maps.width() >= 16 * 72, "{:?}", maps.dimensions());
    // Kernels, input, then four layers of maps.
    assert!(maps.height() >= 6 * 72, "{:?}", maps.dimensions());
    assert!(has_colour(&maps, [178, 24, 43]), "red positive weights");
    let out = inspect(&one, Some("conv2d"));
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    let conv = picture(&one);
    // Six 24x24 maps, each shown 6 times larger.
    assert!(conv.width() >= 6 * 144, "{:?}", conv.dimensions());
    assert!(conv.height() >= 160 + 96);

    let missing = dir.path().join("missing.png");
    let out = inspect(&missing, Some("conv9"));
    assert_error(
        &out,
        &[
            "--layer",
            "no layer \"conv9\"",
            "conv2d, max_pooling2d, conv2d_1",
        ],
    );
    let out = inspect(&missing, Some("flatten"));
    assert_error(&out, &["not maps", "conv2d"]);
    assert_files(dir.path(), &["conv.png", "maps.png"]);
}

#[test]
fn bad_inputs_fail_cleanly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_png = dir.path().join("notes.png");
    std::fs::write(&not_png, "not a picture").unwrap();
    let output = dir.path().join("out.png");
    let out = convnet(&[
        "inspect",
        "--model-file",
        &model_file(),
        "--image",
        not_png.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_error(&out, &["notes.png", "cannot read this image"]);
    let out = convnet(&[
        "inspect",
        "--model-file",
        &model_file(),
        "--image",
        dir.path().join("absent.png").to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_error(&out, &["absent.png", "does not exist"]);

    let nowhere = dir.path().join("no/such/folder/out.png");
    let nowhere = nowhere.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["plot-activations", "-o", nowhere],
        &[
            "inspect",
            "--model-file",
            "x",
            "--image",
            "x.png",
            "-o",
            nowhere,
        ],
        &[
            "evaluate",
            "--model-file",
            "x",
            "--confusion-matrix",
            nowhere,
        ],
        &["evaluate", "--model-file", "x", "--misclassified", nowhere],
        // Before any training: the folder is checked first.
        &["train", "--epochs", "50", "--plot", nowhere],
    ];
    for args in cases {
        assert_error(&convnet(args), &["no/such/folder", "does not exist"]);
    }
    let out = convnet(&["train", "--epochs", "50", "--report", nowhere]);
    assert_error(&out, &["does not exist"]);
    assert_files(dir.path(), &["notes.png"]);
}

#[test]
fn plot_activations_draws_three_panels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("act.png");
    let out = convnet(&["plot-activations", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    let act = picture(&path);
    assert_eq!(act.dimensions(), ACTIVATIONS_SIZE);
    assert!(has_colour(&act, [31, 119, 180]) && has_colour(&act, [255, 127, 14]));
}

#[test]
fn library_pictures_refuse_what_they_cannot_draw() {
    let empty = plots::training_curves(&History::default()).unwrap_err();
    assert!(empty.to_string().contains("no loss"), "{empty}");
    let not_square = plots::confusion_matrix(&array![[1, 2, 3], [4, 5, 6]], &[]);
    assert!(not_square.unwrap_err().to_string().contains("square"));
    // A model with no convolution has no kernels to show; its maps are
    // still drawn for a picture input (here: none of its layers' outputs
    // are pictures but the input is).
    let mut dense = Sequential::with_seed(1);
    dense.add(convnet::layers::Flatten::new().input_shape(&[4, 4, 1]));
    dense.add(convnet::layers::Dense::new(2));
    dense.build().unwrap();
    assert!(plots::kernels(&dense).is_err());
    let image = Array3::<f32>::zeros((4, 4, 1));
    plots::feature_maps(&dense, image.view(), &Default::default()).unwrap();
    let wrong = Array3::<f32>::zeros((5, 4, 1));
    assert!(plots::feature_maps(&dense, wrong.view(), &Default::default()).is_err());
}
