//! `workq store migrate --to postgres://…`: move a project's SQLite store to PostgreSQL.

use serde_json::json;

use crate::context::Context;
use crate::error::{CliError, CmdResult, ErrorKind};

/// The store itself
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Copy this project's SQLite store (jobs, attempts, events, workers, queues) into PostgreSQL
    Migrate(MigrateArgs),
}

/// Copy the store
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Stop the workers first (workq worker stop --all), so nothing changes while it copies.\nThen point every command and worker at the new store: export WORKQ_STORE=postgres://…"
)]
pub struct MigrateArgs {
    /// The PostgreSQL database to copy into (schema workq is created if needed)
    #[arg(long, value_name = "URL")]
    to: String,
    /// Empty the target first if it already holds jobs or workers
    #[arg(long)]
    replace: bool,
}

/// Runs `workq store …`.
pub fn run(ctx: &Context, c: Command) -> CmdResult {
    match c {
        Command::Migrate(a) => migrate(ctx, a),
    }
}

fn migrate(ctx: &Context, a: MigrateArgs) -> CmdResult {
    if ctx.pg_url.is_some() {
        return Err(CliError::usage(
            "the current store is already PostgreSQL; migrate copies a SQLite store",
        )
        .with_hint(
            "run it in the project whose .workq/workq.db you want to copy (unset WORKQ_STORE)",
        ));
    }
    if !(a.to.starts_with("postgres://") || a.to.starts_with("postgresql://")) {
        return Err(CliError::usage(
            "--to: expected postgres://USER@HOST:PORT/DATABASE",
        ));
    }
    if !ctx.db_path.exists() {
        return Err(CliError::not_found(format!(
            "no store to copy at {}",
            ctx.db_path.display()
        )));
    }
    // Opening brings the source up to this build's schema first.
    drop(ctx.client()?);
    let target = workq_store::PgStore::open(&a.to, workq_store::PgOptions::default())?;
    let report =
        target
            .import_sqlite(&ctx.db_path, a.replace)
            .map_err(|e| match CliError::from(e) {
                // The target holds data already; the store cannot know the flag that allows it.
                e if e.kind() == ErrorKind::Conflict => {
                    e.with_hint("pass --replace to empty it first")
                }
                e => e,
            })?;
    if ctx.json {
        let counts: serde_json::Map<String, serde_json::Value> =
            report.iter().map(|(t, n)| (t.clone(), json!(n))).collect();
        println!(
            "{}",
            json!({"from": ctx.db_path, "to": target.location(), "copied": counts})
        );
    } else if !ctx.quiet {
        println!("copied {} to {}:", ctx.db_path.display(), target.location());
        for (t, n) in &report {
            println!("  {t:<16} {n}");
        }
        println!(
            "next: export WORKQ_STORE='{}' (with your password, if any) and restart the workers",
            target.location()
        );
    }
    Ok(0)
}
