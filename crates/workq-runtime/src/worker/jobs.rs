//! The worker's running jobs: handing them to slot threads, what their start and exit mean,
//! and the signals the worker sends them (timeout, cancel, drain, self-fencing).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use workq_core::{format_duration, ClaimedJob, JobId, Outcome};
use workq_store::{FinishRequest, SpawnRecord};

use super::decide::{self, Escalation, StopReason, KILL_AGAIN};
use super::event_loop::Loop;
use super::step::COMMIT_DELAY;
use crate::{container, spawn};

/// A job handed to a slot thread, until its exit is reported.
pub(super) struct Running {
    lease: i64,
    attempt: u32,
    /// 0 until the slot thread reports the process started.
    pgid: i32,
    /// The last signal meant for the job, sent again if it was not started yet.
    signalled: libc::c_int,
    /// Its command line, for the worker log.
    command: String,
    started: Instant,
    /// When its timeout fires; cleared once it has.
    pub deadline: Option<Instant>,
    timeout: Option<Duration>,
    kill_grace: Duration,
    /// Why the worker told it to stop, and when SIGKILL is due.
    pub stopping: Option<(StopReason, Instant)>,
    /// Runtime and name of the job's container, if it runs in one.
    container: Option<(String, String)>,
}

impl Running {
    /// SIGTERM to the job's process group, and `stop` to its container.
    fn term(&mut self) {
        self.signalled = libc::SIGTERM;
        spawn::signal_group(self.pgid, libc::SIGTERM);
        if let Some((runtime, name)) = &self.container {
            container::signal(runtime, name, container::Action::Stop(self.kill_grace));
        }
    }

    /// SIGKILL to the job's process group, and `kill` to its container.
    fn kill(&mut self) {
        self.signalled = libc::SIGKILL;
        spawn::signal_group(self.pgid, libc::SIGKILL);
        if let Some((runtime, name)) = &self.container {
            container::signal(runtime, name, container::Action::Kill);
        }
    }

    /// Tells the job to stop for `why`: SIGTERM now, SIGKILL after its grace.
    fn stop(&mut self, why: StopReason, now: Instant) {
        self.term();
        self.stopping = Some((why, now + self.kill_grace));
    }
}

impl Loop<'_> {
    /// Hands a claimed job to an idle slot thread (started on first need), which starts its
    /// process and watches it; the loop meanwhile goes on. Starting a process blocks the
    /// calling thread until the exec is done, which would otherwise hold up every other slot.
    pub(super) fn dispatch(&mut self, job: ClaimedJob) {
        let now = Instant::now();
        let running = Running {
            lease: job.lease,
            attempt: job.attempt,
            pgid: 0,
            signalled: 0,
            command: job.spec.command_line(),
            started: now,
            deadline: job.spec.timeout.map(|t| now + t),
            timeout: job.spec.timeout,
            kill_grace: job.spec.kill_grace,
            stopping: None,
            container: job.spec.container.as_ref().map(|c| {
                (
                    c.runtime.clone(),
                    workq_core::Container::name(self.slots.store_id(), job.id, job.attempt),
                )
            }),
        };
        let (id, lease) = (job.id, job.lease);
        self.fence
            .hold(id, job.attempt, lease, running.container.clone());
        match self.slots.send(job) {
            Ok(()) => {
                self.running.insert(id, running);
            }
            Err(e) => {
                self.fence.release(id);
                // Not started: it goes back to the queue.
                self.log.error(format_args!(
                    "job {id}: cannot start a thread to run it: {e}"
                ));
                self.outbox.results.push(FinishRequest {
                    job_id: id,
                    lease,
                    outcome: Outcome::Interrupted,
                    exit_code: None,
                    signal: None,
                    error: Some(format!("worker could not run the job: {e}")),
                });
            }
        }
    }

    /// The slot thread started the job: its pid goes out with the next results.
    pub(super) fn on_started(&mut self, job: JobId, pid: i32, log_path: PathBuf) {
        let Some(r) = self.running.get_mut(&job) else {
            // Not ours to run (cannot happen: the entry goes only after the exit is reported);
            // a process nobody watches must not live on.
            spawn::signal_group(pid, libc::SIGKILL);
            return;
        };
        r.pgid = pid;
        // A stop asked for before the process existed reaches it now, with its full grace.
        match r.signalled {
            libc::SIGTERM => {
                r.term();
                let grace = r.kill_grace;
                if let Some((_, kill_at)) = &mut r.stopping {
                    *kill_at = (*kill_at).max(Instant::now() + grace);
                }
            }
            libc::SIGKILL => r.kill(),
            _ => {}
        }
        self.log.info(format_args!(
            "job {job} started (attempt {}, pid {pid}): {}",
            r.attempt, r.command
        ));
        self.outbox.spawns.push(SpawnRecord {
            job_id: job,
            lease: r.lease,
            pid,
            pgid: pid,
            // Unknown (0): reading /proc/PID/stat of a process in the middle of exec cost a
            // tenth of the worker's time per job, and nothing reads it back: a job's
            // processes are found by the marker in their environment.
            pid_start_time: 0,
            log_path: log_path.display().to_string(),
        });
        // It waits for the next results, up to the commit delay, to share their commit.
        self.outbox
            .flush_at
            .get_or_insert_with(|| Instant::now() + COMMIT_DELAY);
    }

    /// The slot thread could not start the job: that is its result.
    pub(super) fn on_spawn_failed(&mut self, job: JobId, message: String) {
        self.fence.release(job);
        let Some(r) = self.running.remove(&job) else {
            return;
        };
        self.log
            .info(format_args!("job {job} could not start: {message}"));
        self.outbox.results.push(FinishRequest {
            job_id: job,
            lease: r.lease,
            outcome: Outcome::SpawnError,
            exit_code: None,
            signal: None,
            error: Some(message),
        });
    }

    /// The job's process ended (with the engine's error line when it ran in a container whose
    /// engine failed): its result waits for the next commit.
    pub(super) fn on_exit(
        &mut self,
        job: JobId,
        status: Option<ExitStatus>,
        engine_line: Option<String>,
    ) {
        use std::os::unix::process::ExitStatusExt;
        // Killed by the fence watchdog while the loop was held up: the fence's doing.
        let fenced = self.fence.release(job);
        let Some(r) = self.running.remove(&job) else {
            return;
        };
        let code = status.and_then(|s| s.code());
        let signal = status.and_then(|s| s.signal());
        let elapsed = format_duration(r.started.elapsed());
        let (outcome, error) = decide::exit_outcome(
            r.stopping
                .map(|s| s.0)
                .or(fenced.then_some(StopReason::Fence)),
            code,
            signal,
            r.timeout,
            r.container.is_some(),
            engine_line.as_deref(),
        );
        self.log.info(format_args!(
            "job {job} attempt {} ended: {outcome} after {elapsed}{}",
            r.attempt,
            error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
        self.outbox.results.push(FinishRequest {
            job_id: job,
            lease: r.lease,
            outcome,
            exit_code: code,
            signal,
            error,
        });
    }

    /// Sends the signals that are due: SIGTERM at a job's timeout, SIGKILL when its grace ends.
    pub(super) fn enforce_deadlines(&mut self, now: Instant) {
        for (id, r) in self.running.iter_mut() {
            match decide::escalation(now, r.deadline, r.stopping.map(|s| s.1)) {
                Some(Escalation::Kill) => {
                    r.kill();
                    r.stopping = r.stopping.map(|(why, _)| (why, now + KILL_AGAIN));
                }
                Some(Escalation::Term) => {
                    self.log.info(format_args!(
                        "job {id} timed out after {}: sending SIGTERM, SIGKILL in {}",
                        r.timeout.map(format_duration).unwrap_or_default(),
                        format_duration(r.kill_grace)
                    ));
                    r.stop(StopReason::Timeout, now);
                    r.deadline = None;
                }
                None => {}
            }
        }
    }

    /// Tells every running job not already stopping to stop; they go back to the queue. Once
    /// per drain: at its stop timeout, or sooner on a second signal.
    pub(super) fn interrupt_all(&mut self, now: Instant) {
        match &mut self.drain {
            Some(d) if !d.interrupted => d.interrupted = true,
            _ => return,
        }
        for (id, r) in self.running.iter_mut() {
            if r.stopping.is_none() {
                self.log.info(format_args!(
                    "job {id}: interrupting (SIGTERM, SIGKILL in {}); it goes back to the queue",
                    format_duration(r.kill_grace)
                ));
                r.stop(StopReason::Drain, now);
            }
        }
    }

    /// Makes every SIGKILL already planned due at `now`.
    pub(super) fn kill_stopping_now(&mut self, now: Instant) {
        for r in self.running.values_mut() {
            if let Some((_, kill_at)) = &mut r.stopping {
                *kill_at = now;
            }
        }
    }

    /// Stops the jobs whose cancel was requested.
    pub(super) fn check_cancels(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let requests = match self.store.cancel_requests(self.id) {
            Ok(r) => r,
            Err(e) => {
                self.log
                    .error(format_args!("cannot read cancel requests: {e}"));
                return;
            }
        };
        let now = Instant::now();
        for (id, lease) in requests {
            if let Some(r) = self.running.get_mut(&id) {
                if r.lease == lease && r.stopping.is_none() {
                    self.log.info(format_args!(
                        "job {id}: cancel requested, sending SIGTERM (SIGKILL in {})",
                        format_duration(r.kill_grace)
                    ));
                    r.stop(StopReason::Cancel, now);
                }
            }
        }
    }

    /// Follows the fence watchdog (`worker/fence.rs`): once it has killed our jobs because the
    /// store was silent too long, the loop claims nothing and treats their exits as the
    /// fence's (`interrupted`), and kills again whatever it still knows of (ARCHITECTURE.md §4.4).
    pub(super) fn fence_if_unreachable(&mut self, now: Instant) {
        if self.standing.fenced || !self.fence.is_fenced() {
            return;
        }
        self.standing.fenced = true;
        // Only what the watchdog killed: a job that had ended first keeps its own outcome.
        for (id, r) in self.running.iter_mut() {
            if self.fence.killed(*id) {
                r.stopping = Some((StopReason::Fence, now + KILL_AGAIN));
            }
        }
    }

    /// Lifts the worker's own fence once the watchdog's is down (a heartbeat got through, or
    /// the worker registered again) and every job it killed has reported its exit.
    pub(super) fn lift_fence_when_clear(&mut self) {
        if !self.standing.fenced || self.fence.is_fenced() {
            return;
        }
        let pending = self
            .running
            .values()
            .any(|r| matches!(r.stopping, Some((StopReason::Fence, _))));
        if !pending {
            self.standing.fenced = false;
            self.log
                .info(format_args!("the store answers again: claiming again"));
        }
    }

    /// SIGKILLs every running job (and its container) at once: another host may run them now
    /// or soon, so no grace (self-fencing, and a worker that learns it was declared dead).
    pub(super) fn kill_taken_over(&mut self, now: Instant) {
        for r in self.running.values_mut() {
            r.stopping = Some((StopReason::Fence, now + KILL_AGAIN));
            r.kill();
        }
    }
}
