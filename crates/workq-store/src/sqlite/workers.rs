//! The worker registry and the rescue of a dead worker's jobs.

use rusqlite::params;
use workq_core::{Attempt, JobId, JobState, WorkerId, WorkerRecord, WorkerState};

use super::jobs::{cancel_dependents, event};
use super::rows::{self, ATTEMPT_COLUMNS, WORKER_COLUMNS};
use super::{Durability, SqliteStore};
use crate::{Rescued, Result, WorkerRegistration};

pub(super) fn register(s: &SqliteStore, reg: &WorkerRegistration) -> Result<WorkerId> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        tx.prepare_cached(
            "INSERT INTO workers (name, host, boot_id, pid, pid_start_time, queues, slots, state,
                 started_at, heartbeat_at, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'starting', ?8, ?8, ?9)",
        )?
        .execute(params![
            reg.name,
            reg.host,
            reg.boot_id,
            reg.pid,
            reg.pid_start_time as i64,
            serde_json::to_string(&reg.queues).unwrap_or_else(|_| "[]".into()),
            reg.slots,
            now,
            reg.version
        ])?;
        let id = tx.last_insert_rowid();
        event(tx, now, "worker_started", None, Some(id), Some(&reg.name))?;
        Ok(id)
    })
}

pub(super) fn heartbeat(s: &SqliteStore, worker: WorkerId, state: WorkerState) -> Result<()> {
    let now = s.now();
    s.write(Durability::Normal, |tx| {
        tx.prepare_cached(
            "UPDATE workers SET heartbeat_at = ?2, state = ?3
             WHERE id = ?1 AND state NOT IN ('stopped', 'dead')",
        )?
        .execute(params![worker, now, state.as_str()])?;
        Ok(())
    })
}

pub(super) fn stopped(s: &SqliteStore, worker: WorkerId, reason: &str) -> Result<()> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        tx.prepare_cached(
            "UPDATE workers SET state = 'stopped', stopped_at = ?2, stop_reason = ?3, heartbeat_at = ?2
             WHERE id = ?1",
        )?
        .execute(params![worker, now, reason])?;
        event(tx, now, "worker_stopped", None, Some(worker), Some(reason))?;
        Ok(())
    })
}

pub(super) fn list(s: &SqliteStore, include_ended: bool) -> Result<Vec<WorkerRecord>> {
    let sql = if include_ended {
        format!("SELECT {WORKER_COLUMNS} FROM workers w ORDER BY w.id")
    } else {
        format!(
            "SELECT {WORKER_COLUMNS} FROM workers w WHERE w.state NOT IN ('stopped', 'dead') ORDER BY w.id"
        )
    };
    let run = || -> rusqlite::Result<Vec<WorkerRecord>> {
        let mut st = s.conn.prepare_cached(&sql)?;
        let v = st.query_map([], rows::worker_from_row)?.collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn running_attempts(s: &SqliteStore, worker: WorkerId) -> Result<Vec<Attempt>> {
    let run = || -> rusqlite::Result<Vec<Attempt>> {
        let mut st = s.conn.prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM jobs j JOIN attempts a
                 ON a.job_id = j.id AND a.attempt = j.attempt
             WHERE j.worker_id = ?1 AND j.state = 'running'"
        ))?;
        let v = st.query_map([worker], rows::attempt_from_row)?.collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn rescue(s: &SqliteStore, worker: WorkerId, reason: &str) -> Result<Vec<Rescued>> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        let running: Vec<(JobId, u32, u32, u32, i64)> = tx
            .prepare_cached(
                "SELECT id, attempt, rescues, max_rescues, cancel_requested FROM jobs
                 WHERE worker_id = ?1 AND state = 'running'",
            )?
            .query_map([worker], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(running.len());
        for (id, attempt, rescues, max_rescues, cancel_requested) in running {
            let error = format!("its worker {worker} died ({reason})");
            tx.prepare_cached(
                "UPDATE attempts SET ended_at = ?3, outcome = 'lost', error = ?4
                 WHERE job_id = ?1 AND attempt = ?2 AND ended_at IS NULL",
            )?
            .execute(params![id, attempt, now, error])?;
            let new_state = if cancel_requested != 0 {
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?2, lease = NULL,
                         last_error = 'cancelled; its worker died while stopping it'
                     WHERE id = ?1",
                )?
                .execute(params![id, now])?;
                cancel_dependents(tx, id, now)?;
                JobState::Cancelled
            } else if rescues + 1 > max_rescues {
                let msg = format!(
                    "lost {} times (its worker died each time); not requeued again so a job that kills its worker cannot loop forever",
                    rescues + 1
                );
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'failed', finished_at = ?2, lease = NULL,
                         rescues = rescues + 1, last_error = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, now, msg])?;
                cancel_dependents(tx, id, now)?;
                JobState::Failed
            } else {
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'queued', run_at = ?2, lease = NULL,
                         rescues = rescues + 1, last_error = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, now, error])?;
                JobState::Queued
            };
            event(tx, now, "rescued", Some(id), Some(worker), Some(new_state.as_str()))?;
            out.push(Rescued {
                job_id: id,
                attempt,
                new_state,
            });
        }
        let changed = tx
            .prepare_cached(
                "UPDATE workers SET state = 'dead', stopped_at = ?2, stop_reason = ?3
                 WHERE id = ?1 AND state NOT IN ('stopped', 'dead')",
            )?
            .execute(params![worker, now, reason])?;
        if changed > 0 {
            event(tx, now, "worker_dead", None, Some(worker), Some(reason))?;
        }
        Ok(out)
    })
}
