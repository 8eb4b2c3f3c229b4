//! The hot path: claiming jobs, recording their processes, finishing attempts.

use rusqlite::{params, OptionalExtension};
use workq_core::{
    next_after_failure, ClaimedJob, FailureDecision, JobId, JobState, Outcome, Timestamp, WorkerId,
};

use super::jobs::{cancel_dependents, event, release_dependents};
use super::rows::{spec_from_row, SPEC_COLUMNS};
use super::{Durability, SqliteStore, TxErr};
use crate::{FinishOutcome, FinishRequest, Result, SpawnRecord};

pub(super) fn claim(
    s: &SqliteStore,
    worker: WorkerId,
    queues: &[String],
    limit: u32,
) -> Result<Vec<ClaimedJob>> {
    if limit == 0 || queues.is_empty() {
        return Ok(Vec::new());
    }
    let now = s.now();
    s.write(Durability::Normal, |tx| {
        claim_tx(s, tx, worker, queues, limit, now)
    })
}

/// The claim inside a caller's transaction.
pub(super) fn claim_tx(
    s: &SqliteStore,
    tx: &rusqlite::Transaction<'_>,
    worker: WorkerId,
    queues: &[String],
    limit: u32,
    now: i64,
) -> std::result::Result<Vec<ClaimedJob>, TxErr> {
    if limit == 0 || queues.is_empty() {
        return Ok(Vec::new());
    }
    let host = &s.opts.host;
    {
        // One indexed probe per queue keeps the cost independent of how many rows exist;
        // merging in Rust avoids a sort over every ready job of every queue.
        let mut candidates: Vec<(i32, i64, JobId)> = Vec::new();
        let mut paused =
            tx.prepare_cached("SELECT 1 FROM queues WHERE name = ?1 AND paused = 1")?;
        let mut probe = tx.prepare_cached(
            "SELECT priority, run_at, id FROM jobs INDEXED BY jobs_ready
             WHERE state = 'queued' AND deps_pending = 0 AND queue = ?1 AND run_at <= ?2
             ORDER BY priority DESC, run_at, id LIMIT ?3",
        )?;
        for q in queues {
            if paused.exists([q])? {
                continue;
            }
            let rows = probe.query_map(params![q, now, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            for row in rows {
                candidates.push(row?);
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        // A queue named twice yields the same rows twice; they must not take two slots.
        candidates.dedup();
        candidates.truncate(limit as usize);
        let mut take = tx.prepare_cached(&format!(
            "UPDATE jobs SET state = 'running', lease = ?2, worker_id = ?3, attempt = attempt + 1,
                 started_at = ?4, cancel_requested = 0, exit_code = NULL
             WHERE id = ?1 AND state = 'queued'
             RETURNING attempt, {SPEC_COLUMNS}"
        ))?;
        let mut record = tx.prepare_cached(
            "INSERT OR REPLACE INTO attempts (job_id, attempt, worker_id, host, lease, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut out = Vec::with_capacity(candidates.len());
        for (_, _, id) in candidates {
            let lease = s.new_lease();
            let row = take
                .query_row(params![id, lease, worker, now], |r| {
                    Ok((r.get::<_, u32>(0)?, spec_from_row(r, 1)?))
                })
                .optional()?;
            if let Some((attempt, spec)) = row {
                record.execute(params![id, attempt, worker, host, lease, now])?;
                out.push(ClaimedJob {
                    id,
                    lease,
                    attempt,
                    spec,
                });
            }
        }
        Ok(out)
    }
}

pub(super) fn record_spawn(s: &SqliteStore, spawns: &[SpawnRecord]) -> Result<()> {
    if spawns.is_empty() {
        return Ok(());
    }
    s.write(Durability::Normal, |tx| record_spawn_tx(tx, spawns))
}

/// Records spawns inside a caller's transaction.
pub(super) fn record_spawn_tx(
    tx: &rusqlite::Transaction<'_>,
    spawns: &[SpawnRecord],
) -> std::result::Result<(), TxErr> {
    {
        let mut st = tx.prepare_cached(
            "UPDATE attempts SET pid = ?3, pgid = ?4, pid_start_time = ?5, log_path = ?6
             WHERE job_id = ?1 AND lease = ?2 AND ended_at IS NULL",
        )?;
        for sp in spawns {
            st.execute(params![
                sp.job_id,
                sp.lease,
                sp.pid,
                sp.pgid,
                sp.pid_start_time as i64,
                sp.log_path
            ])?;
        }
        Ok(())
    }
}

pub(super) fn finish(
    s: &SqliteStore,
    worker: WorkerId,
    results: &[FinishRequest],
) -> Result<Vec<FinishOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let now = s.now();
    s.write(Durability::Full, |tx| {
        finish_tx(s, tx, worker, results, now)
    })
}

/// Finishes attempts inside a caller's transaction.
pub(super) fn finish_tx(
    s: &SqliteStore,
    tx: &rusqlite::Transaction<'_>,
    worker: WorkerId,
    results: &[FinishRequest],
    now: i64,
) -> std::result::Result<Vec<FinishOutcome>, TxErr> {
    let jitters: Vec<u64> = results.iter().map(|_| s.new_lease() as u64).collect();
    {
        let mut out = Vec::with_capacity(results.len());
        let mut current = tx.prepare_cached(
            "SELECT attempt, failures, retries, backoff_ms, cancel_requested FROM jobs
             WHERE id = ?1 AND lease = ?2 AND state = 'running'",
        )?;
        let mut end_attempt = tx.prepare_cached(
            "UPDATE attempts SET ended_at = ?3, outcome = ?4, exit_code = ?5, signal = ?6, error = ?7
             WHERE job_id = ?1 AND attempt = ?2",
        )?;
        let mut to_state = tx.prepare_cached(
            "UPDATE jobs SET state = ?2, finished_at = ?3, exit_code = ?4, last_error = ?5,
                 failures = ?6, lease = NULL
             WHERE id = ?1",
        )?;
        let mut requeue = tx.prepare_cached(
            "UPDATE jobs SET state = 'queued', run_at = ?2, exit_code = ?3, last_error = ?4,
                 failures = ?5, lease = NULL
             WHERE id = ?1",
        )?;
        let mut tally = tx.prepare_cached(
            "UPDATE workers SET jobs_done = jobs_done + ?2, jobs_failed = jobs_failed + ?3
             WHERE id = ?1",
        )?;
        let (mut done, mut failed) = (0i64, 0i64);
        for (r, jitter) in results.iter().zip(jitters) {
            let row: Option<(u32, u32, u32, i64, i64)> = current
                .query_row(params![r.job_id, r.lease], |q| {
                    Ok((q.get(0)?, q.get(1)?, q.get(2)?, q.get(3)?, q.get(4)?))
                })
                .optional()?;
            let Some((attempt, failures, retries, backoff_ms, cancel_requested)) = row else {
                let detail = format!(
                    "finish with outcome {} arrived after the lease moved on",
                    r.outcome
                );
                event(
                    tx,
                    now,
                    "stale",
                    Some(r.job_id),
                    Some(worker),
                    Some(&detail),
                )?;
                out.push(FinishOutcome::Stale);
                continue;
            };
            // A cancel that raced with a normal exit still reads as the user asked.
            let outcome = if cancel_requested != 0 && r.outcome != Outcome::Succeeded {
                Outcome::Cancelled
            } else {
                r.outcome
            };
            end_attempt.execute(params![
                r.job_id,
                attempt,
                now,
                outcome.as_str(),
                r.exit_code,
                r.signal,
                r.error
            ])?;
            let result = match outcome {
                Outcome::Succeeded => {
                    to_state.execute(params![
                        r.job_id,
                        "succeeded",
                        now,
                        r.exit_code,
                        None::<String>,
                        failures
                    ])?;
                    release_dependents(tx, r.job_id)?;
                    done += 1;
                    FinishOutcome::Done(JobState::Succeeded)
                }
                Outcome::Cancelled => {
                    let err = r
                        .error
                        .clone()
                        .unwrap_or_else(|| "cancelled while running".into());
                    to_state.execute(params![
                        r.job_id,
                        "cancelled",
                        now,
                        r.exit_code,
                        err,
                        failures
                    ])?;
                    cancel_dependents(tx, r.job_id, now)?;
                    failed += 1;
                    FinishOutcome::Done(JobState::Cancelled)
                }
                Outcome::Interrupted | Outcome::Lost | Outcome::Stale => {
                    requeue.execute(params![r.job_id, now, r.exit_code, r.error, failures])?;
                    FinishOutcome::Requeued(Timestamp(now))
                }
                Outcome::Failed | Outcome::Timeout | Outcome::SpawnError => {
                    let failures = failures + 1;
                    let base = std::time::Duration::from_millis(backoff_ms.max(0) as u64);
                    match next_after_failure(Timestamp(now), failures, retries, base, jitter) {
                        FailureDecision::RetryAt(at) => {
                            requeue.execute(params![
                                r.job_id,
                                at.0,
                                r.exit_code,
                                r.error,
                                failures
                            ])?;
                            FinishOutcome::Requeued(at)
                        }
                        FailureDecision::GiveUp => {
                            to_state.execute(params![
                                r.job_id,
                                "failed",
                                now,
                                r.exit_code,
                                r.error,
                                failures
                            ])?;
                            cancel_dependents(tx, r.job_id, now)?;
                            failed += 1;
                            FinishOutcome::Done(JobState::Failed)
                        }
                    }
                }
            };
            let kind = match result {
                FinishOutcome::Done(st) => st.as_str(),
                FinishOutcome::Requeued(_) => "requeued",
                FinishOutcome::Stale => "stale",
            };
            event(
                tx,
                now,
                kind,
                Some(r.job_id),
                Some(worker),
                r.error.as_deref(),
            )?;
            out.push(result);
        }
        if done + failed > 0 {
            tally.execute(params![worker, done, failed])?;
        }
        Ok(out)
    }
}

/// Records spawns, finishes attempts and claims more, in one transaction (durable when it
/// carries results).
pub(super) fn step(
    s: &SqliteStore,
    worker: WorkerId,
    spawns: &[SpawnRecord],
    results: &[FinishRequest],
    queues: &[String],
    limit: u32,
) -> Result<(Vec<FinishOutcome>, Vec<ClaimedJob>)> {
    let now = s.now();
    let durability = if results.is_empty() {
        Durability::Normal
    } else {
        Durability::Full
    };
    s.write(durability, |tx| {
        record_spawn_tx(tx, spawns)?;
        let finished = finish_tx(s, tx, worker, results, now)?;
        let claimed = claim_tx(s, tx, worker, queues, limit, now)?;
        Ok((finished, claimed))
    })
}

pub(super) fn cancel_requests(s: &SqliteStore, worker: WorkerId) -> Result<Vec<(JobId, i64)>> {
    let run = || -> rusqlite::Result<Vec<(JobId, i64)>> {
        let mut st = s.conn.prepare_cached(
            "SELECT id, lease FROM jobs INDEXED BY jobs_running
             WHERE worker_id = ?1 AND state = 'running' AND cancel_requested = 1",
        )?;
        let v = st
            .query_map([worker], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn next_run_at(s: &SqliteStore, queues: &[String]) -> Result<Option<Timestamp>> {
    let now = s.now();
    let mut best: Option<i64> = None;
    for q in queues {
        let next: Option<i64> = s
            .conn
            .prepare_cached(
                "SELECT min(run_at) FROM jobs INDEXED BY jobs_ready
                 WHERE state = 'queued' AND deps_pending = 0 AND queue = ?1 AND run_at > ?2",
            )
            .and_then(|mut st| st.query_row(params![q, now], |r| r.get(0)))
            .map_err(|e| s.err(e))?;
        if let Some(n) = next {
            best = Some(best.map_or(n, |b: i64| b.min(n)));
        }
    }
    Ok(best.map(Timestamp))
}

pub(super) fn changed(s: &SqliteStore) -> Result<bool> {
    let dv: i64 = s
        .conn
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(|e| s.err(e))?;
    let before = s.data_version.replace(dv);
    Ok(dv != before)
}
