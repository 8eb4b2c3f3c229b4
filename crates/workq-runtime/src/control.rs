//! Control of local workers, and of the background server (`serve -d`), through their PID
//! files: find, stop (drain, then kill, and for a worker requeue its jobs), and the registry
//! fallback used when a worker's PID file cannot be trusted. The server has no registry row:
//! it is found by its PID file alone, and a process its file names is verified by the lock,
//! its monitor, or the settings variable its monitor started it with.

use std::path::Path;
use std::time::{Duration, Instant};

use workq_core::{format_duration, WorkerId, WorkerRecord};
use workq_store::{RescueKind, Store, StoreError};

use crate::pidfile::{self, PidInfo, Probe};
use crate::{doorbell, procinfo, WorkerSettings, SERVE_SETTINGS_ENV};

/// A process to signal, verified by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Process id.
    pub pid: i32,
    /// Kernel start time (never 0 here: unverifiable processes are not targets).
    pub start_time: u64,
}

impl Target {
    fn alive(self) -> bool {
        procinfo::process_alive(self.pid, self.start_time)
    }
}

/// The processes of one running local worker (or of the background server).
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// The worker process (for the server: the server process).
    pub worker: Target,
    /// Its monitor, for a daemon.
    pub monitor: Option<Target>,
    /// Its registry id.
    pub worker_id: Option<WorkerId>,
    /// Its settings, if known (a worker's).
    pub settings: Option<WorkerSettings>,
    /// What its PID file says: the server's address, its start time (`None` when the
    /// registry, not the file, named the process).
    pub info: Option<PidInfo>,
}

/// What is known about a local worker name.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// It runs.
    Running(Box<Running>),
    /// It does not run; the sentence says what was found (no file, stale file, …), if anything.
    NotRunning(Option<String>),
    /// Something runs but cannot be identified safely; nothing may be signalled.
    Unsure(String),
}

fn target(pid: i32, start_time: u64) -> Option<Target> {
    (pid > 1 && start_time != 0).then_some(Target { pid, start_time })
}

fn running_from_info(info: &PidInfo) -> Running {
    let worker_alive = info.worker_alive();
    Running {
        worker: Target {
            pid: info.pid,
            // A worker that is gone (a monitor waiting to restart it) must not be signalled.
            start_time: if worker_alive { info.start_time } else { 0 },
        },
        monitor: match (info.monitor_pid, info.monitor_start_time) {
            (Some(p), Some(st)) if info.monitor_alive() => target(p, st),
            _ => None,
        },
        worker_id: info.worker_id,
        settings: info
            .settings
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        info: Some(info.clone()),
    }
}

/// The live registry row of worker `name` on this host whose process is alive and verified.
pub fn live_record(store: &dyn Store, name: &str) -> Result<Option<WorkerRecord>, StoreError> {
    let host = procinfo::hostname();
    Ok(store.workers(false)?.into_iter().rev().find(|w| {
        w.name == name && w.host == host && procinfo::process_alive(w.pid, w.pid_start_time)
    }))
}

/// The monitor of `worker` when the PID file's content cannot be read: the process holding the
/// file's lock, if it is the worker's parent.
fn verified_monitor(path: &Path, worker: i32) -> Option<Target> {
    let holder = workq_store::lock_holder(path)?;
    if holder == worker || procinfo::parent_pid(worker) != Some(holder) {
        return None;
    }
    target(holder, procinfo::start_time(holder))
}

/// The running worker `name` as the registry knows it, when its PID file cannot be trusted.
fn from_registry(store: &dyn Store, name: &str, path: &Path) -> Result<Option<Found>, StoreError> {
    Ok(live_record(store, name)?.map(|w| {
        Found::Running(Box::new(Running {
            worker: Target {
                pid: w.pid,
                start_time: w.pid_start_time,
            },
            monitor: verified_monitor(path, w.pid),
            worker_id: Some(w.id),
            settings: w
                .settings
                .as_deref()
                .and_then(|s| WorkerSettings::from_json(s).ok()),
            info: None,
        }))
    }))
}

/// True if the registry has a live worker with the id, pid and start time `info` names.
fn registered(store: &dyn Store, info: &PidInfo) -> Result<bool, StoreError> {
    Ok(store.workers(false)?.iter().any(|w| {
        Some(w.id) == info.worker_id && w.pid == info.pid && w.pid_start_time == info.start_time
    }))
}

/// Looks up worker `name` in `run_dir`, falling back to the registry when its PID file is
/// damaged. Never returns a process that is not verified by its start time.
pub fn find(store: &dyn Store, run_dir: &Path, name: &str) -> Result<Found, StoreError> {
    let path = pidfile::path_for(run_dir, name);
    let probe = pidfile::probe(&path);
    Ok(match probe {
        Probe::Missing => Found::NotRunning(None),
        Probe::Stale { reason, .. } => Found::NotRunning(Some(reason)),
        Probe::CrashLooping(_) => Found::NotRunning(Some(format!(
            "its monitor gave up restarting it (crash-looping); PID file {} records that",
            path.display()
        ))),
        Probe::Live {
            info: Some(info),
            problem: None,
        } => from_locked_file(&path, &info, registered(store, &info)?),
        Probe::Orphan(info) => {
            if registered(store, &info)? {
                Found::Running(Box::new(running_from_info(&info)))
            } else {
                Found::NotRunning(Some(format!(
                    "PID file {} is stale: pid {} is not a registered workq worker, so it will not be touched",
                    path.display(),
                    info.pid
                )))
            }
        }
        Probe::Live { problem, .. } => {
            let problem = problem.unwrap_or_default();
            from_registry(store, name, &path)?.unwrap_or_else(|| {
                Found::Unsure(format!(
                    "PID file {} is damaged: {problem}; no registered worker {name} matches, so nothing will be signalled on its word",
                    path.display()
                ))
            })
        }
        Probe::Unreadable(why) => from_registry(store, name, &path)?.unwrap_or_else(|| {
            Found::Unsure(format!(
                "{why}; no registered worker {name} runs, so it is probably stale: fix its permissions or remove it (rm {})",
                path.display()
            ))
        }),
    })
}

/// The worker (or server) that the locked, well-formed PID file at `path` names, keeping only
/// the processes that prove to be what the file says; `registered`: the registry knows the
/// worker by the file's pid and start time.
fn from_locked_file(path: &Path, info: &PidInfo, registered: bool) -> Found {
    // The lock proves its holder lives; the pids in the file are trusted only if the
    // holder is one of them or the registry knows the worker by pid and start time.
    let holder = workq_store::lock_holder(path);
    let mut r = running_from_info(info);
    // The monitor is the lock holder, or (when /proc/locks does not say) the live
    // process of that identity whose child is the worker.
    let child_of_monitor =
        info.monitor_pid.is_some() && procinfo::parent_pid(info.pid) == info.monitor_pid;
    let monitor_ok = info.monitor_alive()
        && (holder == info.monitor_pid || (holder.is_none() && child_of_monitor));
    let worker_ok = registered
        || (holder.is_some() && holder == Some(info.pid))
        || (monitor_ok && child_of_monitor);
    if !worker_ok {
        r.worker.start_time = 0;
    }
    if !monitor_ok {
        r.monitor = None;
    }
    if r.monitor.is_none() && r.worker.start_time == 0 && !registered {
        return Found::Unsure(format!(
            "PID file {} is locked by a live process{} but names pids that do not match it; nothing will be signalled on its word",
            path.display(),
            holder.map(|h| format!(" (pid {h})")).unwrap_or_default()
        ));
    }
    Found::Running(Box::new(r))
}

/// Looks up the background server in `run_dir` by its PID file (`pidfile::server_path`). It
/// has no registry row to fall back on: a damaged file that is locked is `Unsure`, and a live
/// process named by an unlocked file (its monitor was killed) counts only if its environment
/// carries the server settings its monitor gave it. Never returns a process that is not
/// verified by its start time.
pub fn find_server(run_dir: &Path) -> Found {
    let path = pidfile::server_path(run_dir);
    match pidfile::probe(&path) {
        Probe::Missing => Found::NotRunning(None),
        Probe::Stale { reason, .. } => Found::NotRunning(Some(reason)),
        Probe::CrashLooping(_) => Found::NotRunning(Some(format!(
            "its monitor gave up restarting it (crash-looping); PID file {} records that",
            path.display()
        ))),
        Probe::Live {
            info: Some(info),
            problem: None,
        } => from_locked_file(&path, &info, false),
        Probe::Orphan(info) => {
            if procinfo::has_env_var(info.pid, SERVE_SETTINGS_ENV) {
                Found::Running(Box::new(running_from_info(&info)))
            } else {
                Found::NotRunning(Some(format!(
                    "PID file {} is stale: pid {} is not a workq server, so it will not be touched",
                    path.display(),
                    info.pid
                )))
            }
        }
        Probe::Live { problem, .. } => Found::Unsure(format!(
            "PID file {} is damaged: {}; nothing will be signalled on its word",
            path.display(),
            problem.unwrap_or_default()
        )),
        Probe::Unreadable(why) => Found::Unsure(format!(
            "{why}; fix its permissions, or remove it (rm {}) if no server runs",
            path.display()
        )),
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It drained and exited.
    Gracefully,
    /// It was killed after the timeout; its jobs were requeued.
    Killed,
    /// It could not be identified safely; nothing was signalled.
    Refused,
}

/// The stop timeout used when none is given: the worker's own stop timeout plus 15 s for its
/// jobs' kill grace, or 30 s when its settings are unknown.
pub fn default_stop_timeout(settings: Option<&WorkerSettings>) -> Duration {
    settings
        .map(|s| s.stop_timeout() + Duration::from_secs(15))
        .unwrap_or(Duration::from_secs(30))
}

/// The background server's stop timeout when none is given: its graceful shutdown waits for
/// the requests in flight, and an event stream or a followed log may never end by itself.
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a stop is for: a worker (found with the registry's help, its jobs requeued after a
/// kill) or the background server. The steps and their order are the same.
enum Subject<'a> {
    Worker {
        store: &'a dyn Store,
        run_dir: &'a Path,
        name: &'a str,
    },
    Server {
        run_dir: &'a Path,
    },
}

impl Subject<'_> {
    fn find(&self) -> Result<Found, StoreError> {
        match self {
            Subject::Worker {
                store,
                run_dir,
                name,
            } => find(*store, run_dir, name),
            Subject::Server { run_dir } => Ok(find_server(run_dir)),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        match self {
            Subject::Worker { run_dir, name, .. } => pidfile::path_for(run_dir, name),
            Subject::Server { run_dir } => pidfile::server_path(run_dir),
        }
    }

    /// `worker NAME` or `the server`, as the steps name it.
    fn label(&self) -> String {
        match self {
            Subject::Worker { name, .. } => format!("worker {name}"),
            Subject::Server { .. } => "the server".into(),
        }
    }

    /// `worker` or `server`.
    fn noun(&self) -> &'static str {
        match self {
            Subject::Worker { .. } => "worker",
            Subject::Server { .. } => "server",
        }
    }

    /// What the graceful stop waits for.
    fn waits_for(&self) -> &'static str {
        match self {
            Subject::Worker { .. } => "its running jobs",
            Subject::Server { .. } => "the requests in flight",
        }
    }
}

/// Stops worker `name`: SIGTERM (to its monitor if it has one) for a graceful drain; after
/// `timeout`, SIGKILL to monitor and worker and every process of its running jobs (verified by
/// their environment marker), and its jobs go back to the queue as `interrupted`. The PID file
/// is removed. `say` hears each step.
pub fn stop(
    store: &dyn Store,
    run_dir: &Path,
    name: &str,
    timeout: Option<Duration>,
    say: &mut dyn FnMut(String),
) -> Result<Stopped, StoreError> {
    let subject = Subject::Worker {
        store,
        run_dir,
        name,
    };
    stop_subject(&subject, timeout, say)
}

/// Stops the background server as [`stop`] stops a worker: SIGTERM to its monitor (a graceful
/// shutdown), SIGKILL to the server and then the monitor after `timeout` (default
/// [`SERVER_STOP_TIMEOUT`]), and the PID file is removed. `say` hears each step.
pub fn stop_server(
    run_dir: &Path,
    timeout: Option<Duration>,
    say: &mut dyn FnMut(String),
) -> Stopped {
    let subject = Subject::Server { run_dir };
    // Finding a server reads no store, so there is no store error to pass on.
    stop_subject(&subject, timeout, say).unwrap_or(Stopped::Refused)
}

/// The stop of either subject.
fn stop_subject(
    subject: &Subject<'_>,
    timeout: Option<Duration>,
    say: &mut dyn FnMut(String),
) -> Result<Stopped, StoreError> {
    let path = subject.path();
    let label = subject.label();
    let r = match subject.find()? {
        Found::NotRunning(note) => {
            say_not_running(&label, &path, note, say);
            return Ok(Stopped::NotRunning);
        }
        Found::Unsure(why) => {
            say(why);
            return Ok(Stopped::Refused);
        }
        Found::Running(r) => *r,
    };
    let timeout = timeout.unwrap_or_else(|| match subject {
        Subject::Worker { .. } => default_stop_timeout(r.settings.as_ref()),
        Subject::Server { .. } => SERVER_STOP_TIMEOUT,
    });
    let worker = (r.worker.start_time != 0).then_some(r.worker);
    ask_to_stop(subject, &r, worker, timeout, say);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = Instant::now().checked_add(timeout).unwrap_or(far);
    if wait_gone(worker, r.monitor, deadline, Duration::from_millis(25)) {
        say(format!("{label} stopped"));
        remove_pid_file(&path, say);
        return Ok(Stopped::Gracefully);
    }
    say(format!(
        "{label} still running after {}: sending SIGKILL",
        format_duration(timeout)
    ));
    let (worker, worker_id) = kill(subject, &r, worker, say);
    let until = Instant::now() + Duration::from_secs(5);
    if !wait_gone(worker, r.monitor, until, Duration::from_millis(10)) {
        say(match subject {
            Subject::Worker { .. } => format!(
                "{label} is still alive after SIGKILL; its jobs stay with it (run `workq workers cleanup` once it is gone)"
            ),
            Subject::Server { .. } => format!("{label} is still alive after SIGKILL"),
        });
        return Ok(Stopped::Refused);
    }
    if let Ok(Found::Running(other)) = subject.find() {
        say(match subject {
            Subject::Worker { .. } => format!(
                "PID file {} is still held (pid {}): some process of {label} that could not be verified lives on; its jobs are left alone",
                path.display(),
                other.worker.pid
            ),
            Subject::Server { .. } => format!(
                "PID file {} is still held (pid {}): some process of {label} that could not be verified lives on",
                path.display(),
                other.worker.pid
            ),
        });
        return Ok(Stopped::Refused);
    }
    if let (Some(id), Subject::Worker { store, run_dir, .. }) = (worker_id, subject) {
        requeue_jobs(*store, run_dir, id, timeout, say)?;
    }
    remove_killed_pid_file(&path, subject.noun(), say);
    Ok(Stopped::Killed)
}

/// Says why `label` (`worker NAME`, `the server`) needs no stop, removing a stale PID file.
fn say_not_running(label: &str, path: &Path, note: Option<String>, say: &mut dyn FnMut(String)) {
    match note {
        Some(n) => {
            say(format!("{label} is not running: {n}"));
            if matches!(pidfile::remove_if_unlocked(path), Ok(true)) {
                say(format!("removed {}", path.display()));
            }
        }
        None => say(format!("{label} is not running (no PID file)")),
    }
}

/// SIGTERM to the monitor, or to the worker if it has none: the start of a graceful drain.
fn ask_to_stop(
    subject: &Subject<'_>,
    r: &Running,
    worker: Option<Target>,
    timeout: Duration,
    say: &mut dyn FnMut(String),
) {
    let label = subject.label();
    match r.monitor.or(worker) {
        Some(t) => {
            procinfo::signal_verified(t.pid, t.start_time, libc::SIGTERM);
            say(format!(
                "stopping {label}: sent SIGTERM to {} {}; waiting up to {} for {}",
                if r.monitor.is_some() {
                    "its monitor, pid"
                } else {
                    "pid"
                },
                t.pid,
                format_duration(timeout),
                subject.waits_for()
            ));
        }
        None => say(format!("{label}: no live process found")),
    }
}

/// SIGKILL to the worker and its monitor; returns the worker killed and its registry id. The
/// monitor may have restarted the worker since `r` was found: the one it has now is killed.
fn kill(
    subject: &Subject<'_>,
    r: &Running,
    mut worker: Option<Target>,
    say: &mut dyn FnMut(String),
) -> (Option<Target>, Option<WorkerId>) {
    let mut worker_id = r.worker_id;
    if let Ok(Found::Running(now)) = subject.find() {
        if now.worker.start_time != 0 && Some(now.worker) != worker {
            worker = Some(now.worker);
            worker_id = now.worker_id.or(worker_id);
        }
    }
    // The worker first: killing its monitor first would hand it a parent-death SIGTERM.
    for (what, t) in [(subject.noun(), worker), ("monitor", r.monitor)] {
        if let Some(t) = t {
            if procinfo::signal_verified(t.pid, t.start_time, libc::SIGKILL) {
                say(format!("killed {what} pid {}", t.pid));
            }
        }
    }
    (worker, worker_id)
}

/// Waits until neither `worker` nor `monitor` lives, looking every `every`, until `deadline`;
/// true if they are gone. (They are not our children: there is no exit to wait for.)
fn wait_gone(
    worker: Option<Target>,
    monitor: Option<Target>,
    deadline: Instant,
    every: Duration,
) -> bool {
    let gone = || !worker.is_some_and(Target::alive) && !monitor.is_some_and(Target::alive);
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(every);
    }
    gone()
}

/// After a kill: kills what is left of the worker's jobs and puts them back in the queue.
fn requeue_jobs(
    store: &dyn Store,
    run_dir: &Path,
    id: WorkerId,
    timeout: Duration,
    say: &mut dyn FnMut(String),
) -> Result<(), StoreError> {
    for a in store.running_attempts(id)? {
        let killed = procinfo::kill_attempt_leftovers(procinfo::Marker {
            job: a.job_id,
            attempt: a.attempt,
            lease: a.lease,
        });
        if killed > 0 {
            say(format!(
                "job {}: killed {killed} process(es) of attempt {}",
                a.job_id, a.attempt
            ));
        }
        crate::rescue::remove_container(store, a.job_id, a.attempt);
    }
    let reason = format!(
        "killed by `workq worker stop` after {}",
        format_duration(timeout)
    );
    let rescued = store.rescue_worker(id, &reason, RescueKind::Interrupted)?;
    for j in &rescued {
        say(format!(
            "job {}: back in the queue ({})",
            j.job_id, j.new_state
        ));
    }
    if !rescued.is_empty() {
        doorbell::ring_all(run_dir);
    }
    Ok(())
}

/// After a kill, the PID file goes, and the same line says so whoever removed it: this stop, or
/// the monitor itself, which was asked to stop first and so may see its worker die and remove
/// its file before its own SIGKILL lands.
fn remove_killed_pid_file(path: &Path, noun: &str, say: &mut dyn FnMut(String)) {
    match pidfile::remove_if_unlocked(path) {
        Ok(true) => say(format!("removed {}", path.display())),
        Ok(false) => match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                say(format!("removed {}", path.display()));
            }
            _ => say(format!(
                "left {}: another process holds it now (was the {noun} started again?)",
                path.display()
            )),
        },
        Err(e) => say(format!("could not remove {}: {e}", path.display())),
    }
}

fn remove_pid_file(path: &Path, say: &mut dyn FnMut(String)) {
    match pidfile::remove_if_unlocked(path) {
        Ok(true) => say(format!("removed {}", path.display())),
        Ok(false) => {}
        Err(e) => say(format!("could not remove {}: {e}", path.display())),
    }
}

/// Names of local workers: every PID file in `run_dir` plus live registry rows on this host.
pub fn local_names(store: &dyn Store, run_dir: &Path) -> Result<Vec<String>, StoreError> {
    let host = procinfo::hostname();
    let mut names: Vec<String> = pidfile::list(run_dir).into_iter().map(|(n, _)| n).collect();
    for w in store.workers(false)? {
        // Temporary workers (`submit --wait`) have no settings and are not managed here.
        if w.host == host && w.settings.is_some() && !names.contains(&w.name) {
            names.push(w.name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said_after_kill(path: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        remove_killed_pid_file(path, "worker", &mut |l| lines.push(l));
        lines
    }

    #[test]
    fn after_a_kill_the_pid_file_is_reported_removed_whoever_removed_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("w.pid");
        let removed = vec![format!("removed {}", path.display())];
        // Left behind by the killed monitor: this stop removes it.
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(said_after_kill(&path), removed);
        assert!(!path.exists());
        // Already removed by the monitor on its way out: the same line.
        assert_eq!(said_after_kill(&path), removed);
        // Held by a process that took it meanwhile: left alone, and said so.
        let mut owned = pidfile::PidFile::acquire(&path, &mut |_| {}).unwrap();
        owned.write(&pidfile::info_for_self("w", Some(1))).unwrap();
        let said = said_after_kill(&path);
        assert!(said.len() == 1 && said[0].starts_with("left "), "{said:?}");
        assert!(path.exists());
        owned.release();
    }
}
