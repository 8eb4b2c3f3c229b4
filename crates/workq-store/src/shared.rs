//! What both backends need alike: fencing tokens and the JSON encoding of maps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fresh random 63-bit fencing tokens (never zero), distinct per process by their seed.
pub(crate) struct Leases(AtomicU64);

impl Leases {
    /// A generator seeded from the process id, the time and the hasher's random keys.
    pub(crate) fn new() -> Leases {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Leases(AtomicU64::new(h.finish()))
    }

    /// The next token: splitmix64 over a seeded counter, cheap and well spread.
    pub(crate) fn next(&self) -> i64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 1) as i64).max(1)
    }
}

/// Decodes a stored map (NULL or unreadable JSON reads as empty).
pub(crate) fn json_map(text: Option<String>) -> BTreeMap<String, String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Encodes a map as JSON, or NULL when empty.
pub(crate) fn map_json(map: &BTreeMap<String, String>) -> Option<String> {
    if map.is_empty() {
        None
    } else {
        serde_json::to_string(map).ok()
    }
}

/// Gathers the rows of the metrics tallies into one [`crate::QueueMetrics`] per queue, in the
/// order queues are first named.
#[derive(Default)]
pub(crate) struct MetricsBuilder {
    out: Vec<crate::QueueMetrics>,
}

impl MetricsBuilder {
    /// The entry of `queue`, made on first mention with empty histograms of the right shape.
    pub(crate) fn queue(&mut self, queue: &str) -> &mut crate::QueueMetrics {
        let i = match self.out.iter().position(|q| q.queue == queue) {
            Some(i) => i,
            None => {
                let empty = crate::StoredHistogram {
                    buckets: vec![0; crate::HISTOGRAM_BOUNDS_SECS.len()],
                    count: 0,
                    sum_secs: 0.0,
                };
                self.out.push(crate::QueueMetrics {
                    queue: queue.to_string(),
                    attempts: Vec::new(),
                    duration: empty.clone(),
                    wait: empty,
                    oldest_ready_at: None,
                });
                self.out.len() - 1
            }
        };
        &mut self.out[i]
    }

    /// Adds one `attempt_totals` row.
    pub(crate) fn attempts(&mut self, queue: &str, outcome: String, n: i64) {
        self.queue(queue).attempts.push((outcome, n.max(0) as u64));
    }

    /// Adds one `histograms` row: `n` observations summing to `sum_ms` in bucket `bucket` (an
    /// index into the bounds; past the last is `+Inf`) of histogram `kind`.
    pub(crate) fn histogram(&mut self, queue: &str, kind: &str, bucket: i64, n: i64, sum_ms: i64) {
        let q = self.queue(queue);
        let h = match kind {
            "duration" => &mut q.duration,
            "wait" => &mut q.wait,
            _ => return,
        };
        let n = n.max(0) as u64;
        h.count += n;
        h.sum_secs += sum_ms as f64 / 1000.0;
        // Stored per bucket; the type is cumulative: every bound at or above this one counts it.
        let first = bucket.max(0) as usize;
        for b in h.buckets.iter_mut().skip(first) {
            *b += n;
        }
    }

    /// The metrics, queues sorted by name.
    pub(crate) fn finish(mut self) -> Vec<crate::QueueMetrics> {
        self.out.sort_by(|a, b| a.queue.cmp(&b.queue));
        self.out
    }
}
