//! workq's exit codes, named once: the binary maps every error to one of these, and the runtime
//! passes them through the readiness pipe of a starting worker (ARCHITECTURE.md, "Exit codes").

/// Success.
pub const OK: u8 = 0;
/// A job (or one of several) failed or was cancelled.
pub const JOB_FAILED: u8 = 1;
/// Bad usage: a flag, an argument, a config value.
pub const USAGE: u8 = 2;
/// A job, worker or file does not exist.
pub const NOT_FOUND: u8 = 3;
/// Already running, or a duplicate key.
pub const CONFLICT: u8 = 4;
/// The store (or another resource the command needs) is unavailable or locked past its timeout.
pub const UNAVAILABLE: u8 = 5;
/// `submit --wait` of a job whose program was not found, as a shell reports it.
pub const COMMAND_NOT_FOUND: u8 = 127;
/// `submit --wait` of a job whose program was found but could not be executed, as a shell
/// reports it.
pub const NOT_EXECUTABLE: u8 = 126;
/// `wait` timed out.
pub const TIMEOUT: u8 = 124;
/// Interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: u8 = 130;
