//! The pictures of a model's test results, for `evaluate` and `train`,
//! and `train`'s curves and report.

use std::path::Path;

use convnet::data::Samples;
use convnet::metrics::{argmax, confusion_matrix};
use convnet::plots::{self, report::Report};
use convnet::{Error, History, Result, Scores, Sequential};
use ndarray::{Array2, ArrayView2, Ix2};

use super::train_data::{Part, TrainingData};

/// Where to draw the confusion matrix and the misclassified images.
pub struct Pictures<'a> {
    pub confusion_matrix: Option<&'a Path>,
    pub misclassified: Option<&'a Path>,
    /// How many misclassified images to show at most.
    pub count: usize,
    /// Print nothing (for `--json`, whose output is one JSON object).
    pub quiet: bool,
}

impl Pictures<'_> {
    /// Draws the pictures asked for, from the model's `outputs` on the
    /// samples `x` whose true classes are `labels`.
    pub fn write(
        &self,
        x: &dyn Samples,
        outputs: ArrayView2<f32>,
        labels: &[usize],
        confusion: &Array2<usize>,
        class_names: &[String],
    ) -> Result<()> {
        if let Some(path) = self.confusion_matrix {
            plots::save_png(&plots::confusion_matrix(confusion, class_names)?, path)?;
            if !self.quiet {
                println!("Wrote {}; most confused:", path.display());
                for (truth, predicted, count) in plots::most_confused(confusion, 3) {
                    let name = |c: usize| class_names.get(c).cloned().unwrap_or(c.to_string());
                    println!(
                        "  {} taken for {}: {count} times",
                        name(truth),
                        name(predicted)
                    );
                }
            }
        }
        if let Some(path) = self.misclassified {
            let picture = plots::misclassified(x, outputs, labels, class_names, self.count)?;
            plots::save_png(&picture, path)?;
            if !self.quiet {
                println!("Wrote {}", path.display());
            }
        }
        Ok(())
    }
}

/// A finished training run, for `train --plot` and `--report`.
pub struct Run<'a> {
    pub model_name: &'a str,
    pub data: &'a TrainingData,
    pub history: &'a History,
    /// The part scored after training ("Test" or "Validation"), if any,
    /// with its scores.
    pub scored: Option<(&'a str, &'a Part, &'a Scores)>,
    pub batch_size: usize,
}

/// Writes `train --plot`'s curves and `--report`'s page, where asked for.
pub fn after_training(
    plot: Option<&Path>,
    report: Option<&Path>,
    model: &mut Sequential,
    run: &Run,
) -> Result<()> {
    if let Some(path) = plot {
        plots::save_png(&plots::training_curves(run.history)?, path)?;
        println!("Wrote {}", path.display());
    }
    if let Some(path) = report {
        training_report(model, run)?.save(path)?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}

/// The one true class of each one-hot row.
fn labels(y: &Array2<f32>) -> Vec<usize> {
    y.rows()
        .into_iter()
        .map(|row| argmax(row.as_slice().unwrap_or(&row.to_vec())))
        .collect()
}

/// `--report`'s page: the run, the model, the curves, the scores, the
/// confusion matrix, misclassified images and the first-layer kernels.
fn training_report(model: &mut Sequential, run: &Run) -> Result<Report> {
    let data = run.data;
    let mut report = Report::new(format!("{} on {}", run.model_name, data.kind));
    let epochs = run.history.history.get("loss").map_or(0, Vec::len);
    let seconds: f64 = run.history.epoch_seconds.iter().sum();
    report.heading("Run").table([
        ("model", run.model_name.to_string()),
        ("data", data.kind.clone()),
        ("training samples", data.train.len().to_string()),
        ("classes", data.class_names.join(", ")),
        ("epochs", epochs.to_string()),
        ("batch size", run.batch_size.to_string()),
        ("seed", model.seed().to_string()),
        ("training time", format!("{seconds:.1} s")),
        ("convnet", env!("CARGO_PKG_VERSION").to_string()),
    ]);
    report
        .heading("Model")
        .preformatted(model.summary_string()?);
    report.heading("Training curves");
    report.picture(
        "loss and accuracy per epoch",
        &plots::training_curves(run.history)?,
    )?;
    let last = |name: &str| {
        let value = run.history.history.get(name).and_then(|v| v.last());
        value.map(|v| (format!("last epoch: {name}"), format!("{v:.4}")))
    };
    let mut scores: Vec<(String, String)> = ["loss", "accuracy", "val_loss", "val_accuracy"]
        .into_iter()
        .filter_map(last)
        .collect();
    let Some((scored, part, score)) = run.scored else {
        report.heading("Scores").table(scores);
        report.paragraph("No test or validation data: no confusion matrix.");
        return with_kernels(report, model);
    };
    let name = scored.to_lowercase();
    scores.push((format!("{name} loss"), format!("{:.4}", score.loss)));
    if let Some(accuracy) = score.accuracy() {
        scores.push((format!("{name} accuracy"), format!("{accuracy:.4}")));
    }
    report.heading("Scores").table(scores);
    let outputs = model
        .predict(&part.x)?
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::Shape("the model must give one row of class scores".into()))?;
    let labels = labels(&part.y);
    let confusion = confusion_matrix(outputs.view(), &labels)?;
    let names = &data.class_names;
    report.heading(format!("Confusion matrix ({name} data)"));
    report.picture(
        "confusion matrix",
        &plots::confusion_matrix(&confusion, names)?,
    )?;
    report.heading(format!("Misclassified {name} images"));
    let wrong = plots::misclassified(&part.x, outputs.view(), &labels, names, 30)?;
    report.picture("misclassified images", &wrong)?;
    with_kernels(report, model)
}

/// `report` with the first convolution's kernels, if there is one.
fn with_kernels(mut report: Report, model: &Sequential) -> Result<Report> {
    if let Ok(kernels) = plots::kernels(model) {
        report.heading("First-layer kernels");
        report.picture("first-layer kernels", &kernels)?;
    }
    Ok(report)
}
