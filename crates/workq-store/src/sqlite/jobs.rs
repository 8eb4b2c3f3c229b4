//! Submitting, reading, cancelling and retrying jobs.

use rusqlite::{params, params_from_iter, OptionalExtension};
use workq_core::lifecycle::{self, CancelAction};
use workq_core::{Attempt, Job, JobId, JobSpec, JobState};

use super::rows::{self, ATTEMPT_COLUMNS, JOB_COLUMNS};
use super::transitions::{cancel_dependents, event};
use super::{Durability, SqliteStore};
use crate::{CancelOutcome, ListFilter, QueueStats, Result, RetryOutcome, StoreError, Submitted};

pub(super) fn submit(s: &SqliteStore, jobs: &[JobSpec]) -> Result<Vec<Submitted>> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        let mut out = Vec::with_capacity(jobs.len());
        let mut insert = tx.prepare_cached(
            "INSERT INTO jobs (queue, state, priority, run_at, deps_pending, argv, env, cwd, labels,
                 retries, backoff_ms, timeout_ms, kill_grace_ms, unique_key, idempotency_key,
                 max_rescues, created_at, container)
             VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let mut by_idem = tx.prepare_cached("SELECT id FROM jobs WHERE idempotency_key = ?1")?;
        let mut by_unique = tx.prepare_cached(
            "SELECT id FROM jobs WHERE unique_key = ?1 AND state IN ('queued', 'running')",
        )?;
        let mut dep_state = tx.prepare_cached("SELECT state FROM jobs WHERE id = ?1")?;
        let mut add_dep =
            tx.prepare_cached("INSERT OR IGNORE INTO deps (after_id, job_id) VALUES (?1, ?2)")?;
        let mut ev = tx.prepare_cached(
            "INSERT INTO events (at, kind, job_id, state) VALUES (?1, 'submitted', ?2, 'queued')",
        )?;
        for spec in jobs {
            if let Some(key) = &spec.idempotency_key {
                if let Some(id) = by_idem.query_row([key], |r| r.get(0)).optional()? {
                    out.push(Submitted::Existing(id));
                    continue;
                }
            }
            if let Some(key) = &spec.unique_key {
                if let Some(id) = by_unique.query_row([key], |r| r.get(0)).optional()? {
                    out.push(Submitted::Duplicate(id));
                    continue;
                }
            }
            // A dependency listed twice is one row in `deps`, so it must count once.
            let mut deps = spec.after.clone();
            deps.sort_unstable();
            deps.dedup();
            let mut pending = 0u32;
            for dep in &deps {
                let state: Option<String> = dep_state.query_row([dep], |r| r.get(0)).optional()?;
                let state = state.map(|st| rows::parse_state(&st)).transpose()?;
                // One refused job rolls back the whole batch: all or nothing.
                if lifecycle::check_dependency(*dep, state).map_err(StoreError::from)? {
                    pending += 1;
                }
            }
            let argv = serde_json::to_string(&spec.argv).unwrap_or_else(|_| "[]".into());
            insert.execute(params![
                spec.queue,
                spec.priority,
                spec.run_at.map(|t| t.0).unwrap_or(now),
                pending,
                argv,
                rows::map_json(&spec.env),
                spec.cwd,
                rows::map_json(&spec.labels),
                spec.retries,
                spec.backoff.as_millis() as i64,
                spec.timeout.map(|d| d.as_millis() as i64),
                spec.kill_grace.as_millis() as i64,
                spec.unique_key,
                spec.idempotency_key,
                spec.max_rescues,
                now,
                spec.container
                    .as_ref()
                    .and_then(|c| serde_json::to_string(c).ok()),
            ])?;
            let id = tx.last_insert_rowid();
            for dep in &deps {
                add_dep.execute(params![dep, id])?;
            }
            ev.execute(params![now, id])?;
            out.push(Submitted::Created(id));
        }
        Ok(out)
    })
}

pub(super) fn get(s: &SqliteStore, id: JobId) -> Result<Option<Job>> {
    s.conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1"))
        .and_then(|mut st| st.query_row([id], rows::job_from_row).optional())
        .map_err(|e| s.err(e))
}

pub(super) fn attempts(s: &SqliteStore, id: JobId) -> Result<Vec<Attempt>> {
    let run = || -> rusqlite::Result<Vec<Attempt>> {
        let mut st = s.conn.prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.job_id = ?1 ORDER BY a.attempt"
        ))?;
        let v = st.query_map([id], rows::attempt_from_row)?.collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn list(s: &SqliteStore, f: &ListFilter) -> Result<Vec<Job>> {
    let now = s.now();
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if !f.states.is_empty() {
        let marks: Vec<String> = f
            .states
            .iter()
            .map(|st| {
                args.push(st.as_str().to_string().into());
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(" AND j.state IN ({})", marks.join(",")));
    }
    if f.scheduled_only {
        args.push(now.into());
        sql.push_str(&format!(
            " AND j.state = 'queued' AND j.run_at > ?{}",
            args.len()
        ));
    }
    if f.waiting_only {
        sql.push_str(" AND j.state = 'queued' AND j.deps_pending > 0");
    }
    if let Some(q) = &f.queue {
        args.push(q.clone().into());
        sql.push_str(&format!(" AND j.queue = ?{}", args.len()));
    }
    for (k, v) in &f.labels {
        args.push(format!("$.\"{}\"", k.replace('"', "")).into());
        let path = args.len();
        args.push(v.clone().into());
        sql.push_str(&format!(
            " AND json_extract(j.labels, ?{path}) = ?{}",
            args.len()
        ));
    }
    if !f.ids.is_empty() {
        let marks: Vec<String> = f
            .ids
            .iter()
            .map(|id| {
                args.push((*id).into());
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(" AND j.id IN ({})", marks.join(",")));
    }
    if let Some(before) = f.before {
        args.push(before.into());
        sql.push_str(&format!(" AND j.id < ?{}", args.len()));
    }
    if let Some(text) = &f.command_contains {
        // A substring of the stored argv (JSON text); all digits also names a job id.
        args.push(text.clone().into());
        let text_arg = args.len();
        match text.parse::<JobId>() {
            Ok(id) if text.bytes().all(|b| b.is_ascii_digit()) => {
                args.push(id.into());
                sql.push_str(&format!(
                    " AND (instr(j.argv, ?{text_arg}) > 0 OR j.id = ?{})",
                    args.len()
                ));
            }
            _ => sql.push_str(&format!(" AND instr(j.argv, ?{text_arg}) > 0")),
        }
    }
    sql.push_str(" ORDER BY j.id DESC");
    if f.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", f.limit));
    }
    let run = || -> rusqlite::Result<Vec<Job>> {
        let mut st = s.conn.prepare(&sql)?;
        let v = st
            .query_map(params_from_iter(args.iter()), rows::job_from_row)?
            .collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn count_unfinished(s: &SqliteStore, queue: Option<&str>) -> Result<u64> {
    let r = match queue {
        Some(q) => s.conn.query_row(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND queue = ?1",
            [q],
            |r| r.get::<_, i64>(0),
        ),
        None => s.conn.query_row(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')",
            [],
            |r| r.get::<_, i64>(0),
        ),
    };
    r.map(|n| n as u64).map_err(|e| s.err(e))
}

pub(super) fn cancel(s: &SqliteStore, ids: &[JobId]) -> Result<Vec<CancelOutcome>> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let row: Option<(String, Option<i64>)> = tx
                .prepare_cached("SELECT state, worker_id FROM jobs WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((state, worker)) = row else {
                out.push(CancelOutcome::NotFound(id));
                continue;
            };
            let state = rows::parse_state(&state)?;
            match lifecycle::on_cancel(state) {
                CancelAction::CancelNow => {
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?2, last_error = ?3
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        now,
                        lifecycle::CANCELLED_BEFORE_START
                    ])?;
                    cancel_dependents(tx, id, now)?;
                    event(
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
                    tx.prepare_cached("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1")?
                        .execute([id])?;
                    event(
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

pub(super) fn retry(s: &SqliteStore, ids: &[JobId]) -> Result<Vec<RetryOutcome>> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let Some(state) = state else {
                out.push(RetryOutcome::NotFound(id));
                continue;
            };
            let state = rows::parse_state(&state)?;
            if lifecycle::can_retry(state) {
                    // A retried job must not collide with a newer queued job of the same key.
                    // Its dependencies are counted afresh: one that failed and was retried may
                    // have succeeded meanwhile, which released nobody while this job was ended.
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'queued', run_at = ?2, failures = 0, rescues = 0,
                             cancel_requested = 0, finished_at = NULL, lease = NULL,
                             deps_pending = (SELECT count(*) FROM deps d JOIN jobs a ON a.id = d.after_id
                                 WHERE d.job_id = jobs.id AND a.state <> 'succeeded'),
                             unique_key = CASE WHEN EXISTS (SELECT 1 FROM jobs o
                                 WHERE o.unique_key = jobs.unique_key AND o.id <> jobs.id
                                   AND o.state IN ('queued', 'running')) THEN NULL ELSE unique_key END
                         WHERE id = ?1",
                    )?
                    .execute(params![id, now])?;
                    event(tx, now, "retried", Some(id), None, Some("queued"), None)?;
                    out.push(RetryOutcome::Requeued(id));
            } else {
                out.push(RetryOutcome::NotRetryable(id, state));
            }
        }
        Ok(out)
    })
}

pub(super) fn failed_ids(s: &SqliteStore, queue: Option<&str>) -> Result<Vec<JobId>> {
    let run = || -> rusqlite::Result<Vec<JobId>> {
        let mut st = s.conn.prepare_cached(
            "SELECT id FROM jobs WHERE state = 'failed' AND (?1 IS NULL OR queue = ?1) ORDER BY id",
        )?;
        let v = st.query_map([queue], |r| r.get(0))?.collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn queue_stats(s: &SqliteStore) -> Result<Vec<QueueStats>> {
    let now = s.now();
    let run = || -> rusqlite::Result<Vec<QueueStats>> {
        // Counts come from the trigger-maintained table; only the scheduled split reads jobs,
        // through the small index of delayed jobs.
        let mut out: Vec<QueueStats> = Vec::new();
        let mut st = s.conn.prepare_cached(
            "SELECT queue, state, n, dur_sum, dur_n FROM queue_counts WHERE n > 0 ORDER BY queue",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let queue: String = r.get(0)?;
            let state: String = r.get(1)?;
            let n = r.get::<_, i64>(2)?.max(0) as u64;
            let q = match out.iter().position(|q| q.queue == queue) {
                Some(i) => &mut out[i],
                None => {
                    out.push(QueueStats {
                        queue: queue.clone(),
                        ..Default::default()
                    });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            match state.as_str() {
                "queued" => q.queued = n,
                "running" => q.running = n,
                "succeeded" => {
                    q.succeeded = n;
                    let (sum, cnt): (i64, i64) = (r.get(3)?, r.get(4)?);
                    q.mean_duration_ms = (cnt > 0).then(|| sum as f64 / cnt as f64);
                }
                "failed" => q.failed = n,
                "cancelled" => q.cancelled = n,
                _ => {}
            }
        }
        let mut sched = s.conn.prepare_cached(
            "SELECT count(*) FROM jobs INDEXED BY jobs_delayed
             WHERE state = 'queued' AND run_at > created_at AND queue = ?1 AND run_at > ?2",
        )?;
        for q in out.iter_mut() {
            if q.queued > 0 {
                let n: i64 = sched.query_row(params![q.queue, now], |r| r.get(0))?;
                q.scheduled = (n.max(0) as u64).min(q.queued);
                q.queued -= q.scheduled;
            }
        }
        let mut paused = s
            .conn
            .prepare_cached("SELECT name FROM queues WHERE paused = 1")?;
        let names: Vec<String> = paused
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for name in names {
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
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn with_unique_keys(
    s: &SqliteStore,
    keys: &[String],
) -> Result<Vec<(String, JobId, JobState)>> {
    let run = || -> rusqlite::Result<Vec<(String, JobId, JobState)>> {
        let mut st = s.conn.prepare_cached(
            "SELECT id, state FROM jobs
             WHERE unique_key = ?1 AND state IN ('queued', 'running', 'succeeded')
             ORDER BY id DESC LIMIT 1",
        )?;
        let mut out = Vec::new();
        for k in keys {
            let mut rows = st.query([k])?;
            if let Some(r) = rows.next()? {
                let state: String = r.get(1)?;
                if let Ok(state) = state.parse::<JobState>() {
                    out.push((k.clone(), r.get(0)?, state));
                }
            }
        }
        Ok(out)
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn purge(
    s: &SqliteStore,
    before: workq_core::Timestamp,
    states: &[JobState],
    limit: u32,
) -> Result<crate::Purged> {
    let states: Vec<&str> = states
        .iter()
        .filter(|st| st.is_terminal())
        .map(|st| st.as_str())
        .collect();
    if states.is_empty() || limit == 0 {
        return Ok(crate::Purged::default());
    }
    let marks = (0..states.len())
        .map(|i| format!("?{}", i + 3))
        .collect::<Vec<_>>()
        .join(",");
    let select = format!(
        "SELECT id FROM jobs INDEXED BY jobs_finished
         WHERE finished_at IS NOT NULL AND finished_at < ?1 AND state IN ({marks})
         ORDER BY finished_at LIMIT ?2"
    );
    s.write(Durability::Normal, |tx| {
        let mut args: Vec<rusqlite::types::Value> = vec![before.0.into(), i64::from(limit).into()];
        args.extend(
            states
                .iter()
                .map(|st| rusqlite::types::Value::from(st.to_string())),
        );
        let ids: Vec<JobId> = tx
            .prepare_cached(&select)?
            .query_map(params_from_iter(args.iter()), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = crate::Purged::default();
        let mut logs = tx.prepare_cached(
            "SELECT log_path FROM attempts WHERE job_id = ?1 AND log_path IS NOT NULL",
        )?;
        for id in &ids {
            let paths: Vec<String> = logs
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            out.log_files.extend(paths);
            tx.prepare_cached("DELETE FROM attempts WHERE job_id = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM deps WHERE after_id = ?1 OR job_id = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                .execute([id])?;
        }
        // Events are appended in time order: the oldest come first by id. The newest stays, so
        // its id is never handed out again (SQLite gives the largest rowid + 1): readers of the
        // log resume from an id (`workq serve`'s events).
        tx.prepare_cached(
            "DELETE FROM events WHERE id IN
                 (SELECT id FROM events WHERE at < ?1
                    AND id < (SELECT max(id) FROM events) ORDER BY id LIMIT ?2)",
        )?
        .execute(params![before.0, i64::from(limit) * 8])?;
        out.jobs = ids.len() as u64;
        Ok(out)
    })
}
