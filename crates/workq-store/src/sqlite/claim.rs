//! The hot path: claiming jobs, recording their processes, finishing attempts.

use rusqlite::{params, OptionalExtension};
use workq_core::lifecycle::{self, Tally};
use workq_core::{ClaimedJob, JobId, Timestamp, WorkerId};

use super::rows::{bad_row, spec_from_row, SPEC_COLUMNS};
use super::transitions::{self, event};
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
    if limit == 0 || queues.is_empty() || !worker_live(tx, worker)? {
        return Ok(Vec::new());
    }
    // One indexed probe per queue keeps the cost independent of how many rows exist;
    // merging in Rust avoids a sort over every ready job of every queue.
    let mut candidates: Vec<Candidate> = Vec::new();
    {
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
    }
    take(s, tx, worker, candidates, limit, now)
}

/// A ready job that may be claimed: priority, `run_at`, id.
type Candidate = (i32, i64, JobId);

/// Claims up to `limit` of the jobs `ids` that are ready in `queues` (not paused), with the
/// leases and attempt rows of any claim (ARCHITECTURE.md §4.2, §4.3): a worker limited to given jobs.
pub(super) fn claim_ids(
    s: &SqliteStore,
    worker: WorkerId,
    queues: &[String],
    ids: &[JobId],
    limit: u32,
) -> Result<Vec<ClaimedJob>> {
    if limit == 0 || queues.is_empty() || ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = s.now();
    s.write(Durability::Normal, |tx| {
        if !worker_live(tx, worker)? {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        {
            let mut paused =
                tx.prepare_cached("SELECT 1 FROM queues WHERE name = ?1 AND paused = 1")?;
            // A primary-key probe per id: the ids are few (one job for `submit --wait`).
            let mut probe = tx.prepare_cached(
                "SELECT priority, run_at, id, queue FROM jobs
                 WHERE id = ?1 AND state = 'queued' AND deps_pending = 0 AND run_at <= ?2",
            )?;
            for id in ids {
                let row = probe
                    .query_row(params![id, now], |r| {
                        Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get::<_, String>(3)?))
                    })
                    .optional()?;
                if let Some((candidate, queue)) = row {
                    if queues.contains(&queue) && !paused.exists([&queue])? {
                        candidates.push(candidate);
                    }
                }
            }
        }
        take(s, tx, worker, candidates, limit, now)
    })
}

/// Takes the best `limit` of `candidates` in queue order (priority, then `run_at`, then id),
/// each with a fresh lease and its attempt row; a row that cannot be read fails alone.
fn take(
    s: &SqliteStore,
    tx: &rusqlite::Transaction<'_>,
    worker: WorkerId,
    mut candidates: Vec<Candidate>,
    limit: u32,
    now: i64,
) -> std::result::Result<Vec<ClaimedJob>, TxErr> {
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    // A queue (or id) named twice yields the same rows twice; they must not take two slots.
    candidates.dedup();
    candidates.truncate(limit as usize);
    let host = &s.opts.host;
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
    // One `started` event per claimed job (ARCHITECTURE.md §4.8), through a cached statement.
    let mut started = tx.prepare_cached(
        "INSERT INTO events (at, kind, job_id, worker_id, state)
         VALUES (?1, 'started', ?2, ?3, 'running')",
    )?;
    let mut out = Vec::with_capacity(candidates.len());
    for (_, _, id) in candidates {
        let lease = s.new_lease();
        let row = take
            .query_row(params![id, lease, worker, now], |r| {
                Ok((r.get::<_, u32>(0)?, spec_from_row(r, 1)))
            })
            .optional()?;
        if let Some((attempt, spec)) = row {
            record.execute(params![id, attempt, worker, host, lease, now])?;
            started.execute(params![now, id, worker])?;
            match spec {
                Ok(spec) => out.push(ClaimedJob {
                    id,
                    lease,
                    attempt,
                    spec,
                }),
                Err(e) => {
                    let reason = bad_row("jobs", id, &e).to_string();
                    transitions::fail_unreadable(tx, id, attempt, &reason, worker, now)?;
                }
            }
        }
    }
    Ok(out)
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

/// Finishes attempts inside a caller's transaction: the state machine decides what each job
/// becomes, [`transitions::apply`] writes it.
pub(super) fn finish_tx(
    s: &SqliteStore,
    tx: &rusqlite::Transaction<'_>,
    worker: WorkerId,
    results: &[FinishRequest],
    now: i64,
) -> std::result::Result<Vec<FinishOutcome>, TxErr> {
    let mut out = Vec::with_capacity(results.len());
    let (mut done, mut failed) = (0i64, 0i64);
    for r in results {
        let Some((attempt, facts)) = transitions::running_facts(tx, r.job_id, r.lease)? else {
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
                None,
                Some(&detail),
            )?;
            out.push(FinishOutcome::Stale);
            continue;
        };
        let jitter = s.new_lease() as u64;
        let d = lifecycle::after_attempt(
            &facts,
            r.outcome,
            r.error.as_deref(),
            Timestamp(now),
            jitter,
        );
        transitions::apply(
            tx,
            r.job_id,
            attempt,
            &d,
            r.exit_code,
            r.signal,
            worker,
            now,
        )?;
        match d.tally {
            Tally::Done => done += 1,
            Tally::Failed => failed += 1,
            Tally::None => {}
        }
        out.push(FinishOutcome::of(&d));
    }
    if done + failed > 0 {
        tx.prepare_cached(
            "UPDATE workers SET jobs_done = jobs_done + ?2, jobs_failed = jobs_failed + ?3
             WHERE id = ?1",
        )?
        .execute(params![worker, done, failed])?;
    }
    Ok(out)
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

/// True if `worker`'s registry row is live: a worker declared dead (or stopped) claims nothing
/// under that id (ARCHITECTURE.md §4.4), since no sweep would ever rescue what it took.
fn worker_live(tx: &rusqlite::Transaction<'_>, worker: WorkerId) -> rusqlite::Result<bool> {
    tx.prepare_cached(
        "SELECT 1 FROM workers WHERE id = ?1 AND state NOT IN ('stopped', 'dead', 'crash-looping')",
    )?
    .exists([worker])
}
