//! Image folders, as Keras's `image_dataset_from_directory` reads them:
//! one sub-folder per class, named after it, holding PNG, JPEG or BMP
//! files (in nested folders too).
//!
//! Only the file list is kept in memory. Pictures are decoded, converted
//! to grey or RGB and resized when a batch asks for them, so a folder
//! larger than memory trains; `fit` decodes the next batches in a
//! background thread while the current one trains
//! ([`crate::data::Samples::prefers_prefetch`]).
//!
//! ```no_run
//! use convnet::datasets::image_folder::{ColorMode, ImageFolder, ImageFolderOptions};
//! let options = ImageFolderOptions {
//!     image_size: (64, 64),
//!     color_mode: ColorMode::Rgb,
//!     scale: 1.0 / 255.0,
//!     ..ImageFolderOptions::default()
//! };
//! let (train, validation) = ImageFolder::open("photos", &options)?.split(0.2)?;
//! for skipped in train.skipped() {
//!     eprintln!("warning: skipped {}: {}", skipped.path.display(), skipped.reason);
//! }
//! let (x, y) = (&train, train.one_hot()?);
//! println!("{} training pictures of {:?}", x.len(), train.class_names());
//! # use convnet::data::Samples;
//! # Ok::<(), convnet::Error>(())
//! ```

use std::io::{Cursor, ErrorKind};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::data::Samples;
use crate::initializers::Rng;
use crate::{Error, Result};

/// The file extensions read as pictures (in any letter case).
pub const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// The largest side, in pixels, that pictures may be resized to: a bound
/// checked before any batch is allocated.
pub const MAX_SIDE: usize = 8192;

/// The most memory, in bytes, that decoding one picture may take, and
/// the largest file read as a picture: 256 MiB, about 67 million RGBA
/// pixels (8192 x 8192). A larger picture is refused before it is
/// decoded, so that a small crafted file cannot take gigabytes; shrink
/// such a picture first (for example with ImageMagick's `convert -resize`).
pub const MAX_PICTURE_BYTES: u64 = 256 << 20;

/// The widest and tallest picture decoded, in pixels.
pub const MAX_PICTURE_SIDE: u32 = 16384;

/// How pictures are converted before they are resized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// One channel: the luminance.
    Grayscale,
    /// Three channels: red, green, blue (Keras's default).
    #[default]
    Rgb,
}

impl ColorMode {
    /// Channels per pixel: 1 or 3.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Grayscale => 1,
            ColorMode::Rgb => 3,
        }
    }

    /// The mode with `channels` channels, if there is one.
    pub fn with_channels(channels: usize) -> Option<Self> {
        match channels {
            1 => Some(ColorMode::Grayscale),
            3 => Some(ColorMode::Rgb),
            _ => None,
        }
    }
}

impl std::str::FromStr for ColorMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "grayscale" | "greyscale" | "grey" | "gray" => Ok(ColorMode::Grayscale),
            "rgb" => Ok(ColorMode::Rgb),
            _ => Err(Error::InvalidArgument(format!(
                "unknown color mode {s:?}: use grayscale or rgb"
            ))),
        }
    }
}

/// Options of [`ImageFolder::open`], with Keras's defaults.
#[derive(Clone, Debug)]
pub struct ImageFolderOptions {
    /// `(height, width)` every picture is resized to, bilinearly
    /// (default (256, 256)).
    pub image_size: (usize, usize),
    /// Grey or colour (default RGB).
    pub color_mode: ColorMode,
    /// Whether to shuffle the pictures, by `seed` (default true). The
    /// validation pictures of [`ImageFolder::split`] are the last ones of
    /// this order, so the same seed holds out the same pictures.
    pub shuffle: bool,
    /// The seed of the shuffling (default 1337).
    pub seed: u64,
    /// What pixel values (0 to 255) are multiplied by (default 1, as
    /// Keras: add a `Rescaling` layer, or give 1/255 here).
    pub scale: f32,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        ImageFolderOptions {
            image_size: (256, 256),
            color_mode: ColorMode::Rgb,
            shuffle: true,
            seed: 1337,
            scale: 1.0,
        }
    }
}

/// A file left out of an [`ImageFolder`], and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// What was wrong with it (empty, not a picture, unreadable).
    pub reason: String,
}

/// The pictures of an image folder, as samples `(height, width, channels)`
/// of `f32`, with their labels: the class folders' indices in
/// alphabetical order.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    class_names: Vec<String>,
    options: ImageFolderOptions,
    skipped: Vec<Skipped>,
}

impl ImageFolder {
    /// Lists the pictures under `dir`'s class folders, checking each
    /// one's header (a file that is empty or no picture is skipped, see
    /// [`ImageFolder::skipped`]), and shuffles them if asked.
    ///
    /// Errors: `dir` is no folder or has no class folder, a class folder
    /// has no picture, no picture is readable, or the options are out of
    /// range.
    pub fn open(dir: impl AsRef<Path>, options: &ImageFolderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        check_options(options)?;
        let class_dirs = class_folders(dir)?;
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (label, class_dir) in class_dirs.iter().enumerate() {
            let pictures = pictures_under(class_dir)?;
            if pictures.is_empty() {
                return Err(Error::Data(format!(
                    "{}: this class folder has no pictures ({}): add some or remove the folder",
                    class_dir.display(),
                    EXTENSIONS.map(|e| format!(".{e}")).join(" ")
                )));
            }
            labels.extend(std::iter::repeat_n(label as u32, pictures.len()));
            files.extend(pictures);
        }
        let checks: Vec<Option<String>> = files.par_iter().map(|f| header_problem(f)).collect();
        let mut kept = Vec::with_capacity(files.len());
        let mut skipped = Vec::new();
        for ((path, label), problem) in files.into_iter().zip(labels).zip(checks) {
            match problem {
                Some(reason) => skipped.push(Skipped { path, reason }),
                None => kept.push((path, label)),
            }
        }
        if kept.is_empty() {
            return Err(Error::Data(format!(
                "{}: none of its {} pictures can be read (the first: {}: {})",
                dir.display(),
                skipped.len(),
                skipped[0].path.display(),
                skipped[0].reason
            )));
        }
        if options.shuffle {
            kept.shuffle(&mut Rng::seed_from_u64(options.seed));
        }
        let class_names = class_dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let (files, labels) = kept.into_iter().unzip();
        Ok(ImageFolder {
            files,
            labels,
            class_names,
            options: options.clone(),
            skipped,
        })
    }

    /// The training and validation parts, as Keras splits them: the last
    /// `floor(fraction · n)` pictures validate, the others train.
    /// `fraction` is in `[0, 1)`; both parts must have a picture.
    pub fn split(self, fraction: f32) -> Result<(ImageFolder, ImageFolder)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::InvalidArgument(format!(
                "validation_split must be in [0, 1), got {fraction}"
            )));
        }
        let n = self.files.len();
        let validation = (f64::from(fraction) * n as f64) as usize;
        if validation == 0 || validation == n {
            return Err(Error::InvalidArgument(format!(
                "validation_split {fraction} of {n} pictures leaves {} training and {validation} \
                 validation pictures: both need one",
                n - validation
            )));
        }
        let mut train = self;
        let mut held_out = train.clone();
        held_out.files = train.files.split_off(n - validation);
        held_out.labels = train.labels.split_off(n - validation);
        held_out.skipped.clear();
        Ok((train, held_out))
    }

    /// The first `n` pictures only (all if there are fewer).
    pub fn first(mut self, n: usize) -> Self {
        self.files.truncate(n);
        self.labels.truncate(n);
        self
    }

    /// The class names: the class folders' names, in alphabetical order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Each picture's class, an index into [`ImageFolder::class_names`].
    pub fn labels(&self) -> Array1<u32> {
        Array1::from(self.labels.clone())
    }

    /// The labels one-hot encoded, `(n, classes)`: the targets of a
    /// categorical cross-entropy.
    pub fn one_hot(&self) -> Result<Array2<f32>> {
        super::to_categorical(&self.labels(), self.class_names.len())
    }

    /// The files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The files left out by [`ImageFolder::open`], with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }
}

impl Samples for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn sample_shape(&self) -> Vec<usize> {
        let (height, width) = self.options.image_size;
        vec![height, width, self.options.color_mode.channels()]
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let len = self.sample_shape().iter().product::<usize>().max(1);
        indices
            .par_iter()
            .zip(out.par_chunks_mut(len))
            .try_for_each(|(&i, out)| {
                let (height, width) = self.options.image_size;
                let settings = (height, width, self.options.color_mode);
                load_picture(&self.files[i], settings, self.options.scale, out)
            })
    }

    fn prefers_prefetch(&self) -> bool {
        true
    }
}

/// Errors for options no picture can be made with.
fn check_options(options: &ImageFolderOptions) -> Result<()> {
    let (height, width) = options.image_size;
    if !(1..=MAX_SIDE).contains(&height) || !(1..=MAX_SIDE).contains(&width) {
        return Err(Error::InvalidArgument(format!(
            "image_size {height}x{width}: each side must be 1 to {MAX_SIDE} pixels"
        )));
    }
    if !options.scale.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "scale must be finite, got {}",
            options.scale
        )));
    }
    Ok(())
}

/// The sub-folders of `dir`, sorted by name: one per class.
fn class_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders: Vec<PathBuf> = entries(dir)?
        .into_iter()
        .filter(|(_, is_dir)| *is_dir)
        .map(|(path, _)| path)
        .collect();
    if folders.is_empty() {
        return Err(Error::Data(format!(
            "{}: no class folders in it; put each class's pictures in a sub-folder named \
             after the class (e.g. {0}/cat/1.png, {0}/dog/2.png)",
            dir.display()
        )));
    }
    folders.sort();
    Ok(folders)
}

/// The picture files under `dir` and its sub-folders, sorted by path.
fn pictures_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pictures = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for (path, is_dir) in entries(&folder)? {
            if is_dir {
                pending.push(path);
            } else if is_picture_name(&path) {
                pictures.push(path);
            }
        }
    }
    pictures.sort();
    Ok(pictures)
}

/// The entries of `dir`, each with whether it is a folder. Links are not
/// followed into folders, so a link loop cannot make the walk endless.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let io = |e| Error::io(dir, e);
    std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| {
            let entry = entry.map_err(io)?;
            Ok((entry.path(), entry.file_type().map_err(io)?.is_dir()))
        })
        .collect()
}

fn is_picture_name(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(extension))
}

/// Why the picture at `path` cannot be used, from its header alone, or
/// `None` if it looks fine.
fn header_problem(path: &Path) -> Option<String> {
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(e) => return Some(e.to_string()),
    };
    if size == 0 {
        return Some("the file is empty".into());
    }
    let dimensions = reader(path).and_then(|r| r.into_dimensions().map_err(|e| e.to_string()));
    match dimensions {
        Ok((0, _) | (_, 0)) => Some("the picture has no pixels".into()),
        Ok(_) => None,
        Err(e) => Some(e),
    }
}

/// A decoder for the picture at `path`, its format told by its contents,
/// held to the limits above.
fn reader(
    path: &Path,
) -> std::result::Result<ImageReader<std::io::BufReader<std::fs::File>>, String> {
    let mut reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?;
    reader.limits(limits());
    Ok(reader)
}

/// [`MAX_PICTURE_BYTES`] and [`MAX_PICTURE_SIDE`] for the `image` crate.
fn limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(MAX_PICTURE_BYTES);
    limits
}

/// The picture at `path` (PNG, JPEG or BMP, told by its contents), held to
/// [`MAX_PICTURE_BYTES`] and [`MAX_PICTURE_SIDE`]; a file cut short is an
/// error, not a picture with a grey end. The error says what is wrong.
///
/// The picture is turned or mirrored as its EXIF orientation tag says, as
/// image viewers show it: a phone's photo taken upright but stored on its
/// side comes out upright. A quarter turn holds a second copy of the
/// pixels for a moment.
pub fn decode_picture(path: &Path) -> std::result::Result<DynamicImage, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_PICTURE_BYTES {
        return Err(format!(
            "the file is {size} bytes, over convnet's limit of {MAX_PICTURE_BYTES} bytes for one \
             picture; shrink it first"
        ));
    }
    decode_picture_bytes(&std::fs::read(path).map_err(|e| e.to_string())?)
}

/// [`decode_picture`] for a picture already in memory.
#[doc(hidden)]
pub fn decode_picture_bytes(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    reader.limits(limits());
    // The JPEG decoder fills a cut-short picture with grey and says nothing.
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_has_end(bytes) {
        return Err("the file is cut short (the JPEG has no end marker)".into());
    }
    // What `ImageReader::decode` does, keeping the decoder to ask it for
    // the EXIF orientation first.
    let mut decoder = reader.into_decoder().map_err(decoding)?;
    let orientation = decoder.orientation().map_err(decoding)?;
    limits().reserve(decoder.total_bytes()).map_err(decoding)?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(decoding)?;
    picture.apply_orientation(orientation);
    Ok(picture)
}

/// What a decoding error means, for the person who gave the picture.
fn decoding(e: ImageError) -> String {
    match e {
        ImageError::Limits(limit) => format!(
            "{limit}: the picture is larger than convnet decodes ({MAX_PICTURE_SIDE} pixels a \
             side, {MAX_PICTURE_BYTES} bytes decoded); shrink it first"
        ),
        ImageError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            "the file is cut short".into()
        }
        other => other.to_string(),
    }
}

/// Whether a JPEG's last scan is followed by an end-of-image marker
/// (`FF D9`), which a cut-short file lacks. Scan data never holds `FF D9`
/// (a data byte `FF` is written `FF 00`), and an embedded thumbnail's end
/// marker comes before the main picture's scans.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_scan, last_end), (Some(scan), Some(end)) if end > scan)
}

/// The picture at `path`, decoded and converted to `color_mode`, resized
/// to `(height, width)` (bilinear) and multiplied by `scale`, into `out`
/// (`height · width · channels` values): a sample as [`ImageFolder`]
/// makes it, for pictures to predict on.
pub fn load_picture(
    path: &Path,
    (height, width, color_mode): (usize, usize, ColorMode),
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let picture =
        decode_picture(path).map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    picture_sample(&picture, (height, width, color_mode), scale, out);
    Ok(())
}

/// A decoded picture as a sample: converted to `color_mode`, resized to
/// `(height, width)` (bilinear; untouched when it already has that size)
/// and multiplied by `scale`, into `out` (`height · width · channels`
/// values). What [`load_picture`] does after decoding.
pub fn picture_sample(
    picture: &DynamicImage,
    (height, width, color_mode): (usize, usize, ColorMode),
    scale: f32,
    out: &mut [f32],
) {
    let (w, h) = (width as u32, height as u32);
    let resized = |p: DynamicImage| {
        if (p.width(), p.height()) == (w, h) {
            p
        } else {
            p.resize_exact(w, h, FilterType::Triangle)
        }
    };
    let pixels = match color_mode {
        ColorMode::Grayscale => resized(DynamicImage::ImageLuma8(picture.to_luma8())).into_bytes(),
        ColorMode::Rgb => resized(DynamicImage::ImageRgb8(picture.to_rgb8())).into_bytes(),
    };
    for (o, &p) in out.iter_mut().zip(&pixels) {
        *o = f32::from(p) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// A folder with classes `a` (3 grey pictures of value 10, 20, 30)
    /// and `b` (2 colour ones), plus a text file and an empty `.png`.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b/nested");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for v in [1u8, 2, 3] {
            let picture = GrayImage::from_pixel(4, 6, Luma([v * 10]));
            picture.save(a.join(format!("{v}.png"))).unwrap();
        }
        for v in [4u8, 5] {
            let picture = RgbImage::from_pixel(8, 12, Rgb([v * 10, 0, 255]));
            picture.save(b.join(format!("{v}.bmp"))).unwrap();
        }
        std::fs::write(a.join("notes.txt"), "not a picture").unwrap();
        std::fs::write(a.join("empty.png"), "").unwrap();
        dir
    }

    fn options(color_mode: ColorMode, shuffle: bool) -> ImageFolderOptions {
        ImageFolderOptions {
            image_size: (6, 4),
            color_mode,
            shuffle,
            ..ImageFolderOptions::default()
        }
    }

    #[test]
    fn classes_come_from_folder_names_and_bad_files_are_skipped() {
        let dir = folder();
        let images = ImageFolder::open(dir.path(), &options(ColorMode::Grayscale, false)).unwrap();
        assert_eq!(images.class_names(), ["a", "b"]);
        assert_eq!(images.labels().to_vec(), [0, 0, 0, 1, 1]);
        assert_eq!(images.skipped().len(), 1);
        assert!(images.skipped()[0].path.ends_with("a/empty.png"));
        assert_eq!(images.skipped()[0].reason, "the file is empty");
        let mut x = vec![0.0; 2 * 24];
        images.gather(&[2, 0], &mut x).unwrap();
        assert!(x[..24].iter().all(|&v| v == 30.0));
        assert!(x[24..].iter().all(|&v| v == 10.0));
    }

    #[test]
    fn colour_pictures_are_resized_and_scaled() {
        let dir = folder();
        let options = ImageFolderOptions {
            scale: 0.5,
            ..options(ColorMode::Rgb, false)
        };
        let images = ImageFolder::open(dir.path(), &options).unwrap();
        assert_eq!(images.sample_shape(), [6, 4, 3]);
        let mut x = vec![0.0; 72];
        images.gather(&[4], &mut x).unwrap();
        // A uniform picture stays uniform through a bilinear resize.
        assert!(x.chunks(3).all(|p| p == [25.0, 0.0, 127.5]), "{x:?}");
    }

    #[test]
    fn shuffling_and_splitting_follow_the_seed() {
        let dir = folder();
        let open = |seed| {
            let options = ImageFolderOptions {
                seed,
                ..options(ColorMode::Grayscale, true)
            };
            ImageFolder::open(dir.path(), &options).unwrap()
        };
        assert_eq!(open(7).files(), open(7).files());
        let orders: std::collections::HashSet<_> =
            (0..10).map(|s| open(s).files().to_vec()).collect();
        assert!(orders.len() > 1, "the seed changes the order");
        let all = open(7);
        let (train, validation) = all.clone().split(0.4).unwrap();
        assert_eq!((train.len(), validation.len()), (3, 2));
        assert_eq!(validation.files(), &all.files()[3..]);
        assert_eq!(train.labels().to_vec(), all.labels().to_vec()[..3]);
        assert!(all.clone().split(0.1).is_err(), "0 validation pictures");
        assert!(all.split(1.0).is_err());
    }

    #[test]
    fn folders_without_classes_or_pictures_are_refused() {
        let empty = tempfile::tempdir().unwrap();
        let message = |dir: &Path| {
            ImageFolder::open(dir, &ImageFolderOptions::default())
                .unwrap_err()
                .to_string()
        };
        assert!(message(empty.path()).contains("no class folders"));
        std::fs::create_dir(empty.path().join("cat")).unwrap();
        assert!(message(empty.path()).contains("cat: this class folder has no pictures"));
        std::fs::write(empty.path().join("cat/1.jpg"), "junk").unwrap();
        assert!(message(empty.path()).contains("none of its 1 pictures can be read"));
        assert!(message(&empty.path().join("missing")).contains("missing"));
        let options = ImageFolderOptions {
            image_size: (0, 3),
            ..ImageFolderOptions::default()
        };
        let error = ImageFolder::open(empty.path(), &options).unwrap_err();
        assert!(error.to_string().contains("image_size 0x3"));
    }

    #[test]
    fn a_picture_corrupted_after_opening_fails_its_batch() {
        let dir = folder();
        let images = ImageFolder::open(dir.path(), &options(ColorMode::Grayscale, false)).unwrap();
        std::fs::write(&images.files()[1], b"\x89PNG\r\n\x1a\n garbage").unwrap();
        let mut x = vec![0.0; 48];
        let error = images.gather(&[0, 1], &mut x).unwrap_err().to_string();
        assert!(error.contains("2.png"), "{error}");
    }
}
