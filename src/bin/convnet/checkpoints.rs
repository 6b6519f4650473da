//! `convnet train --checkpoint-dir DIR` and `--resume DIR`: a checkpoint
//! after every epoch (`last.safetensors`, and `best.safetensors` for the
//! lowest validation loss so far), and a run resumed from the last one
//! exactly as if it had never stopped.

use std::path::{Path, PathBuf};

use convnet::data::Samples;
use convnet::io::{Checkpoint, load_checkpoint, save_checkpoint};
use convnet::{Error, Fit, History, Result, Sequential};

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
    if expected(model.seed())?.to_json()? != model.to_json()? {
        return Err(Error::InvalidArgument(format!(
            "{}: the checkpoint holds another model than --model names; resume with the \
             same --model",
            path.display()
        )));
    }
    Ok((model, checkpoint))
}

/// Makes `dir` (and its parents) before the run, so that a bad path fails
/// before any training.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Trains from `done.epoch` to `epochs`, one `fit` per epoch (with the
/// options `options(epoch)` gives for that epoch alone), writing a
/// checkpoint after each into `dir`; returns the history of every epoch,
/// those before the resume included.
pub fn fit_with_checkpoints<'a>(
    model: &mut Sequential,
    (x, y): (&dyn Samples, &dyn Samples),
    options: impl Fn(usize) -> Fit<'a>,
    (epochs, mut done): (usize, Checkpoint),
    dir: &Path,
) -> Result<History> {
    for epoch in done.epoch..epochs {
        let history = model.fit(x, y, options(epoch))?;
        append(&mut done.history, &history);
        done.epoch = epoch + 1;
        save_checkpoint(model, &done, &last(dir))?;
        if is_best(&done.history) {
            save_checkpoint(model, &done, &best(dir))?;
        }
    }
    Ok(done.history)
}

/// Adds the epochs of `more` to `history`.
pub fn append(history: &mut History, more: &History) {
    for (name, values) in &more.history {
        history
            .history
            .entry(name.clone())
            .or_default()
            .extend(values);
    }
    history.epoch_seconds.extend(&more.epoch_seconds);
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
