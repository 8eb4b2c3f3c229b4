//! Cost of one claim(limit 1) + finish(Succeeded) on the SQLite store, with a small and a large
//! backlog of queued jobs. The target is that the two differ by at most 1.5x: claiming must not
//! get slower as the queue grows.
//!
//! Run: `cargo bench -p workq-store --bench claim`
//!
//! Plain `main` timed with `std::time::Instant` (no criterion). Environment overrides:
//!   WORKQ_BENCH_SIZES  comma-separated sizes (default "1000,1000000,1000000/1000"): `N` is a
//!                      backlog of N queued jobs; `N/Q` is N jobs of which all but Q have
//!                      already run and succeeded (a long-lived store, mostly finished)
//!   WORKQ_BENCH_ITERS  timed claim+finish iterations  (default 2000)
//!   WORKQ_BENCH_KEEP   a directory: the store of the last `N/Q` size is left there as
//!                      DIR/workq.db, for timing the command line against it (bench/run.sh)
//! The store lives in a fresh temporary directory (honours TMPDIR), opened with the default
//! options, so WAL and the production durability settings apply: claim commits without fsync,
//! finish commits with fsync.
//!
//! The backlog is kept close to N while timing: every REFILL iterations, REFILL new jobs are
//! submitted outside the timed region, so the queue moves between N - REFILL and N.
//!
//! Output: one human-readable block per size, then machine-readable lines starting with
//! `RESULT` that bench/run.sh parses.

use std::path::Path;
use std::time::{Duration, Instant};

use workq_core::{JobSpec, Outcome};
use workq_store::{FinishRequest, SqliteOptions, SqliteStore, Store, WorkerRegistration};

const BATCH: usize = 10_000;
const REFILL: usize = 100;
const WARMUP: usize = 200;

struct Stats {
    label: String,
    iters: usize,
    setup: Duration,
    mean_us: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    claim_mean_us: f64,
    finish_mean_us: f64,
    db_bytes: u64,
}

fn spec() -> JobSpec {
    let mut s = JobSpec::new("default", vec!["/bin/true".to_string()]);
    s.cwd = Some("/tmp".to_string());
    s
}

fn submit_n(store: &SqliteStore, n: usize) {
    let template = spec();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let batch = vec![template.clone(); k];
        let out = store.submit(&batch).expect("submit");
        assert_eq!(out.len(), k);
        left -= k;
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The result of a job that ran and succeeded.
fn succeeded(job: &workq_core::ClaimedJob) -> FinishRequest {
    FinishRequest {
        job_id: job.id,
        lease: job.lease,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        error: None,
    }
}

fn one_cycle(store: &SqliteStore, worker: i64, queues: &[String]) -> (Duration, Duration) {
    let t0 = Instant::now();
    let claimed = store.claim(worker, queues, 1).expect("claim");
    let t1 = Instant::now();
    assert_eq!(claimed.len(), 1, "the backlog ran dry");
    let out = store
        .finish(worker, &[succeeded(&claimed[0])])
        .expect("finish");
    let t2 = Instant::now();
    assert_eq!(out.len(), 1);
    (t1 - t0, t2 - t1)
}

/// Runs and succeeds `count` of the queued jobs, a thousand per transaction pair.
fn finish_n(store: &SqliteStore, worker: i64, queues: &[String], count: usize) {
    let mut left = count;
    while left > 0 {
        let claimed = store
            .claim(worker, queues, left.min(1000) as u32)
            .expect("claim");
        assert!(!claimed.is_empty(), "ran out of jobs to finish");
        let done: Vec<FinishRequest> = claimed.iter().map(succeeded).collect();
        store.finish(worker, &done).expect("finish");
        left -= claimed.len();
    }
}

fn run(total: usize, queued: usize, iters: usize, keep: Option<&Path>) -> Stats {
    let n = queued;
    let dir = tempfile::Builder::new()
        .prefix("workq-claim-bench")
        .tempdir()
        .expect("temp dir");
    let home = keep.unwrap_or(dir.path());
    std::fs::create_dir_all(home).expect("bench directory");
    let db = home.join("workq.db");
    let store = SqliteStore::open(&db, SqliteOptions::default()).expect("open store");

    let t = Instant::now();
    submit_n(&store, total);

    let worker = store
        .register_worker(&WorkerRegistration {
            name: "bench".into(),
            host: "localhost".into(),
            boot_id: "bench".into(),
            pid: std::process::id() as i32,
            pid_start_time: 0,
            queues: vec!["default".into()],
            slots: 1,
            version: "bench".into(),
            settings: None,
        })
        .expect("register worker");
    let queues = vec!["default".to_string()];
    // The oldest jobs run first, so the finished ones are the oldest, as in a real store.
    finish_n(&store, worker, &queues, total - queued);
    let setup = t.elapsed();

    // Warm-up: prepared-statement cache, pages of the hot index in the page cache.
    for i in 0..WARMUP {
        if i % REFILL == 0 {
            submit_n(&store, REFILL);
        }
        one_cycle(&store, worker, &queues);
    }

    let mut per_op = Vec::with_capacity(iters);
    let (mut claim_total, mut finish_total) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iters {
        if i % REFILL == 0 {
            // Untimed: keep the backlog near n.
            submit_n(&store, REFILL);
        }
        let (c, f) = one_cycle(&store, worker, &queues);
        claim_total += c;
        finish_total += f;
        per_op.push((c + f).as_secs_f64() * 1e6);
    }
    let sum_us: f64 = per_op.iter().sum();
    per_op.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let remaining = store.count_unfinished(None).expect("count");
    // The backlog must still be about n, or the measurement is not what it claims to be.
    assert!(
        remaining as usize >= n.saturating_sub(REFILL) && remaining as usize <= n + REFILL,
        "backlog drifted: {remaining} left for n={n}"
    );
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let db_bytes = file_size(&db) + file_size(Path::new(&wal));
    Stats {
        label: if total == queued {
            format!("{n}")
        } else {
            format!("{total}/{queued}")
        },
        iters,
        setup,
        mean_us: sum_us / iters as f64,
        p50_us: pct(&per_op, 0.50),
        p95_us: pct(&per_op, 0.95),
        p99_us: pct(&per_op, 0.99),
        claim_mean_us: claim_total.as_secs_f64() * 1e6 / iters as f64,
        finish_mean_us: finish_total.as_secs_f64() * 1e6 / iters as f64,
        db_bytes,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are not supported, so ignore them.
    let number = |s: &str| -> usize {
        s.trim()
            .replace('_', "")
            .parse()
            .expect("WORKQ_BENCH_SIZES: numbers, N or N/Q")
    };
    let sizes: Vec<(usize, usize)> = std::env::var("WORKQ_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,1000000,1000000/1000".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.split_once('/') {
            Some((t, q)) => (number(t), number(q)),
            None => (number(s), number(s)),
        })
        .collect();
    let keep = std::env::var_os("WORKQ_BENCH_KEEP").map(std::path::PathBuf::from);
    let iters: usize = std::env::var("WORKQ_BENCH_ITERS")
        .ok()
        .map(|s| s.parse().expect("WORKQ_BENCH_ITERS: a number"))
        .unwrap_or(2000);

    println!("claim(limit 1) + finish(Succeeded), SqliteStore with default options");
    println!(
        "{iters} timed iterations per size after {WARMUP} warm-up; backlog refilled every {REFILL}"
    );
    let mut results = Vec::new();
    for &(total, queued) in &sizes {
        let keep_here = keep.as_deref().filter(|_| total != queued);
        let s = run(total, queued, iters, keep_here);
        println!(
            "N={:>15}: setup {:>7.1}s ({:.0} jobs/s), db {:.1} MiB",
            s.label,
            s.setup.as_secs_f64(),
            total as f64 / s.setup.as_secs_f64().max(1e-9),
            s.db_bytes as f64 / (1024.0 * 1024.0)
        );
        println!(
            "             claim+finish mean {:.1} us  (claim {:.1} us + finish {:.1} us)  p50 {:.1}  p95 {:.1}  p99 {:.1} us",
            s.mean_us, s.claim_mean_us, s.finish_mean_us, s.p50_us, s.p95_us, s.p99_us
        );
        results.push(s);
    }
    for s in &results {
        println!(
            "RESULT n={} iters={} mean_us={:.1} p50_us={:.1} p95_us={:.1} p99_us={:.1} claim_us={:.1} finish_us={:.1} setup_s={:.1}",
            s.label, s.iters, s.mean_us, s.p50_us, s.p95_us, s.p99_us, s.claim_mean_us, s.finish_mean_us, s.setup.as_secs_f64()
        );
    }
    // Each larger size against the first (smallest) one.
    if let Some(a) = results.first() {
        for b in &results[1..] {
            let ratio = b.mean_us / a.mean_us;
            let ratio_p50 = b.p50_us / a.p50_us;
            println!(
                "N={} vs N={}: mean ratio {:.2}x, p50 ratio {:.2}x (target <= 1.5x)",
                b.label, a.label, ratio, ratio_p50
            );
            println!(
                "RESULT ratio n={} mean={ratio:.3} p50={ratio_p50:.3}",
                b.label
            );
        }
    }
}
