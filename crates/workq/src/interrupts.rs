//! Ctrl-C, SIGTERM and SIGHUP as a message to poll, for commands that wait.

use std::sync::mpsc::{self, Receiver};

/// Ctrl-C, SIGTERM and SIGHUP, collected instead of killing the process.
pub struct Interrupts {
    rx: Receiver<libc::c_int>,
}

impl Interrupts {
    /// Starts collecting; call before starting any thread or child.
    pub fn install() -> Self {
        workq_runtime::signals::block_terminating();
        let (tx, rx) = mpsc::channel();
        workq_runtime::signals::forward_terminating(tx, |s| s);
        Interrupts { rx }
    }

    /// The signal received since the last call, if any.
    pub fn received(&self) -> Option<libc::c_int> {
        self.rx.try_recv().ok()
    }
}
