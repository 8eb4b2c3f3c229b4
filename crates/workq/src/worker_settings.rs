//! A worker's settings from config and flags: what `worker start` and `up` start workers with.

use std::time::Duration;

use workq_core::format_duration;
use workq_runtime::WorkerSettings;

use crate::config::{Config, Source};
use crate::error::CliError;

/// One duration setting of a worker.
pub struct DurationSetting {
    /// Its name in the settings' sources, and under `[worker]` in config.
    pub key: &'static str,
    /// The flag of `worker start` that overrides it.
    pub flag: &'static str,
    /// Where the settings keep it, in milliseconds.
    field: fn(&mut WorkerSettings) -> &mut u64,
}

impl DurationSetting {
    /// Sets it to `value`, recording where that came from.
    pub fn set(&self, s: &mut WorkerSettings, value: Duration, source: impl Into<String>) {
        *(self.field)(s) = value.as_millis() as u64;
        s.set_source(self.key, source);
    }
}

/// The duration settings of a worker, each once.
pub const DURATIONS: [DurationSetting; 4] = [
    DurationSetting {
        key: "stop_timeout",
        flag: "--stop-timeout",
        field: |s| &mut s.stop_timeout_ms,
    },
    DurationSetting {
        key: "heartbeat",
        flag: "--heartbeat",
        field: |s| &mut s.heartbeat_ms,
    },
    DurationSetting {
        key: "hung_after",
        flag: "--hung-after",
        field: |s| &mut s.hung_after_ms,
    },
    DurationSetting {
        key: "restart_window",
        flag: "--restart-window",
        field: |s| &mut s.restart_window_ms,
    },
];

/// The `[worker]` section over the built-in defaults, each with the file or variable it came
/// from.
pub fn apply_config(cfg: &Config, s: &mut WorkerSettings) {
    if let Some(Some(keep)) = cfg.dur("store.retention") {
        s.retention_ms = Some(keep.as_millis() as u64);
    }
    let set = |key: &str| cfg.get(key).filter(|v| v.source != Source::Default);
    if let Some(v) = set("worker.slots").and_then(|v| v.value.as_integer()) {
        s.slots = v.clamp(1, u32::MAX as i64) as u32;
        s.set_source("slots", cfg.source("worker.slots"));
    }
    for d in &DURATIONS {
        let key = format!("worker.{}", d.key);
        if set(&key).is_some() {
            if let Some(Some(value)) = cfg.dur(&key) {
                d.set(s, value, cfg.source(&key));
            }
        }
    }
    if set("worker.max_restarts").is_some() {
        if let Some(n) = cfg.int("worker.max_restarts") {
            s.max_restarts = n.clamp(0, u32::MAX as i64) as u32;
            s.set_source("max_restarts", cfg.source("worker.max_restarts"));
        }
    }
    if set("worker.log_keep").is_some() {
        if let Some(n) = cfg.int("worker.log_keep") {
            s.log_keep = n.clamp(0, u32::MAX as i64) as u32;
            s.set_source("log_keep", cfg.source("worker.log_keep"));
        }
    }
    if set("worker.log_max_size").is_some() {
        if let Some(n) = cfg.size("worker.log_max_size") {
            s.log_max_bytes = n;
            s.set_source("log_max_size", cfg.source("worker.log_max_size"));
        }
    }
}

/// Refuses heartbeat and hung-after settings under which a worker could not be judged fairly.
pub fn check_timing(s: &WorkerSettings) -> Result<(), CliError> {
    if s.heartbeat_ms < 100 {
        return Err(CliError::usage("--heartbeat must be at least 100ms"));
    }
    if s.hung_after_ms <= 2 * s.heartbeat_ms {
        return Err(CliError::usage(format!(
            "--hung-after ({}) must be more than twice --heartbeat ({}), or a healthy worker would be killed as hung",
            format_duration(s.hung_after()),
            format_duration(s.heartbeat())
        )));
    }
    Ok(())
}

/// A worker name as given (`default` if none), checked.
pub fn name_of(name: Option<String>) -> Result<String, CliError> {
    let name = name.unwrap_or_else(|| "default".into());
    workq_runtime::check_name(&name).map_err(CliError::usage)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_setting_has_its_own_field_and_a_flag_named_after_it() {
        let mut s = WorkerSettings::defaults("t", std::path::Path::new("/tmp"));
        for (i, d) in DURATIONS.iter().enumerate() {
            d.set(&mut s, Duration::from_millis(1000 + i as u64), "test");
            assert_eq!(d.flag, format!("--{}", d.key.replace('_', "-")));
            assert_eq!(s.sources.get(d.key).map(String::as_str), Some("test"));
        }
        let got = [
            s.stop_timeout_ms,
            s.heartbeat_ms,
            s.hung_after_ms,
            s.restart_window_ms,
        ];
        assert_eq!(got, [1000, 1001, 1002, 1003]);
    }
}
