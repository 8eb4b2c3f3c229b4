//! The event log's reads and appends, and the O(queues) reads behind `workq serve`'s
//! `/metrics` and throughput chart.

use rusqlite::params;
use workq_core::{JobId, JobState, Timestamp, WorkerId};

use super::transitions::event;
use super::{Durability, SqliteStore};
use crate::shared::MetricsBuilder;
use crate::{QueueMetrics, Result, StoredEvent, ThroughputPoint};

/// Up to `limit` events with an id above `after`, in id order. SQLite writers are serialized
/// by the write lock, so ids commit in order: a reader never sees a later id before an earlier.
pub(super) fn events_after(s: &SqliteStore, after: i64, limit: u32) -> Result<Vec<StoredEvent>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let run = || -> rusqlite::Result<Vec<StoredEvent>> {
        let mut st = s.conn.prepare_cached(
            "SELECT id, at, kind, job_id, worker_id, state, detail FROM events
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let v = st
            .query_map(params![after, i64::from(limit)], |r| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    at: Timestamp(r.get(1)?),
                    kind: r.get(2)?,
                    job_id: r.get(3)?,
                    worker_id: r.get(4)?,
                    state: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?
            .collect();
        v
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn last_event_id(s: &SqliteStore) -> Result<i64> {
    s.conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM events")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(|e| s.err(e))
}

pub(super) fn record_event(
    s: &SqliteStore,
    kind: &str,
    job: Option<JobId>,
    worker: Option<WorkerId>,
    detail: &str,
) -> Result<i64> {
    let now = s.now();
    // A kind that names a job state is that state; anything else (`api`, …) changes none.
    let state = kind.parse::<JobState>().ok().map(JobState::as_str);
    // Durable: an audit row of what an operator was told was done.
    s.write(Durability::Full, |tx| {
        event(tx, now, kind, job, worker, state, Some(detail))?;
        Ok(tx.last_insert_rowid())
    })
}

/// The earliest `run_at` among the jobs of `queue` ready at `now`: a loose index scan of
/// `jobs_ready` (one seek per distinct priority of ready jobs, two more per queue), so neither
/// the number of ready jobs nor waiting ones (absent from that index) matter.
const OLDEST_READY: &str = "
    WITH RECURSIVE p(pr) AS (
        SELECT (SELECT priority FROM jobs INDEXED BY jobs_ready
                WHERE state = 'queued' AND deps_pending = 0 AND queue = ?1
                ORDER BY priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT priority FROM jobs INDEXED BY jobs_ready
                WHERE state = 'queued' AND deps_pending = 0 AND queue = ?1 AND priority < p.pr
                ORDER BY priority DESC LIMIT 1)
        FROM p WHERE p.pr IS NOT NULL)
    SELECT min((SELECT run_at FROM jobs INDEXED BY jobs_ready
                WHERE state = 'queued' AND deps_pending = 0 AND queue = ?1 AND priority = p.pr
                  AND run_at <= ?2
                ORDER BY run_at LIMIT 1))
    FROM p WHERE p.pr IS NOT NULL";

/// Every queue named by a count or a tally.
const QUEUES: &str = "SELECT queue FROM queue_counts UNION SELECT queue FROM attempt_totals
                      UNION SELECT queue FROM histograms";
/// Ended attempts by queue and outcome.
const ATTEMPTS: &str = "SELECT queue, outcome, n FROM attempt_totals ORDER BY queue, outcome";
/// Every histogram bucket of every queue.
const HISTOGRAMS: &str = "SELECT queue, kind, bucket, n, sum_ms FROM histograms";

pub(super) fn queue_metrics(s: &SqliteStore) -> Result<Vec<QueueMetrics>> {
    let now = s.now();
    let run = || -> rusqlite::Result<Vec<QueueMetrics>> {
        let mut m = MetricsBuilder::default();
        // O(queues) rows of the tallies, then O(priorities) index seeks per queue: never a scan
        // of jobs (checked by the test below).
        let mut st = s.conn.prepare_cached(QUEUES)?;
        let names: Vec<String> = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for q in &names {
            m.queue(q);
        }
        let mut st = s.conn.prepare_cached(ATTEMPTS)?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let queue: String = r.get(0)?;
            m.attempts(&queue, r.get(1)?, r.get(2)?);
        }
        let mut st = s.conn.prepare_cached(HISTOGRAMS)?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (queue, kind): (String, String) = (r.get(0)?, r.get(1)?);
            m.histogram(&queue, &kind, r.get(2)?, r.get(3)?, r.get(4)?);
        }
        let mut oldest = s.conn.prepare_cached(OLDEST_READY)?;
        for q in &names {
            let at: Option<i64> = oldest.query_row(params![q, now], |r| r.get(0))?;
            m.queue(q).oldest_ready_at = at.map(Timestamp);
        }
        Ok(m.finish())
    };
    run().map_err(|e| s.err(e))
}

pub(super) fn throughput(
    s: &SqliteStore,
    since: Timestamp,
    bucket: std::time::Duration,
) -> Result<Vec<ThroughputPoint>> {
    let width = (bucket.as_millis() as i64).max(1);
    let run = || -> rusqlite::Result<Vec<ThroughputPoint>> {
        // A range of the jobs_finished index: only jobs that ended since `since` are read.
        let mut st = s.conn.prepare_cached(
            "SELECT queue, (finished_at / ?2) * ?2 AS at,
                    sum(state = 'succeeded'), sum(state IN ('failed', 'cancelled'))
             FROM jobs INDEXED BY jobs_finished
             WHERE finished_at IS NOT NULL AND finished_at >= ?1
               AND state IN ('succeeded', 'failed', 'cancelled')
             GROUP BY at, queue ORDER BY at, queue",
        )?;
        let v = st
            .query_map(params![since.0, width], |r| {
                Ok(ThroughputPoint {
                    queue: r.get(0)?,
                    at: Timestamp(r.get(1)?),
                    succeeded: r.get::<_, i64>(2)?.max(0) as u64,
                    failed: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?
            .collect();
        v
    };
    run().map_err(|e| s.err(e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::{SqliteOptions, Store};

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let opts = SqliteOptions {
            clock: Arc::new(crate::ManualClock::new(Timestamp(1_700_000_000_000))),
            ..Default::default()
        };
        match SqliteStore::open(&dir.path().join("workq.db"), opts) {
            Ok(s) => s,
            Err(e) => panic!("open: {e}"),
        }
    }

    /// The plan of `sql` (with `args`), one line per step.
    fn plan(s: &SqliteStore, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let mut st = match s.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")) {
            Ok(st) => st,
            Err(e) => panic!("explain {sql}: {e}"),
        };
        let rows = st.query_map(args, |r| r.get::<_, String>(3));
        match rows.and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>()) {
            Ok(v) => v,
            Err(e) => panic!("explain {sql}: {e}"),
        }
    }

    /// No query of `queue_metrics` scans jobs: the tallies are read whole (O(queues) rows) and
    /// jobs only through index seeks; `throughput` reads a range of `jobs_finished`.
    #[test]
    fn metrics_never_scan_jobs() {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let s = store(&dir);
        // The store's own clock, in ms (its inherent `now`).
        let now = s.now();
        for sql in [QUEUES, ATTEMPTS, HISTOGRAMS] {
            let p = plan(&s, sql, &[]);
            assert!(p.iter().all(|l| !l.contains("jobs")), "{sql}: {p:?}");
        }
        let p = plan(&s, OLDEST_READY, &[&"default", &now]);
        for line in p.iter().filter(|l| l.contains("jobs")) {
            assert!(
                line.starts_with("SEARCH jobs USING") && line.contains("INDEX jobs_ready ("),
                "oldest ready must seek jobs_ready: {p:?}"
            );
        }
        let width = 60_000i64;
        let p = plan(
            &s,
            "SELECT queue, (finished_at / ?2) * ?2 AS at FROM jobs INDEXED BY jobs_finished
             WHERE finished_at IS NOT NULL AND finished_at >= ?1",
            &[&now, &width],
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("SEARCH jobs USING INDEX jobs_finished (finished_at>?)")),
            "throughput reads a range of jobs_finished: {p:?}"
        );
    }

    /// `queue_metrics` with a million jobs stored: run with
    /// `cargo test -p workq-store --release --lib -- --ignored --nocapture million`.
    #[test]
    #[ignore = "slow: inserts a million jobs"]
    fn queue_metrics_with_a_million_jobs() {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let s = store(&dir);
        let t = Instant::now();
        let queues = ["alpha", "beta", "gamma", "delta"];
        for batch in 0..100 {
            let specs: Vec<workq_core::JobSpec> = (0..10_000)
                .map(|i| {
                    let mut sp = workq_core::JobSpec::new(
                        queues[i % queues.len()],
                        vec!["echo".into(), format!("{batch}-{i}")],
                    );
                    sp.priority = (i % 3) as i32;
                    sp
                })
                .collect();
            if let Err(e) = s.submit(&specs) {
                panic!("submit: {e}");
            }
        }
        eprintln!("1,000,000 jobs submitted in {:?}", t.elapsed());
        // Some finished attempts, so the tallies have rows.
        let reg = crate::WorkerRegistration {
            name: "w".into(),
            host: "h".into(),
            boot_id: "b".into(),
            pid: 1,
            pid_start_time: 1,
            queues: queues.iter().map(|q| q.to_string()).collect(),
            slots: 100,
            version: "0".into(),
            settings: None,
        };
        let w = s
            .register_worker(&reg)
            .unwrap_or_else(|e| panic!("register: {e}"));
        let qs: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
        for _ in 0..10 {
            let got = s
                .claim(w, &qs, 100)
                .unwrap_or_else(|e| panic!("claim: {e}"));
            let results: Vec<crate::FinishRequest> = got
                .iter()
                .map(|c| crate::FinishRequest {
                    job_id: c.id,
                    lease: c.lease,
                    outcome: workq_core::Outcome::Succeeded,
                    exit_code: Some(0),
                    signal: None,
                    error: None,
                })
                .collect();
            s.finish(w, &results)
                .unwrap_or_else(|e| panic!("finish: {e}"));
        }
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let m = s
                .queue_metrics()
                .unwrap_or_else(|e| panic!("queue_metrics: {e}"));
            times.push(t.elapsed());
            assert_eq!(m.len(), queues.len());
            assert!(m.iter().all(|q| q.oldest_ready_at.is_some()));
        }
        times.sort();
        eprintln!(
            "queue_metrics with 1,000,000 jobs: median {:?}, min {:?}, max {:?}",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
        assert!(times[times.len() / 2] < std::time::Duration::from_millis(20));
    }
}
