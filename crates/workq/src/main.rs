//! The `workq` command line.

mod commands;
mod config;
mod container;
mod context;
mod daemon;
mod error;
mod flag_values;
mod interrupts;
mod log_tail;
mod render;
mod serve;
mod views;
mod waiting;
mod worker_settings;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // An empty variable, as shells tend to leave them, means unset (clap would reject it).
    for var in ["WORKQ_STATE_DIR", "WORKQ_STORE", "WORKQ_CONFIG"] {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.eprint();
            ExitCode::from(e.exit_code())
        }
    }
}
