//! What a new user tripped over (issue 12): store URLs and where they came from, the help
//! texts, worker names, container engine failures, `status --watch`, `doctor` per backend and
//! temporary workers in `workers list`.

use super::{state_of, Project};

fn write(p: &Project, rel: &str, text: &str) {
    let path = p.path().join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A bad store URL names the setting it came from, and a host that cannot be resolved says so,
/// with the fix for that setting (`unset WORKQ_STORE` when it came from the environment).
#[test]
fn store_url_errors_name_where_the_url_came_from() {
    let p = Project::new();
    // `.invalid` never resolves (RFC 2606).
    let host = "postgres://workq:s3cret@db.example.invalid:5432/workq";
    let out = p
        .cmd()
        .env("WORKQ_STORE", host)
        .args(["list"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("db.example.invalid cannot be resolved") && err.contains("unset WORKQ_STORE"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let out = p.run(&["--store", host, "list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("came from --store") && !err.contains("unset"),
        "{err}"
    );
    assert!(
        !p.state().exists(),
        "a store that cannot be reached leaves no state dir"
    );

    // An unknown scheme is a usage error naming the flag, or the config key with file and line.
    let out = p.run(&["--store", "mysql://x/y", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--store \"mysql://x/y\""),
        "{}",
        stderr(&out)
    );
    write(
        &p,
        ".workq/config.toml",
        "[store]\nurl = \"mysql://me:pw@x/y\"\n",
    );
    let out = p.run(&["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("store.url (") && err.contains("config.toml:2") && !err.contains("--store"),
        "{err}"
    );
    assert!(!err.contains("pw@"), "{err}");

    // A postgres:// URL in the config is used like --store: here it cannot be resolved, and the
    // hint points at the config file.
    write(
        &p,
        ".workq/config.toml",
        &format!("[store]\nurl = \"{host}\"\n"),
    );
    let out = p.run(&["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("cannot be resolved")
            && err.contains("[store]")
            && err.contains("config.toml"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// `[store] url = "postgres://…"` in the config works like `--store` and `WORKQ_STORE`, for the
/// command and for the workers it starts.
#[test]
fn a_postgres_url_in_the_config_is_the_store() {
    let Some(url) = super::pg::fresh_db("cfgurl") else {
        return;
    };
    let p = Project::new();
    write(
        &p,
        ".workq/config.toml",
        &format!("[store]\nurl = \"{url}\"\n"),
    );
    let out = p.ok(&["submit", "--wait", "--", "echo", "from the config's store"]);
    assert_eq!(out, "from the config's store\n");
    assert!(
        !p.state().join("workq.db").exists(),
        "no SQLite store was made"
    );
    let pg = Project::with_store(&url);
    let jobs = pg.json(&["list"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(state_of(&jobs[0]), "succeeded");
    let v = p.json(&["config", "show", "--sources"]);
    let source = v["settings"]["store.url"]["source"].as_str().unwrap_or("");
    assert!(source.contains("config.toml:2"), "{v}");
}

/// The stand-in `docker` of the container tests on PATH. Returns that PATH and the file that
/// logs its calls.
fn fake_docker(p: &Project) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    write(p, "bin/docker", super::config::FAKE_DOCKER);
    let path = p.path().join("bin/docker");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        p.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, p.path().join("bin/state/calls.log"))
}

const BOXES: &str = r#"[queues.box]
mode = "container"
image = "example/tool:1.0"
"#;

/// `submit -Q` to a container-mode queue runs the command in the queue's container, as `run`
/// does, as the submitter; a job run directly keeps its own 125 as a plain status (the real
/// engines' failures are tested in container.rs).
#[test]
fn submit_runs_in_the_queues_container_and_a_direct_125_is_the_jobs_own() {
    let p = Project::new();
    write(&p, ".workq/config.toml", BOXES);
    let (path, calls) = fake_docker(&p);
    let run = |args: &[&str]| p.cmd().env("PATH", &path).args(args).output().unwrap();

    let out = run(&[
        "submit",
        "-Q",
        "box",
        "--wait",
        "--",
        "echo",
        "hi from the box",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from the box\n");
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    let cwd = p.path().display().to_string();
    // SAFETY: no memory is touched.
    let me = unsafe { format!("{}:{}", libc::geteuid(), libc::getegid()) };
    assert!(
        log.lines().any(|l| l.starts_with("run --rm --init --name workq-")
            && l.ends_with(&format!(
                "-1-1 -v {cwd}:{cwd} -w {cwd} --user {me} -e WORKQ_ATTEMPT=1 -e WORKQ_JOB_ID=1 -e WORKQ_QUEUE=box example/tool:1.0 echo hi from the box"
            ))),
        "{log}"
    );

    // The same status from a job run directly is its own.
    let out = run(&[
        "submit",
        "--wait",
        "--shell",
        "--",
        "echo 'Error: mine' >&2; exit 125",
    ]);
    assert_eq!(out.status.code(), Some(125));
    let j = p.job(2);
    assert_eq!(j["attempts"][0]["error"], "exited with status 125");
    assert_eq!(j["attempts"][0]["outcome"], "failed");
}

/// Names and ids of a worker object or array: what stays the same between two calls (ages,
/// process figures and busy/idle move: the worker may finish its job between them).
fn identity(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(a) => a.into_iter().map(identity).collect(),
        serde_json::Value::Object(mut o) => {
            o.retain(|k, _| ["name", "id"].contains(&k.as_str()));
            serde_json::Value::Object(o)
        }
        other => other,
    }
}

/// `worker list`, `worker cleanup` and `workers status` are what they would be under the other
/// group, rather than "unrecognized subcommand".
#[test]
fn worker_and_workers_accept_each_others_subcommands() {
    let p = Project::new();
    p.submit(&["--", "true"]);
    let mut w = p.worker("aliased", 1);
    for (alias, real) in [
        (&["worker", "list"][..], &["workers", "list"][..]),
        (&["worker", "list", "--all"], &["workers", "list", "--all"]),
        (
            &["workers", "status", "aliased"],
            &["worker", "status", "aliased"],
        ),
        (&["workers", "status"], &["worker", "status"]),
    ] {
        let shown = |args: &[&str]| {
            let out = p.run(&[&["--json"], args].concat());
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            identity(serde_json::from_slice(&out.stdout).unwrap())
        };
        let real_view = shown(real);
        assert!(
            real_view.to_string().contains("\"aliased\""),
            "{real:?}: {real_view}"
        );
        assert_eq!(shown(alias), real_view, "{alias:?}");
    }
    let out = p.run(&["worker", "cleanup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit().success());
}

/// `worker stop` of a name this host never had is "not found" with the names it knows; a worker
/// that has stopped stops again without complaint.
#[test]
fn worker_stop_of_a_name_never_seen_is_not_found() {
    let p = Project::new();
    let out = p.run(&["worker", "stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no worker named nosuch on this host"),
        "{}",
        stderr(&out)
    );

    p.submit(&["--", "true"]);
    let mut w = p.worker("real", 1);
    let out = p.run(&["worker", "stop", "nosuch"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("error: no worker named nosuch on this host")
            && err.contains("hint: workers known on this host: real"),
        "{err}"
    );
    p.ok(&["worker", "stop", "real"]);
    assert!(w.wait_exit().success());
    let out = p.ok(&["worker", "stop", "real"]);
    assert!(out.contains("not running"), "{out}");
    let v = p.json(&["worker", "stop", "real"]);
    assert_eq!(v[0]["result"], "not_running", "{v}");
}

/// `status --watch` in a pipe: each frame starts with a line carrying the local time, frames are
/// separated by a blank line, and no screen codes are written.
#[test]
fn status_watch_in_a_pipe_heads_each_frame_with_the_time() {
    use std::io::BufRead;
    let p = Project::new();
    p.submit(&["--", "true"]);
    let mut child = p
        .cmd()
        .args(["status", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Three frame headings mean two full frames with their separators.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut lines: Vec<String> = Vec::new();
    while lines
        .iter()
        .filter(|l| l.starts_with("workq status at "))
        .count()
        < 3
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(e) => panic!("status --watch stopped drawing ({e}): {lines:?}"),
        }
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert!(child.wait().unwrap().success());
    let text = lines.join("\n");
    assert!(!text.contains('\x1b'), "screen codes in a pipe: {text:?}");
    let frames: Vec<&str> = text.split("\n\n").collect();
    assert!(frames.len() >= 3, "{text}");
    for frame in &frames[..2] {
        let mut rows = frame.lines();
        let heading = rows.next().unwrap_or("");
        let time = heading.trim_start_matches("workq status at ");
        // YYYY-MM-DD HH:MM:SS, local time.
        let shape: String = time
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99 99:99:99", "{heading:?} in {text}");
        assert!(
            rows.any(|r| r.starts_with("default\t")),
            "no queue row in {frame:?}"
        );
    }
}

/// The temporary workers of `submit --wait` (one per command) stay out of `workers list` once
/// they ended; `--all` still shows them.
#[test]
fn workers_list_leaves_out_ended_temporary_workers_unless_all() {
    let p = Project::new();
    p.ok(&["submit", "--wait", "--", "true"]);
    p.ok(&["submit", "--wait", "--", "true"]);
    let mut w = p.worker("kept", 1);
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit().success());
    let names = |args: &[&str]| -> Vec<String> {
        let v = p.json(args);
        let mut n: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["name"].as_str().map(str::to_string))
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&["workers", "list"]), ["kept"]);
    let all = names(&["workers", "list", "--all"]);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        all.iter().filter(|n| n.starts_with("temp-")).count(),
        2,
        "{all:?}"
    );
}

/// The checks `doctor --json` made, by name, with their details.
fn doctor_checks(p: &Project) -> Vec<(String, bool, String)> {
    let out = p.run(&["--json", "doctor"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", stderr(&out)));
    v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["check"].as_str().unwrap_or("").to_string(),
                c["ok"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn detail<'a>(
    checks: &'a [(String, bool, String)],
    name: &str,
) -> Option<&'a (String, bool, String)> {
    checks.iter().find(|c| c.0 == name)
}

/// `doctor` checks what its backend has: a SQLite file's integrity and journal, a PostgreSQL
/// server's version, connections and clock, and never the other's.
#[test]
fn doctor_checks_what_each_backend_has() {
    let p = Project::new();
    p.submit(&["--", "true"]);
    let checks = doctor_checks(&p);
    assert!(checks.iter().all(|c| c.1), "{checks:?}");
    assert!(detail(&checks, "integrity").is_some_and(|c| c.2.contains("PRAGMA quick_check: ok")));
    assert!(detail(&checks, "journal").is_some_and(|c| c.2.contains("journal mode wal")));
    for absent in ["server", "connections", "clock"] {
        assert!(detail(&checks, absent).is_none(), "{absent}: {checks:?}");
    }

    let Some(url) = super::pg::fresh_db("doctor") else {
        return;
    };
    let pg = Project::with_store(&url);
    pg.submit(&["--", "true"]);
    let checks = doctor_checks(&pg);
    assert!(checks.iter().all(|c| c.1), "{checks:?}");
    let has = |name: &str, text: &str| detail(&checks, name).is_some_and(|c| c.2.contains(text));
    assert!(
        has("store", "postgres store at postgres://workq@127.0.0.1:"),
        "{checks:?}"
    );
    assert!(has("server", "PostgreSQL "), "{checks:?}");
    assert!(has("connections", " connections in use"), "{checks:?}");
    assert!(has("clock", "within"), "{checks:?}");
    assert!(has("schema", "schema version "), "{checks:?}");
    for absent in ["integrity", "journal"] {
        assert!(detail(&checks, absent).is_none(), "{absent}: {checks:?}");
    }
    let text = String::from_utf8_lossy(&pg.run(&["doctor"]).stdout).into_owned();
    assert!(
        !text.contains("PRAGMA") && !text.contains("WAL") && !text.contains("wal"),
        "{text}"
    );
}
