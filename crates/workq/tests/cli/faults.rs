//! Faults users meet in the field: each test asserts the clear error, the exit code, and that
//! nothing stored was lost.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{state_of, Project};

fn count(p: &Project, states: &str) -> usize {
    p.json(&["list", "--state", states, "--limit", "0"])
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

fn integrity_ok(p: &Project) {
    let c = rusqlite::Connection::open(p.state().join("workq.db")).expect("open db");
    let v: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(v, "ok");
}

/// True if another process holds the lock file `lock` (the store's write lock), seen by trying
/// to take it for an instant. (Not through /proc/locks: read in page-sized pieces while other
/// processes take and drop locks, it can skip a line.)
fn held_by_another(lock: &std::fs::File) -> bool {
    use std::os::unix::io::AsRawFd;
    let fd = lock.as_raw_fd();
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        return false;
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "flock: {e}");
    true
}

/// Bytes process `pid` has written so far (`wchar` in /proc/PID/io).
fn bytes_written(pid: i32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))?
        .trim()
        .parse()
        .ok()
}

#[test]
fn kill_9_of_submit_lines_is_all_or_nothing() {
    let p = Project::new();
    let lines: String = (0..100_000).map(|i| format!("echo {i}\n")).collect();
    let file = p.path().join("many.txt");
    std::fs::write(&file, lines).unwrap();
    p.submit(&["--", "true"]); // the store exists, so the kill lands in the big submit
    let lock = std::fs::File::open(p.state().join("workq.db.lock")).unwrap();
    // Each kill lands inside the submit's one write transaction, seen from outside: it holds
    // the store's write lock (nothing else here writes) and has written this much under it
    // (its 100,000 jobs take some 20 MB, all written before the lock is let go).
    for past in [0u64, 1 << 20, 10 << 20] {
        let before = count(&p, "queued");
        let mut child = p
            .cmd()
            .args(["submit", "--lines"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut locked_at: Option<u64> = None;
        loop {
            if held_by_another(&lock) {
                let now = bytes_written(pid).expect("the submit's /proc/PID/io");
                if now - *locked_at.get_or_insert(now) >= past {
                    break;
                }
            } else {
                assert!(
                    locked_at.is_none(),
                    "the submit let go of the write lock before writing {past} bytes under it"
                );
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the submit ended before it was seen in its transaction"
            );
            assert!(Instant::now() < deadline, "the submit never took the lock");
            std::thread::sleep(Duration::from_millis(1));
        }
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let status = child.wait().unwrap();
        let added = count(&p, "queued") - before;
        assert!(
            added == 0 || added == 100_000,
            "killed {past} bytes into its transaction ({status}): {added} of 100000 jobs stored"
        );
        eprintln!("killed {past} bytes into its transaction: {added} jobs stored");
        integrity_ok(&p);
    }
}

#[test]
fn a_job_printing_hundreds_of_mib_keeps_the_worker_flat() {
    let p = Project::new();
    let w = p.worker("big", 1);
    let id = p.submit(&["--", "head", "-c", "300000000", "/dev/zero"]);
    let mut max_rss = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            max_rss = max_rss.max(kb);
        }
        let j = p.job(id);
        if state_of(&j) == "succeeded" {
            let log = j["attempts"][0]["log_file"].as_str().unwrap().to_string();
            assert_eq!(std::fs::metadata(log).unwrap().len(), 300_000_000);
            break;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(max_rss > 0, "the worker's memory was never read");
    assert!(
        max_rss < 64 * 1024,
        "the worker grew to {max_rss} KiB while its job wrote 300 MB"
    );
}

#[test]
fn a_thousand_concurrent_submits_of_one_unique_key_queue_one_job() {
    let p = Project::new();
    p.submit(&["--", "true"]);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let mut cmds = Vec::new();
            for _ in 0..125 {
                let mut c = p.cmd();
                c.args(["--json", "submit", "--unique", "nightly", "--", "true"]);
                cmds.push(c);
            }
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for mut c in cmds {
                    let out = c.output().unwrap();
                    codes.push((
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout).into_owned(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    ));
                }
                codes
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let created: Vec<&(Option<i32>, String, String)> =
        results.iter().filter(|r| r.0 == Some(0)).collect();
    assert_eq!(created.len(), 1, "exactly one submit creates the job");
    let id = serde_json::from_str::<Value>(&created[0].1).unwrap()["id"]
        .as_i64()
        .unwrap();
    for (code, _, err) in &results {
        if *code != Some(0) {
            assert_eq!(*code, Some(4), "{err}");
            assert!(
                err.contains(&format!("job {id}")),
                "a duplicate names the job: {err}"
            );
        }
    }
    let keyed = p.json(&["list", "--limit", "0"]);
    let n = keyed
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["unique_key"] == "nightly")
        .count();
    assert_eq!(n, 1);
    integrity_ok(&p);
}

#[test]
fn an_unusable_log_directory_is_a_spawn_error_not_a_crash() {
    let p = Project::new();
    let w = p.worker("logs", 1);
    // Job logs go to logs/000/: make that path a file.
    std::fs::create_dir_all(p.state().join("logs")).unwrap();
    let _ = std::fs::remove_dir_all(p.state().join("logs/000"));
    std::fs::write(p.state().join("logs/000"), "not a directory").unwrap();
    let id = p.submit(&["--", "true"]);
    let j = p.wait_job(id, "failed", |j| state_of(j) == "failed");
    assert_eq!(j["attempts"][0]["outcome"], "spawn_error", "{j}");
    assert!(
        j["last_error"].as_str().unwrap().contains("logs/000"),
        "names the log path: {j}"
    );
    assert!(super::process_alive(w.pid()), "the worker lives on");
    std::fs::remove_file(p.state().join("logs/000")).unwrap();
    let ok = p.submit(&["--", "true"]);
    p.wait_job(ok, "succeeded", |j| state_of(j) == "succeeded");
    let not_exec = p.path().join("script.sh");
    std::fs::write(&not_exec, "#!/bin/sh\necho hi\n").unwrap();
    let id = p.submit(&["--", not_exec.to_str().unwrap()]);
    let j = p.wait_job(id, "failed", |j| state_of(j) == "failed");
    assert!(
        j["last_error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{j}"
    );
}

/// A mount needs CAP_SYS_ADMIN: without it the test says so loudly and checks nothing (under
/// CI=true, where the suite runs as root, that is a failure).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "the full-disk test cannot be skipped under CI=true: cannot mount a tmpfs"
            );
            eprintln!("\n!!!!! SKIPPING the full-disk test: cannot mount a tmpfs here (needs root) !!!!!\n");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_refuses_new_jobs_clearly_and_loses_nothing() {
    let p = Project::new();
    let Some(_fs) = Tmpfs::mount(&p.state(), "8m") else {
        return;
    };
    let mut w = p.worker("full", 1);
    // They end only once the disk is full, so the worker must deal with their ends then.
    let mut acked: Vec<i64> = (0..3)
        .map(|_| p.submit(&["--shell", "--", "until [ -e go ]; do sleep 0.01; done"]))
        .collect();
    p.wait_job(acked[0], "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    // Fill the filesystem, leaving the database no room to grow.
    let filler = p.state().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let lines: String = (0..2_000)
        .map(|i| format!("echo {i} padding padding padding\n"))
        .collect();
    std::fs::write(p.path().join("many.txt"), lines).unwrap();
    let mut refused = None;
    for _ in 0..200 {
        let out = p.run(&["submit", "--lines", "many.txt"]);
        if out.status.success() {
            acked.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<i64>().ok()),
            );
        } else {
            refused = Some(out);
            break;
        }
    }
    let out = refused.expect("a submit must fail once the disk is full");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("is full") && err.contains("workq.db"), "{err}");
    // The first job ends on the full disk. The worker either fails to write (and keeps what it
    // has to record) or finds room in the write-ahead log: wait for one or the other.
    std::fs::write(p.path().join("go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = w.log_text();
        if log.contains("could not claim") || log.contains("could not record") {
            eprintln!("full disk: the worker could not write, and kept what it had to record");
            break;
        }
        if state_of(&p.job(acked[0])) == "succeeded" {
            eprintln!(
                "full disk: the worker found room to record job {}",
                acked[0]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never dealt with the end of job {}: {log}",
            acked[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&filler).unwrap();
    integrity_ok(&p);
    let out = p.run(&["wait", "--all", "--timeout", "120s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in &acked {
        assert_eq!(state_of(&p.job(*id)), "succeeded", "job {id}");
    }
    w.signal(libc::SIGTERM);
    w.wait_exit();
    integrity_ok(&p);
}

#[test]
fn purge_removes_finished_jobs_and_their_logs_and_retention_does_it_hourly() {
    let p = Project::new();
    let ids: Vec<i64> = (0..3)
        .map(|i| p.submit(&["--", "echo", &i.to_string()]))
        .collect();
    let mut w = p.worker("p", 2);
    p.ok(&["wait", "--all"]);
    w.signal(libc::SIGTERM);
    w.wait_exit();
    let logs: Vec<String> = ids
        .iter()
        .map(|id| {
            p.job(*id)["attempts"][0]["log_file"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let queued = p.submit(&["--", "true"]);
    assert_eq!(
        p.run(&["purge", "--older-than", "0s", "--state", "queued"])
            .status
            .code(),
        Some(2)
    );
    let v = p.json(&["purge", "--older-than", "1h"]);
    assert_eq!(v["purged"], 0, "nothing is that old");
    let v = p.json(&["purge", "--older-than", "0s"]);
    assert_eq!(v["purged"], 3, "{v}");
    for (id, log) in ids.iter().zip(&logs) {
        assert_eq!(p.run(&["show", &id.to_string()]).status.code(), Some(3));
        assert!(!std::path::Path::new(log).exists(), "{log} removed");
    }
    assert_eq!(
        state_of(&p.job(queued)),
        "queued",
        "unfinished jobs are never purged"
    );
    integrity_ok(&p);

    // With store.retention set, a worker purges on start and every hour.
    std::fs::write(
        p.state().join("config.toml"),
        "[store]\nretention = \"0s\"\n",
    )
    .unwrap();
    let _w = p.worker("r", 1);
    p.wait_job(queued, "succeeded", |j| state_of(j) == "succeeded");
    let _w2 = p.worker("r2", 1);
    p.wait_job(queued, "purged by the new worker's first sweep", |j| {
        j.is_null()
    });
}

#[test]
fn with_a_retention_period_a_steady_stream_does_not_grow_the_database() {
    let p = Project::new();
    std::fs::create_dir_all(p.state()).unwrap();
    std::fs::write(
        p.state().join("config.toml"),
        "[store]\nretention = \"0s\"\n",
    )
    .unwrap();
    let lines: String = (0..300)
        .map(|i| format!("echo job {i} writes a line to its log\n"))
        .collect();
    std::fs::write(p.path().join("round.txt"), lines).unwrap();
    let size = |name: &str| {
        std::fs::metadata(p.state().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let mut sizes = Vec::new();
    for round in 0..8 {
        p.ok(&["submit", "--lines", "round.txt"]);
        // Each worker's first sweep applies the retention to the rounds before.
        let mut w = p.worker(&format!("round{round}"), 2);
        p.ok(&["wait", "--all"]);
        w.signal(libc::SIGTERM);
        w.wait_exit();
        sizes.push((size("workq.db"), size("workq.db-wal")));
    }
    eprintln!("database and WAL sizes after each round: {sizes:?}");
    // The first rounds grow the file to hold one round; then freed pages are reused.
    let settled = sizes[2].0;
    assert!(
        sizes[7].0 <= settled + settled / 10,
        "the database keeps growing: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|s| s.1 <= 16 << 20),
        "the WAL is cut back after checkpoints: {sizes:?}"
    );
    assert_eq!(count(&p, "succeeded"), 300, "only the last round is kept");
    let logs = job_logs(&p.state().join("logs"));
    assert_eq!(logs, 300, "purged jobs take their logs with them");
    integrity_ok(&p);
}

/// Job logs under `dir` (the workers' own logs excluded).
fn job_logs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        job_logs(&p)
                    } else {
                        usize::from(!e.file_name().to_string_lossy().starts_with("worker-"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A commit the worker saw fail may have gone through (a connection lost during COMMIT): the
/// store then has a job running on a live worker that knows nothing of it. Made here by hand.
#[test]
fn a_job_the_store_runs_on_a_worker_that_forgot_it_is_queued_again() {
    let p = Project::new();
    let id = p.submit(&["--delay", "1h", "--", "echo", "ran after all"]);
    let w = p.worker_with("forgetful", &["-w", "1", "--heartbeat", "1s"]);
    let pid_file = p.state().join("run").join("forgetful.pid");
    // The PID file gets the worker's id once it has registered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let worker_id = loop {
        let id = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["worker_id"].as_i64());
        if let Some(id) = id {
            break id;
        }
        assert!(Instant::now() < deadline, "the worker never registered");
        std::thread::sleep(Duration::from_millis(20));
    };
    {
        let c = rusqlite::Connection::open(p.state().join("workq.db")).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             UPDATE jobs SET state = 'running', worker_id = {worker_id}, lease = 77,
                 attempt = 1, started_at = 0 WHERE id = {id};
             INSERT INTO attempts (job_id, attempt, worker_id, host, lease, started_at)
                 VALUES ({id}, 1, {worker_id}, 'here', 77, 0);
             COMMIT;"
        ))
        .unwrap();
    }
    let j = p.wait_job(id, "succeeded", |j| state_of(j) == "succeeded");
    assert_eq!(j["attempts"][0]["outcome"], "interrupted", "{j}");
    assert!(
        w.log_text()
            .contains("the store has it running here, but it is not"),
        "{}",
        w.log_text()
    );
    integrity_ok(&p);
}
