//! Runtime errors.

use std::path::PathBuf;

/// What can stop a worker from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] workq_store::StoreError),
    /// A file or directory could not be used.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The options make no sense.
    #[error("{0}")]
    Invalid(String),
}
