//! `workq worker …`: run a worker.

use workq_runtime::{Level, Logger, WorkerOptions};

use super::parse_dur;
use crate::context::Context;
use crate::error::{CliError, CmdResult};

/// Worker lifecycle
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run a worker in the foreground until SIGTERM or Ctrl-C (then drain and exit 0)
    Start(StartArgs),
}

/// Run a worker in the foreground
#[derive(clap::Args, Debug)]
#[command(
    after_help = "On SIGTERM or Ctrl-C the worker stops claiming, lets running jobs finish for up to\n--stop-timeout, then stops them (SIGTERM, SIGKILL after each job's kill grace) and puts them\nback in the queue. A second Ctrl-C stops them at once."
)]
pub struct StartArgs {
    /// Worker name
    #[arg(default_value = "default")]
    name: String,
    /// Jobs run at once (slots)
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    slots: u32,
    /// Queues to serve (repeatable or comma-separated)
    #[arg(
        short = 'Q',
        long = "queue",
        value_delimiter = ',',
        default_value = "default"
    )]
    queues: Vec<String>,
    /// On stop, how long running jobs may go on before they are interrupted and requeued
    #[arg(long, default_value = "10s", value_name = "DUR")]
    stop_timeout: String,
}

pub fn run(ctx: &Context, c: Command) -> CmdResult {
    match c {
        Command::Start(a) => start(ctx, a),
    }
}

fn start(ctx: &Context, a: StartArgs) -> CmdResult {
    // Before any thread exists, so every thread inherits the blocked mask.
    workq_runtime::signals::block_terminating();
    if a.slots == 0 {
        return Err(CliError::usage("-w/--workers must be at least 1"));
    }
    let queues: Vec<String> = a
        .queues
        .iter()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if queues.is_empty() {
        return Err(CliError::usage("-Q/--queue: no queue named"));
    }
    let stop_timeout = parse_dur("--stop-timeout", &a.stop_timeout)?;
    let client = ctx.client()?;
    let mut opts = WorkerOptions::new(&a.name, queues, a.slots, client.state_dir());
    opts.stop_timeout = stop_timeout;
    let level = if ctx.quiet {
        Level::Error
    } else if ctx.verbose {
        Level::Debug
    } else {
        Level::Info
    };
    let log = Logger::stderr(level);
    workq_runtime::run_worker(client.store(), opts, &log)?;
    Ok(0)
}
