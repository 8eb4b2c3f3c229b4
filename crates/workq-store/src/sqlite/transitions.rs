//! The SQL that applies the job state machine's decisions (workq_core::lifecycle,
//! ARCHITECTURE.md §3) to SQLite rows. Nothing here decides what a job becomes.

use rusqlite::{params, OptionalExtension, Transaction};
use workq_core::lifecycle::{Decision, Dependents, RunningFacts};
use workq_core::{JobId, WorkerId};

/// Appends one row to the event log; `state` is the job's (or worker's) state after the change.
pub(super) fn event(
    tx: &Transaction<'_>,
    at: i64,
    kind: &str,
    job: Option<JobId>,
    worker: Option<i64>,
    state: Option<&str>,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (at, kind, job_id, worker_id, state, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![at, kind, job, worker, state, detail])?;
    Ok(())
}

/// The columns [`facts_from_row`] reads, in its order.
/// Expands to the columns [`facts_from_row`] reads, in its order, so the statements that
/// read them are literals (no formatting per finished job on the hot path).
macro_rules! facts {
    () => {
        "attempt, failures, retries, backoff_ms, rescues, max_rescues, cancel_requested"
    };
}

/// A running job's attempt number and the facts the state machine needs, from [`facts!`] at
/// column `o`.
fn facts_from_row(r: &rusqlite::Row<'_>, o: usize) -> rusqlite::Result<(u32, RunningFacts)> {
    Ok((
        r.get(o)?,
        RunningFacts {
            failures: r.get(o + 1)?,
            retries: r.get(o + 2)?,
            backoff: std::time::Duration::from_millis(r.get::<_, i64>(o + 3)?.max(0) as u64),
            rescues: r.get(o + 4)?,
            max_rescues: r.get(o + 5)?,
            cancel_requested: r.get::<_, i64>(o + 6)? != 0,
        },
    ))
}

/// Job `id` if it still runs under `lease`: its attempt number and facts.
pub(super) fn running_facts(
    tx: &Transaction<'_>,
    id: JobId,
    lease: i64,
) -> rusqlite::Result<Option<(u32, RunningFacts)>> {
    tx.prepare_cached(concat!(
        "SELECT ",
        facts!(),
        " FROM jobs WHERE id = ?1 AND lease = ?2 AND state = 'running'"
    ))?
    .query_row(params![id, lease], |r| facts_from_row(r, 0))
    .optional()
}

/// Every job running on `worker`: its id, attempt number and facts.
pub(super) fn running_on(
    tx: &Transaction<'_>,
    worker: WorkerId,
) -> rusqlite::Result<Vec<(JobId, u32, RunningFacts)>> {
    tx.prepare_cached(concat!(
        "SELECT id, ",
        facts!(),
        " FROM jobs WHERE worker_id = ?1 AND state = 'running' ORDER BY id"
    ))?
    .query_map([worker], |r| {
        let (attempt, facts) = facts_from_row(r, 1)?;
        Ok((r.get(0)?, attempt, facts))
    })?
    .collect()
}

/// Writes `d` for job `id`, whose attempt `attempt` ended with `exit_code` and `signal`: the
/// attempt's end, the job's new state, its dependents and the audit event, in the caller's
/// transaction.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    tx: &Transaction<'_>,
    id: JobId,
    attempt: u32,
    d: &Decision,
    exit_code: Option<i32>,
    signal: Option<i32>,
    worker: WorkerId,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE attempts SET ended_at = ?3, outcome = ?4, exit_code = ?5, signal = ?6, error = ?7
         WHERE job_id = ?1 AND attempt = ?2 AND ended_at IS NULL",
    )?
    .execute(params![
        id,
        attempt,
        now,
        d.outcome.as_str(),
        exit_code,
        signal,
        d.attempt_error
    ])?;
    match d.run_at {
        None => tx
            .prepare_cached(
                "UPDATE jobs SET state = ?2, finished_at = ?3, exit_code = ?4, last_error = ?5,
                     failures = ?6, rescues = ?7, lease = NULL
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                d.state.as_str(),
                now,
                exit_code,
                d.last_error,
                d.failures,
                d.rescues
            ])?,
        Some(at) => tx
            .prepare_cached(
                "UPDATE jobs SET state = 'queued', run_at = ?2, exit_code = ?3, last_error = ?4,
                     failures = ?5, rescues = ?6, lease = NULL
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                at.0,
                exit_code,
                d.last_error,
                d.failures,
                d.rescues
            ])?,
    };
    match d.dependents {
        Dependents::Wait => {}
        Dependents::Release => release_dependents(tx, id, now)?,
        Dependents::Cancel => cancel_dependents(tx, id, now)?,
    }
    event(
        tx,
        now,
        d.event,
        Some(id),
        Some(worker),
        Some(d.state.as_str()),
        d.event_detail.as_deref(),
    )
}

/// Fails job `id`, just claimed as attempt `attempt`, whose row cannot be read (written by hand
/// or by another program): no retry could read it either, so it fails at once and its
/// dependents are cancelled; its counters stay as stored. It is kept, with the reason, for
/// someone to repair and retry (ARCHITECTURE.md §3).
pub(super) fn fail_unreadable(
    tx: &Transaction<'_>,
    id: JobId,
    attempt: u32,
    reason: &str,
    worker: WorkerId,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE attempts SET ended_at = ?3, outcome = 'spawn_error', error = ?4
         WHERE job_id = ?1 AND attempt = ?2 AND ended_at IS NULL",
    )?
    .execute(params![id, attempt, now, reason])?;
    tx.prepare_cached(
        "UPDATE jobs SET state = 'failed', finished_at = ?2, last_error = ?3, lease = NULL
         WHERE id = ?1",
    )?
    .execute(params![id, now, reason])?;
    cancel_dependents(tx, id, now)?;
    event(
        tx,
        now,
        "failed",
        Some(id),
        Some(worker),
        Some("failed"),
        Some(reason),
    )
}

/// Cancels every queued job that (transitively) waits on `id`, which will never succeed now,
/// with one `cancelled` event each.
pub(super) fn cancel_dependents(tx: &Transaction<'_>, id: JobId, now: i64) -> rusqlite::Result<()> {
    let mut has = tx.prepare_cached("SELECT 1 FROM deps WHERE after_id = ?1 LIMIT 1")?;
    if !has.exists([id])? {
        return Ok(());
    }
    let reason = format!("a job it depends on ({id}) did not succeed");
    let mut cancelled: Vec<JobId> = tx
        .prepare_cached(
            "WITH RECURSIVE d(id) AS (
                 SELECT job_id FROM deps WHERE after_id = ?1
                 UNION SELECT deps.job_id FROM deps JOIN d ON deps.after_id = d.id)
             UPDATE jobs SET state = 'cancelled', finished_at = ?2, last_error = ?3
             WHERE id IN (SELECT id FROM d) AND state = 'queued'
             RETURNING id",
        )?
        .query_map(params![id, now, reason], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Events in id order, as PostgreSQL writes them.
    cancelled.sort_unstable();
    for dep in cancelled {
        event(
            tx,
            now,
            "cancelled",
            Some(dep),
            None,
            Some("cancelled"),
            Some(&reason),
        )?;
    }
    Ok(())
}

/// Lets jobs waiting on `id` go once all their dependencies have succeeded; each that becomes
/// ready gets a `released` event (still queued, no longer waiting).
fn release_dependents(tx: &Transaction<'_>, id: JobId, now: i64) -> rusqlite::Result<()> {
    // Almost no job has dependents: a primary-key probe is far cheaper than the UPDATE.
    let mut has = tx.prepare_cached("SELECT 1 FROM deps WHERE after_id = ?1 LIMIT 1")?;
    if !has.exists([id])? {
        return Ok(());
    }
    let mut ready: Vec<JobId> = tx
        .prepare_cached(
            "UPDATE jobs SET deps_pending = deps_pending - 1
             WHERE id IN (SELECT job_id FROM deps WHERE after_id = ?1)
               AND state = 'queued' AND deps_pending > 0
             RETURNING id, deps_pending",
        )?
        .query_map([id], |r| Ok((r.get::<_, JobId>(0)?, r.get::<_, i64>(1)?)))?
        .filter_map(|r| match r {
            Ok((job, 0)) => Some(Ok(job)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<_>>()?;
    ready.sort_unstable();
    for job in ready {
        event(tx, now, "released", Some(job), None, Some("queued"), None)?;
    }
    Ok(())
}
