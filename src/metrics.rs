//! Metrics reported during training and evaluation, and the per-class
//! figures of a classifier: the confusion matrix, precision, recall and F1.

use ndarray::{Array2, ArrayView2};

use crate::losses::{Loss, LossKind};
use crate::{Error, Result};

/// A metric, by its Keras name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The fraction of samples whose predicted class (the largest output) is
    /// the true class (the largest target, or the class index for sparse
    /// targets). With a single output, a prediction above 0.5 means class 1.
    /// With binary cross-entropy it is Keras's binary accuracy instead:
    /// see [`Metric::total`].
    Accuracy,
}

impl Metric {
    /// The Keras name, used as key in [`crate::History`].
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
        }
    }

    /// How many of the `pred` rows of `width` values are right. Sparse
    /// targets are taken to be valid class indices: see
    /// [`Loss::check_labels`](crate::Loss::check_labels).
    pub fn count_correct(self, pred: &[f32], target: &[f32], width: usize) -> usize {
        let batch = pred.len() / width;
        let target_width = target.len() / batch.max(1);
        pred.chunks_exact(width)
            .zip(target.chunks_exact(target_width))
            .filter(|(p, y)| match (width, target_width) {
                (1, 1) => (p[0] > 0.5) == (y[0] > 0.5),
                (_, 1) => argmax(p) == y[0] as usize,
                _ => argmax(p) == argmax(y),
            })
            .count()
    }

    /// The sum over the `pred` rows of `width` values of the metric's
    /// per-sample value, as Keras computes it for a model compiled with
    /// `loss`: for binary cross-entropy, accuracy is Keras's binary
    /// accuracy, the fraction of outputs on the right side of 0.5 (of 0
    /// for logits) per sample; for other losses it counts the samples of
    /// [`Metric::count_correct`].
    ///
    /// ```
    /// use convnet::{Loss, Metric};
    ///
    /// // Two samples of two independent labels each: 2 of 2 right, 1 of 2.
    /// let pred = [0.9, 0.2, 0.7, 0.6];
    /// let target = [1.0, 0.0, 1.0, 0.0];
    /// let total = Metric::Accuracy.total(Loss::BinaryCrossentropy, &pred, &target, 2);
    /// assert_eq!(total, 1.5);
    /// // For a categorical loss, the second sample's argmax is right too.
    /// assert_eq!(Metric::Accuracy.total(Loss::CategoricalCrossentropy, &pred, &target, 2), 2.0);
    /// ```
    pub fn total(self, loss: Loss, pred: &[f32], target: &[f32], width: usize) -> f64 {
        if loss.kind() != LossKind::BinaryCrossentropy {
            return self.count_correct(pred, target, width) as f64;
        }
        let threshold = if loss.is_from_logits() { 0.0 } else { 0.5 };
        let right = pred
            .iter()
            .zip(target)
            .filter(|&(&p, &y)| (p > threshold) == (y > 0.5))
            .count();
        right as f64 / width as f64
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "accuracy" | "acc" => Ok(Metric::Accuracy),
            _ => Err(Error::InvalidArgument(format!(
                "unknown metric {s:?}: use accuracy"
            ))),
        }
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The confusion matrix of a classifier: entry `[t, p]` counts the samples
/// of true class `t` whose predicted class (the largest of their row of
/// `pred`) is `p`. `pred` has one row per sample and one column per class
/// (a softmax model's [`predict`](crate::Sequential::predict)); `labels`
/// holds the true class of each sample.
///
/// ```
/// use convnet::metrics::confusion_matrix;
/// use ndarray::array;
///
/// let pred = array![[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]];
/// let confusion = confusion_matrix(pred.view(), &[0, 1, 1])?;
/// assert_eq!(confusion, array![[1, 0], [1, 1]]);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn confusion_matrix(pred: ArrayView2<f32>, labels: &[usize]) -> Result<Array2<usize>> {
    let classes = pred.ncols();
    if pred.nrows() != labels.len() {
        return Err(Error::Shape(format!(
            "confusion_matrix: {} predictions but {} labels",
            pred.nrows(),
            labels.len()
        )));
    }
    let mut confusion = Array2::zeros((classes, classes));
    for (i, (row, &label)) in pred.rows().into_iter().zip(labels).enumerate() {
        if label >= classes {
            return Err(Error::InvalidArgument(format!(
                "confusion_matrix: label {label} of sample {i} is not below the {classes} classes"
            )));
        }
        // Rows of a 2-D view need not be contiguous: argmax on a copy if so.
        let predicted = row.as_slice().map_or_else(|| argmax(&row.to_vec()), argmax);
        confusion[[label, predicted]] += 1;
    }
    Ok(confusion)
}

/// Precision, recall and F1 of each class, from a confusion matrix (as
/// scikit-learn's `classification_report`). A ratio whose denominator is 0
/// (a class never predicted, or absent from the data) counts as 0, as
/// scikit-learn's default does.
///
/// ```
/// use convnet::metrics::ClassReport;
/// use ndarray::array;
///
/// // 3 samples of class 0, all found; 2 of class 1, one taken for a 0.
/// let report = ClassReport::new(&array![[3, 0], [1, 1]]);
/// assert_eq!(report.precision, [0.75, 1.0]);
/// assert_eq!(report.recall, [1.0, 0.5]);
/// assert_eq!(report.support, [3, 2]);
/// assert!((report.macro_f1() - (6.0 / 7.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassReport {
    /// Of the samples predicted as each class, the fraction truly of it.
    pub precision: Vec<f64>,
    /// Of the samples of each class, the fraction predicted as it.
    pub recall: Vec<f64>,
    /// The harmonic mean of each class's precision and recall.
    pub f1: Vec<f64>,
    /// How many samples of each class there are.
    pub support: Vec<usize>,
}

impl ClassReport {
    /// The figures of a square confusion matrix (rows: true classes,
    /// columns: predicted), such as [`confusion_matrix`] returns.
    pub fn new(confusion: &Array2<usize>) -> Self {
        let ratio = |part: usize, whole: usize| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        let hits = |c: usize| confusion[[c, c]];
        let classes = 0..confusion.nrows();
        let support: Vec<usize> = confusion.rows().into_iter().map(|r| r.sum()).collect();
        let predicted: Vec<usize> = confusion.columns().into_iter().map(|c| c.sum()).collect();
        let precision: Vec<f64> = classes
            .clone()
            .map(|c| ratio(hits(c), predicted[c]))
            .collect();
        let recall: Vec<f64> = classes.map(|c| ratio(hits(c), support[c])).collect();
        let f1 = precision
            .iter()
            .zip(&recall)
            .map(|(&p, &r)| {
                if p + r > 0.0 {
                    2.0 * p * r / (p + r)
                } else {
                    0.0
                }
            })
            .collect();
        ClassReport {
            precision,
            recall,
            f1,
            support,
        }
    }

    /// The unweighted mean of the classes' precisions.
    pub fn macro_precision(&self) -> f64 {
        mean(&self.precision)
    }

    /// The unweighted mean of the classes' recalls.
    pub fn macro_recall(&self) -> f64 {
        mean(&self.recall)
    }

    /// The unweighted mean of the classes' F1 scores (scikit-learn's
    /// macro average, not the F1 of the macro precision and recall).
    pub fn macro_f1(&self) -> f64 {
        mean(&self.f1)
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Ten samples of three classes; the figures worked out by hand.
    #[test]
    fn a_hand_made_example() {
        let pred = array![
            [0.8, 0.1, 0.1], // true 0 -> 0
            [0.6, 0.3, 0.1], // true 0 -> 0
            [0.2, 0.7, 0.1], // true 0 -> 1
            [0.1, 0.8, 0.1], // true 1 -> 1
            [0.1, 0.5, 0.4], // true 1 -> 1
            [0.1, 0.2, 0.7], // true 1 -> 2
            [0.5, 0.2, 0.3], // true 1 -> 0
            [0.0, 0.1, 0.9], // true 2 -> 2
            [0.3, 0.3, 0.4], // true 2 -> 2
            [0.1, 0.6, 0.3], // true 2 -> 1
        ];
        let labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2];
        let confusion = confusion_matrix(pred.view(), &labels).unwrap();
        assert_eq!(confusion, array![[2, 1, 0], [1, 2, 1], [0, 1, 2]]);
        let report = ClassReport::new(&confusion);
        // Precision: 2 of the 3 predicted 0, 2 of 4 predicted 1, 2 of 3 predicted 2.
        assert_eq!(report.precision, [2.0 / 3.0, 0.5, 2.0 / 3.0]);
        // Recall: 2 of 3, 2 of 4, 2 of 3.
        assert_eq!(report.recall, [2.0 / 3.0, 0.5, 2.0 / 3.0]);
        assert_eq!(report.support, [3, 4, 3]);
        for (f1, expected) in report.f1.iter().zip([2.0 / 3.0, 0.5, 2.0 / 3.0]) {
            assert!((f1 - expected).abs() < 1e-12, "{f1}");
        }
        assert!((report.macro_precision() - 11.0 / 18.0).abs() < 1e-12);
        assert!((report.macro_recall() - 11.0 / 18.0).abs() < 1e-12);
    }

    #[test]
    fn precision_and_recall_differ_when_errors_are_one_sided() {
        // Class 1 is never predicted: its precision is 0 by convention, and
        // class 0 takes all 4 samples, 3 of them right.
        let report = ClassReport::new(&array![[3, 0], [1, 0]]);
        assert_eq!(report.precision, [0.75, 0.0]);
        assert_eq!(report.recall, [1.0, 0.0]);
        assert!((report.f1[0] - 6.0 / 7.0).abs() < 1e-12);
        assert_eq!(report.f1[1], 0.0);
        assert_eq!(report.macro_recall(), 0.5);
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let pred = array![[0.9, 0.1], [0.2, 0.8]];
        let message = |labels: &[usize]| {
            confusion_matrix(pred.view(), labels)
                .unwrap_err()
                .to_string()
        };
        assert!(message(&[0]).contains("2 predictions but 1 labels"));
        assert!(message(&[0, 2]).contains("label 2 of sample 1"));
    }

    #[test]
    fn columns_of_a_transposed_view_are_read_too() {
        let by_class = array![[0.9, 0.2], [0.1, 0.8]];
        let confusion = confusion_matrix(by_class.t(), &[0, 0]).unwrap();
        assert_eq!(confusion, array![[1, 1], [0, 0]]);
    }
}
