//! A step of the worker: claim what fits, hand it to the slot threads, and send the results
//! and process records that wait, several exits to one durable commit (group commit).

use std::time::{Duration, Instant};

use workq_core::JobState;
use workq_store::{FinishOutcome, FinishRequest, SpawnRecord};

use super::decide;
use super::event_loop::Loop;

/// How long finished jobs' results may wait for others to share their commit (and its fsync).
pub(super) const COMMIT_DELAY: Duration = Duration::from_millis(2);

/// After a failed store call, how long before the next try.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What waits to be written to the store, and when it goes.
#[derive(Default)]
pub(super) struct Outbox {
    /// Results of ended jobs.
    pub results: Vec<FinishRequest>,
    /// Processes started but not yet recorded: they go out with the results.
    pub spawns: Vec<SpawnRecord>,
    /// When the results and spawn records held back for a group commit go out.
    pub flush_at: Option<Instant>,
    /// After a failed step, not before this.
    pub retry_at: Option<Instant>,
}

impl Outbox {
    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.spawns.is_empty()
    }

    /// When what waits should go out, if anything waits.
    pub fn flush_time(&self, now: Instant) -> Option<Instant> {
        decide::flush_time(!self.is_empty(), self.flush_at, self.retry_at, now)
    }
}

impl Loop<'_> {
    fn free_slots(&self) -> u32 {
        self.opts.slots.saturating_sub(self.running.len() as u32)
    }

    /// Claims what fits (unless draining, paused or fenced) and starts it, then sends the
    /// results that were waiting and the processes just started in one durable transaction.
    /// Returns when to look again for scheduled jobs, if any wait, or for a retry after an
    /// error.
    ///
    /// The claim commits first, without an fsync (a claim lost to a power cut only means a
    /// re-run, and its job died in the same cut), so that every attempt is on record before its
    /// process exists; the results' fsync then overlaps the new jobs instead of delaying them.
    pub(super) fn step_and_spawn(&mut self) -> Option<Instant> {
        let draining = self.drain.is_some();
        let free = self.free_slots();
        let limit = decide::claim_limit(free, draining, self.standing.paused, self.standing.fenced);
        if limit == 0 && self.outbox.is_empty() {
            return None;
        }
        let got = match self.claim(limit, free) {
            Ok(got) => got,
            Err(retry_at) => return Some(retry_at),
        };
        if let Err(retry_at) = self.commit(draining) {
            return Some(retry_at);
        }
        self.outbox.retry_at = None;
        if decide::look_for_scheduled(limit, got) {
            return self.next_scheduled();
        }
        None
    }

    /// Claims up to `limit` jobs and dispatches them; returns how many, or when to retry.
    fn claim(&mut self, limit: u32, free: u32) -> Result<u32, Instant> {
        if limit == 0 {
            return Ok(0);
        }
        let claimed = if self.opts.only_jobs.is_empty() {
            self.store.claim(self.id, &self.opts.queues, limit)
        } else {
            let only = &self.opts.only_jobs;
            self.store
                .claim_ids(self.id, &self.opts.queues, only, limit)
        };
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => return Err(self.store_failed("could not claim jobs", &e)),
        };
        let got = claimed.len() as u32;
        if got > 0 {
            self.log
                .debug(format_args!("claimed {got} job(s) for {free} free slot(s)"));
        }
        for job in claimed {
            self.dispatch(job);
        }
        Ok(got)
    }

    /// Sends what waits, unless it may still wait for company (group commit: while other jobs
    /// run, results wait up to COMMIT_DELAY for the next exits, so that one fsync covers several
    /// of them; nothing is visible before it is durable, only later, by at most the delay).
    /// On failure, everything is kept for the retry, whose time it returns.
    fn commit(&mut self, draining: bool) -> Result<(), Instant> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let deadline = *self.outbox.flush_at.get_or_insert(now + COMMIT_DELAY);
        if !decide::commit_now(draining, !self.running.is_empty(), now, deadline) {
            return Ok(());
        }
        let spawns = std::mem::take(&mut self.outbox.spawns);
        match self
            .store
            .step(self.id, &spawns, &self.outbox.results, &self.opts.queues, 0)
        {
            Ok((outcomes, _)) => {
                self.outbox.flush_at = None;
                self.account(outcomes);
                Ok(())
            }
            Err(e) => {
                self.outbox.spawns = spawns;
                let what = format!(
                    "could not record {} result(s) and {} started job(s) (kept, will retry)",
                    self.outbox.results.len(),
                    self.outbox.spawns.len()
                );
                Err(self.store_failed(&what, &e))
            }
        }
    }

    /// When the next scheduled job of our queues comes due, if one is scheduled.
    fn next_scheduled(&self) -> Option<Instant> {
        match self.store.next_run_at(&self.opts.queues) {
            Ok(Some(at)) => {
                let wait = at.since(self.store.now());
                Some(Instant::now() + wait + Duration::from_millis(1))
            }
            Ok(None) => None,
            Err(e) => {
                self.log
                    .error(format_args!("cannot read the schedule: {e}"));
                None
            }
        }
    }

    /// Counts and logs what the store made of the results just sent, and forgets them.
    fn account(&mut self, outcomes: Vec<FinishOutcome>) {
        for (req, out) in self.outbox.results.iter().zip(outcomes) {
            match out {
                FinishOutcome::Done(JobState::Succeeded) => self.tally.done += 1,
                FinishOutcome::Done(_) => self.tally.failed += 1,
                FinishOutcome::Requeued(at) => {
                    if req.outcome.counts_as_failure() {
                        self.log.info(format_args!(
                            "job {} will be retried at {}",
                            req.job_id,
                            at.to_rfc3339()
                        ));
                    }
                }
                FinishOutcome::Stale => self.log.info(format_args!(
                    "job {}: its result arrived after the job was taken over; ignored",
                    req.job_id
                )),
            }
        }
        self.outbox.results.clear();
    }

    /// Logs a failed store call and sets when to try again.
    fn store_failed(&mut self, what: &str, e: &dyn std::fmt::Display) -> Instant {
        self.log.error(format_args!("{what}: {e}"));
        let at = Instant::now() + RETRY_AFTER;
        self.outbox.retry_at = Some(at);
        at
    }
}
