//! systemd's notify protocol, for a worker run as a `Type=notify` unit: `READY=1` once it is
//! registered and claiming, `WATCHDOG=1` with each heartbeat the store took, `STOPPING=1` when
//! it starts to drain. Without `NOTIFY_SOCKET` in the environment nothing is sent.
//! Best effort: a message that cannot be sent changes nothing for the worker, and systemd
//! reports the start or watchdog it missed itself.

use sd_notify::NotifyState;

/// The worker is registered and claiming.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A heartbeat reached the store.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The worker has begun to drain and stop.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    // Not unset: the watchdog needs the socket again at every heartbeat.
    let _ = sd_notify::notify(false, states);
}
