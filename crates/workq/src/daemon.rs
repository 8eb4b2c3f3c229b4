//! Starting a worker as a daemon under its monitor, for `worker start -d`, `worker restart` and
//! `up`; and the background server under its monitor, for `serve -d`.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::json;
use workq_runtime::control::{self, Found};
use workq_runtime::{daemon, ServerSettings, WorkerSettings};

use crate::context::Context;
use crate::error::{CliError, CmdResult, ErrorKind};

/// `--state-dir` and `--store` for re-executed processes, so they open the same store.
fn global_args(ctx: &Context) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--state-dir".into(), ctx.state_dir.clone().into_os_string()];
    v.extend(ctx.store_args().into_iter().map(OsString::from));
    v
}

/// This binary's command line for the hidden `worker SUBCOMMAND` (`_monitor` or `_run`): the
/// runtime re-executes it and does not know the CLI's grammar.
pub fn own_command(
    exe: std::path::PathBuf,
    ctx: &Context,
    subcommand: &str,
) -> daemon::CommandLine {
    own_command_of(exe, ctx, "worker", subcommand)
}

/// This binary's command line for the hidden `COMMAND SUBCOMMAND` (`worker` or `serve`, then
/// `_monitor` or `_run`). Only `--state-dir` and `--store` go on it: settings travel in the
/// environment, so a token never shows in `ps`.
pub fn own_command_of(
    exe: std::path::PathBuf,
    ctx: &Context,
    command: &str,
    subcommand: &str,
) -> daemon::CommandLine {
    let mut args = global_args(ctx);
    args.extend([command, subcommand].map(OsString::from));
    daemon::CommandLine { program: exe, args }
}

/// The error for starting a worker that runs already (with its pid when `found` has it).
pub fn already_running(name: &str, found: &Found) -> CliError {
    let pid = match found {
        Found::Running(r) => Some(r.worker.pid),
        _ => None,
    };
    CliError::worker_running(name, pid)
}

/// Starts the worker `settings` describe as a daemon and reports it (text or JSON); fails if a
/// worker of that name runs already or the daemon does not come up.
pub fn start_daemon(ctx: &Context, settings: WorkerSettings) -> CmdResult {
    let client = ctx.client()?;
    let run_dir = client.state_dir().join("run");
    let name = settings.name.clone();
    let found = control::find(client.store(), &run_dir, &name)?;
    if matches!(found, Found::Running(_)) {
        return Err(already_running(&name, &found));
    }
    drop(client);
    let exe = std::env::current_exe().map_err(CliError::current_exe)?;
    let quiet = ctx.quiet || ctx.json;
    let launched = daemon::launch(
        &own_command(exe, ctx, "_monitor"),
        &settings,
        Duration::from_secs(30),
        &mut |msg| {
            if !quiet {
                eprintln!("workq: {msg}");
            }
        },
    );
    match launched {
        Ok(l) => {
            report_started(ctx, &settings, &l);
            Ok(0)
        }
        Err(e) => Err(launch_failed(&settings, e)),
    }
}

/// A daemon that came up: its processes and where to look (text or JSON).
fn report_started(ctx: &Context, settings: &WorkerSettings, l: &daemon::Launched) {
    let name = &settings.name;
    if ctx.json {
        println!(
            "{}",
            json!({
                "name": name, "pid": l.worker_pid, "monitor_pid": l.monitor_pid,
                "worker_id": l.worker_id, "log_file": settings.log_file,
                "state_dir": ctx.state_dir,
            })
        );
    } else if !ctx.quiet {
        println!(
            "worker {name} started: pid {} (monitor pid {}), {} slot(s) on {}",
            l.worker_pid,
            l.monitor_pid,
            settings.slots,
            settings.queues.join(",")
        );
        println!("  log:    {}", settings.log_file.display());
        println!(
            "  watch:  workq worker status {name}   or   tail -f {}",
            settings.log_file.display()
        );
        println!("  stop:   workq worker stop {name}");
    }
}

/// A daemon that did not come up: why, with the end of its log, exiting as the daemon said.
fn launch_failed(settings: &WorkerSettings, e: daemon::LaunchError) -> CliError {
    let label = format!("worker {}", settings.name);
    failed_to_come_up(&label, &settings.log_file, e)
}

/// `label` (`worker NAME`, `the server`) did not come up: why, with the end of `log`.
fn failed_to_come_up(label: &str, log: &std::path::Path, e: daemon::LaunchError) -> CliError {
    let mut msg = format!(
        "{label} did not start after {} attempt(s): {}",
        e.attempts, e.reason
    );
    if !e.log_tail.is_empty() {
        msg.push_str(&format!(
            "\nlast lines of {}:\n  {}",
            log.display(),
            e.log_tail.join("\n  ")
        ));
    }
    let kind = ErrorKind::from_exit_code(e.code);
    CliError::new(kind, msg).with_hint(format!("see the whole log: less {}", log.display()))
}

/// The error for a second `serve -d` while a server runs (with its pids when known).
pub fn server_running(found: &Found) -> CliError {
    let pids = match found {
        Found::Running(r) => format!(
            " (pid {}{})",
            r.worker.pid,
            r.monitor
                .map(|m| format!(", monitor pid {}", m.pid))
                .unwrap_or_default()
        ),
        _ => String::new(),
    };
    let url = match found {
        Found::Running(r) => r
            .info
            .as_ref()
            .and_then(|i| i.listen.as_deref())
            .map(|l| format!(" at http://{l}/"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    CliError::conflict(format!("the server is already running{pids}{url}"))
        .with_hint("stop it first (workq serve stop), or see it with: workq serve status")
}

/// Starts the background server that `settings` describe under its monitor and reports where
/// it listens (text or JSON); fails if one runs already (exit 4) or it does not come up.
/// `guard` says how requests are guarded (token source, read-only), never the token.
pub fn start_server(ctx: &Context, settings: ServerSettings, guard: &str) -> CmdResult {
    let run_dir = ctx.state_dir.join("run");
    let found = control::find_server(&run_dir);
    if matches!(found, Found::Running(_)) {
        return Err(server_running(&found));
    }
    let exe = std::env::current_exe().map_err(CliError::current_exe)?;
    let quiet = ctx.quiet || ctx.json;
    let launched = daemon::launch_server(
        &own_command_of(exe, ctx, "serve", "_monitor"),
        &settings,
        Duration::from_secs(30),
        &mut |msg| {
            if !quiet {
                eprintln!("workq: {msg}");
            }
        },
    );
    let l = match launched {
        Ok(l) => l,
        Err(e) => {
            let log = settings.log_file.clone();
            return Err(failed_to_come_up("the server", &log, e));
        }
    };
    let url = format!("http://{}/", l.listen);
    if ctx.json {
        println!(
            "{}",
            json!({
                "url": url, "listen": l.listen, "pid": l.pid, "monitor_pid": l.monitor_pid,
                "log_file": settings.log_file,
            })
        );
    } else if ctx.quiet {
        // The URL alone, for `url=$(workq -q serve -d)`.
        println!("{url}");
    } else {
        println!("workq serve: listening on {url} ({guard}), in the background");
        println!("  pid:    {} (monitor pid {})", l.pid, l.monitor_pid);
        println!("  log:    {}", settings.log_file.display());
        println!("  status: workq serve status");
        println!("  stop:   workq serve stop");
    }
    Ok(0)
}

/// Reports a failure of a daemon's process on its readiness pipe, if it has one, and returns
/// it (for the hidden `_monitor` and `_run` subcommands).
pub fn report_failure(ready: &mut Option<std::fs::File>, e: CliError) -> CmdResult {
    if let Some(w) = ready.as_mut() {
        workq_runtime::ready::send(
            w,
            &workq_runtime::ready::Report::Error {
                code: e.exit_code(),
                message: e.message().to_string(),
            },
        );
    }
    Err(e)
}
