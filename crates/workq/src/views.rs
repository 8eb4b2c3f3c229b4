//! The JSON documents that the CLI's `--json` and `workq serve`'s API both return: one
//! function each, so a shape cannot differ between the two (README "JSON output").

use std::time::Duration;

use serde_json::{json, Value};
use workq::{CancelOutcome, RetryOutcome};
use workq_core::{Attempt, Job, JobId, Timestamp, WorkerRecord};
use workq_runtime::procinfo;
use workq_store::{QueueStats, Store};

use crate::error::CliError;
use crate::render;

/// Jobs per transaction in bulk cancel and retry.
const BATCH: usize = 500;

/// Heartbeat age past which a live worker is shown as hung (`status`, `workers list`).
pub const HUNG_AFTER: Duration = Duration::from_secs(60);

/// `status --json`: every queue with its counts, every live worker.
pub fn status(store: &dyn Store) -> Result<Value, CliError> {
    let stats = store.queue_stats()?;
    let workers = store.workers(false)?;
    Ok(status_doc(
        &stats,
        &workers,
        Timestamp::now(),
        &procinfo::hostname(),
        &procinfo::boot_id(),
    ))
}

/// The `status --json` document of these counts and live workers, seen from `host`/`boot`.
pub fn status_doc(
    stats: &[QueueStats],
    workers: &[WorkerRecord],
    now: Timestamp,
    host: &str,
    boot: &str,
) -> Value {
    let queues: Vec<_> = stats
        .iter()
        .map(|q| {
            let serving = workers
                .iter()
                .filter(|w| w.queues.contains(&q.queue))
                .count();
            json!({
                "queue": q.queue, "queued": q.queued, "scheduled": q.scheduled,
                "running": q.running, "succeeded": q.succeeded, "failed": q.failed,
                "cancelled": q.cancelled, "paused": q.paused, "workers": serving,
                "mean_duration_secs": q.mean_duration_ms.map(|m| m / 1000.0),
            })
        })
        .collect();
    let ws: Vec<_> = workers
        .iter()
        .map(|w| {
            let s = procinfo::display_state(w, host, boot, now, HUNG_AFTER);
            render::json::worker(w, s, now)
        })
        .collect();
    json!({"queues": queues, "workers": ws})
}

/// `show ID --json`: the job with its attempts.
pub fn job_detail(client: &workq::Client, id: JobId) -> Result<Value, CliError> {
    let job = client.get(id)?;
    let attempts = client.store().attempts(id)?;
    Ok(job_detail_doc(&job, &attempts, Timestamp::now()))
}

/// The `show ID --json` document: the job object with its attempts.
pub fn job_detail_doc(job: &Job, attempts: &[Attempt], now: Timestamp) -> Value {
    let mut v = render::json::job(job, now);
    v["attempts"] = attempts.iter().map(render::json::attempt).collect();
    v
}

/// One `workers list --json` row: the worker object plus when and why it ended, and its CPU
/// and memory use where this host can see its process (else `null`).
pub fn worker_row(w: &WorkerRecord, state: &str, now: Timestamp) -> Value {
    // CPU and memory where they can be read: a live worker of this host.
    let stats = (w.state.is_live()
        && w.host == procinfo::hostname()
        && procinfo::process_alive(w.pid, w.pid_start_time))
    .then(|| procinfo::stats(w.pid))
    .flatten();
    worker_row_with(w, state, now, stats.map(|s| (s.cpu_percent, s.rss_bytes)))
}

/// [`worker_row`] with the process's `(cpu_percent, rss_bytes)` given.
pub fn worker_row_with(
    w: &WorkerRecord,
    state: &str,
    now: Timestamp,
    usage: Option<(f64, u64)>,
) -> Value {
    let mut o = render::json::worker(w, state, now);
    if let Some(obj) = o.as_object_mut() {
        obj.insert(
            "stopped_at".into(),
            json!(w.stopped_at.map(|t| t.to_rfc3339())),
        );
        obj.insert("stop_reason".into(), json!(w.stop_reason));
        obj.insert(
            "cpu_percent".into(),
            json!(usage.map(|(cpu, _)| (cpu * 10.0).round() / 10.0)),
        );
        obj.insert("rss_bytes".into(), json!(usage.map(|(_, rss)| rss)));
    }
    o
}

/// What `cancel` did to each job: `{"id", "state", "detail"}` rows in the order asked, and
/// the ids that do not exist (which have a `not_found` row too).
pub struct CancelReport {
    /// One row per id.
    pub rows: Vec<Value>,
    /// Ids with no job.
    pub missing: Vec<JobId>,
}

/// Cancels `ids`; with `wait`, waits (bounded by the longest kill grace) until the running
/// ones have stopped, so their rows say how they ended.
pub fn cancel(client: &workq::Client, ids: &[JobId], wait: bool) -> Result<CancelReport, CliError> {
    // In batches: a long selection must not hold the store's write lock for long.
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH) {
        out.extend(client.cancel(chunk)?);
    }
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    let mut pending = Vec::new();
    for o in &out {
        match *o {
            CancelOutcome::Cancelled(id) => {
                rows.push(cancel_row(id, "cancelled", "it had not started", true));
            }
            CancelOutcome::Requested(id, _) => {
                pending.push(id);
                rows.push(Value::Null);
            }
            CancelOutcome::AlreadyDone(id, st) => {
                rows.push(cancel_row(
                    id,
                    st.as_str(),
                    &format!("it had already {st}"),
                    false,
                ));
            }
            CancelOutcome::NotFound(id) => {
                missing.push(id);
                rows.push(cancel_row(id, "not_found", "no such job", false));
            }
        }
    }
    if !pending.is_empty() && wait {
        wait_stopped(client, &pending)?;
    }
    let mut next = pending.iter();
    for (row, o) in rows.iter_mut().zip(&out) {
        if !matches!(o, CancelOutcome::Requested(..)) {
            continue;
        }
        let Some(&id) = next.next() else { break };
        let j = client.get(id)?;
        let detail = if j.state.is_terminal() {
            "it was running; its process group was stopped".to_string()
        } else {
            format!(
                "cancel requested; worker {} has not stopped it yet",
                j.worker_name.as_deref().unwrap_or("?")
            )
        };
        *row = cancel_row(id, j.display_state(Timestamp::now()), &detail, true);
    }
    Ok(CancelReport { rows, missing })
}

/// `done`: this cancel stopped the job or asked its worker to (false: it had ended, or is not
/// there), so bulk answers show partial success row by row.
pub fn cancel_row(id: JobId, state: &str, detail: &str, done: bool) -> Value {
    json!({"id": id, "state": state, "detail": detail, "done": done})
}

/// Waits until the running jobs `pending` have stopped, for at most the longest kill grace
/// among them and a little more.
fn wait_stopped(client: &workq::Client, pending: &[JobId]) -> Result<(), CliError> {
    let grace = pending
        .iter()
        .filter_map(|id| client.get(*id).ok())
        .map(|j| j.spec.kill_grace)
        .max()
        .unwrap_or(Duration::from_secs(10));
    let deadline = std::time::Instant::now() + grace + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let jobs = client.jobs(pending)?;
        if jobs.iter().all(|j| j.state.is_terminal()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// What `retry` did to each job: `{"id", "result"}` rows, whether any was not retryable, and
/// the ids that do not exist.
pub struct RetryReport {
    /// One row per id.
    pub rows: Vec<Value>,
    /// Some job was in a state that cannot be retried.
    pub refused: bool,
    /// Ids with no job.
    pub missing: Vec<JobId>,
}

/// Queues failed or cancelled `ids` again.
pub fn retry(client: &workq::Client, ids: &[JobId]) -> Result<RetryReport, CliError> {
    let mut report = RetryReport {
        rows: Vec::new(),
        refused: false,
        missing: Vec::new(),
    };
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH) {
        out.extend(client.retry(chunk)?);
    }
    for o in out {
        let done = matches!(o, RetryOutcome::Requeued(_));
        let (id, result) = match o {
            RetryOutcome::Requeued(id) => (id, "queued".to_string()),
            RetryOutcome::NotRetryable(id, st) => {
                report.refused = true;
                (
                    id,
                    format!(
                        "not retried: it is {st} (only failed or cancelled jobs can be retried)"
                    ),
                )
            }
            RetryOutcome::NotFound(id) => {
                report.missing.push(id);
                (id, "not found".to_string())
            }
        };
        report.rows.push(retry_row(id, &result, done));
    }
    Ok(report)
}

/// One `retry --json` row: `done` when the job was queued again.
pub fn retry_row(id: JobId, result: &str, done: bool) -> Value {
    json!({"id": id, "result": result, "done": done})
}

/// A selection of jobs by filter, for the bulk forms of `cancel` and `retry` (CLI and API).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only these states (`queued`, `scheduled`, `waiting`, `running`, `failed`, …); empty:
    /// the command's default.
    pub states: Vec<String>,
    /// Only jobs with all these labels.
    pub labels: Vec<(String, String)>,
}

impl Selection {
    /// True when no filter is set (a bulk action then needs ids).
    pub fn is_empty(&self) -> bool {
        self.queue.is_none() && self.states.is_empty() && self.labels.is_empty()
    }

    /// The ids of the jobs selected, newest first; `default_states` when no state is given.
    /// A state name that does not exist is a usage error naming it.
    pub fn ids(
        &self,
        client: &workq::Client,
        default_states: &[&str],
    ) -> Result<Vec<JobId>, CliError> {
        let names: Vec<String> = if self.states.is_empty() {
            default_states.iter().map(|s| s.to_string()).collect()
        } else {
            self.states.clone()
        };
        let mut filter = workq::ListFilter {
            queue: self.queue.clone(),
            labels: self.labels.clone(),
            ..workq::ListFilter::default()
        };
        for s in &names {
            let st: workq_core::JobState = s.trim().parse().map_err(CliError::usage)?;
            if names.len() == 1 {
                // Kinds of queued (ARCHITECTURE.md §3.1) narrow the selection when asked alone.
                filter.scheduled_only = s.trim() == "scheduled";
                filter.waiting_only = s.trim() == "waiting";
            }
            if !filter.states.contains(&st) {
                filter.states.push(st);
            }
        }
        Ok(client.list(&filter)?.into_iter().map(|j| j.id).collect())
    }
}

/// The state people see: the registry state refined by liveness on this host.
pub fn shown_state(w: &WorkerRecord, now: Timestamp, hung_after: Duration) -> String {
    procinfo::display_state(
        w,
        &procinfo::hostname(),
        &procinfo::boot_id(),
        now,
        hung_after,
    )
    .to_string()
}

/// Live workers, and the latest row of each name that ended in the last day, except temporary
/// workers: each has a name of its own, so every `submit --wait` would add a row.
pub fn worth_listing(w: &WorkerRecord, all: &[WorkerRecord], now: Timestamp) -> bool {
    if w.state.is_live() {
        return true;
    }
    if is_temporary(w) {
        return false;
    }
    let latest = all
        .iter()
        .filter(|o| o.name == w.name && o.host == w.host)
        .max_by_key(|o| o.id)
        .map(|o| o.id);
    let day = Duration::from_secs(24 * 3600);
    let recent = w.stopped_at.is_none_or(|t| now.since(t) <= day);
    latest == Some(w.id) && recent
}

/// A worker that `submit --wait` or `run --wait` started for the length of one command: named
/// `temp-PID` or `run-PID` and registered without settings (ARCHITECTURE.md §5.11).
pub fn is_temporary(w: &WorkerRecord) -> bool {
    let numbered = |prefix: &str| {
        w.name
            .strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    w.settings.is_none() && (numbered("temp-") || numbered("run-"))
}

/// `workers list --json`: live workers and recently ended ones (every row with `all`).
pub fn workers(store: &dyn Store, all: bool, hung_after: Duration) -> Result<Value, CliError> {
    let now = store.now();
    let every = store.workers(true)?;
    let rows: Vec<Value> = every
        .iter()
        .filter(|w| all || worth_listing(w, &every, now))
        .map(|w| worker_row(w, &shown_state(w, now, hung_after), now))
        .collect();
    Ok(Value::Array(rows))
}

/// Sets the pause flag of the workers `names` of `host` (`worker pause`/`resume`), wakes this
/// host's workers, and waits up to 2 s for running ones to acknowledge, so a status read right
/// after shows the new state. One `{"name", "paused", "running"}` row per name.
pub fn set_paused(
    client: &workq::Client,
    host: &str,
    names: &[String],
    paused: bool,
) -> Result<Vec<Value>, CliError> {
    use workq_runtime::control::{self, Found};
    let store = client.store();
    let run_dir = client.run_dir();
    let mine = host == procinfo::hostname();
    let mut out = Vec::new();
    for name in names {
        store.set_worker_paused(host, name, paused)?;
        let running = if mine {
            matches!(control::find(store, &run_dir, name)?, Found::Running(_))
        } else {
            store
                .workers(false)?
                .iter()
                .any(|w| w.host == host && &w.name == name)
        };
        out.push(pause_row(name, paused, running));
    }
    workq_runtime::doorbell::ring_all(&run_dir);
    let want = if paused {
        workq_core::WorkerState::Paused
    } else {
        workq_core::WorkerState::Running
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while mine && std::time::Instant::now() < deadline {
        let pending = store.workers(false)?.into_iter().any(|w| {
            w.host == host
                && names.contains(&w.name)
                && matches!(
                    w.state,
                    workq_core::WorkerState::Running | workq_core::WorkerState::Paused
                )
                && w.state != want
                && procinfo::process_alive(w.pid, w.pid_start_time)
        });
        if !pending {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(out)
}

/// One `worker pause`/`resume --json` row: `running` when such a worker is running now.
pub fn pause_row(name: &str, paused: bool, running: bool) -> Value {
    json!({"name": name, "paused": paused, "running": running})
}
