//! The one error type of the library and the CLI.
//!
//! Every variant carries a message written for the person at the keyboard: what
//! is wrong and, where it helps, what to do about it. The CLI prints it with
//! `error: ` in front and exits with a non-zero status; nothing panics.

use std::path::PathBuf;

/// Errors returned by convnet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A data file exists but its contents are not what they should be
    /// (wrong magic number, truncated, checksum mismatch, corrupt model file).
    #[error("{0}")]
    Data(String),
    /// Array shapes that do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
    /// An argument or option with a value that cannot be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An image that cannot be decoded or encoded.
    #[error("image error: {0}")]
    Image(String),
    /// Training produced a NaN or infinite loss.
    #[error("{0}")]
    NonFinite(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The setting called `name` (any case) in `names`, or an error naming
/// `what` and every allowed name: the `FromStr` of settings chosen by name
/// (initialisers, fill modes).
pub(crate) fn by_name<T: Copy>(what: &str, name: &str, names: &[(T, &str)]) -> Result<T> {
    let wanted = name.to_ascii_lowercase();
    names
        .iter()
        .find(|(_, n)| *n == wanted)
        .map(|(value, _)| *value)
        .ok_or_else(|| {
            let allowed: Vec<String> = names.iter().map(|(_, n)| format!("{n:?}")).collect();
            Error::InvalidArgument(format!(
                "unknown {what} {name:?}: use one of {}",
                allowed.join(", ")
            ))
        })
}

/// The name of `value` in `names` (the inverse of [`by_name`]).
pub(crate) fn name_of<T: PartialEq>(value: &T, names: &[(T, &'static str)]) -> &'static str {
    names
        .iter()
        .find(|(v, _)| v == value)
        .map_or("?", |(_, n)| n)
}
