//! `workq serve status`: whether the background server runs, where, and since when.

use serde_json::json;
use workq_runtime::control::{self, Found};
use workq_runtime::{pidfile, procinfo};

use crate::context::Context;
use crate::error::{code, CmdResult};
use crate::render::{self, table::Table};

/// Show the background server
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 if the background server runs, 3 if it does not (never started, stopped,\ncrash-looping, or a stale PID file), 5 if its PID file names processes that cannot be\nverified. Uptime is the server process's, since its last (re)start."
)]
pub struct StatusArgs {}

/// What `serve status` shows.
struct View {
    running: bool,
    state: &'static str,
    note: Option<String>,
    pid: Option<i32>,
    monitor_pid: Option<i32>,
    listen: Option<String>,
    started_at: Option<String>,
    uptime_secs: Option<u64>,
}

/// What the PID file and `/proc` say of the background server.
fn view(found: &Found) -> View {
    match found {
        Found::Running(r) => {
            let server_alive = r.worker.start_time != 0;
            let listen = r.info.as_ref().and_then(|i| i.listen.clone());
            let (state, note) = if !server_alive {
                (
                    "restarting",
                    Some("its monitor is restarting it".to_string()),
                )
            } else if listen.is_none() {
                ("starting", None)
            } else {
                ("running", None)
            };
            let pid = server_alive.then_some(r.worker.pid);
            View {
                running: true,
                state,
                note,
                pid,
                monitor_pid: r.monitor.map(|m| m.pid),
                listen,
                started_at: r.info.as_ref().map(|i| i.started_at.clone()),
                uptime_secs: pid.and_then(procinfo::stats).map(|s| s.uptime.as_secs()),
            }
        }
        Found::NotRunning(note) => View {
            running: false,
            state: if note.as_deref().is_some_and(|n| n.contains("crash-looping")) {
                "crash-looping"
            } else {
                "not running"
            },
            note: note.clone(),
            ..not_running()
        },
        Found::Unsure(note) => View {
            running: false,
            state: "unknown",
            note: Some(note.clone()),
            ..not_running()
        },
    }
}

fn not_running() -> View {
    View {
        running: false,
        state: "not running",
        note: None,
        pid: None,
        monitor_pid: None,
        listen: None,
        started_at: None,
        uptime_secs: None,
    }
}

/// Runs `workq serve status`: 0 if the server runs, 3 if not, 5 if it cannot be verified (as
/// `worker status` exits 3 for a worker it does not know).
pub fn status(ctx: &Context, _a: StatusArgs) -> CmdResult {
    let run_dir = ctx.state_dir.join("run");
    let found = control::find_server(&run_dir);
    let v = view(&found);
    let log_file = workq_runtime::server_log_file(&ctx.state_dir);
    let url = v.listen.as_ref().map(|l| format!("http://{l}/"));
    if ctx.json {
        println!(
            "{}",
            json!({
                "running": v.running, "state": v.state, "url": url, "listen": v.listen,
                "pid": v.pid, "monitor_pid": v.monitor_pid, "started_at": v.started_at,
                "uptime_secs": v.uptime_secs, "log_file": log_file,
                "pid_file": pidfile::server_path(&run_dir), "note": v.note,
                "state_dir": ctx.state_dir,
            })
        );
    } else {
        let state = ctx.paint(v.state, render::state_color(v.state));
        println!("server: {state}");
        let mut lines: Vec<(&str, String)> = Vec::new();
        if let Some(n) = &v.note {
            lines.push(("note", n.clone()));
        }
        if let Some(u) = &url {
            lines.push(("url", u.clone()));
        }
        if v.running {
            let mut pid = v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            if let Some(m) = v.monitor_pid {
                pid.push_str(&format!(" (monitor {m})"));
            }
            lines.push(("pid", pid));
        }
        if let Some(secs) = v.uptime_secs {
            lines.push((
                "uptime",
                workq_core::format_duration(std::time::Duration::from_secs(secs)),
            ));
        }
        lines.push(("log", log_file.display().to_string()));
        if !v.running {
            lines.push(("start", "workq serve -d".into()));
        }
        let mut t = Table::new(&["", ""]);
        for (k, val) in lines {
            t.row(vec![format!("  {k}"), val]);
        }
        // Key/value lines read the same on a terminal and in a pipe.
        for line in t.render(true).lines().skip(1) {
            println!("{}", line.trim_end());
        }
    }
    Ok(match found {
        Found::Running(_) => 0,
        Found::Unsure(_) => code::UNAVAILABLE,
        Found::NotRunning(_) => code::NOT_FOUND,
    })
}
