//! `workq serve -d`, `serve stop` and `serve status` end to end: the real binary's monitor and
//! server processes, the PID file, restarts after a SIGKILL, and the readiness pipe. Every
//! server listens on 127.0.0.1:0, so the tests run in parallel; every process a test starts is
//! killed by pid when its guard drops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{process_alive, Project};

/// The server's PID file: a directory of its own, apart from the workers' `run/NAME.pid`.
fn pid_file(p: &Project) -> PathBuf {
    p.state().join("run").join("serve").join("serve.pid")
}

fn pid_info(p: &Project) -> Option<Value> {
    let text = std::fs::read_to_string(pid_file(p)).ok()?;
    serde_json::from_str(&text).ok()
}

fn server_log(p: &Project) -> String {
    std::fs::read_to_string(p.state().join("logs").join("serve.log")).unwrap_or_default()
}

fn pid(v: &Value, key: &str) -> i32 {
    v[key].as_i64().unwrap_or_else(|| panic!("no {key} in {v}")) as i32
}

/// Waits for `f` (a liveness bound, not a timing assertion).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Kills by pid, on drop, every server and monitor a test saw (and whichever its PID file names
/// then, in case the monitor restarted the server since), so none outlives a failed test.
struct Guard<'a> {
    project: &'a Project,
    pids: Vec<i32>,
}

impl<'a> Guard<'a> {
    fn new(project: &'a Project) -> Self {
        Guard {
            project,
            pids: Vec::new(),
        }
    }

    /// `serve -d --listen 127.0.0.1:0 ARGS…` with `--json`; its pids are owned from now on.
    fn start(&mut self, args: &[&str]) -> Value {
        let mut full = vec!["serve", "-d", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        let v = self.project.json(&full);
        self.pids.push(pid(&v, "pid"));
        self.pids.push(pid(&v, "monitor_pid"));
        v
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(info) = pid_info(self.project) {
            // The server before its monitor, which would otherwise restart it.
            for key in ["pid", "monitor_pid"] {
                if let Some(p) = info[key].as_i64() {
                    self.pids.insert(0, p as i32);
                }
            }
        }
        for &p in &self.pids {
            if p > 1 && process_alive(p) {
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
    }
}

/// `GET path` on `addr` (`HOST:PORT`), with a bearer token if given: (status, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn healthz(addr: &str) -> (u16, String) {
    get(addr, "/healthz", None).unwrap_or_else(|e| panic!("GET http://{addr}/healthz: {e}"))
}

fn status(p: &Project) -> (Option<i32>, Value) {
    let out = p.run(&["--json", "serve", "status"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v)
}

#[test]
fn serve_d_prints_a_url_that_answers_status_shows_it_a_second_start_conflicts_and_stop_ends_it() {
    let p = Project::new();
    let mut g = Guard::new(&p);
    let s = g.start(&[]);
    let (server, monitor) = (pid(&s, "pid"), pid(&s, "monitor_pid"));
    assert!(process_alive(server) && process_alive(monitor) && server != monitor);
    let listen = s["listen"].as_str().expect("listen").to_string();
    assert!(
        !listen.ends_with(":0"),
        "the real port is reported, not the one asked for: {s}"
    );
    assert_eq!(s["url"], format!("http://{listen}/"));
    assert!(
        s["log_file"]
            .as_str()
            .is_some_and(|l| l.ends_with(".workq/logs/serve.log")),
        "{s}"
    );
    let (code, body) = healthz(&listen);
    assert_eq!((code, body.contains("\"ok\":true")), (200, true), "{body}");

    let info = pid_info(&p).expect("PID file");
    assert_eq!(
        (pid(&info, "pid"), pid(&info, "monitor_pid")),
        (server, monitor)
    );
    assert_eq!(
        (info["name"].as_str(), info["listen"].as_str()),
        (Some("serve"), Some(listen.as_str()))
    );

    let (code, st) = status(&p);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(
        (st["running"].as_bool(), st["state"].as_str()),
        (Some(true), Some("running")),
        "{st}"
    );
    assert_eq!(
        (pid(&st, "pid"), pid(&st, "monitor_pid")),
        (server, monitor)
    );
    assert_eq!(st["url"], s["url"]);
    assert!(
        st["uptime_secs"].is_u64() && st["log_file"] == s["log_file"],
        "{st}"
    );
    let text = p.ok(&["serve", "status"]);
    assert!(
        text.starts_with("server: running") && text.contains(&format!("http://{listen}/")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{server} (monitor {monitor})")),
        "{text}"
    );

    // One server per state dir, whatever the address asked for.
    let again = p.run(&["serve", "-d", "--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("already running (pid {server}")),
        "{err}"
    );

    // A worker named `serve` has its own PID file, and the workers' commands leave the server
    // alone.
    p.json(&["worker", "start", "serve", "-d"]);
    p.ok(&["worker", "stop", "--all", "-t", "10"]);
    p.ok(&["workers", "cleanup"]);
    assert!(process_alive(server) && process_alive(monitor));
    assert_eq!(status(&p).0, Some(0));

    let out = p.ok(&["serve", "stop"]);
    assert!(
        out.contains("sent SIGTERM to its monitor") && out.contains("the server stopped"),
        "{out}"
    );
    assert!(!process_alive(server) && !process_alive(monitor), "{out}");
    assert!(!pid_file(&p).exists(), "the PID file is removed");
    assert!(
        TcpStream::connect(&listen).is_err(),
        "nothing listens any more"
    );
    let (code, st) = status(&p);
    assert_eq!(
        (code, st["running"].as_bool()),
        (Some(3), Some(false)),
        "{st}"
    );
    let out = p.ok(&["serve", "stop"]);
    assert!(out.contains("the server is not running"), "{out}");
    let log = server_log(&p);
    assert!(
        log.contains("SIGTERM received: stopping the server")
            && log.contains("monitor: the server stopped (exit status 0)"),
        "{log}"
    );
}

#[test]
fn a_server_killed_with_sigkill_is_restarted_by_its_monitor_at_the_same_url() {
    let p = Project::new();
    let mut g = Guard::new(&p);
    let s = g.start(&[]);
    let (first, monitor) = (pid(&s, "pid"), pid(&s, "monitor_pid"));
    let listen = s["listen"].as_str().expect("listen").to_string();
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    wait_for("the PID file names a new, listening server", || {
        pid_info(&p).is_some_and(|i| {
            i["pid"].as_i64().is_some_and(|n| n as i32 != first) && i["listen"].is_string()
        })
    });
    let info = pid_info(&p).expect("PID file");
    let second = pid(&info, "pid");
    g.pids.push(second);
    assert_eq!(
        pid(&info, "monitor_pid"),
        monitor,
        "the same monitor restarted it"
    );
    assert_eq!(
        info["listen"],
        listen.as_str(),
        "at the address first bound"
    );
    assert_eq!(healthz(&listen).0, 200);
    let (code, st) = status(&p);
    assert_eq!((code, pid(&st, "pid")), (Some(0), second), "{st}");
    let log = server_log(&p);
    assert!(
        log.contains(&format!(
            "the server (pid {first}): it died unexpectedly (killed by signal 9 (SIGKILL))"
        )) && log.contains("restarting the server in 1.0s (restart 1 of 3"),
        "{log}"
    );
    assert!(log.contains("the server is back: pid"), "{log}");

    let out = p.ok(&["serve", "stop", "-t", "10"]);
    assert!(out.contains("the server stopped"), "{out}");
    assert!(!process_alive(second) && !process_alive(monitor) && !pid_file(&p).exists());
}

#[test]
fn the_token_reaches_the_server_by_file_never_on_a_command_line_or_in_the_log() {
    let p = Project::new();
    let token = "tok-0123456789abcdef0123456789abcdef";
    std::fs::write(p.path().join("token"), format!("{token}\n")).unwrap();
    // /api/v1/status answers 200 only once there is a store.
    p.submit(&["--", "true"]);
    let mut g = Guard::new(&p);
    // A relative path: the monitor may restart the server long after, so it gets it absolute.
    let s = g.start(&["--token-file", "token", "--read-only"]);
    let listen = s["listen"].as_str().expect("listen").to_string();
    assert_eq!(healthz(&listen).0, 200, "/healthz needs no token");
    let (code, _) = get(&listen, "/api/v1/status", None).unwrap();
    assert_eq!(code, 401, "the API needs the token");
    let (code, body) = get(&listen, "/api/v1/status", Some(token)).unwrap();
    assert_eq!(code, 200, "{body}");
    for key in ["pid", "monitor_pid"] {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid(&s, key))).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!cmdline.contains(token), "{key}: {cmdline}");
        assert!(cmdline.contains("serve _"), "{key}: {cmdline}");
    }
    let log = server_log(&p);
    assert!(!log.contains(token), "{log}");
    assert!(
        log.contains("(token from --token-file") && log.contains("read-only)"),
        "{log}"
    );
    p.ok(&["serve", "stop"]);
}

#[test]
fn a_server_that_cannot_listen_fails_the_start_with_its_reason_and_leaves_nothing() {
    let p = Project::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = p.run(&["serve", "-d", "--listen", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("the server did not start after 3 attempt(s)")
            && err.contains(&format!("cannot listen on {addr}")),
        "{err}"
    );
    assert!(err.contains("serve.log"), "the log's end is shown: {err}");
    assert!(!pid_file(&p).exists(), "a failed start leaves no PID file");
    assert_eq!(status(&p).0, Some(3));
}

#[test]
fn a_stale_or_corrupt_server_pid_file_is_reported_removed_or_replaced_and_never_trusted() {
    let p = Project::new();
    std::fs::create_dir_all(pid_file(&p).parent().unwrap()).unwrap();
    let mut sleep = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let spid = sleep.id() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{spid}/stat")).unwrap();
    let start_time: u64 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // A file naming an unrelated live process, right down to its start time: not a server.
    let forged = serde_json::json!({
        "pid": spid, "start_time": start_time, "boot_id": boot.trim(), "worker_id": null,
        "started_at": "2026-01-01T00:00:00Z", "name": "serve", "listen": "127.0.0.1:1",
    });
    for (content, why) in [
        ("{\"pid\": 4", "it is truncated"),
        ("12345", "bare number"),
        (forged.to_string().as_str(), "is not a workq server"),
    ] {
        std::fs::write(pid_file(&p), content).unwrap();
        let (code, st) = status(&p);
        assert_eq!(code, Some(3), "{st}");
        assert!(
            st["note"].as_str().unwrap_or("").contains(why),
            "{content}: {st}"
        );
        let out = p.ok(&["serve", "stop"]);
        assert!(out.contains("is not running") && out.contains(why), "{out}");
        assert!(!pid_file(&p).exists(), "the stale file is removed");
        assert!(process_alive(spid), "the unrelated sleep was signalled");
    }
    // A stale file in the way of a start is replaced, and the log says why.
    std::fs::write(pid_file(&p), "").unwrap();
    let mut g = Guard::new(&p);
    g.start(&[]);
    let log = server_log(&p);
    assert!(log.contains("it is empty; replacing it"), "{log}");
    p.ok(&["serve", "stop"]);
    let _ = sleep.kill();
    let _ = sleep.wait();
}

#[test]
fn the_readme_server_section_runs_as_written() {
    let text = super::readme::readme();
    let p = Project::new();
    let bin = super::bin();
    let bin_dir = bin.parent().expect("the binary's directory");
    // The tour before it put the binary on PATH.
    let mut script = format!(
        "set -eu -o pipefail\nexport PATH=\"{}:$PATH\"\n\
         trap 'workq serve stop -t 5 >/dev/null 2>&1 || true' EXIT\n",
        bin_dir.display()
    );
    for block in super::readme::blocks(&text, "### Running the server in the background", "sh") {
        script.push_str(&super::readme::checked(&block, bin_dir));
    }
    let script_path = p.path().join("serve.sh");
    std::fs::write(&script_path, &script).expect("write the script");
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-k", "10", "120", "bash"])
        .arg(&script_path)
        .current_dir(p.path());
    for (k, v) in p.cmd().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let _guard = Guard::new(&p);
    let out = cmd.output().expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README's server section failed ({:?})\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("{\"ok\":true}") && stdout.contains("server: running"),
        "{stdout}"
    );
    assert!(!pid_file(&p).exists());
}
