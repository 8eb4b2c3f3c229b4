//! Submitting, reading, cancelling, retrying and purging jobs on PostgreSQL.

use postgres::types::ToSql;
use workq_core::lifecycle::{self, CancelAction};
use workq_core::{Attempt, Job, JobId, JobSpec, JobState, Timestamp};

use super::rows::{self, ATTEMPT_COLUMNS, JOB_COLUMNS};
use super::stmt::{ex, q1, qo, qy, Cols};
use super::transitions::{cancel_dependents, event, Tx};
use super::{PgStore, TxErr};
use crate::{CancelOutcome, ListFilter, QueueStats, Result, RetryOutcome, StoreError, Submitted};

/// The job an idempotency key or a unique key already names, if any.
fn existing(
    s: &PgStore,
    tx: Tx<'_, '_>,
    spec: &JobSpec,
) -> std::result::Result<Option<Submitted>, TxErr> {
    if let Some(key) = &spec.idempotency_key {
        if let Some(r) = qo(
            &s.stmts,
            tx,
            "SELECT id FROM jobs WHERE idempotency_key = $1",
            &[key],
        )? {
            return Ok(Some(Submitted::Existing(r.col("jobs", 0)?)));
        }
    }
    if let Some(key) = &spec.unique_key {
        if let Some(r) = qo(
            &s.stmts,
            tx,
            "SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('queued', 'running')",
            &[key],
        )? {
            return Ok(Some(Submitted::Duplicate(r.col("jobs", 0)?)));
        }
    }
    Ok(None)
}

/// How many of `deps` (sorted, no duplicates) the new job must wait for; an error when one is
/// missing or has ended without success (the state machine's rule).
fn pending_deps(s: &PgStore, tx: Tx<'_, '_>, deps: &[JobId]) -> std::result::Result<i64, TxErr> {
    let mut pending = 0i64;
    for dep in deps {
        let state = qo(
            &s.stmts,
            tx,
            "SELECT state FROM jobs WHERE id = $1 FOR SHARE",
            &[dep],
        )?
        .map(|r| state_of(&r, 0))
        .transpose()?;
        if lifecycle::check_dependency(*dep, state).map_err(StoreError::from)? {
            pending += 1;
        }
    }
    Ok(pending)
}

/// Inserts one job; `None` when a concurrent submit of the same key won the race.
fn insert(
    s: &PgStore,
    tx: Tx<'_, '_>,
    spec: &JobSpec,
    pending: i64,
    now: i64,
) -> std::result::Result<Option<JobId>, TxErr> {
    let argv = serde_json::to_string(&spec.argv).unwrap_or_else(|_| "[]".into());
    let container = spec
        .container
        .as_ref()
        .and_then(|c| serde_json::to_string(c).ok());
    let row = qo(
        &s.stmts,
        tx,
        "INSERT INTO jobs (queue, state, priority, run_at, deps_pending, argv, env, cwd, labels,
             retries, backoff_ms, timeout_ms, kill_grace_ms, unique_key, idempotency_key,
             max_rescues, created_at, container)
         VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT DO NOTHING RETURNING id",
        &[
            &spec.queue,
            &i64::from(spec.priority),
            &spec.run_at.map_or(now, |t| t.0),
            &pending,
            &argv,
            &rows::map_json(&spec.env),
            &spec.cwd,
            &rows::map_json(&spec.labels),
            &i64::from(spec.retries),
            &(spec.backoff.as_millis() as i64),
            &spec.timeout.map(|d| d.as_millis() as i64),
            &(spec.kill_grace.as_millis() as i64),
            &spec.unique_key,
            &spec.idempotency_key,
            &i64::from(spec.max_rescues),
            &now,
            &container,
        ],
    )?;
    Ok(row.map(|r| r.col("jobs", 0)).transpose()?)
}

fn submit_tx(
    s: &PgStore,
    tx: Tx<'_, '_>,
    jobs: &[JobSpec],
    now: i64,
) -> std::result::Result<Vec<Submitted>, TxErr> {
    let mut out = Vec::with_capacity(jobs.len());
    for spec in jobs {
        if let Some(found) = existing(s, tx, spec)? {
            out.push(found);
            continue;
        }
        // A dependency listed twice is one row in `deps`, so it must count once.
        let mut deps = spec.after.clone();
        deps.sort_unstable();
        deps.dedup();
        let pending = pending_deps(s, tx, &deps)?;
        // A concurrent submit of the same key or idempotency key loses quietly here and is
        // answered from the row that won.
        let Some(id) = insert(s, tx, spec, pending, now)? else {
            match existing(s, tx, spec)? {
                Some(found) => {
                    out.push(found);
                    continue;
                }
                None => {
                    return Err(TxErr::Store(StoreError::Conflict(
                        "the job collided with a concurrent submit; try again".into(),
                    )))
                }
            }
        };
        for dep in &deps {
            ex(
                &s.stmts,
                tx,
                "INSERT INTO deps (after_id, job_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[dep, &id],
            )?;
        }
        event(
            &s.stmts,
            tx,
            now,
            "submitted",
            Some(id),
            None,
            Some("queued"),
            None,
        )?;
        out.push(Submitted::Created(id));
    }
    Ok(out)
}

pub(super) fn submit(s: &PgStore, jobs: &[JobSpec]) -> Result<Vec<Submitted>> {
    let now = s.now_ms();
    s.write(true, |tx| submit_tx(s, tx, jobs, now))
}

pub(super) fn get(s: &PgStore, id: JobId) -> Result<Option<Job>> {
    s.with(|c| {
        let row = qo(
            &s.stmts,
            c,
            &format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1"),
            &[&id],
        )?;
        Ok(row.map(|r| rows::job_from_row(&r)).transpose()?)
    })
}

pub(super) fn attempts(s: &PgStore, id: JobId) -> Result<Vec<Attempt>> {
    s.with(|c| {
        qy(
            &s.stmts,
            c,
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.job_id = $1 ORDER BY a.attempt"
            ),
            &[&id],
        )?
        .iter()
        .map(|r| Ok(rows::attempt_from_row(r)?))
        .collect()
    })
}

/// A query's text and its parameters, gathered as text and bigint values.
#[derive(Default)]
struct Query {
    sql: String,
    texts: Vec<String>,
    ints: Vec<i64>,
    /// Each parameter in order: (is text, index into `texts` or `ints`).
    order: Vec<(bool, usize)>,
}

impl Query {
    /// Appends a placeholder for a text value.
    fn text(&mut self, v: String) {
        self.texts.push(v);
        self.order.push((true, self.texts.len() - 1));
        self.sql.push_str(&format!("${}", self.order.len()));
    }

    /// Appends a placeholder for a bigint value.
    fn int(&mut self, v: i64) {
        self.ints.push(v);
        self.order.push((false, self.ints.len() - 1));
        self.sql.push_str(&format!("${}", self.order.len()));
    }

    /// The parameters, in placeholder order.
    fn args(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.order
            .iter()
            .map(|&(is_text, i)| {
                if is_text {
                    &self.texts[i] as &(dyn ToSql + Sync)
                } else {
                    &self.ints[i] as &(dyn ToSql + Sync)
                }
            })
            .collect()
    }
}

/// The listing query for `f`.
fn list_query(f: &ListFilter, now: i64) -> Query {
    let mut q = Query {
        sql: format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE TRUE"),
        ..Query::default()
    };
    if !f.states.is_empty() {
        q.sql.push_str(" AND j.state IN (");
        for (i, st) in f.states.iter().enumerate() {
            if i > 0 {
                q.sql.push(',');
            }
            q.text(st.as_str().to_string());
        }
        q.sql.push(')');
    }
    if f.scheduled_only {
        q.sql.push_str(" AND j.state = 'queued' AND j.run_at > ");
        q.int(now);
    }
    if f.waiting_only {
        q.sql
            .push_str(" AND j.state = 'queued' AND j.deps_pending > 0");
    }
    if let Some(queue) = &f.queue {
        q.sql.push_str(" AND j.queue = ");
        q.text(queue.clone());
    }
    for (k, v) in &f.labels {
        q.sql.push_str(" AND (j.labels::jsonb ->> ");
        q.text(k.clone());
        q.sql.push_str(") = ");
        q.text(v.clone());
    }
    if !f.ids.is_empty() {
        q.sql.push_str(" AND j.id IN (");
        for (i, id) in f.ids.iter().enumerate() {
            if i > 0 {
                q.sql.push(',');
            }
            q.int(*id);
        }
        q.sql.push(')');
    }
    if let Some(before) = f.before {
        q.sql.push_str(" AND j.id < ");
        q.int(before);
    }
    if let Some(text) = &f.command_contains {
        // A substring of the stored argv (JSON text); all digits also names a job id.
        q.sql.push_str(" AND (strpos(j.argv, ");
        q.text(text.clone());
        q.sql.push_str(") > 0");
        match text.parse::<JobId>() {
            Ok(id) if text.bytes().all(|b| b.is_ascii_digit()) => {
                q.sql.push_str(" OR j.id = ");
                q.int(id);
            }
            _ => {}
        }
        q.sql.push(')');
    }
    q.sql.push_str(" ORDER BY j.id DESC");
    if f.limit > 0 {
        q.sql.push_str(&format!(" LIMIT {}", f.limit));
    }
    q
}

pub(super) fn list(s: &PgStore, f: &ListFilter) -> Result<Vec<Job>> {
    let q = list_query(f, s.now_ms());
    s.with(|c| {
        qy(&s.stmts, c, &q.sql, &q.args())?
            .iter()
            .map(|r| Ok(rows::job_from_row(r)?))
            .collect()
    })
}

pub(super) fn count_unfinished(s: &PgStore, queue: Option<&str>) -> Result<u64> {
    s.with(|c| {
        let n: i64 = q1(
            &s.stmts,
            c,
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')
                 AND ($1::text IS NULL OR queue = $1)",
            &[&queue],
        )?
        .col("jobs", 0)?;
        Ok(n.max(0) as u64)
    })
}

/// Reads a job's state column.
fn state_of(r: &postgres::Row, idx: usize) -> std::result::Result<JobState, TxErr> {
    let state: String = r.col("jobs", idx)?;
    state.parse().map_err(|_| {
        TxErr::Store(StoreError::BadRow {
            table: "jobs",
            id: "?".into(),
            column: "state".into(),
            detail: format!("{state:?} is not a job state"),
        })
    })
}

pub(super) fn cancel(s: &PgStore, ids: &[JobId]) -> Result<Vec<CancelOutcome>> {
    let now = s.now_ms();
    s.write(true, |tx| {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let row = qo(
                &s.stmts,
                tx,
                "SELECT state, worker_id FROM jobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let Some(row) = row else {
                out.push(CancelOutcome::NotFound(id));
                continue;
            };
            let worker: Option<i64> = row.col("jobs", 1)?;
            match lifecycle::on_cancel(state_of(&row, 0)?) {
                CancelAction::CancelNow => {
                    ex(
                        &s.stmts,
                        tx,
                        "UPDATE jobs SET state = 'cancelled', finished_at = $2, last_error = $3
                         WHERE id = $1",
                        &[&id, &now, &lifecycle::CANCELLED_BEFORE_START],
                    )?;
                    cancel_dependents(&s.stmts, tx, id, now)?;
                    event(
                        &s.stmts,
                        tx,
                        now,
                        "cancelled",
                        Some(id),
                        None,
                        Some("cancelled"),
                        None,
                    )?;
                    out.push(CancelOutcome::Cancelled(id));
                }
                CancelAction::AskWorker => {
                    ex(
                        &s.stmts,
                        tx,
                        "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1",
                        &[&id],
                    )?;
                    event(
                        &s.stmts,
                        tx,
                        now,
                        "cancel_requested",
                        Some(id),
                        worker,
                        Some("running"),
                        None,
                    )?;
                    out.push(CancelOutcome::Requested(id, worker));
                }
                CancelAction::AlreadyEnded(st) => out.push(CancelOutcome::AlreadyDone(id, st)),
            }
        }
        Ok(out)
    })
}

pub(super) fn retry(s: &PgStore, ids: &[JobId]) -> Result<Vec<RetryOutcome>> {
    let now = s.now_ms();
    s.write(true, |tx| {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let row = qo(
                &s.stmts,
                tx,
                "SELECT state FROM jobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let Some(row) = row else {
                out.push(RetryOutcome::NotFound(id));
                continue;
            };
            let state = state_of(&row, 0)?;
            if !lifecycle::can_retry(state) {
                out.push(RetryOutcome::NotRetryable(id, state));
                continue;
            }
            // A retried job must not collide with a newer queued job of the same key. Its
            // dependencies are counted afresh: one that failed and was retried may have
            // succeeded meanwhile, which released nobody while this job was ended.
            ex(
                &s.stmts,
                tx,
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
            event(
                &s.stmts,
                tx,
                now,
                "retried",
                Some(id),
                None,
                Some("queued"),
                None,
            )?;
            out.push(RetryOutcome::Requeued(id));
        }
        Ok(out)
    })
}

pub(super) fn failed_ids(s: &PgStore, queue: Option<&str>) -> Result<Vec<JobId>> {
    s.with(|c| {
        qy(
            &s.stmts,
            c,
            "SELECT id FROM jobs WHERE state = 'failed' AND ($1::text IS NULL OR queue = $1) ORDER BY id",
            &[&queue],
        )?
        .iter()
        .map(|r| Ok(r.col("jobs", 0)?))
        .collect()
    })
}

/// Adds one `queue_counts` row to the per-queue stats.
fn add_count(out: &mut Vec<QueueStats>, r: &postgres::Row) -> std::result::Result<(), TxErr> {
    const T: &str = "queue_counts";
    let queue: String = r.col(T, 0)?;
    let state: String = r.col(T, 1)?;
    let n = r.col::<i64>(T, 2)?.max(0) as u64;
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
            let (sum, cnt): (i64, i64) = (r.col(T, 3)?, r.col(T, 4)?);
            q.mean_duration_ms = (cnt > 0).then(|| sum as f64 / cnt as f64);
        }
        "failed" => q.failed = n,
        "cancelled" => q.cancelled = n,
        _ => {}
    }
    Ok(())
}

pub(super) fn queue_stats(s: &PgStore) -> Result<Vec<QueueStats>> {
    let now = s.now_ms();
    s.with(|c| {
        let mut out: Vec<QueueStats> = Vec::new();
        for r in qy(
            &s.stmts,
            c,
            "SELECT queue, state, n, dur_sum, dur_n FROM queue_counts WHERE n > 0 ORDER BY queue",
            &[],
        )? {
            add_count(&mut out, &r)?;
        }
        for q in out.iter_mut() {
            if q.queued > 0 {
                let n: i64 = q1(
                    &s.stmts,
                    c,
                    "SELECT count(*) FROM jobs
                     WHERE state = 'queued' AND run_at > created_at AND queue = $1 AND run_at > $2",
                    &[&q.queue, &now],
                )?
                .col("jobs", 0)?;
                q.scheduled = (n.max(0) as u64).min(q.queued);
                q.queued -= q.scheduled;
            }
        }
        for r in qy(
            &s.stmts,
            c,
            "SELECT name FROM queues WHERE paused ORDER BY name",
            &[],
        )? {
            let name: String = r.col("queues", 0)?;
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

pub(super) fn with_unique_keys(
    s: &PgStore,
    keys: &[String],
) -> Result<Vec<(String, JobId, JobState)>> {
    s.with(|c| {
        let mut out = Vec::new();
        for k in keys {
            if let Some(r) = qo(
                &s.stmts,
                c,
                "SELECT id, state FROM jobs
                 WHERE unique_key = $1 AND state IN ('queued', 'running', 'succeeded')
                 ORDER BY id DESC LIMIT 1",
                &[k],
            )? {
                let state: String = r.col("jobs", 1)?;
                if let Ok(st) = state.parse::<JobState>() {
                    out.push((k.clone(), r.col("jobs", 0)?, st));
                }
            }
        }
        Ok(out)
    })
}

pub(super) fn purge(
    s: &PgStore,
    before: Timestamp,
    states: &[JobState],
    limit: u32,
) -> Result<crate::Purged> {
    let states: Vec<String> = states
        .iter()
        .filter(|st| st.is_terminal())
        .map(|st| st.as_str().to_string())
        .collect();
    if states.is_empty() || limit == 0 {
        return Ok(crate::Purged::default());
    }
    s.write(false, |tx| {
        let ids: Vec<i64> = qy(
            &s.stmts,
            tx,
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs
                 WHERE finished_at IS NOT NULL AND finished_at < $1 AND state = ANY($2)
                 ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            &[&before.0, &states, &i64::from(limit)],
        )?
        .iter()
        .map(|r| r.col("jobs", 0))
        .collect::<std::result::Result<_, _>>()?;
        let logs = qy(
            &s.stmts,
            tx,
            "DELETE FROM attempts WHERE job_id = ANY($1) RETURNING log_path",
            &[&ids],
        )?;
        ex(
            &s.stmts,
            tx,
            "DELETE FROM deps WHERE after_id = ANY($1) OR job_id = ANY($1)",
            &[&ids],
        )?;
        ex(
            &s.stmts,
            tx,
            "DELETE FROM events WHERE id IN
                 (SELECT id FROM events WHERE at < $1
                    AND id < (SELECT max(id) FROM events) ORDER BY id LIMIT $2)",
            &[&before.0, &(i64::from(limit) * 8)],
        )?;
        let mut log_files = Vec::new();
        for r in &logs {
            if let Some(path) = r.col::<Option<String>>("attempts", 0)? {
                log_files.push(path);
            }
        }
        Ok(crate::Purged {
            jobs: ids.len() as u64,
            log_files,
        })
    })
}
