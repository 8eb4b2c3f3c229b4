//! `GET /metrics`: OpenMetrics text, built afresh on every scrape from one blocking store call
//! (queue counts, the per-queue tallies of `Store::queue_metrics`, live workers), so a scrape
//! costs O(queues + workers) however many jobs the store holds.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{
    EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use workq_core::{Timestamp, WorkerRecord};
use workq_runtime::procinfo;
use workq_store::{QueueMetrics, QueueStats, StoredHistogram, HISTOGRAM_BOUNDS_SECS};

use super::{ApiError, Shared};
use crate::views::HUNG_AFTER;

/// What `prometheus_client::encoding::text::encode` writes: OpenMetrics 1.0 (counters as
/// `NAME_total` under `# TYPE NAME counter`, a closing `# EOF`), which the 0.0.4 text format
/// would misread.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Worker states a scrape always reports, 0 when no worker is in them, so that an alert on
/// `workq_workers{state="hung"} > 0` has a series to look at: the states
/// `procinfo::display_state` gives a live worker (`workers(false)` lists only those).
const WORKER_STATES: &[&str] = &[
    "starting", "idle", "busy", "paused", "draining", "hung", "dead",
];

/// Everything one scrape reads from the store, in one blocking call.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per-queue job counts by state.
    pub stats: Vec<QueueStats>,
    /// Per-queue attempt tallies and histograms.
    pub metrics: Vec<QueueMetrics>,
    /// Live workers by display state, in first-seen order.
    pub workers: Vec<(String, u64)>,
    /// The store's clock at the read, for ages.
    pub now: Timestamp,
}

/// `GET /metrics`. Always 200: when the store cannot be read the body is `workq_store_up 0`
/// alone, which is what an alert should fire on (a 5xx would only mark the target down).
pub async fn scrape(State(s): State<Shared>) -> Response {
    let host = s.host.clone();
    let snapshot = s
        .pool
        .run(move |c| {
            let store = c.store();
            let stats = store.queue_stats()?;
            let metrics = store.queue_metrics()?;
            let workers = store.workers(false)?;
            let now = store.now();
            Ok(Snapshot {
                stats,
                metrics,
                workers: worker_states(&workers, &host, &procinfo::boot_id(), now),
                now,
            })
        })
        .await;
    match encode(snapshot.as_ref().ok()) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        )
        .into_response(),
    }
}

/// Live workers counted by the state people see (as `workq status` shows it).
fn worker_states(
    workers: &[WorkerRecord],
    host: &str,
    boot: &str,
    now: Timestamp,
) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = WORKER_STATES.iter().map(|s| (s.to_string(), 0)).collect();
    for w in workers {
        let state = procinfo::display_state(w, host, boot, now, HUNG_AFTER);
        match out.iter_mut().find(|(s, _)| s == state) {
            Some((_, n)) => *n += 1,
            None => out.push((state.to_string(), 1)),
        }
    }
    out
}

/// The exposition of `snapshot`, or of `workq_store_up 0` alone when the store was not read.
pub fn encode(snapshot: Option<&Snapshot>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "workq_store_up",
        "1 when this scrape could read the store, 0 when it could not",
        ConstGauge::new(i64::from(snapshot.is_some())),
    );
    if let Some(s) = snapshot {
        fill(&mut registry, s);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Registers every metric of the snapshot.
fn fill(registry: &mut Registry, s: &Snapshot) {
    let mut jobs = Rows::new(MetricType::Gauge);
    for q in &s.stats {
        for (state, n) in [
            ("queued", q.queued),
            ("scheduled", q.scheduled),
            ("running", q.running),
            ("succeeded", q.succeeded),
            ("failed", q.failed),
            ("cancelled", q.cancelled),
        ] {
            jobs.push(
                vec![("queue", Label::of(&q.queue)), ("state", Label::of(state))],
                ConstGauge::new(n),
            );
        }
    }
    registry.register("workq_jobs", "Jobs in the store, by queue and state", jobs);

    let mut attempts = Rows::new(MetricType::Counter);
    let mut duration = Rows::new(MetricType::Histogram);
    let mut wait = Rows::new(MetricType::Histogram);
    let mut oldest = Rows::new(MetricType::Gauge);
    for m in &s.metrics {
        let queue = vec![("queue", Label::of(&m.queue))];
        for (outcome, n) in &m.attempts {
            attempts.push(
                vec![
                    ("queue", Label::of(&m.queue)),
                    ("outcome", Label::of(outcome)),
                ],
                ConstCounter::new(*n),
            );
        }
        duration.push(queue.clone(), ConstHistogram::of(&m.duration));
        wait.push(queue.clone(), ConstHistogram::of(&m.wait));
        let age = m
            .oldest_ready_at
            .map_or(0.0, |at| s.now.since(at).as_secs_f64());
        oldest.push(queue, ConstGauge::new(age));
    }
    // Registered as `workq_attempts`: the encoder adds the counter's `_total`.
    registry.register(
        "workq_attempts",
        "Attempts ended, by queue and outcome, since the store was created (purging does not lower it)",
        attempts,
    );
    registry.register_with_unit(
        "workq_job_duration",
        "How long ended attempts ran",
        Unit::Seconds,
        duration,
    );
    registry.register_with_unit(
        "workq_queue_wait",
        "How long jobs had been due when a worker claimed them",
        Unit::Seconds,
        wait,
    );
    registry.register_with_unit(
        "workq_queue_oldest_queued_age",
        "Age of the longest-due job ready to run now (0 when none is)",
        Unit::Seconds,
        oldest,
    );

    let mut workers = Rows::new(MetricType::Gauge);
    for (state, n) in &s.workers {
        workers.push(vec![("state", Label::of(state))], ConstGauge::new(*n));
    }
    registry.register("workq_workers", "Live workers, by state", workers);
}

/// A label value escaped as the exposition format requires (`\\`, `\"`, `\n`):
/// prometheus-client writes label values as given, and a queue name may hold any of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(String);

impl Label {
    /// The value `text`.
    pub fn of(text: &str) -> Label {
        Label(text.to_string())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One metric family of fixed values, each under its own labels: what `Family` would be if it
/// did not build its members by observation.
#[derive(Debug)]
struct Rows<M> {
    kind: MetricType,
    rows: Vec<(Vec<(&'static str, Label)>, M)>,
}

impl<M> Rows<M> {
    fn new(kind: MetricType) -> Rows<M> {
        Rows {
            kind,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, Label)>, metric: M) {
        self.rows.push((labels, metric));
    }
}

impl<M: EncodeMetric> EncodeMetric for Rows<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, m) in &self.rows {
            m.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A histogram read from the store rather than observed here.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstHistogram {
    sum: f64,
    count: u64,
    /// `(upper bound, observations in this bucket alone)`, the last bound `f64::MAX` (`+Inf`).
    buckets: Vec<(f64, u64)>,
}

impl ConstHistogram {
    /// The stored histogram in the encoder's form. The encoder adds the buckets up as it writes
    /// them (and writes `f64::MAX` as `+Inf`), so the stored cumulative counts are turned into
    /// per-bucket ones; `+Inf` gets what no bound holds, so it reads back as the count. Missing
    /// or decreasing stored counts (which a consistent store never has) count as no new
    /// observations, keeping the output cumulative.
    pub fn of(h: &StoredHistogram) -> ConstHistogram {
        let mut buckets = Vec::with_capacity(HISTOGRAM_BOUNDS_SECS.len() + 1);
        let mut below = 0u64;
        for (i, bound) in HISTOGRAM_BOUNDS_SECS.iter().enumerate() {
            let cumulative = h.buckets.get(i).copied().unwrap_or(below).max(below);
            buckets.push((*bound, cumulative - below));
            below = cumulative;
        }
        let count = h.count.max(below);
        buckets.push((f64::MAX, count - below));
        ConstHistogram {
            sum: h.sum_secs,
            count,
            buckets,
        }
    }
}

impl TypedMetric for ConstHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(cumulative: &[u64], count: u64, sum: f64) -> StoredHistogram {
        let mut buckets = vec![0; HISTOGRAM_BOUNDS_SECS.len()];
        let mut last = 0;
        for (i, b) in buckets.iter_mut().enumerate() {
            last = cumulative.get(i).copied().unwrap_or(last);
            *b = last;
        }
        StoredHistogram {
            buckets,
            count,
            sum_secs: sum,
        }
    }

    fn snapshot() -> Snapshot {
        let now = Timestamp(1_000_000_000_000);
        Snapshot {
            stats: vec![QueueStats {
                queue: "mail".into(),
                queued: 3,
                scheduled: 1,
                running: 2,
                succeeded: 10,
                failed: 1,
                cancelled: 0,
                ..QueueStats::default()
            }],
            metrics: vec![
                QueueMetrics {
                    queue: "mail".into(),
                    attempts: vec![("succeeded".into(), 10), ("failed".into(), 2)],
                    // 1 at <= 5 ms, 2 more by 10 ms, nothing more until 1 s, 1 over a day.
                    duration: hist(&[1, 3, 3, 3, 3, 3, 3, 4], 5, 90000.5),
                    wait: StoredHistogram::default(),
                    oldest_ready_at: Some(Timestamp(now.0 - 2_500)),
                },
                QueueMetrics {
                    queue: "we\"ird\\q\nx".into(),
                    ..QueueMetrics::default()
                },
            ],
            workers: vec![("idle".into(), 1), ("busy".into(), 2)],
            now,
        }
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn buckets_come_out_cumulative_and_inf_is_the_count() {
        let text = encode(Some(&snapshot())).unwrap();
        let b: Vec<String> = lines(&text, "workq_job_duration_seconds_bucket{")
            .into_iter()
            .filter(|l| l.contains("queue=\"mail\""))
            .collect();
        assert_eq!(b.len(), HISTOGRAM_BOUNDS_SECS.len() + 1, "{text}");
        assert_eq!(
            b[0],
            "workq_job_duration_seconds_bucket{le=\"0.005\",queue=\"mail\"} 1"
        );
        assert_eq!(
            b[1],
            "workq_job_duration_seconds_bucket{le=\"0.01\",queue=\"mail\"} 3"
        );
        assert_eq!(
            b[6],
            "workq_job_duration_seconds_bucket{le=\"0.5\",queue=\"mail\"} 3"
        );
        assert_eq!(
            b[7],
            "workq_job_duration_seconds_bucket{le=\"1.0\",queue=\"mail\"} 4"
        );
        assert_eq!(
            b[HISTOGRAM_BOUNDS_SECS.len() - 1],
            "workq_job_duration_seconds_bucket{le=\"86400.0\",queue=\"mail\"} 4"
        );
        assert_eq!(
            b[HISTOGRAM_BOUNDS_SECS.len()],
            "workq_job_duration_seconds_bucket{le=\"+Inf\",queue=\"mail\"} 5"
        );
        assert!(text.contains("workq_job_duration_seconds_count{queue=\"mail\"} 5\n"));
        assert!(text.contains("workq_job_duration_seconds_sum{queue=\"mail\"} 90000.5\n"));
        let counts: Vec<u64> = b
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn inconsistent_stored_buckets_still_encode_monotonic() {
        let h = ConstHistogram::of(&StoredHistogram {
            buckets: vec![4, 2],
            count: 3,
            sum_secs: 1.0,
        });
        let cumulative: Vec<u64> = h
            .buckets
            .iter()
            .scan(0, |acc, (_, n)| {
                *acc += n;
                Some(*acc)
            })
            .collect();
        assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cumulative.last().copied(), Some(h.count));
        assert_eq!(h.count, 4);
    }

    #[test]
    fn every_family_has_its_type_and_values() {
        let text = encode(Some(&snapshot())).unwrap();
        for t in [
            "# TYPE workq_store_up gauge",
            "# TYPE workq_jobs gauge",
            "# TYPE workq_attempts counter",
            "# TYPE workq_job_duration_seconds histogram",
            "# UNIT workq_job_duration_seconds seconds",
            "# TYPE workq_queue_wait_seconds histogram",
            "# TYPE workq_queue_oldest_queued_age_seconds gauge",
            "# TYPE workq_workers gauge",
        ] {
            assert!(text.contains(t), "{t} missing from\n{text}");
        }
        assert!(text.contains("workq_store_up 1\n"));
        assert!(text.contains("workq_jobs{queue=\"mail\",state=\"running\"} 2\n"));
        assert!(text.contains("workq_jobs{queue=\"mail\",state=\"cancelled\"} 0\n"));
        assert!(text.contains("workq_attempts_total{queue=\"mail\",outcome=\"failed\"} 2\n"));
        assert!(text.contains("workq_queue_oldest_queued_age_seconds{queue=\"mail\"} 2.5\n"));
        assert!(text.contains("workq_workers{state=\"busy\"} 2\n"));
        // An empty stored histogram is all zeros, +Inf included.
        assert!(text.contains("workq_queue_wait_seconds_bucket{le=\"+Inf\",queue=\"mail\"} 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = encode(Some(&snapshot())).unwrap();
        assert!(
            text.contains(
                "workq_queue_oldest_queued_age_seconds{queue=\"we\\\"ird\\\\q\\nx\"} 0.0\n"
            ),
            "{text}"
        );
        // No raw newline inside a sample line: every line is a comment or a whole sample.
        for l in text.lines() {
            assert!(
                l.starts_with('#') || l.split_once(' ').is_some(),
                "broken line {l:?}"
            );
        }
    }

    #[test]
    fn a_failed_store_read_is_store_up_0_alone() {
        let text = encode(None).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples, ["workq_store_up 0"], "{text}");
    }

    #[test]
    fn workers_are_counted_by_display_state_with_zeros() {
        let states = worker_states(&[], "h", "b", Timestamp(0));
        assert!(states.iter().all(|(_, n)| *n == 0));
        assert!(states.iter().any(|(s, _)| s == "hung"));
    }
}
