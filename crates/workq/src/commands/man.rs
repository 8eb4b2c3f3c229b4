//! `workq man [DIR]`: man pages for workq and each of its subcommands.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::error::{CliError, CmdResult};

/// Write man pages (workq.1 and one per subcommand)
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  workq man ~/.local/share/man/man1     then: man workq, man workq-worker-start\n  workq man /tmp/m && man -l /tmp/m/workq.1"
)]
pub struct Args {
    /// Directory to write them to (created if missing) [default: the current directory]
    dir: Option<PathBuf>,
}

/// Runs `workq man`; needs no store or config.
pub fn run(a: Args, json: bool, quiet: bool) -> CmdResult {
    let dir = a.dir.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::unavailable(format!("cannot create {}: {e}", dir.display()))
            .with_hint("give a directory you can write to: workq man DIR")
    })?;
    let mut written = Vec::new();
    let cmd = super::Cli::command().name("workq");
    write_pages(&cmd, "workq", &dir, &mut written)?;
    if json {
        println!("{}", serde_json::json!({ "written": written }));
    } else if !quiet {
        for p in &written {
            println!("{p}");
        }
    }
    Ok(0)
}

/// Writes the page of `cmd` as `NAME.1`, then those of its visible subcommands as
/// `NAME-SUB.1`, recursively.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<(), CliError> {
    // The page is named workq-worker-start; its synopsis shows what one types.
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .map_err(|e| CliError::unavailable(format!("cannot render the page of {name}: {e}")))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf)
        .map_err(|e| CliError::unavailable(format!("cannot write {}: {e}", path.display())))?;
    written.push(path.display().to_string());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
