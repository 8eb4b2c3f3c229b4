//! What a new user tripped over in jobs (issue 12): usage errors, wording, and what `submit --wait`,
//! `wait`, `logs`, `list` and `show` say.

use super::*;

/// Runs `workq args`, expecting exit `code`; returns (stdout, stderr).
fn expect(p: &Project, args: &[&str], code: i32) -> (String, String) {
    let out = p.run(args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "workq {args:?}\nstdout: {so}\nstderr: {se}"
    );
    assert!(!se.contains("panicked"), "{se}");
    (so, se)
}

#[test]
fn cancel_and_retry_of_an_unknown_job_say_so_like_show() {
    let p = Project::new();
    let id = p.submit(&["--", "true"]).to_string();
    let (_, show) = expect(&p, &["show", "9999"], 3);
    for cmd in ["cancel", "retry"] {
        let (_, err) = expect(&p, &[cmd, "9999"], 3);
        assert_eq!(err, show, "{cmd} 9999 words it as show does");
    }
    // A found job is still reported, before the error about the missing one.
    let (out, err) = expect(&p, &["cancel", &id, "9998", "9999"], 3);
    assert!(out.contains(&format!("job {id}: cancelled")), "{out}");
    assert!(err.contains("jobs 9998, 9999 not found"), "{err}");
    assert!(err.contains("hint: `workq list`"), "{err}");
}

#[test]
fn list_state_waiting_lists_only_jobs_waiting_on_a_dependency() {
    let p = Project::new();
    let dep = p.submit(&["--", "true"]);
    let waiting = p.submit(&["--after", &dep.to_string(), "--", "true"]);
    p.submit(&["--delay", "1h", "--", "true"]);
    let listed = p.json(&["list", "--state", "waiting"]);
    let ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![waiting], "{listed}");
    assert_eq!(listed[0]["state"], "waiting");
    let (_, err) = expect(&p, &["list", "--state", "bogus"], 2);
    assert!(
        err.contains("queued, waiting, scheduled, running"),
        "every accepted state is named: {err}"
    );
}

#[test]
fn a_zero_timeout_is_a_usage_error_on_the_command_line_and_in_config() {
    let p = Project::new();
    for zero in ["0", "0s"] {
        let (_, err) = expect(&p, &["submit", "--timeout", zero, "--", "true"], 2);
        assert!(
            err.contains("--timeout 0 would stop the job at once; use --timeout none for no limit"),
            "{err}"
        );
    }
    let id = p.submit(&["--timeout", "none", "--", "true"]);
    assert!(p.job(id)["timeout_secs"].is_null());
    let config = p.path().join("workq.toml");
    for text in [
        "[defaults]\ntimeout = \"0\"\n",
        "[queues.prep]\ntimeout = \"0s\"\n",
    ] {
        std::fs::write(&config, text).unwrap();
        let (_, err) = expect(&p, &["submit", "--", "true"], 2);
        assert!(
            err.contains("would stop every job at once"),
            "{text}: {err}"
        );
        assert!(err.contains("use \"none\" for no limit"), "{text}: {err}");
        assert!(err.contains("workq.toml"), "names the file: {err}");
    }
    std::fs::write(&config, "[defaults]\ntimeout = \"none\"\n").unwrap();
    p.submit(&["--", "true"]);
}

#[test]
fn attempts_past_the_retry_budget_show_only_their_count() {
    let p = Project::new();
    let _w = p.worker("w", 1);
    let id = p.submit(&["--", "false"]);
    let sid = id.to_string();
    expect(&p, &["wait", &sid], 1);
    p.ok(&["retry", &sid]);
    expect(&p, &["wait", &sid], 1);
    let row = p.ok(&["list"]);
    let cols: Vec<&str> = row.lines().next().unwrap_or("").split('\t').collect();
    assert_eq!(cols.get(3), Some(&"2"), "list's ATTEMPT column: {row}");
    let show = p.ok(&["show", &sid]);
    assert!(
        show.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["attempts", "2", "(rescued", "0", "times)"]),
        "{show}"
    );
    // JSON keeps both numbers as they are.
    let j = p.job(id);
    assert_eq!(
        (j["attempt"].as_i64(), j["max_attempts"].as_i64()),
        (Some(2), Some(1))
    );
}

#[test]
fn logs_of_a_job_cancelled_before_it_started_says_so() {
    let p = Project::new();
    let id = p.submit(&["--", "echo", "never"]).to_string();
    p.ok(&["cancel", &id]);
    for args in [vec!["logs", &id], vec!["logs", "-f", &id]] {
        let (out, err) = expect(&p, &args, 0);
        assert_eq!(out, "");
        assert_eq!(
            err.trim(),
            format!("workq: job {id} was cancelled before it started; it has no output"),
            "{args:?}"
        );
    }
}

/// Collects what a child writes to `pipe` (its stdout or stderr) on a thread, so the test can
/// wait for some of it.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads from `rx` into `got` until `done` holds of what it got, naming `want` if it never does
/// (a liveness bound, not a timing check).
fn read_until(
    rx: &std::sync::mpsc::Receiver<Vec<u8>>,
    got: &mut Vec<u8>,
    want: &str,
    done: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&String::from_utf8_lossy(got)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend(chunk),
            Err(_) => panic!(
                "never printed {want:?}; got {:?}",
                String::from_utf8_lossy(got)
            ),
        }
    }
}

#[test]
fn logs_tail_prints_the_last_lines_and_follows_from_there() {
    let p = Project::new();
    let _w = p.worker("w", 1);
    let go = p.path().join("go");
    let script = format!(
        "seq 1 5; while [ ! -e {} ]; do sleep 0.05; done; echo 6",
        go.display()
    );
    let id = p.submit(&["--", "sh", "-c", &script]).to_string();
    let log = p.state().join("logs/000").join(format!("{id}.1.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&log).unwrap_or_default() != "1\n2\n3\n4\n5\n" {
        assert!(Instant::now() < deadline, "job {id} never printed 1..5");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.ok(&["logs", &id, "--tail", "2"]), "4\n5\n");
    assert_eq!(p.ok(&["logs", &id, "-n", "0"]), "");
    let mut follow = p
        .cmd()
        .args(["logs", "-f", "--tail", "2", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start logs -f");
    let rx = collect(follow.stdout.take().expect("piped stdout"));
    let mut got = Vec::new();
    read_until(&rx, &mut got, "4\n5\n", |g| g.ends_with("4\n5\n"));
    std::fs::write(&go, "").unwrap();
    read_until(&rx, &mut got, "6\n", |g| g.ends_with("6\n"));
    assert!(follow.wait().expect("logs -f ends").success());
    assert_eq!(String::from_utf8_lossy(&got), "4\n5\n6\n");
    assert_eq!(p.ok(&["logs", &id, "--tail", "10"]), "1\n2\n3\n4\n5\n6\n");
}

#[test]
fn a_stray_word_before_double_dash_is_a_usage_error() {
    let p = Project::new();
    let (_, err) = expect(
        &p,
        &["submit", "--timeout", "1h", "30m", "--", "echo", "hi"],
        2,
    );
    assert!(
        err.contains("\"30m\" before -- is neither an option nor an option's value"),
        "{err}"
    );
    assert!(err.contains("--timeout '1h 30m'"), "{err}");
    assert!(err.contains("workq submit -- git diff -- file"), "{err}");
    let (_, err) = expect(&p, &["submit", "a", "b", "--", "echo"], 2);
    assert!(err.contains("\"a\", \"b\" before --"), "{err}");
    assert_eq!(
        p.json(&["list"]),
        serde_json::json!([]),
        "nothing was queued"
    );
    let plain = p.submit(&["echo", "hi"]);
    assert_eq!(p.job(plain)["command"], serde_json::json!(["echo", "hi"]));
    let inner = p.submit(&["--", "echo", "--", "hi"]);
    assert_eq!(
        p.job(inner)["command"],
        serde_json::json!(["echo", "--", "hi"])
    );
}

#[test]
fn submit_wait_of_a_program_that_cannot_start_exits_as_a_shell_would() {
    let p = Project::new();
    let (out, err) = expect(&p, &["submit", "--wait", "--", "nosuchprog-workq"], 127);
    let said = format!("{out}{err}");
    assert_eq!(
        said.matches("command not found: nosuchprog-workq").count(),
        1,
        "said once: {said}"
    );
    let plain = p.path().join("plain.txt");
    std::fs::write(&plain, "not a program\n").unwrap();
    let (out, err) = expect(&p, &["submit", "--wait", "--", "./plain.txt"], 126);
    let said = format!("{out}{err}");
    assert_eq!(said.matches("permission denied").count(), 1, "{said}");
    let (_, err) = expect(
        &p,
        &["--json", "submit", "--wait", "--", "nosuchprog-workq"],
        127,
    );
    assert_eq!(err, "", "--json says it in the JSON");
    // A program that starts and fails keeps its own status.
    let (_, err) = expect(&p, &["submit", "--wait", "--", "sh", "-c", "exit 3"], 3);
    assert!(err.contains("exited with status 3"), "{err}");
}

/// Starts `workq args` with stderr piped; waits for `want` on it, checks the command still
/// waits, then stops it with SIGTERM (exit 130). Returns all it printed on stderr.
fn warns_and_keeps_waiting(p: &Project, args: &[&str], want: &str) -> String {
    let mut child = p
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start workq");
    let rx = collect(child.stderr.take().expect("piped stderr"));
    let mut got = Vec::new();
    read_until(&rx, &mut got, want, |g| g.contains(want));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "workq {args:?} keeps waiting after the warning"
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{args:?}");
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
        got.extend(chunk);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn wait_says_when_no_worker_serves_a_jobs_queue_and_keeps_waiting() {
    let p = Project::new();
    let lonely = p.submit(&["-Q", "lonely", "--", "true"]).to_string();
    let line = "workq: no worker serves queue lonely; start one with: workq worker start -Q lonely";
    let err = warns_and_keeps_waiting(&p, &["wait", &lonely], line);
    assert_eq!(err.matches(line).count(), 1, "{err}");
    warns_and_keeps_waiting(&p, &["logs", "-f", &lonely], line);
    // A running job of a served queue does not hide a queue that nobody serves.
    let _w = p.worker_with("a", &["-Q", "served", "--stop-timeout", "1s"]);
    let go = p.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    let running = p.submit(&["-Q", "served", "--", "sh", "-c", &script]);
    p.wait_job(running, "running", |j| state_of(j) == "running");
    let err = warns_and_keeps_waiting(&p, &["wait", "--all"], line);
    assert!(!err.contains("queue served"), "{err}");
    std::fs::write(&go, "").unwrap();
}

#[test]
fn submit_wait_runs_only_its_job_not_the_rest_of_the_queue() {
    let p = Project::new();
    let other = p.submit(&["--", "echo", "other"]);
    let (out, _) = expect(&p, &["submit", "--wait", "--", "echo", "mine"], 0);
    assert_eq!(out, "mine\n");
    let j = p.job(other);
    assert_eq!(
        (state_of(&j), j["attempt"].as_i64()),
        ("queued", Some(0)),
        "{j}"
    );
    // The jobs it was told to run after are its own business, so they run too.
    let first = p.submit(&["--", "echo", "first"]).to_string();
    let (out, _) = expect(
        &p,
        &[
            "submit", "--after", &first, "--wait", "--", "echo", "second",
        ],
        0,
    );
    assert_eq!(out, "second\n", "only its own output");
    assert_eq!(state_of(&p.job(first.parse().unwrap())), "succeeded");
    assert_eq!(state_of(&p.job(other)), "queued");
    // A temporary worker limited to one job does not count as serving the queue: a second
    // submit --wait meanwhile starts its own instead of waiting for nothing.
    let go = p.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    let mut held = p
        .cmd()
        .args(["submit", "--wait", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start submit --wait");
    let held_id = other + 4;
    p.wait_job(held_id, "running", |j| state_of(j) == "running");
    let (out, _) = expect(&p, &["submit", "--wait", "--", "echo", "meanwhile"], 0);
    assert_eq!(out, "meanwhile\n");
    std::fs::write(&go, "").unwrap();
    assert!(held.wait().expect("submit --wait ends").success());
    assert_eq!(state_of(&p.job(other)), "queued", "never run by either");
}

/// `submit --wait --after A`, where A itself waits on another queued job, runs the whole chain:
/// a temporary worker limited to the job and A could never run A's own dependency, so it serves
/// the queue as a whole, as a worker started by hand would.
#[test]
fn submit_wait_after_a_job_that_waits_runs_the_whole_chain() {
    let p = Project::new();
    let first = p.submit(&["--", "echo", "first"]).to_string();
    let middle = p
        .submit(&["--after", &first, "--", "echo", "middle"])
        .to_string();
    let mut child = p
        .cmd()
        .args(["submit", "--after", &middle, "--wait", "--", "echo", "last"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start submit --wait");
    // A hang is the failure this test is about: give it a deadline, then kill it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("submit --wait after a waiting job did not finish in 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut out)
        .expect("read stdout");
    assert!(status.success(), "{status:?}");
    assert_eq!(out, "last\n");
    for id in [&first, &middle] {
        assert_eq!(
            state_of(&p.job(id.parse().unwrap())),
            "succeeded",
            "job {id}"
        );
    }
}
