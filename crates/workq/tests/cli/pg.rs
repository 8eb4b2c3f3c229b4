//! The command line and workers against PostgreSQL: a throwaway cluster for this test process.
//! Skipped with a loud line when the server binaries are missing; under CI=true a skip fails.

use std::time::{Duration, Instant};

use workq_store::pgtest;

use super::{state_of, wait_gone, Project, Worker};

fn cluster() -> Option<&'static std::sync::Mutex<pgtest::Cluster>> {
    match pgtest::shared() {
        Ok(c) => Some(c),
        Err(e) => {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "PostgreSQL tests cannot be skipped under CI=true: {e}"
            );
            eprintln!("\n!!!!! SKIPPING PostgreSQL command-line tests: {e} !!!!!\n");
            None
        }
    }
}

pub(super) fn fresh_db(name: &str) -> Option<String> {
    let c = cluster()?;
    let c = c.lock().unwrap_or_else(|p| p.into_inner());
    Some(
        c.create_db(&format!("{name}_{}", std::process::id()))
            .expect("create a database"),
    )
}

#[test]
fn pg_store_runs_jobs_and_names_connection_failures_without_the_password() {
    let Some(url) = fresh_db("cli") else { return };
    let p = Project::with_store(&url);
    let out = p.ok(&["submit", "--wait", "--", "echo", "hello from postgres"]);
    assert_eq!(out, "hello from postgres\n");
    let id = p.submit(&["--", "true"]);
    let mut w = p.worker("pgw", 2);
    p.wait_job(id, "succeeded", |j| state_of(j) == "succeeded");
    let s = p.json(&["status"]);
    assert_eq!(s["workers"][0]["name"], "pgw", "{s}");
    let doc = String::from_utf8_lossy(&p.run(&["doctor"]).stdout).into_owned();
    assert!(
        doc.contains("postgres store at postgres://workq@127.0.0.1:"),
        "{doc}"
    );
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit().success());

    // A missing database and a refused connection: exit 5, naming user, host and database,
    // never the password.
    let port = url
        .rsplit(':')
        .next()
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let bad = format!("postgres://workq:s3cret@127.0.0.1:{port}/no_such_db");
    let out = p
        .cmd()
        .env("WORKQ_STORE", &bad)
        .args(["list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("workq@127.0.0.1")
            && err.contains("no_such_db")
            && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let out = p
        .cmd()
        .env("WORKQ_STORE", "postgres://workq:s3cret@127.0.0.1:1/db")
        .args(["list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("127.0.0.1:1/db") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// The chaos run of the SQLite suite, on PostgreSQL with two "hosts": workers SIGKILLed and
/// restarted at random, the server restarted the hard way, and worker sessions terminated.
#[test]
fn pg_chaos_two_hosts_server_restart_and_terminated_sessions() {
    const JOBS: usize = 160;
    if cluster().is_none() {
        return;
    }
    // Its own cluster: restarting the shared one would break the tests running beside it.
    let mut own = pgtest::Cluster::start().expect("a private cluster");
    let url = own.create_db("chaos").expect("database");
    let p = Project::with_store(&url);
    let log = p.path().join("events.log");
    let file = p.path().join("jobs.txt");
    std::fs::write(&file, super::chaos_jobs(&log, JOBS)).unwrap();
    let ids: Vec<i64> = p
        .ok(&["submit", "--lines", file.to_str().unwrap()])
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), JOBS);
    let host = |i: usize| {
        if i.is_multiple_of(2) {
            "host-a"
        } else {
            "host-b"
        }
    };
    let start = |name: &str, i: usize| -> Worker {
        p.worker_env(
            name,
            &["-w", "2", "--stop-timeout", "2s"],
            &[("WORKQ_HOST", host(i))],
        )
    };
    let mut names: Vec<String> = (0..3).map(|i| format!("c{i}-0")).collect();
    let mut workers: Vec<Worker> = (0..3).map(|i| start(&names[i], i)).collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut kills, mut restarts, mut terminated) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    // The first round kills the worker running the first job, which runs until then.
    let mut victim = super::chaos_runner_of(&p, ids[0], &names);
    for round in 1.. {
        match round % 6 {
            2 if restarts < 2 => {
                own.restart_immediate().expect("restart");
                restarts += 1;
            }
            4 if terminated < 3 => {
                let mut admin =
                    postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
                let n: i64 = admin
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                         WHERE application_name = 'workq' AND datname = current_database()
                           AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .expect("terminate")
                    .get(0);
                terminated += n;
            }
            _ if kills < 8 => {
                workers[victim].signal(libc::SIGKILL);
                workers[victim].wait_exit();
                kills += 1;
                names[victim] = format!("c{victim}-{kills}");
                workers[victim] = start(&names[victim], victim);
            }
            _ => {}
        }
        if kills == 8 && restarts == 2 && terminated >= 3 {
            break;
        }
        // The next round once a few more jobs have started; a kill is of a worker running one
        // if any does.
        let more = 1 + (rand() % 6) as usize;
        if !super::chaos_progress(&p, &log, more, deadline) {
            break;
        }
        victim = super::chaos_pick(&super::chaos_busy(&p, &names), names.len(), rand());
    }
    let out = p.run(&["wait", "--all", "--timeout", "120s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lost_total = super::check_chaos_run(&p, &ids, &log);
    eprintln!(
        "pg chaos: {kills} kills, {restarts} server restarts, {terminated} sessions terminated, {lost_total} lost attempts re-run, {JOBS} jobs each succeeded once"
    );
}

#[test]
fn store_migrate_copies_a_sqlite_store_into_postgres() {
    let Some(url) = fresh_db("migrate") else {
        return;
    };
    let p = Project::new();
    let ok = p.submit(&["--label", "kind=good", "--", "true"]);
    let bad = p.submit(&["--", "sh", "-c", "exit 3"]);
    let mut w = p.worker("old", 1);
    p.wait_job(bad, "failed", |j| state_of(j) == "failed");
    w.signal(libc::SIGTERM);
    w.wait_exit();
    let first = p.submit(&["--", "true"]);
    let after = p.submit(&["--after", &first.to_string(), "--", "echo", "after"]);

    let v = p.json(&["store", "migrate", "--to", &url]);
    assert_eq!(v["copied"]["jobs"], 4, "{v}");
    assert_eq!(v["copied"]["attempts"], 2, "{v}");
    assert_eq!(v["copied"]["workers"], 1, "{v}");
    assert_eq!(v["copied"]["deps"], 1, "{v}");
    let again = p.run(&["store", "migrate", "--to", &url]);
    assert_eq!(
        again.status.code(),
        Some(4),
        "a non-empty target is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));
    p.ok(&["store", "migrate", "--to", &url, "--replace"]);

    let pg = Project::with_store(&url);
    let jobs = pg.json(&["list"]);
    assert_eq!(jobs.as_array().unwrap().len(), 4, "{jobs}");
    assert_eq!(state_of(&pg.job(ok)), "succeeded");
    let b = pg.job(bad);
    assert_eq!((state_of(&b), b["exit_code"].as_i64()), ("failed", Some(3)));
    assert_eq!(b["attempts"][0]["outcome"], "failed");
    assert_eq!(pg.json(&["list", "--label", "kind=good"])[0]["id"], ok);
    let new = pg.submit(&["--", "true"]);
    assert!(new > after, "ids continue after the copied ones");
    let _w = pg.worker("new", 2);
    pg.wait_job(after, "succeeded", |j| state_of(j) == "succeeded");
    pg.wait_job(new, "succeeded", |j| state_of(j) == "succeeded");
}

/// A worker that cannot reach a shared store kills its own jobs before other hosts could
/// rescue them (self-fencing), and carries on when the store is back.
#[test]
fn a_worker_cut_off_from_postgres_fences_its_jobs_then_recovers() {
    if cluster().is_none() {
        return;
    }
    let mut own = pgtest::Cluster::start().expect("a private cluster");
    let url = own.create_db("fence").expect("database");
    let p = Project::with_store(&url);
    let mut w = p.worker_env(
        "fenced",
        &["--heartbeat", "300ms"],
        &[("WORKQ_HEARTBEAT_TTL", "6s")],
    );
    let id = p.submit(&["--shell", "--", "sleep 300 & wait"]);
    p.wait_job(id, "running", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    assert!(!super::marked_processes(p.path(), id, 1).is_empty());
    own.stop_immediate();
    wait_gone(p.path(), id, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !w.log_text().contains("cannot reach the store") {
        assert!(Instant::now() < deadline, "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The worker fenced by its own measure of the silence, which must be under the TTL.
    let log = w.log_text();
    let silence = log
        .split("cannot reach the store for ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|d| workq_core::parse_duration(d).ok())
        .expect("the fencing line says how long the store was silent");
    assert!(
        silence < Duration::from_secs(6),
        "fenced after {silence:?}, past the TTL: {log}"
    );
    own.start_again().expect("start again");
    let j = p.wait_job(id, "running again on attempt 2", |j| {
        j["attempt"] == 2 && state_of(j) == "running"
    });
    assert_eq!(j["attempts"][0]["outcome"], "interrupted", "{j}");
    assert!(
        w.log_text().contains("the store answers again"),
        "{}",
        w.log_text()
    );
    p.ok(&["cancel", &id.to_string()]);
    w.signal(libc::SIGTERM);
    w.wait_exit();
}

/// A job row damaged by hand (a NULL where the store needs a value) does not take the worker
/// down: the job fails alone with a reason naming the table and the column, the worker keeps
/// running the jobs behind it, and commands that read the row say what is wrong (exit 5).
#[test]
fn pg_worker_survives_an_unreadable_row_and_reports_it() {
    let Some(url) = fresh_db("badrow") else {
        return;
    };
    let p = Project::with_store(&url);
    let bad = p.submit(&["--", "true"]);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    c.batch_execute(&format!(
        "ALTER TABLE workq.jobs ALTER COLUMN kill_grace_ms DROP NOT NULL;
         UPDATE workq.jobs SET kill_grace_ms = NULL WHERE id = {bad};"
    ))
    .expect("damage the row");
    let out = p.run(&["show", &bad.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("table jobs") && err.contains("kill_grace_ms") && err.contains("NULL"),
        "{err}"
    );

    let mut w = p.worker("pgbad", 1);
    let good = p.submit(&["--", "true"]);
    p.wait_job(good, "succeeded", |j| state_of(j) == "succeeded");
    assert!(
        w.child.try_wait().expect("try_wait").is_none(),
        "the worker survived the unreadable row"
    );
    // Repaired, the job shows why it failed.
    c.batch_execute(&format!(
        "UPDATE workq.jobs SET kill_grace_ms = 1000 WHERE id = {bad}"
    ))
    .expect("repair the row");
    let job = p.json(&["show", &bad.to_string()]);
    assert_eq!(state_of(&job), "failed", "{job}");
    let why = job["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("table jobs") && why.contains("kill_grace_ms"),
        "{job}"
    );
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit().success());
}

/// A worker that was frozen past the TTL (SIGSTOP, as a long GC pause or a suspended VM would)
/// is declared dead by another host, which re-runs its job. Thawed, it learns from its next
/// heartbeat that its row has ended, stops what it still runs, registers again under a new id
/// and takes new work; nothing more runs under the old id.
#[test]
fn a_worker_declared_dead_while_frozen_rejoins_under_a_new_id() {
    let Some(url) = fresh_db("rejoin") else {
        return;
    };
    let p = Project::with_store(&url);
    let host = |h: &'static str| [("WORKQ_HOST", h), ("WORKQ_HEARTBEAT_TTL", "3s")];
    let a = p.worker_env("frozen", &["--heartbeat", "200ms"], &host("host-a"));
    let id = p.submit(&["--shell", "--", "sleep 300 & wait"]);
    let j = p.wait_job(id, "running on the first worker", |j| {
        state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
    });
    assert_eq!(j["worker"], "frozen", "{j}");
    let old_id = p.json(&["workers", "list"])[0]["id"]
        .as_i64()
        .expect("worker id");
    a.signal(libc::SIGSTOP);
    let _b = p.worker_env("other", &["--heartbeat", "200ms"], &host("host-b"));
    let j = p.wait_job(id, "rescued and running on the other host", |j| {
        j["attempt"] == 2 && state_of(j) == "running" && j["worker"] == "other"
    });
    assert_eq!(j["attempts"][0]["outcome"], "lost", "{j}");
    // (Its copy is already gone here: the rescuer's sweep kills leftovers it can see in /proc,
    // and both "hosts" share this machine's. On separate machines the thawed worker kills it.)
    a.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.log_text().contains("rejoined as worker id") {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_gone(p.path(), id, 1);
    let log = a.log_text();
    assert!(
        log.contains(&format!("worker id {old_id} has ended")),
        "{log}"
    );
    let ws = p.json(&["workers", "list"]);
    let frozen: Vec<&serde_json::Value> = ws
        .as_array()
        .expect("workers array")
        .iter()
        .filter(|w| w["name"] == "frozen")
        .collect();
    assert_eq!(frozen.len(), 1, "{ws}");
    assert_ne!(frozen[0]["id"].as_i64(), Some(old_id), "{ws}");
    // Attempt 2 is untouched, and new work goes to the rejoined worker too.
    assert_eq!(state_of(&p.job(id)), "running");
    p.ok(&["worker", "pause", "other"]);
    let next = p.submit(&["--", "true"]);
    let j = p.wait_job(next, "succeeded", |j| state_of(j) == "succeeded");
    assert_eq!(j["worker"], "frozen", "{j}");
    assert_eq!(j["attempts"].as_array().map(Vec::len), Some(1), "{j}");
    p.ok(&["cancel", &id.to_string()]);
}

/// The same for a daemon: its monitor follows the worker to its new registry row, so the PID
/// file names the live row (what `worker stop` and `worker status` read) and the monitor's hang
/// check watches the right heartbeat.
#[test]
fn a_daemon_that_rejoins_is_followed_by_its_monitor_and_pid_file() {
    let Some(url) = fresh_db("rejoin_daemon") else {
        return;
    };
    let p = Project::with_store(&url);
    let host = |h: &'static str| [("WORKQ_HOST", h), ("WORKQ_HEARTBEAT_TTL", "3s")];
    let out = p
        .cmd()
        .envs(host("host-a"))
        .args([
            "--json",
            "worker",
            "start",
            "frozen",
            "-d",
            "--heartbeat",
            "200ms",
        ])
        .output()
        .expect("start the daemon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid_file = p.state().join("run").join("frozen.pid");
    let info = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&pid_file).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    };
    let first = info();
    let (pid, old_id) = (
        first["pid"].as_i64().expect("pid") as i32,
        first["worker_id"].as_i64().expect("worker id"),
    );
    let id = p.submit(&["--shell", "--", "sleep 300 & wait"]);
    p.wait_job(id, "running on the daemon", |j| {
        state_of(j) == "running" && j["worker"] == "frozen"
    });
    // SAFETY: signals to the daemon's worker process, which this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let _b = p.worker_env("other", &["--heartbeat", "200ms"], &host("host-b"));
    p.wait_job(id, "rescued by the other host", |j| {
        j["attempt"] == 2 && j["worker"] == "other"
    });
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_id = loop {
        let now = info();
        if let Some(n) = now["worker_id"].as_i64().filter(|n| *n != old_id) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the PID file kept id {old_id}: {now}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        info()["pid"].as_i64(),
        Some(i64::from(pid)),
        "the same process"
    );
    let ws = p.json(&["workers", "list"]);
    assert!(
        ws.as_array()
            .expect("workers")
            .iter()
            .any(|w| w["name"] == "frozen" && w["id"] == new_id),
        "{ws}"
    );
    p.ok(&["cancel", &id.to_string()]);
    let stop = p.run(&["worker", "stop", "frozen"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
}
