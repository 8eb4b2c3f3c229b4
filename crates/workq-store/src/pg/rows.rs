//! Mapping PostgreSQL rows to domain types (every integer column is BIGINT).

use std::time::Duration;

use postgres::Row;
use workq_core::{Attempt, Job, JobSpec, JobState, Outcome, Timestamp, WorkerRecord, WorkerState};

/// Columns of `jobs` (aliased `j`) read by [`job_from_row`].
pub(crate) const JOB_COLUMNS: &str = "j.id, j.state, \
     j.queue, j.argv, j.env, j.cwd, j.labels, j.priority, j.retries, j.backoff_ms, \
     j.timeout_ms, j.kill_grace_ms, j.run_at, j.unique_key, j.idempotency_key, j.max_rescues, \
     j.container, j.deps_pending, j.attempt, j.failures, j.rescues, j.worker_id, j.cancel_requested, \
     j.exit_code, j.last_error, j.created_at, j.started_at, j.finished_at, \
     (SELECT w.name FROM workers w WHERE w.id = j.worker_id)";

/// Columns that make up a [`JobSpec`], in [`spec_from_row`] order.
pub(crate) const SPEC_COLUMNS: &str =
    "queue, argv, env, cwd, labels, priority, retries, backoff_ms, \
     timeout_ms, kill_grace_ms, run_at, unique_key, idempotency_key, max_rescues, container";

use super::stmt::Cols;
pub(crate) use crate::shared::{json_map, map_json};
use crate::StoreError;

pub(crate) fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

pub(crate) fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

/// Reads a [`JobSpec`] of a row of `table` from [`SPEC_COLUMNS`] starting at column `o`.
pub(crate) fn spec_from_row(r: &Row, table: &'static str, o: usize) -> Result<JobSpec, StoreError> {
    let argv: String = r.col(table, o + 1)?;
    Ok(JobSpec {
        queue: r.col(table, o)?,
        argv: serde_json::from_str(&argv).unwrap_or_default(),
        env: json_map(r.col(table, o + 2)?),
        cwd: r.col(table, o + 3)?,
        labels: json_map(r.col(table, o + 4)?),
        priority: r
            .col::<i64>(table, o + 5)?
            .clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        retries: u32_of(r.col(table, o + 6)?),
        backoff: ms(r.col(table, o + 7)?),
        timeout: r.col::<Option<i64>>(table, o + 8)?.map(ms),
        kill_grace: ms(r.col(table, o + 9)?),
        run_at: Some(Timestamp(r.col(table, o + 10)?)),
        after: Vec::new(),
        unique_key: r.col(table, o + 11)?,
        idempotency_key: r.col(table, o + 12)?,
        max_rescues: u32_of(r.col(table, o + 13)?),
        // An unreadable container spec must fail the job, never run it on the host instead.
        container: r
            .col::<Option<String>>(table, o + 14)?
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| StoreError::BadRow {
                    table,
                    id: r
                        .col::<i64>(table, 0)
                        .map_or_else(|_| "?".into(), |v| v.to_string()),
                    column: "container".into(),
                    detail: format!("not a container spec: {e}"),
                })
            })
            .transpose()?,
    })
}

/// Reads a [`Job`] from [`JOB_COLUMNS`].
pub(crate) fn job_from_row(r: &Row) -> Result<Job, StoreError> {
    const T: &str = "jobs";
    let spec = spec_from_row(r, T, 2)?;
    let state: String = r.col(T, 1)?;
    Ok(Job {
        id: r.col(T, 0)?,
        state: state.parse().unwrap_or(JobState::Failed),
        run_at: spec.run_at.unwrap_or_default(),
        spec,
        deps_pending: u32_of(r.col(T, 17)?),
        attempt: u32_of(r.col(T, 18)?),
        failures: u32_of(r.col(T, 19)?),
        rescues: u32_of(r.col(T, 20)?),
        worker_id: r.col(T, 21)?,
        cancel_requested: r.col(T, 22)?,
        exit_code: r.col::<Option<i64>>(T, 23)?.map(|c| c as i32),
        last_error: r.col(T, 24)?,
        created_at: Timestamp(r.col(T, 25)?),
        started_at: r.col::<Option<i64>>(T, 26)?.map(Timestamp),
        finished_at: r.col::<Option<i64>>(T, 27)?.map(Timestamp),
        worker_name: r.col(T, 28)?,
    })
}

/// Columns of `attempts` (aliased `a`) read by [`attempt_from_row`].
pub(crate) const ATTEMPT_COLUMNS: &str =
    "a.job_id, a.attempt, a.worker_id, a.host, a.pid, a.pgid, \
     a.pid_start_time, a.started_at, a.ended_at, a.outcome, a.exit_code, a.signal, a.error, \
     a.log_path, (SELECT w.name FROM workers w WHERE w.id = a.worker_id), a.lease";

/// Reads an [`Attempt`] from [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt_from_row(r: &Row) -> Result<Attempt, StoreError> {
    const T: &str = "attempts";
    let outcome: Option<String> = r.col(T, 9)?;
    Ok(Attempt {
        job_id: r.col(T, 0)?,
        attempt: u32_of(r.col(T, 1)?),
        worker_id: r.col(T, 2)?,
        host: r.col(T, 3)?,
        pid: r.col::<Option<i64>>(T, 4)?.map(|v| v as i32),
        pgid: r.col::<Option<i64>>(T, 5)?.map(|v| v as i32),
        pid_start_time: r.col::<Option<i64>>(T, 6)?.map(|v| v as u64),
        started_at: Timestamp(r.col(T, 7)?),
        ended_at: r.col::<Option<i64>>(T, 8)?.map(Timestamp),
        outcome: outcome.and_then(|o| o.parse::<Outcome>().ok()),
        exit_code: r.col::<Option<i64>>(T, 10)?.map(|v| v as i32),
        signal: r.col::<Option<i64>>(T, 11)?.map(|v| v as i32),
        error: r.col(T, 12)?,
        log_path: r.col(T, 13)?,
        worker_name: r.col(T, 14)?,
        lease: r.col(T, 15)?,
    })
}

/// Columns of `workers` (aliased `w`) read by [`worker_from_row`].
pub(crate) const WORKER_COLUMNS: &str =
    "w.id, w.name, w.host, w.boot_id, w.pid, w.pid_start_time, \
     w.queues, w.slots, w.state, w.jobs_done, w.jobs_failed, w.started_at, w.heartbeat_at, \
     w.stopped_at, w.stop_reason, w.version, \
     (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.worker_id = w.id), w.settings";

/// Reads a [`WorkerRecord`] from [`WORKER_COLUMNS`].
pub(crate) fn worker_from_row(r: &Row) -> Result<WorkerRecord, StoreError> {
    const T: &str = "workers";
    let queues: String = r.col(T, 6)?;
    let state: String = r.col(T, 8)?;
    Ok(WorkerRecord {
        id: r.col(T, 0)?,
        name: r.col(T, 1)?,
        host: r.col(T, 2)?,
        boot_id: r.col(T, 3)?,
        pid: r.col::<i64>(T, 4)? as i32,
        pid_start_time: r.col::<i64>(T, 5)? as u64,
        queues: serde_json::from_str(&queues).unwrap_or_default(),
        slots: u32_of(r.col(T, 7)?),
        state: WorkerState::parse(&state),
        jobs_done: r.col::<i64>(T, 9)?.max(0) as u64,
        jobs_failed: r.col::<i64>(T, 10)?.max(0) as u64,
        started_at: Timestamp(r.col(T, 11)?),
        heartbeat_at: Timestamp(r.col(T, 12)?),
        stopped_at: r.col::<Option<i64>>(T, 13)?.map(Timestamp),
        stop_reason: r.col(T, 14)?,
        version: r.col(T, 15)?,
        running_jobs: u32_of(r.col(T, 16)?),
        settings: r.col(T, 17)?,
    })
}
