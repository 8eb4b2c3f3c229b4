//! `workq serve`: the HTTP API, dashboard and metrics (see `crate::serve`), in the foreground or
//! in the background under a monitor (`-d`), with `stop` and `status` for the background one,
//! and the hidden entry points of its monitor and server processes (ARCHITECTURE.md §5.12).

mod status;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use workq_runtime::control::{self, Stopped};
use workq_runtime::{logger, ready, Level, ServerSettings, SERVE_SETTINGS_ENV};

use crate::context::Context;
use crate::daemon::{own_command_of, report_failure, start_server};
use crate::error::{code, CliError, CmdResult};
use crate::flag_values;

/// Serve the HTTP API, the live dashboard and Prometheus metrics
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Listens on 127.0.0.1:7878 unless --listen or [serve] listen says otherwise. A non-loopback\naddress needs a token of at least 32 bytes (--token-file FILE or WORKQ_TOKEN); with a token,\nevery route but /healthz needs `Authorization: Bearer TOKEN` (the dashboard asks once).\n\nWith -d the server runs in the background under a monitor that restarts it if it dies (at\nmost 3 times per hour), at the address it first bound (so --listen 127.0.0.1:0 picks a free\nport once). It returns once the server listens and prints its URL (-q: the URL alone). Its\nlog goes to .workq/logs/serve.log.\n\nExamples:\n  workq serve                          dashboard at http://127.0.0.1:7878/\n  workq serve -d                       the same, in the background under a monitor\n  workq serve --read-only --listen 0.0.0.0:7878 --token-file ~/.workq-token\n  curl -s http://127.0.0.1:7878/api/v1/status\n  workq serve status\n  workq serve stop"
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address and port to listen on [default: [serve] listen, else 127.0.0.1:7878]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// File holding the API token (at least 32 bytes) [default: [serve] token_file, else WORKQ_TOKEN]
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Refuse every change (cancel, retry, submit, pause) with 403
    #[arg(long)]
    read_only: bool,
    /// Run in the background under a monitor that restarts it; return once it listens
    #[arg(short = 'd', long)]
    daemon: bool,
}

/// `workq serve` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Stop the background server: SIGTERM (graceful), SIGKILL after the timeout
    Stop(StopArgs),
    /// Whether the background server runs, and where
    Status(status::StatusArgs),
    /// (internal) the monitor of the background server
    #[command(name = "_monitor", hide = true)]
    Monitor,
    /// (internal) a server process started by its monitor
    #[command(name = "_run", hide = true)]
    Run,
}

/// Stop the background server
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Sends SIGTERM to the server's monitor, which passes it on: the server stops accepting\nconnections and finishes the requests in flight. After the timeout the server and then its\nmonitor get SIGKILL. The PID file (.workq/run/serve/serve.pid) is removed. Exits 0 when no\nserver runs, saying so; 5 if its PID file names processes that cannot be verified (nothing\nis signalled then)."
)]
pub struct StopArgs {
    /// Seconds (or a duration) before SIGKILL [default: 10s]
    #[arg(short = 't', long = "timeout", value_name = "SECS", value_parser = flag_values::seconds)]
    timeout: Option<Duration>,
}

/// Runs `workq serve …`.
pub fn run(ctx: Context, a: Args) -> CmdResult {
    match a.command {
        Some(Command::Stop(s)) => stop(&ctx, s),
        Some(Command::Status(s)) => status::status(&ctx, s),
        Some(Command::Monitor) => monitor(&ctx),
        Some(Command::Run) => run_under_monitor(ctx),
        None => {
            let settings =
                crate::serve::resolve(&ctx, a.listen, a.token_file.clone(), a.read_only)?;
            let guard = guard_of(&settings);
            if a.daemon {
                let server = server_settings(&ctx, &settings, a.token_file)?;
                return start_server(&ctx, server, &guard);
            }
            let quiet = ctx.quiet;
            let json = ctx.json;
            crate::serve::run(ctx, settings, &mut |addr| {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"url": format!("http://{addr}/"), "listen": addr.to_string()})
                    );
                } else if !quiet {
                    println!("workq serve: listening on http://{addr}/ ({guard})");
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
            })
        }
    }
}

/// How requests are guarded, for messages: the token's source, never the token.
fn guard_of(settings: &crate::serve::Settings) -> String {
    match (&settings.token_source, settings.read_only) {
        (Some(src), false) => format!("token from {src}"),
        (Some(src), true) => format!("token from {src}, read-only"),
        (None, false) => "no token".to_string(),
        (None, true) => "no token, read-only".to_string(),
    }
}

/// The settings a background server and its monitor get: the resolved address and read-only
/// flag, and the token file (absolute, as the monitor may start servers long after this
/// directory changed); no token file means the server reads `[serve] token_file` or
/// `WORKQ_TOKEN` itself, as the foreground server does.
fn server_settings(
    ctx: &Context,
    settings: &crate::serve::Settings,
    token_file: Option<PathBuf>,
) -> Result<ServerSettings, CliError> {
    let mut s = ServerSettings::defaults(&settings.listen.to_string(), &ctx.state_dir);
    s.read_only = settings.read_only;
    s.token_file = match token_file {
        Some(f) if f.is_relative() => Some(
            std::env::current_dir()
                .map_err(CliError::current_dir)?
                .join(f),
        ),
        other => other,
    };
    if ctx.quiet {
        s.level = Level::Error.as_str().into();
    } else if ctx.verbose {
        s.level = Level::Debug.as_str().into();
    }
    Ok(s)
}

/// Runs `workq serve stop`: 0 if it stopped or was not running, 5 if it could not be verified.
fn stop(ctx: &Context, a: StopArgs) -> CmdResult {
    let run_dir = ctx.state_dir.join("run");
    let mut steps = Vec::new();
    let outcome = control::stop_server(&run_dir, a.timeout, &mut |m| {
        if !ctx.json && !ctx.quiet {
            println!("{m}");
        }
        steps.push(m);
    });
    if ctx.json {
        let result = match outcome {
            Stopped::NotRunning => "not_running",
            Stopped::Gracefully => "stopped",
            Stopped::Killed => "killed",
            Stopped::Refused => "refused",
        };
        println!("{}", json!({"result": result, "steps": steps}));
    }
    Ok(if outcome == Stopped::Refused {
        code::UNAVAILABLE
    } else {
        0
    })
}

/// The hidden `serve _monitor`: started by `serve -d`.
fn monitor(ctx: &Context) -> CmdResult {
    workq_runtime::signals::block_terminating();
    let mut ready = ready::from_env();
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(e) => return report_failure(&mut ready, e),
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return report_failure(&mut ready, CliError::current_exe(e)),
    };
    let run_dir = ctx.state_dir.join("run");
    let code = workq_runtime::monitor::run_server_monitor(
        settings,
        &own_command_of(exe, ctx, "serve", "_run"),
        &run_dir,
        ready,
    );
    Ok(code)
}

/// The hidden `serve _run`: one server process under its monitor. It reports the address it
/// bound on the readiness pipe; SIGTERM (from the monitor) is its graceful shutdown, so unlike
/// a worker it leaves the terminating signals to the server's own handlers.
fn run_under_monitor(ctx: Context) -> CmdResult {
    let mut ready = ready::from_env();
    let server = match settings_from_env() {
        Ok(s) => s,
        Err(e) => return report_failure(&mut ready, e),
    };
    let settings = match crate::serve::resolve(
        &ctx,
        Some(server.listen.clone()),
        server.token_file.clone(),
        server.read_only,
    ) {
        Ok(s) => s,
        Err(e) => return report_failure(&mut ready, e),
    };
    let guard = guard_of(&settings);
    let pid = std::process::id() as i32;
    let level = server.log_level();
    let log = |lvl: Level, msg: std::fmt::Arguments<'_>| {
        if lvl <= level {
            logger::append_line(&server.log_file, lvl, format_args!("server: {msg}"));
        }
    };
    let result = crate::serve::run(ctx, settings, &mut |addr| {
        log(
            Level::Info,
            format_args!("pid {pid} listening on http://{addr}/ ({guard})"),
        );
        if let Some(mut w) = ready.take() {
            let report = ready::Report::Listening {
                pid,
                addr: addr.to_string(),
            };
            ready::send(&mut w, &report);
        }
    });
    match result {
        Ok(c) => {
            log(Level::Info, format_args!("pid {pid} stopped"));
            Ok(c)
        }
        Err(e) => {
            log(Level::Error, format_args!("{}", e.message()));
            report_failure(&mut ready, e)
        }
    }
}

/// The background server's settings, from the environment its monitor (or `serve -d`) set.
fn settings_from_env() -> Result<ServerSettings, CliError> {
    let raw = std::env::var(SERVE_SETTINGS_ENV)
        .map_err(|_| CliError::usage("this subcommand is internal: use `workq serve -d`"))?;
    ServerSettings::from_json(&raw).map_err(CliError::usage)
}
