//! `workq logs ID`: a job's output.

use std::time::Duration;

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::interrupts::Interrupts;
use crate::log_tail::LogTail;

/// Print a job's output (stdout and stderr, interleaved)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job id
    id: i64,
    /// Keep printing until the job ends
    #[arg(short, long)]
    follow: bool,
    /// Which attempt [default: the latest]
    #[arg(long)]
    attempt: Option<u32>,
}

/// Runs `workq logs`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let interrupts = a.follow.then(Interrupts::install);
    let Some(client) = ctx.client_if_exists()? else {
        return Err(CliError::job_not_found(a.id));
    };
    let job = client.get(a.id)?;
    let mut stdout = std::io::stdout();
    if let Some(n) = a.attempt {
        if n == 0 || n > job.attempt {
            return Err(CliError::not_found(format!(
                "job {} has no attempt {n} (it has had {})",
                a.id, job.attempt
            )));
        }
    }
    if !a.follow {
        if job.attempt == 0 {
            if !ctx.quiet {
                eprintln!("workq: job {} has not started yet ({})", a.id, job.state);
            }
            return Ok(0);
        }
        let n = a.attempt.unwrap_or(job.attempt);
        let path = workq_runtime::spawn::log_path(&client.log_dir(), a.id, n);
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                let _ = std::io::copy(&mut f, &mut stdout);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !ctx.quiet {
                    eprintln!("workq: attempt {n} of job {} wrote no output", a.id);
                }
            }
            Err(e) => {
                return Err(CliError::unavailable(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        }
        return Ok(0);
    }
    let mut tail = LogTail::new(&client.log_dir(), a.attempt.unwrap_or(0));
    loop {
        let job = client.get(a.id)?;
        tail.pump(&job, &mut stdout, !ctx.quiet);
        if job.state.is_terminal() {
            return Ok(0);
        }
        if interrupts.as_ref().and_then(|i| i.received()).is_some() {
            return Ok(code::INTERRUPTED);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
