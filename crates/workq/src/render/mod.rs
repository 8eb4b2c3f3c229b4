//! Output: tables for people, tab-separated lines for pipes, JSON for scripts.

pub mod json;
pub mod progress;
pub mod table;

use workq_core::{format_duration, Job, Timestamp};

use crate::context::Context;

/// ANSI colour of a state name.
pub fn state_color(state: &str) -> &'static str {
    match state {
        "succeeded" => "32",
        "failed" => "31",
        "cancelled" => "35",
        "running" | "busy" => "33",
        "scheduled" | "waiting" => "36",
        "dead" | "crash-looping" | "hung" => "31",
        _ => "",
    }
}

/// A job's run time so far, or its total once finished.
pub fn job_duration(job: &Job, now: Timestamp) -> String {
    match (job.started_at, job.finished_at, job.state) {
        (Some(s), Some(f), _) => format_duration(f.since(s)),
        (Some(s), None, workq_core::JobState::Running) => format_duration(now.since(s)),
        _ => "-".into(),
    }
}

/// Prints a job listing as a table (terminal) or tab-separated lines (pipe).
pub fn print_jobs(ctx: &Context, jobs: &[Job]) {
    let now = Timestamp::now();
    let mut t = table::Table::new(&[
        "ID", "STATE", "QUEUE", "ATTEMPT", "EXIT", "CREATED", "DURATION", "COMMAND",
    ]);
    for j in jobs {
        let state = j.display_state(now);
        t.row(vec![
            j.id.to_string(),
            ctx.paint(state, state_color(state)),
            j.spec.queue.clone(),
            format!("{}/{}", j.attempt, j.max_attempts()),
            j.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            j.created_at.to_local_short(),
            job_duration(j, now),
            j.spec.command_line(),
        ]);
    }
    t.print(ctx.tty);
}
