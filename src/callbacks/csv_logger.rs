//! `CSVLogger`: one row of logs per epoch in a CSV file.

use std::path::{Path, PathBuf};

use super::{Callback, Logs, check_writable_folder};
use crate::{Error, Result, Sequential};

/// Writes `epoch` and each epoch's logs, columns in alphabetical order, to
/// a CSV file (Keras 3 `CSVLogger`: same arguments, defaults and columns,
/// epochs from 0, `NA` for a missing value).
///
/// The file is rewritten after every epoch, atomically (a temporary file
/// renamed over it), so it always holds the finished epochs and is never
/// half-written. The folder is checked when training begins.
///
/// ```
/// use convnet::callbacks::CSVLogger;
/// let logger = CSVLogger::new("history.csv").separator(';').append(true);
/// ```
#[derive(Debug)]
pub struct CSVLogger {
    filename: PathBuf,
    separator: char,
    append: bool,
    // State of the current `fit`.
    text: String,
    columns: Option<Vec<String>>,
}

impl CSVLogger {
    /// Logs to `filename`, separated by commas, replacing the file.
    pub fn new(filename: impl AsRef<Path>) -> Self {
        CSVLogger {
            filename: filename.as_ref().to_path_buf(),
            separator: ',',
            append: false,
            text: String::new(),
            columns: None,
        }
    }

    /// The column separator (default `,`).
    pub fn separator(mut self, separator: char) -> Self {
        self.separator = separator;
        self
    }

    /// Whether to add rows to an existing file (default false: replace it).
    pub fn append(mut self, append: bool) -> Self {
        self.append = append;
        self
    }

    fn line(&self, cells: impl IntoIterator<Item = String>) -> String {
        let cells: Vec<String> = cells.into_iter().collect();
        cells.join(&self.separator.to_string()) + "\n"
    }
}

impl Callback for CSVLogger {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        check_writable_folder(&self.filename)?;
        self.columns = None;
        self.text = match std::fs::read_to_string(&self.filename) {
            Ok(text) if self.append => text,
            Err(e) if self.append && e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&self.filename, e));
            }
            _ => String::new(),
        };
        Ok(())
    }

    fn on_epoch_end(&mut self, _model: &mut Sequential, epoch: usize, logs: &Logs) -> Result<()> {
        if self.columns.is_none() {
            let mut names: Vec<String> = logs.iter().map(|(name, _)| name.clone()).collect();
            names.sort();
            // Appending to a file with rows keeps its header (as Keras).
            if self.text.is_empty() {
                let header = std::iter::once("epoch".to_string()).chain(names.iter().cloned());
                self.text = self.line(header);
            }
            self.columns = Some(names);
        }
        let columns = self.columns.as_deref().unwrap_or_default();
        let values = columns.iter().map(|column| {
            let value = logs.iter().find(|(name, _)| name == column);
            value.map_or_else(|| "NA".to_string(), |(_, v)| v.to_string())
        });
        let row = self.line(std::iter::once(epoch.to_string()).chain(values));
        self.text.push_str(&row);
        crate::io::write_atomic(&self.filename, self.text.as_bytes())
    }
}
