//! `workq workers list|cleanup`: the registry of every worker on every host.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use workq_core::{format_duration, Timestamp, WorkerRecord};
use workq_runtime::{control, doorbell, pidfile, procinfo, rescue};
use workq_store::Store;

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::flag_values;
use crate::render::{self, table::Table};
use crate::views;

/// The worker registry
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Every registered worker, local or not, with its state and jobs
    List(ListArgs),
    /// Mark dead workers, rescue their jobs, remove stale PID files and sockets, kill orphaned
    /// job processes, prune old registry rows
    Cleanup(CleanupArgs),
    /// `worker status`, for those who type it under `workers`
    #[command(hide = true)]
    Status(super::worker::StatusArgs),
}

/// List workers
#[derive(clap::Args, Debug)]
#[command(
    after_help = "By default: live workers, plus the latest row of each name that ended in the last 24h,\nleaving out ended temporary workers (temp-PID and run-PID, which submit --wait and run --wait\nstart for the length of one command). --all shows them too.\nStates: starting, idle, busy, paused, draining, hung (no heartbeat for --hung-after while\nits process lives), dead, stopped, crash-looping."
)]
pub struct ListArgs {
    /// Every row still in the registry, ended temporary workers included
    #[arg(short, long)]
    all: bool,
    /// Heartbeat age past which a live worker is shown as hung
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = flag_values::duration)]
    hung_after: Duration,
}

/// Clean up after dead workers
#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    /// Registry rows of workers that ended longer ago than this are removed
    #[arg(long, default_value = "7d", value_name = "DUR", value_parser = flag_values::duration)]
    retention: Duration,
}

/// Runs `workq workers …`.
pub fn run(ctx: &Context, c: Command) -> CmdResult {
    match c {
        Command::List(a) => list(ctx, a),
        Command::Cleanup(a) => cleanup(ctx, a),
        Command::Status(a) => super::worker::run(ctx, super::worker::Command::Status(a)),
    }
}

fn list(ctx: &Context, a: ListArgs) -> CmdResult {
    let hung_after = a.hung_after;
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("[]");
        }
        return Ok(0);
    };
    let store = client.store();
    let now = store.now();
    let all = store.workers(true)?;
    let rows: Vec<&WorkerRecord> = if a.all {
        all.iter().collect()
    } else {
        all.iter()
            .filter(|w| views::worth_listing(w, &all, now))
            .collect()
    };
    let states: Vec<String> = rows
        .iter()
        .map(|w| views::shown_state(w, now, hung_after))
        .collect();
    if ctx.json {
        print_json(&rows, &states, now);
    } else {
        print_table(ctx, &rows, &states, now);
    }
    Ok(0)
}

fn print_json(rows: &[&WorkerRecord], states: &[String], now: Timestamp) {
    let v: Vec<_> = rows
        .iter()
        .zip(states)
        .map(|(w, s)| views::worker_row(w, s, now))
        .collect();
    println!("{}", serde_json::Value::Array(v));
}

fn print_table(ctx: &Context, rows: &[&WorkerRecord], states: &[String], now: Timestamp) {
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "HOST",
        "PID",
        "STATE",
        "SLOTS",
        "RUNNING",
        "DONE",
        "FAILED",
        "UPTIME",
        "HEARTBEAT",
    ]);
    for (w, s) in rows.iter().zip(states) {
        let end = w.stopped_at.unwrap_or(now);
        t.row(vec![
            w.name.clone(),
            w.id.to_string(),
            w.host.clone(),
            w.pid.to_string(),
            ctx.paint(s, render::state_color(s)),
            w.slots.to_string(),
            w.running_jobs.to_string(),
            w.jobs_done.to_string(),
            w.jobs_failed.to_string(),
            if w.state.is_live() {
                format_duration(end.since(w.started_at))
            } else {
                "-".into()
            },
            format!("{} ago", format_duration(now.since(w.heartbeat_at))),
        ]);
    }
    if t.is_empty() {
        if ctx.tty {
            println!("no workers registered (start one with: workq worker start -d)");
        }
    } else {
        t.print(ctx.tty);
    }
}

fn cleanup(ctx: &Context, a: CleanupArgs) -> CmdResult {
    let retention = a.retention;
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("{}", json!({"actions": []}));
        }
        return Ok(0);
    };
    let store = client.store();
    let run_dir = client.run_dir();
    let mut actions: Vec<String> = Vec::new();
    rescue_dead(store, &run_dir, &mut actions)?;
    remove_stale_pid_files(store, &run_dir, &mut actions)?;
    remove_stale_sockets(store, &run_dir, &mut actions)?;
    kill_orphans(store, &mut actions)?;
    let before = Timestamp(store.now().0 - retention.as_millis() as i64);
    let pruned = store.prune_workers(before)?;
    if pruned > 0 {
        actions.push(format!(
            "pruned {pruned} registry row(s) of workers that ended over {} ago",
            format_duration(retention)
        ));
    }
    if ctx.json {
        println!("{}", json!({"actions": actions}));
    } else if actions.is_empty() {
        if !ctx.quiet {
            println!("nothing to clean up");
        }
    } else {
        for a in &actions {
            println!("{a}");
        }
    }
    Ok(0)
}

/// Marks this host's dead workers dead, requeues their jobs (waking the workers) and kills
/// what is left of those jobs' processes.
fn rescue_dead(
    store: &dyn Store,
    run_dir: &Path,
    actions: &mut Vec<String>,
) -> Result<(), CliError> {
    let report = rescue::sweep(store, None)?;
    for (id, name, reason) in &report.dead_workers {
        actions.push(format!("worker {name} (id {id}) marked dead: {reason}"));
    }
    for r in &report.rescued {
        actions.push(format!(
            "job {} rescued (attempt {} lost): now {}",
            r.job_id, r.attempt, r.new_state
        ));
    }
    if report.killed > 0 {
        actions.push(format!(
            "killed {} leftover process(es) of dead workers' jobs",
            report.killed
        ));
    }
    if !report.rescued.is_empty() {
        doorbell::ring_all(run_dir);
    }
    Ok(())
}

/// Removes PID files whose worker is gone; leaves alone those that may name a live process.
fn remove_stale_pid_files(
    store: &dyn Store,
    run_dir: &Path,
    actions: &mut Vec<String>,
) -> Result<(), CliError> {
    for (name, path) in pidfile::list(run_dir) {
        let note = match control::find(store, run_dir, &name)? {
            control::Found::NotRunning(Some(note)) => note,
            control::Found::Unsure(note) => {
                actions.push(format!("left alone: {note}"));
                continue;
            }
            _ => continue,
        };
        match pidfile::remove_if_unlocked(&path) {
            Ok(true) => actions.push(format!("removed {} ({note})", path.display())),
            Ok(false) => {}
            Err(e) => actions.push(format!("could not remove {}: {e}", path.display())),
        }
    }
    Ok(())
}

/// Removes the control sockets of workers that are no longer live.
fn remove_stale_sockets(
    store: &dyn Store,
    run_dir: &Path,
    actions: &mut Vec<String>,
) -> Result<(), CliError> {
    let live: Vec<i64> = store.workers(false)?.iter().map(|w| w.id).collect();
    if let Ok(dir) = std::fs::read_dir(run_dir) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("worker-")
                .and_then(|s| s.strip_suffix(".sock"))
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            if !live.contains(&id) && std::fs::remove_file(e.path()).is_ok() {
                actions.push(format!(
                    "removed socket {} of ended worker {id}",
                    e.path().display()
                ));
            }
        }
    }
    Ok(())
}

/// Kills job processes of this store whose attempt is not running any more (escaped a killed
/// group, or outlived a worker that was cleaned up): the environment marker proves whose they
/// are, so nothing else is ever touched.
fn kill_orphans(store: &dyn Store, actions: &mut Vec<String>) -> Result<(), CliError> {
    // Processes first, the store second: a job is running in the store before its process
    // exists, so one that starts in between is known by the time we compare.
    let store_id = store.store_id()?;
    let marked = procinfo::marked_processes(&store_id);
    let running: Vec<(i64, u32, i64)> = store
        .running_jobs()?
        .iter()
        .map(|r| (r.job_id, r.attempt, r.lease))
        .collect();
    for p in marked {
        let m = p.marker;
        if running.contains(&(m.job, m.attempt, m.lease)) {
            continue;
        }
        let n = procinfo::kill_attempt_leftovers(m);
        if n > 0 {
            actions.push(format!(
                "killed {n} orphaned process(es) of job {} attempt {} (its attempt has ended)",
                m.job, m.attempt
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use workq_core::WorkerState;

    use super::*;

    fn record(id: i64, name: &str, state: WorkerState, settings: Option<&str>) -> WorkerRecord {
        WorkerRecord {
            id,
            name: name.into(),
            host: "h".into(),
            boot_id: "b".into(),
            pid: 10,
            pid_start_time: 1,
            queues: vec!["default".into()],
            slots: 1,
            state,
            running_jobs: 0,
            jobs_done: 0,
            jobs_failed: 0,
            started_at: Timestamp(1_000),
            heartbeat_at: Timestamp(1_000),
            stopped_at: (!state.is_live()).then_some(Timestamp(2_000)),
            stop_reason: None,
            version: "0".into(),
            settings: settings.map(str::to_string),
        }
    }

    #[test]
    fn ended_temporary_workers_are_left_out_unless_asked_for() {
        let now = Timestamp(3_000);
        let all = vec![
            record(1, "temp-41", WorkerState::Stopped, None),
            record(2, "run-42", WorkerState::Dead, None),
            record(3, "temp-43", WorkerState::Running, None),
            record(4, "gpu", WorkerState::Stopped, Some("{}")),
            // A worker someone named so, started with settings, is no temporary one.
            record(5, "run-7", WorkerState::Stopped, Some("{}")),
            record(6, "temp-x", WorkerState::Stopped, None),
        ];
        let listed: Vec<&str> = all
            .iter()
            .filter(|w| views::worth_listing(w, &all, now))
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(listed, ["temp-43", "gpu", "run-7", "temp-x"]);
    }
}
