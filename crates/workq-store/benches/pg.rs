//! PostgreSQL benchmarks on a throwaway local cluster (loopback TCP):
//!   (1) claim(limit 1) + finish(Succeeded) throughput with 1, 2 and 4 workers, each a thread
//!       with its own connection, draining a shared backlog;
//!   (2) with WORKQ_BIN set to a workq binary: 1000 x /bin/true through one worker with 2 slots
//!       against `xargs -P2` (median of 3), and submit-to-start latency on an idle worker.
//!
//! Run: `bash bench/pg.sh` (builds the release binary and sets WORKQ_BIN), or
//!      `cargo bench -p workq-store --bench pg` for (1) alone.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use workq_core::{JobSpec, Outcome};
use workq_store::{pgtest, FinishRequest, PgOptions, PgStore, Store, WorkerRegistration};

fn open(url: &str) -> PgStore {
    PgStore::open(url, PgOptions::default()).expect("open")
}

fn throughput(cluster: &pgtest::Cluster, workers: usize, jobs: usize) -> f64 {
    let url = cluster
        .create_db(&format!("tp{workers}"))
        .expect("database");
    let s = open(&url);
    let mut spec = JobSpec::new("default", vec!["/bin/true".into()]);
    spec.cwd = Some("/tmp".into());
    for chunk in 0..jobs.div_ceil(1000) {
        let n = (jobs - chunk * 1000).min(1000);
        s.submit(&vec![spec.clone(); n]).expect("submit");
    }
    let barrier = Arc::new(Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let url = url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let s = open(&url);
                let w = s
                    .register_worker(&WorkerRegistration {
                        name: format!("bench-{i}"),
                        host: "bench".into(),
                        boot_id: "bench".into(),
                        pid: std::process::id() as i32,
                        pid_start_time: 0,
                        queues: vec!["default".into()],
                        slots: 1,
                        version: "bench".into(),
                        settings: None,
                    })
                    .expect("register");
                let q = vec!["default".to_string()];
                barrier.wait();
                let mut done = 0usize;
                loop {
                    let c = s.claim(w, &q, 1).expect("claim");
                    let Some(job) = c.into_iter().next() else {
                        break;
                    };
                    s.finish(
                        w,
                        &[FinishRequest {
                            job_id: job.id,
                            lease: job.lease,
                            outcome: Outcome::Succeeded,
                            exit_code: Some(0),
                            signal: None,
                            error: None,
                        }],
                    )
                    .expect("finish");
                    done += 1;
                }
                done
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let total: usize = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .sum();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(total, jobs, "every job claimed exactly once");
    total as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn wq(bin: &Path, dir: &Path, url: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("WORKQ_STORE", url)
        .arg("--state-dir")
        .arg(dir)
        .stdin(Stdio::null());
    c
}

fn drain_and_latency(cluster: &pgtest::Cluster, bin: &Path) {
    let url = cluster.create_db("drain").expect("database");
    let tmp = std::env::temp_dir().join(format!("workq-pgbench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let state = tmp.join("state");
    let lines = tmp.join("lines.txt");
    std::fs::write(&lines, "/bin/true\n".repeat(1000)).expect("lines");
    let mut worker = wq(bin, &state, &url)
        .args(["-q", "worker", "start", "bench", "-w", "2"])
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    std::thread::sleep(Duration::from_millis(500));
    let (mut w, mut x) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        let ok = wq(bin, &state, &url)
            .args(["submit", "--lines"])
            .arg(&lines)
            .stdout(Stdio::null())
            .status()
            .expect("submit")
            .success()
            && wq(bin, &state, &url)
                .args(["wait", "--all"])
                .status()
                .expect("wait")
                .success();
        assert!(ok, "the drain failed");
        w.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("xargs -P2 -I{{}} sh -c {{}} < {}", lines.display()))
            .status()
            .expect("xargs")
            .success();
        assert!(ok);
        x.push(t0.elapsed().as_secs_f64());
    }
    let (wm, xm) = (median(w), median(x));
    println!(
        "drain 1000 x /bin/true, 2 slots: workq {wm:.3} s, xargs -P2 {xm:.3} s, ratio {:.2}",
        wm / xm
    );
    println!("RESULT pg_drain_ratio {:.3} {wm:.3} {xm:.3}", wm / xm);

    // Submit-to-start on the idle worker: the job writes its start time.
    let mut lat = Vec::new();
    let mut after = Vec::new();
    for i in 0..20 {
        let f = tmp.join(format!("start-{i}"));
        std::thread::sleep(Duration::from_millis(100));
        let now_ns = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        };
        let t0 = now_ns();
        let ok = wq(bin, &state, &url)
            .args(["submit", "--", "sh", "-c"])
            .arg(format!("date +%s%N > {}", f.display()))
            .stdout(Stdio::null())
            .status()
            .expect("submit")
            .success();
        assert!(ok);
        let t1 = now_ns();
        let deadline = Instant::now() + Duration::from_secs(10);
        let started: u128 = loop {
            if let Some(v) = std::fs::read_to_string(&f)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break v;
            }
            assert!(Instant::now() < deadline, "the job never started");
            std::thread::sleep(Duration::from_millis(1));
        };
        lat.push((started.saturating_sub(t0)) as f64 / 1e6);
        after.push(started as f64 / 1e6 - t1 as f64 / 1e6);
    }
    after.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  of which from the end of the submit process to the job's start: p50 {:.2} ms",
        after[after.len() / 2]
    );
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "submit-to-start on an idle worker: p50 {:.2} ms, p95 {:.2} ms",
        lat[lat.len() / 2],
        lat[(lat.len() * 95) / 100 - 1]
    );
    println!(
        "RESULT pg_submit_to_start_ms {:.2} {:.2}",
        lat[lat.len() / 2],
        lat[(lat.len() * 95) / 100 - 1]
    );
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(worker.id() as i32, libc::SIGTERM);
    }
    let _ = worker.wait();
    let _ = std::fs::remove_dir_all(&tmp);
}

fn main() {
    let cluster = match pgtest::Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("!!!!! SKIPPING the PostgreSQL benchmark: {e}");
            return;
        }
    };
    let jobs: usize = std::env::var("WORKQ_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    println!("PostgreSQL (throwaway local cluster, loopback TCP, fsync off)");
    for workers in [1, 2, 4] {
        let rate = throughput(&cluster, workers, jobs);
        println!("claim+finish, {workers} worker(s): {rate:.0} jobs/s ({jobs} jobs)");
        println!("RESULT pg_claim_finish_per_s {workers} {rate:.0}");
    }
    if let Some(bin) = std::env::var_os("WORKQ_BIN") {
        drain_and_latency(&cluster, Path::new(&bin));
    }
}
