//! Loss functions, by their Keras names, with their gradients.
//!
//! A loss is the mean over the batch of a per-sample loss. When the last
//! layer is a softmax and the loss a cross-entropy, the two are fused: the
//! gradient with respect to the softmax's *input* is simply `p - y`, which is
//! both cheaper and numerically safer than going through `-y / p`. Binary
//! cross-entropy fuses with a sigmoid output the same way.
//!
//! The cross-entropies take Keras's options: `from_logits` (the last layer
//! is linear and the loss applies softmax or sigmoid itself, stably) and,
//! for categorical and binary cross-entropy, `label_smoothing`:
//!
//! ```
//! use convnet::Loss;
//!
//! // Keras: CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
//! let loss = Loss::CategoricalCrossentropy
//!     .from_logits(true)?
//!     .label_smoothing(0.1)?;
//! assert!(loss.is_from_logits());
//! assert_eq!(loss.smoothing(), 0.1);
//! assert!(Loss::MeanSquaredError.label_smoothing(0.1).is_err());
//! # Ok::<(), convnet::Error>(())
//! ```

use serde_json::{Value, json};

use crate::{Activation, Error, Result};

/// Probabilities are clipped to `[EPSILON, 1 - EPSILON]` before `log`, as
/// Keras does, so that a confident mistake costs a large but finite loss.
pub const EPSILON: f32 = 1e-7;

/// Which function a [`Loss`] computes, options aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// `-Σ_i y_i log p_i`, with one-hot (or soft) targets `y`.
    CategoricalCrossentropy,
    /// Cross-entropy with targets given as class indices (one value per sample).
    SparseCategoricalCrossentropy,
    /// `-mean_i (y_i log p_i + (1 - y_i) log(1 - p_i))` over the last axis,
    /// for sigmoid outputs and targets in `[0, 1]`.
    BinaryCrossentropy,
    /// `mean_i (p_i - y_i)²` over the last axis.
    MeanSquaredError,
}

/// A loss function. The plain variants are Keras's losses with their
/// default options; [`Loss::from_logits`] and [`Loss::label_smoothing`]
/// make a [`Loss::WithOptions`] of the cross-entropies, which is valid by
/// construction (the options are checked when set). [`Loss::kind`] tells
/// which function any loss computes.
///
/// ```
/// use convnet::{Loss, losses::LossKind};
///
/// let bce: Loss = "binary_crossentropy".parse()?;
/// assert_eq!(bce, Loss::BinaryCrossentropy);
/// let logits = bce.from_logits(true)?;
/// assert!(matches!(logits, Loss::WithOptions(_)));
/// assert_eq!(logits.kind(), LossKind::BinaryCrossentropy);
/// // Back to the defaults, back to the plain variant.
/// assert_eq!(logits.from_logits(false)?, Loss::BinaryCrossentropy);
/// # Ok::<(), convnet::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `-Σ_i y_i log p_i`, with one-hot (or soft) targets `y`.
    CategoricalCrossentropy,
    /// Cross-entropy with targets given as class indices (one value per sample).
    SparseCategoricalCrossentropy,
    /// `mean_i (p_i - y_i)²` over the last axis.
    MeanSquaredError,
    /// `-mean_i (y_i log p_i + (1 - y_i) log(1 - p_i))` over the last axis,
    /// for sigmoid outputs and targets in `[0, 1]`.
    BinaryCrossentropy,
    /// A cross-entropy with options that are not all Keras's defaults.
    WithOptions(LossOptions),
}

/// The options of a [`Loss::WithOptions`], read through [`Loss::kind`],
/// [`Loss::is_from_logits`] and [`Loss::smoothing`]. Never all defaults:
/// such a loss is the plain variant, so that equal losses compare equal.
#[derive(Clone, Copy, PartialEq)]
pub struct LossOptions {
    kind: LossKind,
    from_logits: bool,
    /// In `[0, 1]`, never NaN: so the options can be `Eq`.
    label_smoothing: f32,
}

impl Eq for LossOptions {}

impl std::fmt::Debug for LossOptions {
    /// `BinaryCrossentropy { from_logits: true, label_smoothing: 0.1 }`.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:?} {{ from_logits: {}, label_smoothing: {} }}",
            self.kind, self.from_logits, self.label_smoothing
        )
    }
}

/// Keras's lower-case alias for [`Loss::CategoricalCrossentropy`].
pub const CATEGORICAL_CROSSENTROPY: Loss = Loss::CategoricalCrossentropy;

impl Loss {
    /// The loss `kind` with Keras's default options.
    pub const fn of(kind: LossKind) -> Loss {
        match kind {
            LossKind::CategoricalCrossentropy => Loss::CategoricalCrossentropy,
            LossKind::SparseCategoricalCrossentropy => Loss::SparseCategoricalCrossentropy,
            LossKind::BinaryCrossentropy => Loss::BinaryCrossentropy,
            LossKind::MeanSquaredError => Loss::MeanSquaredError,
        }
    }

    /// The loss of `options`: the plain variant when they are defaults.
    fn with(options: LossOptions) -> Loss {
        if options.from_logits || options.label_smoothing != 0.0 {
            Loss::WithOptions(options)
        } else {
            Loss::of(options.kind)
        }
    }

    /// The kind and options of any loss.
    fn options(self) -> LossOptions {
        match self {
            Loss::WithOptions(options) => options,
            plain => LossOptions {
                kind: plain.kind(),
                from_logits: false,
                label_smoothing: 0.0,
            },
        }
    }

    /// Which function this is.
    pub fn kind(self) -> LossKind {
        match self {
            Loss::CategoricalCrossentropy => LossKind::CategoricalCrossentropy,
            Loss::SparseCategoricalCrossentropy => LossKind::SparseCategoricalCrossentropy,
            Loss::MeanSquaredError => LossKind::MeanSquaredError,
            Loss::BinaryCrossentropy => LossKind::BinaryCrossentropy,
            Loss::WithOptions(options) => options.kind,
        }
    }

    /// Whether the loss takes logits (Keras `from_logits`).
    pub fn is_from_logits(self) -> bool {
        self.options().from_logits
    }

    /// The label smoothing ε (Keras `label_smoothing`), 0 when unset.
    pub fn smoothing(self) -> f32 {
        self.options().label_smoothing
    }

    /// Whether any option differs from Keras's default.
    pub fn has_options(self) -> bool {
        matches!(self, Loss::WithOptions(_))
    }

    /// The loss taking logits (`true`: the model's last layer is linear,
    /// and the loss applies softmax, or sigmoid for binary cross-entropy,
    /// itself, stably) or probabilities (`false`, the default). An error
    /// for mean squared error, which has no such option.
    ///
    /// ```
    /// use convnet::Loss;
    /// let loss = Loss::SparseCategoricalCrossentropy.from_logits(true)?;
    /// // Logits 0 and ln 3: softmax (1/4, 3/4); class 1 costs -ln(3/4).
    /// let value = loss.compute(&[0.0, 3f32.ln()], &[1.0], 2, false, None);
    /// assert!((value - (4.0f64 / 3.0).ln()).abs() < 1e-6);
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn from_logits(self, from_logits: bool) -> Result<Loss> {
        if self.kind() == LossKind::MeanSquaredError {
            return Err(self.no_option("from_logits", "cross-entropies"));
        }
        Ok(Loss::with(LossOptions {
            from_logits,
            ..self.options()
        }))
    }

    /// The loss with label smoothing `epsilon` in `[0, 1]` (Keras
    /// `label_smoothing`): the targets `y` become `y (1 - ε) + ε / K` over
    /// `K` classes for categorical cross-entropy, `y (1 - ε) + ε / 2` for
    /// binary. An error for an `epsilon` outside `[0, 1]`, and for sparse
    /// categorical cross-entropy and mean squared error, which have no
    /// such option.
    ///
    /// ```
    /// use convnet::Loss;
    /// let loss = Loss::BinaryCrossentropy.label_smoothing(0.2)?;
    /// // The target 1 becomes 0.9: -(0.9 ln 0.5 + 0.1 ln 0.5) = ln 2.
    /// let value = loss.compute(&[0.5], &[1.0], 1, false, None);
    /// assert!((value - 2f64.ln()).abs() < 1e-6);
    /// assert!(Loss::BinaryCrossentropy.label_smoothing(1.5).is_err());
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn label_smoothing(self, epsilon: f32) -> Result<Loss> {
        if !matches!(
            self.kind(),
            LossKind::CategoricalCrossentropy | LossKind::BinaryCrossentropy
        ) {
            return Err(self.no_option(
                "label_smoothing",
                "categorical_crossentropy and binary_crossentropy",
            ));
        }
        if !(0.0..=1.0).contains(&epsilon) {
            return Err(Error::InvalidArgument(format!(
                "{}: label_smoothing must be in [0, 1], got {epsilon}",
                self.name()
            )));
        }
        Ok(Loss::with(LossOptions {
            label_smoothing: epsilon,
            ..self.options()
        }))
    }

    /// The error of an option this loss does not have.
    fn no_option(self, option: &str, losses: &str) -> Error {
        Error::InvalidArgument(format!(
            "{} has no option {option}: only {losses} take it",
            self.name()
        ))
    }

    /// The Keras name.
    pub fn name(self) -> &'static str {
        match self.kind() {
            LossKind::CategoricalCrossentropy => "categorical_crossentropy",
            LossKind::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            LossKind::BinaryCrossentropy => "binary_crossentropy",
            LossKind::MeanSquaredError => "mean_squared_error",
        }
    }

    /// Whether this loss can take over the derivative of an output
    /// layer with `activation`: a cross-entropy on probabilities, with
    /// softmax (categorical) or sigmoid (binary). The gradient it then
    /// gives is with respect to the activation's input, `p - y`.
    ///
    /// ```
    /// use convnet::{Activation, Loss};
    /// assert!(Loss::BinaryCrossentropy.fuses_with(Activation::Sigmoid));
    /// assert!(!Loss::BinaryCrossentropy.fuses_with(Activation::Softmax));
    /// assert!(!Loss::CategoricalCrossentropy.from_logits(true)?.fuses_with(Activation::Softmax));
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn fuses_with(self, activation: Activation) -> bool {
        use LossKind::*;
        !self.is_from_logits()
            && matches!(
                (self.kind(), activation),
                (
                    CategoricalCrossentropy | SparseCategoricalCrossentropy,
                    Activation::Softmax
                ) | (BinaryCrossentropy, Activation::Sigmoid)
            )
    }

    /// Whether this loss can take over a softmax output activation.
    pub fn fuses_with_softmax(self) -> bool {
        self.fuses_with(Activation::Softmax)
    }

    /// Values of the target per sample, for predictions of `width` values.
    pub fn target_width(self, width: usize) -> usize {
        match self.kind() {
            LossKind::SparseCategoricalCrossentropy => 1,
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
        let hint = match self.kind() {
            LossKind::SparseCategoricalCrossentropy => "give one class index per sample",
            LossKind::CategoricalCrossentropy if target_width == 1 => {
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
        if self.kind() != LossKind::SparseCategoricalCrossentropy {
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
    /// `fused`, with respect to the input of the output activation the loss
    /// takes over: see [`Loss::fuses_with`]). Sparse targets are taken to
    /// be valid class indices: see [`Loss::check_labels`].
    pub fn compute(
        self,
        pred: &[f32],
        target: &[f32],
        width: usize,
        fused: bool,
        grad: Option<&mut [f32]>,
    ) -> f64 {
        let batch = pred.len() / width;
        let scale = 1.0 / batch as f32;
        self.compute_scaled((pred, target), width, fused, (grad, scale))
    }

    /// [`Loss::compute`], with each sample's gradient multiplied by
    /// `scale` instead of `1 / batch`: part of a batch computed apart.
    pub(crate) fn compute_scaled(
        self,
        (pred, target): (&[f32], &[f32]),
        width: usize,
        fused: bool,
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
            total += self.row(p, y, fused, (g, scale));
        }
        total
    }

    /// The loss of one sample, and its gradient into `grad` times `scale`.
    fn row(self, p: &[f32], y: &[f32], fused: bool, grad: (Option<&mut [f32]>, f32)) -> f64 {
        let eps = self.smoothing();
        match self.kind() {
            LossKind::CategoricalCrossentropy => {
                let k = p.len() as f32;
                self.categorical(p, |i| y[i] * (1.0 - eps) + eps / k, fused, grad)
            }
            LossKind::SparseCategoricalCrossentropy => {
                let class = y[0] as usize;
                let one_hot = |i| if i == class { 1.0 } else { 0.0 };
                self.categorical(p, one_hot, fused, grad)
            }
            LossKind::BinaryCrossentropy => {
                let y = |i: usize| y[i] * (1.0 - eps) + eps / 2.0;
                if self.is_from_logits() {
                    binary_cross_entropy_logits(p, y, grad)
                } else {
                    binary_cross_entropy(p, y, fused, grad)
                }
            }
            LossKind::MeanSquaredError => squared_error(p, y, grad),
        }
    }

    /// Categorical cross-entropy of one sample with targets `y(i)`.
    fn categorical(
        self,
        p: &[f32],
        y: impl Fn(usize) -> f32,
        fused: bool,
        (grad, scale): (Option<&mut [f32]>, f32),
    ) -> f64 {
        if self.is_from_logits() {
            cross_entropy_logits(p, y, scale, grad)
        } else {
            cross_entropy(p, y, fused, scale, grad)
        }
    }

    /// The loss as JSON for a model file: its name alone without options
    /// (as files have always held it), else a Keras-style object
    /// `{"class_name": "BinaryCrossentropy", "config": {"name":
    /// "binary_crossentropy", "from_logits": true, "label_smoothing": 0.1}}`.
    /// [`Loss::from_config`] reads either back.
    ///
    /// ```
    /// use convnet::Loss;
    /// assert_eq!(Loss::MeanSquaredError.config(), "mean_squared_error");
    /// let loss = Loss::BinaryCrossentropy.label_smoothing(0.25)?;
    /// assert_eq!(Loss::from_config(&loss.config())?, loss);
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn config(self) -> Value {
        if !self.has_options() {
            return self.name().into();
        }
        let class_name = format!("{:?}", self.kind());
        let mut config = json!({"name": self.name(), "from_logits": self.is_from_logits()});
        if self.smoothing() != 0.0 {
            config["label_smoothing"] = f64::from(self.smoothing()).into();
        }
        json!({"class_name": class_name, "config": config})
    }

    /// The loss of a [`Loss::config`]: a name, or an object with a
    /// `class_name` (Keras's, or the snake-case name) and an optional
    /// `config` of `from_logits` and `label_smoothing`. Other Keras
    /// settings (`name`, `reduction`, `axis`) are ignored.
    pub fn from_config(config: &Value) -> Result<Loss> {
        let bad = |what: String| Error::InvalidArgument(format!("loss config: {what}"));
        let object = match config {
            Value::String(name) => return name.parse(),
            Value::Object(object) => object,
            other => return Err(bad(format!("must be a name or an object, not {other}"))),
        };
        let class_name = object.get("class_name").and_then(Value::as_str);
        let mut loss: Loss = class_name
            .ok_or_else(|| bad("no \"class_name\"".into()))?
            .parse()?;
        let options = &object.get("config").cloned().unwrap_or(Value::Null);
        match options.get("from_logits") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(yes)) => loss = loss.from_logits(*yes)?,
            Some(other) => {
                return Err(bad(format!(
                    "from_logits must be true or false, not {other}"
                )));
            }
        }
        match options.get("label_smoothing") {
            None | Some(Value::Null) => {}
            Some(value) => {
                let epsilon = value
                    .as_f64()
                    .ok_or_else(|| bad(format!("label_smoothing must be a number, not {value}")))?;
                // Keras writes 0.0 for every loss: only a set one counts.
                if epsilon != 0.0 {
                    loss = loss.label_smoothing(epsilon as f32)?;
                }
            }
        }
        Ok(loss)
    }
}

impl std::str::FromStr for Loss {
    type Err = Error;
    /// A loss by its Keras name (`"binary_crossentropy"`) or class name
    /// (`"BinaryCrossentropy"`), with default options; `"mse"` and
    /// `"bce"` are short for the mean squared error and binary
    /// cross-entropy.
    fn from_str(s: &str) -> Result<Self> {
        let kind = match s.to_ascii_lowercase().replace('_', "").as_str() {
            "categoricalcrossentropy" => LossKind::CategoricalCrossentropy,
            "sparsecategoricalcrossentropy" => LossKind::SparseCategoricalCrossentropy,
            "binarycrossentropy" | "bce" => LossKind::BinaryCrossentropy,
            "meansquarederror" | "mse" => LossKind::MeanSquaredError,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown loss {s:?}: use categorical_crossentropy, \
                     sparse_categorical_crossentropy, binary_crossentropy or mean_squared_error"
                )));
            }
        };
        Ok(Loss::of(kind))
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

/// `-Σ y log softmax(z)` for logits `z`, as `Σ y (logsumexp(z) - z)` in
/// f64 with the maximum subtracted first: no exp overflows, no log of 0.
fn cross_entropy_logits(
    z: &[f32],
    y: impl Fn(usize) -> f32,
    scale: f32,
    grad: Option<&mut [f32]>,
) -> f64 {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exps: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let log_sum = max + sum.ln();
    let loss = (0..z.len())
        .map(|i| y(i) as f64 * (log_sum - z[i] as f64))
        .sum();
    if let Some(g) = grad {
        // As the fused softmax: softmax(z) Σy - y.
        let y_sum: f64 = (0..z.len()).map(|i| y(i) as f64).sum();
        for (i, g) in g.iter_mut().enumerate() {
            *g = ((exps[i] / sum * y_sum - y(i) as f64) as f32) * scale;
        }
    }
    loss
}

/// Binary cross-entropy of probabilities `p`, clipped as Keras clips
/// them, averaged over the row. `fused_sigmoid`: the gradient is with
/// respect to the sigmoid's input, `(p - y) / K`.
fn binary_cross_entropy(
    p: &[f32],
    y: impl Fn(usize) -> f32,
    fused_sigmoid: bool,
    (grad, scale): (Option<&mut [f32]>, f32),
) -> f64 {
    let k = p.len() as f32;
    let clip = |p: f32| p.clamp(EPSILON, 1.0 - EPSILON);
    let sum: f64 = (0..p.len())
        .map(|i| {
            let (c, y) = (clip(p[i]) as f64, y(i) as f64);
            -(y * c.ln() + (1.0 - y) * (1.0 - c).ln())
        })
        .sum();
    if let Some(g) = grad {
        for (i, g) in g.iter_mut().enumerate() {
            let (c, y) = (clip(p[i]), y(i));
            *g = if fused_sigmoid {
                (p[i] - y) / k * scale
            } else if p[i] == c {
                (-y / c + (1.0 - y) / (1.0 - c)) / k * scale
            } else {
                0.0
            };
        }
    }
    sum / k as f64
}

/// Binary cross-entropy of logits `z`, averaged over the row, in the
/// stable form of TensorFlow's `sigmoid_cross_entropy_with_logits`:
/// `max(z, 0) - z y + ln(1 + e^-|z|)`.
fn binary_cross_entropy_logits(
    z: &[f32],
    y: impl Fn(usize) -> f32,
    (grad, scale): (Option<&mut [f32]>, f32),
) -> f64 {
    let k = z.len() as f32;
    let sum: f64 = (0..z.len())
        .map(|i| {
            let (z, y) = (z[i] as f64, y(i) as f64);
            z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
        })
        .sum();
    if let Some(g) = grad {
        for (i, g) in g.iter_mut().enumerate() {
            *g = ((sigmoid(z[i] as f64) - y(i) as f64) as f32) / k * scale;
        }
    }
    sum / k as f64
}

/// `1 / (1 + e^-x)`, without overflow for large negative `x`.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn squared_error(p: &[f32], y: &[f32], (grad, scale): (Option<&mut [f32]>, f32)) -> f64 {
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

    /// The mean loss of a batch of `width`-wide rows.
    fn mean(loss: Loss, pred: &[f32], target: &[f32], width: usize) -> f64 {
        loss.compute(pred, target, width, false, None) / (pred.len() / width) as f64
    }

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    const Y: [f32; 4] = [0., 1., 1., 0.];
    const LOGITS: [f32; 4] = [-1.0, 2.0, 0.5, -3.0];

    /// Expected values from Keras's formulas, computed in Python (math):
    /// per sample, mean over outputs of -(y ln p + (1-y) ln(1-p)) with
    /// y ← y (1-ε) + ε/2; then the mean over the batch.
    #[test]
    fn binary_cross_entropy_matches_keras() {
        let p = [0.2, 0.7, 0.9, 0.4];
        let bce = Loss::BinaryCrossentropy;
        close(mean(bce, &p, &Y, 2), 0.2990011586691898);
        let smoothed = bce.label_smoothing(0.1).unwrap();
        close(mean(smoothed, &p, &Y, 2), 0.3594546825060832);
        // The same, from the logits (p = sigmoid(z)).
        let logits = bce.from_logits(true).unwrap();
        close(mean(logits, &LOGITS, &Y, 2), 0.240713508578761);
        let both = logits.label_smoothing(0.2).unwrap();
        close(mean(both, &LOGITS, &Y, 2), 0.403213508578761);
    }

    /// Python: -Σ (y (1-ε) + ε/K) ln softmax(z), K = 3.
    #[test]
    fn categorical_options_match_keras() {
        let (p, y) = ([0.2, 0.7, 0.1], [0., 1., 0.]);
        let smoothed = Loss::CategoricalCrossentropy.label_smoothing(0.1).unwrap();
        close(mean(smoothed, &p, &y, 3), 0.46329738119042185);
        let z = [1.0, 2.0, 0.5];
        let logits = Loss::CategoricalCrossentropy.from_logits(true).unwrap();
        close(mean(logits, &z, &y, 3), 0.46436878410794485);
        let sparse = Loss::SparseCategoricalCrossentropy
            .from_logits(true)
            .unwrap();
        close(mean(sparse, &z, &[1.0], 3), 0.46436878410794485);
        let both = logits.label_smoothing(0.1).unwrap();
        close(mean(both, &z, &y, 3), 0.5477021174412782);
        // Gradient: softmax(z) - y', with y' the smoothed targets.
        let mut grad = [0.0; 3];
        both.compute(&z, &y, 3, false, Some(&mut grad));
        let want = [
            0.19789056428881574,
            -0.3048016141215709,
            0.10691104983275515,
        ];
        for (g, w) in grad.iter().zip(want) {
            close(*g as f64, w);
        }
    }

    /// Python: (sigmoid(z) - y) / width / batch.
    #[test]
    fn binary_logits_gradient_is_sigmoid_minus_target() {
        let loss = Loss::BinaryCrossentropy.from_logits(true).unwrap();
        let mut grad = [0.0; 4];
        loss.compute(&LOGITS, &Y, 2, false, Some(&mut grad));
        let want = [
            0.06723535534249878,
            -0.02980073050552942,
            -0.09438516719953635,
        ];
        for (g, w) in grad.iter().zip(want) {
            close(*g as f64, w);
        }
        close(grad[3] as f64, 0.011856468294391695);
    }

    /// Logits far beyond exp's range cost exactly what they should.
    #[test]
    fn logits_are_stable_when_huge() {
        let cce = Loss::CategoricalCrossentropy.from_logits(true).unwrap();
        close(
            cce.compute(&[1000.0, 0.0], &[0.0, 1.0], 2, false, None),
            1000.0,
        );
        let bce = Loss::BinaryCrossentropy.from_logits(true).unwrap();
        close(bce.compute(&[100.0], &[0.0], 1, false, None), 100.0);
        close(bce.compute(&[-100.0], &[0.0], 1, false, None), 0.0);
        let mut grad = [0.0];
        bce.compute(&[-1000.0], &[1.0], 1, false, Some(&mut grad));
        assert_eq!(grad, [-1.0]);
    }

    #[test]
    fn invalid_options_are_refused_by_name() {
        let message = |r: Result<Loss>| r.unwrap_err().to_string();
        let cce = Loss::CategoricalCrossentropy;
        for bad in [-0.1, 1.5, f32::NAN] {
            let text = message(cce.label_smoothing(bad));
            assert!(text.contains("label_smoothing must be in [0, 1]"), "{text}");
        }
        let text = message(Loss::SparseCategoricalCrossentropy.label_smoothing(0.1));
        assert!(
            text.contains("categorical_crossentropy and binary_crossentropy"),
            "{text}"
        );
        let text = message(Loss::MeanSquaredError.from_logits(true));
        assert!(
            text.contains("mean_squared_error has no option from_logits"),
            "{text}"
        );
        let text = message("hinge".parse());
        assert!(text.contains("binary_crossentropy"), "{text}");
    }

    #[test]
    fn configs_round_trip_and_old_names_still_read() {
        let losses = [
            Loss::CategoricalCrossentropy,
            Loss::CategoricalCrossentropy.label_smoothing(0.1).unwrap(),
            Loss::SparseCategoricalCrossentropy
                .from_logits(true)
                .unwrap(),
            Loss::BinaryCrossentropy.from_logits(true).unwrap(),
            Loss::BinaryCrossentropy.label_smoothing(1.0).unwrap(),
            Loss::MeanSquaredError,
        ];
        for loss in losses {
            assert_eq!(Loss::from_config(&loss.config()).unwrap(), loss, "{loss:?}");
        }
        let old = Value::from("categorical_crossentropy");
        assert_eq!(
            Loss::from_config(&old).unwrap(),
            Loss::CategoricalCrossentropy
        );
        // A Keras loss config, with its other settings and nulls.
        let keras = json!({"module": "keras.losses", "class_name": "BinaryCrossentropy",
            "config": {"name": "binary_crossentropy", "reduction": "sum_over_batch_size",
                       "from_logits": true, "label_smoothing": 0.0, "axis": -1}});
        let want = Loss::BinaryCrossentropy.from_logits(true).unwrap();
        assert_eq!(Loss::from_config(&keras).unwrap(), want);
        let bad = json!({"class_name": "MeanSquaredError", "config": {"from_logits": true}});
        assert!(Loss::from_config(&bad).is_err());
    }
}
