//! Submit-to-start latency on an idle worker, measured from the moment `Client::submit` returns
//! (the job is committed and the worker rung: what a caller is told) to the moment the job's
//! process runs, which the job stamps itself: it is `date +%s%N`, run directly, whose output
//! lands in its log. The stamp includes `date`'s own start-up, so the figure errs high; the
//! baseline is this process starting the same `date` with `std::process::Command`.
//!
//! Run: `cargo bench -p workq --bench latency` (bench/run.sh does, after building the binary).
//! Environment: WORKQ_BIN (default: target/release/workq of this workspace), SAMPLES (50).
//! The worker is a real `workq worker start` process in a temporary directory; it is stopped
//! on the way out. Output: a human-readable block, then `RESULT` lines for bench/run.sh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use workq::Client;
use workq_core::JobSpec;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Waits for `path` to hold a stamp and returns it.
fn stamp(path: &Path) -> i128 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(ns) = text.trim().parse::<i128>() {
                return ns;
            }
        }
        assert!(Instant::now() < deadline, "no stamp in {}", path.display());
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn main() {
    let bin = std::env::var_os("WORKQ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/workq")
        });
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::Builder::new()
        .prefix("workq-latency")
        .tempdir()
        .expect("temp dir");
    let state = dir.path().join("state");
    let client = Client::open(&state).expect("open the store");
    let log = std::fs::File::create(dir.path().join("worker.log")).expect("worker log");
    let worker = Worker(
        Command::new(&bin)
            .arg("--state-dir")
            .arg(&state)
            .args(["worker", "start", "latency", "-w", "1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display())),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .workers_serving("default")
        .map(|w| w.is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the worker did not register");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut after_ack = Vec::with_capacity(samples);
    let mut submit_ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut spec = JobSpec::new("default", vec!["date".into(), "+%s%N".into()]);
        spec.cwd = Some(dir.path().display().to_string());
        let t0 = now_ns();
        let id = client.submit(spec).expect("submit").id();
        let acked = now_ns();
        let log = workq_runtime::spawn::log_path(&client.log_dir(), id, 1);
        let started = stamp(&log);
        after_ack.push((started - acked) as f64 / 1e6);
        submit_ms.push((acked - t0) as f64 / 1e6);
        // Let the worker record the end and go idle again.
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut baseline = Vec::with_capacity(samples);
    for i in 0..samples {
        let out = dir.path().join(format!("base.{i}"));
        let t0 = now_ns();
        Command::new("date")
            .arg("+%s%N")
            .stdout(std::fs::File::create(&out).expect("baseline file"))
            .status()
            .expect("run date");
        baseline.push((stamp(&out) - t0) as f64 / 1e6);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(worker);

    let (p50, p95) = (pct(&mut after_ack, 0.5), pct(&mut after_ack, 0.95));
    let (b50, b95) = (pct(&mut baseline, 0.5), pct(&mut baseline, 0.95));
    let s50 = pct(&mut submit_ms, 0.5);
    println!("submit-to-start on an idle worker, {samples} jobs (Client::submit returned -> job running)");
    println!("  p50 {p50:.2} ms, p95 {p95:.2} ms; the submit call itself (commit + ring): p50 {s50:.2} ms");
    println!("  baseline, this process starting the same date: p50 {b50:.2} ms, p95 {b95:.2} ms");
    println!("RESULT latency p50_ms={p50:.3} p95_ms={p95:.3} submit_p50_ms={s50:.3} baseline_p50_ms={b50:.3} baseline_p95_ms={b95:.3}");
}
