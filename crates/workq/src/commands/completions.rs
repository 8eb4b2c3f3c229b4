//! `workq completions SHELL`: a completion script for bash, zsh or fish on standard output.

use clap::CommandFactory;

use crate::error::CmdResult;

/// Print a shell completion script
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Load it for this shell, or install it for good:\n  source <(workq completions bash)\n  workq completions bash > ~/.local/share/bash-completion/completions/workq\n  workq completions zsh > ~/.zfunc/_workq          (with fpath+=~/.zfunc before compinit)\n  workq completions fish > ~/.config/fish/completions/workq.fish"
)]
pub struct Args {
    /// The shell
    #[arg(value_enum)]
    shell: Shell,
}

/// Shells a script can be written for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Runs `workq completions`; needs no store or config.
pub fn run(a: Args) -> CmdResult {
    let mut cmd = super::Cli::command();
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "workq", &mut std::io::stdout());
    Ok(0)
}
