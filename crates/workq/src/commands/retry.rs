//! `workq retry`: queue failed or cancelled jobs again.

use workq::RetryOutcome;

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};

/// Queue failed or cancelled jobs again, with a fresh retry budget
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job ids
    #[arg(required_unless_present = "failed")]
    ids: Vec<i64>,
    /// Every failed job (of --queue, if given)
    #[arg(long, conflicts_with = "ids")]
    failed: bool,
    /// With --failed: only this queue
    #[arg(short = 'Q', long, requires = "failed")]
    queue: Option<String>,
}

/// Runs `workq retry`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let Some(client) = ctx.client_if_exists()? else {
        if a.failed {
            return Ok(0);
        }
        return Err(CliError::job_not_found(a.ids[0]));
    };
    let ids = if a.failed {
        client.store().failed_ids(a.queue.as_deref())?
    } else {
        a.ids
    };
    if ids.is_empty() {
        if !ctx.quiet && !ctx.json {
            println!("no failed jobs");
        }
        if ctx.json {
            println!("[]");
        }
        return Ok(0);
    }
    let out = client.retry(&ids)?;
    let mut exit = 0;
    let mut missing = Vec::new();
    let mut rows = Vec::new();
    for o in out {
        match o {
            RetryOutcome::Requeued(id) => rows.push((id, "queued".to_string())),
            RetryOutcome::NotRetryable(id, st) => {
                if exit == 0 {
                    exit = code::CONFLICT;
                }
                rows.push((
                    id,
                    format!(
                        "not retried: it is {st} (only failed or cancelled jobs can be retried)"
                    ),
                ));
            }
            RetryOutcome::NotFound(id) => {
                missing.push(id);
                // JSON keeps its row (the documented shape); people get the error below.
                if ctx.json {
                    rows.push((id, "not found".into()));
                }
            }
        }
    }
    if ctx.json {
        let arr: Vec<_> = rows
            .iter()
            .map(|(id, s)| serde_json::json!({"id": id, "result": s}))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else if !ctx.quiet {
        for (id, s) in rows {
            println!("job {id}: {s}");
        }
    }
    if !missing.is_empty() {
        // Worded as `show` and `logs` word it, after the jobs that were found.
        return Err(CliError::jobs_not_found(&missing));
    }
    Ok(exit)
}
