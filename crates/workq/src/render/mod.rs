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

/// Attempts so far against the budget (`2/3`, or `2 of 3` with `sep` " of "); only the count
/// once it is past the budget, since `retry` starts a fresh budget while the count goes on
/// (ARCHITECTURE.md §3.3) and interrupted attempts cost nothing: `3/1` would be untrue.
pub fn attempts(attempt: u32, max: u32, sep: &str) -> String {
    if attempt > max {
        attempt.to_string()
    } else {
        format!("{attempt}{sep}{max}")
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
            attempts(j.attempt, j.max_attempts(), "/"),
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

#[cfg(test)]
mod tests {
    use super::attempts;

    #[test]
    fn attempts_past_the_budget_show_only_the_count() {
        assert_eq!(attempts(0, 1, "/"), "0/1");
        assert_eq!(attempts(2, 3, " of "), "2 of 3");
        assert_eq!(attempts(1, 1, "/"), "1/1");
        assert_eq!(attempts(3, 1, "/"), "3");
        assert_eq!(attempts(3, 1, " of "), "3");
    }
}
