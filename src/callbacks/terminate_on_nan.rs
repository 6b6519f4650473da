//! `TerminateOnNaN`: stop when the loss is not a number.

use super::{Callback, Logs, monitor_value};
use crate::{Result, Sequential};

/// Stops training after a batch whose running loss is NaN or infinite
/// (Keras 3 `TerminateOnNaN`).
///
/// `fit` itself already ends with [`crate::Error::NonFinite`] on the first
/// batch whose loss is not finite, before that batch can change the
/// weights; this callback is for losses that reach the logs some other way
/// (a custom training loop driving the hooks).
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminateOnNaN;

impl TerminateOnNaN {
    /// The callback.
    pub fn new() -> Self {
        TerminateOnNaN
    }
}

impl Callback for TerminateOnNaN {
    fn on_train_batch_end(
        &mut self,
        model: &mut Sequential,
        batch: usize,
        logs: &Logs,
    ) -> Result<()> {
        let loss = monitor_value(logs, "loss")?;
        if !loss.is_finite() {
            println!("Batch {batch}: Invalid loss, terminating training");
            model.set_stop_training(true);
        }
        Ok(())
    }
}
