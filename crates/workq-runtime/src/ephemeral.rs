//! A worker started for the length of one command (`submit --wait` with no worker serving).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A worker child process that is stopped (SIGTERM, then waited for) when dropped.
pub struct EphemeralWorker {
    child: Option<Child>,
}

impl EphemeralWorker {
    /// Starts `exe args` (the caller's command line for a temporary worker) with its output
    /// discarded except errors; it gets SIGTERM if this process dies first, so it never
    /// outlives the command that started it.
    pub fn start(exe: &Path, args: &[String]) -> std::io::Result<EphemeralWorker> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = crate::spawn::spawn_with_death_signal(cmd, libc::SIGTERM)?;
        Ok(EphemeralWorker { child: Some(child) })
    }

    /// The worker's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True if it has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Asks it to stop (drain and requeue) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: signalling our own child.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
            }
            let _ = child.wait();
        }
    }
}

impl Drop for EphemeralWorker {
    fn drop(&mut self) {
        self.stop();
    }
}
