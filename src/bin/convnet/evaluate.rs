//! `convnet evaluate`: test scores of saved weights on MNIST: loss,
//! accuracy, the confusion matrix and each digit's precision, recall and F1.

use std::fmt::Write;
use std::path::PathBuf;

use clap::Args;
use convnet::data::Rescaled;
use convnet::datasets::{mnist, to_categorical};
use convnet::metrics::{ClassReport, confusion_matrix};
use convnet::{Error, Result};
use ndarray::{Array2, Axis, Ix2, s};

use super::model_args::ModelArgs;
use super::visuals::Pictures;

/// Arguments of `convnet evaluate`.
#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder with the four MNIST IDX files (default: $CONVNET_DATA, else data/mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Don't check the files' SHA-256 against MNIST's (for other IDX data).
    #[arg(long)]
    skip_checksum: bool,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Print one JSON object instead: {"loss", "accuracy", "confusion" (rows:
    /// true digit, columns: predicted), "precision", "recall", "f1",
    /// "support" (one per digit), "macro" (their unweighted means)}.
    #[arg(long)]
    json: bool,
    /// Also draw the confusion matrix as a heat map with counts into this PNG file.
    #[arg(long, value_name = "FILE")]
    confusion_matrix: Option<PathBuf>,
    /// Also draw the most confidently misclassified test images, with their true
    /// and predicted digits, into this PNG file.
    #[arg(long, value_name = "FILE")]
    misclassified: Option<PathBuf>,
    /// How many images --misclassified shows at most.
    #[arg(long, value_name = "N", default_value_t = 30)]
    misclassified_count: usize,
}

/// What `--json` prints.
#[derive(serde::Serialize)]
struct Evaluation<'a> {
    loss: f64,
    accuracy: f64,
    confusion: Vec<Vec<usize>>,
    #[serde(flatten)]
    report: &'a ClassReport,
    #[serde(rename = "macro")]
    macro_average: MacroAverage,
}

#[derive(serde::Serialize)]
struct MacroAverage {
    precision: f64,
    recall: f64,
    f1: f64,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    let outputs = [
        ("--confusion-matrix", &args.confusion_matrix),
        ("--misclassified", &args.misclassified),
    ];
    let outputs: Vec<_> = outputs
        .iter()
        .filter_map(|(flag, path)| Some((*flag, path.as_deref()?)))
        .collect();
    convnet::io::check_outputs(&outputs, &[])?;
    let model = args.model.load()?;
    // The test set only: the training set is not needed to score.
    let dir = args
        .data_dir
        .as_deref()
        .map_or_else(mnist::default_dir, mnist::resolve);
    let (test_x, test_y) =
        mnist::load_test_from(&dir, !args.skip_checksum).map_err(super::train::mnist_hint)?;
    let test_x = super::train::first(&test_x, args.test_limit);
    let test_y = test_y.slice(s![..test_x.len_of(Axis(0))]);
    let x = Rescaled::new(&test_x, 1.0 / 255.0);
    let score = model.evaluate(&x, &to_categorical(&test_y, 10)?)?;
    let accuracy = score.accuracy().unwrap_or(0.0);
    let outputs = model
        .predict(&x)?
        .into_dimensionality::<Ix2>()
        .map_err(|_| {
            Error::Shape("evaluate: the model must give one row of class scores per image".into())
        })?;
    let labels: Vec<usize> = test_y.iter().map(|&label| usize::from(label)).collect();
    let confusion = confusion_matrix(outputs.view(), &labels)?;
    let report = ClassReport::new(&confusion);
    let pictures = Pictures {
        confusion_matrix: args.confusion_matrix.as_deref(),
        misclassified: args.misclassified.as_deref(),
        count: args.misclassified_count,
        quiet: args.json,
    };
    if args.json {
        println!("{}", json(score.loss, accuracy, &confusion, &report)?);
    } else {
        println!("Test loss: {:.4}", score.loss);
        println!("Test accuracy: {accuracy:.4}");
        print!(
            "\n{}\n{}",
            confusion_table(&confusion),
            report_table(&report)
        );
    }
    pictures.write(&x, outputs.view(), &labels, &confusion, model.class_names())
}

/// `--json`'s object, on one line.
fn json(
    loss: f64,
    accuracy: f64,
    confusion: &Array2<usize>,
    report: &ClassReport,
) -> Result<String> {
    let evaluation = Evaluation {
        loss,
        accuracy,
        confusion: confusion.rows().into_iter().map(|r| r.to_vec()).collect(),
        report,
        macro_average: MacroAverage {
            precision: report.macro_precision(),
            recall: report.macro_recall(),
            f1: report.macro_f1(),
        },
    };
    serde_json::to_string(&evaluation)
        .map_err(|e| Error::Data(format!("cannot encode the scores as JSON: {e}")))
}

/// The confusion matrix with a header row and column of digits.
fn confusion_table(confusion: &Array2<usize>) -> String {
    let largest = confusion.iter().max().copied().unwrap_or(0);
    let width = largest.to_string().len().max(3) + 2;
    let mut text = String::from("Confusion matrix (rows: true digit, columns: predicted digit):\n");
    text += "     ";
    for class in 0..confusion.ncols() {
        let _ = write!(text, "{class:>width$}");
    }
    for (class, row) in confusion.rows().into_iter().enumerate() {
        let _ = write!(text, "\n{class:>5}");
        for count in row {
            let _ = write!(text, "{count:>width$}");
        }
    }
    text + "\n"
}

/// Precision, recall, F1 and support per digit, then the macro averages.
fn report_table(report: &ClassReport) -> String {
    let mut text = String::from("digit  precision  recall      f1  support\n");
    let rows = report.precision.iter().zip(&report.recall).zip(&report.f1);
    for (class, ((p, r), f1)) in rows.enumerate() {
        let support = report.support[class];
        let _ = writeln!(
            text,
            "{class:>5}  {p:>9.4}  {r:>6.4}  {f1:>6.4}  {support:>7}"
        );
    }
    let total: usize = report.support.iter().sum();
    let (p, r, f1) = (
        report.macro_precision(),
        report.macro_recall(),
        report.macro_f1(),
    );
    let _ = writeln!(text, "macro  {p:>9.4}  {r:>6.4}  {f1:>6.4}  {total:>7}");
    text
}
