//! `convnet predict`: the class of each picture, by a trained model.

use std::path::{Path, PathBuf};

use clap::Args;
use convnet::preprocess::{MNIST_SIDE, mnist_digit};
use convnet::{Error, Result, Sequential};
use ndarray::{Array2, Axis};

use super::model_args::ModelArgs;
use super::picture;

/// Arguments of `convnet predict`.
#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Pictures of one digit each, PNG or JPEG, of any size: dark ink on
    /// light paper or light on dark, colour or grey. Each is made into an
    /// MNIST digit first: inverted if its background is light, cropped to
    /// the ink, scaled into 20x20 and centred by mass in 28x28.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Use the pictures as they are, with none of the steps above: each
    /// must already have the model's input size (28x28 for lenet; other
    /// sizes are refused, not resized) and MNIST's look, light ink on black.
    #[arg(long)]
    no_preprocess: bool,
    /// Print one JSON object per picture and line: {"file", "digit" (for
    /// models with 10 outputs on 28x28x1 inputs), "class", "probabilities"}.
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
    probabilities: &'a [f32],
}

/// Classifies every picture it can; a bad one is reported on stderr and
/// the others still get their line, then the exit status says something
/// failed.
pub fn run(args: PredictArgs) -> Result<()> {
    let model = args.model.load()?;
    let (height, width) = picture_size(&model, args.no_preprocess)?;
    let digits = model.input_shape() == [MNIST_SIDE, MNIST_SIDE, 1] && model.output_shape() == [10];
    let mut failed = 0;
    for path in &args.images {
        let input = model_input(path, args.no_preprocess, (height, width));
        match input.and_then(|x| probabilities(&model, x)) {
            Ok(probabilities) => {
                let class = convnet::metrics::argmax(&probabilities);
                let prediction = Prediction {
                    file: path.display().to_string(),
                    digit: digits.then_some(class),
                    class,
                    probabilities: &probabilities,
                };
                println!("{}", line(&prediction, args.json)?);
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

/// The picture size the model takes: grey pictures only, and 28x28 unless
/// the pictures come ready (`--no-preprocess`).
fn picture_size(model: &Sequential, no_preprocess: bool) -> Result<(usize, usize)> {
    let shape = model.input_shape();
    let &[height, width, 1] = shape else {
        return Err(Error::InvalidArgument(format!(
            "convnet predict reads grey pictures, but this model takes inputs of shape {shape:?}"
        )));
    };
    if !no_preprocess && (height, width) != (MNIST_SIDE, MNIST_SIDE) {
        return Err(Error::InvalidArgument(format!(
            "the preprocessing makes 28x28 MNIST digits, but this model takes {height}x{width} \
             pictures: give pictures of that size with --no-preprocess"
        )));
    }
    Ok((height, width))
}

/// The picture at `path` as the model's input: grey levels in [0, 1],
/// made into an MNIST digit unless `no_preprocess`.
fn model_input(path: &Path, no_preprocess: bool, size: (usize, usize)) -> Result<Array2<f32>> {
    let grey = picture::read_grey(path)?.mapv(|v| (v / 255.0) as f32);
    if no_preprocess {
        if grey.dim() != size {
            let ((h, w), (want_h, want_w)) = (grey.dim(), size);
            return Err(Error::InvalidArgument(format!(
                "{}: the picture is {w}x{h} but --no-preprocess needs the model's \
                 {want_w}x{want_h}; leave out --no-preprocess to fit it",
                path.display()
            )));
        }
        return Ok(grey);
    }
    mnist_digit(grey.view()).map_err(|e| {
        let message = match e {
            Error::Image(message) => message,
            other => other.to_string(),
        };
        Error::Image(format!("{}: {message}", path.display()))
    })
}

/// The model's outputs for one grey picture.
fn probabilities(model: &Sequential, picture: Array2<f32>) -> Result<Vec<f32>> {
    let batch = picture.insert_axis(Axis(0)).insert_axis(Axis(3));
    Ok(model.predict(&batch)?.into_iter().collect())
}

/// `--json`'s object, or a line such as
/// `seven.png: digit 7 (7: 99.1%, 2: 0.5%, 3: <0.1%)`.
fn line(prediction: &Prediction, json: bool) -> Result<String> {
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
        .map(|&(class, p)| format!("{class}: {}", percent(p)))
        .collect();
    let kind = if prediction.digit.is_some() {
        "digit"
    } else {
        "class"
    };
    Ok(format!(
        "{}: {kind} {} ({})",
        prediction.file,
        prediction.class,
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
            probabilities,
        }
    }

    #[test]
    fn lines_show_the_three_likeliest_classes() {
        let p = [0.01, 0.9, 0.0001, 0.0899];
        assert_eq!(
            line(&prediction(Some(1), &p), false).unwrap(),
            "a.png: digit 1 (1: 90.0%, 3: 9.0%, 0: 1.0%)"
        );
        assert_eq!(
            line(&prediction(None, &p[..2]), false).unwrap(),
            "a.png: class 1 (1: 90.0%, 0: 1.0%)"
        );
        assert_eq!(percent(0.0004), "<0.1%");
        assert_eq!(percent(0.0006), "0.1%");
    }

    #[test]
    fn json_has_a_digit_only_for_digit_models() {
        let digit = line(&prediction(Some(1), &[0.25, 0.75]), true).unwrap();
        assert_eq!(
            digit,
            r#"{"file":"a.png","digit":1,"class":1,"probabilities":[0.25,0.75]}"#
        );
        let other = line(&prediction(None, &[0.25, 0.75]), true).unwrap();
        assert_eq!(
            other,
            r#"{"file":"a.png","class":1,"probabilities":[0.25,0.75]}"#
        );
    }
}
