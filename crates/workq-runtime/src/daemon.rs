//! `worker start --daemon`: re-execute the binary as a monitor in its own session, with stdin
//! from /dev/null and output to the worker log, and wait on a readiness pipe until the worker
//! is registered and claiming. Never `fork()` a process that may have threads.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ready::{self, Report, Waited};
use crate::{logger, spawn, WorkerSettings, SETTINGS_ENV};

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

/// Why a daemon did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    /// Exit code category (DESIGN §6).
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

/// Starts `exe <global_args> worker _monitor` for `settings` and waits until its worker is
/// ready, retrying a failed start up to [`START_ATTEMPTS`] times. `say` hears each failed
/// attempt. Errors a retry cannot fix (usage, already running) are not retried.
pub fn launch(
    exe: &Path,
    global_args: &[OsString],
    settings: &WorkerSettings,
    ready_timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Launched, LaunchError> {
    let mut last = None;
    for attempt in 1..=START_ATTEMPTS {
        match launch_once(exe, global_args, settings, ready_timeout) {
            Ok((monitor_pid, worker_pid, worker_id)) => {
                return Ok(Launched {
                    worker_pid,
                    monitor_pid,
                    worker_id,
                    attempts: attempt,
                })
            }
            Err((code, reason)) => {
                let retry = !matches!(code, 2..=4) && attempt < START_ATTEMPTS;
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
                        log_tail: logger::tail(&settings.log_file, 15),
                        attempts: attempt,
                    });
                }
            }
        }
    }
    let (code, reason) = last.unwrap_or((1, "unknown failure".into()));
    Err(LaunchError {
        code,
        reason,
        log_tail: logger::tail(&settings.log_file, 15),
        attempts: START_ATTEMPTS,
    })
}

fn launch_once(
    exe: &Path,
    global_args: &[OsString],
    settings: &WorkerSettings,
    ready_timeout: Duration,
) -> Result<(i32, i32, i64), (u8, String)> {
    let log = settings.log_file.clone();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            (
                5,
                format!("cannot create log directory {}: {e}", dir.display()),
            )
        })?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| (5, format!("cannot open worker log {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| (5, format!("cannot open worker log {}: {e}", log.display())))?;
    let pipe = ready::pipe().map_err(|e| (5, format!("cannot create a pipe: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(global_args)
        .args(["worker", "_monitor"])
        .env(SETTINGS_ENV, settings.to_json())
        .env(ready::READY_FD_ENV, "3")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = spawn::spawn_with_fd3(cmd, true, 0, pipe.write.as_raw_fd())
        .map_err(|e| (5, format!("cannot start {}: {e}", exe.display())))?;
    drop(pipe.write);
    let monitor_pid = child.id() as i32;
    let outcome = ready::wait_report(&pipe.read, ready_timeout);
    match outcome {
        Waited::Got(Some(Report::Ready { pid, worker_id })) => {
            // The monitor lives on in its own session; it is reparented when we exit.
            drop(child);
            Ok((monitor_pid, pid, worker_id))
        }
        Waited::Got(Some(Report::Error { code, message })) => {
            let _ = child.wait();
            Err((code, message))
        }
        Waited::Got(None) | Waited::Closed => {
            let status = child.wait().ok();
            Err((
                1,
                format!(
                    "the worker's monitor exited ({}) before the worker was ready",
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
                1,
                format!(
                    "the worker was not ready after {}",
                    workq_core::format_duration(ready_timeout)
                ),
            ))
        }
    }
}
