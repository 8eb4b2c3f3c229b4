//! A worker's settings from config: what `worker start` and `up` start workers with.

use workq_runtime::WorkerSettings;

use crate::config::Config;

/// The `[worker]` section over the built-in defaults, each with the file or variable it came
/// from.
pub fn apply_config(cfg: &Config, s: &mut WorkerSettings) {
    use crate::config::Source;
    if let Some(Some(keep)) = cfg.dur("store.retention") {
        s.retention_ms = Some(keep.as_millis() as u64);
    }
    let set = |key: &str| cfg.get(key).filter(|v| v.source != Source::Default);
    if let Some(v) = set("worker.slots").and_then(|v| v.value.as_integer()) {
        s.slots = v.clamp(1, u32::MAX as i64) as u32;
        s.set_source("slots", cfg.source("worker.slots"));
    }
    let durations: [(&str, &str, &mut u64); 4] = [
        (
            "worker.stop_timeout",
            "stop_timeout",
            &mut s.stop_timeout_ms,
        ),
        ("worker.heartbeat", "heartbeat", &mut s.heartbeat_ms),
        ("worker.hung_after", "hung_after", &mut s.hung_after_ms),
        (
            "worker.restart_window",
            "restart_window",
            &mut s.restart_window_ms,
        ),
    ];
    let mut sources = Vec::new();
    for (key, name, slot) in durations {
        if set(key).is_some() {
            if let Some(Some(d)) = cfg.dur(key) {
                *slot = d.as_millis() as u64;
                sources.push((name, cfg.source(key)));
            }
        }
    }
    for (name, src) in sources {
        s.set_source(name, src);
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
