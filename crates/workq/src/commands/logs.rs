//! `workq logs ID`: a job's output.

use std::io::{Seek, SeekFrom};
use std::time::Duration;

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::interrupts::Interrupts;
use crate::log_tail::{last_lines_offset, LogTail};
use crate::waiting::Unserved;

/// Print a job's output (stdout and stderr, interleaved)
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  workq logs 7                 everything job 7's latest attempt printed\n  workq logs 7 --tail 20       its last 20 lines\n  workq logs 7 -f --tail 20    the last 20 lines, then the rest as it comes, until the job ends"
)]
pub struct Args {
    /// Job id
    id: i64,
    /// Keep printing until the job ends
    #[arg(short, long)]
    follow: bool,
    /// Which attempt [default: the latest]
    #[arg(long)]
    attempt: Option<u32>,
    /// Only the last N lines of the attempt's log (with -f: the last N lines, then what follows)
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<u64>,
}

/// Runs `workq logs`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let interrupts = a.follow.then(Interrupts::install);
    let Some(client) = ctx.client_if_exists()? else {
        return Err(CliError::job_not_found(a.id));
    };
    let job = client.get(a.id)?;
    if let Some(n) = a.attempt {
        if n == 0 || n > job.attempt {
            return Err(CliError::not_found(format!(
                "job {} has no attempt {n} (it has had {})",
                a.id, job.attempt
            )));
        }
    }
    if job.attempt == 0 && (!a.follow || job.state.is_terminal()) {
        if !ctx.quiet {
            eprintln!("workq: {}", never_started(&job));
        }
        return Ok(0);
    }
    let log_dir = client.log_dir();
    if !a.follow {
        let n = a.attempt.unwrap_or(job.attempt);
        return print_attempt(ctx, &log_dir, a.id, n, a.tail);
    }
    let mut tail = match a.tail {
        // The last N lines of the attempt shown, then on from there.
        Some(lines) if job.attempt > 0 => {
            let from = a.attempt.unwrap_or(job.attempt);
            let path = workq_runtime::spawn::log_path(&log_dir, a.id, from);
            let offset = match std::fs::File::open(&path) {
                Ok(mut f) => last_lines_offset(&mut f, lines).map_err(|e| unreadable(&path, e))?,
                // No output yet: all of it is new.
                Err(_) => 0,
            };
            LogTail::starting_at(&log_dir, from, offset)
        }
        _ => LogTail::new(&log_dir, a.attempt.unwrap_or(0)),
    };
    let mut stdout = std::io::stdout();
    let mut unserved = Unserved::new(!ctx.quiet);
    loop {
        let job = client.get(a.id)?;
        tail.pump(&job, &mut stdout, !ctx.quiet);
        unserved.warn(&client, std::slice::from_ref(&job), &mut || {})?;
        if job.state.is_terminal() {
            return Ok(0);
        }
        if interrupts.as_ref().and_then(|i| i.received()).is_some() {
            return Ok(code::INTERRUPTED);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why a job that never ran an attempt has no output: not yet, or never will.
fn never_started(job: &workq::Job) -> String {
    if job.state.is_terminal() {
        format!(
            "job {} was {} before it started; it has no output",
            job.id, job.state
        )
    } else {
        format!("job {} has not started yet ({})", job.id, job.state)
    }
}

/// Prints attempt `n` of job `id`, or its last `tail` lines.
fn print_attempt(
    ctx: &Context,
    log_dir: &std::path::Path,
    id: i64,
    n: u32,
    tail: Option<u64>,
) -> CmdResult {
    let path = workq_runtime::spawn::log_path(log_dir, id, n);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !ctx.quiet {
                eprintln!("workq: attempt {n} of job {id} wrote no output");
            }
            return Ok(0);
        }
        Err(e) => return Err(unreadable(&path, e)),
    };
    if let Some(lines) = tail {
        let start = last_lines_offset(&mut f, lines).map_err(|e| unreadable(&path, e))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| unreadable(&path, e))?;
    }
    let _ = std::io::copy(&mut f, &mut std::io::stdout());
    Ok(0)
}

fn unreadable(path: &std::path::Path, e: std::io::Error) -> CliError {
    CliError::unavailable(format!("cannot read {}: {e}", path.display()))
}
