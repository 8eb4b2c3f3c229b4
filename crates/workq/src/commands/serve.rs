//! `workq serve`: the HTTP API, dashboard and metrics (see `crate::serve`).

use std::path::PathBuf;

use crate::context::Context;
use crate::error::{CliError, CmdResult};

/// Serve the HTTP API, the live dashboard and Prometheus metrics
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Listens on 127.0.0.1:7878 unless --listen or [serve] listen says otherwise. A non-loopback\naddress needs a token of at least 32 bytes (--token-file FILE or WORKQ_TOKEN); with a token,\nevery route but /healthz needs `Authorization: Bearer TOKEN` (the dashboard asks once).\n\nExamples:\n  workq serve                          dashboard at http://127.0.0.1:7878/\n  workq serve -d                       the same, in the background under a monitor\n  workq serve --read-only --listen 0.0.0.0:7878 --token-file ~/.workq-token\n  curl -s http://127.0.0.1:7878/api/v1/status\n  workq serve stop"
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
    /// Run in the background under a monitor that restarts it
    #[arg(short = 'd', long)]
    daemon: bool,
}

/// `workq serve` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Stop the background server
    Stop,
    /// Whether the background server runs, and where
    Status,
}

/// Runs `workq serve …`.
pub fn run(ctx: Context, a: Args) -> CmdResult {
    match a.command {
        Some(Command::Stop) | Some(Command::Status) => {
            Err(CliError::usage("workq serve stop/status: not built yet"))
        }
        None => {
            let settings = crate::serve::resolve(&ctx, a.listen, a.token_file, a.read_only)?;
            if a.daemon {
                return Err(CliError::usage("workq serve -d: not built yet"));
            }
            let quiet = ctx.quiet;
            let json = ctx.json;
            let guard = match (&settings.token_source, settings.read_only) {
                (Some(src), false) => format!("token from {src}"),
                (Some(src), true) => format!("token from {src}, read-only"),
                (None, false) => "no token".to_string(),
                (None, true) => "no token, read-only".to_string(),
            };
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
