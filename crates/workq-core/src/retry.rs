//! The retry policy: what happens to a job after an attempt fails.

use std::time::Duration;

use crate::time::Timestamp;

/// Longest delay between retries unless the base itself is longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureDecision {
    /// Queue again, not before this instant.
    RetryAt(Timestamp),
    /// No retries left: the job fails.
    GiveUp,
}

/// Delay before retry number `failures` (1 = first retry): `base · 2^(failures-1)`, capped at an
/// hour (or `base` if longer), plus up to 25 % jitter so a burst of failures does not retry in
/// lockstep. `jitter` is any random value; the same value gives the same delay.
pub fn backoff_delay(base: Duration, failures: u32, jitter: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let cap = MAX_BACKOFF.max(base);
    let raw = base.saturating_mul(1u32 << exp).min(cap);
    let spread = raw.as_millis() as u64 / 4;
    let extra = if spread == 0 {
        0
    } else {
        jitter % (spread + 1)
    };
    raw + Duration::from_millis(extra)
}

/// Decides between retrying and giving up after the `failures`-th failed attempt.
pub fn next_after_failure(
    now: Timestamp,
    failures: u32,
    retries: u32,
    base: Duration,
    jitter: u64,
) -> FailureDecision {
    if failures <= retries {
        FailureDecision::RetryAt(now.plus(backoff_delay(base, failures, jitter)))
    } else {
        FailureDecision::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let base = Duration::from_secs(10);
        assert_eq!(backoff_delay(base, 1, 0), Duration::from_secs(10));
        assert_eq!(backoff_delay(base, 2, 0), Duration::from_secs(20));
        assert_eq!(backoff_delay(base, 3, 0), Duration::from_secs(40));
        assert_eq!(backoff_delay(base, 40, 0), MAX_BACKOFF);
        let j = backoff_delay(base, 1, u64::MAX);
        assert!(j >= base && j <= base + base / 4);
    }

    #[test]
    fn gives_up_after_retries() {
        let now = Timestamp(1000);
        let base = Duration::from_secs(1);
        assert_eq!(
            next_after_failure(now, 1, 1, base, 0),
            FailureDecision::RetryAt(Timestamp(2000))
        );
        assert_eq!(
            next_after_failure(now, 2, 1, base, 0),
            FailureDecision::GiveUp
        );
        assert_eq!(
            next_after_failure(now, 1, 0, base, 0),
            FailureDecision::GiveUp
        );
    }
}
