//! What `convnet train` trains on, told by what `--data-dir` holds: the
//! four MNIST IDX files, CIFAR-10's binary batch files, or an image folder
//! (one sub-folder per class). Every kind comes out the same way: pixels
//! scaled into [0, 1], one-hot labels, class names, and the held-out parts.

use std::path::Path;

use convnet::data::{Rescaled, Samples};
use convnet::datasets::cifar10;
use convnet::datasets::image_folder::{ColorMode, ImageFolder, ImageFolderOptions};
use convnet::datasets::{mnist, to_categorical};
use convnet::{Error, Result};
use ndarray::{Array1, Array2, Array4, Axis, s};

/// Pixels times this make the model's inputs: [0, 1], for every kind of data.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// Pictures, in memory as bytes or decoded from files batch by batch.
pub enum Pictures {
    /// `(N, height, width, channels)` bytes.
    Bytes(Array4<u8>),
    /// An image folder's pictures.
    Folder(ImageFolder),
}

impl Samples for Pictures {
    fn len(&self) -> usize {
        match self {
            Pictures::Bytes(bytes) => bytes.len_of(Axis(0)),
            Pictures::Folder(folder) => folder.len(),
        }
    }

    fn sample_shape(&self) -> Vec<usize> {
        match self {
            Pictures::Bytes(bytes) => bytes.shape()[1..].to_vec(),
            Pictures::Folder(folder) => folder.sample_shape(),
        }
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        match self {
            Pictures::Bytes(bytes) => Rescaled::new(bytes, PIXEL_SCALE).gather(indices, out),
            Pictures::Folder(folder) => folder.gather(indices, out),
        }
    }

    fn prefers_prefetch(&self) -> bool {
        matches!(self, Pictures::Folder(_))
    }
}

/// Pictures and their one-hot labels.
pub struct Part {
    pub x: Pictures,
    pub y: Array2<f32>,
}

impl Part {
    pub fn len(&self) -> usize {
        self.y.nrows()
    }

    fn of_bytes(x: Array4<u8>, labels: &Array1<u8>, classes: usize) -> Result<Part> {
        let y = to_categorical(labels, classes)?;
        Ok(Part {
            x: Pictures::Bytes(x),
            y,
        })
    }

    fn of_folder(folder: ImageFolder) -> Result<Part> {
        let y = folder.one_hot()?;
        Ok(Part {
            x: Pictures::Folder(folder),
            y,
        })
    }

    /// The first `n` samples (all if fewer), and the rest.
    fn split_at(self, n: usize) -> Result<(Part, Part)> {
        let n = n.min(self.len());
        let (head_y, tail_y) = (
            self.y.slice(s![..n, ..]).to_owned(),
            self.y.slice(s![n.., ..]).to_owned(),
        );
        let (head, tail) = match self.x {
            Pictures::Bytes(x) => (
                Pictures::Bytes(x.slice(s![..n, .., .., ..]).to_owned()),
                Pictures::Bytes(x.slice(s![n.., .., .., ..]).to_owned()),
            ),
            Pictures::Folder(_) => {
                return Err(Error::InvalidArgument(
                    "an image folder is split with ImageFolder::split".into(),
                ));
            }
        };
        Ok((Part { x: head, y: head_y }, Part { x: tail, y: tail_y }))
    }
}

/// Everything `train` needs from the data.
pub struct TrainingData {
    /// What it is, for the first line `train` prints: "MNIST images".
    pub kind: String,
    pub train: Part,
    /// Validated on after every epoch.
    pub validation: Option<Part>,
    /// Scored once at the end (MNIST's and CIFAR-10's test sets, or
    /// `--test-dir`).
    pub test: Option<Part>,
    pub class_names: Vec<String>,
}

impl TrainingData {
    /// The shape of one input sample.
    pub fn input_shape(&self) -> Vec<usize> {
        self.train.x.sample_shape()
    }

    /// Samples held out of training, in all.
    pub fn held_out(&self) -> usize {
        self.validation.as_ref().map_or(0, Part::len)
    }
}

/// Where the data is and how to read it: `train`'s flags.
pub struct DataRequest<'a> {
    /// `--data-dir`, or MNIST's default folder.
    pub dir: Option<&'a Path>,
    /// Check MNIST's SHA-256 sums.
    pub verify: bool,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// The fraction of the training data to validate on instead of on
    /// the test data (0 for none).
    pub validation_split: f32,
    /// An image folder's picture size and colours.
    pub image_size: (usize, usize),
    pub color_mode: ColorMode,
    /// Shuffles an image folder before its split.
    pub seed: u64,
    /// A folder of test pictures, with the same class folders.
    pub test_dir: Option<&'a Path>,
}

/// What kind of data `dir` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Mnist,
    Cifar10,
    ImageFolder,
}

/// The kind of data in `--data-dir` (MNIST when there is none).
pub fn kind_of(dir: Option<&Path>) -> DataKind {
    match dir {
        None => DataKind::Mnist,
        Some(dir) if cifar10::is_cifar10_dir(dir) => DataKind::Cifar10,
        Some(dir) if is_mnist_dir(&mnist::resolve(dir)) => DataKind::Mnist,
        // A missing folder is reported as MNIST's was before image
        // folders existed: the files it lacks, with --data-dir.
        Some(dir) if !dir.exists() => DataKind::Mnist,
        Some(_) => DataKind::ImageFolder,
    }
}

/// Whether `dir` holds MNIST's training images, gzipped or not.
fn is_mnist_dir(dir: &Path) -> bool {
    ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
        .iter()
        .any(|name| dir.join(name).is_file())
}

/// Reads the data `request` asks for.
pub fn load(request: &DataRequest) -> Result<TrainingData> {
    if request.test_dir.is_some() && kind_of(request.dir) != DataKind::ImageFolder {
        return Err(Error::InvalidArgument(
            "--test-dir goes with an image folder in --data-dir; MNIST and CIFAR-10 \
             bring their own test sets"
                .into(),
        ));
    }
    match kind_of(request.dir) {
        DataKind::Mnist => load_mnist(request),
        DataKind::Cifar10 => load_cifar10(request),
        DataKind::ImageFolder => load_folder(request),
    }
}

/// MNIST: the test set validates after every epoch unless a split of the
/// training images does; it gives the final scores.
fn load_mnist(request: &DataRequest) -> Result<TrainingData> {
    let ((train_x, train_y), (test_x, test_y)) =
        super::train::load_mnist(request.dir, request.verify)?;
    let grey = |x: ndarray::Array3<u8>| x.insert_axis(Axis(3));
    from_arrays(
        "MNIST images",
        (grey(train_x), train_y),
        (grey(test_x), test_y),
        digit_names(),
        request,
    )
}

fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

fn load_cifar10(request: &DataRequest) -> Result<TrainingData> {
    let dir = request.dir.expect("CIFAR-10 is only found in --data-dir");
    let (train, test) = cifar10::load_data_from(dir)?;
    let names = cifar10::CLASS_NAMES.map(String::from).to_vec();
    from_arrays("CIFAR-10 pictures", train, test, names, request)
}

/// In-memory training and test pictures, limited and split as asked.
fn from_arrays(
    kind: &str,
    (train_x, train_y): (Array4<u8>, Array1<u8>),
    (test_x, test_y): (Array4<u8>, Array1<u8>),
    class_names: Vec<String>,
    request: &DataRequest,
) -> Result<TrainingData> {
    let classes = class_names.len();
    let limit = |n: Option<usize>| n.unwrap_or(usize::MAX);
    let (train, _) =
        Part::of_bytes(train_x, &train_y, classes)?.split_at(limit(request.train_limit))?;
    let (test, _) =
        Part::of_bytes(test_x, &test_y, classes)?.split_at(limit(request.test_limit))?;
    let (train, validation) = match request.validation_split {
        0.0 => (train, None),
        fraction => {
            let n = train.len();
            let count = convnet::data::training_count(n, fraction);
            if count == 0 || count == n {
                return Err(Error::InvalidArgument(format!(
                    "--validation-split {fraction} of {n} images leaves {count} training and {} \
                     validation images",
                    n - count
                )));
            }
            let (train, validation) = train.split_at(count)?;
            (train, Some(validation))
        }
    };
    Ok(TrainingData {
        kind: kind.to_string(),
        train,
        validation,
        test: Some(test),
        class_names,
    })
}

/// An image folder, split by `--validation-split` after a shuffle by the
/// seed, and `--test-dir`'s pictures, which must have the same classes.
fn load_folder(request: &DataRequest) -> Result<TrainingData> {
    let dir = request
        .dir
        .expect("an image folder is only found in --data-dir");
    let options = ImageFolderOptions {
        image_size: request.image_size,
        color_mode: request.color_mode,
        shuffle: true,
        seed: request.seed,
        scale: PIXEL_SCALE,
    };
    let all = open_folder(dir, &options, request.train_limit)?;
    let class_names = all.class_names().to_vec();
    let (train, validation) = match request.validation_split {
        0.0 => (all, None),
        fraction => {
            let (train, validation) = all
                .split(fraction)
                .map_err(|e| flag_error(e, "validation_split", "--validation-split"))?;
            (train, Some(Part::of_folder(validation)?))
        }
    };
    let test = match request.test_dir {
        None => None,
        Some(test_dir) => {
            let test_options = ImageFolderOptions {
                shuffle: false,
                ..options
            };
            let test = open_folder(test_dir, &test_options, request.test_limit)?;
            if test.class_names() != class_names {
                return Err(Error::InvalidArgument(format!(
                    "{}: its class folders {:?} are not those of {} ({:?})",
                    test_dir.display(),
                    test.class_names(),
                    dir.display(),
                    class_names
                )));
            }
            Some(Part::of_folder(test)?)
        }
    };
    Ok(TrainingData {
        kind: format!(
            "pictures of {} classes from {}",
            class_names.len(),
            dir.display()
        ),
        train: Part::of_folder(train)?,
        validation,
        test,
        class_names,
    })
}

/// The pictures of the image folder `dir`, warning on stderr of each file
/// left out; the first `limit` only (in shuffled order) if asked.
fn open_folder(
    dir: &Path,
    options: &ImageFolderOptions,
    limit: Option<usize>,
) -> Result<ImageFolder> {
    let folder = ImageFolder::open(dir, options).map_err(|e| match e {
        Error::Data(message) if message.contains("no class folders") => Error::Data(format!(
            "{}: no data found: neither MNIST's IDX files, nor CIFAR-10's binary files \
             (data_batch_1.bin...), nor class folders of pictures (DIR/cat/1.png, \
             DIR/dog/2.png...)",
            dir.display()
        )),
        other => flag_error(other, "image_size", "--image-size"),
    })?;
    for skipped in folder.skipped() {
        eprintln!(
            "warning: skipped {}: {}",
            skipped.path.display(),
            skipped.reason
        );
    }
    Ok(match limit {
        Some(n) if n < folder.len() => folder.first(n),
        _ => folder,
    })
}

/// A library message about `field`, in the words of the flag that sets it.
fn flag_error(e: Error, field: &str, flag: &str) -> Error {
    match e {
        Error::InvalidArgument(message) => Error::InvalidArgument(message.replace(field, flag)),
        other => other,
    }
}
