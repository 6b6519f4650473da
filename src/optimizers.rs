//! Optimizers, with the update rules and defaults of Keras 3.
//!
//! An optimizer reads each parameter's gradient from [`Param::grad`] and
//! updates [`Param::value`] in place. Its state (moments, velocities) is kept
//! per parameter, in the order the model lists them.
//!
//! The learning rate is fixed, or follows a schedule from
//! [`crate::schedules`], given as in Keras to the optimizer:
//! `Adam::with_schedule(CosineDecay::new(1e-3, 1000))` is Keras's
//! `Adam(learning_rate=CosineDecay(1e-3, 1000))`.
//!
//! Every optimizer also takes Keras's `weight_decay` (decoupled: `w -=
//! lr · wd · w` before the step), `clipnorm` (each gradient tensor scaled
//! down to that L2 norm), `global_clipnorm` (all of them together) and
//! `clipvalue` (each gradient value clamped), as builder methods or
//! config settings. Unset, as by default, they change nothing.
//!
//! ```
//! use convnet::optimizers::{AdamW, Optimizer, SGD, by_name, from_config};
//!
//! let sgd = SGD::new(0.1).momentum(0.9).clipnorm(1.0)?.weight_decay(1e-4)?;
//! let copy = from_config(&sgd.config())?;
//! assert_eq!(copy.config(), sgd.config());
//! // Keras's AdamW(): weight_decay 0.004.
//! assert_eq!(AdamW::default().config()["weight_decay"], 0.004f32 as f64);
//! assert_eq!(by_name("adamw", Some(0.01))?.name(), "adamw");
//! # Ok::<(), convnet::Error>(())
//! ```

use std::sync::Arc;

use rayon::prelude::*;

use crate::layers::Param;
use crate::layers::config::Config;
use crate::schedules::LearningRateSchedule;
use crate::{Error, Result};

/// Updates parameters from their gradients.
pub trait Optimizer: Send + Sync {
    /// The Keras name: `"adam"`, `"adamw"`, `"sgd"`, `"rmsprop"`.
    fn name(&self) -> &'static str;
    /// The learning rate of the next step (with a schedule, its rate at
    /// the steps taken so far).
    fn learning_rate(&self) -> f32;
    /// Sets a fixed learning rate (what Keras callbacks do with
    /// `optimizer.learning_rate = lr`). An error if `lr` is not a finite
    /// number >= 0, or if the optimizer follows a schedule (as in Keras).
    fn set_learning_rate(&mut self, lr: f32) -> Result<()>;
    /// Makes the learning rate follow `schedule`, from the optimizer's
    /// steps so far. An error if the schedule's arguments are invalid.
    fn set_schedule(&mut self, schedule: Box<dyn LearningRateSchedule>) -> Result<()>;
    /// Optimizer steps taken so far (Keras `optimizer.iterations`).
    fn iterations(&self) -> u64;
    /// One update of every parameter, from the gradients they hold.
    fn step(&mut self, params: &mut [&mut Param]);

    /// The settings, as a Keras optimizer config (`{"name": "adam",
    /// "learning_rate": 0.001, "beta_1": 0.9, ...}`), from which
    /// [`from_config`] makes the same optimizer.
    fn config(&self) -> Config;

    /// What the optimizer has learnt so far (moments, step count): what a
    /// checkpoint keeps so that training resumes exactly.
    fn state(&self) -> OptimizerState;

    /// Restores [`Optimizer::state`]; an error if it is not this
    /// optimizer's.
    fn set_state(&mut self, state: OptimizerState) -> Result<()>;

    /// Sets named settings of a config (`beta_1`, `momentum`, ...); an
    /// error for a name the optimizer does not have.
    fn apply_settings(&mut self, settings: &[(String, f32)]) -> Result<()>;
}

/// The state of an optimizer: its step count, and per slot (`"m"` and
/// `"v"` for Adam, `"velocity"` for SGD, `"average"` for RMSprop) one
/// vector per parameter, empty before the first step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Steps taken.
    pub iterations: u64,
    /// `(slot name, one vector per parameter)`.
    pub slots: Vec<(String, Vec<Vec<f32>>)>,
}

impl OptimizerState {
    fn new(iterations: u64, slots: &[(&str, &Vec<Vec<f32>>)]) -> Self {
        let slots = slots.iter().map(|(n, v)| (n.to_string(), (*v).clone()));
        OptimizerState {
            iterations,
            slots: slots.collect(),
        }
    }

    /// The vectors of slot `name`, moved out; an error if there is none.
    fn take(&mut self, name: &str, optimizer: &str) -> Result<Vec<Vec<f32>>> {
        let at = self
            .slots
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| {
                Error::Data(format!(
                    "the {optimizer} optimizer state has no slot {name:?}"
                ))
            })?;
        Ok(self.slots.remove(at).1)
    }
}

/// Sets each of `settings` on the field of that name in `fields`.
fn set_fields(
    optimizer: &str,
    settings: &[(String, f32)],
    fields: &mut [(&str, &mut f32)],
) -> Result<()> {
    let known: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    for (key, value) in settings {
        // Every setting (betas, rho, momentum, epsilon, nesterov) lies in [0, 1].
        if !(0.0..=1.0).contains(value) {
            return Err(Error::InvalidArgument(format!(
                "the {optimizer} optimizer's {key} must be in [0, 1], got {value}"
            )));
        }
        let Some(field) = fields.iter_mut().find(|(name, _)| name == key) else {
            return Err(Error::InvalidArgument(format!(
                "the {optimizer} optimizer has no setting {key:?} (it has learning_rate, {}, {})",
                known.join(", "),
                EXTRAS.join(", ")
            )));
        };
        *field.1 = *value;
    }
    Ok(())
}

/// The settings every optimizer takes besides its own, in Keras's base
/// optimizer: decoupled weight decay and gradient clipping.
const EXTRAS: [&str; 4] = ["weight_decay", "clipnorm", "global_clipnorm", "clipvalue"];

/// The values of [`EXTRAS`]; `None` is unset (Keras `None`), which
/// leaves the gradients and weights as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Extras {
    weight_decay: Option<f32>,
    clipnorm: Option<f32>,
    global_clipnorm: Option<f32>,
    clipvalue: Option<f32>,
}

impl Extras {
    fn field(&mut self, key: &str) -> Option<&mut Option<f32>> {
        match key {
            "weight_decay" => Some(&mut self.weight_decay),
            "clipnorm" => Some(&mut self.clipnorm),
            "global_clipnorm" => Some(&mut self.global_clipnorm),
            "clipvalue" => Some(&mut self.clipvalue),
            _ => None,
        }
    }

    /// Sets `key` (one of [`EXTRAS`]) to `value`: a weight decay must be a
    /// finite number >= 0, a clipping bound > 0, and at most one kind of
    /// clipping is set (Keras would silently use only one of them).
    fn set(&mut self, optimizer: &str, key: &str, value: f32) -> Result<()> {
        let (valid, bound) = match key {
            "weight_decay" => (value >= 0.0, ">= 0"),
            _ => (value > 0.0, "> 0"),
        };
        if !(value.is_finite() && valid) {
            return Err(Error::InvalidArgument(format!(
                "the {optimizer} optimizer's {key} must be a finite number {bound}, got {value}"
            )));
        }
        let mut next = *self;
        *next.field(key).expect("one of EXTRAS") = Some(value);
        let clips = [next.clipnorm, next.global_clipnorm, next.clipvalue];
        if clips.iter().flatten().count() > 1 {
            return Err(Error::InvalidArgument(format!(
                "the {optimizer} optimizer takes only one of clipnorm, global_clipnorm and \
                 clipvalue; {key} would be a second"
            )));
        }
        *self = next;
        Ok(())
    }

    /// Sets those of `settings` that are [`EXTRAS`]; returns the others.
    fn take(&mut self, optimizer: &str, settings: &[(String, f32)]) -> Result<Vec<(String, f32)>> {
        let mut others = Vec::new();
        for (key, value) in settings {
            if EXTRAS.contains(&key.as_str()) {
                self.set(optimizer, key, *value)?;
            } else {
                others.push((key.clone(), *value));
            }
        }
        Ok(others)
    }

    /// Adds the settings that are set to `config`.
    fn add_to(mut self, config: &mut Config) {
        for key in EXTRAS {
            if let Some(value) = *self.field(key).expect("one of EXTRAS") {
                config.insert(key.into(), f64::from(value).into());
            }
        }
    }

    /// What comes before a step at rate `lr`, in Keras's order: the
    /// gradients are clipped (in place: the step uses them), then the
    /// weights decayed.
    fn apply(&self, params: &mut [&mut Param], lr: f32) {
        if let Some(bound) = self.clipnorm {
            for p in params.iter_mut() {
                let grad = p.grad.as_slice_mut().expect("standard layout");
                scale_to_norm(grad, squared_norm(grad).sqrt(), bound);
            }
        }
        if let Some(bound) = self.global_clipnorm {
            let squares = params.iter().map(|p| squared_norm(grad_of(p))).sum::<f64>();
            for p in params.iter_mut() {
                let grad = p.grad.as_slice_mut().expect("standard layout");
                scale_to_norm(grad, squares.sqrt(), bound);
            }
        }
        if let Some(bound) = self.clipvalue {
            for p in params.iter_mut() {
                p.grad.mapv_inplace(|g| g.clamp(-bound, bound));
            }
        }
        if let Some(decay) = self.weight_decay {
            for p in params.iter_mut() {
                p.value.mapv_inplace(|w| w - w * decay * lr);
            }
        }
    }
}

fn grad_of<'a>(p: &'a &mut Param) -> &'a [f32] {
    p.grad.as_slice().expect("standard layout")
}

/// `Σ g²`, in f64.
fn squared_norm(grad: &[f32]) -> f64 {
    grad.iter().map(|&g| f64::from(g) * f64::from(g)).sum()
}

/// Scales `grad`, of L2 norm `norm`, down to norm `bound` if above it.
fn scale_to_norm(grad: &mut [f32], norm: f64, bound: f32) {
    if norm > f64::from(bound) {
        let factor = (f64::from(bound) / norm) as f32;
        grad.iter_mut().for_each(|g| *g *= factor);
    }
}

/// The builders of [`EXTRAS`], for an optimizer type whose extras are at
/// `self.$path`.
macro_rules! extras_builders {
    ($optimizer:ident, $($path:ident).+) => {
        impl $optimizer {
            /// Decoupled weight decay (Keras `weight_decay`): before each
            /// step, `w -= lr · weight_decay · w` for every parameter. An
            /// error unless it is a finite number >= 0.
            #[doc = concat!(
                "\n```\nuse convnet::optimizers::{", stringify!($optimizer), ", Optimizer};\n",
                "let optimizer = ", stringify!($optimizer), "::default().weight_decay(0.01)?;\n",
                "assert_eq!(optimizer.config()[\"weight_decay\"], 0.01f32 as f64);\n",
                "assert!(", stringify!($optimizer), "::default().weight_decay(-1.0).is_err());\n",
                "# Ok::<(), convnet::Error>(())\n```"
            )]
            pub fn weight_decay(self, weight_decay: f32) -> Result<Self> {
                self.with_extra("weight_decay", weight_decay)
            }

            /// Clips each parameter's gradient to L2 norm at most `clipnorm`
            /// (Keras `clipnorm`). An error unless it is a finite number
            /// > 0, or if another clipping is set.
            pub fn clipnorm(self, clipnorm: f32) -> Result<Self> {
                self.with_extra("clipnorm", clipnorm)
            }

            /// Clips all the gradients together to L2 norm at most
            /// `global_clipnorm` (Keras `global_clipnorm`). An error unless
            /// it is a finite number > 0, or if another clipping is set.
            pub fn global_clipnorm(self, global_clipnorm: f32) -> Result<Self> {
                self.with_extra("global_clipnorm", global_clipnorm)
            }

            /// Clamps each gradient value to `[-clipvalue, clipvalue]`
            /// (Keras `clipvalue`). An error unless it is a finite number
            /// > 0, or if another clipping is set.
            pub fn clipvalue(self, clipvalue: f32) -> Result<Self> {
                self.with_extra("clipvalue", clipvalue)
            }

            fn with_extra(mut self, key: &str, value: f32) -> Result<Self> {
                let name = self.name();
                self.$($path).+.set(name, key, value)?;
                Ok(self)
            }
        }
    };
}

/// A config of `name` and the given numeric settings.
fn optimizer_config(name: &str, settings: &[(&str, f64)]) -> Config {
    let mut config = Config::new();
    config.insert("name".into(), name.into());
    for (key, value) in settings {
        config.insert(key.to_string(), (*value).into());
    }
    config
}

/// The optimizer a config of [`Optimizer::config`] describes; settings
/// left out take Keras's defaults.
pub fn from_config(config: &Config) -> Result<Box<dyn Optimizer>> {
    let number = |key: &str| -> Result<Option<f32>> {
        match config.get(key) {
            None => Ok(None),
            // Flags (SGD's nesterov) are settings too: true is 1.
            Some(v) => v
                .as_f64()
                .or(v.as_bool().map(f64::from))
                .map(|x| Some(x as f32))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "optimizer field {key:?} must be a number, not {v}"
                    ))
                }),
        }
    };
    let name = config.get("name").and_then(|v| v.as_str()).unwrap_or("");
    // Any finite rate >= 0 that set_learning_rate takes (0 included).
    let mut optimizer = by_name(name, None)?;
    if let Some(rate) = number("learning_rate")? {
        optimizer.set_learning_rate(rate)?;
    }
    // Keras writes unset settings (clipnorm, ...) as null.
    let settings: Vec<(String, f32)> = config
        .iter()
        .filter(|(k, v)| !matches!(k.as_str(), "name" | "learning_rate") && !v.is_null())
        .map(|(k, _)| k)
        .map(|k| Ok((k.clone(), number(k)?.expect("present"))))
        .collect::<Result<_>>()?;
    optimizer.apply_settings(&settings)?;
    Ok(optimizer)
}

/// A fixed learning rate, or a schedule of the steps taken.
#[derive(Clone, Debug)]
struct LearningRate {
    fixed: f32,
    schedule: Option<Arc<dyn LearningRateSchedule>>,
}

impl LearningRate {
    fn fixed(fixed: f32) -> Self {
        LearningRate {
            fixed,
            schedule: None,
        }
    }

    /// The rate of the step after `iterations` steps.
    fn at(&self, iterations: u64) -> f32 {
        self.schedule
            .as_ref()
            .map_or(self.fixed, |s| s.rate(iterations))
    }

    fn set(&mut self, lr: f32) -> Result<()> {
        if self.schedule.is_some() {
            return Err(Error::InvalidArgument(
                "the optimizer follows a learning-rate schedule, so its rate cannot be set".into(),
            ));
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "learning rate must be a finite number >= 0, got {lr}"
            )));
        }
        self.fixed = lr;
        Ok(())
    }

    fn follow(&mut self, schedule: Box<dyn LearningRateSchedule>) -> Result<()> {
        schedule.validate()?;
        self.schedule = Some(Arc::from(schedule));
        Ok(())
    }
}

/// The trait's learning-rate methods, for an optimizer with fields
/// `learning_rate: LearningRate` and `iterations`.
macro_rules! learning_rate_methods {
    () => {
        fn learning_rate(&self) -> f32 {
            self.learning_rate.at(self.iterations)
        }

        fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
            self.learning_rate.set(lr)
        }

        fn set_schedule(&mut self, schedule: Box<dyn LearningRateSchedule>) -> Result<()> {
            self.learning_rate.follow(schedule)
        }

        fn iterations(&self) -> u64 {
            self.iterations
        }
    };
}

/// `with_schedule`, for an optimizer type whose `Default` has Keras's
/// other arguments.
macro_rules! with_schedule {
    ($optimizer:ident) => {
        impl $optimizer {
            #[doc = concat!(
                        "`", stringify!($optimizer), "` whose learning rate follows `schedule` ",
                        "(Keras `", stringify!($optimizer), "(learning_rate=schedule)`); an error ",
                        "if the schedule's arguments are invalid."
                    )]
            pub fn with_schedule(schedule: impl LearningRateSchedule + 'static) -> Result<Self> {
                let mut optimizer = $optimizer::default();
                optimizer.set_schedule(Box::new(schedule))?;
                Ok(optimizer)
            }
        }
    };
}

/// One state vector per parameter, created (zeroed) on first use.
/// (A state that does not fit the parameters, one restored from elsewhere,
/// starts afresh rather than being read out of bounds.)
fn slots<'a>(state: &'a mut Vec<Vec<f32>>, params: &[&mut Param]) -> &'a mut [Vec<f32>] {
    let fits = |s: &Vec<Vec<f32>>| s.iter().zip(params).all(|(v, p)| v.len() == p.len());
    if state.len() != params.len() || !fits(state) {
        *state = params.iter().map(|p| vec![0.0; p.len()]).collect();
    }
    state
}

fn values_and_grads(p: &mut Param) -> (&mut [f32], &[f32]) {
    let grad = p.grad.as_slice().expect("standard layout");
    let value = p.value.as_slice_mut().expect("standard layout");
    (value, grad)
}

/// Values per parallel piece of an update with two state vectors: large
/// parameters (Dense kernels) are split so that every core takes a share.
const UPDATE_PIECE: usize = 8192;

/// Runs `update(values, grads, state_a, state_b)` over every parameter in
/// pieces of [`UPDATE_PIECE`] values, in parallel. Updates are element-wise,
/// so the result does not depend on the split.
fn update_in_parallel(
    params: &mut [&mut Param],
    state_a: &mut [Vec<f32>],
    state_b: &mut [Vec<f32>],
    update: impl Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
) {
    params
        .par_iter_mut()
        .zip(state_a.par_iter_mut().zip(state_b.par_iter_mut()))
        .flat_map(|(p, (a, b))| {
            let (w, g) = values_and_grads(p);
            w.par_chunks_mut(UPDATE_PIECE)
                .zip(g.par_chunks(UPDATE_PIECE))
                .zip(
                    a.par_chunks_mut(UPDATE_PIECE)
                        .zip(b.par_chunks_mut(UPDATE_PIECE)),
                )
        })
        .for_each(|((w, g), (a, b))| update(w, g, a, b));
}

/// Stochastic gradient descent, optionally with (Nesterov) momentum.
///
/// Keras 3 rule: `v = momentum · v - lr · g`, then `w += v`, or with
/// Nesterov `w += momentum · v - lr · g`.
#[derive(Clone, Debug)]
pub struct SGD {
    learning_rate: LearningRate,
    iterations: u64,
    momentum: f32,
    nesterov: bool,
    extras: Extras,
    velocity: Vec<Vec<f32>>,
}

impl SGD {
    /// Plain SGD with the given learning rate (Keras default 0.01).
    pub fn new(learning_rate: f32) -> Self {
        SGD {
            learning_rate: LearningRate::fixed(learning_rate),
            iterations: 0,
            momentum: 0.0,
            nesterov: false,
            extras: Extras::default(),
            velocity: Vec::new(),
        }
    }

    /// Momentum in `[0, 1)` (default 0).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Whether to use Nesterov momentum (default false).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
}

impl Default for SGD {
    fn default() -> Self {
        SGD::new(0.01)
    }
}

impl Optimizer for SGD {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn config(&self) -> Config {
        let mut config = optimizer_config(
            "sgd",
            &[
                ("learning_rate", self.learning_rate().into()),
                ("momentum", self.momentum.into()),
            ],
        );
        config.insert("nesterov".into(), self.nesterov.into());
        self.extras.add_to(&mut config);
        config
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::new(self.iterations, &[("velocity", &self.velocity)])
    }

    fn set_state(&mut self, mut state: OptimizerState) -> Result<()> {
        self.velocity = state.take("velocity", "sgd")?;
        self.iterations = state.iterations;
        Ok(())
    }

    fn apply_settings(&mut self, settings: &[(String, f32)]) -> Result<()> {
        let settings = &self.extras.take("sgd", settings)?;
        let mut nesterov = f32::from(u8::from(self.nesterov));
        set_fields(
            "sgd",
            settings,
            &mut [
                ("momentum", &mut self.momentum),
                ("nesterov", &mut nesterov),
            ],
        )?;
        self.nesterov = nesterov != 0.0;
        Ok(())
    }
    learning_rate_methods!();

    fn step(&mut self, params: &mut [&mut Param]) {
        let (lr, momentum, nesterov) = (self.learning_rate(), self.momentum, self.nesterov);
        self.extras.apply(params, lr);
        self.iterations += 1;
        let velocity = slots(&mut self.velocity, params);
        // In parallel pieces, as Adam: AlexNet's 62 million weights took
        // one core tens of milliseconds per step.
        params
            .par_iter_mut()
            .zip(velocity.par_iter_mut())
            .flat_map(|(p, v)| {
                let (w, g) = values_and_grads(p);
                w.par_chunks_mut(UPDATE_PIECE)
                    .zip(g.par_chunks(UPDATE_PIECE))
                    .zip(v.par_chunks_mut(UPDATE_PIECE))
            })
            .for_each(|((w, g), v)| {
                if momentum == 0.0 {
                    w.iter_mut().zip(g).for_each(|(w, g)| *w -= lr * g);
                    return;
                }
                for ((w, g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                    *v = flush_tiny(momentum * *v - lr * g);
                    *w += if nesterov { momentum * *v - lr * g } else { *v };
                }
            });
    }
}

/// Adam (Kingma & Ba), as in Keras 3: `m = β1 m + (1-β1) g`,
/// `v = β2 v + (1-β2) g²`, `w -= lr · sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε)`.
#[derive(Clone, Debug)]
pub struct Adam {
    learning_rate: LearningRate,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    extras: Extras,
    iterations: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// Adam with the given learning rate and Keras's other defaults.
    pub fn new(learning_rate: f32) -> Self {
        Adam {
            learning_rate: LearningRate::fixed(learning_rate),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            extras: Extras::default(),
            iterations: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Decay of the first moment (default 0.9).
    pub fn beta_1(mut self, beta_1: f32) -> Self {
        self.beta_1 = beta_1;
        self
    }

    /// Decay of the second moment (default 0.999).
    pub fn beta_2(mut self, beta_2: f32) -> Self {
        self.beta_2 = beta_2;
        self
    }

    /// Added to the denominator for stability (default 1e-7, as Keras).
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }
}

impl Adam {
    /// [`Optimizer::apply_settings`], errors naming the optimizer `name`
    /// (`adam` or `adamw`).
    fn apply_settings_as(&mut self, name: &str, settings: &[(String, f32)]) -> Result<()> {
        let settings = &self.extras.take(name, settings)?;
        let fields = &mut [
            ("beta_1", &mut self.beta_1),
            ("beta_2", &mut self.beta_2),
            ("epsilon", &mut self.epsilon),
        ];
        set_fields(name, settings, fields)
    }
}

impl Default for Adam {
    /// Keras's `Adam()`: learning rate 0.001, β1 0.9, β2 0.999, ε 1e-7.
    fn default() -> Self {
        Adam::new(0.001)
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn config(&self) -> Config {
        let mut config = optimizer_config(
            "adam",
            &[
                ("learning_rate", self.learning_rate().into()),
                ("beta_1", self.beta_1.into()),
                ("beta_2", self.beta_2.into()),
                ("epsilon", self.epsilon.into()),
            ],
        );
        self.extras.add_to(&mut config);
        config
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::new(self.iterations, &[("m", &self.m), ("v", &self.v)])
    }

    fn set_state(&mut self, mut state: OptimizerState) -> Result<()> {
        let (m, v) = (state.take("m", "adam")?, state.take("v", "adam")?);
        self.iterations = state.iterations;
        (self.m, self.v) = (m, v);
        Ok(())
    }

    fn apply_settings(&mut self, settings: &[(String, f32)]) -> Result<()> {
        self.apply_settings_as("adam", settings)
    }
    learning_rate_methods!();

    fn step(&mut self, params: &mut [&mut Param]) {
        let lr = self.learning_rate();
        self.extras.apply(params, lr);
        self.iterations += 1;
        // Beyond 2^31 steps the powers are 0 anyway.
        let t = self.iterations.min(i32::MAX as u64) as i32;
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        slots(&mut self.m, params);
        slots(&mut self.v, params);
        let rule = AdamRule { alpha, b1, b2, eps };
        update_in_parallel(params, &mut self.m, &mut self.v, |w, g, m, v| {
            rule.update(w, g, m, v)
        });
    }
}

/// AdamW (Loshchilov & Hutter), as in Keras 3: [`Adam`] with decoupled
/// weight decay, `w -= lr · weight_decay · w` before each Adam step
/// (default weight decay 0.004). Adam itself takes a weight decay too
/// (Keras's `weight_decay` of every optimizer), to the same effect:
/// AdamW differs only by its default and its name.
///
/// ```
/// use convnet::optimizers::{AdamW, Optimizer};
/// let adamw = AdamW::new(0.01).weight_decay(0.1)?.beta_2(0.99);
/// assert_eq!(adamw.name(), "adamw");
/// assert_eq!(adamw.config()["weight_decay"], 0.1f32 as f64);
/// # Ok::<(), convnet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct AdamW {
    adam: Adam,
}

impl AdamW {
    /// AdamW with the given learning rate and Keras's other defaults:
    /// weight decay 0.004, β1 0.9, β2 0.999, ε 1e-7.
    pub fn new(learning_rate: f32) -> Self {
        let mut adam = Adam::new(learning_rate);
        adam.extras.weight_decay = Some(0.004);
        AdamW { adam }
    }

    /// Decay of the first moment (default 0.9).
    pub fn beta_1(self, beta_1: f32) -> Self {
        AdamW {
            adam: self.adam.beta_1(beta_1),
        }
    }

    /// Decay of the second moment (default 0.999).
    pub fn beta_2(self, beta_2: f32) -> Self {
        AdamW {
            adam: self.adam.beta_2(beta_2),
        }
    }

    /// Added to the denominator for stability (default 1e-7, as Keras).
    pub fn epsilon(self, epsilon: f32) -> Self {
        AdamW {
            adam: self.adam.epsilon(epsilon),
        }
    }
}

impl Default for AdamW {
    /// Keras's `AdamW()`: learning rate 0.001, weight decay 0.004.
    fn default() -> Self {
        AdamW::new(0.001)
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn learning_rate(&self) -> f32 {
        self.adam.learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        self.adam.set_learning_rate(lr)
    }

    fn set_schedule(&mut self, schedule: Box<dyn LearningRateSchedule>) -> Result<()> {
        self.adam.set_schedule(schedule)
    }

    fn iterations(&self) -> u64 {
        self.adam.iterations()
    }

    fn step(&mut self, params: &mut [&mut Param]) {
        self.adam.step(params)
    }

    fn config(&self) -> Config {
        let mut config = self.adam.config();
        config.insert("name".into(), "adamw".into());
        config
    }

    fn state(&self) -> OptimizerState {
        self.adam.state()
    }

    fn set_state(&mut self, state: OptimizerState) -> Result<()> {
        self.adam.set_state(state)
    }

    fn apply_settings(&mut self, settings: &[(String, f32)]) -> Result<()> {
        self.adam.apply_settings_as("adamw", settings)
    }
}

/// One Adam step's constants: `alpha` is the learning rate with both bias
/// corrections.
#[derive(Clone, Copy)]
struct AdamRule {
    alpha: f32,
    b1: f32,
    b2: f32,
    eps: f32,
}

impl AdamRule {
    /// The update of a piece of parameters with their moments. Written
    /// with selects, not branches, and the constants in locals, so that
    /// the loop vectorises (square roots and divisions 8 at a time).
    fn update(self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let AdamRule { alpha, b1, b2, eps } = self;
        let n = w.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let m_new = flush_tiny(m[i] + (g[i] - m[i]) * (1.0 - b1));
            let v_new = v[i] + (g[i] * g[i] - v[i]) * (1.0 - b2);
            let no_step = m_new == 0.0;
            // Without a step v may be flushed (alone, it sits in the
            // denominator: flushing it could blow a step up).
            let v_new = if no_step { flush_tiny(v_new) } else { v_new };
            let step = alpha * m_new / (v_new.sqrt() + eps);
            // `w - 0.0` is `w`, even for -0.0.
            w[i] -= if no_step { 0.0 } else { step };
            (m[i], v[i]) = (m_new, v_new);
        }
    }
}

/// `x`, or 0 if it is below `1e-30` in magnitude: for optimizer state.
/// A weight whose gradient stays zero (a dead relu unit) has its state
/// (momentum, moments, averages) decay by a constant factor each step; near
/// `1e-38` the update's products become subnormal numbers, and arithmetic
/// on those is many times slower on x86 CPUs (it doubled Adam's time per
/// step in LeNet's second epoch). A momentum or first moment this small
/// moves a weight by less than `1e-30 · lr / ε`, far below a float's
/// precision for any weight that is not itself that small, so flushing it
/// changes nothing. Second moments and averages sit in a denominator, so
/// they are flushed only when the step is zero anyway. (TensorFlow runs
/// with subnormals flushed to zero, for the same reason.)
#[inline]
fn flush_tiny(x: f32) -> f32 {
    if x.abs() < 1e-30 { 0.0 } else { x }
}

/// RMSprop, as in Keras 3 (not centred, no momentum):
/// `a = ρ a + (1-ρ) g²`, `w -= lr · g / (sqrt(a) + ε)`.
#[derive(Clone, Debug)]
pub struct RMSprop {
    learning_rate: LearningRate,
    iterations: u64,
    rho: f32,
    epsilon: f32,
    extras: Extras,
    average: Vec<Vec<f32>>,
}

impl RMSprop {
    /// RMSprop with the given learning rate, ρ 0.9 and ε 1e-7.
    pub fn new(learning_rate: f32) -> Self {
        RMSprop {
            learning_rate: LearningRate::fixed(learning_rate),
            iterations: 0,
            rho: 0.9,
            epsilon: 1e-7,
            extras: Extras::default(),
            average: Vec::new(),
        }
    }

    /// Decay of the running average of g² (default 0.9).
    pub fn rho(mut self, rho: f32) -> Self {
        self.rho = rho;
        self
    }
}

impl Default for RMSprop {
    /// Keras's `RMSprop()`: learning rate 0.001.
    fn default() -> Self {
        RMSprop::new(0.001)
    }
}

impl Optimizer for RMSprop {
    fn name(&self) -> &'static str {
        "rmsprop"
    }

    fn config(&self) -> Config {
        let mut config = optimizer_config(
            "rmsprop",
            &[
                ("learning_rate", self.learning_rate().into()),
                ("rho", self.rho.into()),
                ("epsilon", self.epsilon.into()),
            ],
        );
        self.extras.add_to(&mut config);
        config
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::new(self.iterations, &[("average", &self.average)])
    }

    fn set_state(&mut self, mut state: OptimizerState) -> Result<()> {
        self.average = state.take("average", "rmsprop")?;
        self.iterations = state.iterations;
        Ok(())
    }

    fn apply_settings(&mut self, settings: &[(String, f32)]) -> Result<()> {
        let settings = &self.extras.take("rmsprop", settings)?;
        let fields = &mut [("rho", &mut self.rho), ("epsilon", &mut self.epsilon)];
        set_fields("rmsprop", settings, fields)
    }
    learning_rate_methods!();

    fn step(&mut self, params: &mut [&mut Param]) {
        let (lr, rho, eps) = (self.learning_rate(), self.rho, self.epsilon);
        self.extras.apply(params, lr);
        self.iterations += 1;
        let average = slots(&mut self.average, params);
        for (p, a) in params.iter_mut().zip(average) {
            let (w, g) = values_and_grads(p);
            for ((w, g), a) in w.iter_mut().zip(g).zip(a.iter_mut()) {
                *a = rho * *a + (1.0 - rho) * g * g;
                if *g == 0.0 {
                    // No step; the average may be flushed only now (see Adam).
                    *a = flush_tiny(*a);
                } else {
                    *w -= lr * g / (a.sqrt() + eps);
                }
            }
        }
    }
}

with_schedule!(SGD);
with_schedule!(Adam);
with_schedule!(RMSprop);
with_schedule!(AdamW);
extras_builders!(SGD, extras);
extras_builders!(Adam, extras);
extras_builders!(RMSprop, extras);
extras_builders!(AdamW, adam.extras);

/// An optimizer by its Keras name (`adam`, `adamw`, `sgd`, `rmsprop`),
/// with the given learning rate or its default. Set `weight_decay`,
/// `clipnorm` and the other settings with [`Optimizer::apply_settings`].
///
/// ```
/// use convnet::optimizers::by_name;
/// let mut adam = by_name("adam", Some(0.01))?;
/// adam.apply_settings(&[("weight_decay".into(), 0.01), ("clipnorm".into(), 1.0)])?;
/// assert_eq!(adam.config()["clipnorm"], 1.0);
/// assert!(by_name("adagrad", None).is_err_and(|e| e.to_string().contains("adamw")));
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn by_name(name: &str, learning_rate: Option<f32>) -> Result<Box<dyn Optimizer>> {
    if let Some(lr) = learning_rate
        && !(lr.is_finite() && lr > 0.0)
    {
        return Err(Error::InvalidArgument(format!(
            "learning rate must be a positive number, got {lr}"
        )));
    }
    Ok(match name.to_ascii_lowercase().as_str() {
        "adam" => Box::new(learning_rate.map_or_else(Adam::default, Adam::new)),
        "adamw" => Box::new(learning_rate.map_or_else(AdamW::default, AdamW::new)),
        "sgd" => Box::new(learning_rate.map_or_else(SGD::default, SGD::new)),
        "rmsprop" => Box::new(learning_rate.map_or_else(RMSprop::default, RMSprop::new)),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "unknown optimizer {name:?}: use adam, adamw, sgd or rmsprop"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedules::PiecewiseConstantDecay;
    use ndarray::ArrayD;
    use serde_json::Value;

    fn param(value: f32, grad: f32) -> Param {
        let mut p = Param::new("w", ArrayD::from_elem(vec![1], value));
        p.grad.fill(grad);
        p
    }

    fn all() -> Vec<Box<dyn Optimizer>> {
        vec![
            Box::new(SGD::new(0.5)),
            Box::new(Adam::new(0.5)),
            Box::new(RMSprop::new(0.5)),
            Box::new(AdamW::new(0.5)),
        ]
    }

    #[test]
    fn set_learning_rate_changes_the_rate_and_rejects_bad_values() {
        for mut optimizer in all() {
            assert_eq!(optimizer.learning_rate(), 0.5);
            optimizer.set_learning_rate(0.25).unwrap();
            assert_eq!(optimizer.learning_rate(), 0.25, "{}", optimizer.name());
            for bad in [-1.0, f32::NAN, f32::INFINITY] {
                assert!(optimizer.set_learning_rate(bad).is_err());
            }
            assert_eq!(optimizer.learning_rate(), 0.25);
        }
    }

    /// Plain SGD moves w by lr · g: with the schedule 0.1 for the first
    /// step (step 0) and 0.01 after it, w goes 1 → 0.9 → 0.89.
    #[test]
    fn a_schedule_sets_the_rate_of_each_step() {
        let schedule = PiecewiseConstantDecay::new(vec![0], vec![0.1, 0.01]);
        let mut sgd = SGD::with_schedule(schedule).unwrap();
        let mut w = param(1.0, 1.0);
        assert_eq!(sgd.learning_rate(), 0.1);
        sgd.step(&mut [&mut w]);
        assert!((w.value[[0]] - 0.9).abs() < 1e-7);
        assert_eq!((sgd.iterations(), sgd.learning_rate()), (1, 0.01));
        sgd.step(&mut [&mut w]);
        assert!((w.value[[0]] - 0.89).abs() < 1e-7);
        assert!(
            sgd.set_learning_rate(0.1).is_err(),
            "a schedule's rate is not settable"
        );
    }

    #[test]
    fn an_invalid_schedule_is_an_error() {
        let bad = PiecewiseConstantDecay::new(vec![10], vec![0.1]);
        assert!(Adam::with_schedule(bad.clone()).is_err());
        assert!(RMSprop::default().set_schedule(Box::new(bad)).is_err());
    }

    fn params(values: &[&[f32]], grads: &[&[f32]]) -> Vec<Param> {
        let param = |(v, g): (&&[f32], &&[f32])| {
            let mut p = Param::new(
                "w",
                ArrayD::from_shape_vec(vec![v.len()], v.to_vec()).unwrap(),
            );
            p.grad.as_slice_mut().unwrap().copy_from_slice(g);
            p
        };
        values.iter().zip(grads).map(param).collect()
    }

    fn values(params: &[Param]) -> Vec<Vec<f32>> {
        params
            .iter()
            .map(|p| p.value.iter().copied().collect())
            .collect()
    }

    fn step(optimizer: &mut dyn Optimizer, params: &mut [Param]) {
        optimizer.step(&mut params.iter_mut().collect::<Vec<_>>());
    }

    fn assert_close(got: &[Vec<f32>], want: &[&[f32]]) {
        for (g, w) in got.iter().zip(want) {
            for (g, w) in g.iter().zip(*w) {
                assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
            }
        }
    }

    /// Python, Keras's rule: w -= w·wd·lr, then the Adam step, with
    /// lr 0.1, wd 0.004 and gradients 0.5 then -0.2 from w = 1:
    /// 0.899600632451532, then 0.8646804104403751.
    #[test]
    fn adamw_steps_match_a_hand_computed_run() {
        let mut adamw = AdamW::new(0.1);
        let mut w = [param(1.0, 0.5)];
        step(&mut adamw, &mut w);
        assert_close(&values(&w), &[&[0.899_600_6]]);
        w[0].grad.fill(-0.2);
        step(&mut adamw, &mut w);
        assert_close(&values(&w), &[&[0.864_680_4]]);
        // Without decay it is Adam: the first step moves w by lr.
        let mut w = [param(1.0, 0.5)];
        step(&mut AdamW::new(0.1).weight_decay(0.0).unwrap(), &mut w);
        assert_close(&values(&w), &[&[0.9]]);
    }

    /// Plain SGD with lr 1 moves w by the clipped gradient; weight decay
    /// 0.5 first takes lr·0.5 of w.
    #[test]
    fn clipping_and_decay_change_the_step_as_keras() {
        let grads: [&[f32]; 2] = [&[3.0, 4.0], &[0.3, -0.4]];
        let run = |sgd: SGD| {
            let mut p = params(&[&[0.0, 0.0], &[0.0, 0.0]], &grads);
            step(&mut sgd.clone(), &mut p);
            values(&p)
        };
        let sgd = SGD::new(1.0);
        // Each tensor to norm at most 1: the second (norm 0.5) unchanged.
        let clipped = run(sgd.clone().clipnorm(1.0).unwrap());
        assert_close(&clipped, &[&[-0.6, -0.8], &[-0.3, 0.4]]);
        // All together (norm sqrt(25.25)) to norm 1.
        let scale = 1.0 / 25.25f32.sqrt();
        let global = run(sgd.clone().global_clipnorm(1.0).unwrap());
        assert_close(
            &global,
            &[&[-3.0 * scale, -4.0 * scale], &[-0.3 * scale, 0.4 * scale]],
        );
        let clamped = run(sgd.clone().clipvalue(0.35).unwrap());
        assert_close(&clamped, &[&[-0.35, -0.35], &[-0.3, 0.35]]);
        let mut p = params(&[&[2.0, -4.0]], &[&[0.0, 1.0]]);
        step(&mut SGD::new(1.0).weight_decay(0.5).unwrap(), &mut p);
        assert_close(&values(&p), &[&[1.0, -3.0]]);
        // Unset, nothing changes: the plain step.
        assert_close(&run(sgd), &[&[-3.0, -4.0], &[-0.3, 0.4]]);
    }

    #[test]
    fn bad_extras_are_refused_with_their_bounds() {
        let message = |r: Result<Adam>| r.unwrap_err().to_string();
        for bad in [-0.1, f32::NAN, f32::INFINITY] {
            let text = message(Adam::default().weight_decay(bad));
            assert!(
                text.contains("weight_decay must be a finite number >= 0"),
                "{text}"
            );
        }
        for bad in [0.0, -1.0, f32::NAN] {
            let text = message(Adam::default().clipnorm(bad));
            assert!(
                text.contains("clipnorm must be a finite number > 0"),
                "{text}"
            );
        }
        let text = message(Adam::default().clipnorm(1.0).unwrap().clipvalue(1.0));
        assert!(
            text.contains("only one of clipnorm, global_clipnorm and clipvalue"),
            "{text}"
        );
        let mut adamw = AdamW::default();
        let text = adamw
            .apply_settings(&[("momentum".into(), 0.5)])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("adamw optimizer has no setting") && text.contains("clipnorm"),
            "{text}"
        );
    }

    /// Each optimizer with each extra comes back from its config, and a
    /// Keras config (unset settings written as null) reads.
    #[test]
    fn configs_with_extras_round_trip() {
        let optimizers: Vec<Box<dyn Optimizer>> = vec![
            Box::new(SGD::new(0.1).momentum(0.9).weight_decay(0.01).unwrap()),
            Box::new(Adam::new(0.01).clipnorm(2.0).unwrap()),
            Box::new(RMSprop::new(0.01).global_clipnorm(3.0).unwrap()),
            Box::new(AdamW::new(0.002).beta_1(0.8).clipvalue(0.5).unwrap()),
            Box::new(AdamW::default()),
        ];
        for optimizer in optimizers {
            let copy = from_config(&optimizer.config()).unwrap();
            assert_eq!(copy.name(), optimizer.name());
            assert_eq!(copy.config(), optimizer.config());
        }
        let keras = serde_json::json!({"name": "adamw", "learning_rate": 0.001,
            "weight_decay": 0.004, "clipnorm": null, "global_clipnorm": null,
            "clipvalue": null, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7});
        let Value::Object(keras) = keras else {
            unreachable!()
        };
        assert_eq!(
            from_config(&keras).unwrap().config(),
            AdamW::default().config()
        );
    }
}
