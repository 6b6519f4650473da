//! `convnet` as a hostile user tries it: outputs that would destroy
//! something, inputs crafted to panic it or eat memory, pictures with an
//! EXIF orientation, and faults (killed mid-save, SIGINT and SIGTERM
//! during training and mid-save, a file-size limit, a full disk). Each
//! ends in a clear error or an intact file, never a panic or a temporary
//! file left behind.

use std::path::{Path, PathBuf};

mod common;

use common::cli::{assert_error, convnet, stdout};

fn photo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/images")
        .join(name)
}

const TINY: [&str; 8] = [
    "--train-limit",
    "100",
    "--test-limit",
    "100",
    "--epochs",
    "1",
    "--batch-size",
    "32",
];

#[test]
fn convolve_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    std::fs::copy(photo("camera.png"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let path = input.to_str().unwrap();
    assert_error(
        &convnet(&["convolve", path, "-o", path]),
        &["would destroy the input", "in.png"],
    );
    let link = dir.path().join("link.png");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    assert_error(
        &convnet(&["convolve", path, "-o", link.to_str().unwrap()]),
        &["would destroy the input"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn convolve_follows_a_symlink_and_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.png");
    std::fs::write(&real, b"old").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("out.png");
    std::os::unix::fs::symlink("real.png", &link).unwrap();
    let camera = photo("camera.png");
    let out = convnet(&[
        "convolve",
        camera.to_str().unwrap(),
        "-o",
        link.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::read(&real).unwrap().starts_with(b"\x89PNG"));
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn outputs_that_are_devices_or_each_other_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("x");
    let same = same.to_str().unwrap();
    let mut args = vec!["train", "--metrics-out", same, "--save-weights", same];
    args.extend_from_slice(&TINY);
    let out = convnet(&args);
    assert_error(&out, &["--metrics-out", "--save-weights", "same file"]);
    assert!(!stdout(&out).contains("Epoch"), "trained first");
    let mut args = vec!["train", "--metrics-out", "/dev/null"];
    args.extend_from_slice(&TINY);
    assert_error(&convnet(&args), &["/dev/null", "not a regular file"]);
    assert_error(
        &convnet(&["bench", "--json", "/dev/null", "--layers-only"]),
        &["not a regular file"],
    );
}

#[test]
fn a_full_or_closed_stdout_is_a_clean_error() {
    let bin = env!("CARGO_BIN_EXE_convnet");
    let full = std::process::Command::new(bin)
        .arg("summary")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_error(
        &full,
        &["cannot write to the standard output", "No space left"],
    );
    // The reader of the pipe is gone before convnet writes.
    let closed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("exec 1> >(true); sleep 0.3; exec {bin} summary"))
        .output()
        .unwrap();
    assert_error(
        &closed,
        &["cannot write to the standard output", "Broken pipe"],
    );
}

/// Entries of `dir` other than `keep`.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !keep.contains(&name.as_str()))
        .collect()
}

#[test]
fn a_file_size_limit_during_a_save_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    std::fs::write(&out, b"old").unwrap();
    let command = format!(
        "ulimit -f 4; exec {} convolve {} -o {}",
        env!("CARGO_BIN_EXE_convnet"),
        photo("camera.png").display(),
        out.display()
    );
    let result = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .unwrap();
    assert_error(&result, &["out.png", "File too large"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert!(
        others(dir.path(), &["out.png"]).is_empty(),
        "temporary left"
    );
}

#[test]
fn a_kill_during_a_save_leaves_the_old_or_the_new_file() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let new = dir.path().join("new.png");
    let camera = photo("camera.png");
    let run = |output: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(["convolve", "--side-by-side", camera.to_str().unwrap(), "-o"])
            .arg(output)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(run(&new).wait().unwrap().success());
    let new = std::fs::read(&new).unwrap();
    // How long a whole run takes here: kills are spread over it.
    let start = std::time::Instant::now();
    assert!(run(&out).wait().unwrap().success());
    let whole = start.elapsed().as_micros() as u64;
    let mut outcomes = [0; 2];
    for i in 0..24u64 {
        std::fs::write(&out, b"old").unwrap();
        let mut child = run(&out);
        std::thread::sleep(Duration::from_micros(whole * (i % 12 + 1) / 12));
        let _ = child.kill();
        child.wait().unwrap();
        let now = std::fs::read(&out).unwrap();
        assert!(now == b"old" || now == new, "a broken file after a kill");
        outcomes[usize::from(now == new)] += 1;
    }
    // A temporary left by a kill mid-write is removed by the next save.
    assert!(run(&out).wait().unwrap().success());
    assert!(others(dir.path(), &["out.png", "new.png"]).is_empty());
    eprintln!("kept old: {}, got new: {}", outcomes[0], outcomes[1]);
}

/// A PNG chunk: length, type, data, CRC.
fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut bytes = (data.len() as u32).to_be_bytes().to_vec();
    bytes.extend(body);
    bytes.extend(crc.sum().to_be_bytes());
    bytes
}

/// A small PNG whose header says `width` x `height` RGB.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn huge_or_cut_short_pictures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let convolve = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = dir.path().join("out.png");
        convnet(&[
            "convolve",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    // 16000 x 16000 RGB would take 768 MB: refused before decoding.
    assert_error(
        &convolve("huge.png", &png_header(16000, 16000)),
        &["huge.png", "larger than convnet decodes", "shrink it"],
    );
    assert_error(
        &convolve("wide.png", &png_header(100_000, 1)),
        &["wide.png", "larger than convnet decodes"],
    );
    for name in ["camera.png", "rocket.jpg"] {
        let bytes = std::fs::read(photo(name)).unwrap();
        assert_error(
            &convolve(&format!("cut-{name}"), &bytes[..bytes.len() * 2 / 3]),
            &["cut short"],
        );
    }
    assert!(!dir.path().join("out.png").exists());
}

#[test]
fn bench_refuses_batch_sizes_it_cannot_run() {
    assert_error(
        &convnet(&["bench", "--batch-size", "0"]),
        &["--batch-size must be at least 1"],
    );
    assert_error(
        &convnet(&["bench", "--inference-batch-size", "0"]),
        &["--inference-batch-size must be at least 1"],
    );
    assert_error(
        &convnet(&["bench", "--batch-size", "60001", "--layers-only"]),
        &["more than the 60000 training images"],
    );
}

/// `evaluate` reads the test set only, and accepts the `--skip-checksum`
/// its checksum error suggests.
#[test]
fn evaluate_needs_only_the_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let mut args = vec!["train", "--verbose", "0", "--save-weights"];
    args.push(weights.to_str().unwrap());
    args.extend_from_slice(&TINY);
    let out = convnet(&args);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(mnist.join(name), data.join(name)).unwrap();
    }
    let evaluate = |extra: &[&str]| {
        let mut args = vec!["evaluate", "--weights", weights.to_str().unwrap()];
        args.extend(["--data-dir", data.to_str().unwrap(), "--test-limit", "100"]);
        args.extend_from_slice(extra);
        convnet(&args)
    };
    let out = evaluate(&[]);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
    assert!(stdout(&out).contains("Test accuracy"));
    // Other IDX data: the same file with one label changed.
    let labels = data.join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&labels).unwrap()),
        &mut bytes,
    )
    .unwrap();
    bytes[8] = (bytes[8] + 1) % 10;
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), &bytes).unwrap();
    std::fs::remove_file(&labels).unwrap();
    assert_error(&evaluate(&[]), &["checksum mismatch", "--skip-checksum"]);
    let out = evaluate(&["--skip-checksum"]);
    assert!(out.status.success(), "{}", common::cli::stderr(&out));
}

#[test]
fn model_files_are_read_within_a_limit() {
    assert_error(
        &convnet(&["evaluate", "--weights", "/dev/zero"]),
        &["/dev/zero", "not a readable safetensors file"],
    );
    assert_error(
        &convnet(&["predict", "--model-file", "/dev/zero", "x.png"]),
        &["/dev/zero", "not a readable safetensors file"],
    );
    let dir = tempfile::tempdir().unwrap();
    // A sparse file: over the limit without taking the disk space.
    let big = dir.path().join("big.safetensors");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(convnet::io::MAX_MODEL_FILE_BYTES + 1).unwrap();
    assert_error(
        &convnet(&["evaluate", "--model-file", big.to_str().unwrap()]),
        &["big.safetensors", "over convnet's limit"],
    );
}

#[test]
fn convolve_refuses_nan_fills_and_overflowing_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let camera = photo("camera.png");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "convolve",
            camera.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        convnet(&args)
    };
    assert_error(
        &run(&["--boundary", "fill", "--fill-value", "nan"]),
        &["--fill-value", "not a finite number"],
    );
    assert_error(
        &run(&["--kernel", "1e308 1e308", "--precision", "f64"]),
        &["overflows"],
    );
    assert!(!out.exists());
    assert_error(
        &convnet(&["bench-convolve", "--size", "100000000"]),
        &["--size must be at most"],
    );
}

/// `convnet train args...` started with its standard output piped (and
/// the repository as its folder, as [`convnet`] runs it).
fn spawn_training(args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_convnet"))
        .arg("train")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CONVNET_DATA")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends `signal` to `child`, waits for it and checks that the signal
/// ended it (the shell's 128 + signal), not a normal exit.
fn interrupt(child: &mut std::process::Child, signal: i32) {
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: kill(2) on the pid of a child not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(signal), "ended by {status}");
}

/// The temporary files of saves (`*.convnet-tmp`) in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".convnet-tmp"))
        .collect()
}

#[test]
fn ctrl_c_during_training_keeps_the_previous_outputs() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (model, weights, metrics) = (path("m.safetensors"), path("w.safetensors"), path("m.json"));
    let outputs = [
        "--save",
        &model,
        "--save-weights",
        &weights,
        "--metrics-out",
        &metrics,
    ];
    let mut args = outputs.to_vec();
    args.extend_from_slice(&TINY);
    args.extend(["--verbose", "0"]);
    assert!(spawn_training(&args).wait().unwrap().success());
    let names = ["m.safetensors", "w.safetensors", "m.json"];
    let before: Vec<Vec<u8>> = names
        .iter()
        .map(|name| std::fs::read(dir.path().join(name)).unwrap())
        .collect();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut args = outputs.to_vec();
        args.extend(["--train-limit", "2000", "--test-limit", "100"]);
        args.extend(["--epochs", "1000", "--verbose", "2"]);
        let mut child = spawn_training(&args);
        // The end of the first epoch: training is under way.
        // (The pipe stays open until the end: a closed one would end it.)
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let epoch = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.contains(" - loss: "));
        assert!(epoch.is_some(), "no epoch ended");
        interrupt(&mut child, signal);
        drop(lines);
        for (name, old) in names.iter().zip(&before) {
            let now = std::fs::read(dir.path().join(name)).unwrap();
            assert!(now == *old, "{name} changed by an interrupted run");
        }
        assert!(others(dir.path(), &names).is_empty(), "a file left behind");
    }
}

#[test]
fn a_signal_during_a_save_leaves_no_temporary_file() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let last = checkpoints.join("last.safetensors");
    // Epochs of 64 pictures: most of the time goes to writing checkpoints.
    let args = [
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "1000000",
        "--verbose",
        "0",
    ];
    for signal in [libc::SIGINT, libc::SIGTERM] {
        for _ in 0..6 {
            let mut child = spawn_training(&args);
            // Signal as soon as a temporary file is seen: mid-save.
            let start = Instant::now();
            while temporaries(&checkpoints).is_empty() || !last.exists() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "no checkpoint written in a minute"
                );
                std::hint::spin_loop();
            }
            interrupt(&mut child, signal);
            assert_eq!(temporaries(&checkpoints), Vec::<String>::new());
            let (_, checkpoint) = convnet::io::load_checkpoint(&last).unwrap();
            assert!(checkpoint.epoch >= 1);
        }
    }
}

/// Saves `convolve`'s output onto a 64 KiB file system too small for it,
/// then onto the same one filled up, in a mount namespace of their own
/// (`unshare`; CI runs as root). Skipped, with a line saying why, where
/// no namespace can mount one.
#[test]
fn a_full_disk_during_a_save_keeps_the_old_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mount = r#"mount -t tmpfs -o size=64k convnet-full "$1""#;
    let script = format!(
        r#"set -e
        {mount}
        printf old > "$1/out.png"
        set +e
        for case in small filled; do
            if [ $case = filled ]; then cat /dev/zero > "$1/fill" 2>/dev/null; fi
            message=$("$2" convolve "$3" -o "$1/out.png" 2>&1)
            echo "$case exit $?"
            echo "$case message $message" | tr '\n' ' '
            echo
            echo "$case content $(cat "$1/out.png")"
            echo "$case files $(ls -A "$1" | tr '\n' ' ')"
        done"#
    );
    let namespace = |flags: &str, script: &str| {
        std::process::Command::new("unshare")
            .args([flags, "sh", "-c", script, "sh"])
            .arg(dir.path())
            .arg(env!("CARGO_BIN_EXE_convnet"))
            .arg(photo("camera.png"))
            .output()
    };
    // A user namespace mounts without root where the system allows it.
    let tried: Vec<String> = ["-rm", "-m"]
        .iter()
        .map(|flags| match namespace(flags, mount) {
            Ok(out) if out.status.success() => String::new(),
            Ok(out) => format!("unshare {flags}: {}", common::cli::stderr(&out).trim()),
            Err(e) => format!("unshare: {e}"),
        })
        .collect();
    let Some(flags) = ["-rm", "-m"]
        .iter()
        .zip(&tried)
        .find_map(|(flags, error)| error.is_empty().then_some(*flags))
    else {
        // Straight to the standard error: the test harness keeps what
        // `eprintln!` prints from a passing test to itself.
        let _ = writeln!(
            std::io::stderr(),
            "a_full_disk_during_a_save_keeps_the_old_file skipped: cannot mount a small file \
             system here ({})",
            tried.join("; ")
        );
        return;
    };
    let out = namespace(flags, &script).unwrap();
    let report = stdout(&out);
    eprintln!("{report}");
    let line = |key: &str| {
        let line = report.lines().find(|l| l.starts_with(key));
        line.unwrap_or_else(|| panic!("no {key:?} in: {report}"))[key.len()..].trim()
    };
    for (case, files) in [("small", "out.png"), ("filled", "fill out.png")] {
        assert_eq!(line(&format!("{case} exit")), "1");
        let message = line(&format!("{case} message"));
        for needle in ["error: ", "out.png", "No space left", "disk", "is full"] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        assert!(message.contains("keeps its previous contents"), "{message}");
        assert_eq!(line(&format!("{case} content")), "old");
        assert_eq!(line(&format!("{case} files")), files, "a temporary left");
    }
}

/// A JPEG of a 24 x 8 grey ramp (dark left, light right) whose EXIF
/// orientation tag is `orientation` (6: turn a quarter clockwise to show
/// it): the image crate's JPEG, with an APP1 Exif segment (a big-endian
/// TIFF header and one IFD entry, tag 0x0112) spliced in after its
/// start-of-image marker, as cameras write it.
fn jpeg_with_orientation(orientation: u16) -> Vec<u8> {
    let ramp = image::GrayImage::from_fn(24, 8, |x, y| image::Luma([(x * 10 + y) as u8]));
    let mut jpeg = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 100);
    ramp.write_with_encoder(encoder).unwrap();
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend(1u16.to_be_bytes()); // one entry
    exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]); // orientation: 1 SHORT
    exif.extend(orientation.to_be_bytes());
    exif.extend([0; 2 + 4]); // padding, no next IFD
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend((exif.len() as u16 + 2).to_be_bytes());
    app1.extend(exif);
    assert_eq!(jpeg[..2], [0xFF, 0xD8]);
    jpeg.splice(2..2, app1);
    jpeg
}

#[test]
fn pictures_are_turned_as_their_exif_orientation_says() {
    use convnet::datasets::image_folder::decode_picture_bytes;
    let upright = decode_picture_bytes(&jpeg_with_orientation(1)).unwrap();
    assert_eq!((upright.width(), upright.height()), (24, 8));
    let turned = decode_picture_bytes(&jpeg_with_orientation(6)).unwrap();
    assert_eq!(turned, upright.rotate90(), "orientation 6");
    let half = decode_picture_bytes(&jpeg_with_orientation(3)).unwrap();
    assert_eq!(half, upright.rotate180(), "orientation 3");
    // convolve, predict and image folders read pictures this way.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("phone.jpg");
    std::fs::write(&input, jpeg_with_orientation(6)).unwrap();
    let out = dir.path().join("out.png");
    let run = convnet(&[
        "convolve",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", common::cli::stderr(&run));
    assert!(stdout(&run).contains("(8x24)"), "{}", stdout(&run));
}
