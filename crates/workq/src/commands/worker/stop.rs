//! `workq worker stop` and `workq worker restart`.

use std::time::Duration;

use serde_json::json;
use workq_runtime::control::{self, Found, Stopped};
use workq_runtime::{pidfile, procinfo, WorkerSettings};

use crate::context::Context;
use crate::daemon::start_daemon;
use crate::error::{code, CliError, CmdResult};
use crate::flag_values;
use crate::worker_settings::name_of;

/// Stop workers
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Sends SIGTERM (to the monitor of a daemon, which passes it on): the worker stops claiming\nand lets its jobs finish. After the timeout, the monitor, the worker and every process of\nits running jobs get SIGKILL, and those jobs go back to the queue (outcome `interrupted`).\nA PID file that names an unrelated process is reported stale and nothing is signalled."
)]
pub struct StopArgs {
    /// Worker name [default: default]
    #[arg(conflicts_with = "all")]
    pub(super) name: Option<String>,
    /// Stop every local worker
    #[arg(long)]
    all: bool,
    /// Seconds (or a duration) before SIGKILL [default: the worker's stop timeout + 15s]
    #[arg(short = 't', long = "timeout", value_name = "SECS", value_parser = flag_values::seconds)]
    timeout: Option<Duration>,
}

/// Restart a worker
#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// Worker name [default: default]
    pub(super) name: Option<String>,
    /// New number of slots (other settings are kept)
    #[arg(short = 'w', long = "workers")]
    slots: Option<u32>,
    /// Seconds (or a duration) before SIGKILL when stopping
    #[arg(short = 't', long = "timeout", value_name = "SECS", value_parser = flag_values::seconds)]
    timeout: Option<Duration>,
}

/// Runs `workq worker stop`.
pub fn stop(ctx: &Context, a: StopArgs) -> CmdResult {
    let timeout = a.timeout;
    let named = (!a.all).then(|| name_of(a.name)).transpose()?;
    if let (Some(name), false) = (&named, ctx.store_exists()) {
        return Err(unknown_worker(name, &[], &[]));
    }
    let Some(client) = ctx.client_if_exists()? else {
        return Ok(0);
    };
    let run_dir = client.state_dir().join("run");
    let names = match named {
        None => control::local_names(client.store(), &run_dir)?,
        Some(name) => {
            check_known(client.store(), &run_dir, &name)?;
            vec![name]
        }
    };
    if names.is_empty() && !ctx.quiet {
        eprintln!("workq: no local workers to stop");
    }
    let mut refused = false;
    let mut report = Vec::new();
    for name in names {
        let mut steps = Vec::new();
        let outcome = control::stop(client.store(), &run_dir, &name, timeout, &mut |m| {
            if !ctx.json && !ctx.quiet {
                println!("{m}");
            }
            steps.push(m);
        })?;
        refused |= outcome == Stopped::Refused;
        report.push(json!({
            "name": name,
            "result": match outcome {
                Stopped::NotRunning => "not_running",
                Stopped::Gracefully => "stopped",
                Stopped::Killed => "killed",
                Stopped::Refused => "refused",
            },
            "steps": steps,
        }));
    }
    if ctx.json {
        println!("{}", serde_json::Value::Array(report));
    }
    Ok(if refused { code::UNAVAILABLE } else { 0 })
}

/// Refuses a name no worker of this host ever had (no PID file, no registry row), so that a
/// typo is not reported as a worker that stopped; a worker that has stopped is fine (stopping
/// is idempotent).
fn check_known(
    store: &dyn workq_store::Store,
    run_dir: &std::path::Path,
    name: &str,
) -> Result<(), CliError> {
    let host = procinfo::hostname();
    let pid_files: Vec<String> = pidfile::list(run_dir).into_iter().map(|(n, _)| n).collect();
    let workers = store.workers(true)?;
    if pid_files.iter().any(|n| n == name)
        || workers.iter().any(|w| w.name == name && w.host == host)
    {
        return Ok(());
    }
    // Temporary workers (`submit --wait`) are no names anyone stops.
    let mut known: Vec<String> = workers
        .iter()
        .filter(|w| w.host == host && w.settings.is_some())
        .map(|w| w.name.clone())
        .chain(pid_files)
        .collect();
    known.sort();
    known.dedup();
    let mut elsewhere: Vec<String> = workers
        .into_iter()
        .filter(|w| w.name == name)
        .map(|w| w.host)
        .collect();
    elsewhere.sort();
    elsewhere.dedup();
    Err(unknown_worker(name, &known, &elsewhere))
}

/// The error for a worker name never seen on this host: the names that are known here, or the
/// hosts where that name runs.
fn unknown_worker(name: &str, known: &[String], elsewhere: &[String]) -> CliError {
    let hint = if !elsewhere.is_empty() {
        format!(
            "a worker named {name} is registered on {}: stop it there",
            elsewhere.join(", ")
        )
    } else if known.is_empty() {
        "no worker has run on this host; `workq workers list` shows the workers of every host"
            .to_string()
    } else {
        format!(
            "workers known on this host: {}; `workq workers list` shows them all",
            known.join(", ")
        )
    };
    CliError::not_found(format!("no worker named {name} on this host")).with_hint(hint)
}

/// Runs `workq worker restart`: stop, then start as a daemon with the same settings.
pub fn restart(ctx: &Context, a: RestartArgs) -> CmdResult {
    let name = name_of(a.name)?;
    let timeout = a.timeout;
    let client = ctx.client()?;
    let run_dir = client.state_dir().join("run");
    let store = client.store();
    // The settings it runs with now, else those it last registered with, else the defaults.
    let mut settings = match control::find(store, &run_dir, &name)? {
        Found::Running(r) => r.settings,
        _ => None,
    }
    .or_else(|| {
        let host = procinfo::hostname();
        store.workers(true).ok()?.into_iter().rev().find_map(|w| {
            (w.name == name && w.host == host)
                .then(|| {
                    w.settings
                        .as_deref()
                        .and_then(|s| WorkerSettings::from_json(s).ok())
                })
                .flatten()
        })
    })
    .unwrap_or_else(|| WorkerSettings::defaults(&name, &ctx.state_dir));
    for key in workq_runtime::SETTING_KEYS {
        if settings.sources.get(key).is_some_and(|s| s != "default") {
            settings.set_source(key, "kept by restart");
        }
    }
    if let Some(w) = a.slots {
        if w == 0 {
            return Err(CliError::usage("-w/--workers must be at least 1"));
        }
        settings.slots = w;
        settings.set_source("slots", "flag -w");
    }
    settings.daemon = true;
    let outcome = control::stop(store, &run_dir, &name, timeout, &mut |m| {
        if !ctx.quiet && !ctx.json {
            println!("{m}");
        }
    })?;
    if outcome == Stopped::Refused {
        return Ok(code::UNAVAILABLE);
    }
    drop(client);
    start_daemon(ctx, settings)
}
