//! The job state machine (ARCHITECTURE.md §3): what a job becomes after each event, decided in
//! one place. Every backend reads the facts this module asks for, calls it, and runs the SQL that
//! applies the [`Decision`]; no backend decides on its own whether a job runs again.

use std::time::Duration;

use crate::job::{JobId, JobState, Outcome, WorkerId};
use crate::retry::{next_after_failure, FailureDecision};
use crate::time::Timestamp;

/// What the store knows about a running job when its attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningFacts {
    /// Attempts that counted as failures so far.
    pub failures: u32,
    /// Extra attempts allowed after failures.
    pub retries: u32,
    /// First retry delay.
    pub backoff: Duration,
    /// Times it was rescued from a dead worker so far.
    pub rescues: u32,
    /// Rescues allowed before it fails.
    pub max_rescues: u32,
    /// A cancel was asked while it ran.
    pub cancel_requested: bool,
}

/// How the running jobs of a worker that is gone go back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescueKind {
    /// The worker died: attempts end `lost` and count against `max_rescues`; it is marked dead.
    Lost,
    /// The worker was stopped on purpose (killed after its stop timeout): attempts end
    /// `interrupted`, which costs the job nothing; it is marked stopped.
    Interrupted,
}

/// What happens to the jobs that wait on a job (`--after`) once it has moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependents {
    /// Nothing: the job will run again, so they keep waiting.
    Wait,
    /// It succeeded: each waits on one dependency fewer.
    Release,
    /// It will never succeed: every queued job that waits on it, directly or not, is cancelled.
    Cancel,
}

/// How an ended attempt counts in its worker's tally (`jobs_done`, `jobs_failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Not counted: the job goes back to the queue, or the worker is gone.
    None,
    /// A job done.
    Done,
    /// A job failed or cancelled.
    Failed,
}

/// Everything that changes when an attempt ends. The backend writes exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The outcome recorded on the attempt.
    pub outcome: Outcome,
    /// The error recorded on the attempt.
    pub attempt_error: Option<String>,
    /// The job's new state: `queued` again, or terminal.
    pub state: JobState,
    /// When a requeued job becomes claimable (`None` for a terminal state).
    pub run_at: Option<Timestamp>,
    /// The job's `last_error`.
    pub last_error: Option<String>,
    /// The job's failure count afterwards.
    pub failures: u32,
    /// The job's rescue count afterwards.
    pub rescues: u32,
    /// What happens to the jobs waiting on this one.
    pub dependents: Dependents,
    /// How the worker's tally counts it.
    pub tally: Tally,
    /// The audit event's kind.
    pub event: &'static str,
    /// The audit event's detail.
    pub event_detail: Option<String>,
}

impl Decision {
    /// True when the job reached a terminal state (it gets `finished_at`).
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// The last error of a job cancelled while it ran, when its worker gave none.
pub const CANCELLED_WHILE_RUNNING: &str = "cancelled while running";
/// The last error of a job cancelled before it started.
pub const CANCELLED_BEFORE_START: &str = "cancelled before it started";
/// The last error of a job whose worker died while stopping it on a cancel.
pub const CANCELLED_WORKER_DIED: &str = "cancelled; its worker died while stopping it";

/// What a job becomes when its worker reports how an attempt ended (an exit, a timeout, a cancel
/// carried out, a spawn error, an interruption). `jitter` is any random value; it spreads the
/// retries of a burst of failures.
pub fn after_attempt(
    job: &RunningFacts,
    reported: Outcome,
    error: Option<&str>,
    now: Timestamp,
    jitter: u64,
) -> Decision {
    // A cancel that raced with a failing exit still reads as the user asked; a success stands.
    let outcome = if job.cancel_requested && reported != Outcome::Succeeded {
        Outcome::Cancelled
    } else {
        reported
    };
    let error = error.map(str::to_string);
    let base = Decision {
        outcome,
        attempt_error: error.clone(),
        state: JobState::Queued,
        run_at: None,
        last_error: error.clone(),
        failures: job.failures,
        rescues: job.rescues,
        dependents: Dependents::Wait,
        tally: Tally::None,
        event: "requeued",
        event_detail: error.clone(),
    };
    let ended = |state: JobState, dependents, tally| Decision {
        state,
        dependents,
        tally,
        event: state.as_str(),
        ..base.clone()
    };
    match outcome {
        Outcome::Succeeded => Decision {
            last_error: None,
            ..ended(JobState::Succeeded, Dependents::Release, Tally::Done)
        },
        Outcome::Cancelled => Decision {
            last_error: Some(error.unwrap_or_else(|| CANCELLED_WHILE_RUNNING.into())),
            ..ended(JobState::Cancelled, Dependents::Cancel, Tally::Failed)
        },
        // Not the job's fault: it runs again at once and it costs nothing.
        Outcome::Interrupted | Outcome::Lost | Outcome::Stale => Decision {
            run_at: Some(now),
            ..base
        },
        Outcome::Failed | Outcome::Timeout | Outcome::SpawnError => {
            let failures = job.failures.saturating_add(1);
            match next_after_failure(now, failures, job.retries, job.backoff, jitter) {
                FailureDecision::RetryAt(at) => Decision {
                    run_at: Some(at),
                    failures,
                    ..base
                },
                FailureDecision::GiveUp => Decision {
                    failures,
                    ..ended(JobState::Failed, Dependents::Cancel, Tally::Failed)
                },
            }
        }
    }
}

/// What a running job becomes when its worker is declared gone (`how`), for `reason`.
pub fn after_rescue(
    job: &RunningFacts,
    worker: WorkerId,
    how: RescueKind,
    reason: &str,
    now: Timestamp,
) -> Decision {
    let (outcome, error) = match how {
        RescueKind::Lost => (
            Outcome::Lost,
            format!("its worker {worker} died ({reason})"),
        ),
        RescueKind::Interrupted => (
            Outcome::Interrupted,
            format!("interrupted: its worker {worker} was stopped ({reason}); queued again"),
        ),
    };
    let requeue = |rescues: u32| Decision {
        outcome,
        attempt_error: Some(error.clone()),
        state: JobState::Queued,
        run_at: Some(now),
        last_error: Some(error.clone()),
        failures: job.failures,
        rescues,
        dependents: Dependents::Wait,
        tally: Tally::None,
        event: "rescued",
        event_detail: Some(JobState::Queued.as_str().into()),
    };
    let end = |state: JobState, last_error: String, rescues: u32| Decision {
        state,
        run_at: None,
        last_error: Some(last_error),
        dependents: Dependents::Cancel,
        event_detail: Some(state.as_str().into()),
        ..requeue(rescues)
    };
    if job.cancel_requested {
        // It was being stopped anyway: finish what the user asked for instead of re-running.
        return end(
            JobState::Cancelled,
            CANCELLED_WORKER_DIED.into(),
            job.rescues,
        );
    }
    match how {
        RescueKind::Interrupted => requeue(job.rescues),
        RescueKind::Lost => {
            let rescues = job.rescues.saturating_add(1);
            if rescues > job.max_rescues {
                // A job that kills its worker must not loop forever.
                end(
                    JobState::Failed,
                    format!(
                        "lost {rescues} times (its worker died each time); not requeued again so a job that kills its worker cannot loop forever"
                    ),
                    rescues,
                )
            } else {
                requeue(rescues)
            }
        }
    }
}

/// What a cancel request does to a job in `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAction {
    /// It has not started: it is cancelled now (and its dependents with it).
    CancelNow,
    /// It is running: its worker is asked to stop it, and the finish records the cancel.
    AskWorker,
    /// It has already ended in this state: nothing changes.
    AlreadyEnded(JobState),
}

/// Decides what a cancel does to a job in `state`.
pub fn on_cancel(state: JobState) -> CancelAction {
    match state {
        JobState::Queued => CancelAction::CancelNow,
        JobState::Running => CancelAction::AskWorker,
        ended => CancelAction::AlreadyEnded(ended),
    }
}

/// True when a job in `state` may be put back in the queue by hand, with a fresh retry budget:
/// only a job that has ended without success. A succeeded job stays done; a live one is left
/// alone.
pub fn can_retry(state: JobState) -> bool {
    matches!(state, JobState::Failed | JobState::Cancelled)
}

/// Why a job cannot be queued after one of its dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    /// The dependency does not exist.
    #[error("job {0} (a dependency) not found")]
    Missing(JobId),
    /// The dependency ended without success, so the new job could never run.
    #[error("job {0} has already {1}, so a job after it would never run")]
    Ended(JobId, JobState),
}

/// Checks one dependency of a job being submitted: `Ok(true)` when the new job must wait for it,
/// `Ok(false)` when it has already succeeded.
pub fn check_dependency(dep: JobId, state: Option<JobState>) -> Result<bool, DependencyError> {
    match state {
        None => Err(DependencyError::Missing(dep)),
        Some(JobState::Succeeded) => Ok(false),
        Some(st @ (JobState::Failed | JobState::Cancelled)) => Err(DependencyError::Ended(dep, st)),
        Some(JobState::Queued | JobState::Running) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn facts() -> RunningFacts {
        RunningFacts {
            failures: 0,
            retries: 0,
            backoff: Duration::from_secs(10),
            rescues: 0,
            max_rescues: 3,
            cancel_requested: false,
        }
    }

    const ALL_OUTCOMES: [Outcome; 8] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Lost,
        Outcome::Interrupted,
        Outcome::Stale,
        Outcome::SpawnError,
    ];

    #[test]
    fn success_ends_the_job_and_releases_its_dependents() {
        let d = after_attempt(&facts(), Outcome::Succeeded, None, NOW, 0);
        assert_eq!(d.state, JobState::Succeeded);
        assert_eq!(d.outcome, Outcome::Succeeded);
        assert_eq!(d.dependents, Dependents::Release);
        assert_eq!(d.tally, Tally::Done);
        assert_eq!((d.run_at, d.last_error, d.failures), (None, None, 0));
        assert_eq!(d.event, "succeeded");
    }

    #[test]
    fn a_success_stands_even_when_a_cancel_raced_with_it() {
        let f = RunningFacts {
            cancel_requested: true,
            ..facts()
        };
        let d = after_attempt(&f, Outcome::Succeeded, None, NOW, 0);
        assert_eq!(d.state, JobState::Succeeded);
    }

    #[test]
    fn a_cancel_request_turns_any_other_end_into_a_cancel() {
        let f = RunningFacts {
            cancel_requested: true,
            retries: 5,
            ..facts()
        };
        for reported in ALL_OUTCOMES
            .into_iter()
            .filter(|o| *o != Outcome::Succeeded)
        {
            let d = after_attempt(&f, reported, Some("exit 3"), NOW, 0);
            assert_eq!(d.outcome, Outcome::Cancelled, "{reported}");
            assert_eq!(d.state, JobState::Cancelled, "{reported}");
            assert_eq!(d.dependents, Dependents::Cancel);
            assert_eq!(d.tally, Tally::Failed);
            assert_eq!(d.last_error.as_deref(), Some("exit 3"));
            assert_eq!(d.failures, 0, "a cancel is not a failure");
        }
        let d = after_attempt(&f, Outcome::Failed, None, NOW, 0);
        assert_eq!(d.last_error.as_deref(), Some(CANCELLED_WHILE_RUNNING));
        assert_eq!(d.attempt_error, None);
    }

    #[test]
    fn failures_retry_with_backoff_until_the_budget_is_spent() {
        let f = RunningFacts {
            retries: 2,
            ..facts()
        };
        for reported in [Outcome::Failed, Outcome::Timeout, Outcome::SpawnError] {
            let d = after_attempt(&f, reported, Some("boom"), NOW, 0);
            assert_eq!(d.state, JobState::Queued);
            assert_eq!(d.run_at, Some(NOW.plus(Duration::from_secs(10))));
            assert_eq!(d.failures, 1);
            assert_eq!(d.dependents, Dependents::Wait);
            assert_eq!(d.tally, Tally::None);
            assert_eq!(d.event, "requeued");
            let second = after_attempt(&RunningFacts { failures: 1, ..f }, reported, None, NOW, 0);
            assert_eq!(second.run_at, Some(NOW.plus(Duration::from_secs(20))));
            let last = after_attempt(
                &RunningFacts { failures: 2, ..f },
                reported,
                Some("x"),
                NOW,
                0,
            );
            assert_eq!(last.state, JobState::Failed);
            assert_eq!(last.failures, 3);
            assert_eq!(last.run_at, None);
            assert_eq!(last.dependents, Dependents::Cancel);
            assert_eq!(last.tally, Tally::Failed);
            assert_eq!(last.last_error.as_deref(), Some("x"));
            assert_eq!(last.event, "failed");
        }
    }

    #[test]
    fn interruptions_requeue_at_once_at_no_cost() {
        let f = RunningFacts {
            failures: 1,
            rescues: 2,
            ..facts()
        };
        for reported in [Outcome::Interrupted, Outcome::Lost, Outcome::Stale] {
            let d = after_attempt(&f, reported, Some("stopped"), NOW, 0);
            assert_eq!(d.state, JobState::Queued, "{reported}");
            assert_eq!(d.run_at, Some(NOW));
            assert_eq!((d.failures, d.rescues), (1, 2));
            assert_eq!(d.outcome, reported);
            assert_eq!(d.tally, Tally::None);
        }
    }

    #[test]
    fn a_lost_job_is_requeued_until_max_rescues_then_fails() {
        let d = after_rescue(&facts(), 7, RescueKind::Lost, "pid gone", NOW);
        assert_eq!(d.state, JobState::Queued);
        assert_eq!(d.outcome, Outcome::Lost);
        assert_eq!(d.rescues, 1);
        assert_eq!(d.run_at, Some(NOW));
        assert_eq!(
            d.attempt_error.as_deref(),
            Some("its worker 7 died (pid gone)")
        );
        assert_eq!(d.event_detail.as_deref(), Some("queued"));
        let f = RunningFacts {
            rescues: 3,
            ..facts()
        };
        let d = after_rescue(&f, 7, RescueKind::Lost, "pid gone", NOW);
        assert_eq!(d.state, JobState::Failed);
        assert_eq!(d.rescues, 4);
        assert_eq!(d.dependents, Dependents::Cancel);
        assert!(d.last_error.unwrap().starts_with("lost 4 times"));
        assert_eq!(
            d.attempt_error.as_deref(),
            Some("its worker 7 died (pid gone)")
        );
        assert_eq!(d.tally, Tally::None);
    }

    #[test]
    fn an_interrupted_job_is_requeued_without_counting_a_rescue() {
        let f = RunningFacts {
            rescues: 3,
            ..facts()
        };
        let d = after_rescue(&f, 2, RescueKind::Interrupted, "stop timeout", NOW);
        assert_eq!(d.state, JobState::Queued);
        assert_eq!(d.outcome, Outcome::Interrupted);
        assert_eq!(d.rescues, 3);
        assert_eq!(
            d.last_error.as_deref(),
            Some("interrupted: its worker 2 was stopped (stop timeout); queued again")
        );
    }

    #[test]
    fn a_rescue_of_a_job_being_cancelled_cancels_it() {
        let f = RunningFacts {
            cancel_requested: true,
            ..facts()
        };
        for how in [RescueKind::Lost, RescueKind::Interrupted] {
            let d = after_rescue(&f, 1, how, "gone", NOW);
            assert_eq!(d.state, JobState::Cancelled);
            assert_eq!(d.rescues, 0);
            assert_eq!(d.last_error.as_deref(), Some(CANCELLED_WORKER_DIED));
            assert_eq!(d.dependents, Dependents::Cancel);
        }
    }

    #[test]
    fn cancel_retry_and_dependency_rules() {
        assert_eq!(on_cancel(JobState::Queued), CancelAction::CancelNow);
        assert_eq!(on_cancel(JobState::Running), CancelAction::AskWorker);
        for st in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            assert_eq!(on_cancel(st), CancelAction::AlreadyEnded(st));
        }
        let retryable: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| can_retry(*s))
            .collect();
        assert_eq!(retryable, [JobState::Failed, JobState::Cancelled]);
        assert_eq!(check_dependency(4, None), Err(DependencyError::Missing(4)));
        assert_eq!(check_dependency(4, Some(JobState::Succeeded)), Ok(false));
        assert_eq!(check_dependency(4, Some(JobState::Queued)), Ok(true));
        assert_eq!(check_dependency(4, Some(JobState::Running)), Ok(true));
        assert_eq!(
            check_dependency(4, Some(JobState::Failed)),
            Err(DependencyError::Ended(4, JobState::Failed))
        );
    }

    fn any_outcome() -> impl Strategy<Value = Outcome> {
        proptest::sample::select(ALL_OUTCOMES.to_vec())
    }

    fn any_facts() -> impl Strategy<Value = RunningFacts> {
        (
            0u32..6,
            0u32..6,
            0u64..100_000,
            0u32..6,
            0u32..6,
            any::<bool>(),
        )
            .prop_map(
                |(failures, retries, backoff_ms, rescues, max_rescues, cancel_requested)| {
                    RunningFacts {
                        failures,
                        retries,
                        backoff: Duration::from_millis(backoff_ms),
                        rescues,
                        max_rescues,
                        cancel_requested,
                    }
                },
            )
    }

    proptest! {
        /// Whatever ends an attempt, the job is left in one consistent place: terminal with no
        /// run_at, or queued no earlier than now; counters never go down; dependents are released
        /// only on success and cancelled only on a terminal non-success.
        #[test]
        fn every_attempt_end_leaves_a_consistent_job(
            f in any_facts(), reported in any_outcome(), jitter in any::<u64>(),
        ) {
            let d = after_attempt(&f, reported, Some("e"), NOW, jitter);
            check_consistent(&f, &d)?;
            prop_assert!(d.rescues == f.rescues, "a finish never counts a rescue");
            prop_assert!(d.failures <= f.failures + 1);
            prop_assert_eq!(d.failures > f.failures, reported.counts_as_failure() && !f.cancel_requested);
            if d.state == JobState::Queued && d.failures > f.failures {
                prop_assert!(d.failures <= f.retries, "a retry is within the budget");
            }
            if d.state == JobState::Failed {
                prop_assert!(d.failures > f.retries, "a job fails only past its budget");
            }
        }

        /// A rescue never leaves a job running, never counts a failure, and a lost job fails
        /// exactly when it passes max_rescues.
        #[test]
        fn every_rescue_leaves_a_consistent_job(
            f in any_facts(), lost in any::<bool>(),
        ) {
            let how = if lost { RescueKind::Lost } else { RescueKind::Interrupted };
            let d = after_rescue(&f, 1, how, "r", NOW);
            check_consistent(&f, &d)?;
            prop_assert_eq!(d.failures, f.failures);
            prop_assert_eq!(d.tally, Tally::None);
            prop_assert_eq!(
                d.state == JobState::Failed,
                lost && !f.cancel_requested && f.rescues + 1 > f.max_rescues
            );
        }
    }

    fn check_consistent(f: &RunningFacts, d: &Decision) -> Result<(), TestCaseError> {
        prop_assert!(d.state != JobState::Running);
        prop_assert!(d.rescues >= f.rescues && d.failures >= f.failures);
        if d.is_terminal() {
            prop_assert!(d.run_at.is_none());
        } else {
            prop_assert!(d.run_at.is_some_and(|at| at >= NOW));
            prop_assert_eq!(d.dependents, Dependents::Wait);
        }
        prop_assert_eq!(
            d.dependents == Dependents::Release,
            d.state == JobState::Succeeded
        );
        prop_assert_eq!(
            d.dependents == Dependents::Cancel,
            matches!(d.state, JobState::Failed | JobState::Cancelled)
        );
        if f.cancel_requested {
            prop_assert!(matches!(d.state, JobState::Succeeded | JobState::Cancelled));
        }
        Ok(())
    }
}
