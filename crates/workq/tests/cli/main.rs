//! End-to-end tests: the real `workq` binary, real SQLite files, real child processes and signals.
//! Every worker a test starts is owned by a guard that kills it on drop, so none outlives a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod browser;
mod config;
mod container;
mod faults;
mod lifecycle;
mod partition;
mod pg;
mod readme;
mod serve;
mod serve_daemon;
mod shell;
mod systemd;
mod ux;
mod ux_jobs;

/// The binary under test, built by cargo for this test target.
fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_workq"))
}

/// A temp project with its own state dir.
struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Project {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Commands use the nearest `.workq/` at or above their directory: one above the temp
        // dir would take every test's commands to one shared store.
        if let Some(above) = dir
            .path()
            .ancestors()
            .skip(1)
            .map(|d| d.join(".workq"))
            .find(|d| d.is_dir())
        {
            panic!(
                "{} is above the tests' temporary directories, so commands would use its store \
                 instead of their own: remove it, or run the tests with TMPDIR set elsewhere",
                above.display()
            );
        }
        Project {
            dir,
            env: Vec::new(),
        }
    }

    /// A project whose commands (and the workers they start) use the store at `url`.
    fn with_store(url: &str) -> Self {
        let mut p = Project::new();
        p.env.push(("WORKQ_STORE".into(), url.into()));
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.path().join(".workq")
    }

    /// `workq` run in the project directory, isolated from the caller's environment.
    fn cmd(&self) -> Command {
        self.cmd_via(&[])
    }

    /// Like [`Project::cmd`], with `workq` run by the command `prefix` (such as `ip netns exec
    /// NS`, to run it on another "host"); the prefix must exec it, so its pid is workq's.
    fn cmd_via(&self, prefix: &[&str]) -> Command {
        let mut c = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        c.current_dir(self.path())
            .env_remove("WORKQ_STATE_DIR")
            .env_remove("WORKQ_STORE")
            .env_remove("WORKQ_CONFIG")
            // Config files of the machine and the user must not leak into tests.
            .env("XDG_CONFIG_HOME", self.path().join("xdg"))
            .env("WORKQ_SYSTEM_CONFIG", self.path().join("etc-workq.toml"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("WORKQ_") && k.contains("__") {
                c.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run workq")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "workq {args:?} failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).expect("valid JSON")
    }

    fn submit(&self, args: &[&str]) -> i64 {
        let mut full = vec!["submit"];
        full.extend_from_slice(args);
        self.ok(&full).trim().parse().expect("job id")
    }

    fn job(&self, id: i64) -> Value {
        self.json(&["show", &id.to_string()])
    }

    /// Polls `show` until `pred` holds (a liveness bound, not a timing assertion).
    fn wait_job(&self, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The job may not exist yet when a concurrently started command submits it.
            let out = self.run(&["--json", "show", &id.to_string()]);
            let j: Value = if out.status.success() {
                serde_json::from_slice(&out.stdout).expect("valid JSON")
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(3), "{err}");
                Value::Null
            };
            if pred(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {j}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn worker(&self, name: &str, slots: u32) -> Worker {
        self.worker_with(name, &["-w", &slots.to_string(), "--stop-timeout", "2s"])
    }

    /// A foreground worker with `args`, once it is registered.
    fn worker_with(&self, name: &str, args: &[&str]) -> Worker {
        self.worker_env(name, args, &[])
    }

    /// A foreground worker with `args` and extra environment, once it is registered.
    fn worker_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Worker {
        self.worker_in(&[], name, args, env)
    }

    /// Like [`Project::worker_env`], with the worker started through `prefix` (see
    /// [`Project::cmd_via`]).
    fn worker_in(
        &self,
        prefix: &[&str],
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let log = self.path().join(format!("worker-{name}.log"));
        let child = self
            .cmd_via(prefix)
            .envs(env.iter().copied())
            .args(["worker", "start", name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log"))
            .spawn()
            .expect("start worker");
        let w = Worker { child, log };
        let pid_file = self.state().join("run").join(format!("{name}.pid"));
        let registered = || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["worker_id"].is_i64())
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !w.log_text().contains("started:") && !registered() {
            assert!(
                Instant::now() < deadline,
                "worker {name} did not start: {}",
                w.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }

    /// Blocks until no job is queued or running.
    fn wait_all_done(&self) {
        self.ok(&["wait", "--all", "--timeout", "60s"]);
    }
}

impl Drop for Project {
    /// Whatever a test leaves running in this project dies with it, even when the test fails:
    /// daemons (their command line names the state dir) and job processes (their cwd is here).
    fn drop(&mut self) {
        let root = self.path().to_path_buf();
        let needle = root.to_string_lossy().into_owned();
        for _ in 0..3 {
            let mut found = false;
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if pid == std::process::id() as i32 || !process_alive(pid) {
                    continue;
                }
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let in_cmd = String::from_utf8_lossy(&cmdline).contains(needle.as_str());
                let in_root = std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|c| c.starts_with(&root));
                if in_cmd || in_root {
                    found = true;
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            if !found {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A worker process, killed on drop.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Gracefully first, so its jobs' whole process groups are stopped too.
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of live processes carrying the marker of attempt `attempt` of job `job` and running in
/// `root` (other tests' projects on this host have jobs with the same ids).
fn marked_processes(root: &Path, job: i64, attempt: u32) -> Vec<i32> {
    let id = format!("WORKQ_JOB_ID={job}");
    let at = format!("WORKQ_ATTEMPT={attempt}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let in_root =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(root));
        if !in_root {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if vars.contains(&id.as_bytes()) && vars.contains(&at.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn state_of(j: &Value) -> &str {
    j["state"].as_str().unwrap_or("")
}

fn wait_gone(root: &Path, job: i64, attempt: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !marked_processes(root, job, attempt).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes of job {job} attempt {attempt} survive: {:?}",
            marked_processes(root, job, attempt)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `pid` is gone (a liveness bound, not a timing assertion).
fn lifecycle_wait_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------

#[test]
fn zero_setup_submit_wait_prints_output_and_leaves_no_worker() {
    let p = Project::new();
    let out = p.run(&["submit", "--wait", "--", "echo", "hi"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(p.state().join("workq.db").exists());
    let status = p.json(&["status"]);
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    let job = p.job(1);
    assert_eq!(state_of(&job), "succeeded");
    let temp_pid = job["attempts"][0]["pid"].as_i64().unwrap_or(0) as i32;
    assert!(temp_pid > 0 && !process_alive(temp_pid));
}

#[test]
fn submit_wait_exits_with_the_jobs_status() {
    let p = Project::new();
    let out = p.run(&[
        "submit",
        "--wait",
        "--shell",
        "--",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("out") && text.contains("err"), "{text}");
    let out = p.run(&["submit", "--wait", "--shell", "--", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let job = p.job(2);
    assert_eq!(state_of(&job), "failed");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("signal 15"),
        "{job}"
    );
}

#[test]
fn submit_wait_interrupted_leaves_no_worker_and_requeues_the_job() {
    let p = Project::new();
    // Its own process group stands in for the terminal's foreground group, which Ctrl-C signals.
    let submit = {
        use std::os::unix::process::CommandExt;
        let mut c = p.cmd();
        c.args(["submit", "--wait", "--", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        c.spawn().expect("spawn submit")
    };
    let job = p.wait_job(1, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    let worker_pid = p.json(&["status"])["workers"][0]["pid"]
        .as_i64()
        .expect("temp worker") as i32;
    unsafe {
        libc::killpg(submit.id() as i32, libc::SIGINT);
    }
    let out = submit.wait_with_output().expect("submit exits");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("workq cancel 1"));
    assert!(
        !process_alive(worker_pid),
        "temporary worker {worker_pid} survived"
    );
    wait_gone(p.path(), 1, 1);
    let after = p.job(1);
    assert_eq!(state_of(&after), "queued", "{after}");
    assert_eq!(after["attempts"][0]["outcome"], "interrupted");
    let _ = job;
}

#[test]
fn kill_9_of_a_worker_mid_job_is_rescued_on_attempt_2() {
    let p = Project::new();
    let mut w1 = p.worker("w1", 1);
    // The job leaves a grandchild that the parent-death signal alone would not reach.
    let id = p.submit(&["--shell", "--", "sleep 30 & wait; echo finished"]);
    p.wait_job(id, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    assert!(!marked_processes(p.path(), id, 1).is_empty());
    w1.signal(libc::SIGKILL);
    w1.wait_exit();
    // A new worker sweeps the dead one, kills what is left of attempt 1 and runs attempt 2.
    let _w2 = p.worker("w2", 1);
    let j = p.wait_job(id, "on attempt 2", |j| j["attempt"] == 2);
    assert_eq!(j["attempts"][0]["outcome"], "lost", "{j}");
    wait_gone(p.path(), id, 1);
    p.ok(&["cancel", &id.to_string()]);
}

#[test]
fn a_rescue_never_touches_another_projects_job_with_the_same_id() {
    let a = Project::new();
    let b = Project::new();
    let mut wa = a.worker("a", 1);
    let _wb = b.worker("b", 1);
    let ja = a.submit(&["--shell", "--", "sleep 30 & wait"]);
    let jb = b.submit(&["--shell", "--", "sleep 30 & wait"]);
    assert_eq!((ja, jb), (1, 1), "both projects have a job 1, attempt 1");
    for p in [&a, &b] {
        p.wait_job(1, "running", |j| {
            state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
        });
    }
    wa.signal(libc::SIGKILL);
    wa.wait_exit();
    let _wa2 = a.worker("a2", 1);
    a.wait_job(1, "rescued", |j| j["attempt"] == 2);
    wait_gone(a.path(), 1, 1);
    assert_eq!(state_of(&b.job(1)), "running");
    assert!(
        !marked_processes(b.path(), 1, 1).is_empty(),
        "project B's job was killed by project A's rescue"
    );
    a.ok(&["cancel", "1"]);
    b.ok(&["cancel", "1"]);
}

#[test]
fn a_killed_workers_short_job_succeeds_on_attempt_2() {
    let p = Project::new();
    let mut w1 = p.worker("a", 1);
    let flag = p.path().join("first-run");
    let script = format!(
        "if [ ! -e {f} ]; then touch {f}; sleep 30; fi; echo ok",
        f = flag.display()
    );
    let id = p.submit(&["--shell", "--", &script]);
    p.wait_job(id, "running", |_| flag.exists());
    w1.signal(libc::SIGKILL);
    w1.wait_exit();
    let _w2 = p.worker("b", 1);
    let j = p.wait_job(id, "succeeded", |j| state_of(j) == "succeeded");
    assert_eq!(j["attempt"], 2);
    assert_eq!(j["attempts"][0]["outcome"], "lost");
    assert_eq!(j["attempts"][1]["outcome"], "succeeded");
    assert!(marked_processes(p.path(), id, 1).is_empty());
    assert_eq!(p.ok(&["logs", &id.to_string()]), "ok\n");
}

#[test]
fn cancel_stops_a_running_jobs_whole_process_tree() {
    let p = Project::new();
    let _w = p.worker("default", 1);
    let id = p.submit(&["--shell", "--", "sleep 60 & (sleep 60 & wait) & wait"]);
    p.wait_job(id, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while marked_processes(p.path(), id, 1).len() < 3 {
        assert!(Instant::now() < deadline, "job tree did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = p.ok(&["cancel", &id.to_string()]);
    assert!(out.contains("cancelled"), "{out}");
    assert_eq!(state_of(&p.job(id)), "cancelled");
    wait_gone(p.path(), id, 1);
}

#[test]
fn timeout_kills_a_job_that_ignores_sigterm() {
    let p = Project::new();
    let _w = p.worker("default", 1);
    let id = p.submit(&[
        "--timeout",
        "300ms",
        "--kill-grace",
        "300ms",
        "--shell",
        "--",
        "trap '' TERM; sleep 30",
    ]);
    let j = p.wait_job(id, "failed", |j| state_of(j) == "failed");
    assert!(
        j["last_error"].as_str().unwrap_or("").contains("timed out"),
        "{j}"
    );
    assert_eq!(j["attempts"][0]["outcome"], "timeout");
    wait_gone(p.path(), id, 1);
}

#[test]
fn retries_with_backoff_then_succeeds() {
    let p = Project::new();
    let _w = p.worker("default", 1);
    let counter = p.path().join("count");
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
        c = counter.display()
    );
    let id = p.submit(&[
        "--retries",
        "2",
        "--backoff",
        "50ms",
        "--shell",
        "--",
        &script,
    ]);
    let j = p.wait_job(id, "succeeded", |j| state_of(j) == "succeeded");
    assert_eq!(j["attempt"], 3);
    let outcomes: Vec<&str> = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
}

#[test]
fn sigterm_drains_then_requeues_running_jobs_as_interrupted() {
    let p = Project::new();
    let mut w = p.worker_with("default", &["-w", "2", "--stop-timeout", "5s"]);
    // The quick job ends only once the drain has begun: it finishes during the drain.
    let quick = p.submit(&[
        "--shell",
        "--",
        "until [ -e go ]; do sleep 0.01; done; echo quick",
    ]);
    let slow = p.submit(&[
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        "trap '' TERM; sleep 30",
    ]);
    p.wait_job(slow, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    p.wait_job(quick, "running", |j| state_of(j) == "running");
    w.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w.log_text().contains("SIGTERM: stopping; 2 running job(s)") {
        assert!(Instant::now() < deadline, "no drain: {}", w.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(p.path().join("go"), "").unwrap();
    let st = w.wait_exit();
    assert_eq!(st.code(), Some(0), "{}", w.log_text());
    assert_eq!(
        state_of(&p.job(quick)),
        "succeeded",
        "the quick job finished during the drain"
    );
    let j = p.job(slow);
    assert_eq!(state_of(&j), "queued", "{j}");
    assert_eq!(j["attempts"][0]["outcome"], "interrupted");
    wait_gone(p.path(), slow, 1);
    let log = w.log_text();
    assert!(log.contains("stopped: SIGTERM received; 1 done"), "{log}");
}

#[test]
fn order_dependencies_scheduling_and_keys() {
    let p = Project::new();
    let out = p.path().join("order");
    let rec = |tag: &str| format!("echo {tag} >> {}", out.display());
    let low = p.submit(&["-p", "1", "--shell", "--", &rec("low")]);
    let high = p.submit(&["-p", "9", "--shell", "--", &rec("high")]);
    let after = p.submit(&[
        "--after",
        &low.to_string(),
        "-p",
        "20",
        "--shell",
        "--",
        &rec("after"),
    ]);
    let later = p.submit(&["--delay", "1h", "--", "true"]);
    assert_eq!(state_of(&p.job(after)), "waiting");
    assert_eq!(state_of(&p.job(later)), "scheduled");
    let _w = p.worker("default", 1);
    p.wait_job(after, "succeeded", |j| state_of(j) == "succeeded");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "high\nlow\nafter\n");
    assert_eq!(state_of(&p.job(later)), "scheduled");
    let _ = high;
    // Unique: a second queued job with the key is refused with exit 4.
    let u = p.submit(&["--unique", "sub-01", "--delay", "1h", "--", "true"]);
    let dup = p.run(&["submit", "--unique", "sub-01", "--", "true"]);
    assert_eq!(dup.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&dup.stderr).contains(&format!("job {u}")));
    // Idempotency: the same key gives the same job.
    let a = p.submit(&["--idempotency-key", "k1", "--delay", "1h", "--", "true"]);
    let b = p.submit(&["--idempotency-key", "k1", "--delay", "1h", "--", "true"]);
    assert_eq!(a, b);
}

#[test]
fn submit_lines_is_one_transaction_and_json_shapes_hold() {
    let p = Project::new();
    let file = p.path().join("jobs.txt");
    std::fs::write(&file, "echo 1\n\n  \necho 2\necho 3\n").unwrap();
    let v = p.json(&[
        "submit",
        "--lines",
        file.to_str().unwrap(),
        "-Q",
        "batch",
        "--label",
        "kind=test",
    ]);
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["queue"], "batch");
    assert_eq!(arr[0]["state"], "queued");
    let listed = p.json(&["list", "--label", "kind=test"]);
    let jobs = listed.as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs[0]["id"].as_i64() > jobs[2]["id"].as_i64(),
        "newest first"
    );
    for key in [
        "id",
        "queue",
        "state",
        "priority",
        "attempt",
        "max_attempts",
        "command",
        "labels",
        "exit_code",
        "created_at",
        "started_at",
        "finished_at",
        "worker",
        "last_error",
    ] {
        assert!(
            jobs[0].get(key).is_some(),
            "job JSON lacks {key}: {}",
            jobs[0]
        );
    }
    assert_eq!(
        jobs[2]["command"],
        serde_json::json!(["sh", "-c", "echo 1"])
    );
    let one = p.json(&["submit", "--", "true"]);
    assert_eq!(one["state"], "queued");
    let status = p.json(&["status"]);
    assert_eq!(status["queues"].as_array().unwrap().len(), 2);
    let _w = p.worker("default", 2);
    let wq = p
        .cmd()
        .args([
            "worker",
            "start",
            "b",
            "-Q",
            "batch",
            "--stop-timeout",
            "1s",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut wq = Worker {
        child: wq,
        log: p.path().join("none"),
    };
    let out = p.run(&["wait", "--all", "--timeout", "30s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = p.json(&["status"]);
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for key in [
        "id",
        "name",
        "host",
        "pid",
        "state",
        "slots",
        "running_jobs",
        "jobs_done",
        "jobs_failed",
        "started_at",
        "heartbeat_at",
        "uptime_secs",
    ] {
        assert!(workers[0].get(key).is_some(), "worker JSON lacks {key}");
    }
    wq.signal(libc::SIGTERM);
    assert_eq!(wq.wait_exit().code(), Some(0));
    let shown = p.job(1);
    assert_eq!(shown["attempts"][0]["outcome"], "succeeded");
    for key in [
        "attempt",
        "outcome",
        "exit_code",
        "signal",
        "worker",
        "pid",
        "started_at",
        "ended_at",
    ] {
        assert!(
            shown["attempts"][0].get(key).is_some(),
            "attempt JSON lacks {key}"
        );
    }
}

#[test]
fn wait_reports_failures_and_timeouts_with_exit_codes() {
    let p = Project::new();
    let ok = p.submit(&["--", "true"]);
    let bad = p.submit(&["--", "false"]);
    let parked = p.submit(&["--delay", "1h", "--", "true"]);
    let _w = p.worker("default", 2);
    assert_eq!(p.run(&["wait", &ok.to_string()]).status.code(), Some(0));
    assert_eq!(
        p.run(&["wait", &ok.to_string(), &bad.to_string()])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        p.run(&["wait", &parked.to_string(), "--timeout", "200ms"])
            .status
            .code(),
        Some(124)
    );
    assert_eq!(p.run(&["wait", "999"]).status.code(), Some(3));
    // retry puts the failed job back; it fails again (its command is `false`).
    p.ok(&["retry", &bad.to_string()]);
    let j = p.wait_job(bad, "failed again", |j| {
        state_of(j) == "failed" && j["attempt"] == 2
    });
    assert_eq!(j["exit_code"], 1);
}

#[test]
fn spawn_errors_are_outcomes_not_crashes() {
    let p = Project::new();
    let _w = p.worker("default", 1);
    let missing = p.submit(&["--", "/no/such/program"]);
    let j = p.wait_job(missing, "failed", |j| state_of(j) == "failed");
    assert_eq!(j["attempts"][0]["outcome"], "spawn_error");
    assert!(
        j["last_error"]
            .as_str()
            .unwrap()
            .contains("command not found"),
        "{j}"
    );
    // A directory that is gone by the time the job runs: queued where no worker looks yet.
    let gone = p.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let id = p.submit(&["-C", gone.to_str().unwrap(), "-Q", "later", "--", "true"]);
    std::fs::remove_dir(&gone).unwrap();
    let _later = p.worker_with("later", &["-Q", "later"]);
    let j = p.wait_job(id, "failed", |j| state_of(j) == "failed");
    assert!(
        j["last_error"].as_str().unwrap().contains("does not exist"),
        "{j}"
    );
}

#[test]
fn shell_lines_behave_as_under_sh_and_silent_jobs_leave_no_log() {
    let p = Project::new();
    let lines = "printenv WORKQ_QUEUE\nno-such-program-workq arg\necho \"$WORKQ_QUEUE\" quoted\n/bin/true\n";
    std::fs::write(p.path().join("lines.txt"), lines).unwrap();
    let ids: Vec<i64> = p
        .ok(&[
            "submit",
            "--lines",
            "lines.txt",
            "-e",
            "WORKQ_QUEUE=user-value",
        ])
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let _w = p.worker("lines", 2);
    p.run(&["wait", "--all"]);
    let log =
        |id: i64| String::from_utf8_lossy(&p.run(&["logs", &id.to_string()]).stdout).to_string();
    // Run directly (a plain line): workq's own variable wins over a user's of the same name.
    assert_eq!(log(ids[0]), "default\n");
    // A program that cannot start goes to sh after all: its words, its exit code.
    let j = p.job(ids[1]);
    assert_eq!(j["exit_code"], 127, "{j}");
    assert!(log(ids[1]).contains("not found"), "{}", log(ids[1]));
    // Not plain: through sh.
    assert_eq!(log(ids[2]), "default quoted\n");
    // Silent: succeeded, no log file, and logs says so.
    assert_eq!(state_of(&p.job(ids[3])), "succeeded");
    let path = p.job(ids[3])["attempts"][0]["log_file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!Path::new(&path).exists(), "{path}");
    let out = p.run(&["logs", &ids[3].to_string()]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrote no output"),
        "{out:?}"
    );
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let p = Project::new();
    // Empty variables, as shells leave them, mean unset.
    let out = p
        .cmd()
        .env("WORKQ_STORE", "")
        .env("WORKQ_STATE_DIR", "")
        .args(["list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.submit(&["--", "true"]);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["show", "42"], 3, "job 42 not found"),
        (&["logs", "42"], 3, "job 42 not found"),
        (&["submit"], 2, "no command given"),
        (&["submit", "--bogus", "--", "true"], 2, "--bogus"),
        (
            &["submit", "--timeout", "soon", "--", "true"],
            2,
            "invalid duration",
        ),
        (
            &["submit", "--label", "novalue", "--", "true"],
            2,
            "expected KEY=VALUE",
        ),
        (&["submit", "--after", "77", "--", "true"], 3, "job 77"),
        (&["submit", "--lines", "/no/such/file"], 3, "/no/such/file"),
        (&["wait"], 2, "nothing to wait for"),
        (&["frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, code, text) in cases {
        let out = p.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "workq {args:?}: {err}");
        assert!(
            err.contains(text),
            "workq {args:?} should say {text:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(
        p.json(&["list"]).as_array().unwrap().len(),
        1,
        "failed commands stored nothing"
    );
}

#[test]
fn unusable_stores_exit_5_naming_the_file() {
    let p = Project::new();
    std::fs::create_dir_all(p.state()).unwrap();
    let db = p.state().join("workq.db");
    std::fs::write(
        &db,
        b"this is not a database, it is a shopping list\n".repeat(100),
    )
    .unwrap();
    let out = p.run(&["submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workq.db") && err.contains("not a workq database"),
        "{err}"
    );
    assert!(
        std::fs::read(&db).unwrap().starts_with(b"this is not"),
        "the file was left alone"
    );

    // A database from a newer schema.
    let q = Project::new();
    q.submit(&["--", "true"]);
    {
        let c = rusqlite::Connection::open(q.state().join("workq.db")).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let out = q.run(&["list"]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("upgrade workq"),
        "{err}"
    );

    // A state dir that cannot be created (below a regular file; root ignores permissions).
    let file = p.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = p.run(&[
        "--state-dir",
        file.join("state").to_str().unwrap(),
        "submit",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain-file"));

    // A state dir on a read-only filesystem.
    let out = p.run(&["--state-dir", "/proc/workq-state", "submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/workq-state"));
}

#[test]
fn a_database_locked_by_another_program_exits_5_naming_the_holder() {
    let p = Project::new();
    let id = p.submit(&["--", "true"]);
    let c = rusqlite::Connection::open(p.state().join("workq.db")).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; UPDATE jobs SET priority = priority;")
        .unwrap();
    let out = p
        .cmd()
        .env("WORKQ_LOCK_TIMEOUT", "300ms")
        .args(["submit", "--", "true"])
        .output()
        .unwrap();
    c.execute_batch("ROLLBACK").unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workq.db") && err.contains("locked"), "{err}");
    assert!(
        err.contains(&format!("process {}", std::process::id())),
        "names the holder: {err}"
    );
    let jobs = p.json(&["list"]);
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], id);
}

/// 3 workers, a few hundred short jobs that log their start and end, workers SIGKILLed and
/// restarted at random throughout. Checked from the log and the store: nothing lost, each job
/// succeeded exactly once, no two executions of a job overlapped, every re-run explained by a
/// `lost` attempt.
#[test]
fn chaos_kill_9_workers_at_random() {
    const JOBS: usize = 240;
    let p = Project::new();
    let log = p.path().join("events.log");
    let file = p.path().join("jobs.txt");
    std::fs::write(&file, chaos_jobs(&log, JOBS)).unwrap();
    let ids: Vec<i64> = p
        .ok(&["submit", "--lines", file.to_str().unwrap()])
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), JOBS);
    let mut names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
    let mut workers: Vec<Worker> = names.iter().map(|n| p.worker(n, 2)).collect();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    // The first kill is of the worker running the first job, which runs until then.
    let mut victim = chaos_runner_of(&p, ids[0], &names);
    loop {
        workers[victim].signal(libc::SIGKILL);
        workers[victim].wait_exit();
        kills += 1;
        names[victim] = format!("c{victim}-{kills}");
        workers[victim] = p.worker(&names[victim], 2);
        if kills == 12 {
            break;
        }
        // The next once a few more jobs have started, of a worker running one if any does.
        let more = 1 + (rand() % 6) as usize;
        if !chaos_progress(&p, &log, more, deadline) {
            break;
        }
        victim = chaos_pick(&chaos_busy(&p, &names), names.len(), rand());
    }
    p.wait_all_done();
    let lost_total = check_chaos_run(&p, &ids, &log);
    assert!(
        lost_total >= 1,
        "the first kill cost the first job an attempt"
    );
    eprintln!(
        "chaos: {kills} kills, {lost_total} lost attempts re-run, {JOBS} jobs each succeeded once"
    );
}

/// The lines of a chaos run of `jobs` jobs: each appends its start and end to `log`. The first
/// runs until its worker is killed (on its first attempt), so a run always loses an attempt.
fn chaos_jobs(log: &Path, jobs: usize) -> String {
    (0..jobs)
        .map(|i| {
            let work = if i == 0 {
                "[ $WORKQ_ATTEMPT -gt 1 ] || sleep 600"
            } else {
                "sleep 0.0$(( $WORKQ_JOB_ID % 9 + 1 ))"
            };
            format!(
                "echo start $WORKQ_JOB_ID $WORKQ_ATTEMPT $(date +%s%N) >> {l}; {work}; echo end $WORKQ_JOB_ID $WORKQ_ATTEMPT $(date +%s%N) >> {l}\n",
                l = log.display()
            )
        })
        .collect()
}

/// Which of the workers `names` runs job `id`, once it runs.
fn chaos_runner_of(p: &Project, id: i64, names: &[String]) -> usize {
    let j = p.wait_job(id, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    names
        .iter()
        .position(|n| j["worker"] == n.as_str())
        .unwrap_or_else(|| panic!("job {id} runs on none of {names:?}: {j}"))
}

/// Which of the workers `names` run a job now (as far as the store can tell: it may be
/// restarting).
fn chaos_busy(p: &Project, names: &[String]) -> Vec<usize> {
    let out = p.run(&["--json", "list", "--state", "running", "--limit", "0"]);
    let running: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let running = running.as_array().cloned().unwrap_or_default();
    (0..names.len())
        .filter(|&i| running.iter().any(|j| j["worker"] == names[i].as_str()))
        .collect()
}

/// One of the workers `busy` if any, else any of `all`, by the random number `r`.
fn chaos_pick(busy: &[usize], all: usize, r: u64) -> usize {
    if busy.is_empty() {
        (r % all as u64) as usize
    } else {
        busy[(r % busy.len() as u64) as usize]
    }
}

/// Waits until `more` more jobs have started (by the log): true, or false once nothing is left
/// to run.
fn chaos_progress(p: &Project, log: &Path, more: usize, deadline: Instant) -> bool {
    let starts = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("start "))
            .count()
    };
    let from = starts();
    loop {
        if starts() >= from + more {
            return true;
        }
        // The store may be restarting: a failed look is not a verdict.
        let out = p.run(&[
            "--json",
            "list",
            "--state",
            "queued,running",
            "--limit",
            "0",
        ]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
            if v.as_array().is_some_and(Vec::is_empty) {
                return false;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the chaos run stopped making progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks a chaos run from the start/end log its jobs appended to and from the store: every
/// job succeeded exactly once, each re-run is explained by a `lost` attempt, no two executions
/// of a job overlapped, and nothing of a killed attempt still runs. Returns the lost attempts.
fn check_chaos_run(p: &Project, ids: &[i64], log: &Path) -> usize {
    // Events per (job, attempt): start and, if it completed, end.
    let text = std::fs::read_to_string(log).unwrap();
    let mut runs: std::collections::BTreeMap<(i64, u32), (u128, Option<u128>)> = Default::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 4, "malformed line {line:?}");
        let key = (f[1].parse().unwrap(), f[2].parse().unwrap());
        let t: u128 = f[3].parse().unwrap();
        match f[0] {
            "start" => assert!(
                runs.insert(key, (t, None)).is_none(),
                "attempt {key:?} started twice"
            ),
            _ => runs.get_mut(&key).expect("end without start").1 = Some(t),
        }
    }
    let mut lost_total = 0;
    for &id in ids {
        let j = p.job(id);
        assert_eq!(
            state_of(&j),
            "succeeded",
            "job {id} was lost or failed: {j}"
        );
        let attempts = j["attempts"].as_array().unwrap();
        // Exactly one acknowledged success; a run that ended but whose worker died before it
        // could record the result is re-run, and must show as lost (at least once delivery).
        let succeeded: Vec<u32> = attempts
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .map(|a| a["attempt"].as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            succeeded.len(),
            1,
            "job {id} must succeed exactly once: {j}"
        );
        assert!(
            runs.get(&(id, succeeded[0])).is_some_and(|r| r.1.is_some()),
            "job {id}: the succeeded attempt never ran to its end"
        );
        for a in &attempts[..attempts.len() - 1] {
            assert_eq!(
                a["outcome"], "lost",
                "re-run of job {id} not explained by a lost attempt: {j}"
            );
            lost_total += 1;
        }
        assert_eq!(attempts.last().unwrap()["outcome"], "succeeded");
        // No overlap: every earlier attempt started and (if it ran to its end) ended before the next start.
        let mine: Vec<_> = runs.iter().filter(|((jid, _), _)| *jid == id).collect();
        for pair in mine.windows(2) {
            let (_, (s1, e1)) = pair[0];
            let (_, (s2, _)) = pair[1];
            assert!(
                s1 < s2 && e1.is_none_or(|e| e <= *s2),
                "job {id}: executions overlap: {mine:?}"
            );
        }
    }
    // Any attempt without an end line was killed: none may still be running.
    for ((id, attempt), (_, end)) in &runs {
        if end.is_none() {
            wait_gone(p.path(), *id, *attempt);
        }
    }
    lost_total
}
