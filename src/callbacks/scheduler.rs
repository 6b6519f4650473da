//! `LearningRateScheduler`: the learning rate of each epoch from a function.

use super::Callback;
use crate::{Result, Sequential};

/// Sets the optimizer's learning rate at the start of each epoch to
/// `schedule(epoch, current_rate)`, epochs counted from 0 (Keras 3
/// `LearningRateScheduler`). A rate that is not a finite number >= 0 is an
/// error, and so is an optimizer that follows a schedule of its own.
///
/// ```
/// use convnet::callbacks::LearningRateScheduler;
/// // Keras's example: keep the rate for 10 epochs, then shrink it by e^-0.1 an epoch.
/// let scheduler = LearningRateScheduler::new(|epoch, lr| if epoch < 10 { lr } else { lr * (-0.1f32).exp() });
/// ```
pub struct LearningRateScheduler<F: FnMut(usize, f32) -> f32> {
    schedule: F,
    verbose: u8,
}

impl<F: FnMut(usize, f32) -> f32> LearningRateScheduler<F> {
    /// Sets the rate from `schedule(epoch, rate)`.
    pub fn new(schedule: F) -> Self {
        LearningRateScheduler {
            schedule,
            verbose: 0,
        }
    }

    /// 1 prints the rate set at each epoch (default 0).
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }
}

impl<F: FnMut(usize, f32) -> f32> Callback for LearningRateScheduler<F> {
    fn on_epoch_begin(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        let optimizer = model.optimizer_mut()?;
        let rate = (self.schedule)(epoch, optimizer.learning_rate());
        optimizer.set_learning_rate(rate)?;
        if self.verbose > 0 {
            println!(
                "Epoch {}: LearningRateScheduler setting learning rate to {rate}.",
                epoch + 1
            );
        }
        Ok(())
    }
}
