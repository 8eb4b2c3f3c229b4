//! `workq config show`: the effective settings and where each came from.

use serde_json::json;

use crate::config::{render_value, to_json};
use crate::context::Context;
use crate::error::CmdResult;

/// Configuration
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print the effective settings (with --sources: the file:line, variable, flag or default of each)
    Show(ShowArgs),
}

/// Show the effective configuration
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Layers, lowest to highest: built-in defaults < /etc/workq/config.toml <\n$XDG_CONFIG_HOME/workq/config.toml (~/.config/workq/config.toml) < the project's\n.workq/config.toml (or workq.toml beside .workq/, or --config FILE) < WORKQ_<SECTION>__<KEY>\nvariables (e.g. WORKQ_DEFAULTS__TIMEOUT=1h, WORKQ_QUEUES__QSIPREP__WORKERS=4) < flags."
)]
pub struct ShowArgs {
    /// Show where each setting came from
    #[arg(long)]
    sources: bool,
}

/// Runs `workq config …`.
pub fn run(ctx: &Context, c: Command) -> CmdResult {
    match c {
        Command::Show(a) => show(ctx, a),
    }
}

fn show(ctx: &Context, a: ShowArgs) -> CmdResult {
    let journal = journal_in_effect(ctx);
    if ctx.json {
        print_json(ctx, a.sources, journal);
        return Ok(0);
    }
    print_text(ctx, a.sources, journal);
    Ok(0)
}

/// The journal mode SQLite will use, and why.
fn journal_in_effect(ctx: &Context) -> &'static str {
    match ctx.journal_mode() {
        workq_store::JournalMode::Auto => {
            if workq_store::sqlite::on_network_fs(&ctx.db_path) {
                "delete (auto: network or virtual filesystem)"
            } else {
                "wal (auto: local filesystem)"
            }
        }
        workq_store::JournalMode::Wal => "wal",
        workq_store::JournalMode::Delete => "delete",
    }
}

fn print_json(ctx: &Context, sources: bool, journal: &str) {
    let cfg = &ctx.config;
    let settings: serde_json::Map<String, serde_json::Value> = cfg
        .entries()
        .iter()
        .map(|(k, s)| {
            let v = if sources {
                json!({"value": to_json(&s.value), "source": s.source.to_string()})
            } else {
                to_json(&s.value)
            };
            (k.clone(), v)
        })
        .collect();
    println!(
        "{}",
        json!({
            "settings": settings,
            "files": cfg.files,
            "state_dir": ctx.state_dir,
            "store": ctx.store_location(),
            "journal_mode_in_effect": journal,
        })
    );
}

/// `key = value` lines grouped by section (with `--sources`, where each came from), then notes.
fn print_text(ctx: &Context, sources: bool, journal: &str) {
    let cfg = &ctx.config;
    let width = cfg.entries().keys().map(|k| k.len()).max().unwrap_or(0);
    let mut section = String::new();
    for (k, s) in cfg.entries() {
        let sec = match k.strip_prefix("queues.") {
            Some(rest) => format!(
                "queues.{}",
                rest.split_once('.').map(|x| x.0).unwrap_or(rest)
            ),
            None => k.split('.').next().unwrap_or("").to_string(),
        };
        if sec != section {
            if !section.is_empty() {
                println!();
            }
            section = sec;
        }
        let value = render_value(&s.value);
        if sources {
            println!("{k:<width$} = {value:<24} # {}", s.source);
        } else {
            println!("{k:<width$} = {value}");
        }
    }
    if !ctx.quiet {
        println!();
        println!("# journal mode in effect: {journal}");
        let queues = cfg.queue_names();
        if !queues.is_empty() {
            println!("# typed queues: {}", queues.join(", "));
        }
        if cfg.files.is_empty() {
            println!("# no config files found; built-in defaults apply (workq init writes a commented one)");
        } else {
            for f in &cfg.files {
                println!("# read {}", f.display());
            }
        }
    }
}
