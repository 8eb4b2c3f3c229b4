//! workq-store: where all workq state lives.
//!
//! The [`Store`] trait is the only way the worker and the command line touch state. It is
//! synchronous and has two backends, SQLite ([`SqliteStore`], one file, the default) and
//! PostgreSQL ([`PgStore`], for workers on many hosts), which pass one conformance suite
//! ([`conformance`]): no SQL, no connection type and no engine error leaks through it. Every
//! method that changes state is one transaction; what a job becomes after each event is decided
//! by `workq_core::lifecycle` and only applied here (ARCHITECTURE.md §3, §4).

pub mod clock;
pub mod conformance;
mod error;
pub mod pg;
pub mod pgtest;
mod shared;
pub mod sqlite;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::StoreError;
pub use pg::{PgOptions, PgStore};
pub use sqlite::{lock_holder, JournalMode, SqliteOptions, SqliteStore};
pub use types::*;

use workq_core::{
    Attempt, ClaimedJob, Job, JobId, JobSpec, JobState, Timestamp, WorkerId, WorkerRecord,
};

/// Result type of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything workq persists, behind one interface that every backend implements identically.
pub trait Store: Send {
    /// The store's clock (injected in tests so retries and rescues need no sleeping).
    fn now(&self) -> Timestamp;

    /// Queues jobs, all in one transaction: either every job is stored or none is.
    fn submit(&self, jobs: &[JobSpec]) -> Result<Vec<Submitted>>;

    /// Claims up to `limit` ready jobs from `queues` for `worker`, each with a fresh lease.
    fn claim(&self, worker: WorkerId, queues: &[String], limit: u32) -> Result<Vec<ClaimedJob>>;

    /// Claims up to `limit` of the jobs `ids` that are ready in `queues` for `worker`, each with
    /// a fresh lease, under the same rules as [`Store::claim`] (a paused queue gives nothing):
    /// for a worker that runs only given jobs (`submit --wait`'s temporary worker).
    fn claim_ids(
        &self,
        worker: WorkerId,
        queues: &[String],
        ids: &[JobId],
        limit: u32,
    ) -> Result<Vec<ClaimedJob>>;

    /// Records the processes started for claimed attempts; stale leases are ignored.
    fn record_spawn(&self, spawns: &[SpawnRecord]) -> Result<()>;

    /// Ends attempts and applies the retry policy; a stale lease changes nothing.
    fn finish(&self, worker: WorkerId, results: &[FinishRequest]) -> Result<Vec<FinishOutcome>>;

    /// Records `spawns`, finishes `results` and claims up to `limit` more from `queues`, all in
    /// one transaction. The worker claims on its own first (an attempt must be on record before
    /// its process exists) and then sends results and pids here with `limit` 0, grouped. On an
    /// error nothing was applied.
    fn step(
        &self,
        worker: WorkerId,
        spawns: &[SpawnRecord],
        results: &[FinishRequest],
        queues: &[String],
        limit: u32,
    ) -> Result<(Vec<FinishOutcome>, Vec<ClaimedJob>)>;

    /// One job, if it exists.
    fn get(&self, id: JobId) -> Result<Option<Job>>;

    /// A job's attempts, oldest first.
    fn attempts(&self, id: JobId) -> Result<Vec<Attempt>>;

    /// Jobs matching `filter`, newest first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>>;

    /// Counts jobs not yet finished, optionally in one queue.
    fn count_unfinished(&self, queue: Option<&str>) -> Result<u64>;

    /// Cancels jobs: queued ones at once, running ones by asking their worker.
    fn cancel(&self, ids: &[JobId]) -> Result<Vec<CancelOutcome>>;

    /// Puts failed or cancelled jobs back in the queue with a fresh retry budget.
    fn retry(&self, ids: &[JobId]) -> Result<Vec<RetryOutcome>>;

    /// Ids of every failed job, optionally in one queue.
    fn failed_ids(&self, queue: Option<&str>) -> Result<Vec<JobId>>;

    /// Running jobs of `worker` whose cancellation was requested, with their leases.
    fn cancel_requests(&self, worker: WorkerId) -> Result<Vec<(JobId, i64)>>;

    /// Earliest future `run_at` among ready jobs in `queues`, to arm a timer.
    fn next_run_at(&self, queues: &[String]) -> Result<Option<Timestamp>>;

    /// True if anything was written since the previous call (cheap; the wake-up safety net).
    fn changed(&self) -> Result<bool>;

    /// Adds a worker to the registry.
    fn register_worker(&self, reg: &WorkerRegistration) -> Result<WorkerId>;

    /// Marks `worker` alive now, in `state`; [`Heartbeat::Ended`] if its row has ended (another
    /// host declared it dead, or it was stopped), which no heartbeat revives.
    fn heartbeat(&self, worker: WorkerId, state: workq_core::WorkerState) -> Result<Heartbeat>;

    /// Marks `worker` stopped with a reason.
    fn worker_stopped(&self, worker: WorkerId, reason: &str) -> Result<()>;

    /// Registry rows; stopped and dead ones only with `include_ended`.
    fn workers(&self, include_ended: bool) -> Result<Vec<WorkerRecord>>;

    /// Attempts currently running on `worker`, with their process identities.
    fn running_attempts(&self, worker: WorkerId) -> Result<Vec<Attempt>>;

    /// Declares `worker` gone and puts its running jobs back: with [`RescueKind::Lost`] it is
    /// marked dead and each job is requeued (or failed past `max_rescues`); with
    /// [`RescueKind::Interrupted`] it is marked stopped and each job is requeued at no cost.
    /// Idempotent: a second sweep of the same worker changes nothing.
    fn rescue_worker(
        &self,
        worker: WorkerId,
        reason: &str,
        how: RescueKind,
    ) -> Result<Vec<Rescued>>;

    /// Marks an ended worker `crash-looping` (its monitor gave up restarting it).
    fn mark_crash_looping(&self, worker: WorkerId, reason: &str) -> Result<()>;

    /// Removes stopped, dead and crash-looping registry rows that ended before `before`.
    fn prune_workers(&self, before: Timestamp) -> Result<u64>;

    /// Pauses or resumes the worker called `name` on `host`; the flag outlives its processes.
    fn set_worker_paused(&self, host: &str, name: &str, paused: bool) -> Result<()>;

    /// True if the worker called `name` on `host` is paused.
    fn worker_paused(&self, host: &str, name: &str) -> Result<bool>;

    /// Every running job with its attempt, lease and time limits.
    fn running_jobs(&self) -> Result<Vec<RunningJob>>;

    /// How the attempts `worker` ended since `since` turned out.
    fn worker_outcomes(&self, worker: WorkerId, since: Timestamp) -> Result<OutcomeCounts>;

    /// A random id fixed when the store was created; job processes carry it in their
    /// environment, so a process of another store is never mistaken for one of ours.
    fn store_id(&self) -> Result<String>;

    /// For each of `keys` that has one, the newest job with that unique key that is queued,
    /// running or succeeded (a batch run skips those rows).
    fn jobs_with_unique_keys(&self, keys: &[String]) -> Result<Vec<(String, JobId, JobState)>>;

    /// Deletes up to `limit` jobs in `states` (finished ones) that finished before `before`,
    /// with their attempts, dependency rows and events older than `before`, in one short
    /// transaction. Returns the deleted jobs' log files, for the caller to remove.
    fn purge(&self, before: Timestamp, states: &[JobState], limit: u32) -> Result<Purged>;

    /// Backend facts and an integrity check, for `workq doctor`.
    fn diagnose(&self) -> Result<Diagnosis>;

    /// Calls `on_change` (from another thread) whenever another process writes something a
    /// worker may act on, for as long as the returned handle lives. `None` when the backend has
    /// no such channel (SQLite workers are woken through their doorbell sockets instead).
    fn subscribe(&self, on_change: Box<dyn Fn() + Send>) -> Option<Box<dyn std::any::Any + Send>> {
        let _ = on_change;
        None
    }

    /// Like [`Store::subscribe`], also for writes that only appended to the event log (a
    /// claim's `started` rows, a worker's change of state), which wake no worker: for readers
    /// of the log (`workq serve`).
    fn subscribe_events(
        &self,
        on_change: Box<dyn Fn() + Send>,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        self.subscribe(on_change)
    }

    /// True when workers on other hosts can share this store, so liveness there is judged by
    /// heartbeat age and a worker that cannot reach it must stop its own jobs in time.
    fn shared_across_hosts(&self) -> bool {
        false
    }

    /// Per-queue counts for `status`.
    fn queue_stats(&self) -> Result<Vec<QueueStats>>;

    /// Up to `limit` rows of the event log with an id above `after`, in id order.
    ///
    /// Ordering guarantee: on SQLite writers are serialized, so ids become visible in order and
    /// `after` = the last id seen misses nothing. On PostgreSQL ids are taken at insert and a
    /// transaction holding a lower id may commit after a higher one was read: a row can appear
    /// below an id already returned. A reader that must miss nothing reads again from a window
    /// below its position (`workq serve` re-reads the last 1000 ids) and drops ids it has seen.
    fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>>;

    /// The id of the newest event-log row (0 when there is none).
    fn last_event_id(&self) -> Result<i64>;

    /// Where concurrent writers stand, for a reader of the event log that finds an id missing:
    /// `(xmin, xmax)` of a snapshot taken now, as transaction ids. Once a later call's `xmin`
    /// reaches the `xmax` seen when the gap was found, every transaction that could have taken
    /// that id has ended, so a re-read shows it or it was rolled back. `None` where ids become
    /// visible in order (SQLite: one writer at a time), so a gap is a deleted row.
    fn commit_horizon(&self) -> Result<Option<(i64, i64)>> {
        Ok(None)
    }

    /// Appends an administrative action to the event log in its own transaction (`kind` such as
    /// `api`, `detail` its JSON); returns its id. Its state is `kind` when that names a job
    /// state, else none.
    fn record_event(
        &self,
        kind: &str,
        job: Option<JobId>,
        worker: Option<WorkerId>,
        detail: &str,
    ) -> Result<i64>;

    /// Per-queue metrics for `/metrics`, O(queues) (see [`QueueMetrics`]).
    fn queue_metrics(&self) -> Result<Vec<QueueMetrics>>;

    /// Jobs finished since `since`, per queue and per `bucket` of time (a bucket starts at a
    /// multiple of its width since the epoch), oldest first.
    fn throughput(
        &self,
        since: Timestamp,
        bucket: std::time::Duration,
    ) -> Result<Vec<ThroughputPoint>>;
}
