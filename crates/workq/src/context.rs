//! What every command shares: where the state lives, how to print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::{code, CliError};

/// Global options, resolved.
pub struct Context {
    /// The state directory (may not exist yet).
    pub state_dir: PathBuf,
    /// The database file.
    pub db_path: PathBuf,
    /// Whether the state directory was given or found (false: the `./.workq` fallback).
    pub found: bool,
    /// Print JSON.
    pub json: bool,
    /// More detail.
    pub verbose: bool,
    /// Errors only.
    pub quiet: bool,
    /// Colour output.
    pub color: bool,
    /// Standard output is a terminal.
    pub tty: bool,
    /// Standard error is a terminal.
    pub err_tty: bool,
    /// How long a command waits for a locked database (`WORKQ_LOCK_TIMEOUT`, default 10s).
    pub lock_timeout: std::time::Duration,
}

/// Colour choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal unless NO_COLOR is set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

impl Context {
    /// Resolves the global options.
    pub fn new(
        state_dir: Option<PathBuf>,
        store: Option<String>,
        json: bool,
        verbose: bool,
        quiet: bool,
        color: ColorChoice,
    ) -> Result<Context, CliError> {
        let cwd = std::env::current_dir().map_err(|e| {
            CliError::new(
                code::UNAVAILABLE,
                format!("cannot read the current directory: {e}"),
            )
        })?;
        let (state_dir, found) = match state_dir {
            Some(d) => (absolute(&cwd, &d), true),
            None => match find_state_dir(&cwd) {
                Some(d) => (d, true),
                None => (cwd.join(".workq"), false),
            },
        };
        let db_path = match store {
            None => state_dir.join("workq.db"),
            Some(url) => parse_store_url(&url, &cwd)?,
        };
        let tty = std::io::stdout().is_terminal();
        let err_tty = std::io::stderr().is_terminal();
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        let lock_timeout = match std::env::var("WORKQ_LOCK_TIMEOUT") {
            Ok(v) if !v.is_empty() => workq_core::parse_duration(&v)
                .map_err(|e| CliError::usage(format!("WORKQ_LOCK_TIMEOUT: {e}")))?,
            _ => std::time::Duration::from_secs(10),
        };
        Ok(Context {
            lock_timeout,
            state_dir,
            db_path,
            found,
            json,
            verbose,
            quiet,
            color,
            tty,
            err_tty,
        })
    }

    /// True if the store exists already (read-only commands do not create it).
    pub fn store_exists(&self) -> bool {
        self.db_path.exists()
    }

    /// Opens the store, creating the state dir on first use with a one-line notice.
    pub fn client(&self) -> Result<workq::Client, CliError> {
        let fresh = !self.state_dir.exists();
        let client = workq::Client::open_with_lock_timeout(
            &self.state_dir,
            &self.db_path,
            self.lock_timeout,
        )?;
        if fresh && !self.quiet {
            eprintln!("workq: created {}", self.state_dir.display());
        }
        Ok(client)
    }

    /// Opens the store for reading; `None` if nothing was ever stored here.
    pub fn client_if_exists(&self) -> Result<Option<workq::Client>, CliError> {
        if !self.store_exists() {
            if !self.quiet && !self.json {
                eprintln!(
                    "workq: no jobs yet: no store at {} (submit a job to create it, or pass --state-dir)",
                    self.db_path.display()
                );
            }
            return Ok(None);
        }
        self.client().map(Some)
    }

    /// Wraps `text` in an ANSI colour when colour is on.
    pub fn paint(&self, text: &str, ansi: &str) -> String {
        if self.color && !ansi.is_empty() {
            format!("\x1b[{ansi}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// The nearest `.workq/` at or above `start`.
fn find_state_dir(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(".workq"))
        .find(|d| d.is_dir())
}

fn parse_store_url(url: &str, cwd: &Path) -> Result<PathBuf, CliError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(
                CliError::usage(format!("--store {url}: the path is missing"))
                    .hint("use sqlite://.workq/workq.db"),
            );
        }
        return Ok(absolute(cwd, Path::new(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(CliError::new(
            code::UNAVAILABLE,
            "PostgreSQL stores are not supported by this build yet",
        )
        .hint("use the embedded default (omit --store) or sqlite://PATH"));
    }
    Err(CliError::usage(format!("--store {url:?}: unknown store URL")).hint("use sqlite://PATH"))
}
