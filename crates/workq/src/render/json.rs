//! The stable `--json` shapes (documented in README): snake_case keys, RFC 3339 times.

use serde_json::{json, Value};
use workq_core::{Attempt, Job, Timestamp, WorkerRecord};

fn ts(t: Option<Timestamp>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

/// A job object.
pub fn job(j: &Job, now: Timestamp) -> Value {
    json!({
        "id": j.id,
        "queue": j.spec.queue,
        "state": j.display_state(now),
        "priority": j.spec.priority,
        "attempt": j.attempt,
        "max_attempts": j.max_attempts(),
        "command": j.spec.argv,
        "labels": j.spec.labels,
        "env": j.spec.env,
        "cwd": j.spec.cwd,
        "exit_code": j.exit_code,
        "created_at": ts(Some(j.created_at)),
        "run_at": ts(Some(j.run_at)),
        "started_at": ts(j.started_at),
        "finished_at": ts(j.finished_at),
        "worker": j.worker_name,
        "worker_id": j.worker_id,
        "last_error": j.last_error,
        "timeout_secs": j.spec.timeout.map(|d| d.as_secs_f64()),
        "unique_key": j.spec.unique_key,
        "idempotency_key": j.spec.idempotency_key,
        "rescues": j.rescues,
        "container": j.spec.container.as_ref().map(|c| json!({
            "runtime": c.runtime,
            "image": c.image,
            "user": c.user,
            "args": c.args,
        })),
    })
}

/// An attempt object.
pub fn attempt(a: &Attempt) -> Value {
    json!({
        "attempt": a.attempt,
        "outcome": a.outcome.map(|o| o.as_str()),
        "exit_code": a.exit_code,
        "signal": a.signal,
        "worker": a.worker_name,
        "host": a.host,
        "pid": a.pid,
        "started_at": ts(Some(a.started_at)),
        "ended_at": ts(a.ended_at),
        "error": a.error,
        "log_file": a.log_path,
    })
}

/// A worker object; `state` is the display state (idle/busy derived from running jobs).
pub fn worker(w: &WorkerRecord, state: &str, now: Timestamp) -> Value {
    let end = w.stopped_at.unwrap_or(now);
    json!({
        "id": w.id,
        "name": w.name,
        "host": w.host,
        "pid": w.pid,
        "state": state,
        "queues": w.queues,
        "slots": w.slots,
        "running_jobs": w.running_jobs,
        "jobs_done": w.jobs_done,
        "jobs_failed": w.jobs_failed,
        "started_at": ts(Some(w.started_at)),
        "heartbeat_at": ts(Some(w.heartbeat_at)),
        "uptime_secs": end.since(w.started_at).as_secs(),
        "version": w.version,
    })
}
