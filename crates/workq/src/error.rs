//! The one error type of the binary: every failure maps to a documented exit code
//! (ARCHITECTURE.md §7.1, §7.2).

use std::fmt;
use std::path::Path;

use workq_core::JobId;
use workq_store::StoreError;

/// Exit codes (defined once, in workq-core).
pub use workq_core::exit as code;

/// What went wrong, as far as the exit status is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A job failed or was cancelled, or a worker this command started did not come up.
    Failed,
    /// Bad usage: a flag, an argument, a config value.
    Usage,
    /// A job, queue, worker or file does not exist.
    NotFound,
    /// Already running, a duplicate key, a job in the wrong state.
    Conflict,
    /// The store, or another resource the command needs, is unavailable.
    Unavailable,
    /// Waiting ran out of time.
    Timeout,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl ErrorKind {
    /// Every kind, for going from an exit code back to its kind.
    const ALL: [ErrorKind; 7] = [
        ErrorKind::Failed,
        ErrorKind::Usage,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Interrupted,
    ];

    /// The documented exit code of this kind: the only place kinds meet codes.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failed => code::JOB_FAILED,
            ErrorKind::Usage => code::USAGE,
            ErrorKind::NotFound => code::NOT_FOUND,
            ErrorKind::Conflict => code::CONFLICT,
            ErrorKind::Unavailable => code::UNAVAILABLE,
            ErrorKind::Timeout => code::TIMEOUT,
            ErrorKind::Interrupted => code::INTERRUPTED,
        }
    }

    /// The kind behind an exit code another workq process reported (a starting daemon's), so
    /// its failure ends this command the same way; any other code counts as `Failed`.
    pub fn from_exit_code(exit: u8) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.exit_code() == exit)
            .unwrap_or(ErrorKind::Failed)
    }
}

/// A failure of a command: its kind, what went wrong (naming the thing involved) and, where
/// there is one, what to do about it.
#[derive(Debug)]
pub struct CliError {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
}

impl CliError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Usage, message)
    }

    /// Something named does not exist (exit 3).
    pub fn not_found(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::NotFound, message)
    }

    /// The request conflicts with what exists or runs (exit 4).
    pub fn conflict(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Conflict, message)
    }

    /// The store or another resource is unavailable (exit 5).
    pub fn unavailable(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Unavailable, message)
    }

    /// No job has this id.
    pub fn job_not_found(id: JobId) -> Self {
        CliError::not_found(format!("job {id} not found"))
            .with_hint("`workq list` shows the jobs that exist")
    }

    /// Some of the jobs a command was given do not exist (at least one id); worded as
    /// [`CliError::job_not_found`] for one.
    pub fn jobs_not_found(ids: &[JobId]) -> Self {
        match ids {
            [one] => CliError::job_not_found(*one),
            _ => {
                let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
                CliError::not_found(format!("jobs {} not found", list.join(", ")))
                    .with_hint("`workq list` shows the jobs that exist")
            }
        }
    }

    /// A file given on the command line cannot be read; `what` names the flag and the file, as in
    /// `--lines jobs.txt`. A missing file is "not found", anything else (a directory, no
    /// permission) is the user's to fix.
    pub fn unreadable(what: impl fmt::Display, e: std::io::Error) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Usage
        };
        CliError::new(kind, format!("{what}: {e}"))
    }

    /// The current directory cannot be read (it was removed, or is not searchable).
    pub fn current_dir(e: std::io::Error) -> Self {
        CliError::unavailable(format!("cannot read the current directory: {e}"))
    }

    /// The running executable cannot be found, so it cannot start a worker.
    pub fn current_exe(e: std::io::Error) -> Self {
        CliError::unavailable(format!("cannot find the workq executable: {e}"))
    }

    /// A worker's own log cannot be opened.
    pub fn worker_log(path: &Path, e: std::io::Error) -> Self {
        CliError::unavailable(format!("cannot open worker log {}: {e}", path.display()))
            .with_hint("pass -l FILE to log somewhere writable")
    }

    /// A worker of this name runs already (`pid` when known).
    pub fn worker_running(name: &str, pid: Option<i32>) -> Self {
        let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        CliError::conflict(format!("worker {name} is already running{pid}")).with_hint(format!(
            "stop it first (workq worker stop {name}), or start another one under a different name"
        ))
    }

    /// Adds (or replaces) the hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Puts what was being done in front of the message, as in `pool gpu: …`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The message, without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, if anything is known.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Prints `error: …` and `hint: …` on standard error.
    pub fn eprint(&self) {
        eprintln!("error: {}", self.message);
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        // The store does not know the command line; the hints that name flags are added here.
        match &e {
            StoreError::NotFound(_) => CliError::not_found(e.to_string()),
            StoreError::Conflict(_) => CliError::conflict(e.to_string()),
            StoreError::ReadOnly { .. } => CliError::unavailable(e.to_string())
                .with_hint("fix its permissions, or use --state-dir on a writable filesystem"),
            StoreError::NotADatabase { .. } => CliError::unavailable(e.to_string()).with_hint(
                "move the file aside, or use --state-dir to keep workq's state elsewhere",
            ),
            _ => CliError::unavailable(e.to_string()),
        }
    }
}

impl From<workq::Error> for CliError {
    fn from(e: workq::Error) -> Self {
        match e {
            workq::Error::Store(s) => s.into(),
            workq::Error::StateDir { .. } => CliError::unavailable(e.to_string()).with_hint(
                "pass --state-dir DIR (or set WORKQ_STATE_DIR) to use a writable directory",
            ),
            workq::Error::JobNotFound(id) => CliError::job_not_found(id),
            workq::Error::Timeout(_) => CliError::new(ErrorKind::Timeout, e.to_string()),
        }
    }
}

impl From<workq_runtime::RuntimeError> for CliError {
    fn from(e: workq_runtime::RuntimeError) -> Self {
        match e {
            workq_runtime::RuntimeError::Store(s) => s.into(),
            workq_runtime::RuntimeError::Invalid(m) => CliError::usage(m),
            other => CliError::unavailable(other.to_string()),
        }
    }
}

/// Result of a command: the exit code on success.
pub type CmdResult = Result<u8, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_documented_exit_code_and_back() {
        let table = [
            (ErrorKind::Failed, 1),
            (ErrorKind::Usage, 2),
            (ErrorKind::NotFound, 3),
            (ErrorKind::Conflict, 4),
            (ErrorKind::Unavailable, 5),
            (ErrorKind::Timeout, 124),
            (ErrorKind::Interrupted, 130),
        ];
        for (kind, exit) in table {
            assert_eq!(kind.exit_code(), exit, "{kind:?}");
            assert_eq!(ErrorKind::from_exit_code(exit), kind);
        }
        assert_eq!(ErrorKind::ALL.len(), table.len());
    }

    #[test]
    fn codes_outside_the_table_count_as_a_failure() {
        for exit in [0, 6, 42, 255] {
            assert_eq!(ErrorKind::from_exit_code(exit), ErrorKind::Failed);
        }
    }

    #[test]
    fn store_errors_map_to_their_kinds() {
        let path = || "/x/workq.db".to_string();
        let cases = [
            (StoreError::NotFound("job 7".into()), ErrorKind::NotFound),
            (StoreError::Conflict("busy".into()), ErrorKind::Conflict),
            (
                StoreError::Locked {
                    path: path(),
                    holder: None,
                    waited_ms: 10,
                },
                ErrorKind::Unavailable,
            ),
            (
                StoreError::DiskFull { path: path() },
                ErrorKind::Unavailable,
            ),
            (
                StoreError::Backend {
                    path: path(),
                    detail: "x".into(),
                },
                ErrorKind::Unavailable,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(CliError::from(e).kind(), kind);
        }
    }

    #[test]
    fn unusable_store_files_get_a_hint_naming_the_state_dir_flag() {
        let read_only = CliError::from(StoreError::ReadOnly {
            path: "/ro/workq.db".into(),
            reason: "read-only file system".into(),
        });
        let not_db = CliError::from(StoreError::NotADatabase {
            path: "/x/workq.db".into(),
        });
        for e in [read_only, not_db] {
            assert_eq!(e.kind(), ErrorKind::Unavailable);
            assert!(e.hint().is_some_and(|h| h.contains("--state-dir")), "{e:?}");
        }
    }

    #[test]
    fn library_errors_map_to_their_kinds() {
        let missing = CliError::from(workq::Error::JobNotFound(42));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(missing.hint().is_some());
        assert_eq!(
            CliError::from(workq::Error::Timeout(2)).kind(),
            ErrorKind::Timeout
        );
        let state_dir = workq::Error::StateDir {
            path: "/proc/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        // The library describes the problem; only the CLI names its own flags.
        assert!(!state_dir.to_string().contains("--"), "{state_dir}");
        let e = CliError::from(state_dir);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("/proc/x"), "{e:?}");
        assert!(e.hint().is_some_and(|h| h.contains("--state-dir")), "{e:?}");
    }

    #[test]
    fn runtime_errors_map_to_their_kinds() {
        use workq_runtime::RuntimeError;
        assert_eq!(
            CliError::from(RuntimeError::Invalid("bad".into())).kind(),
            ErrorKind::Usage
        );
        assert_eq!(
            CliError::from(RuntimeError::Store(StoreError::Conflict("x".into()))).kind(),
            ErrorKind::Conflict
        );
        let io = RuntimeError::Io {
            what: "open",
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(CliError::from(io).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn the_same_failure_is_built_the_same_way_everywhere() {
        let a = CliError::job_not_found(9);
        let b = CliError::from(workq::Error::JobNotFound(9));
        assert_eq!(
            (a.kind(), a.message(), a.hint()),
            (b.kind(), b.message(), b.hint())
        );
        let one = CliError::jobs_not_found(&[9]);
        assert_eq!((one.message(), one.hint()), (a.message(), a.hint()));
        let two = CliError::jobs_not_found(&[9, 10]);
        assert_eq!(two.message(), "jobs 9, 10 not found");
        assert_eq!((two.kind(), two.hint()), (a.kind(), a.hint()));
        assert_eq!(
            CliError::worker_running("gpu", Some(1)).kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            CliError::current_dir(std::io::Error::from(std::io::ErrorKind::NotFound)).kind(),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn context_goes_in_front_and_keeps_the_kind() {
        let e = CliError::usage("bad").context("pool gpu");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().starts_with("pool gpu"));
    }
}
