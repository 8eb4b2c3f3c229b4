//! `workq worker pause` and `workq worker resume`.

use workq_runtime::control;
use workq_runtime::procinfo;

use crate::context::Context;
use crate::error::CmdResult;
use crate::worker_settings::name_of;

/// Pause or resume workers
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// Worker name [default: default]
    #[arg(conflicts_with = "all")]
    pub(super) name: Option<String>,
    /// Every local worker
    #[arg(long)]
    all: bool,
}

/// Runs `workq worker pause` (`paused`) or `workq worker resume`.
pub fn pause(ctx: &Context, a: PauseArgs, paused: bool) -> CmdResult {
    let client = ctx.client()?;
    let store = client.store();
    let run_dir = client.state_dir().join("run");
    let names = if a.all {
        control::local_names(store, &run_dir)?
    } else {
        vec![name_of(a.name)?]
    };
    let host = procinfo::hostname();
    let out = crate::views::set_paused(&client, &host, &names, paused)?;
    if !ctx.json && !ctx.quiet {
        for row in &out {
            let name = row["name"].as_str().unwrap_or("?");
            match (paused, row["running"] == true) {
                (true, true) => println!(
                    "worker {name} paused: it lets its running jobs finish and claims nothing new (workq worker resume {name} to undo)"
                ),
                (true, false) => println!("worker {name} is not running; it will start paused"),
                (false, true) => println!("worker {name} resumed: claiming again"),
                (false, false) => println!("worker {name} is not running; it will start unpaused"),
            }
        }
    }
    if ctx.json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(0)
}
