//! Submit-to-start latency on an idle worker, measured from the moment `Client::submit` returns
//! (the job is committed and the worker rung: what a caller is told) to the moment the job's
//! process runs, which the job stamps itself into its log. The stamp includes the stamping
//! program's own start-up (exec, dynamic loading), so the figure errs high; two stamping
//! programs show how much:
//! - a minimal program that prints the time first thing: a static C program compiled here with
//!   `cc -static` when a C compiler is at hand (no dynamic loading, so it measures the queue
//!   plus the bare exec), else this bench binary run as `latency --stamp`;
//! - `date +%s%N`, a typical small tool (its locale and time zone set-up included).
//!
//! Each has a baseline: this process starting the same program with `std::process::Command`.
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

/// The static stamping program: the wall clock in nanoseconds, and nothing else.
const STAMP_C: &str = r#"#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    printf("%lld%09ld\n", (long long)t.tv_sec, t.tv_nsec);
    return 0;
}
"#;

/// A job that prints the wall clock, in nanoseconds, first thing, and what it is.
fn stamp_job(dir: &Path) -> (Vec<String>, &'static str) {
    let src = dir.join("stamp.c");
    let bin = dir.join("stamp");
    let built = std::fs::write(&src, STAMP_C).is_ok()
        && Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-O2", "-static", "-o"])
            .arg(&bin)
            .arg(&src)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if built {
        return (vec![bin.display().to_string()], "static C stamp");
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    (
        vec![exe.display().to_string(), "--stamp".into()],
        "latency --stamp",
    )
}

/// Submit-to-start and baseline figures for one stamping program.
struct Figures {
    p50: f64,
    p95: f64,
    submit_p50: f64,
    base50: f64,
    base95: f64,
}

fn measure(client: &Client, dir: &Path, argv: &[String], samples: usize) -> Figures {
    let mut after_ack = Vec::with_capacity(samples);
    let mut submit_ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut spec = JobSpec::new("default", argv.to_vec());
        spec.cwd = Some(dir.display().to_string());
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
        let out = dir.join(format!("base.{i}"));
        let t0 = now_ns();
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::fs::File::create(&out).expect("baseline file"))
            .status()
            .expect("run the stamping program");
        baseline.push((stamp(&out) - t0) as f64 / 1e6);
        let _ = std::fs::remove_file(&out);
        std::thread::sleep(Duration::from_millis(20));
    }
    Figures {
        p50: pct(&mut after_ack, 0.5),
        p95: pct(&mut after_ack, 0.95),
        submit_p50: pct(&mut submit_ms, 0.5),
        base50: pct(&mut baseline, 0.5),
        base95: pct(&mut baseline, 0.95),
    }
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--stamp") {
        println!("{}", now_ns());
        return;
    }
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
        .live_workers_serving("default")
        .map(|w| w.is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the worker did not register");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let (stamp_argv, stamp_name) = stamp_job(dir.path());
    let own = measure(&client, dir.path(), &stamp_argv, samples);
    let date = measure(
        &client,
        dir.path(),
        &["date".to_string(), "+%s%N".to_string()],
        samples,
    );
    drop(worker);

    println!("submit-to-start on an idle worker, {samples} jobs each (Client::submit returned -> job running)");
    for (name, f) in [(stamp_name, &own), ("date +%s%N", &date)] {
        println!(
            "  {name}: p50 {:.2} ms, p95 {:.2} ms; started directly by this process: p50 {:.2} ms, p95 {:.2} ms",
            f.p50, f.p95, f.base50, f.base95
        );
    }
    println!(
        "  the submit call itself (commit + ring): p50 {:.2} ms",
        own.submit_p50
    );
    println!(
        "RESULT latency p50_ms={:.3} p95_ms={:.3} submit_p50_ms={:.3} baseline_p50_ms={:.3} baseline_p95_ms={:.3} date_p50_ms={:.3} date_p95_ms={:.3} date_baseline_p50_ms={:.3}",
        own.p50, own.p95, own.submit_p50, own.base50, own.base95, date.p50, date.p95, date.base50
    );
}
