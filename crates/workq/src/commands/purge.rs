//! `workq purge`: remove finished jobs and their logs, in short batches.

use std::time::Duration;

use serde_json::json;
use workq_core::{format_duration, JobState, Timestamp};

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::flag_values;

/// Remove old finished jobs
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Deletes jobs that finished longer ago than --older-than, with their attempts, events and\nlog files, 500 at a time so workers are never blocked for long. Queued and running jobs are\nnever touched. Workers do the same every hour when store.retention is set in the config."
)]
pub struct Args {
    /// Finished longer ago than this (e.g. 30d, 12h)
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    older_than: Duration,
    /// Only jobs in these states (comma-separated) [default: succeeded,failed,cancelled]
    #[arg(long, value_delimiter = ',', value_name = "STATE")]
    state: Vec<String>,
}

/// Purges in batches until nothing older is left; returns (jobs, log bytes freed).
fn purge_all(
    store: &dyn workq_store::Store,
    before: Timestamp,
    states: &[JobState],
) -> Result<(u64, u64), CliError> {
    let (mut jobs, mut bytes) = (0u64, 0u64);
    loop {
        let batch = store.purge(before, states, 500)?;
        jobs += batch.jobs;
        for f in &batch.log_files {
            if let Ok(m) = std::fs::metadata(f) {
                if std::fs::remove_file(f).is_ok() {
                    bytes += m.len();
                }
            }
        }
        if batch.jobs < 500 {
            return Ok((jobs, bytes));
        }
    }
}

/// Runs `workq purge`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let age = a.older_than;
    let states: Vec<JobState> = if a.state.is_empty() {
        vec![JobState::Succeeded, JobState::Failed, JobState::Cancelled]
    } else {
        a.state
            .iter()
            .map(|s| {
                let st: JobState = s.trim().parse().map_err(|e: String| CliError::usage(format!("--state: {e}")))?;
                if st.is_terminal() {
                    Ok(st)
                } else {
                    Err(CliError::usage(format!(
                        "--state {s}: only finished jobs can be purged (succeeded, failed, cancelled)"
                    )))
                }
            })
            .collect::<Result<_, _>>()?
    };
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("{}", json!({"purged": 0, "log_bytes_freed": 0}));
        }
        return Ok(0);
    };
    let store = client.store();
    let before = Timestamp(store.now().0.saturating_sub(age.as_millis() as i64));
    let (jobs, bytes) = purge_all(store, before, &states)?;
    if ctx.json {
        println!("{}", json!({"purged": jobs, "log_bytes_freed": bytes}));
    } else if !ctx.quiet {
        println!(
            "purged {jobs} job(s) that finished over {} ago; freed {:.1} MiB of logs",
            format_duration(age),
            bytes as f64 / 1048576.0
        );
    }
    Ok(0)
}
