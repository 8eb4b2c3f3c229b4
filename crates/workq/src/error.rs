//! The one error type of the binary: every failure maps to a documented exit code (DESIGN §6).

use workq_store::StoreError;

/// Exit codes (defined once, in workq-core).
pub use workq_core::exit as code;

/// A failure of a command, with its exit code.
#[derive(Debug)]
pub struct CliError {
    /// Exit status.
    pub code: u8,
    /// What went wrong, naming the thing involved.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: code::USAGE,
            message: message.into(),
            hint: None,
        }
    }

    /// An error with an explicit code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound(_) => code::NOT_FOUND,
            StoreError::Conflict(_) => code::CONFLICT,
            _ => code::UNAVAILABLE,
        };
        let hint = match &e {
            StoreError::NotADatabase { .. } => Some("move it aside or point --state-dir elsewhere"),
            StoreError::ReadOnly { .. } => {
                Some("fix its permissions or use --state-dir on a writable filesystem")
            }
            _ => None,
        };
        let err = CliError::new(code, e.to_string());
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    }
}

impl From<workq::Error> for CliError {
    fn from(e: workq::Error) -> Self {
        match e {
            workq::Error::Store(s) => s.into(),
            workq::Error::StateDir { .. } => CliError::new(code::UNAVAILABLE, e.to_string()),
            workq::Error::JobNotFound(id) => {
                CliError::new(code::NOT_FOUND, format!("job {id} not found"))
                    .hint("`workq list` shows the jobs that exist")
            }
            workq::Error::Timeout(_) => CliError::new(code::TIMEOUT, e.to_string()),
        }
    }
}

impl From<workq_runtime::RuntimeError> for CliError {
    fn from(e: workq_runtime::RuntimeError) -> Self {
        match e {
            workq_runtime::RuntimeError::Store(s) => s.into(),
            workq_runtime::RuntimeError::Invalid(m) => CliError::usage(m),
            other => CliError::new(code::UNAVAILABLE, other.to_string()),
        }
    }
}

/// Result of a command: the exit code on success.
pub type CmdResult = Result<u8, CliError>;
