//! What every command shares: where the state lives, how to print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Global options, resolved.
pub struct Context {
    /// The state directory (may not exist yet).
    pub state_dir: PathBuf,
    /// The database file (SQLite).
    pub db_path: PathBuf,
    /// The PostgreSQL URL, when the store is PostgreSQL.
    pub pg_url: Option<String>,
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
    /// The effective configuration, with provenance.
    pub config: crate::config::Config,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state_dir: Option<PathBuf>,
        store: Option<String>,
        config_file: Option<PathBuf>,
        json: bool,
        verbose: bool,
        quiet: bool,
        color: ColorChoice,
    ) -> Result<Context, CliError> {
        // An empty WORKQ_STORE or WORKQ_STATE_DIR means unset, as shells tend to leave them.
        let store = store.filter(|s| !s.trim().is_empty());
        let state_dir = state_dir.filter(|d| !d.as_os_str().is_empty());
        let config_file = config_file.filter(|f| !f.as_os_str().is_empty());
        let cwd = std::env::current_dir().map_err(CliError::current_dir)?;
        let (state_dir, found) = match state_dir {
            Some(d) => (absolute(&cwd, &d), true),
            None => match find_state_dir(&cwd) {
                Some(d) => (d, true),
                None => (cwd.join(".workq"), false),
            },
        };
        let paths =
            crate::config::Paths::standard(&state_dir, config_file.map(|f| absolute(&cwd, &f)));
        let mut config = crate::config::Config::load(&paths, std::env::vars()).map_err(|e| {
            CliError::usage(format!("config: {e}")).with_hint(
                "fix the setting, or see `workq config show --sources` and README's Configuration",
            )
        })?;
        let (db_path, pg_url) = resolve_store(store, &mut config, &state_dir, &cwd)?;
        let tty = std::io::stdout().is_terminal();
        let err_tty = std::io::stderr().is_terminal();
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        let lock_timeout = lock_timeout()?;
        if let Some(url) = &pg_url {
            // Processes this command starts (workers, monitors) find the store here rather than
            // in their command line, where a password would be visible to other users.
            std::env::set_var("WORKQ_STORE", url);
        }
        Ok(Context {
            pg_url,
            config,
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
        self.pg_url.is_some() || self.db_path.exists()
    }

    /// The `--store` arguments that make a child process open this store (none for PostgreSQL:
    /// the URL travels in `WORKQ_STORE`, out of sight of `ps`).
    pub fn store_args(&self) -> Vec<String> {
        match &self.pg_url {
            Some(_) => Vec::new(),
            None => vec![
                "--store".into(),
                format!("sqlite://{}", self.db_path.display()),
            ],
        }
    }

    /// Where the store is, for messages (never a password).
    pub fn store_location(&self) -> String {
        match &self.pg_url {
            Some(url) => workq_store::pg::describe_url(url),
            None => self.db_path.display().to_string(),
        }
    }

    /// Opens the store, creating the state dir on first use with a one-line notice.
    pub fn client(&self) -> Result<workq::Client, CliError> {
        let fresh = !self.state_dir.exists();
        if let Some(url) = &self.pg_url {
            let client = workq::Client::open_postgres(&self.state_dir, url)
                .map_err(|e| self.store_error(e))?;
            if fresh && !self.quiet {
                eprintln!("workq: created {}", self.state_dir.display());
            }
            return Ok(client);
        }
        let mode = self.journal_mode();
        if mode == workq_store::JournalMode::Auto
            && !self.quiet
            && !self.json
            && workq_store::sqlite::on_network_fs(&self.db_path)
        {
            eprintln!(
                "workq: {} is on a network or virtual filesystem: using journal_mode = delete (WAL needs shared memory on one host)",
                self.db_path.display()
            );
        }
        let client =
            workq::Client::open_with(&self.state_dir, &self.db_path, self.lock_timeout, mode)?;
        if fresh && !self.quiet {
            eprintln!("workq: created {}", self.state_dir.display());
        }
        Ok(client)
    }

    /// A store that cannot be opened: when it cannot be reached, the hint names the setting its
    /// URL came from and how to fix or drop it (the error itself says what failed).
    pub fn store_error(&self, e: workq::Error) -> CliError {
        let unreachable = matches!(
            &e,
            workq::Error::Store(workq_store::StoreError::Unavailable { .. })
        );
        let err = CliError::from(e);
        match self.config.get("store.url") {
            Some(s) if unreachable && self.pg_url.is_some() => err.with_hint(store_fix(&s.source)),
            _ => err,
        }
    }

    /// The configured SQLite journal mode.
    pub fn journal_mode(&self) -> workq_store::JournalMode {
        match self.config.str("store.journal_mode").as_deref() {
            Some("wal") => workq_store::JournalMode::Wal,
            Some("delete") => workq_store::JournalMode::Delete,
            _ => workq_store::JournalMode::Auto,
        }
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

/// Where the store is: the database file, and the PostgreSQL URL when it is PostgreSQL. From
/// `--store` (or `WORKQ_STORE`), else `store.url` in config, else `<state-dir>/workq.db`
/// (ARCHITECTURE.md §6.1); `config` learns where it came from, never with a password.
fn resolve_store(
    store: Option<String>,
    config: &mut crate::config::Config,
    state_dir: &Path,
    cwd: &Path,
) -> Result<(PathBuf, Option<String>), CliError> {
    use crate::config::Source;
    let (url, source, base) = match store {
        Some(url) => {
            let source = if std::env::var("WORKQ_STORE").ok().as_deref() == Some(url.as_str()) {
                Source::Env("WORKQ_STORE".into())
            } else {
                Source::Flag("--store".into())
            };
            (url, source, cwd.to_path_buf())
        }
        None => match config.get("store.url") {
            Some(s) if s.source != Source::Default => {
                let url = s.value.as_str().unwrap_or_default().to_string();
                // A relative path in a config file is relative to the project root.
                let root = state_dir.parent().unwrap_or(cwd).to_path_buf();
                (url, s.source.clone(), root)
            }
            _ => return Ok((state_dir.join("workq.db"), None)),
        },
    };
    if is_pg(&url) {
        let shown = workq_store::pg::describe_url(&url);
        config.set_source("store.url", toml::Value::String(shown), source);
        return Ok((state_dir.join("workq.db"), Some(url)));
    }
    let path = parse_store_url(&url, &base, &origin_of(&source))?;
    config.set_source("store.url", toml::Value::String(url), source);
    Ok((path, None))
}

/// The setting a store URL came from, as errors name it: `--store`, `WORKQ_STORE`, or
/// `store.url (FILE:LINE)`.
fn origin_of(source: &crate::config::Source) -> String {
    use crate::config::Source;
    match source {
        Source::Flag(f) => f.clone(),
        Source::Env(v) => v.clone(),
        Source::File(..) | Source::Default => format!("store.url ({source})"),
    }
}

/// What to do about a store URL that does not work, by where it came from.
fn store_fix(source: &crate::config::Source) -> String {
    use crate::config::Source;
    match source {
        Source::Flag(f) => format!("the URL came from {f}: correct it"),
        Source::Env(v) => format!(
            "the URL came from the environment variable {v}: correct it, or run `unset {v}` to use the SQLite store in the state dir"
        ),
        Source::File(path, line) => format!(
            "the URL came from url under [store] in {}, line {line}: correct it there",
            path.display()
        ),
        Source::Default => "pass --store URL".into(),
    }
}

/// How long a command waits for a locked database: `WORKQ_LOCK_TIMEOUT`, else 10 seconds.
fn lock_timeout() -> Result<std::time::Duration, CliError> {
    match std::env::var("WORKQ_LOCK_TIMEOUT") {
        Ok(v) if !v.is_empty() => workq_core::parse_duration(&v)
            .map_err(|e| CliError::usage(format!("WORKQ_LOCK_TIMEOUT: {e}"))),
        _ => Ok(std::time::Duration::from_secs(10)),
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

/// The database file of a `sqlite://` URL, relative to `base`; `origin` names the setting the
/// URL came from, for the error.
fn parse_store_url(url: &str, base: &Path, origin: &str) -> Result<PathBuf, CliError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(
                CliError::usage(format!("{origin} {url}: the path is missing"))
                    .with_hint("use sqlite://.workq/workq.db"),
            );
        }
        return Ok(absolute(base, Path::new(path)));
    }
    Err(
        CliError::usage(format!("{origin} {:?}: unknown store URL", redact(url)))
            .with_hint("use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"),
    )
}

fn is_pg(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
