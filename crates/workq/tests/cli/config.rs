//! Layered configuration, typed queues and batch runs, end to end.

use serde_json::Value;

use super::{state_of, Project};

impl Project {
    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    fn setting(&self, extra_env: &[(&str, &str)], args: &[&str], key: &str) -> (Value, String) {
        let mut c = self.cmd();
        c.args(["--json", "config", "show", "--sources"]).args(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = &v["settings"][key];
        (
            s["value"].clone(),
            s["source"].as_str().unwrap_or("").to_string(),
        )
    }
}

#[test]
fn each_layer_overrides_the_one_below_and_says_so() {
    let p = Project::new();
    let key = "defaults.timeout";
    assert_eq!(
        p.setting(&[], &[], key),
        (Value::from("none"), "default".into())
    );
    p.write("etc-workq.toml", "[defaults]\ntimeout = \"1h\"\n");
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "1h");
    assert!(src.ends_with("etc-workq.toml:2"), "{src}");
    p.write("xdg/workq/config.toml", "\n[defaults]\ntimeout = \"2h\"\n");
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "2h");
    assert!(src.ends_with("xdg/workq/config.toml:3"), "{src}");
    p.write("workq.toml", "[defaults]\n\ntimeout = \"3h\"\n");
    std::fs::create_dir_all(p.state()).unwrap();
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "3h");
    assert!(src.ends_with("workq.toml:3"), "{src}");
    p.write(".workq/config.toml", "[defaults]\ntimeout = \"4h\"\n");
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "4h");
    assert!(src.ends_with(".workq/config.toml:2"), "{src}");
    let (v, src) = p.setting(&[("WORKQ_DEFAULTS__TIMEOUT", "5h")], &[], key);
    assert_eq!(
        (v, src.as_str()),
        (Value::from("5h"), "env WORKQ_DEFAULTS__TIMEOUT")
    );
    p.write("other.toml", "[defaults]\ntimeout = \"6h\"\n");
    let (v, src) = p.setting(&[], &["--config", "other.toml"], key);
    assert_eq!(v, "6h");
    assert!(src.ends_with("other.toml:2"), "{src}");

    // The effective value reaches the jobs; a flag beats everything.
    let id = p.submit(&["--", "true"]);
    assert_eq!(
        p.job(id)["timeout_secs"].as_f64(),
        Some(4.0 * 3600.0),
        "project file applies to submit"
    );
    let id = p.submit(&["--timeout", "7h", "--", "true"]);
    assert_eq!(p.job(id)["timeout_secs"].as_f64(), Some(7.0 * 3600.0));
    // Workers log where their settings came from.
    p.write(
        ".workq/config.toml",
        "[worker]\nslots = 3\nstop_timeout = \"2s\"\n",
    );
    let mut w = p.worker_with("cfg", &["--stop-timeout", "1s"]);
    w.signal(libc::SIGTERM);
    w.wait_exit();
    let log = std::fs::read_to_string(p.state().join("logs/worker-cfg.log")).unwrap();
    assert!(
        log.contains("slots=3 (") && log.contains(".workq/config.toml:2)"),
        "{log}"
    );
    assert!(
        log.contains("stop_timeout=1.0s (flag --stop-timeout)"),
        "{log}"
    );
}

#[test]
fn config_errors_name_file_line_key_and_the_fix() {
    let p = Project::new();
    p.write(
        ".workq/config.toml",
        "[defaults]\nretries = 1\n[queues.a]\nworkerz = 2\n",
    );
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            ".workq/config.toml:4:1: queues.a.workerz: unknown key; did you mean queues.a.workers?"
        ),
        "{err}"
    );
    p.write(".workq/config.toml", "[defaults]\ntimeout = \"soon\"\n");
    let err = String::from_utf8_lossy(&p.run(&["list"]).stderr).into_owned();
    assert!(err.contains("config.toml:2:1: defaults.timeout:"), "{err}");
    let out = p
        .cmd()
        .env("WORKQ_QUEUES__A__WORKERS", "many")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A container key of the wrong type names the key, the file and what it takes.
    p.write(
        ".workq/config.toml",
        "[queues.gpu]\nmode = \"container\"\ncontainer_args = \"--gpus all\"\n",
    );
    let err = String::from_utf8_lossy(&p.run(&["list"]).stderr).into_owned();
    assert!(
        err.contains("config.toml:3:1: queues.gpu.container_args: expected an array of strings"),
        "{err}"
    );
    p.write(
        ".workq/config.toml",
        "[queues.gpu]\ncontainer_user = 1000\n",
    );
    let err = String::from_utf8_lossy(&p.run(&["list"]).stderr).into_owned();
    assert!(
        err.contains("config.toml:2:1: queues.gpu.container_user: expected a string, got 1000"),
        "{err}"
    );
    p.write(".workq/config.toml", "");
    let out = p
        .cmd()
        .env("WORKQ_QUEUES__GPU__CONTAINER_ARGS", "--gpus all")
        .arg("list")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set lists in a config file"),
        "{out:?}"
    );
    p.ok(&["list"]);
    // `init` writes a config that documents every setting and loads as is.
    std::fs::remove_file(p.state().join("config.toml")).unwrap();
    p.ok(&["init"]);
    let text = std::fs::read_to_string(p.state().join("config.toml")).unwrap();
    for key in [
        "journal_mode",
        "kill_grace",
        "hung_after",
        "log_max_size",
        "runtime",
        "container_user",
        "container_args",
        "unique",
    ] {
        assert!(text.contains(key), "init's config lacks {key}");
    }
    let _ = state_of(&Value::Null);
    p.ok(&["config", "show"]);
}

const PREP: &str = r#"[queues.prep]
command = "sh -c 'printf \"%s|\" \"$@\"; test \"$1\" != bad' prep {participant} {session}"
workers = 2
retries = 0
unique = "{participant}/{session}"
"#;

fn worker_processes(p: &Project) -> Vec<String> {
    let needle = p.path().to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(&needle) && cmd.contains(" worker ") && super::process_alive(pid))
                .then_some(cmd)
        })
        .collect()
}

#[test]
fn run_renders_templates_from_csv_and_jsonl_with_hostile_values() {
    let p = Project::new();
    p.write(".workq/config.toml", PREP);
    p.write(
        "s.csv",
        "participant,session,site\r\n01,a,upenn\r\n\"x; $(touch pwned) \"\"q\"\" 'y'\",,mgh\r\n",
    );
    let out = p.ok(&["run", "prep", "--params", "s.csv", "--dry-run"]);
    assert!(out.contains("prep 01 a\n"), "{out}");
    assert!(
        out.contains("prep 'x; $(touch pwned) \"q\" '\\''y'\\''' ''"),
        "{out}"
    );
    assert!(
        p.json(&["list"]).as_array().unwrap().is_empty(),
        "dry run submits nothing"
    );

    let v = p.json(&["run", "prep", "--params", "s.csv", "--wait"]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|j| j["state"] == "succeeded"), "{v}");
    let hostile = results
        .iter()
        .find(|j| j["labels"]["session"] == "")
        .unwrap();
    let argv: Vec<&str> = hostile["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        argv[4], "x; $(touch pwned) \"q\" 'y'",
        "one argument, verbatim"
    );
    assert_eq!(argv[5], "");
    let log = p.ok(&["logs", &hostile["id"].to_string()]);
    assert_eq!(log, "x; $(touch pwned) \"q\" 'y'||");
    assert!(!p.path().join("pwned").exists());

    // JSON Lines, with --where and --param added to every row.
    p.write("s.jsonl", "{\"participant\": \"02\", \"site\": \"mgh\"}\n\n{\"participant\": 3, \"site\": \"upenn\"}\n");
    let v = p.json(&[
        "run",
        "prep",
        "--params",
        "s.jsonl",
        "--param",
        "session=b",
        "--where",
        "site=upenn",
    ]);
    let sub = v["submitted"].as_array().unwrap();
    assert_eq!(sub.len(), 1, "{v}");
    assert_eq!(sub[0]["params"]["participant"], "3");
    assert_eq!(sub[0]["line"], 3);
    p.ok(&["cancel", &sub[0]["id"].to_string()]);
}

#[test]
fn run_reports_bad_parameter_files_clearly() {
    let p = Project::new();
    p.write(".workq/config.toml", PREP);
    p.write("no-session.csv", "participant,site\n01,x\n");
    let out = p.run(&["run", "prep", "--params", "no-session.csv"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no column session") && err.contains("needs participant, session"),
        "{err}"
    );
    p.write("ragged.csv", "participant,session\n01,a,extra\n");
    let err = String::from_utf8_lossy(&p.run(&["run", "prep", "--params", "ragged.csv"]).stderr)
        .into_owned();
    assert!(
        err.contains("ragged.csv: line 2: 3 field(s), but the header has 2"),
        "{err}"
    );
    p.write("open.csv", "participant,session\n\"01,a\n");
    let err = String::from_utf8_lossy(&p.run(&["run", "prep", "--params", "open.csv"]).stderr)
        .into_owned();
    assert!(
        err.contains("line 2: a quoted field is never closed"),
        "{err}"
    );
    let out = p.run(&["run", "prep", "--param", "participant=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("missing parameter session; the template needs participant, session"));
    let out = p.run(&["run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("typed queues defined: prep"));
    assert_eq!(
        p.run(&["run", "prep", "--params", "missing.csv"])
            .status
            .code(),
        Some(3)
    );
    assert!(
        p.json(&["list"]).as_array().unwrap().is_empty(),
        "nothing was submitted"
    );
}

#[test]
fn run_skips_rows_whose_key_has_a_job_unless_forced() {
    let p = Project::new();
    p.write(".workq/config.toml", PREP);
    p.write("s.csv", "participant,session\n01,a\n02,a\nbad,a\n");
    assert_eq!(
        p.run(&["run", "prep", "--params", "s.csv", "--wait"])
            .status
            .code(),
        Some(1)
    );
    let out = p.run(&["run", "prep", "--params", "s.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped 2 row(s)") && err.contains("already succeeded"),
        "{err}"
    );
    assert!(
        err.contains("submitted 1 job(s)"),
        "the failed row runs again: {err}"
    );
    let v = p.json(&["run", "prep", "--params", "s.csv"]);
    let reasons: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "the queued one is skipped too: {v}");
    assert!(
        reasons.iter().any(|r| r.contains("already queued")),
        "{reasons:?}"
    );
    let v = p.json(&["run", "prep", "--params", "s.csv", "--force"]);
    assert_eq!(
        v["submitted"].as_array().unwrap().len(),
        2,
        "--force re-runs the succeeded rows: {v}"
    );
    assert_eq!(
        v["skipped"].as_array().unwrap().len(),
        1,
        "a queued row is never doubled"
    );
}

#[test]
fn run_wait_leaves_no_worker_after_success_failure_and_sigint() {
    let p = Project::new();
    p.write(
        ".workq/config.toml",
        &format!("{PREP}\n[queues.slow]\ncommand = \"sleep {{secs}}\"\n"),
    );
    p.write("ok.csv", "participant,session\n01,a\n");
    assert_eq!(
        p.run(&["run", "prep", "--params", "ok.csv", "--wait"])
            .status
            .code(),
        Some(0)
    );
    assert!(
        worker_processes(&p).is_empty(),
        "{:?}",
        worker_processes(&p)
    );
    p.write("bad.csv", "participant,session\nbad,b\n");
    assert_eq!(
        p.run(&["run", "prep", "--params", "bad.csv", "--wait"])
            .status
            .code(),
        Some(1)
    );
    assert!(worker_processes(&p).is_empty());

    let child = p
        .cmd()
        .args(["run", "slow", "--param", "secs=60", "--wait"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p
        .json(&["list", "--state", "running"])
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        worker_processes(&p).is_empty(),
        "{:?}",
        worker_processes(&p)
    );
    let jobs = p.json(&["list", "-Q", "slow"]);
    assert_eq!(
        state_of(&jobs[0]),
        "queued",
        "interrupted, back in the queue: {jobs}"
    );

    // A running worker is reused instead of starting a pool; --no-start-workers fails fast.
    let out = p.run(&[
        "run",
        "slow",
        "--param",
        "secs=0",
        "--wait",
        "--no-start-workers",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workq up slow"));
    let _w = p.worker_with("keep", &["-Q", "prep"]);
    let out = p.run(&[
        "run",
        "prep",
        "--param",
        "participant=9",
        "--param",
        "session=z",
        "--wait",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("using running worker(s): keep"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn up_and_down_are_idempotent() {
    let p = Project::new();
    p.write(
        ".workq/config.toml",
        &format!("{PREP}\n[queues.other]\ncommand = \"true\"\nworkers = 1\n"),
    );
    let out = p.ok(&["up"]);
    assert!(
        out.contains("worker other started") && out.contains("worker prep started"),
        "{out}"
    );
    let (_, s) = (0, p.json(&["worker", "status", "prep"]));
    assert_eq!(
        (s["running"].as_bool(), s["slots"].as_u64()),
        (Some(true), Some(2)),
        "{s}"
    );
    let pid = s["pid"].clone();
    let out = p.ok(&["up"]);
    assert!(
        out.contains("pool prep is already up") && out.contains("pool other is already up"),
        "{out}"
    );
    assert_eq!(
        p.json(&["worker", "status", "prep"])["pid"],
        pid,
        "up twice starts nothing new"
    );
    let out = p.ok(&["up", "prep", "--force-new"]);
    assert!(out.contains("restarting (--force-new)"), "{out}");
    assert_ne!(p.json(&["worker", "status", "prep"])["pid"], pid);
    assert_eq!(p.run(&["up", "nope"]).status.code(), Some(3));
    p.ok(&["down", "-t", "5"]);
    assert!(worker_processes(&p).is_empty());
    let out = p.ok(&["down"]);
    assert!(out.contains("worker prep is not running"), "{out}");
}

/// A stand-in for docker, for what a real engine does not show (the exact invocation) or cannot
/// do on demand: logs every call, runs `run`'s command detached in its own session (as an engine
/// would, outside the job's process group and without its marker), and kills it on `stop`,
/// `kill` or `rm`. `version` fails while `state/down` exists. The real engines are tested in
/// `container.rs`.
pub(super) const FAKE_DOCKER: &str = r#"#!/bin/bash
dir="$(dirname "$0")/state"; mkdir -p "$dir"
printf '%s\n' "$*" >> "$dir/calls.log"
case "$1" in
  version) [ -e "$dir/down" ] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }; exit 0;;
  run)
    shift; name=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --rm|--init) shift;;
        --name) name="$2"; shift 2;;
        -v|-w|-e|--user|--network|--gpus) shift 2;;
        *) break;;
      esac
    done
    shift
    env -u WORKQ_JOB_ID -u WORKQ_ATTEMPT -u WORKQ_LEASE -u WORKQ_STORE_ID setsid "$@" &
    pid=$!
    echo "$pid" > "$dir/$name.pid"
    wait "$pid"; rc=$?
    rm -f "$dir/$name.pid"
    exit $rc;;
  stop|kill|rm)
    name="${@: -1}"
    [ -f "$dir/$name.pid" ] && kill -9 "$(cat "$dir/$name.pid")"
    exit 0;;
esac
"#;

const BOX: &str = r#"[queues.box]
command = "sleep {secs}"
mode = "container"
image = "example/tool:1.0"
env = { FOO = "bar baz" }
kill_grace = "1s"
container_user = "1000:1000"
container_args = ["--network", "none", "--gpus", "all"]

[queues.boxt]
command = "sleep {secs}"
mode = "container"
image = "example/tool:1.0"
timeout = "1s"
kill_grace = "1s"
"#;

#[test]
fn container_mode_invokes_the_runtime_exactly_and_stops_the_container_on_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.write(".workq/config.toml", BOX);
    p.write("bin/docker", FAKE_DOCKER);
    std::fs::set_permissions(
        p.path().join("bin/docker"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        p.path().join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let state = p.path().join("bin/state");
    let calls = || std::fs::read_to_string(state.join("calls.log")).unwrap_or_default();
    let run = |args: &[&str]| p.cmd().env("PATH", &path).args(args).output().unwrap();
    let container_pid = |job: i64| -> i32 {
        let f = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("-{job}-1.pid"))
            })
            .expect("container pid file");
        // The stand-in creates the file, then writes the pid: wait for the pid.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(pid) = std::fs::read_to_string(f.path())
                .unwrap_or_default()
                .trim()
                .parse()
            {
                return pid;
            }
            assert!(std::time::Instant::now() < deadline, "empty pid file");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };

    // Without a runtime on PATH, run says so. The machine may have a real docker in /usr/bin,
    // so PATH is a directory that holds nothing.
    let empty = p.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = p
        .cmd()
        .env("PATH", &empty)
        .args(["run", "box", "--param", "secs=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither docker nor podman is on PATH"));

    // The exact invocation: --rm, --init, a name from job and attempt, the cwd mounted at the same
    // path, the user, the job's env, the queue's own flags, the image, then the command.
    let out = run(&["run", "box", "--param", "secs=0", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cwd = p.path().display().to_string();
    let first = calls()
        .lines()
        .find(|l| l.starts_with("run "))
        .unwrap()
        .to_string();
    assert!(
        first.starts_with("run --rm --init --name workq-"),
        "{first}"
    );
    assert!(first.contains(&format!("-1-1 -v {cwd}:{cwd} -w {cwd} --user 1000:1000 -e FOO=bar baz -e WORKQ_ATTEMPT=1 -e WORKQ_JOB_ID=1 -e WORKQ_QUEUE=box --network none --gpus all example/tool:1.0 sleep 0")), "{first}");

    // A timeout stops the container itself, not only the client.
    let out = run(&["run", "boxt", "--param", "secs=300", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !calls().contains("stop ") {
        assert!(std::time::Instant::now() < deadline, "no stop: {}", calls());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stop = calls()
        .lines()
        .find(|l| l.starts_with("stop "))
        .map(str::to_string);
    assert!(
        stop.as_deref()
            .is_some_and(|l| l.starts_with("stop --time 1 workq-") && l.ends_with("-2-1")),
        "{}",
        calls()
    );
    super::lifecycle_wait_dead(container_pid(2));
    // Cancel, `worker stop` and a killed worker's leftovers are tested on the real engines
    // (container.rs), where the container must also be gone afterwards.
}
