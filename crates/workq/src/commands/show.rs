//! `workq show ID`: one job with its attempts.

use workq_core::{format_duration, Timestamp};

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::render::{self, table::Table};

/// Show one job with its attempts
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job id
    id: i64,
}

/// Runs `workq show`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let Some(client) = ctx.client_if_exists()? else {
        return Err(CliError::job_not_found(a.id));
    };
    if ctx.json {
        println!("{}", crate::views::job_detail(&client, a.id)?);
        return Ok(0);
    }
    let job = client.get(a.id)?;
    let attempts = client.store().attempts(a.id)?;
    let now = Timestamp::now();
    for (k, v) in job_lines(ctx, &job, now) {
        println!("{k:<11} {v}");
    }
    if !attempts.is_empty() {
        println!();
        attempts_table(ctx, &attempts, now);
    }
    Ok(0)
}

/// The job's fields, one `name value` line each; optional ones only when set.
fn job_lines(ctx: &Context, job: &workq::Job, now: Timestamp) -> Vec<(&'static str, String)> {
    let state = job.display_state(now);
    let mut lines: Vec<(&'static str, String)> = vec![
        ("job", job.id.to_string()),
        ("state", ctx.paint(state, render::state_color(state))),
        ("queue", job.spec.queue.clone()),
        ("command", job.spec.command_line()),
        ("cwd", job.spec.cwd.clone().unwrap_or_else(|| "-".into())),
        ("priority", job.spec.priority.to_string()),
        (
            "attempts",
            format!(
                "{} (rescued {} times)",
                render::attempts(job.attempt, job.max_attempts(), " of "),
                job.rescues
            ),
        ),
        ("created", job.created_at.to_local_short()),
    ];
    if let Some(c) = &job.spec.container {
        let user = match &c.user {
            Some(u) => format!("user {u}"),
            None => "the image's user".into(),
        };
        let mut text = format!("{} ({}, {user})", c.image, c.runtime);
        if !c.args.is_empty() {
            text.push_str(&format!(", {}", workq_core::job::command_line(&c.args)));
        }
        lines.push(("container", text));
    }
    if job.run_at > job.created_at {
        lines.push(("run at", job.run_at.to_local_short()));
    }
    if let Some(t) = job.started_at {
        lines.push(("started", t.to_local_short()));
    }
    if let Some(t) = job.finished_at {
        lines.push(("finished", t.to_local_short()));
    }
    lines.push(("duration", render::job_duration(job, now)));
    if let Some(t) = job.spec.timeout {
        lines.push(("timeout", format_duration(t)));
    }
    if let Some(c) = job.exit_code {
        lines.push(("exit code", c.to_string()));
    }
    if let Some(w) = &job.worker_name {
        lines.push(("worker", w.clone()));
    }
    if let Some(e) = &job.last_error {
        lines.push(("last error", e.clone()));
    }
    if !job.spec.labels.is_empty() {
        let l: Vec<String> = job
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(("labels", l.join(" ")));
    }
    if let Some(k) = &job.spec.unique_key {
        lines.push(("unique key", k.clone()));
    }
    lines
}

/// One row per attempt.
fn attempts_table(ctx: &Context, attempts: &[workq::Attempt], now: Timestamp) {
    let mut t = Table::new(&[
        "ATTEMPT", "OUTCOME", "EXIT", "WORKER", "PID", "STARTED", "DURATION", "LOG",
    ]);
    for at in attempts {
        let outcome = at.outcome.map(|o| o.as_str()).unwrap_or("running");
        t.row(vec![
            at.attempt.to_string(),
            ctx.paint(outcome, render::state_color(outcome)),
            match (at.exit_code, at.signal) {
                (Some(c), _) => c.to_string(),
                (None, Some(s)) => format!("sig {s}"),
                _ => "-".into(),
            },
            at.worker_name.clone().unwrap_or_else(|| "-".into()),
            at.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            at.started_at.to_local_short(),
            format_duration(at.ended_at.unwrap_or(now).since(at.started_at)),
            at.log_path.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print(true);
}
