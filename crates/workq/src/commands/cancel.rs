//! `workq cancel`: stop queued or running jobs, by id or by filter.

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::flag_values::parse_kv;
use crate::views::{self, Selection};

/// Stop jobs: queued ones at once, running ones by stopping their whole process group
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  workq cancel 12 13                     two jobs\n  workq cancel --queue render --state queued   every queued job of queue render\n  workq cancel --label batch=7           every unfinished job labelled batch=7"
)]
pub struct Args {
    /// Job ids (or select jobs with --queue, --state, --label)
    #[arg(required_unless_present_any = ["queue", "state", "labels"])]
    ids: Vec<i64>,
    /// Every unfinished job of this queue (with --state: only those)
    #[arg(short = 'Q', long, conflicts_with = "ids")]
    queue: Option<String>,
    /// Only jobs in these states (queued, waiting, scheduled, running; comma-separated) [default: queued,running]
    #[arg(short, long, value_delimiter = ',', conflicts_with = "ids")]
    state: Vec<String>,
    /// Only jobs with this label (repeatable)
    #[arg(long = "label", value_name = "K=V", conflicts_with = "ids")]
    labels: Vec<String>,
    /// Return without waiting for running jobs to stop
    #[arg(long)]
    no_wait: bool,
}

/// Runs `workq cancel`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let mut selection = Selection {
        queue: a.queue,
        states: a.state,
        labels: Vec::new(),
    };
    for l in &a.labels {
        selection.labels.push(parse_kv("--label", l)?);
    }
    let Some(client) = ctx.client_if_exists()? else {
        if !selection.is_empty() {
            if ctx.json {
                println!("[]");
            }
            return Ok(0);
        }
        return Err(CliError::job_not_found(a.ids[0]));
    };
    let ids = if selection.is_empty() {
        a.ids
    } else {
        selection.ids(&client, &["queued", "running"])?
    };
    if ids.is_empty() {
        if ctx.json {
            println!("[]");
        } else if !ctx.quiet {
            println!("no jobs match");
        }
        return Ok(0);
    }
    let report = views::cancel(&client, &ids, !a.no_wait)?;
    if ctx.json {
        println!("{}", serde_json::Value::Array(report.rows));
    } else if !ctx.quiet {
        for r in &report.rows {
            if r["state"] == "not_found" {
                continue;
            }
            println!(
                "job {}: {} ({})",
                r["id"],
                r["state"].as_str().unwrap_or("?"),
                r["detail"].as_str().unwrap_or("")
            );
        }
    }
    if report.missing.is_empty() {
        Ok(0)
    } else {
        // Worded as `show` and `logs` word it, after the jobs that were found.
        Err(CliError::jobs_not_found(&report.missing))
    }
}
