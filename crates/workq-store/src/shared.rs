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
