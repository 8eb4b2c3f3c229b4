//! `workq status`: queues and workers at a glance.

use std::time::Duration;

use workq_core::{format_duration, Timestamp, WorkerRecord};
use workq_runtime::procinfo;
use workq_store::QueueStats;

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::interrupts::Interrupts;
use crate::render::{self, table::Table};

use crate::views::HUNG_AFTER;

/// Queues (queued, scheduled, running, succeeded, failed, cancelled) and live workers
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Redraw every second until Ctrl-C, each frame headed by the local time (in a pipe: frames
    /// one after another, a blank line between them; with --json: one object per line)
    #[arg(short, long)]
    watch: bool,
}

/// Runs `workq status`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let interrupts = a.watch.then(Interrupts::install);
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("{}", serde_json::json!({"queues": [], "workers": []}));
        }
        return Ok(0);
    };
    for frame in 0u64.. {
        let text = render_once(ctx, &client)?;
        print!("{}", watch_frame(ctx, a.watch, frame, &text));
        // A pipe gets each frame as it is drawn, not when a buffer fills.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let Some(interrupts) = &interrupts else {
            return Ok(0);
        };
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            if interrupts.received().is_some() {
                return Ok(0);
            }
        }
    }
    Ok(0)
}

/// What one frame of `status` prints. Watching, each frame starts with a line carrying the
/// local time; a terminal is cleared before it, a pipe gets a blank line between frames (no
/// screen codes). JSON stays one object per line, so it can be read as JSON Lines.
fn watch_frame(ctx: &Context, watch: bool, frame: u64, text: &str) -> String {
    if !watch || ctx.json {
        return text.to_string();
    }
    let heading = format!("workq status at {}", Timestamp::now().to_local_short());
    if ctx.tty {
        format!("\x1b[H\x1b[2J{heading}\n{text}")
    } else if frame == 0 {
        format!("{heading}\n{text}")
    } else {
        format!("\n{heading}\n{text}")
    }
}

fn render_once(ctx: &Context, client: &workq::Client) -> Result<String, CliError> {
    let store = client.store();
    let stats = store.queue_stats()?;
    let workers = store.workers(false)?;
    let now = Timestamp::now();
    let host = procinfo::hostname();
    let boot = procinfo::boot_id();
    let states: Vec<&str> = workers
        .iter()
        .map(|w| procinfo::display_state(w, &host, &boot, now, HUNG_AFTER))
        .collect();
    if ctx.json {
        return Ok(format!("{}\n", crate::views::status(store)?));
    }
    let mut out = queue_table(ctx, &stats, &workers);
    if ctx.tty {
        out.push('\n');
    }
    out.push_str(&worker_table(ctx, &workers, &states, now));
    Ok(out)
}

/// One row per queue, with the live workers that serve it.
fn queue_table(ctx: &Context, stats: &[QueueStats], workers: &[WorkerRecord]) -> String {
    let mut t = Table::new(&[
        "QUEUE",
        "QUEUED",
        "SCHEDULED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "PAUSED",
        "WORKERS",
        "MEAN",
    ]);
    for q in stats {
        let serving = workers
            .iter()
            .filter(|w| w.queues.contains(&q.queue))
            .count();
        t.row(vec![
            q.queue.clone(),
            q.queued.to_string(),
            q.scheduled.to_string(),
            q.running.to_string(),
            q.succeeded.to_string(),
            ctx.paint(&q.failed.to_string(), if q.failed > 0 { "31" } else { "" }),
            q.cancelled.to_string(),
            if q.paused { "yes".into() } else { "no".into() },
            serving.to_string(),
            q.mean_duration_ms
                .map(|m| format_duration(Duration::from_millis(m.max(0.0) as u64)))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    if t.is_empty() && ctx.tty {
        "no jobs yet\n".to_string()
    } else {
        t.render(ctx.tty)
    }
}

/// One row per live worker.
fn worker_table(
    ctx: &Context,
    workers: &[WorkerRecord],
    states: &[&str],
    now: Timestamp,
) -> String {
    let mut out = String::new();
    let mut wt = Table::new(&[
        "WORKER", "ID", "HOST", "PID", "STATE", "SLOTS", "RUNNING", "DONE", "FAILED", "UPTIME",
        "QUEUES",
    ]);
    for (w, s) in workers.iter().zip(states) {
        wt.row(vec![
            w.name.clone(),
            w.id.to_string(),
            w.host.clone(),
            w.pid.to_string(),
            ctx.paint(s, render::state_color(s)),
            w.slots.to_string(),
            w.running_jobs.to_string(),
            w.jobs_done.to_string(),
            w.jobs_failed.to_string(),
            format_duration(now.since(w.started_at)),
            w.queues.join(","),
        ]);
    }
    if wt.is_empty() {
        if ctx.tty {
            out.push_str("no workers running (start one with: workq worker start)\n");
        }
    } else {
        if !ctx.tty {
            out.push_str("# workers\n");
        }
        out.push_str(&wt.render(ctx.tty));
    }
    out
}
