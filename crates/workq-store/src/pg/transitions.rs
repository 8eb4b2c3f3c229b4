//! The SQL that applies the job state machine's decisions (workq_core::lifecycle,
//! ARCHITECTURE.md §3) to PostgreSQL rows. Nothing here decides what a job becomes.

use postgres::{Row, Transaction};
use workq_core::lifecycle::{Decision, Dependents, RunningFacts};
use workq_core::{JobId, WorkerId};

use super::rows::{ms, u32_of};
use super::stmt::{ex, qo, qy, Cache, Cols};
use super::TxErr;

/// The transaction every write runs in.
pub(crate) type Tx<'a, 'b> = &'a mut Transaction<'b>;

/// Appends one row to the event log; `state` is the job's (or worker's) state after the change.
#[allow(clippy::too_many_arguments)]
pub(crate) fn event(
    cache: &Cache,
    tx: Tx<'_, '_>,
    at: i64,
    kind: &str,
    job: Option<JobId>,
    worker: Option<i64>,
    state: Option<&str>,
    detail: Option<&str>,
) -> Result<(), postgres::Error> {
    ex(
        cache,
        tx,
        "INSERT INTO events (at, kind, job_id, worker_id, state, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&at, &kind, &job, &worker, &state, &detail],
    )?;
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
fn facts_from_row(r: &Row, o: usize) -> Result<(u32, RunningFacts), TxErr> {
    const T: &str = "jobs";
    Ok((
        u32_of(r.col(T, o)?),
        RunningFacts {
            failures: u32_of(r.col(T, o + 1)?),
            retries: u32_of(r.col(T, o + 2)?),
            backoff: ms(r.col(T, o + 3)?),
            rescues: u32_of(r.col(T, o + 4)?),
            max_rescues: u32_of(r.col(T, o + 5)?),
            cancel_requested: r.col(T, o + 6)?,
        },
    ))
}

/// Job `id` if it still runs under `lease`, locked: its attempt number and facts.
pub(crate) fn running_facts(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
    lease: i64,
) -> Result<Option<(u32, RunningFacts)>, TxErr> {
    qo(
        cache,
        tx,
        concat!(
            "SELECT ",
            facts!(),
            " FROM jobs WHERE id = $1 AND lease = $2 AND state = 'running' FOR UPDATE"
        ),
        &[&id, &lease],
    )?
    .map(|r| facts_from_row(&r, 0))
    .transpose()
}

/// Every job running on `worker`, locked: its id, attempt number and facts.
pub(crate) fn running_on(
    cache: &Cache,
    tx: Tx<'_, '_>,
    worker: WorkerId,
) -> Result<Vec<(JobId, u32, RunningFacts)>, TxErr> {
    qy(
        cache,
        tx,
        concat!(
            "SELECT id, ",
            facts!(),
            " FROM jobs WHERE worker_id = $1 AND state = 'running' ORDER BY id FOR UPDATE"
        ),
        &[&worker],
    )?
    .iter()
    .map(|r| {
        let (attempt, facts) = facts_from_row(r, 1)?;
        Ok((r.col("jobs", 0)?, attempt, facts))
    })
    .collect()
}

/// Writes `d` for job `id`, whose attempt `attempt` ended with `exit_code` and `signal`: the
/// attempt's end, the job's new state, its dependents and the audit event, in the caller's
/// transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
    attempt: u32,
    d: &Decision,
    exit_code: Option<i32>,
    signal: Option<i32>,
    worker: WorkerId,
    now: i64,
) -> Result<(), postgres::Error> {
    let exit = exit_code.map(i64::from);
    ex(
        cache,
        tx,
        "UPDATE attempts SET ended_at = $3, outcome = $4, exit_code = $5, signal = $6, error = $7
         WHERE job_id = $1 AND attempt = $2 AND ended_at IS NULL",
        &[
            &id,
            &i64::from(attempt),
            &now,
            &d.outcome.as_str(),
            &exit,
            &signal.map(i64::from),
            &d.attempt_error,
        ],
    )?;
    let (failures, rescues) = (i64::from(d.failures), i64::from(d.rescues));
    match d.run_at {
        None => ex(
            cache,
            tx,
            "UPDATE jobs SET state = $2, finished_at = $3, exit_code = $4, last_error = $5,
                 failures = $6, rescues = $7, lease = NULL
             WHERE id = $1",
            &[
                &id,
                &d.state.as_str(),
                &now,
                &exit,
                &d.last_error,
                &failures,
                &rescues,
            ],
        )?,
        Some(at) => ex(
            cache,
            tx,
            "UPDATE jobs SET state = 'queued', run_at = $2, exit_code = $3, last_error = $4,
                 failures = $5, rescues = $6, lease = NULL
             WHERE id = $1",
            &[&id, &at.0, &exit, &d.last_error, &failures, &rescues],
        )?,
    };
    match d.dependents {
        Dependents::Wait => {}
        Dependents::Release => release_dependents(cache, tx, id, now)?,
        Dependents::Cancel => cancel_dependents(cache, tx, id, now)?,
    }
    event(
        cache,
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
pub(crate) fn fail_unreadable(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
    attempt: i64,
    reason: &str,
    worker: WorkerId,
    now: i64,
) -> Result<(), postgres::Error> {
    ex(
        cache,
        tx,
        "UPDATE attempts SET ended_at = $3, outcome = 'spawn_error', error = $4
         WHERE job_id = $1 AND attempt = $2 AND ended_at IS NULL",
        &[&id, &attempt, &now, &reason],
    )?;
    ex(
        cache,
        tx,
        "UPDATE jobs SET state = 'failed', finished_at = $2, last_error = $3, lease = NULL
         WHERE id = $1",
        &[&id, &now, &reason],
    )?;
    cancel_dependents(cache, tx, id, now)?;
    event(
        cache,
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
pub(crate) fn cancel_dependents(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
    now: i64,
) -> Result<(), postgres::Error> {
    if qo(
        cache,
        tx,
        "SELECT 1 FROM deps WHERE after_id = $1 LIMIT 1",
        &[&id],
    )?
    .is_none()
    {
        return Ok(());
    }
    let msg = format!("a job it depends on ({id}) did not succeed");
    ex(
        cache,
        tx,
        "WITH RECURSIVE d(id) AS (
             SELECT job_id FROM deps WHERE after_id = $1
             UNION SELECT deps.job_id FROM deps JOIN d ON deps.after_id = d.id),
         c AS (UPDATE jobs SET state = 'cancelled', finished_at = $2, last_error = $3
               WHERE id IN (SELECT id FROM d) AND state = 'queued' RETURNING id)
         INSERT INTO events (at, kind, job_id, state, detail)
             SELECT $2, 'cancelled', id, 'cancelled', $3 FROM c ORDER BY id",
        &[&id, &now, &msg],
    )?;
    Ok(())
}

/// Lets jobs waiting on `id` go once all their dependencies have succeeded; each that becomes
/// ready gets a `released` event (still queued, no longer waiting).
fn release_dependents(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
    now: i64,
) -> Result<(), postgres::Error> {
    if qo(
        cache,
        tx,
        "SELECT 1 FROM deps WHERE after_id = $1 LIMIT 1",
        &[&id],
    )?
    .is_none()
    {
        return Ok(());
    }
    ex(
        cache,
        tx,
        "WITH r AS (UPDATE jobs SET deps_pending = deps_pending - 1
                    WHERE id IN (SELECT job_id FROM deps WHERE after_id = $1)
                      AND state = 'queued' AND deps_pending > 0
                    RETURNING id, deps_pending)
         INSERT INTO events (at, kind, job_id, state)
             SELECT $2, 'released', id, 'queued' FROM r WHERE deps_pending = 0 ORDER BY id",
        &[&id, &now],
    )?;
    Ok(())
}
