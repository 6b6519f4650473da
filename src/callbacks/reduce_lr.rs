//! `ReduceLROnPlateau`: lower the learning rate when progress stalls.

use super::{Callback, Logs, Mode, Watch, check_non_negative, watch_options};
use crate::{Error, Result, Sequential};

/// Multiplies the learning rate by `factor` when `monitor` has not
/// improved by more than `min_delta` for `patience` epochs, then waits
/// `cooldown` epochs before watching again, never going below `min_lr`
/// (Keras 3 `ReduceLROnPlateau`, same arguments and defaults).
///
/// ```
/// use convnet::callbacks::ReduceLROnPlateau;
/// let reduce = ReduceLROnPlateau::new().factor(0.5).patience(2).min_lr(1e-5);
/// ```
#[derive(Debug)]
pub struct ReduceLROnPlateau {
    watch: Watch,
    factor: f32,
    patience: usize,
    verbose: u8,
    cooldown: usize,
    min_lr: f32,
    // State of the current `fit`.
    wait: usize,
    cooldown_counter: usize,
    best: Option<f64>,
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        ReduceLROnPlateau::new()
    }
}

impl ReduceLROnPlateau {
    /// Keras's defaults: monitor `val_loss`, factor 0.1, patience 10,
    /// mode auto, min_delta 1e-4, cooldown 0, min_lr 0, silent.
    pub fn new() -> Self {
        ReduceLROnPlateau {
            watch: Watch::new(1e-4),
            factor: 0.1,
            patience: 10,
            verbose: 0,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_counter: 0,
            best: None,
        }
    }

    watch_options!();

    /// What the rate is multiplied by, in `[0, 1)` (default 0.1).
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }

    /// Epochs without improvement before lowering the rate (default 10).
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// The least change that counts as an improvement (default 1e-4).
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.watch.min_delta = min_delta;
        self
    }

    /// Epochs after a reduction before watching again (default 0).
    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The lowest rate it sets (default 0).
    pub fn min_lr(mut self, min_lr: f32) -> Self {
        self.min_lr = min_lr;
        self
    }

    /// The rate times `factor`, at least `min_lr`, if the rate is above it.
    fn reduce(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        let optimizer = model.optimizer_mut()?;
        let old = optimizer.learning_rate();
        if old <= self.min_lr {
            return Ok(());
        }
        let new = (old * self.factor).max(self.min_lr);
        optimizer.set_learning_rate(new)?;
        if self.verbose > 0 {
            println!(
                "Epoch {}: ReduceLROnPlateau reducing learning rate to {new}.",
                epoch + 1
            );
        }
        self.cooldown_counter = self.cooldown;
        self.wait = 0;
        Ok(())
    }
}

impl Callback for ReduceLROnPlateau {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        if !(0.0..1.0).contains(&self.factor) {
            return Err(Error::InvalidArgument(format!(
                "ReduceLROnPlateau factor must be in [0, 1), got {}",
                self.factor
            )));
        }
        check_non_negative("ReduceLROnPlateau min_delta", self.watch.min_delta)?;
        check_non_negative("ReduceLROnPlateau min_lr", self.min_lr as f64)?;
        self.wait = 0;
        self.cooldown_counter = 0;
        self.best = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        let value = self.watch.value(logs)?;
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.watch.improves(value, self.best) {
            self.best = Some(value);
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                self.reduce(model, epoch)?;
            }
        }
        Ok(())
    }
}
