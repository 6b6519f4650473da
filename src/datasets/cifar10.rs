//! CIFAR-10 in its binary format (`cifar-10-batches-bin`): files
//! `data_batch_1.bin` to `data_batch_5.bin` and `test_batch.bin` of
//! 10,000 records each, a record being one label byte (0 to 9) and
//! 3,072 bytes of a 32x32 colour picture, planes of red, then green, then
//! blue, each row by row. Pictures come out NHWC, as Keras's
//! `cifar10.load_data()` gives them.

use std::io::Read;
use std::path::Path;

use ndarray::{Array1, Array4};

use crate::{Error, Result};

/// The pictures' side, in pixels.
pub const SIDE: usize = 32;

/// Bytes per record: the label, then 3 planes of 32x32.
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;

/// The class names, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The training files, then the test file, in a CIFAR-10 folder.
pub const TRAINING_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];

/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// Records a batch file may hold: the official ones hold 10,000; this
/// bound stops a huge file from being read whole.
pub const MAX_RECORDS: usize = 100_000;

/// Pictures `(N, 32, 32, 3)` and labels `(N,)`.
pub type Pictures = (Array4<u8>, Array1<u8>);

/// The records of one batch file.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("data_batch_1.bin");
/// let mut record = vec![7u8]; // a horse...
/// record.extend(std::iter::repeat_n(200, 3072)); // ...in white
/// std::fs::write(&path, &record)?;
/// let (x, y) = convnet::datasets::cifar10::load_batch(&path)?;
/// assert_eq!((x.shape(), y[0]), (&[1, 32, 32, 3][..], 7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_batch(path: &Path) -> Result<Pictures> {
    let bytes = read_bounded(path)?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::Data(format!(
            "{}: {} bytes is not a whole number of CIFAR-10 records of {RECORD} bytes \
             (a label byte and 3,072 pixel bytes)",
            path.display(),
            bytes.len()
        )));
    }
    let n = bytes.len() / RECORD;
    let labels: Vec<u8> = bytes.chunks_exact(RECORD).map(|r| r[0]).collect();
    if let Some(i) = labels.iter().position(|&l| l >= 10) {
        return Err(Error::Data(format!(
            "{}: record {i} has label {}, but CIFAR-10 labels are 0 to 9",
            path.display(),
            labels[i]
        )));
    }
    let pictures = Array4::from_shape_fn((n, SIDE, SIDE, 3), |(i, row, col, channel)| {
        bytes[i * RECORD + 1 + channel * SIDE * SIDE + row * SIDE + col]
    });
    Ok((pictures, Array1::from(labels)))
}

/// The training and test pictures of the CIFAR-10 folder `dir`, as
/// `cifar10.load_data()` returns them.
pub fn load_data_from(dir: &Path) -> Result<(Pictures, Pictures)> {
    let batches = TRAINING_FILES
        .iter()
        .map(|name| load_batch(&dir.join(name)))
        .collect::<Result<Vec<_>>>()?;
    let train = joined(batches)?;
    let test = load_batch(&dir.join(TEST_FILE))?;
    Ok((train, test))
}

/// Whether `dir` looks like a CIFAR-10 folder (has its first batch file).
pub fn is_cifar10_dir(dir: &Path) -> bool {
    dir.join(TRAINING_FILES[0]).is_file()
}

/// The batches one after another.
fn joined(batches: Vec<Pictures>) -> Result<Pictures> {
    let shape_error = |e: ndarray::ShapeError| Error::Shape(e.to_string());
    let pictures: Vec<_> = batches.iter().map(|(x, _)| x.view()).collect();
    let labels: Vec<_> = batches.iter().map(|(_, y)| y.view()).collect();
    Ok((
        ndarray::concatenate(ndarray::Axis(0), &pictures).map_err(shape_error)?,
        ndarray::concatenate(ndarray::Axis(0), &labels).map_err(shape_error)?,
    ))
}

/// The bytes of `path`, refusing a file of more than [`MAX_RECORDS`]
/// records before reading it.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let limit = (MAX_RECORDS * RECORD) as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Data(format!(
            "{}: more than {MAX_RECORDS} records; a CIFAR-10 batch file holds 10,000",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of label `label` whose pixel (row, col, channel) is
    /// `row + 2·col + 100·channel` (mod 256).
    fn record(label: u8) -> Vec<u8> {
        let mut bytes = vec![label];
        for channel in 0..3 {
            for row in 0..SIDE {
                for col in 0..SIDE {
                    bytes.push((row + 2 * col + 100 * channel) as u8);
                }
            }
        }
        bytes
    }

    #[test]
    fn planar_records_become_nhwc_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test_batch.bin");
        std::fs::write(&path, [record(3), record(9)].concat()).unwrap();
        let (x, y) = load_batch(&path).unwrap();
        assert_eq!(y.to_vec(), [3, 9]);
        assert_eq!(x.shape(), [2, 32, 32, 3]);
        assert_eq!(x[[1, 5, 7, 0]], 19);
        assert_eq!(x[[1, 5, 7, 2]], 219);
        assert_eq!(x[[0, 31, 31, 1]], (31 + 62 + 100) as u8);
    }

    #[test]
    fn the_six_files_load_as_training_and_test_sets() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in TRAINING_FILES.iter().enumerate() {
            std::fs::write(dir.path().join(name), record(i as u8)).unwrap();
        }
        assert!(is_cifar10_dir(dir.path()));
        assert!(load_data_from(dir.path()).is_err(), "no test file yet");
        std::fs::write(dir.path().join(TEST_FILE), record(8)).unwrap();
        let ((x, y), (tx, ty)) = load_data_from(dir.path()).unwrap();
        assert_eq!((x.shape()[0], y.to_vec()), (5, vec![0, 1, 2, 3, 4]));
        assert_eq!((tx.shape()[0], ty.to_vec()), (1, vec![8]));
    }

    #[test]
    fn truncated_files_and_bad_labels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data_batch_1.bin");
        std::fs::write(&path, &record(1)[..3000]).unwrap();
        let error = load_batch(&path).unwrap_err().to_string();
        assert!(
            error.contains("3000 bytes is not a whole number"),
            "{error}"
        );
        std::fs::write(&path, [record(1), record(10)].concat()).unwrap();
        let error = load_batch(&path).unwrap_err().to_string();
        assert!(error.contains("record 1 has label 10"), "{error}");
        std::fs::write(&path, []).unwrap();
        assert!(load_batch(&path).is_err());
        let missing = load_batch(&dir.path().join("nope.bin")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }
}
