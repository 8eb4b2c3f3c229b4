//! `workq store migrate --to postgres://…`: copy a whole SQLite store into PostgreSQL.

use postgres::types::ToSql;
use rusqlite::types::ValueRef;

use super::stmt::Cols;
use super::{PgStore, TxErr};
use crate::{Result, StoreError};

#[derive(Clone, Copy)]
enum Col {
    Int,
    Text,
    Bool,
}

/// Tables in dependency-free order, with their columns as both stores name them.
const TABLES: &[(&str, &[(&str, Col)])] = &[
    (
        "queues",
        &[
            ("name", Col::Text),
            ("paused", Col::Bool),
            ("concurrency", Col::Int),
        ],
    ),
    (
        "jobs",
        &[
            ("id", Col::Int),
            ("queue", Col::Text),
            ("state", Col::Text),
            ("priority", Col::Int),
            ("run_at", Col::Int),
            ("deps_pending", Col::Int),
            ("argv", Col::Text),
            ("env", Col::Text),
            ("cwd", Col::Text),
            ("labels", Col::Text),
            ("retries", Col::Int),
            ("backoff_ms", Col::Int),
            ("timeout_ms", Col::Int),
            ("kill_grace_ms", Col::Int),
            ("unique_key", Col::Text),
            ("idempotency_key", Col::Text),
            ("attempt", Col::Int),
            ("failures", Col::Int),
            ("rescues", Col::Int),
            ("max_rescues", Col::Int),
            ("lease", Col::Int),
            ("worker_id", Col::Int),
            ("cancel_requested", Col::Bool),
            ("exit_code", Col::Int),
            ("last_error", Col::Text),
            ("created_at", Col::Int),
            ("started_at", Col::Int),
            ("finished_at", Col::Int),
            ("container", Col::Text),
        ],
    ),
    ("deps", &[("after_id", Col::Int), ("job_id", Col::Int)]),
    (
        "attempts",
        &[
            ("job_id", Col::Int),
            ("attempt", Col::Int),
            ("worker_id", Col::Int),
            ("host", Col::Text),
            ("lease", Col::Int),
            ("pid", Col::Int),
            ("pgid", Col::Int),
            ("pid_start_time", Col::Int),
            ("started_at", Col::Int),
            ("ended_at", Col::Int),
            ("outcome", Col::Text),
            ("exit_code", Col::Int),
            ("signal", Col::Int),
            ("error", Col::Text),
            ("log_path", Col::Text),
        ],
    ),
    (
        "workers",
        &[
            ("id", Col::Int),
            ("name", Col::Text),
            ("host", Col::Text),
            ("boot_id", Col::Text),
            ("pid", Col::Int),
            ("pid_start_time", Col::Int),
            ("queues", Col::Text),
            ("slots", Col::Int),
            ("state", Col::Text),
            ("started_at", Col::Int),
            ("heartbeat_at", Col::Int),
            ("stopped_at", Col::Int),
            ("stop_reason", Col::Text),
            ("jobs_done", Col::Int),
            ("jobs_failed", Col::Int),
            ("version", Col::Text),
            ("mode", Col::Text),
            ("settings", Col::Text),
        ],
    ),
    (
        "worker_controls",
        &[
            ("host", Col::Text),
            ("name", Col::Text),
            ("paused", Col::Bool),
            ("updated_at", Col::Int),
        ],
    ),
    (
        "events",
        &[
            ("id", Col::Int),
            ("at", Col::Int),
            ("kind", Col::Text),
            ("job_id", Col::Int),
            ("worker_id", Col::Int),
            ("state", Col::Text),
            ("detail", Col::Text),
        ],
    ),
    // Last: copying attempts fires the claim tally trigger, whose rows these replace.
    (
        "attempt_totals",
        &[
            ("queue", Col::Text),
            ("outcome", Col::Text),
            ("n", Col::Int),
        ],
    ),
    (
        "histograms",
        &[
            ("queue", Col::Text),
            ("kind", Col::Text),
            ("bucket", Col::Int),
            ("n", Col::Int),
            ("sum_ms", Col::Int),
        ],
    ),
];

/// Tables kept by triggers as other tables are copied, emptied again right before their own
/// copy: the source's tallies include attempts it has purged since.
const TALLIES: &[&str] = &["attempt_totals", "histograms"];

/// One table read from SQLite: its name, columns, and each row as text and as integers.
type TableRows = (
    &'static str,
    &'static [(&'static str, Col)],
    Vec<Vec<Option<String>>>,
    Vec<Vec<Option<i64>>>,
);

/// Rows copied per table.
pub type CopyReport = Vec<(String, u64)>;

/// Reads every table of the SQLite database `src`, and its store id.
fn read_sqlite(src: &std::path::Path) -> Result<(Vec<TableRows>, Option<String>)> {
    let display = src.display().to_string();
    let sq = rusqlite::Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Unavailable {
            path: display.clone(),
            reason: e.to_string(),
        })?;
    let sq_err = |e: rusqlite::Error| StoreError::Backend {
        path: display.clone(),
        detail: e.to_string(),
    };
    let mut data: Vec<TableRows> = Vec::new();
    for (table, cols) in TABLES {
        let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
        let mut st = sq
            .prepare(&format!("SELECT {} FROM {table}", names.join(", ")))
            .map_err(sq_err)?;
        let mut texts = Vec::new();
        let mut ints = Vec::new();
        let mut rows = st.query([]).map_err(sq_err)?;
        while let Some(r) = rows.next().map_err(sq_err)? {
            let mut t = Vec::with_capacity(cols.len());
            let mut n = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                let (text, int) = both_ways(r.get_ref(i).map_err(sq_err)?);
                t.push(text);
                n.push(int);
            }
            texts.push(t);
            ints.push(n);
        }
        data.push((table, cols, texts, ints));
    }
    let store_id: Option<String> = sq
        .query_row(
            "SELECT value FROM store_info WHERE key = 'store_id'",
            [],
            |r| r.get(0),
        )
        .ok();
    Ok((data, store_id))
}

/// A SQLite value as text and as an integer, so either column kind can take it.
fn both_ways(v: ValueRef<'_>) -> (Option<String>, Option<i64>) {
    match v {
        ValueRef::Null => (None, None),
        ValueRef::Integer(v) => (Some(v.to_string()), Some(v)),
        ValueRef::Real(v) => (Some(v.to_string()), Some(v as i64)),
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            let s = String::from_utf8_lossy(b).into_owned();
            let n = s.parse().ok();
            (Some(s), n)
        }
    }
}

/// Inserts the rows of one table.
fn copy_table(
    tx: &mut postgres::Transaction<'_>,
    (table, cols, texts, ints): &TableRows,
) -> std::result::Result<u64, TxErr> {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let st = tx.prepare(&format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    ))?;
    for (t, n) in texts.iter().zip(ints) {
        let bools: Vec<Option<bool>> = n.iter().map(|v| v.map(|x| x != 0)).collect();
        let args: Vec<&(dyn ToSql + Sync)> = cols
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| match kind {
                Col::Int => &n[i] as &(dyn ToSql + Sync),
                Col::Text => &t[i] as &(dyn ToSql + Sync),
                Col::Bool => &bools[i] as &(dyn ToSql + Sync),
            })
            .collect();
        tx.execute(&st, &args)?;
    }
    Ok(texts.len() as u64)
}

impl PgStore {
    /// Copies every table of the SQLite database `src` into this store in one transaction.
    /// Refuses a target that already holds jobs or workers unless `replace`, which empties it
    /// first. The store id is carried over, so the jobs' process markers keep matching.
    pub fn import_sqlite(&self, src: &std::path::Path, replace: bool) -> Result<CopyReport> {
        // Read everything first: the copy is one PostgreSQL transaction.
        let (data, store_id) = read_sqlite(src)?;
        self.write(true, |tx| {
            let existing: i64 = tx
                .query_one("SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM workers)", &[])?
                .col("jobs", 0)?;
            if existing > 0 && !replace {
                return Err(TxErr::Store(StoreError::Conflict(format!(
                    "{} already holds {existing} jobs and workers; nothing was copied",
                    self.display
                ))));
            }
            tx.batch_execute(
                "TRUNCATE queues, jobs, deps, attempts, workers, worker_controls, events, queue_counts,
                     attempt_totals, histograms RESTART IDENTITY",
            )?;
            let mut report = Vec::new();
            for rows in &data {
                if TALLIES.contains(&rows.0) {
                    tx.execute(&format!("DELETE FROM {}", rows.0), &[])?;
                }
                report.push((rows.0.to_string(), copy_table(tx, rows)?));
            }
            for table in ["jobs", "workers", "events"] {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('workq.{table}', 'id'),
                                       greatest((SELECT max(id) FROM {table}), 1))"
                    ),
                    &[],
                )?;
            }
            if let Some(id) = &store_id {
                tx.execute("UPDATE store_info SET value = $1 WHERE key = 'store_id'", &[id])?;
            }
            Ok(report)
        })
    }
}
