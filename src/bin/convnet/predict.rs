//! `convnet predict`: the class of each picture, by a trained model.

use std::path::{Path, PathBuf};

use clap::Args;
use convnet::datasets::image_folder::ColorMode;
use convnet::preprocess::{MNIST_SIDE, mnist_digit};
use convnet::{Error, Result, Sequential};
use ndarray::{Array4, Axis};

use super::model_args::ModelArgs;
use super::picture;

/// Arguments of `convnet predict`.
#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Pictures (PNG, JPEG, BMP) of any size. For a digit model (trained
    /// on MNIST) each should show one digit, dark ink on light paper or
    /// light on dark, colour or grey, and is made into an MNIST digit
    /// first: inverted if its background is light, cropped to the ink,
    /// scaled into 20x20 and centred by mass in 28x28. For a model trained
    /// on an image folder or CIFAR-10, each is resized to the model's
    /// input, as training resized them.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Use the pictures as they are, with none of the steps above: each
    /// must already have the model's input size (other sizes are refused,
    /// not resized), and for a digit model MNIST's look, light ink on black.
    #[arg(long)]
    no_preprocess: bool,
    /// Print one JSON object per picture and line: {"file", "digit" (for
    /// digit models), "class", "class_name" (for models that know their
    /// classes' names), "probabilities"}.
    #[arg(long)]
    json: bool,
}

/// One picture's result, as `--json` prints it.
#[derive(serde::Serialize)]
struct Prediction<'a> {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digit: Option<usize>,
    class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    class_name: Option<&'a str>,
    probabilities: &'a [f32],
}

/// Classifies every picture it can; a bad one is reported on stderr and
/// the others still get their line, then the exit status says something
/// failed.
pub fn run(args: PredictArgs) -> Result<()> {
    let model = args.model.load()?;
    let reading = Reading::of(&model, args.no_preprocess)?;
    let digits = reading == Reading::Digit
        || (model.class_names().is_empty() && model.output_shape() == [10]);
    let mut failed = 0;
    for path in &args.images {
        let input = reading.input(path);
        match input.and_then(|x| probabilities(&model, x)) {
            Ok(probabilities) => {
                let class = convnet::metrics::argmax(&probabilities);
                let prediction = Prediction {
                    file: path.display().to_string(),
                    digit: digits.then_some(class),
                    class,
                    class_name: model.class_names().get(class).map(String::as_str),
                    probabilities: &probabilities,
                };
                println!("{}", line(&prediction, model.class_names(), args.json)?);
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        _ => Err(Error::Data(format!(
            "{failed} of {} pictures could not be classified (see above)",
            args.images.len()
        ))),
    }
}

/// How `predict` makes a picture into the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// Made into an MNIST digit (a 28x28x1 model without class names).
    Digit,
    /// Resized to `(height, width)`, grey or colour, pixels / 255: as an
    /// image folder's pictures were in training.
    Resized(usize, usize, ColorMode),
    /// Taken as it is: it must have the model's size.
    AsIs(usize, usize, ColorMode),
}

impl Reading {
    /// The reading for `model`'s input.
    pub(super) fn of(model: &Sequential, no_preprocess: bool) -> Result<Reading> {
        let shape = model.input_shape();
        let &[height, width, channels] = shape else {
            return Err(Error::InvalidArgument(format!(
                "convnet predict reads pictures, but this model takes inputs of shape {shape:?}"
            )));
        };
        let mode = ColorMode::with_channels(channels).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "convnet predict reads grey or RGB pictures, but this model takes {channels} \
                 channels"
            ))
        })?;
        let digit_model = model.class_names().is_empty() && shape == [MNIST_SIDE, MNIST_SIDE, 1];
        Ok(match (no_preprocess, digit_model) {
            (true, _) => Reading::AsIs(height, width, mode),
            (false, true) => Reading::Digit,
            (false, false) => Reading::Resized(height, width, mode),
        })
    }

    /// The picture at `path` as one input sample `(1, h, w, c)`.
    pub(super) fn input(self, path: &Path) -> Result<Array4<f32>> {
        let named = |e: Error| match e {
            Error::Image(message) if !message.contains(&path.display().to_string()) => {
                Error::Image(format!("{}: {message}", path.display()))
            }
            other => other,
        };
        let sample = match self {
            Reading::Digit => {
                let grey = picture::read_grey(path)?.mapv(|v| (v / 255.0) as f32);
                mnist_digit(grey.view())
                    .map_err(named)?
                    .insert_axis(Axis(2))
            }
            Reading::Resized(height, width, mode) => {
                picture::read_resized(path, (height, width), mode)?
            }
            Reading::AsIs(height, width, mode) => {
                let sample = picture::read_as(path, mode)?;
                let (h, w, _) = sample.dim();
                if (h, w) != (height, width) {
                    return Err(Error::InvalidArgument(format!(
                        "{}: the picture is {w}x{h} but --no-preprocess needs the model's \
                         {width}x{height}; leave out --no-preprocess to fit it",
                        path.display()
                    )));
                }
                sample
            }
        };
        Ok(sample.insert_axis(Axis(0)))
    }
}

/// The model's outputs for one input sample.
fn probabilities(model: &Sequential, sample: Array4<f32>) -> Result<Vec<f32>> {
    Ok(model.predict(&sample)?.into_iter().collect())
}

/// `--json`'s object, or a line such as
/// `seven.png: digit 7 (7: 99.1%, 2: 0.5%, 3: <0.1%)`.
fn line(prediction: &Prediction, names: &[String], json: bool) -> Result<String> {
    if json {
        return serde_json::to_string(prediction)
            .map_err(|e| Error::Data(format!("cannot encode the prediction as JSON: {e}")));
    }
    let mut ranked: Vec<(usize, f32)> = prediction
        .probabilities
        .iter()
        .copied()
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = ranked
        .iter()
        .take(3)
        .map(|&(class, p)| {
            let name = names
                .get(class)
                .map_or_else(|| class.to_string(), |n| n.to_string());
            format!("{name}: {}", percent(p))
        })
        .collect();
    let kind = if prediction.digit.is_some() {
        "digit"
    } else {
        "class"
    };
    let class = prediction
        .class_name
        .map_or_else(|| prediction.class.to_string(), str::to_string);
    Ok(format!(
        "{}: {kind} {class} ({})",
        prediction.file,
        top.join(", ")
    ))
}

/// A probability as a percentage to one decimal; "<0.1%" rather than a
/// misleading "0.0%" for the small ones.
fn percent(p: f32) -> String {
    if p < 0.0005 {
        "<0.1%".to_string()
    } else {
        format!("{:.1}%", p * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(digit: Option<usize>, probabilities: &[f32]) -> Prediction<'_> {
        Prediction {
            file: "a.png".into(),
            digit,
            class: 1,
            class_name: None,
            probabilities,
        }
    }

    #[test]
    fn lines_show_the_three_likeliest_classes() {
        let p = [0.01, 0.9, 0.0001, 0.0899];
        assert_eq!(
            line(&prediction(Some(1), &p), &[], false).unwrap(),
            "a.png: digit 1 (1: 90.0%, 3: 9.0%, 0: 1.0%)"
        );
        assert_eq!(
            line(&prediction(None, &p[..2]), &[], false).unwrap(),
            "a.png: class 1 (1: 90.0%, 0: 1.0%)"
        );
        assert_eq!(percent(0.0004), "<0.1%");
        assert_eq!(percent(0.0006), "0.1%");
    }

    #[test]
    fn named_classes_are_shown_by_name() {
        let names = ["cat".to_string(), "dog".to_string()];
        let p = [0.25, 0.75];
        let named = Prediction {
            class_name: Some("dog"),
            ..prediction(None, &p)
        };
        assert_eq!(
            line(&named, &names, false).unwrap(),
            "a.png: class dog (dog: 75.0%, cat: 25.0%)"
        );
        assert_eq!(
            line(&named, &names, true).unwrap(),
            r#"{"file":"a.png","class":1,"class_name":"dog","probabilities":[0.25,0.75]}"#
        );
    }

    #[test]
    fn json_has_a_digit_only_for_digit_models() {
        let digit = line(&prediction(Some(1), &[0.25, 0.75]), &[], true).unwrap();
        assert_eq!(
            digit,
            r#"{"file":"a.png","digit":1,"class":1,"probabilities":[0.25,0.75]}"#
        );
        let other = line(&prediction(None, &[0.25, 0.75]), &[], true).unwrap();
        assert_eq!(
            other,
            r#"{"file":"a.png","class":1,"probabilities":[0.25,0.75]}"#
        );
    }
}
