//! Running the `convnet` binary and checking its failures.

use std::process::{Command, Output};

/// Runs `convnet args...` in the repository root, with MNIST read from
/// data/mnist whatever the environment says.
pub fn convnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CONVNET_DATA")
        .output()
        .expect("the binary runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure whose message contains every one of `needles`.
pub fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = stderr(out);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {stderr}"
    );
    assert!(
        stderr.starts_with("error: ")
            || stderr.contains("\nerror: ")
            || stderr.starts_with("error:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}
