//! Callbacks: code that `fit` runs at set points of training, with the
//! hooks and the callbacks of Keras (`keras.callbacks`), and the Keras
//! progress bar.
//!
//! A [`Callback`] gets the model where a Keras callback uses `self.model`:
//! to read or set its weights, set the optimizer's learning rate
//! ([`Sequential::optimizer_mut`]) or end training
//! ([`Sequential::set_stop_training`], Keras `model.stop_training = True`).
//! Hooks return a [`Result`]: an error (a missing monitored value, a file
//! that cannot be written) ends `fit` with it.
//!
//! ```
//! use convnet::callbacks::{CSVLogger, EarlyStopping};
//! use convnet::layers::Dense;
//! use convnet::optimizers::Adam;
//! use convnet::schedules::CosineDecay;
//! use convnet::{Fit, Loss::MeanSquaredError, Sequential};
//! use ndarray::Array2;
//!
//! let train_x = Array2::from_shape_fn((50, 2), |(i, j)| ((3 * i + j) % 7) as f32 / 7.0);
//! let train_y = Array2::from_shape_fn((50, 1), |(i, _)| train_x[[i, 0]] - train_x[[i, 1]]);
//! let mut model = Sequential::with_seed(1);
//! model.add(Dense::new(1).input_shape(&[2]));
//!
//! let optimizer = Adam::with_schedule(CosineDecay { alpha: 0.1, ..CosineDecay::new(1e-3, 10_000) })?;
//! model.compile(MeanSquaredError, optimizer, &[])?;
//! let mut early = EarlyStopping::new().patience(3).restore_best_weights(true);
//! # let folder = tempfile::tempdir().unwrap();
//! # let history_csv = folder.path().join("history.csv");
//! model.fit(&train_x, &train_y, Fit {
//!     epochs: 50,
//!     validation_split: 0.1, // the last 10% of the samples validate
//!     callbacks: vec![Box::new(&mut early), Box::new(CSVLogger::new(&history_csv))],
//!     verbose: 0,
//!     ..Fit::default()
//! })?;
//! println!("stopped after epoch {:?}", early.stopped_epoch());
//! # assert!(std::fs::read_to_string(&history_csv).unwrap().starts_with("epoch,loss,val_loss\n0,"));
//! # Ok::<(), convnet::Error>(())
//! ```
//!
//! To read a callback after `fit` (say [`EarlyStopping::stopped_epoch`]),
//! lend it: `Box::new(&mut early_stopping)` is a callback too.

mod csv_logger;
mod early_stopping;
mod model_checkpoint;
mod progress;
mod reduce_lr;
mod scheduler;
mod terminate_on_nan;

pub use csv_logger::CSVLogger;
pub use early_stopping::EarlyStopping;
pub use model_checkpoint::ModelCheckpoint;
pub use progress::{EpochProgress, format_logs};
pub use reduce_lr::ReduceLROnPlateau;
pub use scheduler::LearningRateScheduler;
pub use terminate_on_nan::TerminateOnNaN;

use ndarray::ArrayD;

use crate::{Error, Result, Sequential};

/// What `fit` reports to callbacks: `(name, value)` pairs such as
/// `("loss", 0.31)`, `("val_accuracy", 0.97)`, in `fit`'s order.
pub type Logs = [(String, f64)];

/// Code run by `fit` at set points (Keras `keras.callbacks.Callback`).
/// Every hook does nothing unless implemented. Epochs and batches count
/// from 0, as in Keras.
pub trait Callback {
    /// Before the first epoch: the place to check arguments and files.
    fn on_train_begin(&mut self, model: &mut Sequential) -> Result<()> {
        let _ = model;
        Ok(())
    }

    /// Before epoch `epoch`.
    fn on_epoch_begin(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        let _ = (model, epoch);
        Ok(())
    }

    /// After batch `batch` of an epoch; `logs` holds the epoch's running
    /// means (`loss` and the metrics).
    fn on_train_batch_end(
        &mut self,
        model: &mut Sequential,
        batch: usize,
        logs: &Logs,
    ) -> Result<()> {
        let _ = (model, batch, logs);
        Ok(())
    }

    /// After epoch `epoch` and its validation; `logs` holds the epoch's
    /// means, and the `val_` ones with validation data.
    fn on_epoch_end(&mut self, model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        let _ = (model, epoch, logs);
        Ok(())
    }

    /// After the last epoch (or a stop); `logs` are the last epoch's.
    fn on_train_end(&mut self, model: &mut Sequential, logs: &Logs) -> Result<()> {
        let _ = (model, logs);
        Ok(())
    }
}

/// A lent callback, so that it can be read after `fit`.
impl<C: Callback + ?Sized> Callback for &mut C {
    fn on_train_begin(&mut self, model: &mut Sequential) -> Result<()> {
        (**self).on_train_begin(model)
    }

    fn on_epoch_begin(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        (**self).on_epoch_begin(model, epoch)
    }

    fn on_train_batch_end(
        &mut self,
        model: &mut Sequential,
        batch: usize,
        logs: &Logs,
    ) -> Result<()> {
        (**self).on_train_batch_end(model, batch, logs)
    }

    fn on_epoch_end(&mut self, model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        (**self).on_epoch_end(model, epoch, logs)
    }

    fn on_train_end(&mut self, model: &mut Sequential, logs: &Logs) -> Result<()> {
        (**self).on_train_end(model, logs)
    }
}

/// Whether a monitored value improves by going down or up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Up for names with `acc` in them (accuracy), down otherwise (losses).
    #[default]
    Auto,
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl Mode {
    /// Whether lower values of `monitor` are better.
    fn lower_is_better(self, monitor: &str) -> bool {
        match self {
            Mode::Min => true,
            Mode::Max => false,
            Mode::Auto => !monitor.contains("acc"),
        }
    }
}

/// A monitored value: its name, which way is better, and by how much a
/// value must beat another to count as an improvement.
#[derive(Clone, Debug)]
struct Watch {
    monitor: String,
    mode: Mode,
    min_delta: f64,
}

impl Watch {
    /// `val_loss`, [`Mode::Auto`].
    fn new(min_delta: f64) -> Self {
        Watch {
            monitor: "val_loss".into(),
            mode: Mode::Auto,
            min_delta,
        }
    }

    fn value(&self, logs: &Logs) -> Result<f64> {
        monitor_value(logs, &self.monitor)
    }

    /// Whether `value` is better than `reference` by more than
    /// `min_delta` (anything improves on nothing).
    fn improves(&self, value: f64, reference: Option<f64>) -> bool {
        let Some(reference) = reference else {
            return true;
        };
        if self.mode.lower_is_better(&self.monitor) {
            value < reference - self.min_delta
        } else {
            value > reference + self.min_delta
        }
    }
}

/// The builder methods `monitor`, `mode` and `verbose` of a callback with
/// fields `watch: Watch` and `verbose: u8`.
macro_rules! watch_options {
    () => {
        /// The value to watch, a name in the logs (default `val_loss`).
        pub fn monitor(mut self, monitor: &str) -> Self {
            self.watch.monitor = monitor.into();
            self
        }

        /// Whether the value should go down or up (default [`Mode::Auto`]).
        pub fn mode(mut self, mode: Mode) -> Self {
            self.watch.mode = mode;
            self
        }

        /// 1 prints a line for each action taken (default 0).
        pub fn verbose(mut self, verbose: u8) -> Self {
            self.verbose = verbose;
            self
        }
    };
}
use watch_options;

/// The value of `monitor` in `logs`; an error naming the values there are.
/// (Keras warns and goes on; a misspelt name would then silently do nothing.)
pub fn monitor_value(logs: &Logs, monitor: &str) -> Result<f64> {
    if let Some((_, value)) = logs.iter().find(|(name, _)| name == monitor) {
        return Ok(*value);
    }
    let available: Vec<&str> = logs.iter().map(|(name, _)| name.as_str()).collect();
    let hint = if monitor.starts_with("val_") {
        " (validation values need validation_data or validation_split)"
    } else {
        ""
    };
    Err(Error::InvalidArgument(format!(
        "the monitored value {monitor:?} is not in the logs; available: {}{hint}",
        available.join(", ")
    )))
}

/// A copy of a model's weights (parameters, then state), to put back later.
#[derive(Clone, Debug)]
struct Weights(Vec<ArrayD<f32>>);

impl Weights {
    fn of(model: &Sequential) -> Self {
        let params = model.params().into_iter().map(|p| p.value.clone());
        let buffers = model.buffers().into_iter().map(|b| b.value.clone());
        Weights(params.chain(buffers).collect())
    }

    fn restore(&self, model: &mut Sequential) {
        let mut saved = self.0.iter();
        for (param, value) in model.params_mut().into_iter().zip(saved.by_ref()) {
            param.value.assign(value);
        }
        for (buffer, value) in model.buffers_mut().into_iter().zip(saved) {
            buffer.value.assign(value);
        }
    }
}

/// An error unless `path`'s folder exists and a file can be created in
/// it: checked when training begins, not after hours of it.
fn check_writable_folder(path: &std::path::Path) -> Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: the folder {} does not exist; create it first",
            path.display(),
            folder.display()
        )));
    }
    // An unnamed file where the system has them: nothing is left behind,
    // even by a kill at this point.
    tempfile::tempfile_in(folder)
        .map(drop)
        .map_err(|e| Error::io(folder, e))
}

/// An error unless `value` is a finite number >= 0.
fn check_non_negative(what: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{what} must be a finite number >= 0, got {value}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_monitored_value_lists_the_available_ones() {
        let logs = [("loss".to_string(), 0.5), ("accuracy".to_string(), 0.9)];
        assert_eq!(monitor_value(&logs, "accuracy").unwrap(), 0.9);
        let message = monitor_value(&logs, "val_loss").unwrap_err().to_string();
        assert!(message.contains("\"val_loss\""), "{message}");
        assert!(message.contains("available: loss, accuracy"), "{message}");
        assert!(message.contains("validation_split"), "{message}");
    }

    #[test]
    fn auto_mode_maximises_accuracies_only() {
        assert!(Mode::Auto.lower_is_better("val_loss"));
        assert!(!Mode::Auto.lower_is_better("val_accuracy"));
        assert!(!Mode::Max.lower_is_better("loss"));
    }
}
