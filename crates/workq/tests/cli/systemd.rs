//! systemd's notify protocol against a real unix datagram socket given as `NOTIFY_SOCKET`, as
//! systemd gives one to a `Type=notify` unit.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{state_of, Project};

/// The next message on `sock` (a liveness bound of 20 s, not a timing assertion).
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notify message within 20 s");
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

#[test]
fn a_worker_sends_ready_once_claiming_watchdog_at_heartbeats_and_stopping_on_sigterm() {
    let p = Project::new();
    let first = p.submit(&[
        "--shell",
        "--",
        "echo \"socket=${NOTIFY_SOCKET:-none}\"; sleep 30",
    ]);
    let path = p.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = p.worker_env(
        "sd",
        &["--heartbeat", "300ms", "--stop-timeout", "1s"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    assert_eq!(next(&sock), "READY=1");
    // Ready means claiming: the job queued before the start was taken by the first step.
    assert_ne!(state_of(&p.job(first)), "queued", "{}", p.job(first));
    // Nor may a job speak for its worker: it does not get the socket.
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.ok(&["logs", &first.to_string()]).is_empty() {
        assert!(Instant::now() < deadline, "the job wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.ok(&["logs", &first.to_string()]), "socket=none\n");
    let mut beats = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while beats < 2 {
        assert!(Instant::now() < deadline, "no watchdog messages");
        let m = next(&sock);
        assert_eq!(m, "WATCHDOG=1", "only watchdogs between ready and stop");
        beats += 1;
    }
    w.signal(libc::SIGTERM);
    loop {
        let m = next(&sock);
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1", "{m}");
    }
    assert!(w.wait_exit().success());
}

/// A foreground worker whose standard error is the journal (`JOURNAL_STREAM` names it) until
/// SIGTERM ends it; returns what it wrote there.
fn worker_stderr(
    p: &Project,
    name: &str,
    journal_stream: impl Fn(&std::fs::Metadata) -> String,
) -> String {
    let path = p.path().join(format!("{name}.stderr"));
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = p
        .cmd()
        .args(["worker", "start", name, "--stop-timeout", "1s"])
        .env("JOURNAL_STREAM", journal_stream(&meta))
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.ok(&["workers", "list"]).contains(name) {
        assert!(Instant::now() < deadline, "worker {name} never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn under_journald_the_worker_logs_syslog_priorities_without_timestamps() {
    let p = Project::new();
    // The store first, so the only lines are the worker's log (not `created .workq`).
    p.submit(&["--", "true"]);
    let journal = worker_stderr(&p, "jw", |m| format!("{}:{}", m.dev(), m.ino()));
    let lines: Vec<&str> = journal.lines().collect();
    assert!(!lines.is_empty(), "the worker logged nothing");
    for l in &lines {
        assert!(
            l.starts_with("<6>") || l.starts_with("<3>") || l.starts_with("<7>"),
            "{l}"
        );
        assert!(!l.contains(" INFO "), "no level word or timestamp: {l}");
    }
    // Its own log file keeps timestamps and level words.
    let file = std::fs::read_to_string(p.state().join("logs/worker-jw.log")).unwrap();
    assert!(
        file.lines()
            .all(|l| l.contains(" INFO ") || l.contains(" ERROR ")),
        "{file}"
    );
    // A JOURNAL_STREAM that names another file (an inherited variable) changes nothing.
    let plain = worker_stderr(&p, "pw", |m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(
        plain
            .lines()
            .all(|l| l.contains(" INFO ") && !l.starts_with('<')),
        "{plain}"
    );
}

#[test]
fn the_server_sends_ready_once_listening_and_stopping_on_sigterm() {
    let p = Project::new();
    let path = p.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = p
        .cmd()
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(next(&sock), "READY=1");
    // Ready means listening: the address it printed answers.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["listen"].as_str().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_ok(), "{addr}");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(next(&sock), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}
