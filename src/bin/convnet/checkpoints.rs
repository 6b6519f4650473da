//! `convnet train --checkpoint-dir DIR` and `--resume DIR`: a checkpoint
//! after every epoch (`last.safetensors`, and `best.safetensors` for the
//! lowest validation loss so far), written by a callback, and a run
//! resumed from the last one exactly as if it had never stopped.

use std::path::{Path, PathBuf};

use std::time::Instant;

use convnet::callbacks::{Callback, Logs};
use convnet::io::{Checkpoint, load_checkpoint, save_checkpoint};
use convnet::{Error, History, Result, Sequential};

/// The checkpoint a run resumes from, in `dir`.
pub fn last(dir: &Path) -> PathBuf {
    dir.join("last.safetensors")
}

fn best(dir: &Path) -> PathBuf {
    dir.join("best.safetensors")
}

/// The model and progress of the checkpoint in `dir`, which must hold a
/// run of `expected` (the model `--model` names, with the checkpoint's seed).
pub fn resume(
    dir: &Path,
    expected: impl Fn(u64) -> Result<Sequential>,
) -> Result<(Sequential, Checkpoint)> {
    let path = last(dir);
    if !path.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: no checkpoint to resume from (expected {}; write one with --checkpoint-dir)",
            dir.display(),
            path.display()
        )));
    }
    let (model, checkpoint) = load_checkpoint(&path)?;
    let other = |why: String| {
        Error::InvalidArgument(format!(
            "{}: the checkpoint holds another model than --model names{why}; resume with the \
             same --model",
            path.display()
        ))
    };
    let expected = expected(model.seed()).map_err(|e| other(format!(" ({e})")))?;
    if expected.to_json()? != model.to_json()? {
        return Err(other(String::new()));
    }
    Ok((model, checkpoint))
}

/// Makes `dir` (and its parents) before the run, so that a bad path fails
/// before any training.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is a file, not a folder for checkpoints",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// The callback that writes a checkpoint after every epoch into a folder,
/// carrying on the history of the epochs before a resume.
pub struct Writer {
    dir: PathBuf,
    done: Checkpoint,
    started: Option<Instant>,
}

impl Writer {
    /// Writes into `dir`, after the epochs of `done`.
    pub fn new(dir: &Path, done: Checkpoint) -> Self {
        Writer {
            dir: dir.to_path_buf(),
            done,
            started: None,
        }
    }
}

impl Callback for Writer {
    fn on_epoch_begin(&mut self, _: &mut Sequential, _: usize) -> Result<()> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        let history = &mut self.done.history;
        for (name, value) in logs {
            history
                .history
                .entry(name.clone())
                .or_default()
                .push(*value);
        }
        let seconds = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        history.epoch_seconds.push(seconds);
        self.done.epoch = epoch + 1;
        save_checkpoint(model, &self.done, &last(&self.dir))?;
        if is_best(&self.done.history) {
            save_checkpoint(model, &self.done, &best(&self.dir))?;
        }
        Ok(())
    }
}

/// The history of a resumed run: the epochs before it, then `more`.
pub fn joined(mut history: History, more: &History) -> History {
    append(&mut history, more);
    history
}

/// Adds the epochs of `more` to `history`.
fn append(history: &mut History, more: &History) {
    for (name, values) in &more.history {
        history
            .history
            .entry(name.clone())
            .or_default()
            .extend(values);
    }
    history.epoch_seconds.extend(&more.epoch_seconds);
    history.loading_seconds.extend(&more.loading_seconds);
    history.waiting_seconds.extend(&more.waiting_seconds);
    history.replicas = more.replicas;
}

/// Whether the last epoch has the lowest validation loss so far (the
/// training loss without validation data).
fn is_best(history: &History) -> bool {
    let losses = history
        .history
        .get("val_loss")
        .or_else(|| history.history.get("loss"));
    let Some((last, before)) = losses.and_then(|l| l.split_last()) else {
        return false;
    };
    before.iter().all(|earlier| last < earlier)
}
