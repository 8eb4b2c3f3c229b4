//! One file per subcommand; clap types stay in the binary: in this module, and `ColorChoice`
//! in `context.rs` (ARCHITECTURE.md §1).

mod cancel;
mod completions;
mod config;
mod doctor;
mod health;
mod init;
mod list;
mod logs;
mod man;
mod pools;
mod purge;
mod retry;
mod run;
mod serve;
mod show;
mod status;
mod store;
mod submit;
mod wait;
mod worker;
mod workers;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::context::{ColorChoice, Context};
use crate::error::CmdResult;

/// The help heading of the options every subcommand takes, so that a subcommand's help shows
/// its own options apart from them.
const GLOBAL: &str = "Global options";

/// workq: a durable background job queue with worker management.
///
/// Submit shell commands as jobs; workers run them as child processes, retry them, time them out,
/// and survive crashes without losing a job. State lives in .workq/workq.db (SQLite), or in a
/// PostgreSQL database that workers on many hosts share (--store postgres://…).
#[derive(Parser, Debug)]
#[command(
    name = "workq",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Quick start:\n  workq submit --wait -- echo hello   run one job now\n  workq worker start -w 4 &           start a worker with 4 slots\n  workq submit -- ./long-task.sh      queue a job, print its id\n  workq status                        queues and workers at a glance"
)]
pub struct Cli {
    /// State directory [default: nearest .workq/ at or above the current directory, else ./.workq]
    #[arg(long, global = true, env = "WORKQ_STATE_DIR", value_name = "DIR", help_heading = GLOBAL)]
    state_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://USER@HOST:PORT/DATABASE [default: [store] url in config, else <state-dir>/workq.db]
    #[arg(long, global = true, env = "WORKQ_STORE", value_name = "URL", help_heading = GLOBAL)]
    store: Option<String>,
    /// Project config file [default: .workq/config.toml, else workq.toml beside .workq/]
    #[arg(long, global = true, env = "WORKQ_CONFIG", value_name = "FILE", help_heading = GLOBAL)]
    config: Option<PathBuf>,
    /// Print JSON (stable shapes, see README)
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// More detail
    #[arg(short, long, global = true, conflicts_with = "quiet", help_heading = GLOBAL)]
    verbose: bool,
    /// Only errors
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    quiet: bool,
    /// Colour output (NO_COLOR is honoured by auto)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN",
        help_heading = GLOBAL
    )]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create .workq/ with a commented config.toml
    Init(init::Args),
    /// Queue a job (or one job per line with --lines)
    Submit(Box<submit::Args>),
    /// Run typed jobs from a queue's command template, one per parameter row
    Run(run::Args),
    /// List jobs, newest first
    List(list::Args),
    /// Show one job with its attempts
    Show(show::Args),
    /// Print a job's output
    Logs(logs::Args),
    /// Block until jobs finish
    Wait(wait::Args),
    /// Stop queued or running jobs
    Cancel(cancel::Args),
    /// Queue failed or cancelled jobs again
    Retry(retry::Args),
    /// Remove old finished jobs and their logs
    Purge(purge::Args),
    /// Queues and workers at a glance
    Status(status::Args),
    /// Start, stop, restart, inspect, pause and resume local workers
    #[command(subcommand)]
    Worker(worker::Command),
    /// Every registered worker on every host; clean up after dead ones
    #[command(subcommand)]
    Workers(workers::Command),
    /// Start the worker pools that config defines (reusing healthy running ones)
    Up(pools::UpArgs),
    /// Stop the worker pools that config defines
    Down(pools::DownArgs),
    /// Check every worker's health; exit 1 if any check fails (for cron and probes)
    Health(health::Args),
    /// Move the store: copy a SQLite store into PostgreSQL
    #[command(subcommand)]
    Store(store::Command),
    /// Show the effective configuration and where each setting came from
    #[command(subcommand)]
    Config(config::Command),
    /// Diagnose the state dir, the store and the workers, with the command that fixes each problem
    Doctor(doctor::Args),
    /// Serve the HTTP API, the live dashboard and Prometheus metrics
    Serve(serve::Args),
    /// Print a shell completion script (bash, zsh, fish)
    Completions(completions::Args),
    /// Write man pages (workq.1 and one per subcommand)
    Man(man::Args),
}

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> CmdResult {
    // These two describe the program, not a project: no config or store is read.
    let cli = match cli.command {
        Command::Completions(a) => return completions::run(a),
        Command::Man(a) => return man::run(a, cli.json, cli.quiet),
        _ => cli,
    };
    let ctx = Context::new(
        cli.state_dir,
        cli.store,
        cli.config,
        cli.json,
        cli.verbose,
        cli.quiet,
        cli.color,
    )?;
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Submit(a) => submit::run(&ctx, *a),
        Command::Run(a) => run::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Show(a) => show::run(&ctx, a),
        Command::Logs(a) => logs::run(&ctx, a),
        Command::Wait(a) => wait::run(&ctx, a),
        Command::Cancel(a) => cancel::run(&ctx, a),
        Command::Retry(a) => retry::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Purge(a) => purge::run(&ctx, a),
        Command::Worker(c) => worker::run(&ctx, c),
        Command::Workers(c) => workers::run(&ctx, c),
        Command::Health(a) => health::run(&ctx, a),
        Command::Up(a) => pools::up(&ctx, a),
        Command::Down(a) => pools::down(&ctx, a),
        Command::Doctor(a) => doctor::run(&ctx, a),
        Command::Config(c) => config::run(&ctx, c),
        Command::Store(c) => store::run(&ctx, c),
        Command::Serve(a) => serve::run(ctx, a),
        Command::Completions(_) | Command::Man(_) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand's help, with its path (`worker stop`).
    fn helps(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        out.push((path.to_string(), cmd.render_long_help().to_string()));
        for sub in cmd.get_subcommands_mut() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let path = format!("{path} {}", sub.get_name()).trim().to_string();
            helps(sub, &path, out);
        }
    }

    #[test]
    fn every_help_lists_the_global_options_under_their_own_heading_after_its_own() {
        let mut all = Vec::new();
        helps(&mut Cli::command(), "", &mut all);
        assert!(all.len() > 20, "{}", all.len());
        for (path, help) in all {
            let Some(at) = help.find("\nGlobal options:\n") else {
                panic!("workq {path} --help has no Global options heading:\n{help}");
            };
            let (own, global) = help.split_at(at);
            for flag in [
                "--state-dir",
                "--store",
                "--config",
                "--json",
                "--verbose",
                "--quiet",
                "--color",
            ] {
                assert!(
                    global.contains(flag),
                    "workq {path}: {flag} not under Global options"
                );
                assert!(
                    !own.contains(&format!("  {flag}")) && !own.contains(&format!(", {flag}")),
                    "workq {path}: {flag} among its own options:\n{help}"
                );
            }
        }
    }

    #[test]
    fn the_quick_start_columns_line_up() {
        let cmd = Cli::command();
        let text = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert!(lines.len() >= 4, "{text}");
        // The description starts after the first gap of two or more spaces past the indent.
        let column = |l: &str| {
            let indent = l.len() - l.trim_start().len();
            let gap = indent + l[indent..].find("  ").expect("two columns");
            l.len() - l[gap..].trim_start().len()
        };
        let first = column(lines[0]);
        for l in &lines {
            assert_eq!(column(l), first, "{text}");
        }
    }
}
