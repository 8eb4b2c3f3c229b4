//! Waiting for jobs to finish, with a progress bar on a terminal: `wait` and `run --wait`.

use std::time::{Duration, Instant};

use workq_core::JobState;

use crate::context::Context;
use crate::error::CliError;
use crate::interrupts::Interrupts;
use crate::render::progress::{Counts, Progress};

/// How waiting ended.
pub enum WaitEnd {
    /// Every job finished.
    Done(Vec<workq::Job>),
    /// The timeout ran out first (the jobs as they were).
    TimedOut(Vec<workq::Job>),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

const TERMINAL: [JobState; 3] = [JobState::Succeeded, JobState::Failed, JobState::Cancelled];

/// Waits for `ids` with a progress bar on a terminal; warns once if no worker serves them.
pub fn wait_jobs(
    ctx: &Context,
    client: &workq::Client,
    ids: &[i64],
    timeout: Option<Duration>,
    interrupts: &Interrupts,
) -> Result<WaitEnd, CliError> {
    // The same id given twice is waited for once.
    let mut unique = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    for &id in ids {
        if seen.insert(id) {
            unique.push(id);
        }
    }
    let ids = &unique[..];
    // Fails with exit 3 on an unknown id before waiting.
    let mut jobs = client.jobs(ids)?;
    let position: std::collections::HashMap<i64, usize> =
        jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    // Only unfinished jobs are asked about again, and only for whether they have finished:
    // each job is read in full once more, when it ends, however long the wait.
    let mut pending: Vec<i64> = jobs
        .iter()
        .filter(|j| !j.state.is_terminal())
        .map(|j| j.id)
        .collect();
    let mut running = jobs.iter().filter(|j| j.state == JobState::Running).count();
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut bar = Progress::new(ctx.err_tty && !ctx.quiet && !ctx.json);
    let mut warned = false;
    let started = Instant::now();
    let mut last_full_read = Instant::now();
    loop {
        let counts = Counts {
            succeeded: jobs
                .iter()
                .filter(|j| j.state == JobState::Succeeded)
                .count(),
            failed: jobs
                .iter()
                .filter(|j| matches!(j.state, JobState::Failed | JobState::Cancelled))
                .count(),
            running,
            total: jobs.len(),
        };
        bar.draw(counts);
        if counts.succeeded + counts.failed == counts.total {
            bar.finish();
            return Ok(WaitEnd::Done(jobs));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bar.finish();
            if !ctx.quiet {
                eprintln!(
                    "workq: timed out: {} of {} job(s) still unfinished",
                    counts.total - counts.succeeded - counts.failed,
                    counts.total
                );
            }
            // Report the unfinished ones as they are now, not as first read.
            for j in client.jobs_in_states(&pending, &[])? {
                if let Some(&i) = position.get(&j.id) {
                    jobs[i] = j;
                }
            }
            return Ok(WaitEnd::TimedOut(jobs));
        }
        if interrupts.received().is_some() {
            bar.finish();
            return Ok(WaitEnd::Interrupted);
        }
        if !warned
            && started.elapsed() > Duration::from_secs(2)
            && counts.running == 0
            && !ctx.quiet
        {
            let queues: std::collections::BTreeSet<&str> = jobs
                .iter()
                .filter(|j| j.state == JobState::Queued)
                .map(|j| j.spec.queue.as_str())
                .collect();
            // Only for a warning: a store this command may read but not write (another user's)
            // is still worth waiting on, so a failed clean-up is no reason to stop.
            let _ = client.clean_up_dead_workers();
            for q in queues {
                if client.live_workers_serving(q)?.is_empty() {
                    bar.finish();
                    eprintln!("workq: no worker serves queue {q}; start one with: workq worker start -Q {q}");
                }
            }
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(20));
        let slow_tick = last_full_read.elapsed() > Duration::from_secs(1);
        if slow_tick {
            // Once a second, every pending job in full: their states for the bar and the
            // warning, and a job purged meanwhile, which would otherwise be waited for until
            // the timeout.
            let present = client.jobs_in_states(&pending, &[])?;
            if present.len() < pending.len() {
                let have: std::collections::HashSet<i64> = present.iter().map(|j| j.id).collect();
                if let Some(gone) = pending.iter().find(|id| !have.contains(id)) {
                    bar.finish();
                    return Err(workq::Error::JobNotFound(*gone).into());
                }
            }
            running = present
                .iter()
                .filter(|j| j.state == JobState::Running)
                .count();
            let unfinished: std::collections::HashSet<i64> = present
                .iter()
                .filter(|j| !j.state.is_terminal())
                .map(|j| j.id)
                .collect();
            pending.retain(|id| unfinished.contains(id));
            for j in present {
                if let Some(&i) = position.get(&j.id) {
                    jobs[i] = j;
                }
            }
            last_full_read = Instant::now();
        } else if client.store().changed()? {
            // In between, only whether pending jobs have ended.
            let ended = client.jobs_in_states(&pending, &TERMINAL)?;
            if !ended.is_empty() {
                let ended_ids: std::collections::HashSet<i64> =
                    ended.iter().map(|j| j.id).collect();
                pending.retain(|id| !ended_ids.contains(id));
                for j in ended {
                    if let Some(&i) = position.get(&j.id) {
                        jobs[i] = j;
                    }
                }
            }
            // Counting running jobs costs a probe per pending id: only for a visible bar.
            if bar.visible() {
                running = client.jobs_in_states(&pending, &[JobState::Running])?.len();
            }
        }
    }
}
