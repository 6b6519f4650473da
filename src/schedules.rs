//! Learning-rate schedules, with the names, arguments and defaults of
//! Keras 3 (`keras.optimizers.schedules`), plus PyTorch's one-cycle policy.
//!
//! As in Keras, a schedule is given to the optimizer in place of a fixed
//! rate, and the optimizer asks it for the rate before each of its steps:
//!
//! ```
//! use convnet::optimizers::Adam;
//! use convnet::schedules::{CosineDecay, LearningRateSchedule};
//!
//! // Keras: Adam(learning_rate=CosineDecay(1e-3, decay_steps=1000, alpha=0.1))
//! let schedule = CosineDecay { alpha: 0.1, ..CosineDecay::new(1e-3, 1000) };
//! assert_eq!(schedule.rate(0), 1e-3);
//! let optimizer = Adam::with_schedule(schedule)?;
//! # Ok::<(), convnet::Error>(())
//! ```
//!
//! The arguments are public fields (Keras's keyword arguments): `new` takes
//! the required ones and sets Keras's defaults for the others, which
//! `..Schedule::new(..)` fills in. The optimizer checks them
//! ([`LearningRateSchedule::validate`]) when it gets the schedule.

use std::f64::consts::PI;
use std::fmt::Debug;

use crate::{Error, Result};

/// A learning rate that depends on the number of optimizer steps taken.
pub trait LearningRateSchedule: Debug + Send + Sync {
    /// The learning rate of the optimizer step after `step` steps (the
    /// first step is step 0).
    fn rate(&self, step: u64) -> f32;

    /// An error if the arguments cannot make a schedule (checked when an
    /// optimizer gets it).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// An error unless `value` is finite and at least 0.
fn check_rate(what: &str, value: f32) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} must be a finite number >= 0, got {value}"
        )))
    }
}

fn check_steps(what: &str, steps: u64) -> Result<()> {
    if steps == 0 {
        return Err(invalid(format!("{what} must be at least 1")));
    }
    Ok(())
}

/// Keras 3 `CosineDecay`: an optional linear warmup from
/// `initial_learning_rate` to `warmup_target` over `warmup_steps`, then a
/// cosine decay over `decay_steps` from the warmup's end rate down to
/// `alpha` times it, which then stays.
///
/// Without warmup: `rate(s) = lr0 · ((1 - alpha) · ½(1 + cos(π · min(s, d) / d)) + alpha)`.
///
/// ```
/// use convnet::schedules::{CosineDecay, LearningRateSchedule};
/// let schedule = CosineDecay::new(0.1, 100);
/// assert!((schedule.rate(50) - 0.05).abs() < 1e-7);
/// assert_eq!(schedule.rate(100), 0.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CosineDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f32,
    /// Steps of the cosine decay (after the warmup).
    pub decay_steps: u64,
    /// The final rate, as a fraction of the decay's start (default 0).
    pub alpha: f32,
    /// The rate the warmup reaches (default `None`: no warmup).
    pub warmup_target: Option<f32>,
    /// Steps of the warmup (default 0).
    pub warmup_steps: u64,
}

impl CosineDecay {
    /// A cosine decay from `initial_learning_rate` over `decay_steps`,
    /// with Keras's defaults: alpha 0, no warmup.
    pub fn new(initial_learning_rate: f32, decay_steps: u64) -> Self {
        CosineDecay {
            initial_learning_rate,
            decay_steps,
            alpha: 0.0,
            warmup_target: None,
            warmup_steps: 0,
        }
    }

    /// Keras's `_decay_function`: `from` decayed `step` steps into the decay.
    fn decay(&self, step: u64, from: f32) -> f64 {
        let fraction = step as f64 / self.decay_steps as f64;
        let cosine = 0.5 * (1.0 + (PI * fraction).cos());
        let alpha = self.alpha as f64;
        from as f64 * ((1.0 - alpha) * cosine + alpha)
    }
}

impl LearningRateSchedule for CosineDecay {
    fn rate(&self, step: u64) -> f32 {
        let Some(target) = self.warmup_target else {
            return self.decay(step.min(self.decay_steps), self.initial_learning_rate) as f32;
        };
        let step = step.min(self.decay_steps + self.warmup_steps);
        if step < self.warmup_steps {
            let fraction = step as f64 / self.warmup_steps as f64;
            let start = self.initial_learning_rate as f64;
            return (start + (target as f64 - start) * fraction) as f32;
        }
        self.decay(step - self.warmup_steps, target) as f32
    }

    fn validate(&self) -> Result<()> {
        check_rate(
            "CosineDecay initial_learning_rate",
            self.initial_learning_rate,
        )?;
        check_steps("CosineDecay decay_steps", self.decay_steps)?;
        check_rate("CosineDecay alpha", self.alpha)?;
        if let Some(target) = self.warmup_target {
            check_rate("CosineDecay warmup_target", target)?;
        }
        Ok(())
    }
}

/// Keras 3 `ExponentialDecay`:
/// `rate(s) = initial_learning_rate · decay_rate^(s / decay_steps)`, the
/// exponent rounded down with `staircase` (the rate then changes every
/// `decay_steps` steps).
///
/// ```
/// use convnet::schedules::{ExponentialDecay, LearningRateSchedule};
/// let halving = ExponentialDecay { staircase: true, ..ExponentialDecay::new(0.1, 10, 0.5) };
/// assert_eq!(halving.rate(9), 0.1);
/// assert_eq!(halving.rate(10), 0.05);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f32,
    /// Steps over which the rate is multiplied by `decay_rate` once.
    pub decay_steps: u64,
    /// The factor per `decay_steps` steps.
    pub decay_rate: f32,
    /// Whether the rate changes in steps rather than smoothly (default false).
    pub staircase: bool,
}

impl ExponentialDecay {
    /// `initial_learning_rate · decay_rate^(step / decay_steps)`, smooth
    /// (Keras's default `staircase=False`).
    pub fn new(initial_learning_rate: f32, decay_steps: u64, decay_rate: f32) -> Self {
        ExponentialDecay {
            initial_learning_rate,
            decay_steps,
            decay_rate,
            staircase: false,
        }
    }
}

impl LearningRateSchedule for ExponentialDecay {
    fn rate(&self, step: u64) -> f32 {
        let mut exponent = step as f64 / self.decay_steps as f64;
        if self.staircase {
            exponent = exponent.floor();
        }
        (self.initial_learning_rate as f64 * (self.decay_rate as f64).powf(exponent)) as f32
    }

    fn validate(&self) -> Result<()> {
        check_rate(
            "ExponentialDecay initial_learning_rate",
            self.initial_learning_rate,
        )?;
        check_steps("ExponentialDecay decay_steps", self.decay_steps)?;
        check_rate("ExponentialDecay decay_rate", self.decay_rate)
    }
}

/// Keras 3 `PiecewiseConstantDecay`: `values[0]` up to and including step
/// `boundaries[0]`, `values[1]` after it up to `boundaries[1]`, ..., and
/// the last value after the last boundary.
///
/// ```
/// use convnet::schedules::{LearningRateSchedule, PiecewiseConstantDecay};
/// let schedule = PiecewiseConstantDecay::new(vec![100, 200], vec![1.0, 0.5, 0.1]);
/// assert_eq!([schedule.rate(100), schedule.rate(101), schedule.rate(500)], [1.0, 0.5, 0.1]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseConstantDecay {
    /// Increasing steps at which the rate changes.
    pub boundaries: Vec<u64>,
    /// One rate more than there are boundaries.
    pub values: Vec<f32>,
}

impl PiecewiseConstantDecay {
    /// The schedule; `values.len()` must be `boundaries.len() + 1`
    /// (checked when an optimizer gets it).
    pub fn new(boundaries: Vec<u64>, values: Vec<f32>) -> Self {
        PiecewiseConstantDecay { boundaries, values }
    }
}

impl LearningRateSchedule for PiecewiseConstantDecay {
    fn rate(&self, step: u64) -> f32 {
        let piece = self.boundaries.iter().filter(|&&b| step > b).count();
        // `validate` makes every piece have a value; the last one otherwise.
        self.values
            .get(piece)
            .or(self.values.last())
            .copied()
            .unwrap_or(0.0)
    }

    fn validate(&self) -> Result<()> {
        if self.values.len() != self.boundaries.len() + 1 {
            return Err(invalid(format!(
                "PiecewiseConstantDecay needs one value more than boundaries, got {} \
                 boundaries and {} values",
                self.boundaries.len(),
                self.values.len()
            )));
        }
        if self.boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(format!(
                "PiecewiseConstantDecay boundaries must increase, got {:?}",
                self.boundaries
            )));
        }
        for &value in &self.values {
            check_rate("a PiecewiseConstantDecay value", value)?;
        }
        Ok(())
    }
}

/// The one-cycle policy (PyTorch `OneCycleLR` with cosine annealing, two
/// phases): from `max_lr / div_factor` up to `max_lr` over the first
/// `pct_start` of `total_steps`, then down to
/// `max_lr / div_factor / final_div_factor` at step `total_steps - 1`,
/// both halves of a cosine; later steps keep the final rate (PyTorch
/// raises an error there instead).
///
/// ```
/// use convnet::schedules::{LearningRateSchedule, OneCycle};
/// let schedule = OneCycle::new(0.1, 100);
/// assert!((schedule.rate(0) - 0.004).abs() < 1e-7);
/// assert!((schedule.rate(29) - 0.1).abs() < 1e-7);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OneCycle {
    /// The highest rate, reached at the end of the first phase.
    pub max_lr: f32,
    /// Steps in the cycle.
    pub total_steps: u64,
    /// The fraction of the steps spent raising the rate (default 0.3).
    pub pct_start: f32,
    /// The starting rate is `max_lr / div_factor` (default 25).
    pub div_factor: f32,
    /// The final rate is the starting rate / `final_div_factor` (default 1e4).
    pub final_div_factor: f32,
}

impl OneCycle {
    /// A cycle of `total_steps` up to `max_lr`, with PyTorch's defaults.
    pub fn new(max_lr: f32, total_steps: u64) -> Self {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }
}

/// PyTorch's `_annealing_cos`: from `start` at `pct` 0 to `end` at 1.
fn annealing_cos(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
}

impl LearningRateSchedule for OneCycle {
    fn rate(&self, step: u64) -> f32 {
        let initial = self.max_lr as f64 / self.div_factor as f64;
        let min = initial / self.final_div_factor as f64;
        let last = self.total_steps.saturating_sub(1) as f64;
        let step = (step as f64).min(last);
        // PyTorch's phase ends: float(pct_start * total_steps) - 1, then total_steps - 1.
        let peak = self.pct_start as f64 * self.total_steps as f64 - 1.0;
        let rate = if step <= peak {
            annealing_cos(initial, self.max_lr as f64, step / peak)
        } else {
            annealing_cos(self.max_lr as f64, min, (step - peak) / (last - peak))
        };
        rate as f32
    }

    fn validate(&self) -> Result<()> {
        check_rate("OneCycle max_lr", self.max_lr)?;
        let peak = self.pct_start as f64 * self.total_steps as f64 - 1.0;
        // Both phases need a length, or the annealing divides by zero.
        if !(peak > 0.0 && peak < self.total_steps as f64 - 1.0) {
            return Err(invalid(format!(
                "OneCycle needs pct_start · total_steps - 1 between 0 and total_steps - 1 \
                 (each phase at least a step), got pct_start {} and total_steps {}",
                self.pct_start, self.total_steps
            )));
        }
        for (what, factor) in [
            ("div_factor", self.div_factor),
            ("final_div_factor", self.final_div_factor),
        ] {
            if !(factor.is_finite() && factor > 0.0) {
                return Err(invalid(format!(
                    "OneCycle {what} must be a positive number, got {factor}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3)
    }

    /// Keras's formula by hand: at a third of the decay the cosine factor
    /// is ½(1 + cos(π/3)) = 0.75, and with alpha 0.2 the rate is
    /// 0.1 · (0.8 · 0.75 + 0.2) = 0.08.
    #[test]
    fn cosine_decay_follows_keras() {
        let schedule = CosineDecay {
            alpha: 0.2,
            ..CosineDecay::new(0.1, 300)
        };
        assert!(close(schedule.rate(0), 0.1));
        assert!(close(schedule.rate(100), 0.08));
        assert!(close(schedule.rate(300), 0.02));
        assert!(close(schedule.rate(1000), 0.02), "stays at alpha · lr0");
    }

    /// Warmup from 0 to 1 over 10 steps is linear (step 4: 0.4); the decay
    /// then starts from the target: 10 + 50 steps is half of 100 decay
    /// steps, ½(1 + cos(π/2)) = 0.5.
    #[test]
    fn cosine_decay_warms_up_then_decays_from_the_target() {
        let schedule = CosineDecay {
            warmup_target: Some(1.0),
            warmup_steps: 10,
            ..CosineDecay::new(0.0, 100)
        };
        assert!(close(schedule.rate(4), 0.4));
        assert!(close(schedule.rate(10), 1.0));
        assert!(close(schedule.rate(60), 0.5));
        assert_eq!(schedule.rate(110), 0.0);
        assert_eq!(schedule.rate(5000), 0.0);
    }

    /// 0.1 · 0.5^(15/10) = 0.1 / 2^1.5 = 0.0353553...; staircase: 0.1 · 0.5^1.
    #[test]
    fn exponential_decay_smooth_and_staircase() {
        let smooth = ExponentialDecay::new(0.1, 10, 0.5);
        assert!(close(smooth.rate(15), 0.1 / 2f64.powf(1.5)));
        let stairs = ExponentialDecay {
            staircase: true,
            ..smooth
        };
        assert!(close(stairs.rate(15), 0.05));
        assert!(close(stairs.rate(20), 0.025));
    }

    #[test]
    fn piecewise_constant_changes_after_each_boundary() {
        let schedule = PiecewiseConstantDecay::new(vec![2, 5], vec![0.3, 0.2, 0.1]);
        schedule.validate().unwrap();
        let rates: Vec<f32> = (0..8).map(|s| schedule.rate(s)).collect();
        assert_eq!(rates, [0.3, 0.3, 0.3, 0.2, 0.2, 0.2, 0.1, 0.1]);
    }

    #[test]
    fn piecewise_constant_needs_one_value_more_than_boundaries() {
        let error = PiecewiseConstantDecay::new(vec![2, 5], vec![0.3, 0.2])
            .validate()
            .unwrap_err();
        assert!(
            error.to_string().contains("2 boundaries and 2 values"),
            "{error}"
        );
        let unsorted = PiecewiseConstantDecay::new(vec![5, 2], vec![0.3, 0.2, 0.1]);
        assert!(unsorted.validate().is_err());
    }

    /// PyTorch's OneCycleLR with max_lr 1, 100 steps: start 1/25 = 0.04,
    /// peak at step 0.3 · 100 - 1 = 29, end 0.04 / 1e4 = 4e-6 at step 99.
    /// Step 10 is at pct 10/29 of the way up: 1 + (0.04 - 1)/2 ·
    /// (cos(π·10/29) + 1); step 64 halfway down: pct 35/70 = 0.5, so
    /// 4e-6 + (1 - 4e-6)/2 = 0.500002.
    #[test]
    fn one_cycle_follows_pytorch() {
        let schedule = OneCycle::new(1.0, 100);
        schedule.validate().unwrap();
        assert!(close(schedule.rate(0), 0.04));
        let up = 1.0 + (0.04 - 1.0) / 2.0 * ((PI * 10.0 / 29.0).cos() + 1.0);
        assert!(close(schedule.rate(10), up));
        assert!(close(schedule.rate(29), 1.0));
        assert!(close(schedule.rate(64), 0.500002));
        assert!(close(schedule.rate(99), 4e-6));
        assert!(close(schedule.rate(1000), 4e-6), "keeps the final rate");
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(CosineDecay::new(0.1, 0).validate().is_err());
        assert!(CosineDecay::new(f32::NAN, 10).validate().is_err());
        assert!(ExponentialDecay::new(0.1, 10, -0.5).validate().is_err());
        assert!(OneCycle::new(0.1, 2).validate().is_err());
        let no_warmup = OneCycle {
            pct_start: 0.0,
            ..OneCycle::new(0.1, 100)
        };
        assert!(no_warmup.validate().is_err());
    }
}
