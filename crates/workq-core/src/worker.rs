//! Worker registry records.

use std::fmt;

use crate::job::WorkerId;
use crate::time::Timestamp;

/// A worker's state as stored in the registry; `idle`/`busy` are derived from running jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Registered, not yet claiming.
    Starting,
    /// Claiming and running jobs (shown as idle or busy).
    Running,
    /// Running what it has, claiming nothing new.
    Paused,
    /// Stopping: finishing or interrupting its jobs.
    Draining,
    /// Exited cleanly.
    Stopped,
    /// Found dead; its jobs were rescued.
    Dead,
    /// Died again and again; its monitor gave up restarting it.
    CrashLooping,
}

impl WorkerState {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Paused => "paused",
            WorkerState::Draining => "draining",
            WorkerState::Stopped => "stopped",
            WorkerState::Dead => "dead",
            WorkerState::CrashLooping => "crash-looping",
        }
    }

    /// Parses a stored name; unknown names read as dead rather than failing a listing.
    pub fn parse(s: &str) -> WorkerState {
        match s {
            "starting" => WorkerState::Starting,
            "running" => WorkerState::Running,
            "paused" => WorkerState::Paused,
            "draining" => WorkerState::Draining,
            "stopped" => WorkerState::Stopped,
            "crash-looping" => WorkerState::CrashLooping,
            _ => WorkerState::Dead,
        }
    }

    /// True while the worker claims to be alive.
    pub fn is_live(self) -> bool {
        !matches!(
            self,
            WorkerState::Stopped | WorkerState::Dead | WorkerState::CrashLooping
        )
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the worker registry.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    /// Registry id.
    pub id: WorkerId,
    /// Name (`default` unless given).
    pub name: String,
    /// Host name.
    pub host: String,
    /// Kernel boot id of the host, to tell a reboot from a live process.
    pub boot_id: String,
    /// Worker process id.
    pub pid: i32,
    /// Kernel start time of `pid`.
    pub pid_start_time: u64,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Stored state.
    pub state: WorkerState,
    /// Jobs it is running now.
    pub running_jobs: u32,
    /// Jobs it finished successfully.
    pub jobs_done: u64,
    /// Jobs it finished unsuccessfully.
    pub jobs_failed: u64,
    /// When it registered.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub heartbeat_at: Timestamp,
    /// When it stopped or was found dead.
    pub stopped_at: Option<Timestamp>,
    /// Why it stopped.
    pub stop_reason: Option<String>,
    /// workq version it runs.
    pub version: String,
    /// How it was started (opaque JSON written by the runtime), so it can be restarted alike.
    pub settings: Option<String>,
}
