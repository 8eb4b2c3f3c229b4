//! Waiting for jobs to finish, with a progress bar on a terminal: `wait` and `run --wait`.

use std::collections::{BTreeSet, HashMap, HashSet};
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
    // Fails with exit 3 on an unknown id before waiting.
    let mut w = Watched::read(client, ids)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut bar = Progress::new(ctx.err_tty && !ctx.quiet && !ctx.json);
    let mut unserved = Unserved::new(!ctx.quiet);
    let mut last_full_read = Instant::now();
    loop {
        let counts = w.counts();
        bar.draw(counts);
        if counts.succeeded + counts.failed == counts.total {
            bar.finish();
            return Ok(WaitEnd::Done(w.jobs));
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
            let now = client.jobs_in_states(&w.pending, &[])?;
            w.update(now);
            return Ok(WaitEnd::TimedOut(w.jobs));
        }
        if interrupts.received().is_some() {
            bar.finish();
            return Ok(WaitEnd::Interrupted);
        }
        unserved.warn(client, &w.jobs, &mut || bar.finish())?;
        std::thread::sleep(Duration::from_millis(20));
        if last_full_read.elapsed() > Duration::from_secs(1) {
            if let Err(e) = w.reread(client) {
                bar.finish();
                return Err(e);
            }
            last_full_read = Instant::now();
        } else if client.store().changed()? {
            w.read_ended(client, bar.visible())?;
        }
    }
}

/// The jobs waited for, as last read.
struct Watched {
    /// Every job, in the order asked for.
    jobs: Vec<workq::Job>,
    /// Where each id is in `jobs`.
    position: HashMap<i64, usize>,
    /// The unfinished ones: only they are asked about again, and only whether they have
    /// finished, so each job is read in full once more, when it ends, however long the wait.
    pending: Vec<i64>,
    /// How many run, for the bar.
    running: usize,
}

impl Watched {
    /// Reads the jobs `ids` (the same id given twice is waited for once).
    fn read(client: &workq::Client, ids: &[i64]) -> Result<Watched, CliError> {
        let mut seen = HashSet::new();
        let unique: Vec<i64> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
        let jobs = client.jobs(&unique)?;
        let position = jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
        let pending = jobs
            .iter()
            .filter(|j| !j.state.is_terminal())
            .map(|j| j.id)
            .collect();
        let running = jobs.iter().filter(|j| j.state == JobState::Running).count();
        Ok(Watched {
            jobs,
            position,
            pending,
            running,
        })
    }

    fn counts(&self) -> Counts {
        Counts {
            succeeded: self
                .jobs
                .iter()
                .filter(|j| j.state == JobState::Succeeded)
                .count(),
            failed: self
                .jobs
                .iter()
                .filter(|j| matches!(j.state, JobState::Failed | JobState::Cancelled))
                .count(),
            running: self.running,
            total: self.jobs.len(),
        }
    }

    /// Puts fresh copies of some jobs in place.
    fn update(&mut self, fresh: Vec<workq::Job>) {
        for j in fresh {
            if let Some(&i) = self.position.get(&j.id) {
                self.jobs[i] = j;
            }
        }
    }

    /// Every pending job in full: their states for the bar and the warning, and a job purged
    /// meanwhile, which would otherwise be waited for until the timeout.
    fn reread(&mut self, client: &workq::Client) -> Result<(), CliError> {
        let present = client.jobs_in_states(&self.pending, &[])?;
        if present.len() < self.pending.len() {
            let have: HashSet<i64> = present.iter().map(|j| j.id).collect();
            if let Some(gone) = self.pending.iter().find(|id| !have.contains(id)) {
                return Err(CliError::job_not_found(*gone));
            }
        }
        self.running = present
            .iter()
            .filter(|j| j.state == JobState::Running)
            .count();
        let unfinished: HashSet<i64> = present
            .iter()
            .filter(|j| !j.state.is_terminal())
            .map(|j| j.id)
            .collect();
        self.pending.retain(|id| unfinished.contains(id));
        self.update(present);
        Ok(())
    }

    /// Only whether pending jobs have ended; how many run only if `count_running` (it costs a
    /// probe per pending id, so only for a visible bar).
    fn read_ended(&mut self, client: &workq::Client, count_running: bool) -> Result<(), CliError> {
        let ended = client.jobs_in_states(&self.pending, &TERMINAL)?;
        if !ended.is_empty() {
            let ended_ids: HashSet<i64> = ended.iter().map(|j| j.id).collect();
            self.pending.retain(|id| !ended_ids.contains(id));
            self.update(ended);
        }
        if count_running {
            self.running = client
                .jobs_in_states(&self.pending, &[JobState::Running])?
                .len();
        }
        Ok(())
    }
}

/// Warns, once per queue, about queued jobs whose queue no live worker serves, so a wait
/// does not hang without a word: for `wait` and `logs -f`.
pub struct Unserved {
    enabled: bool,
    /// When to look next: after a grace (a worker may be starting), then now and then.
    next_look: Instant,
    warned: BTreeSet<String>,
}

/// How long a job may wait before its queue's lack of a worker is worth a line.
const GRACE: Duration = Duration::from_secs(2);
/// How often to look again (a worker that served the queue may stop).
const LOOK_EVERY: Duration = Duration::from_secs(5);

impl Unserved {
    /// Warnings on stderr, unless not `enabled` (`-q`).
    pub fn new(enabled: bool) -> Self {
        Unserved {
            enabled,
            next_look: Instant::now() + GRACE,
            warned: BTreeSet::new(),
        }
    }

    /// If it is time, prints one line per queue of the queued `jobs` that no live worker
    /// serves and that was not warned about yet, naming the command that starts one;
    /// `before_print` clears the way (ends a progress bar).
    pub fn warn(
        &mut self,
        client: &workq::Client,
        jobs: &[workq::Job],
        before_print: &mut dyn FnMut(),
    ) -> Result<(), CliError> {
        if !self.enabled || Instant::now() < self.next_look {
            return Ok(());
        }
        self.next_look = Instant::now() + LOOK_EVERY;
        let queues: BTreeSet<&str> = jobs
            .iter()
            .filter(|j| j.state == JobState::Queued && !self.warned.contains(&j.spec.queue))
            .map(|j| j.spec.queue.as_str())
            .collect();
        if queues.is_empty() {
            return Ok(());
        }
        // Only for a warning: a store this command may read but not write (another user's) is
        // still worth waiting on, so a failed clean-up is no reason to stop.
        let _ = client.clean_up_dead_workers();
        for q in queues {
            if client.live_workers_serving(q)?.is_empty() {
                before_print();
                eprintln!(
                    "workq: no worker serves queue {q}; start one with: workq worker start -Q {q}"
                );
                self.warned.insert(q.to_string());
            }
        }
        Ok(())
    }
}
