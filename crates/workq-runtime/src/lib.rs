//! workq-runtime: the worker and everything that touches processes.
//!
//! Only this crate starts or signals the processes workq runs (ARCHITECTURE.md §1, §5).
//!
//! A worker ([`run_worker`]) is an event loop on the calling thread, fed by one channel: doorbell
//! rings and store notifications, its slot threads' reports and the terminating signals. The
//! loop owns the store handle, so every store call happens on that thread; it decides what to
//! claim, when results are committed and which job to signal. It does not start jobs: each slot
//! has a thread that starts the jobs the loop hands it and watches each until it exits, draining
//! its output into its log, so the loop never waits for an exec. A job's parent-death signal
//! (`PR_SET_PDEATHSIG`) fires when the thread that started it ends, so slot threads live as long
//! as the worker.
//!
//! A daemon ([`daemon::launch`]) is a monitor process ([`monitor`]) that owns the PID file and
//! restarts its worker process. The caller gives the command lines that start the two, so this
//! crate knows nothing of the command line's grammar.

pub mod container;
pub mod control;
pub mod daemon;
pub mod doorbell;
pub mod ephemeral;
mod error;
pub mod launch;
pub mod logger;
pub mod monitor;
pub mod output;
pub mod pidfile;
pub mod procinfo;
pub mod ready;
pub mod rescue;
pub mod sdnotify;
mod settings;
pub mod signals;
pub mod spawn;
pub mod worker;

pub use error::RuntimeError;
pub use logger::{Level, Logger};
pub use settings::{
    check_name, default_log_file, server_log_file, DaemonSettings, ServerSettings, WorkerSettings,
    SERVE_SETTINGS_ENV, SETTINGS_ENV, SETTING_KEYS,
};
pub use worker::{run_worker, WorkerOptions, WorkerSummary};
