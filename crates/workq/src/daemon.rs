//! Starting a worker as a daemon under its monitor, for `worker start -d`, `worker restart` and
//! `up`.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::json;
use workq_runtime::control::{self, Found};
use workq_runtime::{daemon, WorkerSettings};

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
    let mut args = global_args(ctx);
    args.extend(["worker", subcommand].map(OsString::from));
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
    let mut msg = format!(
        "worker {} did not start after {} attempt(s): {}",
        settings.name, e.attempts, e.reason
    );
    if !e.log_tail.is_empty() {
        msg.push_str(&format!(
            "\nlast lines of {}:\n  {}",
            settings.log_file.display(),
            e.log_tail.join("\n  ")
        ));
    }
    let kind = ErrorKind::from_exit_code(e.code);
    CliError::new(kind, msg).with_hint(format!(
        "see the whole log: less {}",
        settings.log_file.display()
    ))
}
