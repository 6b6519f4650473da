//! MNIST: 70,000 grey 28x28 handwritten digits, read offline from the IDX
//! gzip files in the repository's `data/mnist/`.
//!
//! Every file is checked: its IDX header (magic number, sizes) and the
//! SHA-256 of its contents against the canonical MNIST release.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array3};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Training images and labels, then test images and labels, as Keras's
/// `mnist.load_data()` returns them: images `(N, 28, 28)` of bytes 0..=255,
/// labels `(N,)` of digits 0..=9.
pub type MnistData = ((Array3<u8>, Array1<u8>), (Array3<u8>, Array1<u8>));

/// The four files and the SHA-256 of their uncompressed contents.
const FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Where MNIST is read from when no folder is given: `$CONVNET_DATA` (the
/// folder with the four files, or one holding a `mnist/` folder), else
/// `data/mnist` under the current folder, else the copy in this crate's
/// source tree.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONVNET_DATA") {
        return resolve(Path::new(&dir));
    }
    let local = PathBuf::from("data/mnist");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// `dir`, or `dir/mnist` when that is where the files are.
pub fn resolve(dir: &Path) -> PathBuf {
    let nested = dir.join("mnist");
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Loads MNIST from [`default_dir`], checking every file.
pub fn load_data() -> Result<MnistData> {
    load_data_from(&default_dir(), true)
}

/// Loads MNIST from `dir`; `verify` checks the SHA-256 of each file against
/// the canonical release (turn it off only for other data in IDX format,
/// such as Fashion-MNIST).
///
/// A missing file is an [`Error::Io`] of kind
/// [`NotFound`](std::io::ErrorKind::NotFound); a file whose contents are wrong
/// (not gzip, wrong header, checksum mismatch) is an [`Error::Data`].
pub fn load_data_from(dir: &Path, verify: bool) -> Result<MnistData> {
    let read = |i: usize| read_idx(dir, FILES[i].0, verify.then_some(FILES[i].1));
    let train_images = images(read(0)?)?;
    let train_labels = labels(read(1)?)?;
    let test_images = images(read(2)?)?;
    let test_labels = labels(read(3)?)?;
    for (images, labels, what) in [
        (&train_images, &train_labels, "training"),
        (&test_images, &test_labels, "test"),
    ] {
        if images.len_of(ndarray::Axis(0)) != labels.len() {
            return Err(Error::Data(format!(
                "{}: the {what} set has {} images but {} labels",
                dir.display(),
                images.len_of(ndarray::Axis(0)),
                labels.len()
            )));
        }
    }
    Ok(((train_images, train_labels), (test_images, test_labels)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `dir/name.gz` (or an uncompressed `dir/name`), checking its hash.
fn read_idx(dir: &Path, name: &str, sha256: Option<&str>) -> Result<(PathBuf, Vec<u8>)> {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    let (path, bytes) = if gz.exists() {
        let file = std::fs::File::open(&gz).map_err(|e| Error::io(&gz, e))?;
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                Error::Data(format!(
                    "{}: not a readable gzip file ({e}); the file is corrupt or truncated: \
                     copy it again from the MNIST release",
                    gz.display()
                ))
            })?;
        (gz, bytes)
    } else if plain.exists() {
        let bytes = std::fs::read(&plain).map_err(|e| Error::io(&plain, e))?;
        (plain, bytes)
    } else {
        let message = format!(
            "MNIST file not found (nor {name} uncompressed); pass the folder holding the four \
             MNIST IDX files to load_data_from, or point CONVNET_DATA at it for load_data"
        );
        return Err(Error::io(
            gz,
            std::io::Error::new(std::io::ErrorKind::NotFound, message),
        ));
    };
    if let Some(want) = sha256 {
        let got = hex(&Sha256::digest(&bytes));
        if got != want {
            return Err(Error::Data(format!(
                "{}: checksum mismatch (SHA-256 of the contents is {got}, MNIST's is {want}); \
                 the file is corrupt or is not MNIST: copy it again, or, for other data in \
                 IDX format, load it without this check (load_data_from with verify false)",
                path.display()
            )));
        }
    }
    Ok((path, bytes))
}

/// Parses an IDX header: magic `0x0000_08_<dims>` (unsigned bytes), then
/// one big-endian `u32` per dimension; returns the dimensions and the data,
/// reusing the file's buffer (MNIST's training images are 47 MB).
fn parse_idx(path: &Path, mut bytes: Vec<u8>, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let header = 4 + 4 * dims;
    let corrupt =
        |what: String| Error::Data(format!("{}: {what}; the file is corrupt", path.display()));
    if bytes.len() < header {
        return Err(corrupt(format!(
            "only {} bytes, shorter than the IDX header",
            bytes.len()
        )));
    }
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let magic = be(0);
    let want = 0x0800 + dims;
    if magic != want {
        return Err(corrupt(format!(
            "wrong magic number 0x{magic:08x}, expected 0x{want:08x}"
        )));
    }
    let shape: Vec<usize> = (0..dims).map(|d| be(4 + 4 * d)).collect();
    let len: usize = shape.iter().product();
    let data_len = bytes.len() - header;
    if data_len != len {
        return Err(corrupt(format!(
            "header announces {len} values for shape {shape:?} but {data_len} follow (truncated?)"
        )));
    }
    bytes.drain(..header);
    Ok((shape, bytes))
}

fn images((path, bytes): (PathBuf, Vec<u8>)) -> Result<Array3<u8>> {
    let (shape, data) = parse_idx(&path, bytes, 3)?;
    Ok(Array3::from_shape_vec((shape[0], shape[1], shape[2]), data).expect("sizes checked"))
}

fn labels((path, bytes): (PathBuf, Vec<u8>)) -> Result<Array1<u8>> {
    let (shape, data) = parse_idx(&path, bytes, 1)?;
    if let Some(bad) = data.iter().find(|&&l| l > 9) {
        return Err(Error::Data(format!(
            "{}: label {bad} is not a digit 0..=9; the file is corrupt",
            path.display()
        )));
    }
    Ok(Array1::from_shape_vec(shape[0], data).expect("sizes checked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_a_not_found_error_naming_the_api_not_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_data_from(dir.path(), true).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
        assert!(message.contains("load_data_from"), "{message}");
        assert!(!message.contains("--"), "{message}");
    }
}
