//! workq-runtime: the worker and everything that touches processes.
//!
//! Only this crate spawns or signals processes. The worker is a plain event loop on the main
//! thread fed by a channel (doorbell, child exits, signals): it owns the store handle, so every
//! store call happens on one thread, and it is the one long-lived thread that spawns jobs, which
//! is what `PR_SET_PDEATHSIG` needs.

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
mod settings;
pub mod signals;
pub mod spawn;
pub mod worker;

pub use error::RuntimeError;
pub use logger::{Level, Logger};
pub use settings::{check_name, default_log_file, WorkerSettings, SETTINGS_ENV, SETTING_KEYS};
pub use worker::{run_worker, WorkerOptions, WorkerSummary};
