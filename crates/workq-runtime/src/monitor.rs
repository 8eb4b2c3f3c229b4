//! The monitor: the small parent of a daemonized worker. It owns the PID file, restarts the
//! worker when it dies unexpectedly or hangs (heartbeat older than `hung_after` while its
//! process lives), with exponential backoff (1 s doubling to 60 s) and a limit of
//! `max_restarts` per `restart_window`; past the limit it marks the worker `crash-looping` and
//! gives up. SIGTERM/SIGINT/SIGHUP stop the worker gracefully and end the monitor.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use workq_core::{format_duration, WorkerId};
use workq_store::Store;

use crate::pidfile::{self, AcquireError, PidFile, PidInfo, Probe};
use crate::ready::{self, Report};
use crate::{doorbell, logger, procinfo, rescue, signals, spawn, Level, WorkerSettings};

enum Ev {
    Signal(libc::c_int),
    Exited(u32, Option<ExitStatus>),
    Report(u32, Option<Report>),
}

struct Current {
    generation: u32,
    pid: i32,
    start_time: u64,
    worker_id: Option<WorkerId>,
    started_at: String,
}

/// Runs the monitor of `settings.name` until the worker is stopped or crash-loops. Returns
/// the process exit code. `ready` is the launcher's readiness pipe.
pub fn run_monitor(
    store: &dyn Store,
    settings: &WorkerSettings,
    exe: &Path,
    global_args: &[OsString],
    run_dir: &Path,
    mut ready: Option<File>,
) -> u8 {
    let log_path = settings.log_file.clone();
    let level = settings.log_level();
    let say = |lvl: Level, msg: std::fmt::Arguments<'_>| {
        if lvl <= level {
            logger::append_line(&log_path, lvl, format_args!("monitor: {msg}"));
        }
    };
    let fail = |ready: &mut Option<File>, code: u8, message: String| -> u8 {
        say(Level::Error, format_args!("{message}"));
        if let Some(w) = ready.as_mut() {
            ready::send(w, &Report::Error { code, message });
        }
        code
    };

    let pid_path = pidfile::path_for(run_dir, &settings.name);
    let mut stale_notes = Vec::new();
    let mut pid_file = match PidFile::acquire(&pid_path, &mut |s| stale_notes.push(s.to_string())) {
        Ok(f) => f,
        Err(AcquireError::Running(probe)) => {
            return fail(&mut ready, 4, already_running(&settings.name, &probe));
        }
        Err(AcquireError::Io(e)) => {
            return fail(
                &mut ready,
                5,
                format!("cannot write PID file {}: {e}", pid_path.display()),
            );
        }
    };
    for note in &stale_notes {
        say(Level::Info, format_args!("{note}"));
    }
    let me = std::process::id() as i32;
    let my_start = procinfo::start_time(me);
    let settings_value = serde_json::from_str::<serde_json::Value>(&settings.to_json()).ok();
    let info_for = |cur: &Current, state: Option<&str>| PidInfo {
        pid: cur.pid,
        start_time: cur.start_time,
        boot_id: procinfo::boot_id(),
        worker_id: cur.worker_id,
        started_at: cur.started_at.clone(),
        name: settings.name.clone(),
        monitor_pid: Some(me),
        monitor_start_time: Some(my_start),
        state: state.map(str::to_string),
        settings: settings_value.clone(),
    };

    let (tx, rx) = mpsc::channel();
    signals::forward_terminating(tx.clone(), Ev::Signal);

    let mut generation = 0u32;
    let mut cur = match start_worker(exe, global_args, settings, &tx, &mut generation) {
        Ok(c) => c,
        Err(e) => {
            pid_file.release();
            return fail(
                &mut ready,
                5,
                format!("cannot start the worker process: {e}"),
            );
        }
    };
    // Written now so `worker stop` can find the pids even before the worker is ready.
    if let Err(e) = pid_file.write(&info_for(&cur, None)) {
        say(
            Level::Error,
            format_args!("cannot write {}: {e}", pid_path.display()),
        );
    }
    say(
        Level::Info,
        format_args!(
            "started worker {} (pid {}); monitor pid {me}",
            settings.name, cur.pid
        ),
    );

    let mut restarts: VecDeque<Instant> = VecDeque::new();
    // The latest registry id, kept across restarts that die before they report one.
    let mut last_id: Option<WorkerId> = None;
    let mut stopping = false;
    let mut hung_kill: Option<String> = None;
    let mut startup_error: Option<(u8, String)> = None;
    let mut alive = true;
    let mut restart_at: Option<Instant> = None;
    let check_every = settings.heartbeat().min(Duration::from_secs(5));
    let mut next_check = Instant::now() + check_every;
    loop {
        let wake = match restart_at {
            Some(t) => t.min(next_check),
            None => next_check,
        };
        let ev = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            Some(Ev::Signal(sig)) => {
                let name = signals::name(sig);
                if !alive {
                    say(
                        Level::Info,
                        format_args!("{name} received while waiting to restart; not restarting"),
                    );
                    break;
                }
                say(
                    Level::Info,
                    format_args!(
                        "{name} received: stopping worker {} (pid {})",
                        settings.name, cur.pid
                    ),
                );
                stopping = true;
                procinfo::signal_verified(cur.pid, cur.start_time, libc::SIGTERM);
            }
            Some(Ev::Report(g, report)) if g == cur.generation => match report {
                Some(Report::Ready { worker_id, .. }) => {
                    cur.worker_id = Some(worker_id);
                    last_id = Some(worker_id);
                    if let Err(e) = pid_file.write(&info_for(&cur, None)) {
                        say(
                            Level::Error,
                            format_args!("cannot write {}: {e}", pid_path.display()),
                        );
                    }
                    if let Some(mut w) = ready.take() {
                        ready::send(
                            &mut w,
                            &Report::Ready {
                                pid: cur.pid,
                                worker_id,
                            },
                        );
                    } else {
                        say(
                            Level::Info,
                            format_args!(
                                "worker {} is back: pid {}, id {worker_id}",
                                settings.name, cur.pid
                            ),
                        );
                    }
                }
                Some(Report::Error { code, message }) => startup_error = Some((code, message)),
                None => {}
            },
            Some(Ev::Report(..)) => {}
            Some(Ev::Exited(g, status)) if g == cur.generation => {
                alive = false;
                let how = describe_exit(status);
                if stopping {
                    say(
                        Level::Info,
                        format_args!("worker {} stopped ({how})", settings.name),
                    );
                    break;
                }
                if ready.is_some() {
                    // It never got as far as claiming: report to the launcher, which retries.
                    // Its reason may still be on the way (the reader thread races the waiter).
                    let until = Instant::now() + Duration::from_secs(1);
                    while startup_error.is_none() {
                        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                            Ok(Ev::Report(g2, Some(Report::Error { code, message })))
                                if g2 == cur.generation =>
                            {
                                startup_error = Some((code, message));
                            }
                            Ok(Ev::Report(g2, _)) if g2 == cur.generation => break,
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    // Without a reason, the worker's exit status is the same exit code.
                    let code = status
                        .and_then(|s| s.code())
                        .filter(|c| (1..=255).contains(c))
                        .map(|c| c as u8)
                        .unwrap_or(1);
                    let (code, message) = startup_error.take().unwrap_or((
                        code,
                        format!("the worker exited ({how}) before it was ready"),
                    ));
                    pid_file.release();
                    return fail(&mut ready, code, message);
                }
                let clean = status.is_some_and(|s| s.success());
                if clean && hung_kill.is_none() {
                    say(
                        Level::Info,
                        format_args!(
                            "worker {} exited on its own ({how}); not restarting",
                            settings.name
                        ),
                    );
                    break;
                }
                let reason = hung_kill
                    .take()
                    .unwrap_or_else(|| format!("it died unexpectedly ({how})"));
                say(
                    Level::Error,
                    format_args!("worker {} (pid {}): {reason}", settings.name, cur.pid),
                );
                rescue_now(store, run_dir, &say);
                let window = settings.restart_window();
                while restarts.front().is_some_and(|t| t.elapsed() > window) {
                    restarts.pop_front();
                }
                if restarts.len() as u32 >= settings.max_restarts {
                    let why = format!(
                        "{} restart(s) within {} did not help (last: {reason}); not restarting",
                        restarts.len(),
                        format_duration(window)
                    );
                    say(
                        Level::Error,
                        format_args!("worker {} is crash-looping: {why}", settings.name),
                    );
                    say(
                        Level::Error,
                        format_args!(
                            "fix the cause (see the lines above), then: workq worker start {} --daemon",
                            settings.name
                        ),
                    );
                    if let Some(id) = cur.worker_id.or(last_id) {
                        if let Err(e) = store.mark_crash_looping(id, &why) {
                            say(
                                Level::Error,
                                format_args!("cannot record crash-looping: {e}"),
                            );
                        }
                    }
                    pid_file.abandon_with(&info_for(&cur, Some("crash-looping")));
                    return 1;
                }
                let delay =
                    Duration::from_secs(1u64 << restarts.len().min(6)).min(Duration::from_secs(60));
                say(
                    Level::Info,
                    format_args!(
                        "restarting worker {} in {} (restart {} of {} allowed per {})",
                        settings.name,
                        format_duration(delay),
                        restarts.len() + 1,
                        settings.max_restarts,
                        format_duration(window)
                    ),
                );
                restart_at = Some(Instant::now() + delay);
            }
            Some(Ev::Exited(..)) => {}
            None => {}
        }
        let now = Instant::now();
        if let Some(at) = restart_at {
            if now >= at && !stopping {
                restart_at = None;
                restarts.push_back(now);
                match start_worker(exe, global_args, settings, &tx, &mut generation) {
                    Ok(c) => {
                        cur = c;
                        alive = true;
                        if let Err(e) = pid_file.write(&info_for(&cur, None)) {
                            say(
                                Level::Error,
                                format_args!("cannot write {}: {e}", pid_path.display()),
                            );
                        }
                    }
                    Err(e) => {
                        say(
                            Level::Error,
                            format_args!("cannot start the worker process: {e}"),
                        );
                        // Counts as a failed restart; try again after the next backoff.
                        restart_at = Some(
                            now + Duration::from_secs(1u64 << restarts.len().min(6))
                                .min(Duration::from_secs(60)),
                        );
                    }
                }
            }
        }
        if now >= next_check {
            next_check = now + check_every;
            if alive && !stopping && hung_kill.is_none() {
                if let Some(age) = heartbeat_age(store, cur.worker_id) {
                    if age > settings.hung_after()
                        && procinfo::process_alive(cur.pid, cur.start_time)
                    {
                        let why = format!(
                            "hung: its last heartbeat was {} ago (limit {}); killed it",
                            format_duration(age),
                            format_duration(settings.hung_after())
                        );
                        procinfo::signal_verified(cur.pid, cur.start_time, libc::SIGKILL);
                        hung_kill = Some(why);
                    }
                }
            }
        }
    }
    pid_file.release();
    0
}

fn already_running(name: &str, probe: &Probe) -> String {
    match probe.info() {
        Some(i) => format!(
            "worker {name} is already running (pid {}{})",
            i.pid,
            i.monitor_pid
                .map(|m| format!(", monitor pid {m}"))
                .unwrap_or_default()
        ),
        None => {
            format!("worker {name} is already running (its PID file is locked by a live process)")
        }
    }
}

/// Rescues the jobs of dead workers at once, rather than waiting for another worker's sweep.
fn rescue_now(store: &dyn Store, run_dir: &Path, say: &dyn Fn(Level, std::fmt::Arguments<'_>)) {
    match rescue::sweep(store, None) {
        Ok(report) => {
            for r in &report.rescued {
                say(
                    Level::Info,
                    format_args!(
                        "rescued job {} (attempt {} lost): now {}",
                        r.job_id, r.attempt, r.new_state
                    ),
                );
            }
            if !report.rescued.is_empty() {
                doorbell::ring_all(run_dir);
            }
        }
        Err(e) => say(
            Level::Error,
            format_args!("sweep for dead workers failed: {e}"),
        ),
    }
}

fn heartbeat_age(store: &dyn Store, id: Option<WorkerId>) -> Option<Duration> {
    let id = id?;
    let rec = store
        .workers(false)
        .ok()?
        .into_iter()
        .find(|w| w.id == id)?;
    Some(store.now().since(rec.heartbeat_at))
}

/// Starts one worker process under this monitor, with a waiter and a readiness reader.
fn start_worker(
    exe: &Path,
    global_args: &[OsString],
    settings: &WorkerSettings,
    tx: &Sender<Ev>,
    generation: &mut u32,
) -> std::io::Result<Current> {
    *generation += 1;
    let g = *generation;
    let pipe = ready::pipe()?;
    let mut cmd = Command::new(exe);
    cmd.args(global_args)
        .args(["worker", "_run"])
        .env(crate::SETTINGS_ENV, settings.to_json())
        .env(ready::READY_FD_ENV, "3")
        .stdin(Stdio::null());
    // It gets SIGTERM (a graceful drain) if the monitor is killed.
    let mut child = spawn::spawn_with_fd3(cmd, false, libc::SIGTERM, pipe.write.as_raw_fd())?;
    drop(pipe.write);
    let pid = child.id() as i32;
    let start_time = procinfo::start_time(pid);
    let txr = tx.clone();
    let read = pipe.read;
    let reader = std::thread::Builder::new()
        .name("worker-ready".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = txr.send(Ev::Report(g, ready::read_report(read)));
        });
    if let Err(e) = reader {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let txw = tx.clone();
    let waiter = std::thread::Builder::new()
        .name("worker-wait".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let status = child.wait().ok();
            let _ = txw.send(Ev::Exited(g, status));
        });
    if let Err(e) = waiter {
        procinfo::signal_verified(pid, start_time, libc::SIGKILL);
        return Err(e);
    }
    Ok(Current {
        generation: g,
        pid,
        start_time,
        worker_id: None,
        started_at: workq_core::Timestamp::now().to_rfc3339(),
    })
}

/// "exit status 3", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig} ({})", signals::name(sig)),
            _ => "ended".into(),
        },
        None => "exit status unknown".into(),
    }
}
