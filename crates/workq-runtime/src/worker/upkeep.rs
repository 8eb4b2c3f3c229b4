//! The worker's periodic duties towards the store: heartbeat, the pause flag, and the sweep
//! (rescue of dead workers' jobs, jobs the store thinks we forgot, pruning and purging).

use std::time::{Duration, Instant};

use workq_core::{format_duration, JobId, JobState, Outcome, Timestamp};
use workq_store::{FinishRequest, Heartbeat};

use super::decide;
use super::event_loop::Loop;
use crate::{doorbell, rescue};

/// How the worker stands with the store.
pub(super) struct Standing {
    /// Paused by `workq worker pause`: it claims nothing new.
    pub paused: bool,
    /// Registered again under a new id since `on_ready` last heard of it.
    pub rejoined: bool,
    /// Its jobs were stopped because the store could not be reached (the fence watchdog), or
    /// because it registered again: it claims nothing until the watchdog's fence is down and
    /// their exits are in (`Loop::lift_fence_when_clear`).
    pub fenced: bool,
}

/// When the sweep last did its hourly work, and whether it left some undone.
#[derive(Default)]
pub(super) struct Upkeep {
    /// When the registry was last pruned (and old jobs purged).
    pub last_prune: Option<Instant>,
    /// The last purge stopped at its cap: purge again at the next sweep, not in an hour.
    pub purge_backlog: bool,
}

/// How often the registry is pruned and old jobs purged.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Jobs deleted per purge transaction.
const PURGE_BATCH: u32 = 500;
/// Purge transactions per sweep at most.
const PURGE_BATCHES: usize = 20;

impl Loop<'_> {
    /// Heartbeats (with the pause flag read first, unless draining), lifts a self-fence once
    /// the store answers, sweeps, and makes the next turn look at everything again.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        let draining = self.drain.is_some();
        if !draining {
            self.refresh_pause();
        }
        let state = decide::heartbeat_state(draining, self.standing.paused);
        // The row's heartbeat is at least this recent once the call succeeds.
        let sent = Instant::now();
        match self.store.heartbeat(self.id, state) {
            Ok(Heartbeat::Alive) => {
                self.fence.beat_ok(sent);
                crate::sdnotify::watchdog();
                // (Only the watchdog's fence: the worker's own lasts until old exits are in.)
                if self.fence.lift() {
                    // Another host may have judged this row dead from a read made during the
                    // silence and be about to rescue it: the fenced id is retired, not revived.
                    self.log.info(format_args!(
                        "the store answers again after a fence: retiring worker id {} and registering again",
                        self.id
                    ));
                    self.rejoin(now, false);
                }
            }
            Ok(Heartbeat::Ended) => {
                self.fence.beat_ok(sent);
                self.fence.lift();
                self.log.error(format_args!(
                    "the store says worker id {} has ended (declared dead by another host while the \
                     store was out of reach, or stopped): its jobs were taken over; stopping the {} \
                     job(s) still running here and registering again",
                    self.id,
                    self.running.len()
                ));
                self.rejoin(now, true);
            }
            Err(e) => {
                self.log.error(format_args!("heartbeat failed: {e}"));
            }
        }
        self.sweep();
        // A wake-up may have been lost (a notification during a reconnect): look again.
        self.agenda.outside_change();
        self.agenda.next_heartbeat = now + self.opts.heartbeat;
    }

    /// Registers again under a new id, after our row `ended` (another host declared us dead
    /// and took our jobs, or someone marked us stopped) or after a fence (the row may be about
    /// to be). Whatever still runs here is killed: another host has it or may soon. The worker
    /// claims nothing until those jobs' exits are in (`Loop::lift_fence_when_clear`), so a job
    /// coming back to it never meets its own old attempt (ARCHITECTURE.md §4.4).
    fn rejoin(&mut self, now: Instant, ended: bool) {
        let old = self.id;
        self.standing.fenced = true;
        self.kill_taken_over(now);
        match super::register(self.store, &self.opts) {
            Ok(me) => {
                self.id = me.id;
                self.standing.rejoined = true;
                if !ended {
                    // What it still runs is requeued by its own results (interrupted) or by
                    // the rescue of the old row; nothing is claimed under it again.
                    let why = format!("fenced off from the store; rejoined as worker id {}", me.id);
                    if let Err(e) = self.store.worker_stopped(old, &why) {
                        self.log
                            .error(format_args!("could not retire worker id {old}: {e}"));
                    }
                }
                self.log.info(format_args!(
                    "rejoined as worker id {} (was {old}): claiming again once its {} old job(s) have ended",
                    me.id,
                    self.running.len()
                ));
            }
            Err(e) => {
                // Claims under the ended id take nothing; the next heartbeat tries again.
                self.log.error(format_args!(
                    "could not register again: {e}; retrying at the next heartbeat"
                ));
            }
        }
    }

    /// Follows `workq worker pause/resume`: the flag lives in the store under our name.
    pub(super) fn refresh_pause(&mut self) {
        let paused = match self.store.worker_paused(&self.host, &self.opts.name) {
            Ok(p) => p,
            Err(e) => {
                self.log
                    .error(format_args!("cannot read the pause flag: {e}"));
                return;
            }
        };
        if paused == self.standing.paused {
            return;
        }
        self.standing.paused = paused;
        self.log.info(format_args!(
            "{}",
            if paused {
                "paused: claiming nothing new; running jobs go on"
            } else {
                "resumed: claiming again"
            }
        ));
        let state = decide::heartbeat_state(false, paused);
        // An ended row is dealt with by the periodic heartbeat.
        if let Err(e) = self.store.heartbeat(self.id, state) {
            self.log.error(format_args!("heartbeat failed: {e}"));
        }
    }

    /// Hourly pruning and purging, jobs the store thinks we forgot, and rescue of the jobs of
    /// dead workers.
    pub(super) fn sweep(&mut self) {
        let due = self
            .upkeep
            .last_prune
            .is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if due {
            self.upkeep.last_prune = Some(Instant::now());
            self.prune_registry();
        }
        // A stream faster than one sweep's share is caught up a share per heartbeat, so
        // the store cannot grow without bound.
        if let Some(keep) = self.opts.job_retention {
            if due || self.upkeep.purge_backlog {
                self.upkeep.purge_backlog = self.purge_old_jobs(keep);
            }
        }
        self.requeue_forgotten();
        self.rescue_dead_workers();
    }

    /// Removes ended workers older than the registry retention.
    fn prune_registry(&self) {
        let keep = self.opts.registry_retention;
        let before = Timestamp(self.store.now().0 - keep.as_millis() as i64);
        match self.store.prune_workers(before) {
            Ok(0) => {}
            Ok(n) => self.log.info(format_args!(
                "pruned {n} ended worker(s) older than {} from the registry",
                format_duration(keep)
            )),
            Err(e) => self
                .log
                .error(format_args!("could not prune the registry: {e}")),
        }
    }

    /// Purges one sweep's share of the finished jobs older than `keep`; true if more remain.
    ///
    /// The share is at most PURGE_BATCHES transactions of PURGE_BATCH jobs, with their logs, so
    /// that a sweep never holds the loop up for long.
    fn purge_old_jobs(&self, keep: Duration) -> bool {
        let before = Timestamp(self.store.now().0.saturating_sub(keep.as_millis() as i64));
        let states = [JobState::Succeeded, JobState::Failed, JobState::Cancelled];
        let mut total = 0;
        let mut more = true;
        for _ in 0..PURGE_BATCHES {
            match self.store.purge(before, &states, PURGE_BATCH) {
                Ok(p) => {
                    for f in &p.log_files {
                        let _ = std::fs::remove_file(f);
                    }
                    total += p.jobs;
                    if p.jobs < u64::from(PURGE_BATCH) {
                        more = false;
                        break;
                    }
                }
                Err(e) => {
                    self.log
                        .error(format_args!("could not purge old jobs: {e}"));
                    more = false;
                    break;
                }
            }
        }
        if total > 0 {
            self.log.info(format_args!(
                "purged {total} job(s) that finished over {} ago",
                format_duration(keep)
            ));
        }
        more
    }

    /// True if the job runs here or its result waits to be sent.
    fn knows(&self, job: JobId) -> bool {
        self.running.contains_key(&job) || self.outbox.results.iter().any(|u| u.job_id == job)
    }

    /// Jobs the store says this worker runs but the worker does not know: a commit reported as
    /// failed that went through after all (a connection lost during COMMIT), whose jobs were
    /// stopped. They go back to the queue as interrupted, which costs them nothing.
    fn requeue_forgotten(&mut self) {
        // Cheap and by worker first; the store-wide list (for the leases) only if needed.
        let Ok(ours) = self.store.running_attempts(self.id) else {
            return;
        };
        if ours.iter().all(|a| self.knows(a.job_id)) {
            return;
        }
        let Ok(all) = self.store.running_jobs() else {
            return;
        };
        for r in all {
            if r.worker_id == Some(self.id) && !self.knows(r.job_id) {
                self.log.info(format_args!(
                    "job {}: the store has it running here, but it is not: queued again",
                    r.job_id
                ));
                self.outbox.results.push(FinishRequest {
                    job_id: r.job_id,
                    lease: r.lease,
                    outcome: Outcome::Interrupted,
                    exit_code: None,
                    signal: None,
                    error: Some("its worker lost track of it; queued again".into()),
                });
            }
        }
    }

    /// Declares dead workers dead and requeues their jobs, ringing the other workers if any
    /// were requeued.
    fn rescue_dead_workers(&self) {
        match rescue::sweep(self.store, Some(self.id)) {
            Ok(report) => {
                for (id, name, reason) in &report.dead_workers {
                    self.log
                        .info(format_args!("worker {name} (id {id}) is dead: {reason}"));
                }
                for r in &report.rescued {
                    self.log.info(format_args!(
                        "rescued job {} (attempt {} lost): now {}",
                        r.job_id, r.attempt, r.new_state
                    ));
                }
                if !report.rescued.is_empty() {
                    doorbell::ring_all(&self.opts.run_dir);
                }
            }
            Err(e) => self
                .log
                .error(format_args!("sweep for dead workers failed: {e}")),
        }
    }
}
