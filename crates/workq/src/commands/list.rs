//! `workq list`: jobs, newest first.

use workq::ListFilter;
use workq_core::{JobState, Timestamp};

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::flag_values::parse_kv;
use crate::render;

/// List jobs, newest first
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only these states (queued, waiting, scheduled, running, succeeded, failed, cancelled; comma-separated)
    #[arg(short, long, value_delimiter = ',')]
    state: Vec<String>,
    /// Only this queue
    #[arg(short = 'Q', long)]
    queue: Option<String>,
    /// Only jobs with this label (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// At most this many (0 = all)
    #[arg(short = 'n', long, default_value_t = 100)]
    limit: u32,
}

/// Runs `workq list`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let mut filter = ListFilter {
        queue: a.queue,
        limit: a.limit,
        ..ListFilter::default()
    };
    for s in &a.state {
        let st: JobState = s.trim().parse().map_err(CliError::usage)?;
        // Kinds of queued (ARCHITECTURE.md §3.1) narrow the listing when asked for alone.
        if a.state.len() == 1 {
            filter.scheduled_only = s.trim() == "scheduled";
            filter.waiting_only = s.trim() == "waiting";
        }
        if !filter.states.contains(&st) {
            filter.states.push(st);
        }
    }
    for l in &a.labels {
        filter.labels.push(parse_kv("--label", l)?);
    }
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("[]");
        }
        return Ok(0);
    };
    let jobs = client.list(&filter)?;
    if ctx.json {
        let now = Timestamp::now();
        let arr: Vec<_> = jobs.iter().map(|j| render::json::job(j, now)).collect();
        println!("{}", serde_json::Value::Array(arr));
    } else if jobs.is_empty() {
        if ctx.tty {
            println!("no jobs match");
        }
    } else {
        render::print_jobs(ctx, &jobs);
    }
    Ok(0)
}
