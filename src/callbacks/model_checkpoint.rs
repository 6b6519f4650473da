//! `ModelCheckpoint`: save the model after every epoch, or the best one.

use std::path::{Path, PathBuf};

use super::{Callback, Logs, Mode, Watch, check_writable_folder, watch_options};
use crate::{Result, Sequential};

/// Saves the model at the end of every epoch, or, with `save_best_only`,
/// of every epoch whose `monitor` value is the best so far (Keras 3
/// `ModelCheckpoint`: same arguments and defaults). `{epoch}` in the path
/// becomes the epoch's number from 1, as Keras's `{epoch}`. Files are
/// written atomically; the folder is checked when training begins.
///
/// ```
/// use convnet::callbacks::ModelCheckpoint;
/// let best = ModelCheckpoint::new("best.safetensors").save_best_only(true);
/// let every = ModelCheckpoint::new("checkpoints/epoch-{epoch}.safetensors");
/// ```
#[derive(Debug)]
pub struct ModelCheckpoint {
    filepath: PathBuf,
    watch: Watch,
    verbose: u8,
    save_best_only: bool,
    save_weights_only: bool,
    best: Option<f64>,
}

impl ModelCheckpoint {
    /// Saves to `filepath` after every epoch; monitor `val_loss`.
    pub fn new(filepath: impl AsRef<Path>) -> Self {
        ModelCheckpoint {
            filepath: filepath.as_ref().to_path_buf(),
            watch: Watch::new(0.0),
            verbose: 0,
            save_best_only: false,
            save_weights_only: false,
            best: None,
        }
    }

    watch_options!();

    /// Whether to save only when `monitor` is the best so far (default false).
    pub fn save_best_only(mut self, best_only: bool) -> Self {
        self.save_best_only = best_only;
        self
    }

    /// Whether to save the weights only, not the whole model (default
    /// false). Both save the weights for now (see `save`).
    pub fn save_weights_only(mut self, weights_only: bool) -> Self {
        self.save_weights_only = weights_only;
        self
    }

    fn path(&self, epoch: usize) -> PathBuf {
        let path = self.filepath.to_string_lossy();
        PathBuf::from(path.replace("{epoch}", &(epoch + 1).to_string()))
    }

    fn save(&self, model: &mut Sequential, path: &Path) -> Result<()> {
        if self.verbose > 0 {
            println!("Saving model to {}", path.display());
        }
        // With save_weights_only false this is to save the whole model, with
        // `Sequential::save` (in progress on another branch): switch to it
        // then. Until that exists both save the weights.
        model.save_weights(path)
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        check_writable_folder(&self.path(0))?;
        self.best = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        if self.save_best_only {
            let value = self.watch.value(logs)?;
            if !self.watch.improves(value, self.best) {
                return Ok(());
            }
            self.best = Some(value);
        }
        self.save(model, &self.path(epoch))
    }
}
