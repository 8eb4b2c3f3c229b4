//! Termination signals delivered as messages instead of asynchronous handlers.
//!
//! The signals are blocked in every thread (the mask is inherited, so block before spawning
//! threads) and one thread collects them with `sigwait`. Job processes get an empty mask back in
//! `spawn`, because a blocked mask survives `exec`.

use std::sync::mpsc::Sender;

/// The signals a worker or a waiting client turns into messages.
pub const TERMINATING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn set_of(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the terminating signals in the calling thread (and threads it starts later).
pub fn block_terminating() {
    let set = set_of(&TERMINATING);
    // SAFETY: changes only this thread's mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts a thread that forwards each terminating signal, mapped by `wrap`, to `tx`.
pub fn forward_terminating<T: Send + 'static>(
    tx: Sender<T>,
    wrap: impl Fn(libc::c_int) -> T + Send + 'static,
) {
    let set = set_of(&TERMINATING);
    let spawned = std::thread::Builder::new()
        .name("workq-signals".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: waits for one of the blocked signals in `set`.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 && tx.send(wrap(sig)).is_err() {
                return;
            }
        });
    if spawned.is_err() {
        // Without the thread the signals stay blocked; restore default handling instead.
        // SAFETY: changes only this thread's mask.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Name of a signal for messages.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}
