//! The one error type of the binary: every failure maps to a documented exit code (DESIGN §6).

use workq_store::StoreError;

/// Exit codes.
pub mod code {
    /// A job (or one of several) failed or was cancelled.
    pub const JOB_FAILED: u8 = 1;
    /// Bad usage.
    pub const USAGE: u8 = 2;
    /// Job or file not found.
    pub const NOT_FOUND: u8 = 3;
    /// Already running, duplicate key.
    pub const CONFLICT: u8 = 4;
    /// Store unavailable or locked past its timeout.
    pub const UNAVAILABLE: u8 = 5;
    /// `wait` timed out.
    pub const TIMEOUT: u8 = 124;
    /// Interrupted by Ctrl-C or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
}

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
        CliError::new(code, e.to_string())
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
