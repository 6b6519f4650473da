//! Saving files without ever leaving a half-written one behind, model
//! weights, one-file models and checkpoints.

mod model_file;
mod weights;

pub use model_file::{
    Checkpoint, FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint, save_model,
};
pub use weights::{load_weights, save_weights};

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: into a temporary file in the same
/// folder, flushed to disk, then renamed over `path`. If anything fails,
/// `path` keeps its old contents (or stays absent) and no temporary file is
/// left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
