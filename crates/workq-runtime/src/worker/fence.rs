//! The fence watchdog: on a store shared across hosts, a thread of its own kills this worker's
//! jobs once no heartbeat has reached the store for `fence_after()`, so that a store call
//! blocked on a network that drops packets cannot hold the fence back past the TTL, when other
//! hosts may rescue the jobs (ARCHITECTURE.md §4.4).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use workq_core::{format_duration, JobId};

use super::decide;
use crate::logger::Logger;
use crate::{container, procinfo, spawn};

/// How often a fenced watchdog kills again what it holds: a process that escaped its group
/// and still carries the attempt's marker, or a job whose start raced the fence.
const KILL_AGAIN: Duration = Duration::from_millis(500);

/// A job this worker holds, as the watchdog must know it to kill it.
struct Held {
    attempt: u32,
    lease: i64,
    /// The process group, once its slot thread started it (0 before).
    pgid: i32,
    /// Runtime and name of its container, if it runs in one.
    container: Option<(String, String)>,
    /// Its process has ended (reported by its slot thread): nothing left to kill.
    exited: bool,
    /// The watchdog killed it: its exit is the fence's doing, not its own.
    fenced: bool,
}

#[derive(Default)]
struct State {
    /// The silence at which the watchdog fenced, while fenced.
    fenced: Option<Duration>,
    stop: bool,
    held: HashMap<JobId, Held>,
}

/// What the loop, the slot threads and the watchdog share.
pub(super) struct Fence {
    /// `None` on a store that only this host uses: nothing to fence against.
    limit: Option<Duration>,
    base: Instant,
    /// Milliseconds from `base` to the start of the last heartbeat that reached the store.
    last_ok_ms: AtomicU64,
    state: Mutex<State>,
    wake: Condvar,
}

impl Fence {
    /// A fence that trips after `limit` of silence, or never (`None`).
    pub fn new(limit: Option<Duration>) -> Fence {
        Fence {
            limit,
            base: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    /// True if a watchdog thread is needed.
    pub fn armed(&self) -> bool {
        self.limit.is_some()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop the fence: the data stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heartbeat that started at `at` reached the store.
    pub fn beat_ok(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64;
        self.last_ok_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// How long since the last heartbeat that reached the store started.
    fn silence(&self, now: Instant) -> Duration {
        let last = self.base + Duration::from_millis(self.last_ok_ms.load(Ordering::Acquire));
        now.saturating_duration_since(last)
    }

    /// The loop took job `job`; the watchdog kills it if it fences.
    pub fn hold(&self, job: JobId, attempt: u32, lease: i64, container: Option<(String, String)>) {
        if !self.armed() {
            return;
        }
        self.state().held.insert(
            job,
            Held {
                attempt,
                lease,
                pgid: 0,
                container,
                exited: false,
                fenced: false,
            },
        );
    }

    /// A slot thread started `job` as group `pgid`: killed at once if the fence is up.
    pub fn started(&self, job: JobId, pgid: i32) {
        if !self.armed() {
            return;
        }
        let target = {
            let mut st = self.state();
            let fenced = st.fenced.is_some();
            st.held.get_mut(&job).and_then(|h| {
                h.pgid = pgid;
                fenced.then(|| {
                    h.fenced = true;
                    Target {
                        job,
                        attempt: h.attempt,
                        lease: h.lease,
                        pgid,
                        container: h.container.clone(),
                    }
                })
            })
        };
        if let Some(t) = target {
            kill(&t);
        }
    }

    /// A slot thread saw `job`'s process end.
    pub fn exited(&self, job: JobId) {
        if !self.armed() {
            return;
        }
        if let Some(h) = self.state().held.get_mut(&job) {
            h.exited = true;
        }
    }

    /// The loop is done with `job`: true if the watchdog killed it.
    pub fn release(&self, job: JobId) -> bool {
        if !self.armed() {
            return false;
        }
        self.state().held.remove(&job).is_some_and(|h| h.fenced)
    }

    /// True if the watchdog killed `job` (it stays held until released).
    pub fn killed(&self, job: JobId) -> bool {
        self.armed() && self.state().held.get(&job).is_some_and(|h| h.fenced)
    }

    /// True while fenced: the loop claims nothing.
    pub fn is_fenced(&self) -> bool {
        self.armed() && self.state().fenced.is_some()
    }

    /// A heartbeat got through: lifts the fence. True if it was up.
    pub fn lift(&self) -> bool {
        self.armed() && self.state().fenced.take().is_some()
    }

    /// Ends the watchdog.
    pub fn stop(&self) {
        self.state().stop = true;
        self.wake.notify_all();
    }

    /// The watchdog thread's body, until [`Fence::stop`].
    pub fn watch(&self, log: &Logger) {
        let Some(limit) = self.limit else { return };
        let mut st = self.state();
        loop {
            if st.stop {
                return;
            }
            let silence = self.silence(Instant::now());
            let wait = if decide::fence_due(st.fenced.is_some(), true, silence, limit) {
                st.fenced = Some(silence);
                let running = st.held.values().filter(|h| !h.exited).count();
                log.error(format_args!(
                    "cannot reach the store for {}: stopping my {running} job(s) before other hosts take them over",
                    format_duration(silence)
                ));
                st = self.kill_held(st);
                KILL_AGAIN
            } else if st.fenced.is_some() {
                st = self.kill_held(st);
                KILL_AGAIN
            } else {
                // Heartbeats only move the point later; wake just after it.
                limit.saturating_sub(silence) + Duration::from_millis(1)
            };
            st = match self.wake.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Marks what still runs as the fence's and kills it, with the lock released while it
    /// kills: reading other processes' environments in `/proc` can block (a process stuck on
    /// an unreachable network filesystem), and nothing else may wait on that.
    fn kill_held<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let targets: Vec<Target> = st
            .held
            .iter_mut()
            .filter(|(_, h)| !h.exited)
            .map(|(job, h)| {
                h.fenced = true;
                Target {
                    job: *job,
                    attempt: h.attempt,
                    lease: h.lease,
                    pgid: h.pgid,
                    container: h.container.clone(),
                }
            })
            .collect();
        drop(st);
        for t in &targets {
            kill(t);
        }
        self.state()
    }
}

/// What the watchdog kills of one job.
struct Target {
    job: JobId,
    attempt: u32,
    lease: i64,
    pgid: i32,
    container: Option<(String, String)>,
}

/// SIGKILLs `t`'s group, whatever still carries its attempt's marker, and its container.
fn kill(t: &Target) {
    if t.pgid > 0 {
        spawn::signal_group(t.pgid, libc::SIGKILL);
    }
    procinfo::kill_attempt_leftovers(procinfo::Marker {
        job: t.job,
        attempt: t.attempt,
        lease: t.lease,
    });
    if let Some((runtime, name)) = &t.container {
        container::signal(runtime, name, container::Action::Kill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unarmed_fence_holds_nothing_and_never_trips() {
        let f = Fence::new(None);
        f.hold(1, 1, 7, None);
        f.started(1, 12345);
        assert!(!f.release(1));
        assert!(!f.is_fenced());
        assert!(!f.lift());
    }

    #[test]
    fn the_watchdog_fences_after_the_silence_and_marks_only_jobs_still_running() {
        let f = std::sync::Arc::new(Fence::new(Some(Duration::from_millis(50))));
        // Pgid 0: nothing to signal; these jobs have no processes.
        f.hold(1, 1, 11, None);
        f.hold(2, 1, 22, None);
        f.exited(2);
        let log = Logger::new(crate::logger::Level::Error, Box::new(std::io::sink()));
        std::thread::scope(|s| {
            let (w, log) = (f.clone(), &log);
            s.spawn(move || w.watch(log));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !f.is_fenced() {
                assert!(Instant::now() < deadline, "the fence never tripped");
                std::thread::sleep(Duration::from_millis(5));
            }
            f.stop();
        });
        assert!(f.release(1), "the running job was the fence's to kill");
        assert!(!f.release(2), "the job that had ended was not");
        // A job started while fenced is killed and marked at once.
        f.hold(3, 1, 33, None);
        f.started(3, 0);
        assert!(f.release(3));
        f.beat_ok(Instant::now());
        assert!(f.lift());
        assert!(!f.is_fenced());
    }
}
