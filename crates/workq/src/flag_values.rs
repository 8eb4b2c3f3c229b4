//! Values of flags: clap's value parsers for durations and sizes (so a bad value is a usage
//! error naming the flag before any command runs), and `K=V` pairs.

use std::time::Duration;

use crate::error::CliError;

/// A duration such as `500ms`, `30s`, `1h30m` or `2d`; a bare number means seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    workq_core::parse_duration(s).map_err(|e| e.to_string())
}

/// `-t 2` means two seconds (fractions too); `-t 1m` works as well.
pub fn seconds(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.trim().parse::<f64>() {
        // The same bound as durations: about 31,700 years.
        if (0.0..1e12).contains(&n) {
            return Ok(Duration::from_secs_f64(n));
        }
        // clap names the flag and the value in front of this.
        return Err(
            "use a number of seconds from 0 to 999999999999, or a duration like 30s".to_string(),
        );
    }
    duration(s)
}

/// A job's time limit: a duration, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTimeout(pub Option<Duration>);

/// A job's `--timeout`: a duration, or `none` for no limit. Zero is refused: it used to mean
/// no limit, which surprised people who meant "stop at once" or expected an error.
pub fn job_timeout(s: &str) -> Result<JobTimeout, String> {
    if s == "none" {
        return Ok(JobTimeout(None));
    }
    match duration(s)? {
        // Below a millisecond is zero too: the store keeps milliseconds.
        d if d.as_millis() == 0 => Err(ZERO_TIMEOUT.to_string()),
        d => Ok(JobTimeout(Some(d))),
    }
}

/// Why a zero job timeout is refused, on the command line and in the config alike.
pub const ZERO_TIMEOUT: &str =
    "--timeout 0 would stop the job at once; use --timeout none for no limit";

/// A size in bytes such as `10MiB`, `512k`, `1G` or `4096`.
pub fn size(s: &str) -> Result<u64, String> {
    crate::config::parse_size(s)
}

/// Parses `K=V`, naming the flag in the error.
pub fn parse_kv(flag: &str, s: &str) -> Result<(String, String), CliError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(CliError::usage(format!("{flag} {s:?}: expected KEY=VALUE"))
            .with_hint(format!("for example: {flag} participant=01"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_the_syntax_of_the_core_parser() {
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn seconds_take_plain_numbers_and_durations_within_bounds() {
        assert_eq!(seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("1m"), Ok(Duration::from_secs(60)));
        for bad in ["1e20", "-1", "NaN", "soon"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_job_timeout_is_a_duration_or_none_never_zero() {
        assert_eq!(job_timeout("none"), Ok(JobTimeout(None)));
        assert_eq!(
            job_timeout("90s"),
            Ok(JobTimeout(Some(Duration::from_secs(90))))
        );
        for zero in ["0", "0s", "0ms", "0h0m"] {
            assert_eq!(job_timeout(zero), Err(ZERO_TIMEOUT.to_string()), "{zero}");
        }
        assert!(job_timeout("never").is_err());
    }

    #[test]
    fn sizes_keep_the_syntax_of_the_config_parser() {
        assert_eq!(size("2KiB"), Ok(2048));
        assert!(size("10 parsecs").is_err());
    }

    #[test]
    fn key_values_need_a_key() {
        assert!(parse_kv("--label", "a=b").is_ok());
        for bad in ["novalue", "=v"] {
            let e = parse_kv("--label", bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Usage);
        }
    }
}
