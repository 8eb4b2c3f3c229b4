//! The monitor: the small parent of a daemonized worker, or of the background server
//! (`serve -d`). It owns the PID file, restarts its process when it dies unexpectedly or (a
//! worker only) hangs (heartbeat older than `hung_after` while its process lives), with
//! exponential backoff (1 s doubling to 60 s) and a limit of `max_restarts` per
//! `restart_window`; past the limit it marks it `crash-looping` and gives up.
//! SIGTERM/SIGINT/SIGHUP stop it gracefully and end the monitor.
//!
//! What it supervises is a [`Charge`]: the restart, backoff, PID-file and log rules are the same
//! for both; only a worker has a registry row, and so heartbeats to judge, jobs to rescue when
//! it dies and a row to mark crash-looping.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use workq_core::{exit, format_duration, WorkerId};
use workq_store::Store;

use crate::daemon::CommandLine;
use crate::pidfile::{self, AcquireError, PidFile, PidInfo, Probe};
use crate::ready::{self, Report};
use crate::{
    doorbell, logger, procinfo, rescue, signals, spawn, DaemonSettings, Level, ServerSettings,
    WorkerSettings,
};

/// What a monitor supervises.
pub enum Charge<'a> {
    /// A worker, with the store it registers in.
    Worker {
        /// Its store: heartbeats, rescue, the crash-looping mark.
        store: &'a dyn Store,
        /// Its settings.
        settings: &'a WorkerSettings,
    },
    /// The HTTP server of `serve -d`. It has no registry row and no heartbeat, so the monitor
    /// does no hang detection for it; it does pin the address the first server bound (port 0
    /// becomes a real port), so a restarted server answers at the URL that was printed.
    Server(ServerSettings),
}

impl Charge<'_> {
    fn settings(&self) -> DaemonSettings<'_> {
        match self {
            Charge::Worker { settings, .. } => DaemonSettings::Worker(settings),
            Charge::Server(s) => DaemonSettings::Server(s),
        }
    }

    /// Its PID file.
    fn pid_path(&self, run_dir: &Path) -> PathBuf {
        match self {
            Charge::Worker { settings, .. } => pidfile::path_for(run_dir, &settings.name),
            Charge::Server(_) => pidfile::server_path(run_dir),
        }
    }

    /// The name in its PID file.
    fn name(&self) -> &str {
        match self {
            Charge::Worker { settings, .. } => &settings.name,
            Charge::Server(_) => pidfile::SERVER_NAME,
        }
    }

    /// How often to check for a hang, if ever.
    fn check_every(&self) -> Option<Duration> {
        match self {
            Charge::Worker { settings, .. } => {
                Some(settings.heartbeat().min(Duration::from_secs(5)))
            }
            Charge::Server(_) => None,
        }
    }

    /// The command that starts it afresh, for the crash-looping line.
    fn start_command(&self) -> String {
        match self {
            Charge::Worker { settings, .. } => {
                format!("workq worker start {} --daemon", settings.name)
            }
            Charge::Server(_) => "workq serve -d".into(),
        }
    }
}

enum Ev {
    Signal(libc::c_int),
    Exited(u32, Option<ExitStatus>),
    Report(u32, Option<Report>),
}

/// The process the monitor runs now.
struct Current {
    /// Counts the processes started, so that news of an earlier one is told apart.
    generation: u32,
    pid: i32,
    start_time: u64,
    worker_id: Option<WorkerId>,
    /// The server's bound address, once it reported it.
    listen: Option<String>,
    started_at: String,
}

/// The monitor's log: lines go to the worker log, prefixed, at the worker's level.
struct Say {
    path: PathBuf,
    level: Level,
}

impl Say {
    fn line(&self, lvl: Level, msg: std::fmt::Arguments<'_>) {
        if lvl <= self.level {
            logger::append_line(&self.path, lvl, format_args!("monitor: {msg}"));
        }
    }

    fn info(&self, msg: std::fmt::Arguments<'_>) {
        self.line(Level::Info, msg);
    }

    fn error(&self, msg: std::fmt::Arguments<'_>) {
        self.line(Level::Error, msg);
    }
}

/// How the monitor ends.
enum End {
    /// The worker stopped (or will not be restarted): exit 0.
    Stopped,
    /// The first worker never got ready: the launcher hears why.
    StartFailed(u8, String),
    /// Too many restarts; the PID file is left saying so.
    CrashLooping,
}

/// What the monitor knows and does between events.
struct Monitor<'a> {
    charge: Charge<'a>,
    worker_command: &'a CommandLine,
    run_dir: &'a Path,
    say: &'a Say,
    pid_file: PidFile,
    /// The launcher's readiness pipe, until the first worker is ready.
    ready: Option<File>,
    tx: Sender<Ev>,
    /// Workers started so far, to number the next.
    generation: u32,
    cur: Current,
    /// The monitor's own pid and start time, for the PID file.
    me: (i32, u64),
    settings_value: Option<serde_json::Value>,
    watch: Watch,
}

/// Where the monitor stands with its worker.
#[derive(Default)]
struct Watch {
    /// The current worker's exit has not been seen yet.
    alive: bool,
    /// A stop signal came: the worker's exit ends the monitor.
    stopping: bool,
    /// Why the monitor killed a hung worker, until its exit is handled.
    hung_kill: Option<String>,
    /// Why the first worker failed to start, as it reported.
    startup_error: Option<(u8, String)>,
    /// When to start a worker again.
    restart_at: Option<Instant>,
    /// Restarts within the window.
    restarts: VecDeque<Instant>,
    /// The latest registry id, kept across restarts that die before they report one.
    last_id: Option<WorkerId>,
}

/// Runs the monitor of `settings.name` until the worker is stopped or crash-loops, starting
/// each worker with `worker_command`. Returns the process exit code. `ready` is the
/// launcher's readiness pipe.
pub fn run_monitor(
    store: &dyn Store,
    settings: &WorkerSettings,
    worker_command: &CommandLine,
    run_dir: &Path,
    ready: Option<File>,
) -> u8 {
    supervise(
        Charge::Worker { store, settings },
        worker_command,
        run_dir,
        ready,
    )
}

/// Runs the monitor of the background server until it is stopped or crash-loops, starting
/// each server process with `server_command`; as [`run_monitor`] otherwise.
pub fn run_server_monitor(
    settings: ServerSettings,
    server_command: &CommandLine,
    run_dir: &Path,
    ready: Option<File>,
) -> u8 {
    supervise(Charge::Server(settings), server_command, run_dir, ready)
}

/// The monitor of `charge`, whichever it is.
fn supervise(
    charge: Charge<'_>,
    worker_command: &CommandLine,
    run_dir: &Path,
    mut ready: Option<File>,
) -> u8 {
    let settings = charge.settings();
    let say = Say {
        path: settings.log_file().to_path_buf(),
        level: settings.log_level(),
    };
    let pid_file = match acquire(&charge.pid_path(run_dir), settings, &say) {
        Ok(f) => f,
        Err((code, message)) => return fail(&say, &mut ready, code, message),
    };
    let (tx, rx) = mpsc::channel();
    signals::forward_terminating(tx.clone(), Ev::Signal);
    let mut generation = 0;
    let cur = match start_worker(worker_command, settings, &tx, &mut generation) {
        Ok(c) => c,
        Err(e) => {
            pid_file.release();
            let message = format!("cannot start the {} process: {e}", settings.noun());
            return fail(&say, &mut ready, exit::UNAVAILABLE, message);
        }
    };
    let me = std::process::id() as i32;
    let settings_value = serde_json::from_str(&settings.env().1).ok();
    let label = settings.label();
    let mut m = Monitor {
        charge,
        worker_command,
        run_dir,
        say: &say,
        pid_file,
        ready,
        tx,
        generation,
        cur,
        me: (me, procinfo::start_time(me)),
        settings_value,
        watch: Watch {
            alive: true,
            ..Watch::default()
        },
    };
    // Written now so `worker stop` can find the pids even before the worker is ready.
    m.write_pid_file();
    say.info(format_args!(
        "started {label} (pid {}); monitor pid {me}",
        m.cur.pid
    ));
    let end = m.run(&rx);
    m.finish(end)
}

/// Takes the PID file, or says why not (exit code and message).
fn acquire(path: &Path, settings: DaemonSettings<'_>, say: &Say) -> Result<PidFile, (u8, String)> {
    let mut stale_notes = Vec::new();
    let pid_file = match PidFile::acquire(path, &mut |s| stale_notes.push(s.to_string())) {
        Ok(f) => f,
        Err(AcquireError::Running(probe)) => {
            return Err((exit::CONFLICT, already_running(&settings.label(), &probe)))
        }
        Err(AcquireError::Io(e)) => {
            return Err((
                exit::UNAVAILABLE,
                format!("cannot write PID file {}: {e}", path.display()),
            ))
        }
    };
    for note in &stale_notes {
        say.info(format_args!("{note}"));
    }
    Ok(pid_file)
}

/// Logs a failure and reports it on the readiness pipe, if the launcher still listens.
fn fail(say: &Say, ready: &mut Option<File>, code: u8, message: String) -> u8 {
    say.error(format_args!("{message}"));
    if let Some(w) = ready.as_mut() {
        ready::send(w, &Report::Error { code, message });
    }
    code
}

impl Monitor<'_> {
    /// Handles events until the monitor ends.
    fn run(&mut self, rx: &Receiver<Ev>) -> End {
        let check_every = self.charge.check_every();
        // Without hang checks the monitor still wakes now and then: nothing is due, but a
        // timeout keeps the loop's shape the same for both charges.
        let every = check_every.unwrap_or(Duration::from_secs(60));
        let mut next_check = Instant::now() + every;
        loop {
            let wake = match self.watch.restart_at {
                Some(t) => t.min(next_check),
                None => next_check,
            };
            match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(ev) => {
                    if let Some(end) = self.on_event(ev, rx) {
                        return end;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return End::Stopped,
            }
            let now = Instant::now();
            self.restart_if_due(now);
            if now >= next_check {
                next_check = now + every;
                if check_every.is_some() {
                    self.kill_if_hung();
                }
            }
        }
    }

    /// Releases or leaves the PID file as the end requires, and gives the exit code.
    fn finish(mut self, end: End) -> u8 {
        match end {
            End::Stopped => {
                self.pid_file.release();
                exit::OK
            }
            End::StartFailed(code, message) => {
                self.pid_file.release();
                fail(self.say, &mut self.ready, code, message)
            }
            End::CrashLooping => {
                let info = self.info(Some("crash-looping"));
                self.pid_file.abandon_with(&info);
                exit::JOB_FAILED
            }
        }
    }

    fn on_event(&mut self, ev: Ev, rx: &Receiver<Ev>) -> Option<End> {
        match ev {
            Ev::Signal(sig) => self.on_signal(sig),
            Ev::Report(g, report) if g == self.cur.generation => {
                self.on_report(report);
                None
            }
            Ev::Exited(g, status) if g == self.cur.generation => self.on_exit(status, rx),
            // News of an earlier worker.
            Ev::Report(..) | Ev::Exited(..) => None,
        }
    }

    /// A stop signal: the worker drains (the monitor ends when it has); with no worker alive,
    /// the monitor ends at once.
    fn on_signal(&mut self, sig: libc::c_int) -> Option<End> {
        let name = signals::name(sig);
        if !self.watch.alive {
            self.say.info(format_args!(
                "{name} received while waiting to restart; not restarting"
            ));
            return Some(End::Stopped);
        }
        self.say.info(format_args!(
            "{name} received: stopping {} (pid {})",
            self.charge.settings().label(),
            self.cur.pid
        ));
        self.watch.stopping = true;
        procinfo::signal_verified(self.cur.pid, self.cur.start_time, libc::SIGTERM);
        None
    }

    /// The worker (or server) reported on its readiness pipe.
    fn on_report(&mut self, report: Option<Report>) {
        let worker = matches!(self.charge, Charge::Worker { .. });
        match report {
            Some(Report::Ready { worker_id, .. }) if worker => self.on_ready(worker_id),
            Some(Report::Listening { addr, .. }) if !worker => self.on_listening(addr),
            Some(Report::Error { code, message }) => {
                self.watch.startup_error = Some((code, message));
            }
            // A report of the other kind is no news of this charge.
            Some(_) | None => {}
        }
    }

    /// The server is bound: the PID file learns its address, the launcher (if it still waits)
    /// too, and later servers bind the same one.
    fn on_listening(&mut self, addr: String) {
        if let Charge::Server(s) = &mut self.charge {
            if s.listen != addr {
                self.say.info(format_args!(
                    "the server bound {addr} ({} was asked); restarts will bind {addr} too",
                    s.listen
                ));
                s.listen = addr.clone();
            }
        }
        self.cur.listen = Some(addr.clone());
        self.write_pid_file();
        if let Some(mut w) = self.ready.take() {
            let report = Report::Listening {
                pid: self.cur.pid,
                addr,
            };
            ready::send(&mut w, &report);
        } else {
            self.say.info(format_args!(
                "the server is back: pid {}, listening on {addr}",
                self.cur.pid
            ));
        }
    }

    /// The worker is registered and claiming: the PID file and the launcher (if it still
    /// waits) learn its registry id.
    fn on_ready(&mut self, worker_id: WorkerId) {
        self.cur.worker_id = Some(worker_id);
        self.watch.last_id = Some(worker_id);
        self.write_pid_file();
        if let Some(mut w) = self.ready.take() {
            let report = Report::Ready {
                pid: self.cur.pid,
                worker_id,
            };
            ready::send(&mut w, &report);
        } else {
            self.say.info(format_args!(
                "{} is back: pid {}, id {worker_id}",
                self.charge.settings().label(),
                self.cur.pid
            ));
        }
    }

    /// The worker exited: the monitor ends (asked to stop, a start that failed, a clean exit
    /// of its own) or restarts it after a backoff, unless it is crash-looping.
    fn on_exit(&mut self, status: Option<ExitStatus>, rx: &Receiver<Ev>) -> Option<End> {
        self.watch.alive = false;
        let how = describe_exit(status);
        let label = self.charge.settings().label();
        if self.watch.stopping {
            self.say.info(format_args!("{label} stopped ({how})"));
            return Some(End::Stopped);
        }
        if self.ready.is_some() {
            // It never got as far as claiming: report to the launcher, which retries.
            return Some(self.start_failed(status, &how, rx));
        }
        let clean = status.is_some_and(|s| s.success());
        if clean && self.watch.hung_kill.is_none() {
            self.say.info(format_args!(
                "{label} exited on its own ({how}); not restarting"
            ));
            return Some(End::Stopped);
        }
        let reason = self
            .watch
            .hung_kill
            .take()
            .unwrap_or_else(|| format!("it died unexpectedly ({how})"));
        self.say
            .error(format_args!("{label} (pid {}): {reason}", self.cur.pid));
        if let Charge::Worker { store, .. } = self.charge {
            rescue_now(store, self.run_dir, self.say);
        }
        self.plan_restart(&reason)
    }

    /// Why the first worker exited before it was ready: what it reported (its reason may still
    /// be on the way, as the reader thread races the waiter), else its exit status.
    fn start_failed(&mut self, status: Option<ExitStatus>, how: &str, rx: &Receiver<Ev>) -> End {
        let until = Instant::now() + Duration::from_secs(1);
        while self.watch.startup_error.is_none() {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Ev::Report(g, Some(Report::Error { code, message })))
                    if g == self.cur.generation =>
                {
                    self.watch.startup_error = Some((code, message));
                }
                Ok(Ev::Report(g, _)) if g == self.cur.generation => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let noun = self.charge.settings().noun();
        let (code, message) = self.watch.startup_error.take().unwrap_or_else(|| {
            (
                startup_exit_code(status),
                format!("the {noun} exited ({how}) before it was ready"),
            )
        });
        End::StartFailed(code, message)
    }

    /// Sets when to restart the worker, or gives up if it restarted too often of late.
    fn plan_restart(&mut self, reason: &str) -> Option<End> {
        let settings = self.charge.settings();
        let window = settings.restart_window();
        let max_restarts = settings.max_restarts();
        let now = Instant::now();
        forget_restarts_before(&mut self.watch.restarts, window, now);
        let recent = self.watch.restarts.len();
        if recent as u32 >= max_restarts {
            self.give_up(recent, window, reason);
            return Some(End::CrashLooping);
        }
        let delay = restart_delay(recent);
        self.say.info(format_args!(
            "restarting {} in {} (restart {} of {max_restarts} allowed per {})",
            settings.label(),
            format_duration(delay),
            recent + 1,
            format_duration(window)
        ));
        self.watch.restart_at = Some(now + delay);
        None
    }

    /// Says the worker (or server) is crash-looping, in the log and, for a worker, in the
    /// registry.
    fn give_up(&self, recent: usize, window: Duration, reason: &str) {
        let label = self.charge.settings().label();
        let why = format!(
            "{recent} restart(s) within {} did not help (last: {reason}); not restarting",
            format_duration(window)
        );
        self.say
            .error(format_args!("{label} is crash-looping: {why}"));
        self.say.error(format_args!(
            "fix the cause (see the lines above), then: {}",
            self.charge.start_command()
        ));
        let Charge::Worker { store, .. } = self.charge else {
            return;
        };
        if let Some(id) = self.cur.worker_id.or(self.watch.last_id) {
            if let Err(e) = store.mark_crash_looping(id, &why) {
                self.say
                    .error(format_args!("cannot record crash-looping: {e}"));
            }
        }
    }

    /// Starts the worker again once its backoff is over (not while stopping).
    fn restart_if_due(&mut self, now: Instant) {
        if self.watch.stopping || self.watch.restart_at.is_none_or(|at| now < at) {
            return;
        }
        self.watch.restart_at = None;
        self.watch.restarts.push_back(now);
        let settings = self.charge.settings();
        match start_worker(
            self.worker_command,
            settings,
            &self.tx,
            &mut self.generation,
        ) {
            Ok(c) => {
                self.cur = c;
                self.watch.alive = true;
                self.write_pid_file();
            }
            Err(e) => {
                self.say.error(format_args!(
                    "cannot start the {} process: {e}",
                    settings.noun()
                ));
                // Counts as a failed restart; try again after the next backoff.
                let delay = restart_delay(self.watch.restarts.len());
                self.watch.restart_at = Some(now + delay);
            }
        }
    }

    /// Kills the worker if its process lives but its heartbeat is too old; its exit then
    /// restarts it.
    fn kill_if_hung(&mut self) {
        if !self.watch.alive || self.watch.stopping || self.watch.hung_kill.is_some() {
            return;
        }
        let Charge::Worker { store, settings } = self.charge else {
            return;
        };
        let Some((id, age)) =
            heartbeat_age(store, self.cur.worker_id, self.cur.pid, self.cur.start_time)
        else {
            return;
        };
        if self.cur.worker_id.is_some_and(|known| known != id) {
            // The worker registered again (it was declared dead while cut off from the
            // store, ARCHITECTURE.md §4.4): follow its new row, and say so in the PID file.
            self.say.info(format_args!(
                "worker {} registered again as id {id}",
                settings.name
            ));
            self.cur.worker_id = Some(id);
            self.watch.last_id = Some(id);
            self.write_pid_file();
        }
        let limit = settings.hung_after();
        if age > limit && procinfo::process_alive(self.cur.pid, self.cur.start_time) {
            let why = format!(
                "hung: its last heartbeat was {} ago (limit {}); killed it",
                format_duration(age),
                format_duration(limit)
            );
            procinfo::signal_verified(self.cur.pid, self.cur.start_time, libc::SIGKILL);
            self.watch.hung_kill = Some(why);
        }
    }

    /// What the PID file says now; `state` marks a crash-looping record.
    fn info(&self, state: Option<&str>) -> PidInfo {
        PidInfo {
            pid: self.cur.pid,
            start_time: self.cur.start_time,
            boot_id: procinfo::boot_id(),
            worker_id: self.cur.worker_id,
            started_at: self.cur.started_at.clone(),
            name: self.charge.name().to_string(),
            monitor_pid: Some(self.me.0),
            monitor_start_time: Some(self.me.1),
            state: state.map(str::to_string),
            settings: self.settings_value.clone(),
            listen: self.cur.listen.clone(),
        }
    }

    fn write_pid_file(&mut self) {
        let info = self.info(None);
        if let Err(e) = self.pid_file.write(&info) {
            let path = self.pid_file.path().display();
            self.say.error(format_args!("cannot write {path}: {e}"));
        }
    }
}

/// The backoff before a restart, after `recent` restarts within the window: 1 s, doubling, at
/// most 60 s.
fn restart_delay(recent: usize) -> Duration {
    Duration::from_secs(1u64 << recent.min(6)).min(Duration::from_secs(60))
}

/// Drops the restarts that are more than `window` before `now`.
fn forget_restarts_before(restarts: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while restarts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > window)
    {
        restarts.pop_front();
    }
}

/// The exit code a launcher gets for a worker that exited before it was ready and said
/// nothing: the worker's own exit code, which is one of workq's; else JOB_FAILED (1), the
/// general failure.
fn startup_exit_code(status: Option<ExitStatus>) -> u8 {
    status
        .and_then(|s| s.code())
        .and_then(|c| u8::try_from(c).ok())
        .filter(|&c| c != exit::OK)
        .unwrap_or(exit::JOB_FAILED)
}

/// `label` (`worker NAME`, `the server`) runs already, with its pids when the file names them.
fn already_running(label: &str, probe: &Probe) -> String {
    match probe.info() {
        Some(i) => format!(
            "{label} is already running (pid {}{})",
            i.pid,
            i.monitor_pid
                .map(|m| format!(", monitor pid {m}"))
                .unwrap_or_default()
        ),
        None => {
            format!("{label} is already running (its PID file is locked by a live process)")
        }
    }
}

/// Rescues the jobs of dead workers at once, rather than waiting for another worker's sweep.
fn rescue_now(store: &dyn Store, run_dir: &Path, say: &Say) {
    match rescue::sweep(store, None) {
        Ok(report) => {
            for r in &report.rescued {
                say.info(format_args!(
                    "rescued job {} (attempt {} lost): now {}",
                    r.job_id, r.attempt, r.new_state
                ));
            }
            if !report.rescued.is_empty() {
                doorbell::ring_all(run_dir);
            }
        }
        Err(e) => say.error(format_args!("sweep for dead workers failed: {e}")),
    }
}

/// The live registry row of the worker process `pid` (started at `start_time`) that the monitor
/// knows as `id` once it reported ready, and how old its heartbeat is. The process's own row is
/// found by pid and start time too: after a rejoin it has a new id.
fn heartbeat_age(
    store: &dyn Store,
    id: Option<WorkerId>,
    pid: i32,
    start_time: u64,
) -> Option<(WorkerId, Duration)> {
    id?;
    let rows = store.workers(false).ok()?;
    let host = procinfo::hostname();
    let rec = rows.iter().find(|w| Some(w.id) == id).or_else(|| {
        rows.iter()
            .filter(|w| w.host == host && w.pid == pid && w.pid_start_time == start_time)
            .max_by_key(|w| w.id)
    })?;
    Some((rec.id, store.now().since(rec.heartbeat_at)))
}

/// Starts one worker (or server) process under this monitor, with a waiter and a readiness
/// reader.
fn start_worker(
    command: &CommandLine,
    settings: DaemonSettings<'_>,
    tx: &Sender<Ev>,
    generation: &mut u32,
) -> std::io::Result<Current> {
    *generation += 1;
    let g = *generation;
    let pipe = ready::pipe()?;
    let mut cmd = command.command();
    let (var, value) = settings.env();
    let noun = settings.noun();
    cmd.env(var, value)
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
        .name(format!("{noun}-ready"))
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
        .name(format!("{noun}-wait"))
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
        listen: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_one_second_doubling_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn only_restarts_within_the_window_count() {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let mut r: VecDeque<Instant> = [70, 60, 59, 1]
            .iter()
            .map(|&s| now - Duration::from_secs(s))
            .collect();
        forget_restarts_before(&mut r, window, now);
        assert_eq!(
            r.len(),
            3,
            "the one 70 s ago is forgotten, 60 s ago is still in"
        );
        forget_restarts_before(&mut r, window, now + Duration::from_secs(30));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_silent_startup_failure_passes_the_workers_own_exit_code_on() {
        use std::os::unix::process::ExitStatusExt;
        let code = |c: i32| Some(ExitStatus::from_raw(c << 8));
        assert_eq!(startup_exit_code(code(exit::UNAVAILABLE.into())), 5);
        assert_eq!(startup_exit_code(code(exit::USAGE.into())), 2);
        assert_eq!(
            startup_exit_code(code(0)),
            exit::JOB_FAILED,
            "0 is no failure"
        );
        assert_eq!(
            startup_exit_code(Some(ExitStatus::from_raw(9))),
            1,
            "a signal"
        );
        assert_eq!(startup_exit_code(None), 1, "status unknown");
    }
}
