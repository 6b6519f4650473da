//! `EarlyStopping`: stop when a monitored value has stopped improving.

use super::{Callback, Logs, Mode, Watch, Weights, check_non_negative, watch_options};
use crate::{Error, Result, Sequential};

/// Stops training when `monitor` has not improved for `patience` epochs
/// (Keras 3 `EarlyStopping`, same arguments and defaults).
///
/// An epoch improves on the best so far if its value is better by more
/// than `min_delta`. With `restore_best_weights`, the model ends training
/// with the weights of its best epoch, whether training stopped early or
/// ran all its epochs.
///
/// ```
/// use convnet::callbacks::EarlyStopping;
/// let early = EarlyStopping::new().monitor("val_loss").patience(3).restore_best_weights(true);
/// ```
#[derive(Debug)]
pub struct EarlyStopping {
    watch: Watch,
    patience: usize,
    verbose: u8,
    baseline: Option<f64>,
    restore_best_weights: bool,
    start_from_epoch: usize,
    // State of the current `fit`.
    wait: usize,
    best: Option<f64>,
    best_epoch: Option<usize>,
    best_weights: Option<Weights>,
    stopped_epoch: Option<usize>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping::new()
    }
}

impl EarlyStopping {
    /// Keras's defaults: monitor `val_loss`, min_delta 0, patience 0,
    /// mode auto, no baseline, restore_best_weights false,
    /// start_from_epoch 0, silent.
    pub fn new() -> Self {
        EarlyStopping {
            watch: Watch::new(0.0),
            patience: 0,
            verbose: 0,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
            wait: 0,
            best: None,
            best_epoch: None,
            best_weights: None,
            stopped_epoch: None,
        }
    }

    watch_options!();

    /// The least change that counts as an improvement (default 0).
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.watch.min_delta = min_delta;
        self
    }

    /// Epochs without improvement before stopping (default 0).
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// A value to reach: training stops after `patience` epochs that do
    /// not reach it, even if they improve (default none).
    pub fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Whether to end with the best epoch's weights (default false).
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    /// Epochs (a warm-up) before watching starts (default 0).
    pub fn start_from_epoch(mut self, epoch: usize) -> Self {
        self.start_from_epoch = epoch;
        self
    }

    /// The epoch (from 0) after which training stopped; `None` if it ran
    /// all its epochs.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }

    /// The epoch (from 0) with the best value, and that value.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best_epoch.zip(self.best)
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        check_non_negative("EarlyStopping min_delta", self.watch.min_delta)?;
        if let Some(baseline) = self.baseline.filter(|b| !b.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "EarlyStopping baseline must be a finite number, got {baseline}"
            )));
        }
        self.wait = 0;
        self.best = None;
        self.best_epoch = None;
        self.best_weights = None;
        self.stopped_epoch = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        let value = self.watch.value(logs)?;
        if epoch < self.start_from_epoch {
            return Ok(());
        }
        if self.restore_best_weights && self.best_weights.is_none() {
            // Keras keeps the first watched epoch's weights in any case.
            self.best_weights = Some(Weights::of(model));
        }
        self.wait += 1;
        if self.watch.improves(value, self.best) {
            self.best = Some(value);
            self.best_epoch = Some(epoch);
            if self.restore_best_weights {
                self.best_weights = Some(Weights::of(model));
            }
            // Only an improvement that also beats the baseline resets the wait.
            if self.baseline.is_none() || self.watch.improves(value, self.baseline) {
                self.wait = 0;
            }
            return Ok(());
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            model.set_stop_training(true);
        }
        Ok(())
    }

    fn on_train_end(&mut self, model: &mut Sequential, _logs: &Logs) -> Result<()> {
        if let (Some(epoch), 1..) = (self.stopped_epoch, self.verbose) {
            println!("Epoch {}: early stopping", epoch + 1);
        }
        if let Some(weights) = self.best_weights.take() {
            if self.verbose > 0
                && let Some(best) = self.best_epoch
            {
                println!(
                    "Restoring model weights from the end of the best epoch: {}.",
                    best + 1
                );
            }
            weights.restore(model);
        }
        Ok(())
    }
}
