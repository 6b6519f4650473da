//! `CSVLogger`: one row of logs per epoch in a CSV file.

use std::path::{Path, PathBuf};

use super::{Callback, Logs, check_writable_folder};
use crate::{Error, History, Result, Sequential};

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
        line(self.separator, cells)
    }
}

/// One CSV row: `cells` joined by `separator`, and a line end.
fn line(separator: char, cells: impl IntoIterator<Item = String>) -> String {
    let cells: Vec<String> = cells.into_iter().collect();
    cells.join(&separator.to_string()) + "\n"
}

/// A CSV cell: the value, or `NA` for a missing one.
fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "NA".to_string(), |v| v.to_string())
}

impl History {
    /// The history as the CSV file that a [`CSVLogger`] writes during
    /// `fit`: a header `epoch,accuracy,loss,...` (columns in alphabetical
    /// order), then one row per epoch that `fit` ran, numbered from 0, `NA`
    /// where a column has no value for it.
    ///
    /// ```
    /// let mut history = convnet::History::default();
    /// history.history.insert("loss".into(), vec![0.5, 0.25]);
    /// history.history.insert("accuracy".into(), vec![0.75, 0.875]);
    /// assert_eq!(history.to_csv(), "epoch,accuracy,loss\n0,0.75,0.5\n1,0.875,0.25\n");
    /// ```
    pub fn to_csv(&self) -> String {
        let header = std::iter::once("epoch".to_string()).chain(self.history.keys().cloned());
        let mut text = line(',', header);
        let epochs = self.history.values().map(Vec::len).max().unwrap_or(0);
        for epoch in 0..epochs {
            let values = self.history.values().map(|v| cell(v.get(epoch).copied()));
            text += &line(',', std::iter::once(epoch.to_string()).chain(values));
        }
        text
    }

    /// Writes [`History::to_csv`] to `path`, atomically: a file that
    /// cannot be written leaves nothing behind.
    pub fn save_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), self.to_csv().as_bytes())
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
            cell(
                logs.iter()
                    .find(|(name, _)| name == column)
                    .map(|(_, v)| *v),
            )
        });
        let row = self.line(std::iter::once(epoch.to_string()).chain(values));
        self.text.push_str(&row);
        crate::io::write_atomic(&self.filename, self.text.as_bytes())
    }
}
