//! Metrics reported during training and evaluation.

use crate::{Error, Result};

/// A metric, by its Keras name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The fraction of samples whose predicted class (the largest output) is
    /// the true class (the largest target, or the class index for sparse
    /// targets). With a single output, a prediction above 0.5 means class 1.
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
