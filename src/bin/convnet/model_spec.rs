//! `train --model`: a ready-made model by name (`lenet`, `alexnet`, `cifar10-cnn`,
//! `vgg-small`), made for the data's picture size and classes, or an
//! architecture file (`FILE.json`, in the format of `Sequential::to_json`)
//! that must fit them.

use std::path::{Path, PathBuf};

use convnet::{Error, Result, Sequential};

use super::train::TrainArgs;
use super::train_data::TrainingData;

/// What `--model` names.
pub enum ModelSpec {
    /// A ready-made model.
    Named(String),
    /// An architecture file and its text.
    File { path: PathBuf, json: String },
}

impl ModelSpec {
    /// `--model`'s value: a file when it ends in `.json` or names an
    /// existing file, else a ready-made model's name.
    pub fn parse(model: &str) -> Result<Self> {
        let path = Path::new(model);
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if !is_json && !path.is_file() {
            convnet::models::default_input(model)?;
            return Ok(ModelSpec::Named(model.to_string()));
        }
        if path.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "--model {model} is a folder: name an architecture file (.json)"
            )));
        }
        let json = read_bounded(path)?;
        // Parsed now, so that a malformed file fails before the data loads.
        let spec = ModelSpec::File {
            path: path.to_path_buf(),
            json,
        };
        spec.file_model(0)?;
        Ok(spec)
    }

    /// The model's name for messages and the metrics file.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Named(name) => name.clone(),
            ModelSpec::File { path, .. } => path.display().to_string(),
        }
    }

    /// The `[height, width, channels]` an image folder's pictures are made
    /// into: an architecture file's input shape, or, for a ready-made
    /// model, `--image-size` and `--color-mode`, else the model's usual input.
    pub fn input_for_folders(&self, args: &TrainArgs) -> Result<[usize; 3]> {
        let channels = args.color_mode.map(|c| c.channels());
        match self {
            ModelSpec::Named(name) => {
                let [h, w, c] = convnet::models::default_input(name)?;
                let (h, w) = args.image_size.unwrap_or((h, w));
                Ok([h, w, channels.unwrap_or(c)])
            }
            ModelSpec::File { path, .. } => {
                let shape = self.declared_input()?;
                let [h, w, c] = shape;
                let size_differs = args.image_size.is_some_and(|size| size != (h, w));
                if size_differs || channels.is_some_and(|given| given != c) {
                    return Err(Error::InvalidArgument(format!(
                        "{}: the model takes {h}x{w} pictures of {c} channels; leave out \
                         --image-size and --color-mode, or change its input_shape",
                        path.display()
                    )));
                }
                Ok(shape)
            }
        }
    }

    /// The model for `data`'s pictures and classes, with weights from
    /// `seed`, after the `augment` layers, built.
    pub fn model_for(
        &self,
        data: &TrainingData,
        seed: u64,
        augment: &[Augment],
    ) -> Result<Sequential> {
        let model = self.bare_model_for(data, seed)?;
        if augment.is_empty() {
            return Ok(model);
        }
        let mut augmented = Sequential::with_seed(seed);
        for (i, kind) in augment.iter().enumerate() {
            let input = (i == 0).then(|| model.input_shape().to_vec());
            augmented.add_boxed(kind.layer(input.as_deref()));
        }
        for layer in model.into_layers() {
            augmented.add_boxed(layer);
        }
        augmented.build()?;
        Ok(augmented)
    }

    /// [`ModelSpec::model_for`] without augmentation.
    fn bare_model_for(&self, data: &TrainingData, seed: u64) -> Result<Sequential> {
        let input = data.input_shape();
        let classes = data.class_names.len();
        let shown = input
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x");
        match self {
            ModelSpec::Named(name) => {
                let &[h, w, c] = input.as_slice() else {
                    unreachable!("pictures are height x width x channels")
                };
                let mut model = convnet::models::by_name_for(name, seed, [h, w, c], classes)?;
                model.build().map_err(|e| {
                    Error::InvalidArgument(format!(
                        "--model {name} cannot take {shown} pictures: {e}"
                    ))
                })?;
                Ok(model)
            }
            ModelSpec::File { path, .. } => {
                let mut model = self.file_model(seed)?;
                model.build().map_err(|e| in_file(path, e))?;
                if model.input_shape() != input {
                    return Err(Error::InvalidArgument(format!(
                        "{}: the model takes inputs of {:?}, but the pictures are {shown} ({:?})",
                        path.display(),
                        model.input_shape(),
                        input
                    )));
                }
                if model.output_shape() != [classes] {
                    return Err(Error::InvalidArgument(format!(
                        "{}: the model's output is {:?}, but the data has {classes} classes \
                         ({}): end the model in a Dense layer of {classes} units",
                        path.display(),
                        model.output_shape(),
                        data.class_names.join(", ")
                    )));
                }
                Ok(model)
            }
        }
    }

    /// The model as named: a ready-made one for its usual input, or the
    /// architecture file's; not built.
    pub fn model(&self, seed: u64) -> Result<Sequential> {
        match self {
            ModelSpec::Named(name) => convnet::models::by_name(name, seed),
            ModelSpec::File { .. } => self.file_model(seed),
        }
    }

    /// The architecture file's model, its seed replaced by `seed`.
    fn file_model(&self, seed: u64) -> Result<Sequential> {
        let ModelSpec::File { path, json } = self else {
            unreachable!("only for files")
        };
        let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            Error::InvalidArgument(format!("{}: not valid JSON: {e}", path.display()))
        })?;
        if let Some(object) = value.as_object_mut() {
            object.insert("seed".into(), seed.into());
        }
        Sequential::from_json(&value.to_string()).map_err(|e| in_file(path, e))
    }

    /// The input shape the architecture file's first layer declares.
    fn declared_input(&self) -> Result<[usize; 3]> {
        let ModelSpec::File { path, .. } = self else {
            unreachable!("only for files")
        };
        let model = self.file_model(0)?;
        let declared = model.layers().next().and_then(|l| l.declared_input_shape());
        match declared {
            Some(&[h, w, c]) => Ok([h, w, c]),
            other => Err(Error::InvalidArgument(format!(
                "{}: the first layer must declare an input_shape [height, width, channels] \
                 (found {other:?})",
                path.display()
            ))),
        }
    }
}

/// The augmentations of `train --augment`: layers that change each
/// training picture at random, and leave pictures alone at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Augment {
    /// Mirror left-right, half the time (not for digits or text).
    Flip,
    /// Shift by up to 10% of the height and width.
    Translate,
    /// Turn by up to 18 degrees either way.
    Rotate,
    /// Zoom in or out by up to 10%.
    Zoom,
}

impl Augment {
    /// What `--augment` alone asks for: changes that keep digits digits.
    pub const DEFAULT: [Augment; 3] = [Augment::Translate, Augment::Rotate, Augment::Zoom];

    /// The layer, with the model's input shape if it comes first.
    fn layer(self, input_shape: Option<&[usize]>) -> Box<dyn convnet::layers::Layer> {
        use convnet::layers::{
            FlipMode, RandomFlip, RandomRotation, RandomTranslation, RandomZoom,
        };
        macro_rules! with_input {
            ($layer:expr) => {
                match input_shape {
                    Some(shape) => Box::new($layer.input_shape(shape)),
                    None => Box::new($layer),
                }
            };
        }
        match self {
            Augment::Flip => with_input!(RandomFlip::new(FlipMode::Horizontal)),
            Augment::Translate => with_input!(RandomTranslation::new(0.1, 0.1)),
            Augment::Rotate => with_input!(RandomRotation::new(0.05)),
            Augment::Zoom => with_input!(RandomZoom::new(0.1)),
        }
    }
}

/// An error about the architecture file at `path`, naming it.
fn in_file(path: &Path, e: Error) -> Error {
    Error::InvalidArgument(format!("{}: {}", path.display(), e).replace("invalid argument: ", ""))
}

/// The largest architecture file read: far more than any real one needs.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// The text of `path`, refusing a file over [`MAX_FILE_BYTES`] unread.
fn read_bounded(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{}: {size} bytes is too large for an architecture file (at most {MAX_FILE_BYTES})",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}
