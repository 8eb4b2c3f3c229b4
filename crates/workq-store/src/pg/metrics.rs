//! The event log's reads and appends, and the O(queues) reads behind `workq serve`'s
//! `/metrics` and throughput chart, on PostgreSQL.

use workq_core::{JobId, JobState, Timestamp, WorkerId};

use super::stmt::{q1, qy, Cols};
use super::transitions::event;
use super::PgStore;
use crate::shared::MetricsBuilder;
use crate::{QueueMetrics, Result, StoredEvent, ThroughputPoint};

/// Up to `limit` events with an id above `after`, in id order.
///
/// Ids come from an identity column, taken at insert: a transaction that took a lower id may
/// commit after a higher one was read, so a row can appear below an id already returned.
/// Nothing here holds readers back (serializing event writers at commit would serialize every
/// claim and finish of every worker): a reader that must miss nothing re-reads a window below
/// its position and drops ids it has seen (`workq serve` re-reads the last 1000 ids).
pub(super) fn events_after(s: &PgStore, after: i64, limit: u32) -> Result<Vec<StoredEvent>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    s.with(|c| {
        qy(
            &s.stmts,
            c,
            "SELECT id, at, kind, job_id, worker_id, state, detail FROM events
             WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &i64::from(limit)],
        )?
        .iter()
        .map(|r| {
            const T: &str = "events";
            Ok(StoredEvent {
                id: r.col(T, 0)?,
                at: Timestamp(r.col(T, 1)?),
                kind: r.col(T, 2)?,
                job_id: r.col(T, 3)?,
                worker_id: r.col(T, 4)?,
                state: r.col(T, 5)?,
                detail: r.col(T, 6)?,
            })
        })
        .collect()
    })
}

pub(super) fn last_event_id(s: &PgStore) -> Result<i64> {
    s.with(|c| {
        Ok(q1(&s.stmts, c, "SELECT coalesce(max(id), 0) FROM events", &[])?.col("events", 0)?)
    })
}

/// `(xmin, xmax)` of a snapshot taken now (the `txid_*` functions exist from PostgreSQL 8.3
/// to today, unlike `pg_current_snapshot`, which came in 13).
pub(super) fn commit_horizon(s: &PgStore) -> Result<(i64, i64)> {
    s.with(|c| {
        let row = q1(
            &s.stmts,
            c,
            "SELECT txid_snapshot_xmin(txid_current_snapshot()), txid_snapshot_xmax(txid_current_snapshot())",
            &[],
        )?;
        Ok((row.col("events", 0)?, row.col("events", 1)?))
    })
}

pub(super) fn record_event(
    s: &PgStore,
    kind: &str,
    job: Option<JobId>,
    worker: Option<WorkerId>,
    detail: &str,
) -> Result<i64> {
    let now = s.now_ms();
    // A kind that names a job state is that state; anything else (`api`, …) changes none.
    let state = kind.parse::<JobState>().ok().map(JobState::as_str);
    // Notifies, like every write of an event.
    s.write(true, |tx| {
        event(&s.stmts, tx, now, kind, job, worker, state, Some(detail))?;
        Ok(q1(
            &s.stmts,
            tx,
            "SELECT currval(pg_get_serial_sequence('events', 'id'))",
            &[],
        )?
        .col("events", 0)?)
    })
}

/// The earliest `run_at` among the jobs of `queue` ready at `now`: a loose index scan of
/// `jobs_ready` (one seek per distinct priority of ready jobs, two more per queue), so neither
/// the number of ready jobs nor waiting ones (absent from that index) matter.
const OLDEST_READY: &str = "
    WITH RECURSIVE p(pr) AS (
        SELECT (SELECT priority FROM jobs
                WHERE state = 'queued' AND deps_pending = 0 AND queue = $1
                ORDER BY priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT priority FROM jobs
                WHERE state = 'queued' AND deps_pending = 0 AND queue = $1 AND priority < p.pr
                ORDER BY priority DESC LIMIT 1)
        FROM p WHERE p.pr IS NOT NULL)
    SELECT min((SELECT run_at FROM jobs
                WHERE state = 'queued' AND deps_pending = 0 AND queue = $1 AND priority = p.pr
                  AND run_at <= $2
                ORDER BY run_at LIMIT 1))
    FROM p WHERE p.pr IS NOT NULL";

/// Every queue named by a count or a tally.
const QUEUES: &str = "SELECT queue FROM queue_counts UNION SELECT queue FROM attempt_totals
                      UNION SELECT queue FROM histograms";
/// Ended attempts by queue and outcome.
const ATTEMPTS: &str = "SELECT queue, outcome, n FROM attempt_totals ORDER BY queue, outcome";
/// Every histogram bucket of every queue.
const HISTOGRAMS: &str = "SELECT queue, kind, bucket, n, sum_ms FROM histograms";

pub(super) fn queue_metrics(s: &PgStore) -> Result<Vec<QueueMetrics>> {
    let now = s.now_ms();
    s.with(|c| {
        let mut m = MetricsBuilder::default();
        // O(queues) rows of the tallies, then O(priorities) index seeks per queue: never a scan
        // of jobs (checked by the ignored test below with a million jobs).
        let names: Vec<String> = qy(&s.stmts, c, QUEUES, &[])?
            .iter()
            .map(|r| r.col("queue_counts", 0))
            .collect::<std::result::Result<_, _>>()?;
        for q in &names {
            m.queue(q);
        }
        for r in qy(&s.stmts, c, ATTEMPTS, &[])? {
            const T: &str = "attempt_totals";
            let queue: String = r.col(T, 0)?;
            m.attempts(&queue, r.col(T, 1)?, r.col(T, 2)?);
        }
        for r in qy(&s.stmts, c, HISTOGRAMS, &[])? {
            const T: &str = "histograms";
            let (queue, kind): (String, String) = (r.col(T, 0)?, r.col(T, 1)?);
            m.histogram(&queue, &kind, r.col(T, 2)?, r.col(T, 3)?, r.col(T, 4)?);
        }
        for q in &names {
            let at: Option<i64> = q1(&s.stmts, c, OLDEST_READY, &[q, &now])?.col("jobs", 0)?;
            m.queue(q).oldest_ready_at = at.map(Timestamp);
        }
        Ok(m.finish())
    })
}

pub(super) fn throughput(
    s: &PgStore,
    since: Timestamp,
    bucket: std::time::Duration,
) -> Result<Vec<ThroughputPoint>> {
    let width = (bucket.as_millis() as i64).max(1);
    s.with(|c| {
        // A range of the jobs_finished index: only jobs that ended since `since` are read.
        qy(
            &s.stmts,
            c,
            "SELECT queue, (finished_at / $2) * $2 AS at,
                    count(*) FILTER (WHERE state = 'succeeded'),
                    count(*) FILTER (WHERE state IN ('failed', 'cancelled'))
             FROM jobs
             WHERE finished_at IS NOT NULL AND finished_at >= $1
               AND state IN ('succeeded', 'failed', 'cancelled')
             GROUP BY 2, 1 ORDER BY 2, 1",
            &[&since.0, &width],
        )?
        .iter()
        .map(|r| {
            const T: &str = "jobs";
            Ok(ThroughputPoint {
                queue: r.col(T, 0)?,
                at: Timestamp(r.col(T, 1)?),
                succeeded: r.col::<i64>(T, 2)?.max(0) as u64,
                failed: r.col::<i64>(T, 3)?.max(0) as u64,
            })
        })
        .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::{PgOptions, Store};

    /// With a million jobs (inserted by SQL, then analysed), no query of `queue_metrics` scans
    /// jobs, and it answers in milliseconds. Run with
    /// `cargo test -p workq-store --lib -- --ignored --nocapture pg_queue_metrics`.
    #[test]
    #[ignore = "slow: a million jobs in PostgreSQL"]
    fn pg_queue_metrics_with_a_million_jobs() {
        let cluster = crate::pgtest::shared().unwrap_or_else(|e| panic!("no PostgreSQL: {e}"));
        let url = {
            let c = cluster.lock().unwrap_or_else(|p| p.into_inner());
            c.create_db(&format!("metrics_{}", std::process::id()))
                .unwrap_or_else(|e| panic!("create db: {e}"))
        };
        let opts = PgOptions {
            clock: Arc::new(crate::ManualClock::new(Timestamp(1_700_000_000_000))),
            ..Default::default()
        };
        let s = PgStore::open(&url, opts).unwrap_or_else(|e| panic!("open: {e}"));
        let now = Store::now(&s).0;
        let mut c = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let t = Instant::now();
        // A million queued jobs over four queues and three priorities; every tenth waits on
        // a dependency, every hundredth is scheduled later.
        // Without triggers (1,000,000 updates of one queue_counts row in one transaction is
        // quadratic: each walks the row's chain of versions); the counts are made after.
        c.batch_execute(&format!(
            "SET search_path = workq;
             SET session_replication_role = replica;
             INSERT INTO jobs (queue, state, priority, run_at, deps_pending, argv, backoff_ms,
                               kill_grace_ms, created_at)
             SELECT (ARRAY['alpha','beta','gamma','delta'])[1 + i % 4], 'queued', i % 3,
                    CASE WHEN i % 100 = 0 THEN {now} + 3600000 ELSE {now} - i END,
                    CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END, '[\"echo\"]', 0, 0, {now}
             FROM generate_series(1, 1000000) i;
             INSERT INTO queue_counts (queue, state, n)
                 SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;
             ANALYZE jobs;"
        ))
        .unwrap_or_else(|e| panic!("insert: {e}"));
        eprintln!("1,000,000 jobs inserted in {:?}", t.elapsed());
        let oldest = OLDEST_READY
            .replace("$1", "'alpha'")
            .replace("$2", &now.to_string());
        for sql in [QUEUES, ATTEMPTS, HISTOGRAMS, oldest.as_str()] {
            let text = format!("EXPLAIN {sql}");
            let lines: Vec<String> = c
                .query(&text, &[])
                .unwrap_or_else(|e| panic!("explain: {e}"))
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            eprintln!("{}", lines.join("\n"));
            assert!(
                lines
                    .iter()
                    .all(|l| !l.contains("Seq Scan on jobs")
                        && !l.contains("Bitmap Heap Scan on jobs")),
                "queue_metrics must not scan jobs: {lines:#?}"
            );
        }
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let m = s
                .queue_metrics()
                .unwrap_or_else(|e| panic!("queue_metrics: {e}"));
            times.push(t.elapsed());
            assert_eq!(m.len(), 4);
            assert!(m.iter().all(|q| q.oldest_ready_at.is_some()));
        }
        times.sort();
        eprintln!(
            "PostgreSQL queue_metrics with 1,000,000 jobs: median {:?}, min {:?}, max {:?}",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
}
