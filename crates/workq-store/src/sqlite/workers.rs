//! The worker registry and the rescue of a dead worker's jobs.

use rusqlite::params;
use workq_core::lifecycle;
use workq_core::{Attempt, WorkerId, WorkerRecord, WorkerState};

use super::rows::{self, ATTEMPT_COLUMNS, WORKER_COLUMNS};
use super::transitions::{self, event};
use super::{Durability, SqliteStore};
use crate::{
    Diagnosis, OutcomeCounts, RescueKind, Rescued, Result, RunningJob, WorkerRegistration,
};
use workq_core::{Outcome, Timestamp};

pub(super) fn register(s: &SqliteStore, reg: &WorkerRegistration) -> Result<WorkerId> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        tx.prepare_cached(
            "INSERT INTO workers (name, host, boot_id, pid, pid_start_time, queues, slots, state,
                 started_at, heartbeat_at, version, settings)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'starting', ?8, ?8, ?9, ?10)",
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
            reg.version,
            reg.settings
        ])?;
        let id = tx.last_insert_rowid();
        event(
            tx,
            now,
            "worker_started",
            None,
            Some(id),
            Some(WorkerState::Starting.as_str()),
            Some(&reg.name),
        )?;
        Ok(id)
    })
}

pub(super) fn heartbeat(
    s: &SqliteStore,
    worker: WorkerId,
    state: WorkerState,
) -> Result<crate::Heartbeat> {
    let now = s.now();
    s.write(Durability::Normal, |tx| {
        // A change of state (starting to running, running to paused or draining) is a worker
        // event for the log's readers; a heartbeat that changes nothing writes none.
        tx.prepare_cached(
            "INSERT INTO events (at, kind, worker_id, state, detail)
             SELECT ?2, 'worker_state', id, ?3, name FROM workers
             WHERE id = ?1 AND state <> ?3 AND state NOT IN ('stopped', 'dead', 'crash-looping')",
        )?
        .execute(params![worker, now, state.as_str()])?;
        let changed = tx
            .prepare_cached(
                "UPDATE workers SET heartbeat_at = ?2, state = ?3
                 WHERE id = ?1 AND state NOT IN ('stopped', 'dead', 'crash-looping')",
            )?
            .execute(params![worker, now, state.as_str()])?;
        Ok(if changed == 0 {
            crate::Heartbeat::Ended
        } else {
            crate::Heartbeat::Alive
        })
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
        event(
            tx,
            now,
            "worker_stopped",
            None,
            Some(worker),
            Some(WorkerState::Stopped.as_str()),
            Some(reason),
        )?;
        Ok(())
    })
}

pub(super) fn list(s: &SqliteStore, include_ended: bool) -> Result<Vec<WorkerRecord>> {
    let sql = if include_ended {
        format!("SELECT {WORKER_COLUMNS} FROM workers w ORDER BY w.id")
    } else {
        format!(
            "SELECT {WORKER_COLUMNS} FROM workers w WHERE w.state NOT IN ('stopped', 'dead', 'crash-looping') ORDER BY w.id"
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

pub(super) fn rescue(
    s: &SqliteStore,
    worker: WorkerId,
    reason: &str,
    how: RescueKind,
) -> Result<Vec<Rescued>> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        let running = transitions::running_on(tx, worker)?;
        let mut out = Vec::with_capacity(running.len());
        for (id, attempt, facts) in running {
            let d = lifecycle::after_rescue(&facts, worker, how, reason, Timestamp(now));
            transitions::apply(tx, id, attempt, &d, None, None, worker, now)?;
            out.push(Rescued {
                job_id: id,
                attempt,
                new_state: d.state,
            });
        }
        let end_state = match how {
            RescueKind::Lost => WorkerState::Dead,
            RescueKind::Interrupted => WorkerState::Stopped,
        };
        let changed = tx
            .prepare_cached(
                "UPDATE workers SET state = ?4, stopped_at = ?2, stop_reason = ?3
                 WHERE id = ?1 AND state NOT IN ('stopped', 'dead', 'crash-looping')",
            )?
            .execute(params![worker, now, reason, end_state.as_str()])?;
        if changed > 0 {
            let kind = match how {
                RescueKind::Lost => "worker_dead",
                RescueKind::Interrupted => "worker_stopped",
            };
            event(
                tx,
                now,
                kind,
                None,
                Some(worker),
                Some(end_state.as_str()),
                Some(reason),
            )?;
        }
        Ok(out)
    })
}

pub(super) fn mark_crash_looping(s: &SqliteStore, worker: WorkerId, reason: &str) -> Result<()> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        tx.prepare_cached(
            "UPDATE workers SET state = 'crash-looping', stop_reason = ?3,
                 stopped_at = coalesce(stopped_at, ?2)
             WHERE id = ?1",
        )?
        .execute(params![worker, now, reason])?;
        event(
            tx,
            now,
            "worker_crash_looping",
            None,
            Some(worker),
            Some(WorkerState::CrashLooping.as_str()),
            Some(reason),
        )?;
        Ok(())
    })
}

pub(super) fn prune(s: &SqliteStore, before: Timestamp) -> Result<u64> {
    s.write(Durability::Normal, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM workers
                 WHERE stopped_at IS NOT NULL AND stopped_at < ?1
                   AND state IN ('stopped', 'dead', 'crash-looping')
                   AND NOT EXISTS (SELECT 1 FROM jobs j
                                   WHERE j.state = 'running' AND j.worker_id = workers.id)",
            )?
            .execute([before.0])?;
        Ok(n as u64)
    })
}

pub(super) fn set_paused(s: &SqliteStore, host: &str, name: &str, paused: bool) -> Result<()> {
    let now = s.now();
    s.write(Durability::Full, |tx| {
        tx.prepare_cached(
            "INSERT INTO worker_controls (host, name, paused, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (host, name) DO UPDATE SET paused = ?3, updated_at = ?4",
        )?
        .execute(params![host, name, paused, now])?;
        // The flag is by name, not by registry row; the state is what the worker turns to.
        let (kind, state) = if paused {
            ("worker_paused", WorkerState::Paused)
        } else {
            ("worker_resumed", WorkerState::Running)
        };
        event(tx, now, kind, None, None, Some(state.as_str()), Some(name))?;
        Ok(())
    })
}

pub(super) fn paused(s: &SqliteStore, host: &str, name: &str) -> Result<bool> {
    let run = || -> rusqlite::Result<bool> {
        let mut st = s
            .conn
            .prepare_cached("SELECT paused FROM worker_controls WHERE host = ?1 AND name = ?2")?;
        let mut rows = st.query(params![host, name])?;
        Ok(match rows.next()? {
            Some(r) => r.get::<_, i64>(0)? != 0,
            None => false,
        })
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn running_jobs(s: &SqliteStore) -> Result<Vec<RunningJob>> {
    let run = || -> rusqlite::Result<Vec<RunningJob>> {
        let mut st = s.conn.prepare_cached(
            "SELECT j.id, j.attempt, a.lease, j.worker_id, a.started_at, j.timeout_ms,
                    j.kill_grace_ms
             FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt
             WHERE j.state = 'running'",
        )?;
        let v = st
            .query_map([], |r| {
                Ok(RunningJob {
                    job_id: r.get(0)?,
                    attempt: r.get(1)?,
                    lease: r.get(2)?,
                    worker_id: r.get(3)?,
                    started_at: Timestamp(r.get(4)?),
                    timeout: r
                        .get::<_, Option<i64>>(5)?
                        .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
                    kill_grace: std::time::Duration::from_millis(r.get::<_, i64>(6)?.max(0) as u64),
                })
            })?
            .collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn outcomes(
    s: &SqliteStore,
    worker: WorkerId,
    since: Timestamp,
) -> Result<OutcomeCounts> {
    let run = || -> rusqlite::Result<OutcomeCounts> {
        let mut st = s.conn.prepare_cached(
            "SELECT outcome, count(*) FROM attempts
             WHERE worker_id = ?1 AND ended_at >= ?2 GROUP BY outcome",
        )?;
        let mut counts = OutcomeCounts::default();
        let mut rows = st.query(params![worker, since.0])?;
        while let Some(r) = rows.next()? {
            let outcome: Option<String> = r.get(0)?;
            let n = r.get::<_, i64>(1)? as u64;
            match outcome.and_then(|o| o.parse::<Outcome>().ok()) {
                Some(Outcome::Succeeded) => counts.succeeded += n,
                Some(o) if o.counts_as_failure() => counts.failed += n,
                _ => counts.other += n,
            }
        }
        Ok(counts)
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn store_id(s: &SqliteStore) -> Result<String> {
    s.conn
        .query_row(
            "SELECT value FROM store_info WHERE key = 'store_id'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| s.err(e))
}

pub(super) fn diagnose(s: &SqliteStore) -> Result<Diagnosis> {
    let version: i64 = s
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| s.err(e))?;
    Ok(Diagnosis {
        backend: "sqlite".into(),
        location: s.path().display().to_string(),
        schema_version: version,
        latest_schema: super::schema::latest_version(),
        server: None,
        connections: None,
        clock_skew_ms: None,
        journal_mode: Some(s.journal_mode().to_string()),
        network_fs: super::on_network_fs(s.path()),
        integrity: s.quick_check()?,
    })
}
