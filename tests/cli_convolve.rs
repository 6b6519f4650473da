//! End-to-end tests of `convnet convolve`: real photos in, PNGs out, and clear
//! errors (non-zero exit, no panic, no output file) for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convnet::signal::{Boundary, Mode, convolve2d};
use ndarray::{Array2, array};

fn photo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/images")
        .join(name)
}

fn convnet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convnet"))
        .current_dir(dir)
        .arg("convolve")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, an `error:` line mentioning
/// `expected`, no panic, and nothing left in `dir` (no partial output, no
/// temporary file).
fn assert_fails_cleanly(dir: &Path, output: &Output, expected: &str) {
    let message = stderr(output);
    assert!(!output.status.success(), "succeeded unexpectedly");
    assert!(message.starts_with("error: "), "{message}");
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    assert!(!message.contains("panicked"), "{message}");
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "input.png" && name != "not-an-image.png")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn read_png(path: &Path) -> image::GrayImage {
    image::open(path).expect("a valid PNG").to_luma8()
}

#[test]
fn default_run_writes_a_same_size_png_named_after_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let camera = photo("camera.png");
    let output = convnet(dir.path(), &[camera.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let written = read_png(&dir.path().join("camera-convolved.png"));
    assert_eq!(written.dimensions(), (512, 512));
}

#[test]
fn default_kernel_on_camera_matches_the_library_and_shows_edges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edges.png");
    let camera = photo("camera.png");
    let output = convnet(
        dir.path(),
        &[camera.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let written = read_png(&out);

    // The same computation through the library: grey camera, lesson kernel,
    // 'same' mode with mirrored edges, |x| scaled so the maximum is 255.
    let grey = read_png(&camera);
    let (w, h) = grey.dimensions();
    let image = Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
        f64::from(grey.get_pixel(x as u32, y as u32)[0])
    });
    let kernel = array![[-1.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 1.0]];
    let edges = convolve2d(image.view(), kernel.view(), Mode::Same, Boundary::Symm).unwrap();
    let largest = edges.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let expected = edges.mapv(|v| (v.abs() / largest * 255.0).round() as u8);
    let got = Array2::from_shape_vec((h as usize, w as usize), written.into_raw()).unwrap();
    assert_eq!(got, expected);

    // Real edges: a flat picture would be constant; this one varies.
    let mean = expected.iter().map(|&v| f64::from(v)).sum::<f64>() / expected.len() as f64;
    let variance = expected
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / expected.len() as f64;
    assert!(variance > 100.0, "variance {variance}");
    assert!(expected.iter().filter(|&&v| v > 128).count() > 500);
}

#[test]
fn colour_jpeg_side_by_side_in_full_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rocket.png");
    let rocket = photo("rocket.jpg");
    let args = [rocket.to_str().unwrap(), "-o", out.to_str().unwrap()];
    let output = convnet(
        dir.path(),
        &[
            &args[..],
            &["--preset", "sobel-y", "--mode", "full", "--side-by-side"],
        ]
        .concat(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let input = image::open(&rocket).unwrap();
    // Input, an 8-pixel stripe, and the full result (2 pixels larger each way).
    let written = read_png(&out);
    assert_eq!(written.width(), input.width() + 8 + input.width() + 2);
    assert_eq!(written.height(), input.height() + 2);
}

#[test]
fn missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = convnet(dir.path(), &["no-such-photo.png", "-o", "out.png"]);
    assert_fails_cleanly(
        dir.path(),
        &output,
        "the image no-such-photo.png does not exist",
    );
}

#[test]
fn a_file_that_is_not_an_image_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-an-image.png"), "just some text").unwrap();
    let output = convnet(dir.path(), &["not-an-image.png", "-o", "out.png"]);
    assert_fails_cleanly(dir.path(), &output, "reads PNG, JPEG and BMP");
}

#[test]
fn bad_kernels_are_clear_errors() {
    let camera = photo("camera.png");
    let cases = [
        ("", "the kernel is empty"),
        ("   ", "the kernel is empty"),
        ("1 2; 3", "row 2 has 1 numbers but row 1 has 2"),
        ("1 2; 3 x", "'x' in kernel row 2 is not a finite number"),
    ];
    for (kernel, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = convnet(
            dir.path(),
            &[
                camera.to_str().unwrap(),
                "--kernel",
                kernel,
                "-o",
                "out.png",
            ],
        );
        assert_fails_cleanly(dir.path(), &output, expected);
    }
}

#[test]
fn kernel_not_fitting_the_image_in_valid_mode_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A 2x6 image and a 3x3 kernel: neither contains the other.
    image::GrayImage::from_fn(6, 2, |x, _| image::Luma([x as u8 * 40]))
        .save(dir.path().join("input.png"))
        .unwrap();
    let output = convnet(
        dir.path(),
        &["input.png", "--mode", "valid", "-o", "out.png"],
    );
    assert_fails_cleanly(
        dir.path(),
        &output,
        "'valid' mode needs one input at least as large",
    );
}

#[test]
fn unwritable_output_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let camera = photo("camera.png");
    let output = convnet(
        dir.path(),
        &[camera.to_str().unwrap(), "-o", "missing-folder/out.png"],
    );
    assert_fails_cleanly(dir.path(), &output, "missing-folder");
    let output = convnet(dir.path(), &[camera.to_str().unwrap(), "-o", "out.jpg"]);
    assert_fails_cleanly(dir.path(), &output, "must end in .png");
}

#[test]
fn preset_and_kernel_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let camera = photo("camera.png");
    let output = convnet(
        dir.path(),
        &[
            camera.to_str().unwrap(),
            "--preset",
            "box",
            "--kernel",
            "1",
            "-o",
            "out.png",
        ],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot be used with"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("out.png").exists());
}
