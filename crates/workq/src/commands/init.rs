//! `workq init`: create the state directory with a commented config file.

use crate::context::Context;
use crate::error::{code, CliError, CmdResult};

/// Create .workq/ with a commented config.toml
#[derive(clap::Args, Debug)]
pub struct Args {}

const CONFIG: &str = r#"# workq configuration for this project.
#
# Every setting is commented out: the values shown are the built-in defaults.
# Layering (lowest to highest): defaults < /etc/workq/config.toml < ~/.config/workq/config.toml
# < this file < WORKQ_* environment variables < command-line flags.
# Note: this release reads the state dir and store from flags and WORKQ_STATE_DIR/WORKQ_STORE;
# the [defaults] and [queues] sections below are the planned schema.

# [store]
# url = "sqlite://.workq/workq.db"   # or "postgres://user@host/db"
# journal_mode = "auto"              # auto | wal | delete

# [defaults]                         # for every queue unless it says otherwise
# retries = 0
# backoff = "10s"                    # exponential from here, capped at 1h, with jitter
# timeout = "none"
# kill_grace = "10s"                 # between SIGTERM and SIGKILL

# [queues.example]
# command = "process {input} --out {output}"
# workers = 2
# retries = 2
# timeout = "12h"
"#;

pub fn run(ctx: &Context, _a: Args) -> CmdResult {
    let dir = if ctx.found {
        ctx.state_dir.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| {
                CliError::new(
                    code::UNAVAILABLE,
                    format!("cannot read the current directory: {e}"),
                )
            })?
            .join(".workq")
    };
    let existed = dir.join("workq.db").exists();
    let client = workq::Client::open_at(&dir, &ctx.db_path)?;
    let config = dir.join("config.toml");
    if !config.exists() {
        std::fs::write(&config, CONFIG).map_err(|e| {
            CliError::new(
                code::UNAVAILABLE,
                format!("cannot write {}: {e}", config.display()),
            )
        })?;
    }
    drop(client);
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"state_dir": dir, "created": !existed})
        );
    } else if !ctx.quiet {
        if existed {
            println!("{} is already initialized", dir.display());
        } else {
            println!("initialized {}", dir.display());
            println!("next: workq worker start &   then   workq submit -- echo hello");
        }
    }
    Ok(0)
}
