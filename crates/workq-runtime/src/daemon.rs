//! `worker start --daemon` and `serve -d`: start a monitor (with the command line the caller
//! gives, normally the running binary) in its own session, with stdin from /dev/null and output
//! to the worker's (or server's) log, and wait on a readiness pipe until the worker is
//! registered and claiming (or the server is listening). Never `fork()` a process that may have
//! threads.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use workq_core::exit;

use crate::ready::{self, Report, Waited};
use crate::{logger, spawn, DaemonSettings, ServerSettings, WorkerSettings};

/// How to start one of a daemon's processes: the caller's program and the arguments that make
/// it a monitor or a worker (this crate does not know the command line's grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program (normally the running executable).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl CommandLine {
    /// A command for it, to which the starter adds environment and descriptors.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }
}

/// A daemon that reported ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// The worker process (the one that runs jobs).
    pub worker_pid: i32,
    /// Its monitor.
    pub monitor_pid: i32,
    /// The worker's registry id.
    pub worker_id: i64,
    /// Attempts it took.
    pub attempts: u32,
}

/// A background server that reported it is listening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedServer {
    /// The server process.
    pub pid: i32,
    /// Its monitor.
    pub monitor_pid: i32,
    /// The address it is bound to (the real port when port 0 was asked for).
    pub listen: String,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why a daemon did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    /// Exit code category (ARCHITECTURE.md §7.1).
    pub code: u8,
    /// The reason, in one sentence.
    pub reason: String,
    /// The last lines of the worker log.
    pub log_tail: Vec<String>,
    /// Attempts made.
    pub attempts: u32,
}

/// Attempts at starting a daemon before giving up.
pub const START_ATTEMPTS: u32 = 3;

/// Starts a monitor with `monitor` for `settings` and waits until its worker is ready,
/// retrying a failed start up to [`START_ATTEMPTS`] times. `say` hears each failed attempt.
/// Errors a retry cannot fix (usage, not found, already running) are not retried.
pub fn launch(
    monitor: &CommandLine,
    settings: &WorkerSettings,
    ready_timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Launched, LaunchError> {
    let settings = DaemonSettings::Worker(settings);
    let (monitor_pid, report, attempts) = launch_any(monitor, settings, ready_timeout, say)?;
    match report {
        Report::Ready { pid, worker_id } => Ok(Launched {
            worker_pid: pid,
            monitor_pid,
            worker_id,
            attempts,
        }),
        other => Err(wrong_report(settings, &other, attempts)),
    }
}

/// Starts the background server's monitor with `monitor` and waits until the server listens,
/// retrying as [`launch`] does.
pub fn launch_server(
    monitor: &CommandLine,
    settings: &ServerSettings,
    ready_timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<LaunchedServer, LaunchError> {
    let settings = DaemonSettings::Server(settings);
    let (monitor_pid, report, attempts) = launch_any(monitor, settings, ready_timeout, say)?;
    match report {
        Report::Listening { pid, addr } => Ok(LaunchedServer {
            pid,
            monitor_pid,
            listen: addr,
            attempts,
        }),
        other => Err(wrong_report(settings, &other, attempts)),
    }
}

/// A monitor that reported ready with the other kind's report: a workq of another version
/// answered (the command lines name the running binary, so it cannot happen in one install).
fn wrong_report(settings: DaemonSettings<'_>, report: &Report, attempts: u32) -> LaunchError {
    LaunchError {
        code: exit::JOB_FAILED,
        reason: format!(
            "the {}'s monitor reported {report:?}, which is not the report of a {}",
            settings.noun(),
            settings.noun()
        ),
        log_tail: logger::tail(settings.log_file(), 15),
        attempts,
    }
}

/// The launch of either kind of daemon: (monitor pid, its ready report, attempts).
fn launch_any(
    monitor: &CommandLine,
    settings: DaemonSettings<'_>,
    ready_timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<(i32, Report, u32), LaunchError> {
    let mut last = None;
    for attempt in 1..=START_ATTEMPTS {
        match launch_once(monitor, settings, ready_timeout) {
            Ok((monitor_pid, report)) => return Ok((monitor_pid, report, attempt)),
            Err((code, reason)) => {
                let retry = !matches!(code, exit::USAGE | exit::NOT_FOUND | exit::CONFLICT)
                    && attempt < START_ATTEMPTS;
                if retry {
                    say(&format!(
                        "start attempt {attempt} of {START_ATTEMPTS} failed: {reason}; trying again"
                    ));
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                }
                last = Some((code, reason));
                if !retry {
                    return Err(LaunchError {
                        code,
                        reason: last.map(|l| l.1).unwrap_or_default(),
                        log_tail: logger::tail(settings.log_file(), 15),
                        attempts: attempt,
                    });
                }
            }
        }
    }
    let (code, reason) = last.unwrap_or((exit::JOB_FAILED, "unknown failure".into()));
    Err(LaunchError {
        code,
        reason,
        log_tail: logger::tail(settings.log_file(), 15),
        attempts: START_ATTEMPTS,
    })
}

/// Starts one monitor and waits for its report: (monitor pid, the ready report), or an exit
/// code and the reason.
fn launch_once(
    monitor: &CommandLine,
    settings: DaemonSettings<'_>,
    ready_timeout: Duration,
) -> Result<(i32, Report), (u8, String)> {
    let (out, err) = open_log(settings)?;
    let pipe =
        ready::pipe().map_err(|e| (exit::UNAVAILABLE, format!("cannot create a pipe: {e}")))?;
    let mut cmd = monitor.command();
    let (var, value) = settings.env();
    cmd.env(var, value)
        .env(ready::READY_FD_ENV, "3")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let child = spawn::spawn_with_fd3(cmd, true, 0, pipe.write.as_raw_fd()).map_err(|e| {
        let program = monitor.program.display();
        (exit::UNAVAILABLE, format!("cannot start {program}: {e}"))
    })?;
    drop(pipe.write);
    let outcome = ready::wait_report(&pipe.read, ready_timeout);
    judge(child, outcome, ready_timeout, settings.noun())
}

/// The worker's (or server's) log, opened twice to be the monitor's stdout and stderr.
fn open_log(settings: DaemonSettings<'_>) -> Result<(File, File), (u8, String)> {
    let log = settings.log_file();
    let noun = settings.noun();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            (
                exit::UNAVAILABLE,
                format!("cannot create log directory {}: {e}", dir.display()),
            )
        })?;
    }
    let cannot_open = |e: std::io::Error| {
        (
            exit::UNAVAILABLE,
            format!("cannot open {noun} log {}: {e}", log.display()),
        )
    };
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(cannot_open)?;
    let err = out.try_clone().map_err(cannot_open)?;
    Ok((out, err))
}

/// What the monitor's report (or its silence) means for the start of its `noun` (`worker`,
/// `server`).
fn judge(
    mut child: Child,
    outcome: Waited,
    ready_timeout: Duration,
    noun: &str,
) -> Result<(i32, Report), (u8, String)> {
    let monitor_pid = child.id() as i32;
    match outcome {
        Waited::Got(Some(report @ (Report::Ready { .. } | Report::Listening { .. }))) => {
            // The monitor lives on in its own session; it is reparented when we exit.
            drop(child);
            Ok((monitor_pid, report))
        }
        Waited::Got(Some(Report::Error { code, message })) => {
            let _ = child.wait();
            Err((code, message))
        }
        Waited::Got(None) | Waited::Closed => {
            let status = child.wait().ok();
            Err((
                exit::JOB_FAILED,
                format!(
                    "the {noun}'s monitor exited ({}) before the {noun} was ready",
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "status unknown".into())
                ),
            ))
        }
        Waited::TimedOut => {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe {
                libc::kill(monitor_pid, libc::SIGTERM);
            }
            let _ = child.wait();
            Err((
                exit::JOB_FAILED,
                format!(
                    "the {noun} was not ready after {}",
                    workq_core::format_duration(ready_timeout)
                ),
            ))
        }
    }
}
