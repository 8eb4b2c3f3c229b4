//! Mapping between rows and domain types.

use std::time::Duration;

use rusqlite::Row;
use workq_core::{Attempt, Job, JobSpec, JobState, Outcome, Timestamp, WorkerRecord, WorkerState};

/// Columns of `jobs` (aliased `j`) read by [`job_from_row`]: id, state, the [`SPEC_COLUMNS`] in
/// the same order, the execution state, and the worker's name.
pub(crate) const JOB_COLUMNS: &str = "j.id, j.state, \
     j.queue, j.argv, j.env, j.cwd, j.labels, j.priority, j.retries, j.backoff_ms, \
     j.timeout_ms, j.kill_grace_ms, j.run_at, j.unique_key, j.idempotency_key, j.max_rescues, \
     j.container, j.deps_pending, j.attempt, j.failures, j.rescues, j.worker_id, j.cancel_requested, \
     j.exit_code, j.last_error, j.created_at, j.started_at, j.finished_at, \
     (SELECT w.name FROM workers w WHERE w.id = j.worker_id)";

/// Columns of `jobs` (unaliased) that make up a [`JobSpec`], in [`spec_from_row`] order from `offset`.
pub(crate) const SPEC_COLUMNS: &str =
    "queue, argv, env, cwd, labels, priority, retries, backoff_ms, \
     timeout_ms, kill_grace_ms, run_at, unique_key, idempotency_key, max_rescues, container";

pub(crate) use crate::shared::{json_map, map_json};

/// The error for a row of `table` (id `id`) that a read failed on with `e`, naming the column.
pub(super) fn bad_row(table: &'static str, id: i64, e: &rusqlite::Error) -> crate::StoreError {
    use rusqlite::types::Type;
    let (column, detail) = match e {
        rusqlite::Error::InvalidColumnType(_, name, Type::Null) => {
            (name.clone(), "it is NULL".to_string())
        }
        rusqlite::Error::InvalidColumnType(_, name, ty) => {
            (name.clone(), format!("it holds a value of type {ty}"))
        }
        rusqlite::Error::IntegralValueOutOfRange(i, v) => {
            (format!("column {i}"), format!("{v} is out of range"))
        }
        rusqlite::Error::FromSqlConversionFailure(i, _, err) => {
            (format!("column {i}"), err.to_string())
        }
        other => ("?".to_string(), other.to_string()),
    };
    crate::StoreError::BadRow {
        table,
        id: id.to_string(),
        column,
        detail,
    }
}

pub(super) fn parse_state(s: &str) -> rusqlite::Result<JobState> {
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

/// Reads a [`JobSpec`] from [`SPEC_COLUMNS`] starting at column `o`.
pub(crate) fn spec_from_row(r: &Row<'_>, o: usize) -> rusqlite::Result<JobSpec> {
    let argv: String = r.get(o + 1)?;
    Ok(JobSpec {
        queue: r.get(o)?,
        argv: serde_json::from_str(&argv).unwrap_or_default(),
        env: json_map(r.get(o + 2)?),
        cwd: r.get(o + 3)?,
        labels: json_map(r.get(o + 4)?),
        priority: r.get(o + 5)?,
        retries: r.get(o + 6)?,
        backoff: Duration::from_millis(r.get::<_, i64>(o + 7)?.max(0) as u64),
        timeout: r
            .get::<_, Option<i64>>(o + 8)?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        kill_grace: Duration::from_millis(r.get::<_, i64>(o + 9)?.max(0) as u64),
        run_at: Some(Timestamp(r.get(o + 10)?)),
        after: Vec::new(),
        unique_key: r.get(o + 11)?,
        idempotency_key: r.get(o + 12)?,
        max_rescues: r.get(o + 13)?,
        // An unreadable container spec must fail the job, never run it on the host instead.
        container: r
            .get::<_, Option<String>>(o + 14)?
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        o + 14,
                        rusqlite::types::Type::Text,
                        format!("container (not a container spec: {e})").into(),
                    )
                })
            })
            .transpose()?,
    })
}

/// Reads a [`Job`] from [`JOB_COLUMNS`].
pub(crate) fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let spec = spec_from_row(r, 2)?;
    let state: String = r.get(1)?;
    Ok(Job {
        id: r.get(0)?,
        state: parse_state(&state)?,
        run_at: spec.run_at.unwrap_or_default(),
        spec,
        deps_pending: r.get(17)?,
        attempt: r.get(18)?,
        failures: r.get(19)?,
        rescues: r.get(20)?,
        worker_id: r.get(21)?,
        cancel_requested: r.get::<_, i64>(22)? != 0,
        exit_code: r.get(23)?,
        last_error: r.get(24)?,
        created_at: Timestamp(r.get(25)?),
        started_at: r.get::<_, Option<i64>>(26)?.map(Timestamp),
        finished_at: r.get::<_, Option<i64>>(27)?.map(Timestamp),
        worker_name: r.get(28)?,
    })
}

/// Columns of `attempts` (aliased `a`) read by [`attempt_from_row`].
pub(crate) const ATTEMPT_COLUMNS: &str =
    "a.job_id, a.attempt, a.worker_id, a.host, a.pid, a.pgid, \
     a.pid_start_time, a.started_at, a.ended_at, a.outcome, a.exit_code, a.signal, a.error, \
     a.log_path, (SELECT w.name FROM workers w WHERE w.id = a.worker_id), a.lease";

/// Reads an [`Attempt`] from [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<Attempt> {
    let outcome: Option<String> = r.get(9)?;
    Ok(Attempt {
        job_id: r.get(0)?,
        attempt: r.get(1)?,
        worker_id: r.get(2)?,
        host: r.get(3)?,
        pid: r.get(4)?,
        pgid: r.get(5)?,
        pid_start_time: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        started_at: Timestamp(r.get(7)?),
        ended_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
        outcome: outcome.and_then(|o| o.parse::<Outcome>().ok()),
        exit_code: r.get(10)?,
        signal: r.get(11)?,
        error: r.get(12)?,
        log_path: r.get(13)?,
        worker_name: r.get(14)?,
        lease: r.get(15)?,
    })
}

/// Columns of `workers` (aliased `w`) read by [`worker_from_row`].
pub(crate) const WORKER_COLUMNS: &str =
    "w.id, w.name, w.host, w.boot_id, w.pid, w.pid_start_time, \
     w.queues, w.slots, w.state, w.jobs_done, w.jobs_failed, w.started_at, w.heartbeat_at, \
     w.stopped_at, w.stop_reason, w.version, \
     (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.worker_id = w.id), w.settings";

/// Reads a [`WorkerRecord`] from [`WORKER_COLUMNS`].
pub(crate) fn worker_from_row(r: &Row<'_>) -> rusqlite::Result<WorkerRecord> {
    let queues: String = r.get(6)?;
    let state: String = r.get(8)?;
    Ok(WorkerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        host: r.get(2)?,
        boot_id: r.get(3)?,
        pid: r.get(4)?,
        pid_start_time: r.get::<_, i64>(5)? as u64,
        queues: serde_json::from_str(&queues).unwrap_or_default(),
        slots: r.get(7)?,
        state: WorkerState::parse(&state),
        jobs_done: r.get::<_, i64>(9)? as u64,
        jobs_failed: r.get::<_, i64>(10)? as u64,
        started_at: Timestamp(r.get(11)?),
        heartbeat_at: Timestamp(r.get(12)?),
        stopped_at: r.get::<_, Option<i64>>(13)?.map(Timestamp),
        stop_reason: r.get(14)?,
        version: r.get(15)?,
        running_jobs: r.get(16)?,
        settings: r.get(17)?,
    })
}
