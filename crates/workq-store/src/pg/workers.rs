//! The worker registry on PostgreSQL, the rescue of a dead worker's jobs, and store facts.

use workq_core::lifecycle;
use workq_core::{Attempt, Outcome, Timestamp, WorkerId, WorkerRecord, WorkerState};

use super::rows::{self, ATTEMPT_COLUMNS, WORKER_COLUMNS};
use super::stmt::{ex, q1, qo, qy, Cols};
use super::transitions::{self, event};
use super::PgStore;
use crate::{
    Diagnosis, Heartbeat, OutcomeCounts, RescueKind, Rescued, Result, RunningJob,
    WorkerRegistration,
};

pub(super) fn register(s: &PgStore, reg: &WorkerRegistration) -> Result<WorkerId> {
    let now = s.now_ms();
    let queues = serde_json::to_string(&reg.queues).unwrap_or_else(|_| "[]".into());
    // Notifies: it writes an event (`workq serve` listens).
    s.write(true, |tx| {
        let id: i64 = q1(
            &s.stmts,
            tx,
            "INSERT INTO workers (name, host, boot_id, pid, pid_start_time, queues, slots, state,
                 started_at, heartbeat_at, version, settings)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'starting', $8, $8, $9, $10) RETURNING id",
            &[
                &reg.name,
                &reg.host,
                &reg.boot_id,
                &i64::from(reg.pid),
                &(reg.pid_start_time as i64),
                &queues,
                &i64::from(reg.slots),
                &now,
                &reg.version,
                &reg.settings,
            ],
        )?
        .col("workers", 0)?;
        event(
            &s.stmts,
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

pub(super) fn heartbeat(s: &PgStore, worker: WorkerId, state: WorkerState) -> Result<Heartbeat> {
    let now = s.now_ms();
    s.with(|c| {
        // One statement, as before: a change of state (starting to running, running to paused
        // or draining) also appends a worker event and wakes the log's readers; a heartbeat
        // that changes nothing writes no event and notifies no one.
        let row = q1(
            &s.stmts,
            c,
            "WITH old AS (SELECT state FROM workers WHERE id = $1),
             upd AS (UPDATE workers SET heartbeat_at = $2, state = $3
                     WHERE id = $1 AND state NOT IN ('stopped', 'dead', 'crash-looping')
                     RETURNING id, name),
             ev AS (INSERT INTO events (at, kind, worker_id, state, detail)
                    SELECT $2, 'worker_state', upd.id, $3, upd.name FROM upd, old
                    WHERE old.state <> $3
                    RETURNING id)
             SELECT (SELECT count(*) FROM upd),
                    (SELECT count(*) FROM (SELECT pg_notify($4, '') FROM ev) n)",
            &[&worker, &now, &state.as_str(), &super::EVENTS_CHANNEL],
        )?;
        let changed: i64 = row.col("workers", 0)?;
        Ok(if changed == 0 {
            Heartbeat::Ended
        } else {
            Heartbeat::Alive
        })
    })
}

pub(super) fn stopped(s: &PgStore, worker: WorkerId, reason: &str) -> Result<()> {
    let now = s.now_ms();
    s.write(true, |tx| {
        ex(
            &s.stmts,
            tx,
            "UPDATE workers SET state = 'stopped', stopped_at = $2, stop_reason = $3, heartbeat_at = $2
             WHERE id = $1",
            &[&worker, &now, &reason],
        )?;
        event(
            &s.stmts,
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

pub(super) fn list(s: &PgStore, include_ended: bool) -> Result<Vec<WorkerRecord>> {
    let sql = if include_ended {
        format!("SELECT {WORKER_COLUMNS} FROM workers w ORDER BY w.id")
    } else {
        format!(
            "SELECT {WORKER_COLUMNS} FROM workers w
             WHERE w.state NOT IN ('stopped', 'dead', 'crash-looping') ORDER BY w.id"
        )
    };
    s.with(|c| {
        qy(&s.stmts, c, &sql, &[])?
            .iter()
            .map(|r| Ok(rows::worker_from_row(r)?))
            .collect()
    })
}

pub(super) fn running_attempts(s: &PgStore, worker: WorkerId) -> Result<Vec<Attempt>> {
    s.with(|c| {
        qy(
            &s.stmts,
            c,
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM jobs j JOIN attempts a
                     ON a.job_id = j.id AND a.attempt = j.attempt
                 WHERE j.worker_id = $1 AND j.state = 'running'"
            ),
            &[&worker],
        )?
        .iter()
        .map(|r| Ok(rows::attempt_from_row(r)?))
        .collect()
    })
}

pub(super) fn rescue(
    s: &PgStore,
    worker: WorkerId,
    reason: &str,
    how: RescueKind,
) -> Result<Vec<Rescued>> {
    let now = s.now_ms();
    s.write(true, |tx| {
        // The row first: a claim by this worker holds it FOR SHARE (pg/claim.rs), so no claim
        // can slip in between the read of its running jobs and the end of the row.
        qo(
            &s.stmts,
            tx,
            "SELECT 1 FROM workers WHERE id = $1 FOR UPDATE",
            &[&worker],
        )?;
        let running = transitions::running_on(&s.stmts, tx, worker)?;
        let mut out = Vec::with_capacity(running.len());
        for (id, attempt, facts) in running {
            let d = lifecycle::after_rescue(&facts, worker, how, reason, Timestamp(now));
            transitions::apply(&s.stmts, tx, id, attempt, &d, None, None, worker, now)?;
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
        let changed = ex(
            &s.stmts,
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
            event(
                &s.stmts,
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

pub(super) fn mark_crash_looping(s: &PgStore, worker: WorkerId, reason: &str) -> Result<()> {
    let now = s.now_ms();
    s.write(true, |tx| {
        ex(
            &s.stmts,
            tx,
            "UPDATE workers SET state = 'crash-looping', stop_reason = $3,
                 stopped_at = coalesce(stopped_at, $2) WHERE id = $1",
            &[&worker, &now, &reason],
        )?;
        event(
            &s.stmts,
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

pub(super) fn prune(s: &PgStore, before: Timestamp) -> Result<u64> {
    s.write(false, |tx| {
        Ok(ex(
            &s.stmts,
            tx,
            "DELETE FROM workers
             WHERE stopped_at IS NOT NULL AND stopped_at < $1
               AND state IN ('stopped', 'dead', 'crash-looping')
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.state = 'running' AND j.worker_id = workers.id)",
            &[&before.0],
        )?)
    })
}

pub(super) fn set_paused(s: &PgStore, host: &str, name: &str, paused: bool) -> Result<()> {
    let now = s.now_ms();
    s.write(true, |tx| {
        ex(
            &s.stmts,
            tx,
            "INSERT INTO worker_controls (host, name, paused, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (host, name) DO UPDATE SET paused = $3, updated_at = $4",
            &[&host, &name, &paused, &now],
        )?;
        // The flag is by name, not by registry row; the state is what the worker turns to.
        let (kind, state) = if paused {
            ("worker_paused", WorkerState::Paused)
        } else {
            ("worker_resumed", WorkerState::Running)
        };
        event(
            &s.stmts,
            tx,
            now,
            kind,
            None,
            None,
            Some(state.as_str()),
            Some(name),
        )?;
        Ok(())
    })
}

pub(super) fn paused(s: &PgStore, host: &str, name: &str) -> Result<bool> {
    s.with(|c| {
        let row = qo(
            &s.stmts,
            c,
            "SELECT paused FROM worker_controls WHERE host = $1 AND name = $2",
            &[&host, &name],
        )?;
        Ok(match row {
            Some(r) => r.col("worker_controls", 0)?,
            None => false,
        })
    })
}

pub(super) fn running_jobs(s: &PgStore) -> Result<Vec<RunningJob>> {
    s.with(|c| {
        qy(
            &s.stmts,
            c,
            "SELECT j.id, j.attempt, a.lease, j.worker_id, a.started_at, j.timeout_ms, j.kill_grace_ms
             FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt
             WHERE j.state = 'running'",
            &[],
        )?
        .iter()
        .map(|r| {
            const T: &str = "jobs";
            Ok(RunningJob {
                job_id: r.col(T, 0)?,
                attempt: rows::u32_of(r.col(T, 1)?),
                lease: r.col(T, 2)?,
                worker_id: r.col(T, 3)?,
                started_at: Timestamp(r.col(T, 4)?),
                timeout: r.col::<Option<i64>>(T, 5)?.map(rows::ms),
                kill_grace: rows::ms(r.col(T, 6)?),
            })
        })
        .collect()
    })
}

pub(super) fn outcomes(s: &PgStore, worker: WorkerId, since: Timestamp) -> Result<OutcomeCounts> {
    s.with(|c| {
        let mut counts = OutcomeCounts::default();
        for r in qy(
            &s.stmts,
            c,
            "SELECT outcome, count(*) FROM attempts WHERE worker_id = $1 AND ended_at >= $2 GROUP BY outcome",
            &[&worker, &since.0],
        )? {
            let outcome: Option<String> = r.col("attempts", 0)?;
            let n = r.col::<i64>("attempts", 1)?.max(0) as u64;
            match outcome.and_then(|o| o.parse::<Outcome>().ok()) {
                Some(Outcome::Succeeded) => counts.succeeded += n,
                Some(o) if o.counts_as_failure() => counts.failed += n,
                _ => counts.other += n,
            }
        }
        Ok(counts)
    })
}

pub(super) fn store_id(s: &PgStore) -> Result<String> {
    s.with(|c| {
        Ok(q1(
            &s.stmts,
            c,
            "SELECT value FROM store_info WHERE key = 'store_id'",
            &[],
        )?
        .col("store_info", 0)?)
    })
}

pub(super) fn diagnose(s: &PgStore) -> Result<Diagnosis> {
    s.with(|c| {
        let version: i64 = q1(
            &s.stmts,
            c,
            "SELECT coalesce(max(version), 0) FROM meta",
            &[],
        )?
        .col("meta", 0)?;
        let before = s.now_ms();
        let r = q1(
            &s.stmts,
            c,
            "SELECT current_setting('server_version'),
                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    current_setting('max_connections')::bigint",
            &[],
        )?;
        let after = s.now_ms();
        let server: String = r.col("pg_settings", 0)?;
        let server_ms: i64 = r.col("pg_settings", 1)?;
        let sessions: i64 = r.col("pg_stat_activity", 2)?;
        let max: i64 = r.col("pg_settings", 3)?;
        Ok(Diagnosis {
            backend: "postgres".into(),
            location: s.display.clone(),
            schema_version: version,
            latest_schema: super::schema::latest_version(),
            server: Some(format!("PostgreSQL {server}")),
            connections: Some((sessions.max(0) as u64, max.max(0) as u64)),
            clock_skew_ms: Some(server_ms - before / 2 - after / 2),
            journal_mode: None,
            network_fs: false,
            integrity: "ok".into(),
        })
    })
}
