//! `workq cancel`: stop queued or running jobs.

use std::time::{Duration, Instant};

use workq::CancelOutcome;

use crate::context::Context;
use crate::error::{CliError, CmdResult};

/// Stop jobs: queued ones at once, running ones by stopping their whole process group
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job ids
    #[arg(required = true)]
    ids: Vec<i64>,
    /// Return without waiting for running jobs to stop
    #[arg(long)]
    no_wait: bool,
}

/// Runs `workq cancel`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let Some(client) = ctx.client_if_exists()? else {
        return Err(CliError::job_not_found(a.ids[0]));
    };
    let out = client.cancel(&a.ids)?;
    let mut missing = Vec::new();
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for o in &out {
        match *o {
            CancelOutcome::Cancelled(id) => results.push((
                id,
                "cancelled".to_string(),
                "it had not started".to_string(),
            )),
            CancelOutcome::Requested(id, _) => pending.push(id),
            CancelOutcome::AlreadyDone(id, st) => {
                results.push((id, st.to_string(), format!("it had already {st}")));
            }
            CancelOutcome::NotFound(id) => {
                missing.push(id);
                // JSON keeps its row (the documented shape); people get the error below.
                if ctx.json {
                    results.push((id, "not_found".into(), "no such job".into()));
                }
            }
        }
    }
    if !pending.is_empty() && !a.no_wait {
        wait_stopped(&client, &pending)?;
    }
    for id in pending {
        let j = client.get(id)?;
        let detail = if j.state.is_terminal() {
            "it was running; its process group was stopped".to_string()
        } else {
            format!(
                "cancel requested; worker {} has not stopped it yet",
                j.worker_name.as_deref().unwrap_or("?")
            )
        };
        results.push((
            id,
            j.display_state(workq_core::Timestamp::now()).to_string(),
            detail,
        ));
    }
    if ctx.json {
        let arr: Vec<_> = results
            .iter()
            .map(|(id, st, d)| serde_json::json!({"id": id, "state": st, "detail": d}))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else if !ctx.quiet {
        for (id, st, d) in &results {
            println!("job {id}: {st} ({d})");
        }
    }
    if missing.is_empty() {
        Ok(0)
    } else {
        // Worded as `show` and `logs` word it, after the jobs that were found.
        Err(CliError::jobs_not_found(&missing))
    }
}

/// Waits until the running jobs `pending` have stopped, for at most the longest kill grace
/// among them and a little more.
fn wait_stopped(client: &workq::Client, pending: &[i64]) -> Result<(), CliError> {
    let grace = pending
        .iter()
        .filter_map(|id| client.get(*id).ok())
        .map(|j| j.spec.kill_grace)
        .max()
        .unwrap_or(Duration::from_secs(10));
    let deadline = Instant::now() + grace + Duration::from_secs(5);
    while Instant::now() < deadline {
        let jobs = client.jobs(pending)?;
        if jobs.iter().all(|j| j.state.is_terminal()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}
