//! The Store trait on PostgreSQL: the same statements as the SQLite store, in PostgreSQL's
//! dialect, with row locks where SQLite relies on its single writer.

use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement, Transaction};
use workq_core::{
    next_after_failure, Attempt, ClaimedJob, FailureDecision, Job, JobId, JobSpec, JobState,
    Outcome, Timestamp, WorkerId, WorkerRecord, WorkerState,
};

use super::rows::{self, ATTEMPT_COLUMNS, JOB_COLUMNS, SPEC_COLUMNS, WORKER_COLUMNS};
use super::{PgStore, TxErr};
use crate::{
    CancelOutcome, Diagnosis, FinishOutcome, FinishRequest, ListFilter, OutcomeCounts, QueueStats,
    RescueKind, Rescued, Result, RetryOutcome, RunningJob, SpawnRecord, Store, StoreError,
    Submitted, WorkerRegistration,
};

type Tx<'a, 'b> = &'a mut Transaction<'b>;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Prepared statements of the current connection, by SQL text: each statement is parsed by
/// the server once per connection instead of on every call (a round trip each).
pub(crate) type Cache = std::cell::RefCell<std::collections::HashMap<String, Statement>>;

pub(crate) fn prep<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
) -> std::result::Result<Statement, postgres::Error> {
    if let Some(st) = cache.borrow().get(sql) {
        return Ok(st.clone());
    }
    let st = c.prepare(sql)?;
    let mut m = cache.borrow_mut();
    if m.len() > 256 {
        m.clear();
    }
    m.insert(sql.to_string(), st.clone());
    Ok(st)
}

pub(crate) fn ex<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> std::result::Result<u64, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.execute(&st, p)
}

pub(crate) fn qy<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> std::result::Result<Vec<Row>, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.query(&st, p)
}

pub(crate) fn qo<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> std::result::Result<Option<Row>, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.query_opt(&st, p)
}

pub(crate) fn q1<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> std::result::Result<Row, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.query_one(&st, p)
}

fn event(
    cache: &Cache,
    tx: Tx<'_, '_>,
    at: i64,
    kind: &str,
    job: Option<JobId>,
    worker: Option<i64>,
    detail: Option<&str>,
) -> std::result::Result<(), postgres::Error> {
    ex(
        cache,
        tx,
        "INSERT INTO events (at, kind, job_id, worker_id, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&at, &kind, &job, &worker, &detail],
    )?;
    Ok(())
}

fn cancel_dependents(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
    now: i64,
) -> std::result::Result<(), postgres::Error> {
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
             UNION SELECT deps.job_id FROM deps JOIN d ON deps.after_id = d.id)
         UPDATE jobs SET state = 'cancelled', finished_at = $2, last_error = $3
         WHERE id IN (SELECT id FROM d) AND state = 'queued'",
        &[&id, &now, &msg],
    )?;
    Ok(())
}

fn release_dependents(
    cache: &Cache,
    tx: Tx<'_, '_>,
    id: JobId,
) -> std::result::Result<(), postgres::Error> {
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
        "UPDATE jobs SET deps_pending = deps_pending - 1
         WHERE id IN (SELECT job_id FROM deps WHERE after_id = $1)
           AND state = 'queued' AND deps_pending > 0",
        &[&id],
    )?;
    Ok(())
}

impl PgStore {
    fn claim_tx(
        &self,
        tx: Tx<'_, '_>,
        worker: WorkerId,
        qs: &[String],
        limit: u32,
        now: i64,
        host: &str,
    ) -> std::result::Result<Vec<ClaimedJob>, TxErr> {
        let rows = qy(
            &self.stmts,
            tx,
            &format!(
                "WITH next AS MATERIALIZED (
                         SELECT id FROM jobs
                         WHERE state = 'queued' AND deps_pending = 0 AND queue = ANY($1)
                           AND run_at <= $2
                           AND queue NOT IN (SELECT name FROM queues WHERE paused)
                         ORDER BY priority DESC, run_at, id
                         LIMIT $3 FOR UPDATE SKIP LOCKED)
                     UPDATE jobs SET state = 'running', worker_id = $4, attempt = attempt + 1,
                         started_at = $2, cancel_requested = FALSE, exit_code = NULL,
                         lease = 1 + floor(random() * 9.2e18)::bigint
                     FROM next WHERE jobs.id = next.id
                     RETURNING jobs.id, jobs.lease, jobs.attempt, {}",
                SPEC_COLUMNS
                    .split(", ")
                    .map(|c| format!("jobs.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&qs, &now, &(limit as i64), &worker],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let lease: i64 = r.get(1);
            let attempt: i64 = r.get(2);
            ex(
                &self.stmts,
                tx,
                "INSERT INTO attempts (job_id, attempt, worker_id, host, lease, started_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (job_id, attempt) DO UPDATE SET worker_id = $3, host = $4,
                         lease = $5, started_at = $6, ended_at = NULL, outcome = NULL, pid = NULL,
                         pgid = NULL, pid_start_time = NULL, exit_code = NULL, signal = NULL,
                         error = NULL, log_path = NULL",
                &[&id, &attempt, &worker, &host, &lease, &now],
            )?;
            out.push(ClaimedJob {
                id,
                lease,
                attempt: attempt as u32,
                spec: rows::spec_from_row(&r, 3),
            });
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

    fn record_spawn_tx(
        &self,
        tx: Tx<'_, '_>,
        spawns: &[SpawnRecord],
    ) -> std::result::Result<(), TxErr> {
        for sp in spawns {
            ex(
                &self.stmts,
                tx,
                "UPDATE attempts SET pid = $3, pgid = $4, pid_start_time = $5, log_path = $6
                     WHERE job_id = $1 AND lease = $2 AND ended_at IS NULL",
                &[
                    &sp.job_id,
                    &sp.lease,
                    &(sp.pid as i64),
                    &(sp.pgid as i64),
                    &(sp.pid_start_time as i64),
                    &sp.log_path,
                ],
            )?;
        }
        Ok(())
    }

    fn finish_tx(
        &self,
        tx: Tx<'_, '_>,
        worker: WorkerId,
        results: &[FinishRequest],
        jitters: &[u64],
        now: i64,
    ) -> std::result::Result<Vec<FinishOutcome>, TxErr> {
        let mut out = Vec::with_capacity(results.len());
        let (mut done, mut failed) = (0i64, 0i64);
        for (r, jitter) in results.iter().zip(jitters) {
            let row = qo(
                &self.stmts,
                tx,
                "SELECT attempt, failures, retries, backoff_ms, cancel_requested FROM jobs
                     WHERE id = $1 AND lease = $2 AND state = 'running' FOR UPDATE",
                &[&r.job_id, &r.lease],
            )?;
            let Some(row) = row else {
                let detail = format!(
                    "finish with outcome {} arrived after the lease moved on",
                    r.outcome
                );
                event(
                    &self.stmts,
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
            let (attempt, failures, retries, backoff_ms, cancel_requested): (
                i64,
                i64,
                i64,
                i64,
                bool,
            ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let outcome = if cancel_requested && r.outcome != Outcome::Succeeded {
                Outcome::Cancelled
            } else {
                r.outcome
            };
            let exit = r.exit_code.map(i64::from);
            ex(&self.stmts, tx,
                    "UPDATE attempts SET ended_at = $3, outcome = $4, exit_code = $5, signal = $6, error = $7
                     WHERE job_id = $1 AND attempt = $2",
                    &[&r.job_id, &attempt, &now, &outcome.as_str(), &exit, &r.signal.map(i64::from), &r.error],
                )?;
            let to_state =
                "UPDATE jobs SET state = $2, finished_at = $3, exit_code = $4, last_error = $5,
                         failures = $6, lease = NULL WHERE id = $1";
            let requeue =
                "UPDATE jobs SET state = 'queued', run_at = $2, exit_code = $3, last_error = $4,
                         failures = $5, lease = NULL WHERE id = $1";
            let result = match outcome {
                Outcome::Succeeded => {
                    ex(
                        &self.stmts,
                        tx,
                        to_state,
                        &[
                            &r.job_id,
                            &"succeeded",
                            &now,
                            &exit,
                            &None::<String>,
                            &failures,
                        ],
                    )?;
                    release_dependents(&self.stmts, tx, r.job_id)?;
                    done += 1;
                    FinishOutcome::Done(JobState::Succeeded)
                }
                Outcome::Cancelled => {
                    let err = r
                        .error
                        .clone()
                        .unwrap_or_else(|| "cancelled while running".into());
                    ex(
                        &self.stmts,
                        tx,
                        to_state,
                        &[&r.job_id, &"cancelled", &now, &exit, &Some(err), &failures],
                    )?;
                    cancel_dependents(&self.stmts, tx, r.job_id, now)?;
                    failed += 1;
                    FinishOutcome::Done(JobState::Cancelled)
                }
                Outcome::Interrupted | Outcome::Lost | Outcome::Stale => {
                    ex(
                        &self.stmts,
                        tx,
                        requeue,
                        &[&r.job_id, &now, &exit, &r.error, &failures],
                    )?;
                    FinishOutcome::Requeued(Timestamp(now))
                }
                Outcome::Failed | Outcome::Timeout | Outcome::SpawnError => {
                    let failures = failures + 1;
                    let base = std::time::Duration::from_millis(backoff_ms.max(0) as u64);
                    match next_after_failure(
                        Timestamp(now),
                        failures as u32,
                        retries as u32,
                        base,
                        *jitter,
                    ) {
                        FailureDecision::RetryAt(at) => {
                            ex(
                                &self.stmts,
                                tx,
                                requeue,
                                &[&r.job_id, &at.0, &exit, &r.error, &failures],
                            )?;
                            FinishOutcome::Requeued(at)
                        }
                        FailureDecision::GiveUp => {
                            ex(
                                &self.stmts,
                                tx,
                                to_state,
                                &[&r.job_id, &"failed", &now, &exit, &r.error, &failures],
                            )?;
                            cancel_dependents(&self.stmts, tx, r.job_id, now)?;
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
                &self.stmts,
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
            ex(&self.stmts, tx,
                    "UPDATE workers SET jobs_done = jobs_done + $2, jobs_failed = jobs_failed + $3 WHERE id = $1",
                    &[&worker, &done, &failed],
                )?;
        }
        Ok(out)
    }

    fn submit_tx(
        &self,
        tx: Tx<'_, '_>,
        jobs: &[JobSpec],
        now: i64,
    ) -> std::result::Result<Vec<Submitted>, TxErr> {
        let mut out = Vec::with_capacity(jobs.len());
        for spec in jobs {
            if let Some(key) = &spec.idempotency_key {
                if let Some(r) = qo(
                    &self.stmts,
                    tx,
                    "SELECT id FROM jobs WHERE idempotency_key = $1",
                    &[key],
                )? {
                    out.push(Submitted::Existing(r.get(0)));
                    continue;
                }
            }
            if let Some(key) = &spec.unique_key {
                if let Some(r) = qo(
                    &self.stmts,
                    tx,
                    "SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('queued', 'running')",
                    &[key],
                )? {
                    out.push(Submitted::Duplicate(r.get(0)));
                    continue;
                }
            }
            let mut deps = spec.after.clone();
            deps.sort_unstable();
            deps.dedup();
            let mut pending = 0i64;
            for dep in &deps {
                let state: Option<String> = qo(
                    &self.stmts,
                    tx,
                    "SELECT state FROM jobs WHERE id = $1 FOR SHARE",
                    &[dep],
                )?
                .map(|r| r.get(0));
                match state.as_deref() {
                    None => {
                        return Err(TxErr::Store(StoreError::NotFound(format!(
                            "job {dep} (given to --after)"
                        ))))
                    }
                    Some("succeeded") => {}
                    Some(st @ ("failed" | "cancelled")) => {
                        return Err(TxErr::Store(StoreError::Conflict(format!(
                            "job {dep} has already {st}, so a job after it would never run: retry {dep} first (workq retry {dep}) or drop --after {dep}"
                        ))))
                    }
                    Some(_) => pending += 1,
                }
            }
            let argv = serde_json::to_string(&spec.argv).unwrap_or_else(|_| "[]".into());
            let container = spec
                .container
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok());
            // A concurrent submit of the same key or idempotency key loses quietly here and is
            // answered from the row that won.
            let inserted = qo(&self.stmts, tx,
                "INSERT INTO jobs (queue, state, priority, run_at, deps_pending, argv, env, cwd, labels,
                     retries, backoff_ms, timeout_ms, kill_grace_ms, unique_key, idempotency_key,
                     max_rescues, created_at, container)
                 VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                 ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &spec.queue,
                    &(spec.priority as i64),
                    &spec.run_at.map(|t| t.0).unwrap_or(now),
                    &pending,
                    &argv,
                    &rows::map_json(&spec.env),
                    &spec.cwd,
                    &rows::map_json(&spec.labels),
                    &(spec.retries as i64),
                    &(spec.backoff.as_millis() as i64),
                    &spec.timeout.map(|d| d.as_millis() as i64),
                    &(spec.kill_grace.as_millis() as i64),
                    &spec.unique_key,
                    &spec.idempotency_key,
                    &(spec.max_rescues as i64),
                    &now,
                    &container,
                ],
            )?;
            let Some(row) = inserted else {
                if let Some(key) = &spec.idempotency_key {
                    if let Some(r) = qo(
                        &self.stmts,
                        tx,
                        "SELECT id FROM jobs WHERE idempotency_key = $1",
                        &[key],
                    )? {
                        out.push(Submitted::Existing(r.get(0)));
                        continue;
                    }
                }
                if let Some(key) = &spec.unique_key {
                    if let Some(r) = qo(&self.stmts, tx,
                        "SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('queued', 'running')",
                        &[key],
                    )? {
                        out.push(Submitted::Duplicate(r.get(0)));
                        continue;
                    }
                }
                return Err(TxErr::Store(StoreError::Conflict(
                    "the job collided with a concurrent submit; try again".into(),
                )));
            };
            let id: i64 = row.get(0);
            for dep in &deps {
                ex(
                    &self.stmts,
                    tx,
                    "INSERT INTO deps (after_id, job_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[dep, &id],
                )?;
            }
            event(&self.stmts, tx, now, "submitted", Some(id), None, None)?;
            out.push(Submitted::Created(id));
        }
        Ok(out)
    }

    fn rescue_tx(
        &self,
        tx: Tx<'_, '_>,
        worker: WorkerId,
        reason: &str,
        how: RescueKind,
        now: i64,
    ) -> std::result::Result<Vec<Rescued>, TxErr> {
        let (outcome, end_state) = match how {
            RescueKind::Lost => (Outcome::Lost, WorkerState::Dead),
            RescueKind::Interrupted => (Outcome::Interrupted, WorkerState::Stopped),
        };
        let running = qy(
            &self.stmts,
            tx,
            "SELECT id, attempt, rescues, max_rescues, cancel_requested FROM jobs
             WHERE worker_id = $1 AND state = 'running' ORDER BY id FOR UPDATE",
            &[&worker],
        )?;
        let mut out = Vec::with_capacity(running.len());
        for r in running {
            let (id, attempt, rescues, max_rescues, cancel_requested): (i64, i64, i64, i64, bool) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            let error = match how {
                RescueKind::Lost => format!("its worker {worker} died ({reason})"),
                RescueKind::Interrupted => {
                    format!("interrupted: its worker {worker} was stopped ({reason}); queued again")
                }
            };
            ex(
                &self.stmts,
                tx,
                "UPDATE attempts SET ended_at = $3, outcome = $5, error = $4
                 WHERE job_id = $1 AND attempt = $2 AND ended_at IS NULL",
                &[&id, &attempt, &now, &error, &outcome.as_str()],
            )?;
            let new_state = if cancel_requested {
                ex(
                    &self.stmts,
                    tx,
                    "UPDATE jobs SET state = 'cancelled', finished_at = $2, lease = NULL,
                         last_error = 'cancelled; its worker died while stopping it'
                     WHERE id = $1",
                    &[&id, &now],
                )?;
                cancel_dependents(&self.stmts, tx, id, now)?;
                JobState::Cancelled
            } else if how == RescueKind::Interrupted {
                ex(
                    &self.stmts,
                    tx,
                    "UPDATE jobs SET state = 'queued', run_at = $2, lease = NULL, last_error = $3
                     WHERE id = $1",
                    &[&id, &now, &error],
                )?;
                JobState::Queued
            } else if rescues + 1 > max_rescues {
                let msg = format!(
                    "lost {} times (its worker died each time); not requeued again so a job that kills its worker cannot loop forever",
                    rescues + 1
                );
                ex(
                    &self.stmts,
                    tx,
                    "UPDATE jobs SET state = 'failed', finished_at = $2, lease = NULL,
                         rescues = rescues + 1, last_error = $3
                     WHERE id = $1",
                    &[&id, &now, &msg],
                )?;
                cancel_dependents(&self.stmts, tx, id, now)?;
                JobState::Failed
            } else {
                ex(
                    &self.stmts,
                    tx,
                    "UPDATE jobs SET state = 'queued', run_at = $2, lease = NULL,
                         rescues = rescues + 1, last_error = $3
                     WHERE id = $1",
                    &[&id, &now, &error],
                )?;
                JobState::Queued
            };
            event(
                &self.stmts,
                tx,
                now,
                "rescued",
                Some(id),
                Some(worker),
                Some(new_state.as_str()),
            )?;
            out.push(Rescued {
                job_id: id,
                attempt: attempt as u32,
                new_state,
            });
        }
        let changed = ex(
            &self.stmts,
            tx,
            "UPDATE workers SET state = $4, stopped_at = $2, stop_reason = $3
             WHERE id = $1 AND state NOT IN ('stopped', 'dead', 'crash-looping')",
            &[&worker, &now, &reason, &end_state.as_str()],
        )?;
        if changed > 0 {
            let kind = match how {
                RescueKind::Lost => "worker_dead",
                RescueKind::Interrupted => "worker_stopped",
            };
            event(&self.stmts, tx, now, kind, None, Some(worker), Some(reason))?;
        }
        Ok(out)
    }
}

impl Store for PgStore {
    fn now(&self) -> Timestamp {
        self.opts.clock.now()
    }

    fn submit(&self, jobs: &[JobSpec]) -> Result<Vec<Submitted>> {
        let now = self.now_ms();
        self.write(true, |tx| self.submit_tx(tx, jobs, now))
    }

    fn claim(&self, worker: WorkerId, queues: &[String], limit: u32) -> Result<Vec<ClaimedJob>> {
        if limit == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let host = self.opts.host.clone();
        let mut qs = queues.to_vec();
        qs.sort();
        qs.dedup();
        self.write(false, |tx| {
            self.claim_tx(tx, worker, &qs, limit, now, &host)
        })
    }

    fn record_spawn(&self, spawns: &[SpawnRecord]) -> Result<()> {
        if spawns.is_empty() {
            return Ok(());
        }
        self.write(false, |tx| self.record_spawn_tx(tx, spawns))
    }

    fn finish(&self, worker: WorkerId, results: &[FinishRequest]) -> Result<Vec<FinishOutcome>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let jitters: Vec<u64> = results.iter().map(|_| self.new_lease() as u64).collect();
        self.write(true, |tx| {
            self.finish_tx(tx, worker, results, &jitters, now)
        })
    }

    fn step(
        &self,
        worker: WorkerId,
        spawns: &[SpawnRecord],
        results: &[FinishRequest],
        queues: &[String],
        limit: u32,
    ) -> Result<(Vec<FinishOutcome>, Vec<ClaimedJob>)> {
        let now = self.now_ms();
        let host = self.opts.host.clone();
        let mut qs = queues.to_vec();
        qs.sort();
        qs.dedup();
        let jitters: Vec<u64> = results.iter().map(|_| self.new_lease() as u64).collect();
        self.write(!results.is_empty(), |tx| {
            if !spawns.is_empty() {
                self.record_spawn_tx(tx, spawns)?;
            }
            let finished = if results.is_empty() {
                Vec::new()
            } else {
                self.finish_tx(tx, worker, results, &jitters, now)?
            };
            let claimed = if limit == 0 || qs.is_empty() {
                Vec::new()
            } else {
                self.claim_tx(tx, worker, &qs, limit, now, &host)?
            };
            Ok((finished, claimed))
        })
    }

    fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.with(|c| {
            Ok(qo(
                &self.stmts,
                c,
                &format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1"),
                &[&id],
            )?
            .map(|r| rows::job_from_row(&r)))
        })
    }

    fn attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        self.with(|c| {
            Ok(qy(&self.stmts, c,
                &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.job_id = $1 ORDER BY a.attempt"),
                &[&id],
            )?
            .iter()
            .map(rows::attempt_from_row)
            .collect())
        })
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<Job>> {
        let now = self.now_ms();
        self.with(|c| {
            let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE TRUE");
            let mut texts: Vec<String> = Vec::new();
            let mut ints: Vec<i64> = Vec::new();
            // Parameters are collected as text and bigint and cast in SQL, so one slice serves.
            let mut params: Vec<(bool, usize)> = Vec::new();
            let text_param = |sql: &mut String,
                              v: String,
                              texts: &mut Vec<String>,
                              params: &mut Vec<(bool, usize)>| {
                texts.push(v);
                params.push((true, texts.len() - 1));
                sql.push_str(&format!("${}", params.len()));
            };
            if !f.states.is_empty() {
                sql.push_str(" AND j.state IN (");
                for (i, st) in f.states.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    text_param(&mut sql, st.as_str().to_string(), &mut texts, &mut params);
                }
                sql.push(')');
            }
            if f.scheduled_only {
                ints.push(now);
                params.push((false, ints.len() - 1));
                sql.push_str(&format!(
                    " AND j.state = 'queued' AND j.run_at > ${}",
                    params.len()
                ));
            }
            if let Some(q) = &f.queue {
                sql.push_str(" AND j.queue = ");
                text_param(&mut sql, q.clone(), &mut texts, &mut params);
            }
            for (k, v) in &f.labels {
                sql.push_str(" AND (j.labels::jsonb ->> ");
                text_param(&mut sql, k.clone(), &mut texts, &mut params);
                sql.push_str(") = ");
                text_param(&mut sql, v.clone(), &mut texts, &mut params);
            }
            if !f.ids.is_empty() {
                sql.push_str(" AND j.id IN (");
                for (i, id) in f.ids.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    ints.push(*id);
                    params.push((false, ints.len() - 1));
                    sql.push_str(&format!("${}", params.len()));
                }
                sql.push(')');
            }
            sql.push_str(" ORDER BY j.id DESC");
            if f.limit > 0 {
                sql.push_str(&format!(" LIMIT {}", f.limit));
            }
            let args: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|(is_text, i)| {
                    if *is_text {
                        &texts[*i] as &(dyn ToSql + Sync)
                    } else {
                        &ints[*i] as &(dyn ToSql + Sync)
                    }
                })
                .collect();
            Ok(qy(&self.stmts, c, &sql, &args)?
                .iter()
                .map(rows::job_from_row)
                .collect())
        })
    }

    fn count_unfinished(&self, queue: Option<&str>) -> Result<u64> {
        self.with(|c| {
            let n: i64 = q1(
                &self.stmts,
                c,
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')
                     AND ($1::text IS NULL OR queue = $1)",
                &[&queue],
            )?
            .get(0);
            Ok(n as u64)
        })
    }

    fn cancel(&self, ids: &[JobId]) -> Result<Vec<CancelOutcome>> {
        let now = self.now_ms();
        self.write(true, |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                let row = qo(
                    &self.stmts,
                    tx,
                    "SELECT state, worker_id FROM jobs WHERE id = $1 FOR UPDATE",
                    &[&id],
                )?;
                let Some(row) = row else {
                    out.push(CancelOutcome::NotFound(id));
                    continue;
                };
                let state: String = row.get(0);
                let worker: Option<i64> = row.get(1);
                match state.as_str() {
                    "queued" => {
                        ex(
                            &self.stmts,
                            tx,
                            "UPDATE jobs SET state = 'cancelled', finished_at = $2,
                                 last_error = 'cancelled before it started' WHERE id = $1",
                            &[&id, &now],
                        )?;
                        cancel_dependents(&self.stmts, tx, id, now)?;
                        event(&self.stmts, tx, now, "cancelled", Some(id), None, None)?;
                        out.push(CancelOutcome::Cancelled(id));
                    }
                    "running" => {
                        ex(
                            &self.stmts,
                            tx,
                            "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1",
                            &[&id],
                        )?;
                        event(
                            &self.stmts,
                            tx,
                            now,
                            "cancel_requested",
                            Some(id),
                            worker,
                            None,
                        )?;
                        out.push(CancelOutcome::Requested(id, worker));
                    }
                    other => out.push(CancelOutcome::AlreadyDone(
                        id,
                        other.parse().unwrap_or(JobState::Cancelled),
                    )),
                }
            }
            Ok(out)
        })
    }

    fn retry(&self, ids: &[JobId]) -> Result<Vec<RetryOutcome>> {
        let now = self.now_ms();
        self.write(true, |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                let state: Option<String> = qo(&self.stmts, tx, "SELECT state FROM jobs WHERE id = $1 FOR UPDATE", &[&id])?
                    .map(|r| r.get(0));
                match state.as_deref() {
                    None => out.push(RetryOutcome::NotFound(id)),
                    Some("failed") | Some("cancelled") => {
                        ex(&self.stmts, tx,
                            "UPDATE jobs SET state = 'queued', run_at = $2, failures = 0, rescues = 0,
                                 cancel_requested = FALSE, finished_at = NULL, lease = NULL,
                                 deps_pending = (SELECT count(*) FROM deps d JOIN jobs a ON a.id = d.after_id
                                     WHERE d.job_id = jobs.id AND a.state <> 'succeeded'),
                                 unique_key = CASE WHEN EXISTS (SELECT 1 FROM jobs o
                                     WHERE o.unique_key = jobs.unique_key AND o.id <> jobs.id
                                       AND o.state IN ('queued', 'running')) THEN NULL ELSE unique_key END
                             WHERE id = $1",
                            &[&id, &now],
                        )?;
                        event(&self.stmts, tx, now, "retried", Some(id), None, None)?;
                        out.push(RetryOutcome::Requeued(id));
                    }
                    Some(other) => out.push(RetryOutcome::NotRetryable(id, other.parse().unwrap_or(JobState::Queued))),
                }
            }
            Ok(out)
        })
    }

    fn failed_ids(&self, queue: Option<&str>) -> Result<Vec<JobId>> {
        self.with(|c| {
            Ok(qy(&self.stmts, c,
                "SELECT id FROM jobs WHERE state = 'failed' AND ($1::text IS NULL OR queue = $1) ORDER BY id",
                &[&queue],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn cancel_requests(&self, worker: WorkerId) -> Result<Vec<(JobId, i64)>> {
        self.with(|c| {
            Ok(qy(&self.stmts, c,
                "SELECT id, lease FROM jobs WHERE worker_id = $1 AND state = 'running' AND cancel_requested",
                &[&worker],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn next_run_at(&self, queues: &[String]) -> Result<Option<Timestamp>> {
        let now = self.now_ms();
        self.with(|c| {
            let v: Option<i64> = q1(&self.stmts, c,
                    "SELECT min(run_at) FROM jobs
                     WHERE state = 'queued' AND deps_pending = 0 AND queue = ANY($1) AND run_at > $2",
                    &[&queues, &now],
                )?
                .get(0);
            Ok(v.map(Timestamp))
        })
    }

    fn changed(&self) -> Result<bool> {
        let n = self.change_counter()?;
        // The first call has nothing to compare with: report a change, so the caller looks once.
        Ok(self.seen_change.replace(Some(n)) != Some(n))
    }

    fn register_worker(&self, reg: &WorkerRegistration) -> Result<WorkerId> {
        let now = self.now_ms();
        let queues = serde_json::to_string(&reg.queues).unwrap_or_else(|_| "[]".into());
        self.write(false, |tx| {
            let id: i64 = q1(&self.stmts, tx,
                    "INSERT INTO workers (name, host, boot_id, pid, pid_start_time, queues, slots, state,
                         started_at, heartbeat_at, version, settings)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'starting', $8, $8, $9, $10) RETURNING id",
                    &[
                        &reg.name,
                        &reg.host,
                        &reg.boot_id,
                        &(reg.pid as i64),
                        &(reg.pid_start_time as i64),
                        &queues,
                        &(reg.slots as i64),
                        &now,
                        &reg.version,
                        &reg.settings,
                    ],
                )?
                .get(0);
            event(&self.stmts, tx, now, "worker_started", None, Some(id), Some(&reg.name))?;
            Ok(id)
        })
    }

    fn heartbeat(&self, worker: WorkerId, state: WorkerState) -> Result<()> {
        let now = self.now_ms();
        self.with(|c| {
            ex(
                &self.stmts,
                c,
                "UPDATE workers SET heartbeat_at = $2, state = $3
                 WHERE id = $1 AND state NOT IN ('stopped', 'dead', 'crash-looping')",
                &[&worker, &now, &state.as_str()],
            )?;
            Ok(())
        })
    }

    fn worker_stopped(&self, worker: WorkerId, reason: &str) -> Result<()> {
        let now = self.now_ms();
        self.write(false, |tx| {
            ex(&self.stmts, tx,
                "UPDATE workers SET state = 'stopped', stopped_at = $2, stop_reason = $3, heartbeat_at = $2
                 WHERE id = $1",
                &[&worker, &now, &reason],
            )?;
            event(&self.stmts, tx, now, "worker_stopped", None, Some(worker), Some(reason))?;
            Ok(())
        })
    }

    fn workers(&self, include_ended: bool) -> Result<Vec<WorkerRecord>> {
        self.with(|c| {
            let sql = if include_ended {
                format!("SELECT {WORKER_COLUMNS} FROM workers w ORDER BY w.id")
            } else {
                format!(
                    "SELECT {WORKER_COLUMNS} FROM workers w
                     WHERE w.state NOT IN ('stopped', 'dead', 'crash-looping') ORDER BY w.id"
                )
            };
            Ok(qy(&self.stmts, c, &sql, &[])?
                .iter()
                .map(rows::worker_from_row)
                .collect())
        })
    }

    fn running_attempts(&self, worker: WorkerId) -> Result<Vec<Attempt>> {
        self.with(|c| {
            Ok(qy(
                &self.stmts,
                c,
                &format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM jobs j JOIN attempts a
                         ON a.job_id = j.id AND a.attempt = j.attempt
                     WHERE j.worker_id = $1 AND j.state = 'running'"
                ),
                &[&worker],
            )?
            .iter()
            .map(rows::attempt_from_row)
            .collect())
        })
    }

    fn rescue_worker(
        &self,
        worker: WorkerId,
        reason: &str,
        how: RescueKind,
    ) -> Result<Vec<Rescued>> {
        let now = self.now_ms();
        self.write(true, |tx| self.rescue_tx(tx, worker, reason, how, now))
    }

    fn mark_crash_looping(&self, worker: WorkerId, reason: &str) -> Result<()> {
        let now = self.now_ms();
        self.write(false, |tx| {
            ex(
                &self.stmts,
                tx,
                "UPDATE workers SET state = 'crash-looping', stop_reason = $3,
                     stopped_at = coalesce(stopped_at, $2) WHERE id = $1",
                &[&worker, &now, &reason],
            )?;
            event(
                &self.stmts,
                tx,
                now,
                "worker_crash_looping",
                None,
                Some(worker),
                Some(reason),
            )?;
            Ok(())
        })
    }

    fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        self.write(false, |tx| {
            Ok(ex(&self.stmts, tx,
                "DELETE FROM workers
                 WHERE stopped_at IS NOT NULL AND stopped_at < $1
                   AND state IN ('stopped', 'dead', 'crash-looping')
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.state = 'running' AND j.worker_id = workers.id)",
                &[&before.0],
            )?)
        })
    }

    fn set_worker_paused(&self, host: &str, name: &str, paused: bool) -> Result<()> {
        let now = self.now_ms();
        self.write(true, |tx| {
            ex(&self.stmts, tx,
                "INSERT INTO worker_controls (host, name, paused, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (host, name) DO UPDATE SET paused = $3, updated_at = $4",
                &[&host, &name, &paused, &now],
            )?;
            let kind = if paused { "worker_paused" } else { "worker_resumed" };
            event(&self.stmts, tx, now, kind, None, None, Some(name))?;
            Ok(())
        })
    }

    fn worker_paused(&self, host: &str, name: &str) -> Result<bool> {
        self.with(|c| {
            Ok(qo(
                &self.stmts,
                c,
                "SELECT paused FROM worker_controls WHERE host = $1 AND name = $2",
                &[&host, &name],
            )?
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false))
        })
    }

    fn running_jobs(&self) -> Result<Vec<RunningJob>> {
        self.with(|c| {
            Ok(qy(&self.stmts, c,
                "SELECT j.id, j.attempt, a.lease, j.worker_id, a.started_at, j.timeout_ms, j.kill_grace_ms
                 FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt
                 WHERE j.state = 'running'",
                &[],
            )?
            .iter()
            .map(|r| RunningJob {
                job_id: r.get(0),
                attempt: r.get::<_, i64>(1) as u32,
                lease: r.get(2),
                worker_id: r.get(3),
                started_at: Timestamp(r.get(4)),
                timeout: r
                    .get::<_, Option<i64>>(5)
                    .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
                kill_grace: std::time::Duration::from_millis(r.get::<_, i64>(6).max(0) as u64),
            })
            .collect())
        })
    }

    fn worker_outcomes(&self, worker: WorkerId, since: Timestamp) -> Result<OutcomeCounts> {
        self.with(|c| {
            let mut counts = OutcomeCounts::default();
            for r in qy(&self.stmts, c,
                "SELECT outcome, count(*) FROM attempts WHERE worker_id = $1 AND ended_at >= $2 GROUP BY outcome",
                &[&worker, &since.0],
            )? {
                let outcome: Option<String> = r.get(0);
                let n = r.get::<_, i64>(1) as u64;
                match outcome.and_then(|o| o.parse::<Outcome>().ok()) {
                    Some(Outcome::Succeeded) => counts.succeeded += n,
                    Some(o) if o.counts_as_failure() => counts.failed += n,
                    _ => counts.other += n,
                }
            }
            Ok(counts)
        })
    }

    fn store_id(&self) -> Result<String> {
        self.with(|c| {
            Ok(q1(
                &self.stmts,
                c,
                "SELECT value FROM store_info WHERE key = 'store_id'",
                &[],
            )?
            .get(0))
        })
    }

    fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        let now = self.now_ms();
        self.with(|c| {
            let mut out: Vec<QueueStats> = Vec::new();
            for r in qy(
                &self.stmts,
                c,
                "SELECT queue, state, n, dur_sum, dur_n FROM queue_counts WHERE n > 0 ORDER BY queue",
                &[],
            )? {
                let queue: String = r.get(0);
                let state: String = r.get(1);
                let n = r.get::<_, i64>(2).max(0) as u64;
                let i = match out.iter().position(|q| q.queue == queue) {
                    Some(i) => i,
                    None => {
                        out.push(QueueStats {
                            queue,
                            ..Default::default()
                        });
                        out.len() - 1
                    }
                };
                let q = &mut out[i];
                match state.as_str() {
                    "queued" => q.queued = n,
                    "running" => q.running = n,
                    "succeeded" => {
                        q.succeeded = n;
                        let (sum, cnt): (i64, i64) = (r.get(3), r.get(4));
                        q.mean_duration_ms = (cnt > 0).then(|| sum as f64 / cnt as f64);
                    }
                    "failed" => q.failed = n,
                    "cancelled" => q.cancelled = n,
                    _ => {}
                }
            }
            for q in out.iter_mut() {
                if q.queued > 0 {
                    let n: i64 = q1(
                        &self.stmts,
                        c,
                        "SELECT count(*) FROM jobs
                         WHERE state = 'queued' AND run_at > created_at AND queue = $1 AND run_at > $2",
                        &[&q.queue, &now],
                    )?
                    .get(0);
                    q.scheduled = (n.max(0) as u64).min(q.queued);
                    q.queued -= q.scheduled;
                }
            }
            for r in qy(&self.stmts, c, "SELECT name FROM queues WHERE paused ORDER BY name", &[])? {
                let name: String = r.get(0);
                match out.iter_mut().find(|q| q.queue == name) {
                    Some(q) => q.paused = true,
                    None => out.push(QueueStats {
                        queue: name,
                        paused: true,
                        ..Default::default()
                    }),
                }
            }
            Ok(out)
        })
    }

    fn jobs_with_unique_keys(&self, keys: &[String]) -> Result<Vec<(String, JobId, JobState)>> {
        self.with(|c| {
            let mut out = Vec::new();
            for k in keys {
                if let Some(r) = qo(
                    &self.stmts,
                    c,
                    "SELECT id, state FROM jobs
                     WHERE unique_key = $1 AND state IN ('queued', 'running', 'succeeded')
                     ORDER BY id DESC LIMIT 1",
                    &[k],
                )? {
                    let state: String = r.get(1);
                    if let Ok(st) = state.parse::<JobState>() {
                        out.push((k.clone(), r.get(0), st));
                    }
                }
            }
            Ok(out)
        })
    }

    fn purge(&self, before: Timestamp, states: &[JobState], limit: u32) -> Result<crate::Purged> {
        let states: Vec<String> = states
            .iter()
            .filter(|st| st.is_terminal())
            .map(|st| st.as_str().to_string())
            .collect();
        if states.is_empty() || limit == 0 {
            return Ok(crate::Purged::default());
        }
        self.write(false, |tx| {
            let rows = qy(
                &self.stmts,
                tx,
                "DELETE FROM jobs WHERE id IN (
                     SELECT id FROM jobs
                     WHERE finished_at IS NOT NULL AND finished_at < $1 AND state = ANY($2)
                     ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &[&before.0, &states, &(limit as i64)],
            )?;
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let logs = qy(
                &self.stmts,
                tx,
                "DELETE FROM attempts WHERE job_id = ANY($1) RETURNING log_path",
                &[&ids],
            )?;
            ex(
                &self.stmts,
                tx,
                "DELETE FROM deps WHERE after_id = ANY($1) OR job_id = ANY($1)",
                &[&ids],
            )?;
            ex(
                &self.stmts,
                tx,
                "DELETE FROM events WHERE id IN
                     (SELECT id FROM events WHERE at < $1 ORDER BY id LIMIT $2)",
                &[&before.0, &(limit as i64 * 8)],
            )?;
            Ok(crate::Purged {
                jobs: ids.len() as u64,
                log_files: logs
                    .iter()
                    .filter_map(|r| r.get::<_, Option<String>>(0))
                    .collect(),
            })
        })
    }

    fn subscribe(&self, on_change: Box<dyn Fn() + Send>) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(self.listen(on_change)))
    }

    fn shared_across_hosts(&self) -> bool {
        true
    }

    fn diagnose(&self) -> Result<Diagnosis> {
        self.with(|c| {
            let version: i64 = q1(
                &self.stmts,
                c,
                "SELECT coalesce(max(version), 0) FROM meta",
                &[],
            )?
            .get(0);
            Ok(Diagnosis {
                backend: "postgres".into(),
                location: self.display.clone(),
                schema_version: version,
                journal_mode: None,
                network_fs: false,
                integrity: "ok".into(),
            })
        })
    }
}
