//! `workq doctor`: everything that can be wrong with a project's queue, each with its fix.

use serde_json::json;
use workq_runtime::{control, pidfile, procinfo};

use crate::context::Context;
use crate::error::{CliError, CmdResult};

/// Diagnose problems
#[derive(clap::Args, Debug)]
#[command(after_help = "Exit status: 0 when nothing is wrong, 1 when any problem was found.")]
pub struct Args {}

struct Finding {
    check: &'static str,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn problem(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access() reads a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Runs `workq doctor`; returns its exit code.
pub fn run(ctx: &Context, _a: Args) -> CmdResult {
    let mut f: Vec<Finding> = Vec::new();
    check_state_dir(ctx, &mut f);
    check_disk(ctx, &mut f);
    check_containers(ctx, &mut f);
    if !ctx.store_exists() {
        f.push(ok(
            "store",
            format!(
                "no store at {} yet; the first submit creates it",
                ctx.db_path.display()
            ),
        ));
        return finish(ctx, f);
    }
    let client = match ctx.client() {
        Ok(c) => c,
        Err(e) => {
            f.push(problem(
                "store",
                e.message(),
                e.hint().unwrap_or("see the message above"),
            ));
            return finish(ctx, f);
        }
    };
    let store = client.store();
    check_store(store, ctx.pg_url.is_some(), &mut f);
    check_pid_files(store, &client.run_dir(), &mut f)?;
    check_workers(store, &mut f)?;
    finish(ctx, f)
}

/// The state dir exists (or can be created) and is writable, with its `run` and `logs`.
fn check_state_dir(ctx: &Context, f: &mut Vec<Finding>) {
    let dir = &ctx.state_dir;
    if !dir.exists() {
        f.push(ok(
            "state_dir",
            format!(
                "{} does not exist yet; the first submit creates it",
                dir.display()
            ),
        ));
    } else if !dir.is_dir() {
        f.push(problem(
            "state_dir",
            format!("{} is not a directory", dir.display()),
            "move it away and run: workq init   (or pass --state-dir)",
        ));
    } else if !writable(dir) {
        f.push(problem(
            "state_dir",
            format!("{} is not writable by this user", dir.display()),
            format!("chmod u+rwx {}   (or run as its owner)", dir.display()),
        ));
    } else {
        f.push(ok("state_dir", format!("{} is writable", dir.display())));
        for sub in ["run", "logs"] {
            let p = dir.join(sub);
            if p.exists() && !writable(&p) {
                f.push(problem(
                    "state_dir",
                    format!("{} is not writable", p.display()),
                    format!("chmod u+rwx {}", p.display()),
                ));
            }
        }
    }
}

/// Free space on the state dir's filesystem.
fn check_disk(ctx: &Context, f: &mut Vec<Finding>) {
    let dir = &ctx.state_dir;
    let probe_dir = if dir.exists() {
        dir.as_path()
    } else {
        dir.parent().unwrap_or(dir.as_path())
    };
    if let Some((free, total)) = procinfo::disk_space(probe_dir) {
        let mib = free / (1024 * 1024);
        if mib < 100 {
            f.push(problem(
                "disk",
                format!("only {mib} MiB free of {} MiB", total / (1024 * 1024)),
                "free some space (workq logs grow under .workq/logs)",
            ));
        } else {
            f.push(ok(
                "disk",
                format!("{mib} MiB free of {} MiB", total / (1024 * 1024)),
            ));
        }
    }
}

/// The engine of every queue that runs its jobs in containers answers.
fn check_containers(ctx: &Context, f: &mut Vec<Finding>) {
    for q in ctx.config.queue_names() {
        if ctx.config.str(&format!("queues.{q}.mode")).as_deref() != Some("container") {
            continue;
        }
        match crate::container::container_for(ctx, &q) {
            Ok(Some(c)) => match workq_runtime::container::probe(&c.runtime) {
                Ok(()) => f.push(ok(
                    "container",
                    format!("queue {q}: {} answers", c.runtime),
                )),
                Err(why) => f.push(problem(
                    "container",
                    format!("queue {q}: the {} engine is unreachable: {why}", c.runtime),
                    format!(
                        "start it (sudo systemctl start {0}), or check that this user may use it ({0} version)",
                        c.runtime
                    ),
                )),
            },
            Ok(None) => {}
            Err(e) => f.push(problem(
                "container",
                format!("queue {q}: {}", e.message()),
                e.hint().unwrap_or("see the message"),
            )),
        }
    }
}

/// The store opens; then what matters for its backend: a SQLite file's integrity and journal,
/// a PostgreSQL server's version, connections and clock (ARCHITECTURE.md §4.11, §4.12).
fn check_store(store: &dyn workq_store::Store, pg: bool, f: &mut Vec<Finding>) {
    let d = match store.diagnose() {
        Ok(d) => d,
        Err(e) => {
            let fix = if pg {
                "check that the server runs and that the URL (--store, WORKQ_STORE or [store] url) names it"
            } else {
                "check the file and its permissions; see `workq --help` for --store"
            };
            f.push(problem("store", e.to_string(), fix));
            return;
        }
    };
    f.push(ok(
        "store",
        format!("{} store at {} opens", d.backend, d.location),
    ));
    match &d.server {
        Some(server) => check_server(&d, server, f),
        None => check_sqlite_file(&d, f),
    }
    f.push(ok("schema", format!("schema version {}", d.schema_version)));
}

/// A SQLite file: `PRAGMA quick_check`, and a journal mode safe for its filesystem.
fn check_sqlite_file(d: &workq_store::Diagnosis, f: &mut Vec<Finding>) {
    if d.integrity == "ok" {
        f.push(ok("integrity", "PRAGMA quick_check: ok"));
    } else {
        f.push(problem(
            "integrity",
            format!("PRAGMA quick_check found: {}", d.integrity),
            format!(
                "stop all workers, copy {} aside, then: sqlite3 {} '.recover' | sqlite3 recovered.db",
                d.location, d.location
            ),
        ));
    }
    let mode = d.journal_mode.clone().unwrap_or_else(|| "-".into());
    if d.network_fs && mode == "wal" {
        f.push(problem(
            "journal",
            "journal mode wal on a network filesystem: readers on other hosts can corrupt it",
            "put the state dir on a local disk (--state-dir), or use PostgreSQL for several hosts",
        ));
    } else {
        f.push(ok(
            "journal",
            format!(
                "journal mode {mode} on a {} filesystem",
                if d.network_fs { "network" } else { "local" }
            ),
        ));
    }
}

/// How far this host's clock may be from the server's before hosts misjudge each other's
/// heartbeats: well inside the 20 s between self-fencing and the heartbeat TTL (§4.4).
const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// A PostgreSQL server: it answers, has connections to spare, and keeps this host's time.
fn check_server(d: &workq_store::Diagnosis, server: &str, f: &mut Vec<Finding>) {
    f.push(ok("server", format!("{server} answers")));
    if let Some((used, max)) = d.connections {
        let detail = format!("{used} of {max} connections in use");
        if max > 0 && used * 10 >= max * 9 {
            f.push(problem(
                "connections",
                detail,
                "raise max_connections on the server, or stop idle clients (each worker holds two connections: its store and its LISTEN)",
            ));
        } else {
            f.push(ok("connections", detail));
        }
    }
    if let Some(skew) = d.clock_skew_ms {
        let off =
            workq_core::format_duration(std::time::Duration::from_millis(skew.unsigned_abs()));
        if skew.abs() > MAX_CLOCK_SKEW_MS {
            let side = if skew > 0 { "behind" } else { "ahead of" };
            f.push(problem(
                "clock",
                format!("this host's clock is {off} {side} the server's: hosts judge each other's heartbeats by their own clocks"),
                "synchronise it (timedatectl set-ntp true, or chrony/ntpd), here and on every worker host",
            ));
        } else {
            f.push(ok(
                "clock",
                format!("this host's clock is within {off} of the server's"),
            ));
        }
    }
}

/// PID files whose worker is gone, or that name a process that may not be ours.
fn check_pid_files(
    store: &dyn workq_store::Store,
    run_dir: &std::path::Path,
    f: &mut Vec<Finding>,
) -> Result<(), CliError> {
    let mut stale = 0;
    for (name, path) in pidfile::list(run_dir) {
        match control::find(store, run_dir, &name)? {
            control::Found::NotRunning(Some(note)) => {
                stale += 1;
                f.push(problem("pid_files", note, "workq workers cleanup"));
            }
            control::Found::Unsure(note) => {
                stale += 1;
                f.push(problem(
                    "pid_files",
                    note,
                    format!("check who owns it, then remove it: rm {}", path.display()),
                ));
            }
            _ => {}
        }
    }
    if stale == 0 {
        f.push(ok("pid_files", "no stale PID files"));
    }
    Ok(())
}

/// Workers registered as live whose process died, and workers of this host that crash-loop.
fn check_workers(store: &dyn workq_store::Store, f: &mut Vec<Finding>) -> Result<(), CliError> {
    let host = procinfo::hostname();
    let boot = procinfo::boot_id();
    let mut dead = 0;
    for w in store.workers(true)? {
        if w.state.is_live() {
            if let Some(why) = procinfo::worker_death(&w, &host, &boot, store.now()) {
                dead += 1;
                f.push(problem(
                    "workers",
                    format!(
                        "worker {} (id {}) is dead ({why}) with {} running job(s) not yet rescued",
                        w.name, w.id, w.running_jobs
                    ),
                    "workq workers cleanup",
                ));
            }
        } else if w.state == workq_core::WorkerState::CrashLooping && w.host == host {
            let latest = store
                .workers(true)?
                .iter()
                .filter(|o| o.name == w.name && o.host == w.host)
                .map(|o| o.id)
                .max()
                == Some(w.id);
            if latest {
                dead += 1;
                f.push(problem(
                    "workers",
                    format!(
                        "worker {} is crash-looping: {}",
                        w.name,
                        w.stop_reason.as_deref().unwrap_or("")
                    ),
                    format!(
                        "read its log (workq worker status {0}), fix the cause, then: workq worker start {0} -d",
                        w.name
                    ),
                ));
            }
        }
    }
    if dead == 0 {
        f.push(ok("workers", "no dead or crash-looping workers"));
    }
    Ok(())
}

fn finish(ctx: &Context, f: Vec<Finding>) -> CmdResult {
    let problems = f.iter().filter(|x| !x.ok).count();
    if ctx.json {
        let v: Vec<_> = f
            .iter()
            .map(|x| json!({"check": x.check, "ok": x.ok, "detail": x.detail, "fix": x.fix}))
            .collect();
        println!("{}", json!({"problems": problems, "checks": v}));
    } else {
        for x in &f {
            let tag = if x.ok {
                ctx.paint("ok     ", "32")
            } else {
                ctx.paint("PROBLEM", "31")
            };
            println!("{tag} {:<10} {}", x.check, x.detail);
            if let Some(fix) = &x.fix {
                println!("        {:<10} fix: {fix}", "");
            }
        }
        if !ctx.quiet {
            println!(
                "{}",
                if problems == 0 {
                    "no problems found".to_string()
                } else {
                    format!("{problems} problem(s) found")
                }
            );
        }
    }
    Ok(if problems == 0 { 0 } else { 1 })
}
