//! The worker loop's decisions, as pure functions of what the loop knows: they take the time
//! as an argument and touch no store, process or clock, so each branch is tested here.

use std::time::{Duration, Instant};

use workq_core::{format_duration, Outcome, WorkerState};

use crate::{container, signals};

/// Why the worker told a running job to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    /// It ran past its timeout.
    Timeout,
    /// Someone cancelled it.
    Cancel,
    /// The worker is stopping and its stop timeout ran out (or it got a second signal).
    Drain,
    /// The worker could not reach a store shared across hosts and fenced itself off.
    Fence,
}

/// What a job's exit means: its outcome, and the error text stored with it. For a job run in a
/// container, an exit status that is the engine's (125, 126, 127) says so, with the engine's
/// last error line from the job's log (`engine_line`), which would otherwise stay hidden there.
pub(super) fn exit_outcome(
    stop: Option<StopReason>,
    code: Option<i32>,
    signal: Option<i32>,
    timeout: Option<Duration>,
    in_container: bool,
    engine_line: Option<&str>,
) -> (Outcome, Option<String>) {
    // A job the worker stopped ends for that reason, whatever its status says: it may have
    // caught the signal and exited 0, and it must not count as a success.
    match stop {
        Some(StopReason::Timeout) => (
            Outcome::Timeout,
            Some(format!(
                "timed out after {}",
                timeout.map(format_duration).unwrap_or_default()
            )),
        ),
        Some(StopReason::Cancel) => (
            Outcome::Cancelled,
            Some(workq_core::lifecycle::CANCELLED_WHILE_RUNNING.into()),
        ),
        Some(StopReason::Drain | StopReason::Fence) => (
            Outcome::Interrupted,
            Some("interrupted: its worker stopped; queued again".into()),
        ),
        None => match (code, signal) {
            (Some(0), _) => (Outcome::Succeeded, None),
            (Some(c), _) => match container::engine_failure(c).filter(|_| in_container) {
                Some(what) => {
                    let line = engine_line.map(|l| format!(": {l}")).unwrap_or_default();
                    // 125 is the engine's alone: the container never ran the command, as when
                    // a direct job's program cannot start. 126 and 127 may as well be the
                    // command's own status (a shell in the container that cannot find a
                    // program), so they stay failures.
                    let outcome = if c == container::ENGINE_FAILED {
                        Outcome::SpawnError
                    } else {
                        Outcome::Failed
                    };
                    (outcome, Some(format!("{what} (exit {c}){line}")))
                }
                None => (Outcome::Failed, Some(format!("exited with status {c}"))),
            },
            (None, Some(s)) => (
                Outcome::Failed,
                Some(format!("killed by signal {s} ({})", signals::name(s))),
            ),
            (None, None) => (Outcome::Failed, Some("its exit status was lost".into())),
        },
    }
}

/// How many jobs to claim: one per free slot, none while draining, paused or fenced off.
pub(super) fn claim_limit(free: u32, draining: bool, paused: bool, fenced: bool) -> u32 {
    if draining || paused || fenced {
        0
    } else {
        free
    }
}

/// Whether results held back for a group commit go out now. While other jobs run, they wait
/// until `deadline` for more exits to share the commit (and its fsync). With none running no
/// exit can come to share it, and while draining the worker only waits to record what is left
/// before it exits: then they go at once.
pub(super) fn commit_now(
    draining: bool,
    jobs_running: bool,
    now: Instant,
    deadline: Instant,
) -> bool {
    draining || !jobs_running || now >= deadline
}

/// When held-back results (if any) are due to go out: at their commit deadline (at once if
/// none is set yet), but never before `retry_at` after a failed attempt.
pub(super) fn flush_time(
    has_results: bool,
    flush_at: Option<Instant>,
    retry_at: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    if !has_results {
        return None;
    }
    let due = flush_at.unwrap_or(now);
    Some(retry_at.map_or(due, |r| due.max(r)))
}

/// True if fewer jobs were claimed than fit: the rest of the queue may be scheduled for later,
/// so the loop asks when the next one comes due.
pub(super) fn look_for_scheduled(limit: u32, got: u32) -> bool {
    limit > 0 && got < limit
}

/// When to run the next step for scheduled jobs (or a retry) after a step that asked for
/// `asked`. A drain keeps the time it had: it claims nothing, and the step it wakes only sends
/// results.
pub(super) fn next_scheduled(
    had: Option<Instant>,
    asked: Option<Instant>,
    draining: bool,
) -> Option<Instant> {
    match asked {
        Some(at) => Some(at),
        None if draining => had,
        None => None,
    }
}

/// A signal the worker escalates for a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escalation {
    /// Its timeout passed: SIGTERM now, SIGKILL after its grace.
    Term,
    /// It was told to stop and its grace is over: SIGKILL.
    Kill,
}

/// After a SIGKILL, when to send it again if the job has still not been reported ended: late
/// enough that the loop does not spin on a process the kernel is still tearing down.
pub(super) const KILL_AGAIN: Duration = Duration::from_secs(3600);

/// What is due for a job with timeout `deadline` (cleared once it fired) that was told to stop
/// with SIGKILL due at `kill_at` (if it was): a stop in progress only escalates to SIGKILL.
pub(super) fn escalation(
    now: Instant,
    deadline: Option<Instant>,
    kill_at: Option<Instant>,
) -> Option<Escalation> {
    match kill_at {
        Some(k) => (now >= k).then_some(Escalation::Kill),
        None => deadline
            .is_some_and(|d| now >= d)
            .then_some(Escalation::Term),
    }
}

/// True if the worker must kill its jobs itself (self-fencing): its store is shared across hosts,
/// its last heartbeat got through `silent_for` ago, which is `limit` or more, and it has not
/// already done so.
pub(super) fn fence_due(fenced: bool, shared: bool, silent_for: Duration, limit: Duration) -> bool {
    !fenced && shared && silent_for >= limit
}

/// The state the heartbeat reports.
pub(super) fn heartbeat_state(draining: bool, paused: bool) -> WorkerState {
    if draining {
        WorkerState::Draining
    } else if paused {
        WorkerState::Paused
    } else {
        WorkerState::Running
    }
}

/// A stop in progress: the worker claims nothing and ends once its jobs are done.
pub(super) struct Drain {
    /// Past this, running jobs are interrupted.
    pub until: Instant,
    /// Why it stops, for the registry and the log.
    pub reason: String,
    /// Running jobs were told to stop (at `until`, or on a second signal).
    pub interrupted: bool,
}

impl Drain {
    /// A drain for `reason` whose jobs get `stop_timeout` from `now` to finish.
    pub fn new(now: Instant, stop_timeout: Duration, reason: String) -> Drain {
        Drain {
            until: now + stop_timeout,
            reason,
            interrupted: false,
        }
    }

    /// True once the stop timeout is over and the jobs were not yet interrupted.
    pub fn interrupt_due(&self, now: Instant) -> bool {
        !self.interrupted && now >= self.until
    }

    /// True when the worker may exit: no job runs and nothing waits to be recorded.
    pub fn over(jobs_running: bool, outbox_empty: bool) -> bool {
        !jobs_running && outbox_empty
    }
}

/// What the loop has to do on its next turn, and when it must wake up for it.
pub(super) struct Agenda {
    /// Claim, start and send results on the next turn: something may have changed.
    pub step: bool,
    /// Another process wrote to the store (a doorbell ring or a data_version change). Cancel
    /// requests and the pause flag can only change then, so they are read only then, not after
    /// every exit.
    pub outside_change: bool,
    /// When to look for changes made without ringing the doorbell.
    pub next_poll: Instant,
    /// When to heartbeat (and sweep).
    pub next_heartbeat: Instant,
    /// When a scheduled job comes due, or a failed store call may be tried again.
    pub next_scheduled: Option<Instant>,
}

impl Agenda {
    /// The first turn steps at once; poll and heartbeat come after their periods.
    pub fn new(now: Instant, poll: Duration, heartbeat: Duration) -> Agenda {
        Agenda {
            step: true,
            outside_change: false,
            next_poll: now + poll,
            next_heartbeat: now + heartbeat,
            next_scheduled: None,
        }
    }

    /// Someone else may have written: step, and read what only others write.
    pub fn outside_change(&mut self) {
        self.step = true;
        self.outside_change = true;
    }

    /// When the loop must wake if no event comes first: the earliest of its own timers, the
    /// stop timeout of a drain that has not interrupted its jobs yet, the group commit's
    /// `flush`, and each job's timeout and SIGKILL (`jobs` gives `(deadline, kill_at)`).
    pub fn wake_at(
        &self,
        drain: Option<&Drain>,
        flush: Option<Instant>,
        jobs: impl Iterator<Item = (Option<Instant>, Option<Instant>)>,
    ) -> Instant {
        let mut at = self.next_poll.min(self.next_heartbeat);
        let drain_until = drain.filter(|d| !d.interrupted).map(|d| d.until);
        for t in [self.next_scheduled, drain_until, flush]
            .into_iter()
            .flatten()
        {
            at = at.min(t);
        }
        for (deadline, kill_at) in jobs {
            for t in [deadline, kill_at].into_iter().flatten() {
                at = at.min(t);
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_stop_sent_by_the_worker_decides_the_outcome_whatever_the_status() {
        let t = Some(Duration::from_secs(90));
        for (code, signal) in [
            (Some(0), None),
            (Some(3), None),
            (None, Some(15)),
            (None, None),
        ] {
            assert_eq!(
                exit_outcome(Some(StopReason::Timeout), code, signal, t, false, None),
                (Outcome::Timeout, Some("timed out after 1m30s".into()))
            );
            assert_eq!(
                exit_outcome(Some(StopReason::Cancel), code, signal, t, false, None),
                (Outcome::Cancelled, Some("cancelled while running".into()))
            );
            for why in [StopReason::Drain, StopReason::Fence] {
                assert_eq!(
                    exit_outcome(Some(why), code, signal, t, false, None),
                    (
                        Outcome::Interrupted,
                        Some("interrupted: its worker stopped; queued again".into())
                    ),
                    "{why:?}"
                );
            }
        }
        // A timeout stop without a recorded limit still names its cause.
        assert_eq!(
            exit_outcome(Some(StopReason::Timeout), Some(0), None, None, false, None).1,
            Some("timed out after ".into())
        );
    }

    #[test]
    fn without_a_stop_the_exit_status_decides() {
        assert_eq!(
            exit_outcome(None, Some(0), None, None, false, None),
            (Outcome::Succeeded, None)
        );
        assert_eq!(
            exit_outcome(None, Some(3), None, None, false, None),
            (Outcome::Failed, Some("exited with status 3".into()))
        );
        assert_eq!(
            exit_outcome(None, None, Some(libc::SIGKILL), None, false, None),
            (Outcome::Failed, Some("killed by signal 9 (SIGKILL)".into()))
        );
        assert_eq!(
            exit_outcome(None, None, None, None, false, None),
            (Outcome::Failed, Some("its exit status was lost".into()))
        );
    }

    #[test]
    fn a_containers_engine_failure_is_named_with_the_engines_message() {
        let line = Some("Unable to find image 'x:1' locally");
        assert_eq!(
            exit_outcome(None, Some(125), None, None, true, line),
            (
                Outcome::SpawnError,
                Some(
                    "the container engine failed (exit 125): Unable to find image 'x:1' locally"
                        .into()
                )
            )
        );
        let (o, e) = exit_outcome(None, Some(127), None, None, true, None);
        assert_eq!(o, Outcome::Failed);
        assert_eq!(
            e.as_deref(),
            Some("the command in the container was not found (exit 127)")
        );
        let (_, e) = exit_outcome(None, Some(126), None, None, true, Some("permission denied"));
        assert!(e.is_some_and(|e| e.contains("(exit 126): permission denied")));
        // The same statuses of a job run directly are its own; other statuses are unchanged.
        let (o, e) = exit_outcome(None, Some(125), None, None, false, line);
        assert_eq!(o, Outcome::Failed);
        assert_eq!(e.as_deref(), Some("exited with status 125"));
        let (_, e) = exit_outcome(None, Some(1), None, None, true, line);
        assert_eq!(e.as_deref(), Some("exited with status 1"));
        // A stop the worker sent still decides, whatever the engine said.
        let t = Some(Duration::from_secs(1));
        let (o, _) = exit_outcome(Some(StopReason::Timeout), Some(125), None, t, true, line);
        assert_eq!(o, Outcome::Timeout);
    }

    #[test]
    fn claims_fill_the_free_slots_unless_draining_paused_or_fenced() {
        assert_eq!(claim_limit(3, false, false, false), 3);
        assert_eq!(claim_limit(0, false, false, false), 0);
        assert_eq!(claim_limit(3, true, false, false), 0);
        assert_eq!(claim_limit(3, false, true, false), 0);
        assert_eq!(claim_limit(3, false, false, true), 0);
    }

    #[test]
    fn results_wait_for_company_only_while_other_jobs_run_and_not_past_their_deadline() {
        let now = Instant::now();
        let later = now + 2 * MS;
        assert!(!commit_now(false, true, now, later), "jobs run: wait");
        assert!(commit_now(false, true, later, later), "the delay is over");
        assert!(
            commit_now(false, false, now, later),
            "no job runs to share it"
        );
        assert!(commit_now(true, true, now, later), "draining");
    }

    #[test]
    fn results_are_due_at_their_deadline_but_not_before_a_retry() {
        let now = Instant::now();
        let (soon, late) = (now + 2 * MS, now + 500 * MS);
        assert_eq!(flush_time(false, Some(soon), Some(late), now), None);
        assert_eq!(flush_time(true, None, None, now), Some(now));
        assert_eq!(flush_time(true, Some(soon), None, now), Some(soon));
        assert_eq!(flush_time(true, Some(soon), Some(late), now), Some(late));
        assert_eq!(flush_time(true, Some(late), Some(soon), now), Some(late));
        assert_eq!(flush_time(true, None, Some(late), now), Some(late));
    }

    #[test]
    fn the_schedule_is_read_only_after_a_claim_that_left_slots_free() {
        assert!(look_for_scheduled(4, 1));
        assert!(look_for_scheduled(4, 0));
        assert!(!look_for_scheduled(4, 4));
        assert!(!look_for_scheduled(0, 0), "nothing was claimed for");
    }

    #[test]
    fn a_step_sets_the_next_scheduled_wake_up_and_a_drain_keeps_the_old_one() {
        let now = Instant::now();
        let (had, asked) = (Some(now), Some(now + MS));
        assert_eq!(next_scheduled(had, asked, false), asked);
        assert_eq!(next_scheduled(had, asked, true), asked);
        assert_eq!(next_scheduled(had, None, false), None);
        assert_eq!(next_scheduled(had, None, true), had);
    }

    #[test]
    fn a_timeout_sends_sigterm_once_then_only_sigkill_escalates() {
        let now = Instant::now();
        let (past, future) = (now - MS, now + MS);
        assert_eq!(escalation(now, None, None), None);
        assert_eq!(escalation(now, Some(future), None), None);
        assert_eq!(escalation(now, Some(now), None), Some(Escalation::Term));
        assert_eq!(escalation(now, Some(past), None), Some(Escalation::Term));
        // Once stopping, the timeout no longer matters: only the kill grace does.
        assert_eq!(escalation(now, Some(past), Some(future)), None);
        assert_eq!(escalation(now, None, Some(future)), None);
        assert_eq!(escalation(now, None, Some(now)), Some(Escalation::Kill));
        assert_eq!(
            escalation(now, Some(past), Some(past)),
            Some(Escalation::Kill)
        );
    }

    #[test]
    fn self_fencing_needs_a_shared_store_a_long_silence_and_happens_once() {
        let limit = Duration::from_secs(40);
        assert!(fence_due(false, true, limit, limit));
        assert!(fence_due(false, true, limit * 2, limit));
        assert!(
            !fence_due(false, true, limit - MS, limit),
            "not silent long enough"
        );
        assert!(
            !fence_due(false, false, limit * 2, limit),
            "no other host can rescue"
        );
        assert!(!fence_due(true, true, limit * 2, limit), "already fenced");
    }

    #[test]
    fn the_heartbeat_reports_draining_over_paused_over_running() {
        assert_eq!(heartbeat_state(true, true), WorkerState::Draining);
        assert_eq!(heartbeat_state(true, false), WorkerState::Draining);
        assert_eq!(heartbeat_state(false, true), WorkerState::Paused);
        assert_eq!(heartbeat_state(false, false), WorkerState::Running);
    }

    #[test]
    fn a_drain_interrupts_once_after_its_timeout_and_ends_when_all_is_recorded() {
        let now = Instant::now();
        let mut d = Drain::new(now, Duration::from_secs(10), "SIGTERM received".into());
        assert!(!d.interrupt_due(now));
        assert!(d.interrupt_due(now + Duration::from_secs(10)));
        d.interrupted = true;
        assert!(!d.interrupt_due(now + Duration::from_secs(10)));
        assert!(Drain::over(false, true));
        assert!(!Drain::over(true, true), "a job runs");
        assert!(!Drain::over(false, false), "results wait to be recorded");
    }

    #[test]
    fn the_loop_wakes_for_the_earliest_of_its_timers() {
        let now = Instant::now();
        let at = |ms: u32| now + ms * MS;
        let mut a = Agenda::new(now, 100 * MS, 5000 * MS);
        assert!(a.step && !a.outside_change);
        let none = || std::iter::empty();
        assert_eq!(a.wake_at(None, None, none()), at(100));
        a.next_poll = at(6000);
        assert_eq!(a.wake_at(None, None, none()), at(5000), "heartbeat");
        a.next_scheduled = Some(at(40));
        assert_eq!(a.wake_at(None, None, none()), at(40), "scheduled");
        assert_eq!(a.wake_at(None, Some(at(2)), none()), at(2), "group commit");
        let jobs = [(Some(at(30)), None), (None, Some(at(20))), (None, None)];
        assert_eq!(
            a.wake_at(None, None, jobs.into_iter()),
            at(20),
            "kill grace"
        );
        let jobs = [(Some(at(10)), None)];
        assert_eq!(a.wake_at(None, None, jobs.into_iter()), at(10), "timeout");
        let mut d = Drain::new(now, 5 * MS, String::new());
        assert_eq!(a.wake_at(Some(&d), None, none()), at(5), "stop timeout");
        d.interrupted = true;
        assert_eq!(
            a.wake_at(Some(&d), None, none()),
            at(40),
            "already interrupted"
        );
        a.step = false;
        a.outside_change();
        assert!(a.step && a.outside_change);
    }
}
