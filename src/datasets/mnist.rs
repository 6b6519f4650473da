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

/// The four files, the SHA-256 of their uncompressed contents and their
/// uncompressed size.
const FILES: [(&str, &str, u64); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        16 + 60_000 * 28 * 28,
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        8 + 60_000,
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        16 + 10_000 * 28 * 28,
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        8 + 10_000,
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

/// The most bytes one IDX file may hold once decompressed (2 GiB): a
/// header announcing more is refused before anything is read, so a small
/// crafted file cannot take gigabytes of memory.
pub const MAX_IDX_BYTES: u64 = 2 << 30;

/// Loads MNIST from `dir`; `verify` checks the SHA-256 of each file against
/// the canonical release (turn it off only for other data in IDX format,
/// such as Fashion-MNIST).
///
/// A missing file is an [`Error::Io`] of kind
/// [`NotFound`](std::io::ErrorKind::NotFound); a file whose contents are wrong
/// (not gzip, wrong header, checksum mismatch) is an [`Error::Data`].
/// Decompression stops at the size the header announces, which must not
/// pass [`MAX_IDX_BYTES`] (nor, with `verify`, MNIST's own size).
pub fn load_data_from(dir: &Path, verify: bool) -> Result<MnistData> {
    let (train_images, train_labels) = load_split(dir, 0, verify)?;
    let (test_images, test_labels) = load_split(dir, 2, verify)?;
    Ok(((train_images, train_labels), (test_images, test_labels)))
}

/// Loads the test set only (images and labels) from `dir`, as
/// [`load_data_from`] does: for scoring a trained model without reading
/// the training set.
pub fn load_test_from(dir: &Path, verify: bool) -> Result<(Array3<u8>, Array1<u8>)> {
    load_split(dir, 2, verify)
}

/// The images and labels of `FILES[first]` and `FILES[first + 1]`.
fn load_split(dir: &Path, first: usize, verify: bool) -> Result<(Array3<u8>, Array1<u8>)> {
    let read = |i: usize, dims| {
        let (name, sha256, size) = FILES[i];
        read_idx(dir, name, dims, verify.then_some((sha256, size)))
    };
    let images = images(read(first, 3)?)?;
    let labels = labels(read(first + 1, 1)?)?;
    if images.len_of(ndarray::Axis(0)) != labels.len() {
        let what = if first == 0 { "training" } else { "test" };
        return Err(Error::Data(format!(
            "{}: the {what} set has {} images but {} labels",
            dir.display(),
            images.len_of(ndarray::Axis(0)),
            labels.len()
        )));
    }
    Ok((images, labels))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `dir/name.gz` (or an uncompressed `dir/name`), an IDX file of
/// `dims` dimensions, checking its hash and size when given.
fn read_idx(
    dir: &Path,
    name: &str,
    dims: usize,
    known: Option<(&str, u64)>,
) -> Result<(PathBuf, Vec<usize>, Vec<u8>)> {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    let (path, reader): (PathBuf, Box<dyn Read>) = if gz.exists() {
        let file = std::fs::File::open(&gz).map_err(|e| Error::io(&gz, e))?;
        let reader = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        (gz, Box::new(reader))
    } else if plain.exists() {
        let file = std::fs::File::open(&plain).map_err(|e| Error::io(&plain, e))?;
        (plain, Box::new(std::io::BufReader::new(file)))
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
    let limit = known.map_or(MAX_IDX_BYTES, |(_, size)| size);
    let (shape, header, data) = parse_idx(&path, reader, dims, limit)?;
    if let Some((want, _)) = known {
        let mut hash = Sha256::new();
        hash.update(&header);
        hash.update(&data);
        let got = hex(&hash.finalize());
        if got != want {
            return Err(Error::Data(format!(
                "{}: checksum mismatch (SHA-256 of the contents is {got}, MNIST's is {want}); \
                 the file is corrupt or is not MNIST: copy it again, or, for other data in \
                 IDX format, load it without this check (load_data_from with verify false)",
                path.display()
            )));
        }
    }
    Ok((path, shape, data))
}

/// Reads an IDX file of `dims` dimensions from `reader` (`path` names it
/// in errors): magic `0x0000_08_<dims>` (unsigned bytes), then one
/// big-endian `u32` per dimension, then the values. Returns the shape, the
/// header bytes and the values; a header announcing more than `limit`
/// bytes in all is refused before the values are read, and so is a file
/// holding more or fewer values than announced.
#[doc(hidden)]
pub fn parse_idx(
    path: &Path,
    mut reader: impl Read,
    dims: usize,
    limit: u64,
) -> Result<(Vec<usize>, Vec<u8>, Vec<u8>)> {
    let corrupt =
        |what: String| Error::Data(format!("{}: {what}; the file is corrupt", path.display()));
    let unreadable = |e: std::io::Error| {
        Error::Data(format!(
            "{}: cannot be read ({e}); the file is corrupt or truncated: copy it again",
            path.display()
        ))
    };
    let mut header = vec![0; 4 + 4 * dims];
    let mut got = 0;
    while got < header.len() {
        match reader.read(&mut header[got..]) {
            Ok(0) => {
                return Err(corrupt(format!(
                    "only {got} bytes, shorter than the IDX header"
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    let be = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let magic = be(0);
    let want = 0x0800 + dims as u32;
    if magic != want {
        return Err(corrupt(format!(
            "wrong magic number 0x{magic:08x}, expected 0x{want:08x}"
        )));
    }
    let shape: Vec<usize> = (0..dims).map(|d| be(4 + 4 * d) as usize).collect();
    let len = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .filter(|&n| n.saturating_add(header.len() as u64) <= limit)
        .ok_or_else(|| {
            corrupt(format!(
                "its header announces shape {shape:?}, more than the {limit} bytes allowed \
                 (convnet's limit for one IDX file, or MNIST's own size)"
            ))
        })?;
    let mut data = Vec::new();
    reader
        .take(len + 1)
        .read_to_end(&mut data)
        .map_err(unreadable)?;
    if data.len() as u64 != len {
        let found = if data.len() as u64 > len {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        return Err(corrupt(format!(
            "header announces {len} values for shape {shape:?} but {found} follow (truncated?)"
        )));
    }
    Ok((shape, header, data))
}

fn images((path, shape, data): (PathBuf, Vec<usize>, Vec<u8>)) -> Result<Array3<u8>> {
    Array3::from_shape_vec((shape[0], shape[1], shape[2]), data)
        .map_err(|e| Error::Data(format!("{}: {e}; the file is corrupt", path.display())))
}

fn labels((path, shape, data): (PathBuf, Vec<usize>, Vec<u8>)) -> Result<Array1<u8>> {
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

    fn idx(magic: u32, shape: &[u32], values: usize) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in shape {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(vec![1; values]);
        bytes
    }

    #[test]
    fn crafted_headers_are_errors_not_panics() {
        let path = Path::new("x");
        let parse = |bytes: Vec<u8>, limit| parse_idx(path, &bytes[..], 3, limit);
        // Dimensions whose product overflows u64.
        let e = parse(
            idx(0x803, &[u32::MAX, u32::MAX, u32::MAX], 0),
            MAX_IDX_BYTES,
        );
        assert!(e.unwrap_err().to_string().contains("more than the"));
        // A header announcing more than the limit reads nothing more.
        let e = parse(idx(0x803, &[1000, 1000, 1000], 10), 1 << 20);
        assert!(e.unwrap_err().to_string().contains("1048576 bytes allowed"));
        let e = parse(idx(0x803, &[2, 2, 2], 9), MAX_IDX_BYTES).unwrap_err();
        assert!(e.to_string().contains("but more follow"), "{e}");
        let e = parse(idx(0x803, &[2, 2], 0), MAX_IDX_BYTES).unwrap_err();
        assert!(e.to_string().contains("shorter than the IDX header"), "{e}");
        let (shape, header, data) = parse(idx(0x803, &[2, 2, 2], 8), MAX_IDX_BYTES).unwrap();
        assert_eq!((shape, header.len(), data.len()), (vec![2, 2, 2], 16, 8));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_known_size() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // A valid header of 60,000 labels, then 100 MB of zeros: 100 kB packed.
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap(),
            flate2::Compression::best(),
        );
        enc.write_all(&idx(0x801, &[60_000], 0)).unwrap();
        let zeros = vec![0; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap();
        let read = read_idx(dir.path(), FILES[1].0, 1, Some((FILES[1].1, FILES[1].2)));
        let e = read.unwrap_err().to_string();
        assert!(e.contains("but more follow"), "{e}");
    }

    #[test]
    fn a_multi_member_gzip_is_read_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx(0x801, &[6], 6);
        let mut file = std::fs::File::create(dir.path().join("labels.gz")).unwrap();
        for part in [&bytes[..5], &bytes[5..]] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(part).unwrap();
            file.write_all(&enc.finish().unwrap()).unwrap();
        }
        drop(file);
        let (_, shape, data) = read_idx(dir.path(), "labels", 1, None).unwrap();
        assert_eq!((shape, data), (vec![6], vec![1; 6]));
    }
}
