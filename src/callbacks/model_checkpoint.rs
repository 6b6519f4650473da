//! `ModelCheckpoint`: save the model after every epoch, or the best one.

use std::path::{Path, PathBuf};

use super::{Callback, Logs, Mode, Watch, check_writable_folder, monitor_value, watch_options};
use crate::{Error, Result, Sequential};

/// Saves the model at the end of every epoch, or, with `save_best_only`,
/// of every epoch whose `monitor` value is the best so far (Keras 3
/// `ModelCheckpoint`: same arguments and defaults). As in Keras, the path
/// may name the epoch (from 1) and logged values, with Python's format
/// specs: `{epoch}`, `{epoch:02d}`, `{val_loss}`, `{val_loss:.2f}`. Files
/// are written atomically; the folder, and the placeholders' syntax, are
/// checked when training begins.
///
/// ```
/// use convnet::callbacks::ModelCheckpoint;
/// let best = ModelCheckpoint::new("best.safetensors").save_best_only(true);
/// let every = ModelCheckpoint::new("checkpoints/epoch-{epoch:02d}-{val_loss:.3f}.safetensors");
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

    /// The file for `epoch`, its placeholders filled in.
    fn path(&self, epoch: usize, logs: &Logs) -> Result<PathBuf> {
        let pattern = self.filepath.to_string_lossy();
        let mut path = String::new();
        for piece in pieces(&pattern)? {
            match piece {
                Piece::Text(text) => path.push_str(text),
                Piece::Epoch { width } => path.push_str(&format!("{:0width$}", epoch + 1)),
                Piece::Value { name, decimals } => {
                    let value = monitor_value(logs, name)?;
                    match decimals {
                        Some(decimals) => path.push_str(&format!("{value:.decimals$}")),
                        None => path.push_str(&value.to_string()),
                    }
                }
            }
        }
        Ok(PathBuf::from(path))
    }

    fn save(&self, model: &mut Sequential, path: &Path) -> Result<()> {
        if self.verbose > 0 {
            println!("Saving model to {}", path.display());
        }
        if self.save_weights_only {
            model.save_weights(path)
        } else {
            model.save(path)
        }
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        let pattern = self.filepath.to_string_lossy();
        pieces(&pattern)?;
        // A folder named after the epoch or a value cannot be checked yet.
        let folder = self.filepath.parent().map(Path::to_string_lossy);
        if !folder.is_some_and(|folder| folder.contains('{')) {
            check_writable_folder(&self.filepath)?;
        }
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
        let path = self.path(epoch, logs)?;
        self.save(model, &path)
    }
}

/// A part of a checkpoint path.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// `{epoch}`, or `{epoch:0Nd}`: zero-padded to `width` digits.
    Epoch {
        width: usize,
    },
    /// `{name}`, or `{name:.Nf}`: with `decimals` digits after the point.
    Value {
        name: &'a str,
        decimals: Option<usize>,
    },
}

/// `pattern` split into text and placeholders; an error for a
/// placeholder that is not closed or has a format it cannot take.
fn pieces(pattern: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        pieces.push(Piece::Text(&rest[..open]));
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| bad_placeholder(pattern, &rest[open..]))?;
        let placeholder = &rest[open + 1..open + close];
        pieces.push(piece(placeholder).ok_or_else(|| bad_placeholder(pattern, placeholder))?);
        rest = &rest[open + close + 1..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// One placeholder (without its braces), if its format is one of those
/// `pieces` takes.
fn piece(placeholder: &str) -> Option<Piece<'_>> {
    let (name, spec) = placeholder.split_once(':').unwrap_or((placeholder, ""));
    if name.is_empty() {
        return None;
    }
    if name == "epoch" {
        let width = match spec {
            "" | "d" => 0,
            _ => spec.strip_prefix('0')?.strip_suffix('d')?.parse().ok()?,
        };
        return Some(Piece::Epoch { width });
    }
    let decimals = match spec {
        "" => None,
        _ => Some(spec.strip_prefix('.')?.strip_suffix('f')?.parse().ok()?),
    };
    Some(Piece::Value { name, decimals })
}

fn bad_placeholder(pattern: &str, placeholder: &str) -> Error {
    Error::InvalidArgument(format!(
        "ModelCheckpoint filepath {pattern:?}: cannot fill in {placeholder:?}; use {{epoch}}, \
         {{epoch:02d}}, {{val_loss}} or {{val_loss:.2f}} (any logged value)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_in_the_epoch_and_values_as_python_formats_them() {
        let logs = [("val_loss".to_string(), 0.123456)];
        let checkpoint = ModelCheckpoint::new("w-{epoch:03d}-{val_loss:.2f}-{epoch}.st");
        let path = checkpoint.path(6, &logs).unwrap();
        assert_eq!(path, PathBuf::from("w-007-0.12-7.st"));
        let plain = ModelCheckpoint::new("{val_loss}");
        assert_eq!(plain.path(0, &logs).unwrap(), PathBuf::from("0.123456"));
        let missing = ModelCheckpoint::new("{loss}").path(0, &logs).unwrap_err();
        assert!(
            missing.to_string().contains("available: val_loss"),
            "{missing}"
        );
    }

    #[test]
    fn bad_placeholders_are_errors() {
        for pattern in ["a{epoch", "{}", "{epoch:x}", "{loss:2e}", "{epoch:02}"] {
            let error = pieces(pattern).unwrap_err().to_string();
            assert!(error.contains("cannot fill in"), "{pattern}: {error}");
        }
        assert_eq!(pieces("plain").unwrap(), [Piece::Text("plain")]);
    }
}
