//! `workq wait`: block until jobs finish.

use std::time::Duration;

use workq::ListFilter;
use workq_core::{JobState, Timestamp};

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::flag_values;
use crate::interrupts::Interrupts;
use crate::waiting::{wait_jobs, WaitEnd};

/// Block until jobs finish: exit 0 if all succeeded, 1 if any failed, 124 on timeout
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job ids
    ids: Vec<i64>,
    /// Every job not yet finished
    #[arg(long, conflicts_with_all = ["ids", "queue"])]
    all: bool,
    /// Every unfinished job of this queue
    #[arg(short = 'Q', long, conflicts_with = "ids")]
    queue: Option<String>,
    /// Give up after this long (exit 124)
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    timeout: Option<Duration>,
}

/// Runs `workq wait`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    if a.ids.is_empty() && !a.all && a.queue.is_none() {
        return Err(
            CliError::usage("nothing to wait for").with_hint("give job ids, --all, or --queue Q")
        );
    }
    let interrupts = Interrupts::install();
    let Some(client) = ctx.client_if_exists()? else {
        if a.ids.is_empty() {
            return Ok(0);
        }
        return Err(CliError::job_not_found(a.ids[0]));
    };
    let ids: Vec<i64> = if a.ids.is_empty() {
        client
            .list(&ListFilter {
                states: vec![JobState::Queued, JobState::Running],
                queue: a.queue.clone(),
                ..ListFilter::default()
            })?
            .into_iter()
            .map(|j| j.id)
            .collect()
    } else {
        a.ids.clone()
    };
    match wait_jobs(ctx, &client, &ids, a.timeout, &interrupts)? {
        WaitEnd::Done(jobs) => Ok(report(ctx, &jobs)),
        WaitEnd::TimedOut(jobs) => {
            if ctx.json {
                report(ctx, &jobs);
            }
            Ok(code::TIMEOUT)
        }
        WaitEnd::Interrupted => Ok(code::INTERRUPTED),
    }
}

fn report(ctx: &Context, jobs: &[workq::Job]) -> u8 {
    let now = Timestamp::now();
    if ctx.json {
        let arr: Vec<_> = jobs
            .iter()
            .map(|j| crate::render::json::job(j, now))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else if !ctx.quiet {
        let failed: Vec<_> = jobs
            .iter()
            .filter(|j| j.state != JobState::Succeeded)
            .collect();
        if failed.is_empty() {
            eprintln!("workq: {} job(s) succeeded", jobs.len());
        } else {
            for j in &failed {
                eprintln!(
                    "workq: job {} {}: {}",
                    j.id,
                    j.state,
                    j.last_error.as_deref().unwrap_or("no details")
                );
            }
        }
    }
    if jobs.iter().all(|j| j.state == JobState::Succeeded) {
        0
    } else {
        code::JOB_FAILED
    }
}
