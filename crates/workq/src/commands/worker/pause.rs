//! `workq worker pause` and `workq worker resume`.

use std::time::Duration;

use serde_json::json;
use workq_runtime::control::{self, Found};
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
    let mut out = Vec::new();
    for name in &names {
        store.set_worker_paused(&host, name, paused)?;
        let running = matches!(control::find(store, &run_dir, name)?, Found::Running(_));
        out.push(json!({"name": name, "paused": paused, "running": running}));
        if ctx.json || ctx.quiet {
            continue;
        }
        match (paused, running) {
            (true, true) => println!(
                "worker {name} paused: it lets its running jobs finish and claims nothing new (workq worker resume {name} to undo)"
            ),
            (true, false) => println!("worker {name} is not running; it will start paused"),
            (false, true) => println!("worker {name} resumed: claiming again"),
            (false, false) => println!("worker {name} is not running; it will start unpaused"),
        }
    }
    workq_runtime::doorbell::ring_all(&run_dir);
    // Let running workers acknowledge, so `status` right after shows the new state.
    let want = if paused {
        workq_core::WorkerState::Paused
    } else {
        workq_core::WorkerState::Running
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let pending = store.workers(false)?.into_iter().any(|w| {
            w.host == host
                && names.contains(&w.name)
                && matches!(
                    w.state,
                    workq_core::WorkerState::Running | workq_core::WorkerState::Paused
                )
                && w.state != want
                && procinfo::process_alive(w.pid, w.pid_start_time)
        });
        if !pending {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if ctx.json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(0)
}
