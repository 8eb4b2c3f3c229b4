//! `workq worker status`: whether local workers run, with their processes, jobs and queues.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use workq_core::{format_duration, Timestamp, WorkerRecord};
use workq_runtime::control::{self, Found};
use workq_runtime::{procinfo, WorkerSettings};

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::render::{self, table::Table};
use crate::worker_settings::name_of;

/// Show local workers
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 if the worker runs, 1 if it is known but not running (stopped, dead,\ncrash-looping), 3 if no worker of that name was ever seen here. CPU % is CPU time over\nwall time since the worker started, like `ps -o %cpu`."
)]
pub struct StatusArgs {
    /// Worker name [default: every local worker]
    pub(super) name: Option<String>,
}

/// Everything `worker status` shows for one worker.
struct StatusView {
    name: String,
    running: bool,
    state: String,
    note: Option<String>,
    pid: Option<i32>,
    monitor_pid: Option<i32>,
    record: Option<WorkerRecord>,
    stats: Option<procinfo::ProcStats>,
    log_file: Option<PathBuf>,
}

/// What is known of the local worker `name`: its process, registry row and settings.
fn view(
    store: &dyn workq_store::Store,
    run_dir: &std::path::Path,
    name: &str,
) -> Result<StatusView, CliError> {
    let host = procinfo::hostname();
    let records: Vec<WorkerRecord> = store
        .workers(true)?
        .into_iter()
        .filter(|w| w.name == name && w.host == host)
        .collect();
    let found = control::find(store, run_dir, name)?;
    let (running, pid, monitor_pid, worker_id, settings, note) = match &found {
        Found::Running(r) => (
            true,
            Some(r.worker.pid),
            r.monitor.map(|m| m.pid),
            r.worker_id,
            r.settings.clone(),
            (r.worker.start_time == 0).then(|| "its monitor is restarting it".to_string()),
        ),
        Found::NotRunning(n) => (false, None, None, None, None, n.clone()),
        Found::Unsure(n) => (false, None, None, None, None, Some(n.clone())),
    };
    let record = match worker_id {
        Some(id) => records.iter().find(|w| w.id == id).cloned(),
        None => records.last().cloned(),
    };
    let settings = settings.or_else(|| {
        record
            .as_ref()
            .and_then(|r| r.settings.as_deref())
            .and_then(|s| WorkerSettings::from_json(s).ok())
    });
    let hung_after = settings
        .as_ref()
        .map(|s| s.hung_after())
        .unwrap_or(Duration::from_secs(60));
    let state = state_of(
        &found,
        record.as_ref(),
        note.as_deref(),
        hung_after,
        store.now(),
    );
    let stats = pid.filter(|_| running).and_then(procinfo::stats);
    Ok(StatusView {
        name: name.to_string(),
        running,
        state,
        note,
        pid,
        monitor_pid,
        record,
        stats,
        log_file: settings.map(|s| s.log_file),
    })
}

/// The state shown: the registry's, refined by whether the process runs (`found`).
fn state_of(
    found: &Found,
    record: Option<&WorkerRecord>,
    note: Option<&str>,
    hung_after: Duration,
    now: Timestamp,
) -> String {
    let running = matches!(found, Found::Running(_));
    let live_state = |r: &WorkerRecord| {
        procinfo::display_state(
            r,
            &procinfo::hostname(),
            &procinfo::boot_id(),
            now,
            hung_after,
        )
        .to_string()
    };
    if let Found::Unsure(_) = found {
        "unknown".to_string()
    } else if running {
        match record {
            Some(r) if r.state.is_live() => live_state(r),
            _ if note.is_some() => "restarting".into(),
            _ => "starting".into(),
        }
    } else {
        match record {
            Some(r) if r.state.is_live() => live_state(r),
            Some(r) => r.state.as_str().to_string(),
            None if note.is_some_and(|n| n.contains("crash-looping")) => "crash-looping".into(),
            None => "not running".into(),
        }
    }
}

/// Runs `workq worker status`: 0 if it runs, 1 if known but not running, 3 if unknown.
pub fn status(ctx: &Context, a: StatusArgs) -> CmdResult {
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("{}", if a.name.is_some() { "null" } else { "[]" });
        }
        return Ok(if a.name.is_some() { code::NOT_FOUND } else { 0 });
    };
    let store = client.store();
    let run_dir = client.state_dir().join("run");
    let names = match &a.name {
        Some(n) => vec![name_of(Some(n.clone()))?],
        None => control::local_names(store, &run_dir)?,
    };
    let stats = store.queue_stats()?;
    let views: Vec<StatusView> = names
        .iter()
        .map(|n| view(store, &run_dir, n))
        .collect::<Result<_, _>>()?;
    let now = Timestamp::now();
    let to_json = |v: &StatusView| view_json(ctx, v, &stats, now);
    if ctx.json {
        match &a.name {
            Some(_) => println!("{}", to_json(&views[0])),
            None => println!(
                "{}",
                serde_json::Value::Array(views.iter().map(to_json).collect())
            ),
        }
    } else if views.is_empty() {
        println!("no local workers (start one with: workq worker start -d)");
    } else {
        for (i, v) in views.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_view(ctx, v, &stats);
        }
    }
    Ok(match (&a.name, views.first()) {
        (Some(_), Some(v)) if v.running => 0,
        (Some(_), Some(v)) if v.record.is_none() && v.note.is_none() => code::NOT_FOUND,
        (Some(_), Some(_)) => code::JOB_FAILED,
        _ => 0,
    })
}

/// The JSON shape of one worker: its registry row, process and queues.
fn view_json(
    ctx: &Context,
    v: &StatusView,
    stats: &[workq_store::QueueStats],
    now: Timestamp,
) -> serde_json::Value {
    let queues: Vec<_> = v
        .record
        .as_ref()
        .map(|r| r.queues.clone())
        .unwrap_or_default();
    let qcounts: Vec<_> = stats
        .iter()
        .filter(|q| queues.contains(&q.queue))
        .map(|q| {
            json!({"queue": q.queue, "queued": q.queued, "scheduled": q.scheduled,
                   "running": q.running, "succeeded": q.succeeded, "failed": q.failed,
                   "cancelled": q.cancelled})
        })
        .collect();
    let mut o = match &v.record {
        Some(r) => render::json::worker(r, &v.state, now),
        None => json!({"name": v.name, "state": v.state}),
    };
    if let Some(obj) = o.as_object_mut() {
        obj.insert("running".into(), json!(v.running));
        obj.insert(
            "pid".into(),
            json!(v.pid.or(v.record.as_ref().map(|r| r.pid))),
        );
        obj.insert("monitor_pid".into(), json!(v.monitor_pid));
        obj.insert(
            "cpu_percent".into(),
            json!(v.stats.map(|s| (s.cpu_percent * 10.0).round() / 10.0)),
        );
        obj.insert("rss_bytes".into(), json!(v.stats.map(|s| s.rss_bytes)));
        obj.insert("threads".into(), json!(v.stats.map(|s| s.threads)));
        obj.insert("log_file".into(), json!(v.log_file));
        obj.insert("state_dir".into(), json!(ctx.state_dir));
        obj.insert("queue_counts".into(), json!(qcounts));
        obj.insert("note".into(), json!(v.note));
        if !v.running {
            obj.insert("uptime_secs".into(), json!(null));
        } else if let Some(s) = v.stats {
            obj.insert("uptime_secs".into(), json!(s.uptime.as_secs()));
        }
    }
    o
}

/// The text of one worker: a heading line, then key/value lines.
fn print_view(ctx: &Context, v: &StatusView, stats: &[workq_store::QueueStats]) {
    let state = ctx.paint(&v.state, render::state_color(&v.state));
    println!("worker {}: {state}", v.name);
    let mut lines: Vec<(&'static str, String)> = Vec::new();
    if let Some(note) = &v.note {
        lines.push(("note", note.clone()));
    }
    if v.running {
        let mut pid = v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        if let Some(m) = v.monitor_pid {
            pid.push_str(&format!(" (monitor {m})"));
        }
        lines.push(("pid", pid));
    }
    if let Some(s) = v.stats {
        lines.push(("cpu", format!("{:.1}%", s.cpu_percent)));
        lines.push((
            "memory",
            format!("{:.1} MiB RSS", s.rss_bytes as f64 / 1048576.0),
        ));
        lines.push(("threads", s.threads.to_string()));
        lines.push(("uptime", format_duration(s.uptime)));
    }
    if let Some(r) = &v.record {
        lines.extend(record_lines(r, v.running, stats));
    }
    if let Some(l) = &v.log_file {
        lines.push(("log", l.display().to_string()));
    }
    lines.push(("state dir", ctx.state_dir.display().to_string()));
    let mut t = Table::new(&["", ""]);
    for (k, val) in lines {
        t.row(vec![format!("  {k}"), val]);
    }
    // Key/value lines read the same on a terminal and in a pipe.
    for line in t.render(true).lines().skip(1) {
        println!("{}", line.trim_end());
    }
}

/// What the registry says of a worker: slots, jobs, heartbeat, how it ended, its queues.
fn record_lines(
    r: &WorkerRecord,
    running: bool,
    stats: &[workq_store::QueueStats],
) -> Vec<(&'static str, String)> {
    let now = Timestamp::now();
    let mut lines = Vec::new();
    lines.push(("slots", format!("{} of {} in use", r.running_jobs, r.slots)));
    lines.push((
        "jobs",
        format!("{} done, {} failed", r.jobs_done, r.jobs_failed),
    ));
    lines.push((
        "heartbeat",
        format!("{} ago", format_duration(now.since(r.heartbeat_at))),
    ));
    if !running {
        if let (Some(at), Some(why)) = (r.stopped_at, &r.stop_reason) {
            lines.push(("ended", format!("{} ({why})", at.to_local_short())));
        }
    }
    for q in stats.iter().filter(|q| r.queues.contains(&q.queue)) {
        lines.push((
            "queue",
            format!(
                "{}: {} queued, {} scheduled, {} running, {} succeeded, {} failed",
                q.queue, q.queued, q.scheduled, q.running, q.succeeded, q.failed
            ),
        ));
    }
    if !stats.iter().any(|q| r.queues.contains(&q.queue)) {
        lines.push(("queues", format!("{} (no jobs yet)", r.queues.join(","))));
    }
    lines
}
