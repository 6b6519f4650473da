//! Loss functions, by their Keras names, with their gradients.
//!
//! A loss is the mean over the batch of a per-sample loss. When the last
//! layer is a softmax and the loss a cross-entropy, the two are fused: the
//! gradient with respect to the softmax's *input* is simply `p - y`, which is
//! both cheaper and numerically safer than going through `-y / p`.

use crate::{Error, Result};

/// Probabilities are clipped to `[EPSILON, 1 - EPSILON]` before `log`, as
/// Keras does, so that a confident mistake costs a large but finite loss.
pub const EPSILON: f32 = 1e-7;

/// A loss function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `-Σ_i y_i log p_i`, with one-hot (or soft) targets `y`.
    CategoricalCrossentropy,
    /// Cross-entropy with targets given as class indices (one value per sample).
    SparseCategoricalCrossentropy,
    /// `mean_i (p_i - y_i)²` over the last axis.
    MeanSquaredError,
}

/// Keras's lower-case alias for [`Loss::CategoricalCrossentropy`].
pub const CATEGORICAL_CROSSENTROPY: Loss = Loss::CategoricalCrossentropy;

impl Loss {
    /// The Keras name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
        }
    }

    /// Whether this loss can take over a softmax output activation.
    pub fn fuses_with_softmax(self) -> bool {
        matches!(
            self,
            Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy
        )
    }

    /// Values of the target per sample, for predictions of `width` values.
    pub fn target_width(self, width: usize) -> usize {
        match self {
            Loss::SparseCategoricalCrossentropy => 1,
            _ => width,
        }
    }

    /// Checks that targets of `target_width` values per sample fit
    /// predictions of `width` values per sample.
    pub fn check_targets(self, target_width: usize, width: usize) -> Result<()> {
        let want = self.target_width(width);
        if target_width == want {
            return Ok(());
        }
        let hint = match self {
            Loss::SparseCategoricalCrossentropy => "give one class index per sample",
            _ if target_width == 1 => {
                "give one-hot targets (see datasets::to_categorical) or use sparse_categorical_crossentropy"
            }
            _ => "make the targets match the model's output",
        };
        Err(Error::Shape(format!(
            "{} needs {want} target value(s) per sample for an output of {width}, got {target_width}; {hint}",
            self.name()
        )))
    }

    /// Checks the values of a batch of `targets` for predictions of `width`
    /// values per sample. For [`Loss::SparseCategoricalCrossentropy`], whose
    /// targets hold one class index per sample, each must be a whole number
    /// in `0..width`: a label that is negative, too large, fractional or NaN
    /// is an [`Error::InvalidArgument`] naming the value, its sample (counted
    /// from the start of `targets`) and the valid range, where
    /// [`Loss::compute`] would silently give a wrong loss and gradient. Other
    /// losses take any values: they always pass. One pass over the targets.
    ///
    /// ```
    /// use convnet::Loss;
    ///
    /// let sparse = Loss::SparseCategoricalCrossentropy;
    /// assert!(sparse.check_labels(&[0.0, 9.0, 3.0], 10).is_ok());
    /// let err = sparse.check_labels(&[0.0, 10.0], 10).unwrap_err();
    /// assert!(err.to_string().contains("sample 1"), "{err}");
    /// // One-hot (or soft) targets are not class indices: anything goes.
    /// assert!(Loss::CategoricalCrossentropy.check_labels(&[0.25, 0.75], 2).is_ok());
    /// ```
    pub fn check_labels(self, targets: &[f32], width: usize) -> Result<()> {
        if self != Loss::SparseCategoricalCrossentropy {
            return Ok(());
        }
        let classes = width as f32;
        // NaN fails both comparisons.
        let is_class = |&label: &f32| label >= 0.0 && label < classes && label.fract() == 0.0;
        match targets.iter().position(|label| !is_class(label)) {
            None => Ok(()),
            Some(sample) => Err(Error::InvalidArgument(format!(
                "{}: the target of sample {sample} is {}, not a class index: each label must \
                 be a whole number in 0..{width}, one of the model's {width} classes",
                self.name(),
                targets[sample]
            ))),
        }
    }

    /// The summed (not yet averaged) loss of the `pred` rows of `width`
    /// values against `target`, and, if `grad` is given, the gradient of the
    /// *mean* loss over `batch` samples with respect to `pred` (or, when
    /// `fused_softmax`, with respect to the softmax's input). Sparse targets
    /// are taken to be valid class indices: see [`Loss::check_labels`].
    pub fn compute(
        self,
        pred: &[f32],
        target: &[f32],
        width: usize,
        fused_softmax: bool,
        grad: Option<&mut [f32]>,
    ) -> f64 {
        let batch = pred.len() / width;
        let scale = 1.0 / batch as f32;
        self.compute_scaled((pred, target), width, fused_softmax, (grad, scale))
    }

    /// [`Loss::compute`], with each sample's gradient multiplied by
    /// `scale` instead of `1 / batch`: part of a batch computed apart.
    pub(crate) fn compute_scaled(
        self,
        (pred, target): (&[f32], &[f32]),
        width: usize,
        fused_softmax: bool,
        (grad, scale): (Option<&mut [f32]>, f32),
    ) -> f64 {
        let target_width = self.target_width(width);
        let mut total = 0.0f64;
        let mut grad_rows = grad.map(|g| g.chunks_exact_mut(width));
        for (p, y) in pred
            .chunks_exact(width)
            .zip(target.chunks_exact(target_width))
        {
            let g = grad_rows.as_mut().and_then(|rows| rows.next());
            total += match self {
                Loss::CategoricalCrossentropy => {
                    cross_entropy(p, |i| y[i], fused_softmax, scale, g)
                }
                Loss::SparseCategoricalCrossentropy => {
                    let class = y[0] as usize;
                    let one_hot = |i| if i == class { 1.0 } else { 0.0 };
                    cross_entropy(p, one_hot, fused_softmax, scale, g)
                }
                Loss::MeanSquaredError => squared_error(p, y, scale, g),
            };
        }
        total
    }
}

impl std::str::FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "categorical_crossentropy" => Ok(Loss::CategoricalCrossentropy),
            "sparse_categorical_crossentropy" => Ok(Loss::SparseCategoricalCrossentropy),
            "mean_squared_error" | "mse" => Ok(Loss::MeanSquaredError),
            _ => Err(Error::InvalidArgument(format!(
                "unknown loss {s:?}: use categorical_crossentropy, \
                 sparse_categorical_crossentropy or mean_squared_error"
            ))),
        }
    }
}

fn cross_entropy(
    p: &[f32],
    y: impl Fn(usize) -> f32,
    fused_softmax: bool,
    scale: f32,
    grad: Option<&mut [f32]>,
) -> f64 {
    let loss: f64 = (0..p.len())
        .map(|i| -(y(i) as f64) * (p[i].clamp(EPSILON, 1.0 - EPSILON) as f64).ln())
        .sum();
    if let Some(g) = grad {
        if fused_softmax {
            // d/dz of -Σ y log softmax(z) = p Σy - y.
            let y_sum: f32 = (0..p.len()).map(&y).sum();
            for (i, g) in g.iter_mut().enumerate() {
                *g = (p[i] * y_sum - y(i)) * scale;
            }
        } else {
            for (i, g) in g.iter_mut().enumerate() {
                let clipped = p[i].clamp(EPSILON, 1.0 - EPSILON);
                let inside = p[i] == clipped;
                *g = if inside { -y(i) / clipped * scale } else { 0.0 };
            }
        }
    }
    loss
}

fn squared_error(p: &[f32], y: &[f32], scale: f32, grad: Option<&mut [f32]>) -> f64 {
    let width = p.len() as f32;
    if let Some(g) = grad {
        for ((g, p), y) in g.iter_mut().zip(p).zip(y) {
            *g = 2.0 * (p - y) / width * scale;
        }
    }
    let sum: f64 = p.iter().zip(y).map(|(p, y)| ((p - y) as f64).powi(2)).sum();
    sum / width as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPARSE: Loss = Loss::SparseCategoricalCrossentropy;

    /// The message of `check_labels`'s error, which must be an invalid argument.
    fn refusal(targets: &[f32], width: usize) -> String {
        match SPARSE.check_labels(targets, width) {
            Err(err @ Error::InvalidArgument(_)) => err.to_string(),
            other => panic!("{targets:?} with {width} classes gave {other:?}"),
        }
    }

    #[test]
    fn valid_sparse_labels_pass() {
        assert!(SPARSE.check_labels(&[0.0, 1.0, 9.0, 5.0, 0.0], 10).is_ok());
        assert!(SPARSE.check_labels(&[], 10).is_ok());
        assert!(SPARSE.check_labels(&[0.0], 1).is_ok());
        assert!(SPARSE.check_labels(&[-0.0], 2).is_ok());
    }

    #[test]
    fn a_label_past_the_last_class_is_refused() {
        let message = refusal(&[3.0, 9.0, 10.0, 42.0], 10);
        for part in [
            "sample 2",
            "is 10",
            "0..10",
            "10 classes",
            "sparse_categorical_crossentropy",
        ] {
            assert!(message.contains(part), "no {part:?} in: {message}");
        }
        assert!(refusal(&[0.0], 0).contains("0..0"));
    }

    #[test]
    fn a_negative_label_is_refused() {
        let message = refusal(&[0.0, -1.0], 10);
        assert!(
            message.contains("sample 1") && message.contains("is -1"),
            "{message}"
        );
    }

    #[test]
    fn a_fractional_label_is_refused() {
        let message = refusal(&[2.5, 1.0], 10);
        assert!(
            message.contains("sample 0") && message.contains("is 2.5"),
            "{message}"
        );
        assert!(refusal(&[9.5], 10).contains("is 9.5"));
    }

    #[test]
    fn a_nan_label_is_refused() {
        let message = refusal(&[1.0, 2.0, f32::NAN], 10);
        assert!(
            message.contains("sample 2") && message.contains("is NaN"),
            "{message}"
        );
        assert!(refusal(&[f32::INFINITY], 10).contains("is inf"));
    }

    #[test]
    fn other_losses_take_any_targets() {
        for loss in [Loss::CategoricalCrossentropy, Loss::MeanSquaredError] {
            assert!(loss.check_labels(&[-1.0, 0.5, f32::NAN, 12.0], 2).is_ok());
        }
    }
}
