//! Request and result types of the [`crate::Store`] trait.

use workq_core::{JobId, JobState, Outcome, Timestamp, WorkerId};

/// What happened to one submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A new job was queued.
    Created(JobId),
    /// The idempotency key was seen before: this is the job it created.
    Existing(JobId),
    /// The unique key already has a queued or running job: nothing was queued.
    Duplicate(JobId),
}

impl Submitted {
    /// The id of the job this submit refers to.
    pub fn id(self) -> JobId {
        match self {
            Submitted::Created(id) | Submitted::Existing(id) | Submitted::Duplicate(id) => id,
        }
    }
}

/// The process started for a claimed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnRecord {
    /// The job.
    pub job_id: JobId,
    /// The attempt's lease.
    pub lease: i64,
    /// Leader pid.
    pub pid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Kernel start time of the leader.
    pub pid_start_time: u64,
    /// Log file.
    pub log_path: String,
}

/// The end of one attempt, as the worker saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishRequest {
    /// The job.
    pub job_id: JobId,
    /// The attempt's lease.
    pub lease: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// Exit code if it exited.
    pub exit_code: Option<i32>,
    /// Signal if it was killed by one.
    pub signal: Option<i32>,
    /// Why it did not succeed.
    pub error: Option<String>,
}

/// What a finish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The job reached this terminal state.
    Done(JobState),
    /// The job was queued again, not before this instant.
    Requeued(Timestamp),
    /// The lease no longer matched: nothing changed.
    Stale,
}

impl FinishOutcome {
    /// What a state-machine decision did to the job.
    pub fn of(d: &workq_core::lifecycle::Decision) -> FinishOutcome {
        match d.run_at {
            Some(at) => FinishOutcome::Requeued(at),
            None => FinishOutcome::Done(d.state),
        }
    }
}

/// What a cancel did to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and is now cancelled.
    Cancelled(JobId),
    /// It is running; its worker was asked to stop it.
    Requested(JobId, Option<WorkerId>),
    /// It had already ended in this state.
    AlreadyDone(JobId, JobState),
    /// No such job.
    NotFound(JobId),
}

/// What a retry did to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Queued again.
    Requeued(JobId),
    /// Not failed or cancelled: left alone.
    NotRetryable(JobId, JobState),
    /// No such job.
    NotFound(JobId),
}

/// A job rescued from a dead worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescued {
    /// The job.
    pub job_id: JobId,
    /// The attempt that was lost.
    pub attempt: u32,
    /// The job's state afterwards.
    pub new_state: JobState,
}

/// Filters for [`crate::Store::list`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only these states (empty = all).
    pub states: Vec<JobState>,
    /// Only scheduled (queued, run_at in the future) when listing queued jobs by that name.
    pub scheduled_only: bool,
    /// Only waiting (queued with a dependency that has not succeeded, `deps_pending > 0`) when
    /// listing queued jobs by that name.
    pub waiting_only: bool,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs with all these labels.
    pub labels: Vec<(String, String)>,
    /// Only these ids (empty = all).
    pub ids: Vec<JobId>,
    /// At most this many (0 = no limit).
    pub limit: u32,
    /// Only jobs with an id below this one (the cursor of the next page, newest first).
    pub before: Option<JobId>,
    /// Only jobs whose command line contains this text.
    pub command_contains: Option<String>,
}

/// Registration of a starting worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRegistration {
    /// Name.
    pub name: String,
    /// Host name.
    pub host: String,
    /// Kernel boot id.
    pub boot_id: String,
    /// Process id.
    pub pid: i32,
    /// Kernel start time of the process.
    pub pid_start_time: u64,
    /// Queues served.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub slots: u32,
    /// workq version.
    pub version: String,
    /// How it was started (opaque JSON), kept so it can be restarted with the same settings.
    pub settings: Option<String>,
}

pub use workq_core::lifecycle::RescueKind;

/// A job running now, with what is needed to judge and find its processes.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJob {
    /// The job.
    pub job_id: JobId,
    /// The running attempt.
    pub attempt: u32,
    /// The attempt's lease.
    pub lease: i64,
    /// The worker running it.
    pub worker_id: Option<WorkerId>,
    /// When the attempt started.
    pub started_at: Timestamp,
    /// The job's timeout, if any.
    pub timeout: Option<std::time::Duration>,
    /// The job's kill grace.
    pub kill_grace: std::time::Duration,
}

/// How the attempts a worker ended recently turned out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed, timed out or could not start.
    pub failed: u64,
    /// Attempts that ended otherwise (cancelled, interrupted, lost, stale).
    pub other: u64,
}

/// Facts about the store for `workq doctor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// Backend name (`sqlite`, `postgres`).
    pub backend: String,
    /// Where it lives (a file path; never a password).
    pub location: String,
    /// Schema version in the store.
    pub schema_version: i64,
    /// The schema version this build carries.
    pub latest_schema: i64,
    /// The server and its version, for a store that has one (`PostgreSQL 16.4`).
    pub server: Option<String>,
    /// Client sessions on the server, and how many it allows (PostgreSQL).
    pub connections: Option<(u64, u64)>,
    /// The server's clock minus the store's (this host's) clock in ms, at the middle of a round
    /// trip (PostgreSQL, where hosts judge each other's heartbeats by their own clocks).
    pub clock_skew_ms: Option<i64>,
    /// Journal mode in force (SQLite).
    pub journal_mode: Option<String>,
    /// True when the database lies on a network or virtual filesystem.
    pub network_fs: bool,
    /// The integrity check's verdict: `ok`, or what it found.
    pub integrity: String,
}

/// Counts for one queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Ready or waiting on a dependency.
    pub queued: u64,
    /// Queued with `run_at` in the future.
    pub scheduled: u64,
    /// Running now.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// The queue is paused.
    pub paused: bool,
    /// Mean duration of succeeded jobs, in milliseconds.
    pub mean_duration_ms: Option<f64>,
}

/// What one purge batch removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Purged {
    /// Jobs deleted.
    pub jobs: u64,
    /// Their attempts' log files.
    pub log_files: Vec<String>,
}

/// What a heartbeat found of the worker's registry row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The row is live and carries the new heartbeat.
    Alive,
    /// The row has ended or is gone (declared dead by another host while this worker could not
    /// reach the store, stopped, crash-looping, or pruned): its jobs were taken from it, and it
    /// may claim nothing more under this id (ARCHITECTURE.md §4.6).
    Ended,
}

/// One row of the store's event log: a job's or a worker's state change, or an administrative
/// action, in commit order (`id` grows), for `workq serve`'s `/api/v1/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the log; later commits have larger ids.
    pub id: i64,
    /// When it was written.
    pub at: Timestamp,
    /// What happened (`submitted`, `started`, `succeeded`, `worker_started`, `api`, …).
    pub kind: String,
    /// The job, for a job event.
    pub job_id: Option<JobId>,
    /// The worker, for a worker event (or the worker that did it).
    pub worker_id: Option<WorkerId>,
    /// The job's state after the change (`queued`, `running`, `succeeded`, …), for a job event.
    pub state: Option<String>,
    /// Free-form detail (a reason, a worker name, an API request's JSON).
    pub detail: Option<String>,
}

/// Upper bounds, in seconds, of the buckets of the duration and wait histograms the store
/// keeps per queue (Prometheus' `le`; `+Inf` is implied).
pub const HISTOGRAM_BOUNDS_SECS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 14400.0, 86400.0,
];

/// A histogram kept in the store: cumulative counts per bound of [`HISTOGRAM_BOUNDS_SECS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredHistogram {
    /// Observations at or under each bound of [`HISTOGRAM_BOUNDS_SECS`], cumulative, same order.
    pub buckets: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_secs: f64,
}

/// Per-queue metrics, each read in O(1) rows from tallies the store keeps as jobs move: a
/// scrape costs the same with a million jobs as with ten.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMetrics {
    /// Queue name.
    pub queue: String,
    /// Attempts ended, by outcome (`succeeded`, `failed`, `timeout`, …), since the store was
    /// created: purging jobs does not lower them.
    pub attempts: Vec<(String, u64)>,
    /// How long ended attempts ran.
    pub duration: StoredHistogram,
    /// How long claimed jobs had been due (claim time minus run_at).
    pub wait: StoredHistogram,
    /// The earliest `run_at` among jobs ready to run now (queued, due, no pending dependency).
    pub oldest_ready_at: Option<Timestamp>,
}

/// Jobs finished in one time bucket of one queue, for the dashboard's throughput chart.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputPoint {
    /// Queue name.
    pub queue: String,
    /// Start of the bucket.
    pub at: Timestamp,
    /// Jobs that reached succeeded in it.
    pub succeeded: u64,
    /// Jobs that reached failed (or cancelled) in it.
    pub failed: u64,
}
