//! Wall-clock instants as milliseconds since the Unix epoch, the unit both stores keep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC instant in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// This instant moved later by `d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-23T11:05:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(ts) => format!("{ts:.3}"),
            Err(_) => format!("@{}ms", self.0),
        }
    }

    /// Local time for tables, e.g. `2026-11-23 12:05:00`.
    pub fn to_local_short(self) -> String {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(ts) => ts
                .to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string(),
            Err(_) => self.to_rfc3339(),
        }
    }

    /// Parses `--at`: RFC 3339 (`2026-11-24T09:00:00Z`) or a local `2026-11-24 09:00[:00]`.
    pub fn parse_at(input: &str) -> Result<Timestamp, String> {
        let s = input.trim();
        if let Ok(ts) = s.parse::<jiff::Timestamp>() {
            return Ok(Timestamp(ts.as_millisecond()));
        }
        let civil = s.replace(' ', "T");
        match civil.parse::<jiff::civil::DateTime>() {
            Ok(dt) => dt
                .to_zoned(jiff::tz::TimeZone::system())
                .map(|z| Timestamp(z.timestamp().as_millisecond()))
                .map_err(|e| format!("invalid time {input:?}: {e}")),
            Err(_) => Err(format!(
                "invalid time {input:?}: use RFC 3339 (2026-11-24T09:00:00Z) or local \"2026-11-24 09:00\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(Timestamp::parse_at("2023-11-14T22:13:20.123Z").unwrap(), t);
    }

    #[test]
    fn parse_at_refuses_garbage() {
        assert!(Timestamp::parse_at("tomorrow-ish").is_err());
        assert!(Timestamp::parse_at("2026-11-24 09:00").is_ok());
    }
}
