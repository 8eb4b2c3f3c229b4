//! `workq up` / `workq down`: the pools that config defines, as daemonized workers named after
//! their queues.

use std::time::Duration;

use workq_runtime::control::{self, Found, Stopped};
use workq_runtime::WorkerSettings;

use crate::context::Context;
use crate::daemon::start_daemon;
use crate::error::{code, CliError, CmdResult};
use crate::flag_values;
use crate::worker_settings::apply_config;

/// Start pools
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Each queue of the config with `workers = N` gets a daemonized worker named after the queue,\nwith N slots, serving that queue, under a monitor. Healthy running pools are reused, so a\nsecond `up` starts nothing; --force-new restarts them."
)]
pub struct UpArgs {
    /// Queues to start [default: every queue in the config]
    queues: Vec<String>,
    /// Restart pools that are already running
    #[arg(long)]
    force_new: bool,
}

/// Stop pools
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// Queues to stop [default: every queue in the config]
    queues: Vec<String>,
    /// Seconds (or a duration) before SIGKILL [default: the worker's stop timeout + 15s]
    #[arg(short = 't', long = "timeout", value_name = "SECS", value_parser = flag_values::seconds)]
    timeout: Option<Duration>,
}

fn pool_queues(ctx: &Context, asked: &[String]) -> Result<Vec<String>, CliError> {
    let defined = ctx.config.queue_names();
    if asked.is_empty() {
        if defined.is_empty() {
            return Err(CliError::usage("no queues in the config, so no pools to start")
                .with_hint("define one in .workq/config.toml:\n  [queues.NAME]\n  command = \"…\"\n  workers = 2"));
        }
        return Ok(defined);
    }
    for q in asked {
        if !defined.contains(q) {
            return Err(
                CliError::not_found(format!("queue {q:?} is not defined in the config"))
                    .with_hint(format!("queues defined: {}", defined.join(", "))),
            );
        }
    }
    Ok(asked.to_vec())
}

fn settings_for(ctx: &Context, queue: &str) -> Result<WorkerSettings, CliError> {
    workq_runtime::check_name(queue).map_err(|e| {
        CliError::usage(format!("queue {queue:?} cannot name its pool worker: {e}"))
    })?;
    let mut s = WorkerSettings::defaults(queue, &ctx.state_dir);
    apply_config(&ctx.config, &mut s);
    s.queues = vec![queue.to_string()];
    s.set_source("queues", "pool");
    let key = format!("queues.{queue}.workers");
    s.slots = ctx.config.int(&key).unwrap_or(1).clamp(1, u32::MAX as i64) as u32;
    s.set_source("slots", ctx.config.source(&key));
    if ctx.quiet {
        s.level = "error".into();
    } else if ctx.verbose {
        s.level = "debug".into();
    }
    s.daemon = true;
    Ok(s)
}

/// Runs `workq up`.
pub fn up(ctx: &Context, a: UpArgs) -> CmdResult {
    let queues = pool_queues(ctx, &a.queues)?;
    let mut rc = 0;
    for q in queues {
        let settings = settings_for(ctx, &q)?;
        let client = ctx.client()?;
        let run_dir = client.state_dir().join("run");
        if let Found::Running(r) = control::find(client.store(), &run_dir, &q)? {
            let hung = match r.worker_id {
                Some(id) => client
                    .store()
                    .workers(false)?
                    .into_iter()
                    .find(|w| w.id == id)
                    .is_some_and(|w| {
                        client.store().now().since(w.heartbeat_at) > settings.hung_after()
                    }),
                None => false,
            };
            if !a.force_new && !hung {
                if !ctx.quiet && !ctx.json {
                    println!("pool {q} is already up (pid {}); reusing it", r.worker.pid);
                }
                continue;
            }
            let why = if hung { "it is hung" } else { "--force-new" };
            if !ctx.quiet && !ctx.json {
                println!("pool {q}: restarting ({why})");
            }
            if control::stop(client.store(), &run_dir, &q, None, &mut |m| {
                if !ctx.quiet && !ctx.json {
                    println!("{m}");
                }
            })? == Stopped::Refused
            {
                rc = code::UNAVAILABLE;
                continue;
            }
        }
        drop(client);
        match start_daemon(ctx, settings) {
            Ok(_) => {}
            Err(e) => {
                let e = e.context(format_args!("pool {q}"));
                e.eprint();
                rc = e.exit_code();
            }
        }
    }
    Ok(rc)
}

/// Runs `workq down`.
pub fn down(ctx: &Context, a: DownArgs) -> CmdResult {
    let queues = pool_queues(ctx, &a.queues)?;
    let Some(client) = ctx.client_if_exists()? else {
        return Ok(0);
    };
    let run_dir = client.state_dir().join("run");
    let mut rc = 0;
    for q in queues {
        let out = control::stop(client.store(), &run_dir, &q, a.timeout, &mut |m| {
            if !ctx.quiet && !ctx.json {
                println!("{m}");
            }
        })?;
        if out == Stopped::Refused {
            rc = code::UNAVAILABLE;
        }
    }
    Ok(rc)
}
