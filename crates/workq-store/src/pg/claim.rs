//! The hot path on PostgreSQL: claiming jobs, recording their processes, finishing attempts.

use workq_core::lifecycle::{self, Tally};
use workq_core::{ClaimedJob, JobId, Timestamp, WorkerId};

use super::rows::{self, SPEC_COLUMNS};
use super::stmt::{ex, q1, qy, Cols};
use super::transitions::{self, event, Tx};
use super::{PgStore, TxErr};
use crate::{FinishOutcome, FinishRequest, Result, SpawnRecord};

/// The claim's statement: [`SPEC_COLUMNS`] qualified with the table, after id, lease, attempt.
fn claim_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| build_claim_sql(""))
}

/// The claim of given jobs: the claim's statement, limited to the ids in `$5`.
fn claim_ids_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| build_claim_sql("AND id = ANY($5)"))
}

/// The claim with `only` (more conditions on the ready jobs) added.
fn build_claim_sql(only: &str) -> String {
    let spec = SPEC_COLUMNS
        .split(", ")
        .map(|c| format!("jobs.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH next AS MATERIALIZED (
             SELECT id FROM jobs
             WHERE state = 'queued' AND deps_pending = 0 AND queue = ANY($1)
               AND run_at <= $2 {only}
               AND queue NOT IN (SELECT name FROM queues WHERE paused)
               AND EXISTS (SELECT 1 FROM workers WHERE id = $4
                   AND state NOT IN ('stopped', 'dead', 'crash-looping') FOR SHARE)
             ORDER BY priority DESC, run_at, id
             LIMIT $3 FOR UPDATE SKIP LOCKED)
         , taken AS (
             UPDATE jobs SET state = 'running', worker_id = $4, attempt = attempt + 1,
                 started_at = $2, cancel_requested = FALSE, exit_code = NULL,
                 lease = 1 + floor(random() * 9.2e18)::bigint
             FROM next WHERE jobs.id = next.id
             RETURNING jobs.id, jobs.lease, jobs.attempt, {spec})
         , started AS (
             INSERT INTO events (at, kind, job_id, worker_id, state)
             SELECT $2, 'started', id, $4, 'running' FROM taken ORDER BY id)
         SELECT * FROM taken"
    )
}

/// Claims up to `limit` ready jobs of `queues` (sorted, no duplicates) inside a transaction.
/// A claimed job whose row cannot be read fails at once instead of failing every claim.
pub(super) fn claim_tx(
    s: &PgStore,
    tx: Tx<'_, '_>,
    worker: WorkerId,
    queues: &[String],
    limit: u32,
    now: i64,
) -> std::result::Result<Vec<ClaimedJob>, TxErr> {
    let rows = qy(
        &s.stmts,
        tx,
        claim_sql(),
        &[&queues, &now, &i64::from(limit), &worker],
    )?;
    taken(s, tx, rows, worker, now)
}

/// Claims up to `limit` of the jobs `ids` that are ready in `queues` (not paused), with the
/// leases and attempt rows of any claim (ARCHITECTURE.md §4.2, §4.3): a worker limited to given jobs.
pub(super) fn claim_ids(
    s: &PgStore,
    worker: WorkerId,
    queues: &[String],
    ids: &[JobId],
    limit: u32,
) -> Result<Vec<ClaimedJob>> {
    if limit == 0 || queues.is_empty() || ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = s.now_ms();
    let qs = unique_queues(queues);
    s.write(false, |tx| {
        let rows = qy(
            &s.stmts,
            tx,
            claim_ids_sql(),
            &[&qs, &now, &i64::from(limit), &worker, &ids],
        )?;
        taken(s, tx, rows, worker, now)
    })
}

/// The claimed `rows` as jobs, each with its attempt row, in queue order; a row that cannot
/// be read fails its job at once instead of failing every claim.
fn taken(
    s: &PgStore,
    tx: Tx<'_, '_>,
    rows: Vec<postgres::Row>,
    worker: WorkerId,
    now: i64,
) -> std::result::Result<Vec<ClaimedJob>, TxErr> {
    if !rows.is_empty() {
        // The claim statement wrote a `started` event per row: listeners must hear of it.
        s.events_written.set(true);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.col("jobs", 0)?;
        let lease: i64 = r.col("jobs", 1)?;
        let attempt: i64 = r.col("jobs", 2)?;
        ex(
            &s.stmts,
            tx,
            "INSERT INTO attempts (job_id, attempt, worker_id, host, lease, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (job_id, attempt) DO UPDATE SET worker_id = $3, host = $4,
                     lease = $5, started_at = $6, ended_at = NULL, outcome = NULL, pid = NULL,
                     pgid = NULL, pid_start_time = NULL, exit_code = NULL, signal = NULL,
                     error = NULL, log_path = NULL",
            &[&id, &attempt, &worker, &s.opts.host, &lease, &now],
        )?;
        match rows::spec_from_row(&r, "jobs", 3) {
            Ok(spec) => out.push(ClaimedJob {
                id,
                lease,
                attempt: rows::u32_of(attempt),
                spec,
            }),
            Err(e) => {
                let reason = e.to_string();
                transitions::fail_unreadable(&s.stmts, tx, id, attempt, &reason, worker, now)?;
            }
        }
    }
    // The claim order is the queue order.
    out.sort_by(|a, b| {
        b.spec
            .priority
            .cmp(&a.spec.priority)
            .then(a.spec.run_at.cmp(&b.spec.run_at))
            .then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// Records spawns inside a transaction; a stale lease matches nothing.
pub(super) fn record_spawn_tx(
    s: &PgStore,
    tx: Tx<'_, '_>,
    spawns: &[SpawnRecord],
) -> std::result::Result<(), TxErr> {
    for sp in spawns {
        ex(
            &s.stmts,
            tx,
            "UPDATE attempts SET pid = $3, pgid = $4, pid_start_time = $5, log_path = $6
                 WHERE job_id = $1 AND lease = $2 AND ended_at IS NULL",
            &[
                &sp.job_id,
                &sp.lease,
                &i64::from(sp.pid),
                &i64::from(sp.pgid),
                &(sp.pid_start_time as i64),
                &sp.log_path,
            ],
        )?;
    }
    Ok(())
}

/// Finishes attempts inside a transaction: the state machine decides what each job becomes,
/// [`transitions::apply`] writes it. `jitters` holds one random value per result.
pub(super) fn finish_tx(
    s: &PgStore,
    tx: Tx<'_, '_>,
    worker: WorkerId,
    results: &[FinishRequest],
    jitters: &[u64],
    now: i64,
) -> std::result::Result<Vec<FinishOutcome>, TxErr> {
    let mut out = Vec::with_capacity(results.len());
    let (mut done, mut failed) = (0i64, 0i64);
    for (r, jitter) in results.iter().zip(jitters) {
        let Some((attempt, facts)) = transitions::running_facts(&s.stmts, tx, r.job_id, r.lease)?
        else {
            let detail = format!(
                "finish with outcome {} arrived after the lease moved on",
                r.outcome
            );
            event(
                &s.stmts,
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
        let d = lifecycle::after_attempt(
            &facts,
            r.outcome,
            r.error.as_deref(),
            Timestamp(now),
            *jitter,
        );
        transitions::apply(
            &s.stmts,
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
        ex(
            &s.stmts,
            tx,
            "UPDATE workers SET jobs_done = jobs_done + $2, jobs_failed = jobs_failed + $3 WHERE id = $1",
            &[&worker, &done, &failed],
        )?;
    }
    Ok(out)
}

/// The queues to claim from, sorted and without duplicates (a queue named twice must not take
/// two slots for one job).
fn unique_queues(queues: &[String]) -> Vec<String> {
    let mut qs = queues.to_vec();
    qs.sort();
    qs.dedup();
    qs
}

pub(super) fn claim(
    s: &PgStore,
    worker: WorkerId,
    queues: &[String],
    limit: u32,
) -> Result<Vec<ClaimedJob>> {
    if limit == 0 || queues.is_empty() {
        return Ok(Vec::new());
    }
    let now = s.now_ms();
    let qs = unique_queues(queues);
    s.write(false, |tx| claim_tx(s, tx, worker, &qs, limit, now))
}

pub(super) fn record_spawn(s: &PgStore, spawns: &[SpawnRecord]) -> Result<()> {
    if spawns.is_empty() {
        return Ok(());
    }
    s.write(false, |tx| record_spawn_tx(s, tx, spawns))
}

pub(super) fn finish(
    s: &PgStore,
    worker: WorkerId,
    results: &[FinishRequest],
) -> Result<Vec<FinishOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let now = s.now_ms();
    let jitters: Vec<u64> = results.iter().map(|_| s.new_lease() as u64).collect();
    s.write(true, |tx| finish_tx(s, tx, worker, results, &jitters, now))
}

/// Records spawns, finishes attempts and claims more, in one transaction.
pub(super) fn step(
    s: &PgStore,
    worker: WorkerId,
    spawns: &[SpawnRecord],
    results: &[FinishRequest],
    queues: &[String],
    limit: u32,
) -> Result<(Vec<FinishOutcome>, Vec<ClaimedJob>)> {
    let now = s.now_ms();
    let qs = unique_queues(queues);
    let jitters: Vec<u64> = results.iter().map(|_| s.new_lease() as u64).collect();
    s.write(!results.is_empty(), |tx| {
        if !spawns.is_empty() {
            record_spawn_tx(s, tx, spawns)?;
        }
        let finished = if results.is_empty() {
            Vec::new()
        } else {
            finish_tx(s, tx, worker, results, &jitters, now)?
        };
        let claimed = if limit == 0 || qs.is_empty() {
            Vec::new()
        } else {
            claim_tx(s, tx, worker, &qs, limit, now)?
        };
        Ok((finished, claimed))
    })
}

pub(super) fn cancel_requests(s: &PgStore, worker: WorkerId) -> Result<Vec<(JobId, i64)>> {
    s.with(|c| {
        qy(
            &s.stmts,
            c,
            "SELECT id, lease FROM jobs WHERE worker_id = $1 AND state = 'running' AND cancel_requested",
            &[&worker],
        )?
        .iter()
        .map(|r| Ok((r.col("jobs", 0)?, r.col("jobs", 1)?)))
        .collect()
    })
}

pub(super) fn next_run_at(s: &PgStore, queues: &[String]) -> Result<Option<Timestamp>> {
    let now = s.now_ms();
    s.with(|c| {
        let v: Option<i64> = q1(
            &s.stmts,
            c,
            "SELECT min(run_at) FROM jobs
             WHERE state = 'queued' AND deps_pending = 0 AND queue = ANY($1) AND run_at > $2",
            &[&queues, &now],
        )?
        .col("jobs", 0)?;
        Ok(v.map(Timestamp))
    })
}

pub(super) fn changed(s: &PgStore) -> Result<bool> {
    let n = s.change_counter()?;
    // The first call has nothing to compare with: report a change, so the caller looks once.
    Ok(s.seen_change.replace(Some(n)) != Some(n))
}
