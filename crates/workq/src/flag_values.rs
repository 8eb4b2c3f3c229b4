//! Values of flags that clap takes as strings: `K=V` pairs and durations, each error naming the
//! flag.

use std::time::Duration;

use crate::error::CliError;

/// Parses `K=V`, naming the flag in the error.
pub fn parse_kv(flag: &str, s: &str) -> Result<(String, String), CliError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(CliError::usage(format!("{flag} {s:?}: expected KEY=VALUE"))
            .with_hint(format!("for example: {flag} participant=01"))),
    }
}

/// Parses a duration option, naming the flag in the error.
pub fn parse_dur(flag: &str, s: &str) -> Result<Duration, CliError> {
    workq_core::parse_duration(s).map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

/// `-t 2` means two seconds; `-t 1m` works too.
pub fn parse_secs(flag: &str, s: &str) -> Result<Duration, CliError> {
    if let Ok(n) = s.trim().parse::<f64>() {
        // The same bound as durations: about 31,700 years.
        if (0.0..1e12).contains(&n) {
            return Ok(Duration::from_secs_f64(n));
        }
        return Err(CliError::usage(format!(
            "{flag} {s:?}: use a number of seconds from 0 to 999999999999, or a duration like 30s"
        )));
    }
    parse_dur(flag, s)
}
