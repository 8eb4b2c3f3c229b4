//! How a worker is configured, in one serialisable value: the daemon passes it to its monitor,
//! the monitor to every worker it (re)starts, and the PID file and registry keep it so that
//! `worker restart` can start the same worker again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::logger::Level;

/// Environment variable that carries the settings from a daemon launcher to its processes.
pub const SETTINGS_ENV: &str = "WORKQ_WORKER_SETTINGS";

/// Everything a worker, its log and its monitor need to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// Worker name (one running worker per name and state dir).
    pub name: String,
    /// Queues it claims from.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub slots: u32,
    /// On stop, how long running jobs may go on before they are interrupted.
    pub stop_timeout_ms: u64,
    /// Between heartbeats.
    pub heartbeat_ms: u64,
    /// A heartbeat older than this while the process lives means hung.
    pub hung_after_ms: u64,
    /// The worker's own log file.
    pub log_file: PathBuf,
    /// Rotate the log when it grows past this many bytes.
    pub log_max_bytes: u64,
    /// Old log files kept (`worker.log.1` … `.N`).
    pub log_keep: u32,
    /// `error`, `info` or `debug`.
    pub level: String,
    /// Restarts the monitor allows within `restart_window_ms` before it gives up.
    pub max_restarts: u32,
    /// The window over which restarts are counted.
    pub restart_window_ms: u64,
    /// Runs under a monitor, detached from the terminal.
    pub daemon: bool,
    /// Finished jobs older than this are purged every hour, with their logs (`None`: kept).
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// Where each setting came from (`default`, `flag -w`, `restart`, …), for the start line.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

impl WorkerSettings {
    /// Defaults for the worker `name` in `state_dir`, every source `default`.
    pub fn defaults(name: &str, state_dir: &Path) -> WorkerSettings {
        let mut s = WorkerSettings {
            name: name.to_string(),
            queues: vec!["default".into()],
            slots: 1,
            stop_timeout_ms: 10_000,
            heartbeat_ms: 5_000,
            hung_after_ms: 60_000,
            log_file: default_log_file(state_dir, name),
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 3,
            level: "info".into(),
            max_restarts: 3,
            restart_window_ms: 3_600_000,
            daemon: false,
            retention_ms: None,
            sources: BTreeMap::new(),
        };
        for key in SETTING_KEYS {
            s.sources.insert(key.to_string(), "default".into());
        }
        s
    }

    /// Records where `key` came from.
    pub fn set_source(&mut self, key: &str, source: impl Into<String>) {
        self.sources.insert(key.to_string(), source.into());
    }

    /// The stop timeout.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.stop_timeout_ms)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(100))
    }

    /// How old a heartbeat may be before the worker counts as hung.
    pub fn hung_after(&self) -> Duration {
        Duration::from_millis(self.hung_after_ms)
    }

    /// The restart window.
    pub fn restart_window(&self) -> Duration {
        Duration::from_millis(self.restart_window_ms)
    }

    /// The log level.
    pub fn log_level(&self) -> Level {
        Level::from_name(&self.level)
    }

    /// Serialises for the environment, the PID file and the registry.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads settings written by [`WorkerSettings::to_json`].
    pub fn from_json(s: &str) -> Result<WorkerSettings, String> {
        serde_json::from_str(s).map_err(|e| format!("unreadable worker settings: {e}"))
    }

    /// `key value (source)` for every setting, for the worker's start line.
    pub fn describe(&self) -> String {
        let value = |key: &str| -> String {
            match key {
                "queues" => self.queues.join(","),
                "slots" => self.slots.to_string(),
                "stop_timeout" => workq_core::format_duration(self.stop_timeout()),
                "heartbeat" => workq_core::format_duration(self.heartbeat()),
                "hung_after" => workq_core::format_duration(self.hung_after()),
                "log_file" => self.log_file.display().to_string(),
                "log_max_size" => format!("{}B", self.log_max_bytes),
                "log_keep" => self.log_keep.to_string(),
                "level" => self.level.clone(),
                "max_restarts" => self.max_restarts.to_string(),
                "restart_window" => workq_core::format_duration(self.restart_window()),
                _ => String::new(),
            }
        };
        SETTING_KEYS
            .iter()
            .map(|k| {
                let src = self
                    .sources
                    .get(*k)
                    .map(String::as_str)
                    .unwrap_or("default");
                format!("{k}={} ({src})", value(k))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Environment variable that carries a background server's settings from `serve -d` to its
/// monitor and from the monitor to each server process.
pub const SERVE_SETTINGS_ENV: &str = "WORKQ_SERVE_SETTINGS";

/// How a background `workq serve` runs, in one serialisable value, as [`WorkerSettings`] is for
/// a worker. The token itself is never here, only the file that holds it: these settings
/// travel in the environment and are kept in the PID file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSettings {
    /// Address and port to listen on (port 0: any free port, pinned once bound).
    pub listen: String,
    /// The token file given with `--token-file` (absolute), if any; without it the server
    /// reads `[serve] token_file` or `WORKQ_TOKEN` as the foreground server does.
    pub token_file: Option<PathBuf>,
    /// Refuse every mutation.
    pub read_only: bool,
    /// The server's log (its monitor's lines and its own).
    pub log_file: PathBuf,
    /// `error`, `info` or `debug`.
    pub level: String,
    /// Restarts the monitor allows within `restart_window_ms` before it gives up.
    pub max_restarts: u32,
    /// The window over which restarts are counted.
    pub restart_window_ms: u64,
}

impl ServerSettings {
    /// Defaults for a server listening on `listen` for the state dir `state_dir`: the same
    /// restart rules as a worker's defaults.
    pub fn defaults(listen: &str, state_dir: &Path) -> ServerSettings {
        let w = WorkerSettings::defaults("serve", state_dir);
        ServerSettings {
            listen: listen.to_string(),
            token_file: None,
            read_only: false,
            log_file: server_log_file(state_dir),
            level: w.level,
            max_restarts: w.max_restarts,
            restart_window_ms: w.restart_window_ms,
        }
    }

    /// The restart window.
    pub fn restart_window(&self) -> Duration {
        Duration::from_millis(self.restart_window_ms)
    }

    /// The log level.
    pub fn log_level(&self) -> Level {
        Level::from_name(&self.level)
    }

    /// Serialises for the environment and the PID file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads settings written by [`ServerSettings::to_json`].
    pub fn from_json(s: &str) -> Result<ServerSettings, String> {
        serde_json::from_str(s).map_err(|e| format!("unreadable server settings: {e}"))
    }
}

/// `<state>/logs/serve.log`: no worker's log (`worker-NAME.log`) can have this name.
pub fn server_log_file(state_dir: &Path) -> PathBuf {
    state_dir.join("logs").join("serve.log")
}

/// The settings of a daemon, whichever it is: what its launcher and its monitor share.
#[derive(Debug, Clone, Copy)]
pub enum DaemonSettings<'a> {
    /// A worker.
    Worker(&'a WorkerSettings),
    /// The background server.
    Server(&'a ServerSettings),
}

impl DaemonSettings<'_> {
    /// `worker` or `server`, for sentences such as "the worker exited".
    pub fn noun(&self) -> &'static str {
        match self {
            DaemonSettings::Worker(_) => "worker",
            DaemonSettings::Server(_) => "server",
        }
    }

    /// How log lines name it: `worker NAME` or `the server`.
    pub fn label(&self) -> String {
        match self {
            DaemonSettings::Worker(s) => format!("worker {}", s.name),
            DaemonSettings::Server(_) => "the server".into(),
        }
    }

    /// The environment variable that carries the settings, and its value.
    pub fn env(&self) -> (&'static str, String) {
        match self {
            DaemonSettings::Worker(s) => (SETTINGS_ENV, s.to_json()),
            DaemonSettings::Server(s) => (SERVE_SETTINGS_ENV, s.to_json()),
        }
    }

    /// Its log file.
    pub fn log_file(&self) -> &Path {
        match self {
            DaemonSettings::Worker(s) => &s.log_file,
            DaemonSettings::Server(s) => &s.log_file,
        }
    }

    /// Its log level.
    pub fn log_level(&self) -> Level {
        match self {
            DaemonSettings::Worker(s) => s.log_level(),
            DaemonSettings::Server(s) => s.log_level(),
        }
    }

    /// Restarts allowed per window.
    pub fn max_restarts(&self) -> u32 {
        match self {
            DaemonSettings::Worker(s) => s.max_restarts,
            DaemonSettings::Server(s) => s.max_restarts,
        }
    }

    /// The window over which restarts are counted.
    pub fn restart_window(&self) -> Duration {
        match self {
            DaemonSettings::Worker(s) => s.restart_window(),
            DaemonSettings::Server(s) => s.restart_window(),
        }
    }
}

/// The settings listed in the start line, in order.
pub const SETTING_KEYS: [&str; 11] = [
    "queues",
    "slots",
    "stop_timeout",
    "heartbeat",
    "hung_after",
    "log_file",
    "log_max_size",
    "log_keep",
    "level",
    "max_restarts",
    "restart_window",
];

/// `<state>/logs/worker-<name>.log`.
pub fn default_log_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("logs").join(format!("worker-{name}.log"))
}

/// Checks a worker name: it becomes part of file names, so no slashes or odd characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "worker name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_json() {
        let mut s = WorkerSettings::defaults("gpu", Path::new("/p/.workq"));
        s.slots = 4;
        s.set_source("slots", "flag -w");
        let back = WorkerSettings::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert!(s.describe().contains("slots=4 (flag -w)"));
        assert!(s.describe().contains("queues=default (default)"));
        assert_eq!(s.log_file, Path::new("/p/.workq/logs/worker-gpu.log"));
    }

    #[test]
    fn server_settings_round_trip_and_keep_the_workers_restart_rules() {
        let mut s = ServerSettings::defaults("127.0.0.1:0", Path::new("/p/.workq"));
        s.token_file = Some("/p/token".into());
        let back = ServerSettings::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.log_file, Path::new("/p/.workq/logs/serve.log"));
        let w = WorkerSettings::defaults("x", Path::new("/p/.workq"));
        assert_eq!(
            (s.max_restarts, s.restart_window()),
            (w.max_restarts, w.restart_window())
        );
        let d = DaemonSettings::Server(&s);
        assert_eq!((d.noun(), d.label()), ("server", "the server".to_string()));
        assert_eq!(d.env().0, SERVE_SETTINGS_ENV);
        assert_eq!(DaemonSettings::Worker(&w).label(), "worker x");
    }

    #[test]
    fn names_must_be_safe_in_file_names() {
        assert!(check_name("gpu-1.a_b").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "sp ace",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
