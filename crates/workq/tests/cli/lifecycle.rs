//! Worker lifecycle end to end: real daemons, monitors, PID files and signals.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{marked_processes, process_alive, state_of, wait_gone, Project};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Project {
    /// `worker start NAME -d ARGS…` with `--json`; returns what it printed.
    fn daemon(&self, name: &str, args: &[&str]) -> Value {
        let mut full = vec!["worker", "start", name, "-d"];
        full.extend_from_slice(args);
        self.json(&full)
    }

    fn pid_path(&self, name: &str) -> PathBuf {
        self.state().join("run").join(format!("{name}.pid"))
    }

    fn pid_info(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.pid_path(name)).expect("PID file");
        serde_json::from_str(&text).expect("PID file JSON")
    }

    fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state().join("logs").join(format!("worker-{name}.log")))
            .unwrap_or_default()
    }

    fn status(&self, name: &str) -> (Option<i32>, Value) {
        let out = self.run(&["--json", "worker", "status", name]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    }
}

fn pid_of(v: &Value) -> i32 {
    v["pid"].as_i64().expect("pid") as i32
}

fn start_time(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn daemons_start_report_refuse_duplicates_and_stop() {
    let p = Project::new();
    let a = p.daemon("a", &["-w", "2", "--stop-timeout", "1s"]);
    let (apid, amon) = (pid_of(&a), a["monitor_pid"].as_i64().unwrap() as i32);
    assert!(process_alive(apid) && process_alive(amon), "{a}");
    assert_ne!(apid, amon);
    let info = p.pid_info("a");
    assert_eq!(info["pid"], apid);
    assert_eq!(info["monitor_pid"], amon);
    assert_eq!(info["worker_id"], a["worker_id"]);
    assert!(info["start_time"].as_u64().unwrap() > 0 && info["boot_id"].is_string());

    // Human output names the pid, the log and the commands to watch and stop it.
    let b = p.ok(&["worker", "start", "b", "-d", "-Q", "other"]);
    assert!(b.contains("worker b started: pid"), "{b}");
    assert!(
        b.contains("worker-b.log") && b.contains("workq worker stop b"),
        "{b}"
    );

    let again = p.run(&["worker", "start", "a", "-d"]);
    assert_eq!(again.status.code(), Some(4));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(&format!("already running (pid {apid})")),
        "{err}"
    );
    let fg = p.run(&["worker", "start", "a"]);
    assert_eq!(
        fg.status.code(),
        Some(4),
        "a foreground start is refused too"
    );

    let (code, s) = p.status("a");
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(
        (s["running"].as_bool(), s["state"].as_str()),
        (Some(true), Some("idle"))
    );
    assert_eq!(s["pid"], apid);
    assert_eq!(s["slots"], 2);
    assert!(s["rss_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["threads"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["cpu_percent"].is_number(), "{s}");
    assert!(s["uptime_secs"].is_u64() && s["log_file"].is_string() && s["state_dir"].is_string());
    let all = p.json(&["worker", "status"]);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");

    let id = p.submit(&["--", "true"]);
    p.wait_job(id, "succeeded", |j| state_of(j) == "succeeded");
    let (_, s) = p.status("a");
    assert_eq!(s["jobs_done"], 1, "{s}");
    assert_eq!(s["queue_counts"][0]["succeeded"], 1, "{s}");

    let out = p.ok(&["worker", "stop", "--all"]);
    assert!(
        out.contains("worker a stopped") && out.contains("worker b stopped"),
        "{out}"
    );
    assert!(!process_alive(apid) && !process_alive(amon));
    assert!(!p.pid_path("a").exists() && !p.pid_path("b").exists());
    let (code, s) = p.status("a");
    assert_eq!(code, Some(1), "a known worker that is not running: {s}");
    assert_eq!(s["state"], "stopped");
    assert_eq!(p.status("never").0, Some(3));
    let log = p.worker_log("a");
    assert!(
        log.contains("slots=2 (flag -w)") && log.contains("queues=default (default)"),
        "{log}"
    );
    assert!(
        log.contains("job 1 started") && log.contains("ended: succeeded after"),
        "{log}"
    );
    assert!(
        log.contains("worker a stopped: SIGTERM received; 1 done, 0 failed, up"),
        "{log}"
    );
}

#[test]
fn kill_9_of_a_daemon_is_restarted_by_its_monitor_and_its_job_rescued() {
    let p = Project::new();
    let d = p.daemon("w", &["--stop-timeout", "1s"]);
    let (pid1, monitor) = (pid_of(&d), d["monitor_pid"].as_i64().unwrap() as i32);
    let id = p.submit(&["--shell", "--", "sleep 30 & wait"]);
    p.wait_job(id, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    unsafe {
        libc::kill(pid1, libc::SIGKILL);
    }
    let j = p.wait_job(id, "running again on attempt 2", |j| {
        j["attempt"] == 2 && state_of(j) == "running"
    });
    assert_eq!(j["attempts"][0]["outcome"], "lost", "{j}");
    wait_gone(p.path(), id, 1);
    wait_until("the PID file names the new worker", || {
        p.pid_info("w")["pid"].as_i64() != Some(pid1 as i64)
    });
    let info = p.pid_info("w");
    assert_eq!(
        info["monitor_pid"], monitor,
        "the same monitor restarted it"
    );
    let (code, s) = p.status("w");
    assert_eq!((code, s["state"].as_str()), (Some(0), Some("busy")), "{s}");
    let log = p.worker_log("w");
    assert!(
        log.contains("died unexpectedly (killed by signal 9 (SIGKILL))"),
        "{log}"
    );
    assert!(
        log.contains("restarting worker w in 1.0s (restart 1 of 3"),
        "{log}"
    );
    p.ok(&["worker", "stop", "w", "-t", "1"]);
    wait_gone(p.path(), id, 2);
}

#[test]
fn worker_stop_kills_a_job_that_ignores_sigterm_and_requeues_it() {
    let p = Project::new();
    p.daemon("w", &["--stop-timeout", "30s"]);
    let id = p.submit(&[
        "--shell",
        "--",
        "trap '' TERM; sleep 60 & trap '' TERM; wait; wait",
    ]);
    p.wait_job(id, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    wait_until("the job's sleep is running", || {
        marked_processes(p.path(), id, 1).len() >= 2
    });
    let out = p.ok(&["worker", "stop", "w", "-t", "2"]);
    assert!(out.contains("sent SIGTERM to its monitor"), "{out}");
    assert!(
        out.contains("still running after 2.0s: sending SIGKILL"),
        "{out}"
    );
    assert!(
        out.contains(&format!("job {id}: back in the queue")),
        "{out}"
    );
    // The same line whether the stop removed the file or the monitor, asked to stop first, saw
    // its worker die and removed it before its own SIGKILL landed.
    assert!(
        out.contains(&format!("removed {}", p.pid_path("w").display())),
        "{out}"
    );
    assert!(!p.pid_path("w").exists(), "{out}");
    assert!(
        marked_processes(p.path(), id, 1).is_empty(),
        "no process of the job survives"
    );
    let j = p.job(id);
    assert_eq!(state_of(&j), "queued", "{j}");
    assert_eq!(j["attempts"][0]["outcome"], "interrupted", "{j}");
    let w = p.json(&["workers", "list"]);
    assert_eq!(w[0]["state"], "stopped", "{w}");
}

#[test]
fn a_pid_file_naming_an_unrelated_process_is_stale_and_never_signalled() {
    let p = Project::new();
    let mut sleep = Command::new("sleep").arg("60").spawn().expect("sleep");
    let spid = sleep.id() as i32;
    p.submit(&["--", "true"]);
    let forged = serde_json::json!({
        "pid": spid, "start_time": start_time(spid),
        "boot_id": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim(),
        "worker_id": 1, "started_at": "2026-01-01T00:00:00Z", "name": "default",
    });
    for content in [spid.to_string(), forged.to_string()] {
        std::fs::write(p.pid_path("default"), &content).unwrap();
        let out = p.run(&["worker", "status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("stale"), "{content}: {text}");
        let out = p.ok(&["worker", "stop"]);
        assert!(
            out.contains("is not running") && out.contains("stale"),
            "{out}"
        );
        assert!(!p.pid_path("default").exists(), "the stale file is removed");
        assert!(
            process_alive(spid),
            "the unrelated sleep was signalled ({content})"
        );
    }
    std::fs::write(p.pid_path("default"), spid.to_string()).unwrap();
    let out = p.ok(&["workers", "cleanup"]);
    assert!(
        out.contains("removed") && out.contains("bare number"),
        "{out}"
    );
    assert!(process_alive(spid));
    let _ = sleep.kill();
    let _ = sleep.wait();
}

#[test]
fn damaged_pid_files_are_reported_and_replaced_with_the_reason_logged() {
    let p = Project::new();
    p.submit(&["--", "true"]);
    for (i, (content, why)) in [
        ("", "it is empty"),
        ("{\"pid\": 4", "it is truncated"),
        ("not a pid", "not a workq PID file"),
        (
            "{\"pid\":2147483000,\"start_time\":5,\"boot_id\":\"x\",\"worker_id\":3,\"started_at\":\"\",\"name\":\"n\"}",
            "written before the last reboot",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("n{i}");
        std::fs::write(p.pid_path(&name), content).unwrap();
        let (code, s) = p.status(&name);
        assert_eq!(code, Some(1), "{s}");
        assert!(s["note"].as_str().unwrap_or("").contains(why), "{content:?}: {s}");
        p.daemon(&name, &[]);
        assert!(
            p.worker_log(&name).contains(why) && p.worker_log(&name).contains("replacing it"),
            "{}",
            p.worker_log(&name)
        );
        assert_eq!(p.status(&name).0, Some(0));
    }
    // A lock held by a process the file does not name: nothing is signalled on the file's
    // word; once that process is gone, the file is stale. (A holder that exits in the middle
    // of the check is pidfile's unit test `a_holder_that_exits_in_the_middle_of_the_check…`.)
    let path = p.pid_path("vanishing");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let content = serde_json::json!({
        "pid": 2147483001i64, "start_time": 5, "boot_id": boot.trim(), "worker_id": 3,
        "started_at": "", "name": "vanishing",
    });
    std::fs::write(&path, content.to_string()).unwrap();
    // It says so once it holds the lock, and holds it until its stdin closes.
    let mut holder = Command::new("flock")
        .arg(&path)
        .args(["sh", "-c", "echo locked; cat >/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock");
    let mut said = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut said)
        .expect("read from flock");
    assert_eq!(said, "locked\n");
    let (code, s) = p.status("vanishing");
    assert_eq!(
        (code, s["state"].as_str()),
        (Some(1), Some("unknown")),
        "{s}"
    );
    let note = s["note"].as_str().unwrap_or("");
    assert!(
        note.contains("lock is held") && note.contains("are gone"),
        "{s}"
    );
    drop(holder.stdin.take());
    assert!(holder.wait().expect("flock exits").success());
    let (code, s) = p.status("vanishing");
    assert_eq!(code, Some(1), "{s}");
    assert!(s["note"].as_str().unwrap_or("").contains("stale"), "{s}");
    p.ok(&["worker", "stop", "--all", "-t", "5"]);
}

#[test]
fn the_restart_limit_stops_a_crash_loop() {
    let p = Project::new();
    let d = p.daemon("loop", &["--max-restarts", "2"]);
    let monitor = d["monitor_pid"].as_i64().unwrap() as i32;
    let mut pid = pid_of(&d);
    for round in 0..3 {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        if round == 2 {
            break;
        }
        wait_until("the monitor restarts the worker", || {
            let i = p.pid_info("loop");
            i["pid"].as_i64() != Some(pid as i64)
                && i["worker_id"].is_i64()
                && {
                    let n = i["pid"].as_i64().unwrap() as i32;
                    process_alive(n)
                }
                && p.status("loop").1["state"] == "idle"
        });
        pid = p.pid_info("loop")["pid"].as_i64().unwrap() as i32;
    }
    wait_until("the monitor gives up", || !process_alive(monitor));
    let (code, s) = p.status("loop");
    assert_eq!(
        (code, s["state"].as_str()),
        (Some(1), Some("crash-looping")),
        "{s}"
    );
    let w = p.json(&["workers", "list"]);
    assert_eq!(w[0]["state"], "crash-looping", "{w}");
    let log = p.worker_log("loop");
    assert!(
        log.contains("crash-looping: 2 restart(s) within 1h00m did not help"),
        "{log}"
    );
    let health = p.run(&["health"]);
    assert_eq!(health.status.code(), Some(1));
    // Starting it again is allowed and clears the state.
    p.daemon("loop", &[]);
    assert_eq!(p.status("loop").1["state"], "idle");
}

#[test]
fn a_hung_worker_is_killed_and_restarted() {
    let p = Project::new();
    let d = p.daemon("h", &["--heartbeat", "200ms", "--hung-after", "1s"]);
    let pid = pid_of(&d);
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    wait_until("a new worker replaces the hung one", || {
        p.pid_info("h")["pid"].as_i64() != Some(pid as i64) && p.status("h").1["state"] == "idle"
    });
    wait_until("the hung worker is gone", || !process_alive(pid));
    let log = p.worker_log("h");
    assert!(log.contains("hung: its last heartbeat was"), "{log}");
}

#[test]
fn pause_holds_new_jobs_survives_a_restart_and_resume_releases_them() {
    let p = Project::new();
    p.daemon("w", &["-w", "2"]);
    // It runs until `go` exists, which is made only after `held` is queued.
    let long = p.submit(&["--shell", "--", "until [ -e go ]; do sleep 0.01; done"]);
    p.wait_job(long, "running", |j| state_of(j) == "running");
    let out = p.ok(&["worker", "pause", "w"]);
    assert!(out.contains("worker w paused"), "{out}");
    assert_eq!(p.status("w").1["state"], "paused");
    let held = p.submit(&["--", "true"]);
    std::fs::write(p.path().join("go"), "").unwrap();
    // The step that records `long`'s end claims first (with a free slot, `held` would be
    // claimed right there): once it shows, the worker had its chance at `held`.
    p.wait_job(long, "succeeded while paused", |j| {
        state_of(j) == "succeeded"
    });
    assert_eq!(
        state_of(&p.job(held)),
        "queued",
        "a paused worker claims nothing"
    );
    // `restart` returns once the new worker is ready, which is after its first claim.
    let out = p.ok(&["worker", "restart", "w"]);
    assert!(out.contains("worker w started"), "{out}");
    let (_, s) = p.status("w");
    assert_eq!(
        (s["state"].as_str(), s["slots"].as_u64()),
        (Some("paused"), Some(2)),
        "{s}"
    );
    assert_eq!(
        state_of(&p.job(held)),
        "queued",
        "the restarted worker is still paused"
    );
    p.ok(&["worker", "resume", "w"]);
    p.wait_job(held, "succeeded after resume", |j| {
        state_of(j) == "succeeded"
    });
    // restart -w overrides the slots and keeps the rest.
    p.ok(&["worker", "restart", "w", "-w", "3"]);
    let (_, s) = p.status("w");
    assert_eq!(
        (s["state"].as_str(), s["slots"].as_u64()),
        (Some("idle"), Some(3)),
        "{s}"
    );
    assert!(p.worker_log("w").contains("slots=3 (flag -w)"));
    p.ok(&["worker", "stop", "w"]);
}

#[test]
fn a_foreground_worker_owns_its_pid_file_and_stops_on_request() {
    let p = Project::new();
    let mut w = p.worker("fg", 1);
    wait_until("the PID file has the worker id", || {
        p.pid_path("fg").exists() && p.pid_info("fg")["worker_id"].is_i64()
    });
    assert_eq!(p.pid_info("fg")["pid"], w.pid());
    assert_eq!(p.pid_info("fg")["monitor_pid"], Value::Null);
    let out = p.ok(&["worker", "stop", "fg"]);
    assert!(out.contains("worker fg stopped"), "{out}");
    assert!(w.wait_exit().success());
    assert!(!p.pid_path("fg").exists());
}

#[test]
fn cleanup_health_and_doctor_after_a_dead_worker() {
    let p = Project::new();
    assert_eq!(p.run(&["doctor"]).status.code(), Some(0));
    let mut w = p.worker("w1", 1);
    // Leaves a process outside its group (setsid) that outlives the job: an orphan. The job
    // ends once that process is in its own session (else it would die with the job's group).
    let escaped = p.submit(&[
        "--shell",
        "--",
        "setsid sh -c 'touch escaped; exec sleep 60' & until [ -e escaped ]; do sleep 0.01; done",
    ]);
    p.wait_job(escaped, "succeeded", |j| state_of(j) == "succeeded");
    let stuck = p.submit(&["--", "sleep", "60"]);
    p.wait_job(stuck, "running", |j| state_of(j) == "running");
    assert_eq!(p.run(&["health"]).status.code(), Some(0));
    w.signal(libc::SIGKILL);
    w.wait_exit();
    let list = p.json(&["workers", "list"]);
    assert_eq!(list[0]["state"], "dead", "{list}");
    let h = p.run(&["--json", "health"]);
    assert_eq!(h.status.code(), Some(1));
    let hv: Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(hv["healthy"], false, "{hv}");
    let d = p.run(&["doctor"]);
    assert_eq!(d.status.code(), Some(1));
    let dt = String::from_utf8_lossy(&d.stdout);
    assert!(
        dt.contains("is dead") && dt.contains("fix: workq workers cleanup"),
        "{dt}"
    );
    assert!(dt.contains("PID file") && dt.contains("stale"), "{dt}");
    assert!(!marked_processes(p.path(), escaped, 1).is_empty());

    let out = p.ok(&["workers", "cleanup"]);
    assert!(out.contains("worker w1 (id 1) marked dead"), "{out}");
    assert!(out.contains(&format!("job {stuck} rescued")), "{out}");
    assert!(out.contains("removed") && out.contains("w1.pid"), "{out}");
    assert!(out.contains("removed socket"), "{out}");
    assert!(
        out.contains(&format!("orphaned process(es) of job {escaped}")),
        "{out}"
    );
    wait_gone(p.path(), escaped, 1);
    wait_gone(p.path(), stuck, 1);
    assert_eq!(state_of(&p.job(stuck)), "queued");
    assert_eq!(p.run(&["doctor"]).status.code(), Some(0));
    assert_eq!(p.ok(&["workers", "cleanup"]).trim(), "nothing to clean up");
    p.ok(&["cancel", &stuck.to_string()]);
}

#[test]
fn worker_logs_rotate_and_follow_the_verbosity() {
    let p = Project::new();
    let lines: String = (0..40).map(|i| format!("echo {i}\n")).collect();
    std::fs::write(p.path().join("jobs.txt"), lines).unwrap();
    p.ok(&["submit", "--lines", "jobs.txt"]);
    let log = p.state().join("logs").join("worker-r.log");
    let mut w = p.worker_with("r", &["-v", "--log-max-size", "2KiB", "--log-keep", "2"]);
    p.wait_all_done();
    w.signal(libc::SIGTERM);
    w.wait_exit();
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    assert!(log.exists() && rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "only 2 old logs are kept");
    for f in [log.clone(), rotated(1), rotated(2)] {
        assert!(
            std::fs::metadata(&f).unwrap().len() <= 2048,
            "{}",
            f.display()
        );
    }
    let all =
        std::fs::read_to_string(&log).unwrap() + &std::fs::read_to_string(rotated(1)).unwrap();
    assert!(all.contains("DEBUG claimed"), "-v adds detail");

    p.submit(&["--", "true"]);
    let mut q = p.worker_with("quiet", &["-q"]);
    p.wait_all_done();
    q.signal(libc::SIGTERM);
    q.wait_exit();
    let text = p.worker_log("quiet");
    assert!(
        !text.contains("INFO") && !text.contains("DEBUG"),
        "-q logs only errors: {text}"
    );
}

#[test]
fn a_daemon_that_cannot_start_is_retried_then_explained_with_its_log() {
    let p = Project::new();
    p.submit(&["--", "true"]);
    let c = rusqlite::Connection::open(p.state().join("workq.db")).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; UPDATE jobs SET priority = priority;")
        .unwrap();
    let out = p
        .cmd()
        .env("WORKQ_LOCK_TIMEOUT", "200ms")
        .args(["worker", "start", "stuck", "-d"])
        .output()
        .unwrap();
    c.execute_batch("ROLLBACK").unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("start attempt 1 of 3 failed"), "{err}");
    assert!(
        err.contains("did not start after 3 attempt(s)") && err.contains("locked"),
        "{err}"
    );
    assert!(
        err.contains("last lines of") && err.contains("worker-stuck.log"),
        "{err}"
    );
    assert!(
        !p.pid_path("stuck").exists(),
        "a failed start leaves no PID file"
    );
    // Once the lock is gone it starts.
    p.daemon("stuck", &[]);
    p.ok(&["worker", "stop", "stuck"]);
}

#[test]
fn lifecycle_options_are_checked() {
    let p = Project::new();
    for args in [
        &["worker", "stop", "-t", "1e20"][..],
        &["worker", "stop", "-t", "soon"],
        &[
            "worker",
            "start",
            "x",
            "--heartbeat",
            "3s",
            "--hung-after",
            "1s",
        ],
        &["worker", "start", "../evil"],
        &["worker", "start", "x", "--log-max-size", "10 parsecs"],
        &["worker", "start", "x", "-w", "0"],
    ] {
        let out = p.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", out);
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{args:?}"
        );
    }
    assert!(!p.state().join("run").join("x.pid").exists());
}

#[test]
fn a_process_left_holding_a_jobs_output_does_not_hold_up_the_next_jobs() {
    let p = Project::new();
    let mut w = p.worker("w1", 1);
    let go = p.path().join("go");
    // Each job leaves a process outside its group that holds the job's output open until `go`
    // exists, which is made only once every job has succeeded: with one slot, the later jobs
    // must not wait for the earlier ones' leftovers (else this would never finish).
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            // The job ends only once its leftover is out of its group (else it is killed
            // with the group).
            let line = format!(
                "setsid sh -c 'touch out.{i}; for _ in $(seq 600); do [ -e {go} ] && break; sleep 0.05; done; echo late {i}' & \
                 until [ -e out.{i} ]; do sleep 0.01; done; echo early {i}",
                go = go.display()
            );
            p.submit(&["--shell", "--", &line])
        })
        .collect();
    for id in &ids {
        p.wait_job(*id, "succeeded", |j| state_of(j) == "succeeded");
    }
    std::fs::write(&go, "").unwrap();
    // What the leftovers print afterwards still reaches each job's own log.
    for (i, id) in ids.iter().enumerate() {
        wait_gone(p.path(), *id, 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = p.ok(&["logs", &id.to_string()]);
            if log.contains(&format!("late {i}")) {
                assert!(log.contains(&format!("early {i}")), "{log}");
                break;
            }
            assert!(Instant::now() < deadline, "job {id}'s log: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit().success());
}
