//! `workq retry`: queue failed or cancelled jobs again, by id or by filter.

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::flag_values::parse_kv;
use crate::views::{self, Selection};

/// Queue failed or cancelled jobs again, with a fresh retry budget
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  workq retry 12                        one job\n  workq retry --failed                  every failed job\n  workq retry --queue render --state failed,cancelled"
)]
pub struct Args {
    /// Job ids (or select jobs with --failed, --queue, --state, --label)
    #[arg(required_unless_present_any = ["failed", "queue", "state", "labels"])]
    ids: Vec<i64>,
    /// Every failed job (of --queue, if given)
    #[arg(long, conflicts_with = "ids")]
    failed: bool,
    /// Only this queue
    #[arg(short = 'Q', long, conflicts_with = "ids")]
    queue: Option<String>,
    /// Only jobs in these states (failed, cancelled; comma-separated) [default: failed]
    #[arg(short, long, value_delimiter = ',', conflicts_with = "ids")]
    state: Vec<String>,
    /// Only jobs with this label (repeatable)
    #[arg(long = "label", value_name = "K=V", conflicts_with = "ids")]
    labels: Vec<String>,
}

/// Runs `workq retry`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let mut selection = Selection {
        queue: a.queue,
        states: a.state,
        labels: Vec::new(),
    };
    for l in &a.labels {
        selection.labels.push(parse_kv("--label", l)?);
    }
    let by_filter = a.failed || !selection.is_empty();
    let Some(client) = ctx.client_if_exists()? else {
        if by_filter {
            if ctx.json {
                println!("[]");
            }
            return Ok(0);
        }
        return Err(CliError::job_not_found(a.ids[0]));
    };
    let ids = if by_filter {
        selection.ids(&client, &["failed"])?
    } else {
        a.ids
    };
    if ids.is_empty() {
        if ctx.json {
            println!("[]");
        } else if !ctx.quiet {
            println!("no failed jobs");
        }
        return Ok(0);
    }
    let report = views::retry(&client, &ids)?;
    if ctx.json {
        println!("{}", serde_json::Value::Array(report.rows));
    } else if !ctx.quiet {
        for r in &report.rows {
            if r["result"] == "not found" {
                continue;
            }
            println!("job {}: {}", r["id"], r["result"].as_str().unwrap_or("?"));
        }
    }
    if !report.missing.is_empty() {
        // Worded as `show` and `logs` word it, after the jobs that were found.
        return Err(CliError::jobs_not_found(&report.missing));
    }
    Ok(if report.refused { code::CONFLICT } else { 0 })
}
