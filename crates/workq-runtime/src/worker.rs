//! The worker: claim up to the free slots, run each job as a child process group, finish it,
//! heartbeat, sweep for dead workers, and drain cleanly on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use workq_core::{format_duration, ClaimedJob, JobId, Outcome, Timestamp, WorkerId, WorkerState};
use workq_store::{FinishOutcome, FinishRequest, SpawnRecord, Store, WorkerRegistration};

use crate::logger::Logger;
use crate::{doorbell, procinfo, rescue, signals, spawn, RuntimeError};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Registry name.
    pub name: String,
    /// Queues it claims from.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub slots: u32,
    /// `run/` for the doorbell socket.
    pub run_dir: PathBuf,
    /// `logs/` for job output.
    pub log_dir: PathBuf,
    /// On stop: how long running jobs may go on before they are interrupted.
    pub stop_timeout: Duration,
    /// Between heartbeats (and sweeps for dead workers).
    pub heartbeat: Duration,
    /// Between checks for changes made without ringing the doorbell.
    pub poll: Duration,
    /// How it was configured, for the start line and the registry (absent for temporary
    /// workers).
    pub settings: Option<crate::WorkerSettings>,
    /// Stopped, dead and crash-looping registry rows older than this are pruned.
    pub registry_retention: Duration,
    /// Finished jobs older than this are purged hourly, with their logs.
    pub job_retention: Option<Duration>,
}

impl WorkerOptions {
    /// Defaults for a worker named `name` on `queues` with `slots` slots.
    pub fn new(name: &str, queues: Vec<String>, slots: u32, state_dir: &std::path::Path) -> Self {
        WorkerOptions {
            name: name.to_string(),
            queues,
            slots,
            run_dir: state_dir.join("run"),
            log_dir: state_dir.join("logs"),
            stop_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(100),
            settings: None,
            registry_retention: REGISTRY_RETENTION,
            job_retention: None,
        }
    }

    /// Options for a worker configured by `settings`.
    pub fn from_settings(settings: &crate::WorkerSettings, state_dir: &std::path::Path) -> Self {
        let mut o = WorkerOptions::new(
            &settings.name,
            settings.queues.clone(),
            settings.slots,
            state_dir,
        );
        o.stop_timeout = settings.stop_timeout();
        o.heartbeat = settings.heartbeat();
        o.settings = Some(settings.clone());
        o.job_retention = settings.retention_ms.map(Duration::from_millis);
        o
    }
}

/// How long ended workers stay in the registry (7 days).
pub const REGISTRY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a worker did before it stopped.
#[derive(Debug, Clone)]
pub struct WorkerSummary {
    /// Its registry id.
    pub worker_id: WorkerId,
    /// Why it stopped.
    pub reason: String,
    /// Jobs that succeeded.
    pub done: u64,
    /// Jobs that failed or were cancelled.
    pub failed: u64,
    /// How long it ran.
    pub uptime: Duration,
}

#[derive(Clone)]
enum Event {
    Wake,
    /// A slot thread started the job's process.
    Started {
        job: JobId,
        pid: i32,
        log_path: PathBuf,
    },
    /// A slot thread could not start the job; the slot is free again.
    SpawnFailed {
        job: JobId,
        slot: usize,
        message: String,
    },
    /// The job's process exited. `slot` is free again unless a process that escaped the job's
    /// group still holds its output open (then [`Event::SlotFree`] follows).
    Exited {
        job: JobId,
        status: Option<ExitStatus>,
        slot: Option<usize>,
    },
    /// A slot thread finished draining output written after its job ended.
    SlotFree(usize),
    /// A problem with a job's output, for the worker log.
    OutputProblem {
        job: JobId,
        message: String,
    },
    Signal(libc::c_int),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    Cancel,
    Interrupt,
}

struct Running {
    lease: i64,
    attempt: u32,
    /// 0 until the slot thread reports the process started.
    pgid: i32,
    /// The last signal meant for the job, sent again if it was not started yet.
    signalled: libc::c_int,
    /// Its command line, for the worker log.
    command: String,
    started: Instant,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    kill_grace: Duration,
    stopping: Option<(StopReason, Instant)>,
    /// Runtime and name of the job's container, if it runs in one.
    container: Option<(String, String)>,
}

impl Running {
    /// SIGTERM to the job's process group, and `stop` to its container.
    fn term(&mut self) {
        self.signalled = libc::SIGTERM;
        spawn::signal_group(self.pgid, libc::SIGTERM);
        if let Some((runtime, name)) = &self.container {
            crate::container::signal(
                runtime,
                name,
                crate::container::Action::Stop(self.kill_grace),
            );
        }
    }

    /// SIGKILL to the job's process group, and `kill` to its container.
    fn kill(&mut self) {
        self.signalled = libc::SIGKILL;
        spawn::signal_group(self.pgid, libc::SIGKILL);
        if let Some((runtime, name)) = &self.container {
            crate::container::signal(runtime, name, crate::container::Action::Kill);
        }
    }
}

/// How long finished jobs' results may wait for others to share their commit (and its fsync).
const COMMIT_DELAY: Duration = Duration::from_millis(2);

struct Loop<'a> {
    store: &'a dyn Store,
    opts: WorkerOptions,
    log: &'a Logger,
    id: WorkerId,
    tx: Sender<Event>,
    running: HashMap<JobId, Running>,
    /// One thread per slot in use, each starting and watching one job at a time.
    slots: Vec<Sender<ClaimedJob>>,
    /// Slot threads waiting for a job.
    idle_slots: Vec<usize>,
    unsent: Vec<FinishRequest>,
    /// After a failed step, not before this.
    retry_at: Option<Instant>,
    /// The last purge stopped at its cap: purge again at the next sweep, not in an hour.
    purge_backlog: bool,
    /// Processes started but not yet recorded: they go out with the results.
    pending_spawns: Vec<SpawnRecord>,
    /// When the results and spawn records held back for a group commit go out.
    flush_at: Option<Instant>,
    done: u64,
    failed: u64,
    paused_state: WorkerState,
    host: String,
    store_id: String,
    last_prune: Option<Instant>,
    /// When a heartbeat last reached the store.
    last_heartbeat_ok: Instant,
    /// The jobs were stopped because the store could not be reached (self-fencing).
    fenced: bool,
}

/// Runs a worker on the calling thread until SIGTERM/SIGINT/SIGHUP, then drains and returns.
///
/// The caller must have called [`signals::block_terminating`] before starting any thread.
///
/// `on_ready` is called once, with the registry id, when the worker is registered and has made
/// its first claim: a daemon launcher waits for exactly that.
pub fn run_worker(
    store: &dyn Store,
    opts: WorkerOptions,
    log: &Logger,
    on_ready: &mut dyn FnMut(WorkerId),
) -> Result<WorkerSummary, RuntimeError> {
    if opts.slots == 0 {
        return Err(RuntimeError::Invalid(
            "a worker needs at least one slot (-w 1 or more)".into(),
        ));
    }
    if opts.queues.is_empty() {
        return Err(RuntimeError::Invalid(
            "a worker needs at least one queue".into(),
        ));
    }
    for dir in [&opts.run_dir, &opts.log_dir] {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            what: "cannot create directory",
            path: dir.clone(),
            source,
        })?;
    }
    let started = Instant::now();
    let pid = std::process::id() as i32;
    let host = procinfo::hostname();
    let store_id = store.store_id()?;
    let id = store.register_worker(&WorkerRegistration {
        name: opts.name.clone(),
        host: host.clone(),
        boot_id: procinfo::boot_id(),
        pid,
        pid_start_time: procinfo::start_time(pid),
        queues: opts.queues.clone(),
        slots: opts.slots,
        version: env!("CARGO_PKG_VERSION").to_string(),
        settings: opts.settings.as_ref().map(|s| s.to_json()),
    })?;
    let (tx, rx) = mpsc::channel();
    signals::forward_terminating(tx.clone(), Event::Signal);
    let bell = doorbell::bind(&opts.run_dir, id, tx.clone(), Event::Wake).map_err(|source| {
        RuntimeError::Io {
            what: "cannot create the doorbell socket in",
            path: opts.run_dir.clone(),
            source,
        }
    })?;
    // Writes from other hosts (PostgreSQL) arrive as notifications on the store's channel.
    let _subscription = store.subscribe(Box::new({
        let tx = tx.clone();
        move || {
            let _ = tx.send(Event::Wake);
        }
    }));
    if bell.is_none() {
        log.info(format_args!(
            "state dir path too long for a unix socket; waking by polling every {:?}",
            opts.poll
        ));
    }
    log.info(format_args!(
        "worker {} (id {id}, pid {pid}) started: queues {}, {} slot{}, stop timeout {}",
        opts.name,
        opts.queues.join(","),
        opts.slots,
        if opts.slots == 1 { "" } else { "s" },
        format_duration(opts.stop_timeout)
    ));
    if let Some(settings) = &opts.settings {
        log.info(format_args!("settings: {}", settings.describe()));
    }
    let mut lp = Loop {
        store,
        opts,
        log,
        id,
        tx,
        running: HashMap::new(),
        slots: Vec::new(),
        idle_slots: Vec::new(),
        unsent: Vec::new(),
        retry_at: None,
        purge_backlog: false,
        pending_spawns: Vec::new(),
        flush_at: None,
        done: 0,
        failed: 0,
        paused_state: WorkerState::Running,
        host,
        store_id,
        last_prune: None,
        last_heartbeat_ok: Instant::now(),
        fenced: false,
    };
    let reason = lp.run(&rx, bell.as_ref(), on_ready);
    let uptime = started.elapsed();
    if let Err(e) = store.worker_stopped(id, &reason) {
        log.error(format_args!("could not record the stop in the store: {e}"));
    }
    drop(bell);
    log.info(format_args!(
        "worker {} stopped: {reason}; {} done, {} failed, up {}",
        lp.opts.name,
        lp.done,
        lp.failed,
        format_duration(uptime)
    ));
    Ok(WorkerSummary {
        worker_id: id,
        reason,
        done: lp.done,
        failed: lp.failed,
        uptime,
    })
}

impl Loop<'_> {
    fn run(
        &mut self,
        rx: &Receiver<Event>,
        bell: Option<&doorbell::Doorbell>,
        on_ready: &mut dyn FnMut(WorkerId),
    ) -> String {
        self.sweep();
        self.refresh_pause();
        if let Err(e) = self.store.heartbeat(self.id, self.paused_state) {
            self.log.error(format_args!("heartbeat failed: {e}"));
        }
        let mut ready = Some(on_ready);
        // Only a write by someone else (a doorbell ring or a data_version change) can pause us,
        // so the flag is read then, not after every job's exit.
        let mut outside_change = false;
        let mut dirty = true;
        let mut next_poll = Instant::now() + self.opts.poll;
        let mut next_heartbeat = Instant::now() + self.opts.heartbeat;
        let mut next_scheduled: Option<Instant> = None;
        let mut drain: Option<(Instant, String)> = None;
        let mut interrupted_all = false;
        loop {
            let now = Instant::now();
            self.enforce_deadlines(now);
            if let Some((until, _)) = &drain {
                if now >= *until && !interrupted_all {
                    self.interrupt_all(now);
                    interrupted_all = true;
                }
                if self.running.is_empty()
                    && self.unsent.is_empty()
                    && self.pending_spawns.is_empty()
                {
                    break;
                }
            }
            // Results go out when their commit delay is over (after a failed attempt, once it
            // is time to try again).
            if self.flush_time().is_some_and(|t| now >= t) {
                dirty = true;
            }
            if dirty {
                dirty = false;
                if let Some(b) = bell {
                    b.pending.store(false, Ordering::Release);
                }
                // Cancel requests and the pause flag are written by other processes, which
                // ring us (or change data_version): read them only then, not after every exit.
                if std::mem::take(&mut outside_change) {
                    self.check_cancels();
                    if drain.is_none() {
                        self.refresh_pause();
                    }
                }
                if let Some(at) = self.step_and_spawn(drain.is_none()) {
                    next_scheduled = Some(at);
                } else if drain.is_none() {
                    next_scheduled = None;
                }
                if let Some(f) = ready.take() {
                    f(self.id);
                }
            }
            if now >= next_heartbeat {
                if drain.is_none() {
                    self.refresh_pause();
                }
                let state = if drain.is_some() {
                    WorkerState::Draining
                } else {
                    self.paused_state
                };
                match self.store.heartbeat(self.id, state) {
                    Ok(()) => {
                        self.last_heartbeat_ok = now;
                        if self.fenced {
                            self.fenced = false;
                            self.log
                                .info(format_args!("the store answers again: claiming again"));
                        }
                    }
                    Err(e) => {
                        self.log.error(format_args!("heartbeat failed: {e}"));
                        self.fence_if_unreachable(now);
                    }
                }
                self.sweep();
                // A wake-up may have been lost (a notification during a reconnect): look again.
                dirty = true;
                outside_change = true;
                next_heartbeat = now + self.opts.heartbeat;
            }
            if now >= next_poll {
                next_poll = now + self.opts.poll;
                match self.store.changed() {
                    Ok(true) => {
                        dirty = true;
                        outside_change = true;
                    }
                    Ok(false) => {}
                    Err(e) => self.log.error(format_args!("cannot read the store: {e}")),
                }
            }
            if let Some(at) = next_scheduled {
                if now >= at {
                    next_scheduled = None;
                    dirty = true;
                }
            }
            if dirty {
                continue;
            }
            let mut wake_at = next_poll.min(next_heartbeat);
            if let Some(at) = next_scheduled {
                wake_at = wake_at.min(at);
            }
            for r in self.running.values() {
                if let Some(d) = r.deadline {
                    wake_at = wake_at.min(d);
                }
                if let Some((_, kill_at)) = r.stopping {
                    wake_at = wake_at.min(kill_at);
                }
            }
            if let Some((until, _)) = &drain {
                if !interrupted_all {
                    wake_at = wake_at.min(*until);
                }
            }
            if let Some(t) = self.flush_time() {
                wake_at = wake_at.min(t);
            }
            let first = match rx.recv_timeout(wake_at.saturating_duration_since(Instant::now())) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Take everything already waiting, so simultaneous exits share one commit.
            let mut exits = Vec::new();
            let mut pending = Some(first);
            while let Some(ev) = pending.take().or_else(|| rx.try_recv().ok()) {
                match ev {
                    Event::Wake => {
                        dirty = true;
                        outside_change = true;
                    }
                    Event::Started { job, pid, log_path } => self.on_started(job, pid, log_path),
                    Event::SpawnFailed { job, slot, message } => {
                        self.idle_slots.push(slot);
                        self.on_spawn_failed(job, message);
                        dirty = true;
                    }
                    Event::Exited { job, status, slot } => {
                        self.idle_slots.extend(slot);
                        exits.push((job, status));
                    }
                    Event::SlotFree(slot) => self.idle_slots.push(slot),
                    Event::OutputProblem { job, message } => {
                        self.log.error(format_args!("job {job}: {message}"));
                    }
                    Event::Signal(sig) => {
                        let name = signals::name(sig);
                        match &drain {
                            None => {
                                let until = Instant::now() + self.opts.stop_timeout;
                                self.log.info(format_args!(
                                    "{name}: stopping; {} running job(s) get up to {} to finish",
                                    self.running.len(),
                                    format_duration(self.opts.stop_timeout)
                                ));
                                drain = Some((until, format!("{name} received")));
                                let _ = self.store.heartbeat(self.id, WorkerState::Draining);
                            }
                            Some(_) => {
                                self.log.info(format_args!(
                                    "{name} again: stopping now, running jobs go back to the queue"
                                ));
                                let now = Instant::now();
                                if !interrupted_all {
                                    self.interrupt_all(now);
                                    interrupted_all = true;
                                }
                                for r in self.running.values_mut() {
                                    if let Some((_, kill_at)) = &mut r.stopping {
                                        *kill_at = now;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if !exits.is_empty() {
                for (job, status) in exits {
                    self.on_exit(job, status);
                }
                // Their results go out right after the next claims are started.
                self.retry_at = None;
                dirty = true;
            }
        }
        drain
            .map(|(_, reason)| reason)
            .unwrap_or_else(|| "event channel closed".into())
    }

    fn free_slots(&self) -> u32 {
        self.opts.slots.saturating_sub(self.running.len() as u32)
    }

    /// Claims what fits (when `claiming`) and starts it, then sends the results that were
    /// waiting and the processes just started in one durable transaction. Returns when to look
    /// again for scheduled jobs, if any wait, or for a retry after an error.
    ///
    /// The claim commits first, without an fsync (a claim lost to a power cut only means a
    /// re-run, and its job died in the same cut), so that every attempt is on record before its
    /// process exists; the results' fsync then overlaps the new jobs instead of delaying them.
    fn step_and_spawn(&mut self, claiming: bool) -> Option<Instant> {
        let free = self.free_slots();
        let limit = if claiming && self.paused_state != WorkerState::Paused && !self.fenced {
            free
        } else {
            0
        };
        if limit == 0 && self.unsent.is_empty() && self.pending_spawns.is_empty() {
            return None;
        }
        let claimed = if limit > 0 {
            match self.store.claim(self.id, &self.opts.queues, limit) {
                Ok(c) => c,
                Err(e) => return Some(self.store_failed("could not claim jobs", &e)),
            }
        } else {
            Vec::new()
        };
        let got = claimed.len() as u32;
        if got > 0 {
            self.log
                .debug(format_args!("claimed {got} job(s) for {free} free slot(s)"));
        }
        for job in claimed {
            self.dispatch(job);
        }
        // Group commit: while other jobs run, results wait up to COMMIT_DELAY for the next
        // exits, so that one fsync covers several of them. Nothing is visible before it is
        // durable; only later, by at most the delay.
        let has_results = !self.unsent.is_empty() || !self.pending_spawns.is_empty();
        let deadline = if has_results {
            *self
                .flush_at
                .get_or_insert_with(|| Instant::now() + COMMIT_DELAY)
        } else {
            Instant::now()
        };
        let wait_more = claiming && !self.running.is_empty() && Instant::now() < deadline;
        if has_results && !wait_more {
            let spawns = std::mem::take(&mut self.pending_spawns);
            match self
                .store
                .step(self.id, &spawns, &self.unsent, &self.opts.queues, 0)
            {
                Ok((outcomes, _)) => {
                    self.flush_at = None;
                    self.account(outcomes);
                }
                Err(e) => {
                    self.pending_spawns = spawns;
                    let what = format!(
                        "could not record {} result(s) and {} started job(s) (kept, will retry)",
                        self.unsent.len(),
                        self.pending_spawns.len()
                    );
                    return Some(self.store_failed(&what, &e));
                }
            }
        }
        self.retry_at = None;
        if limit > 0 && got < limit {
            match self.store.next_run_at(&self.opts.queues) {
                Ok(Some(at)) => {
                    let wait = at.since(self.store.now());
                    return Some(Instant::now() + wait + Duration::from_millis(1));
                }
                Ok(None) => {}
                Err(e) => self
                    .log
                    .error(format_args!("cannot read the schedule: {e}")),
            }
        }
        None
    }

    /// When the results and spawn records held back should go out, if any are.
    fn flush_time(&self) -> Option<Instant> {
        if self.unsent.is_empty() && self.pending_spawns.is_empty() {
            return None;
        }
        let due = self.flush_at.unwrap_or_else(Instant::now);
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    /// Logs a failed store call and sets when to try again.
    fn store_failed(&mut self, what: &str, e: &dyn std::fmt::Display) -> Instant {
        self.log.error(format_args!("{what}: {e}"));
        let at = Instant::now() + Duration::from_millis(500);
        self.retry_at = Some(at);
        at
    }

    /// Hands a claimed job to an idle slot thread (started on first need), which starts its
    /// process and watches it; the loop meanwhile goes on. Starting a process blocks the
    /// calling thread until the exec is done, which would otherwise hold up every other slot.
    fn dispatch(&mut self, job: ClaimedJob) {
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
                    workq_core::Container::name(&self.store_id, job.id, job.attempt),
                )
            }),
        };
        let (id, lease) = (job.id, job.lease);
        let slot = match self.idle_slots.pop() {
            Some(slot) => Ok(slot),
            None => self.new_slot(),
        };
        let sent = slot.and_then(|slot| {
            self.slots[slot]
                .send(job)
                .map_err(|_| io::Error::other("its slot thread is gone"))
        });
        match sent {
            Ok(()) => {
                self.running.insert(id, running);
            }
            Err(e) => {
                // Not started: it goes back to the queue.
                self.log.error(format_args!(
                    "job {id}: cannot start a thread to run it: {e}"
                ));
                self.unsent.push(FinishRequest {
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

    /// Starts one more slot thread and returns its index.
    fn new_slot(&mut self) -> io::Result<usize> {
        let slot = self.slots.len();
        let (job_tx, job_rx) = mpsc::channel::<ClaimedJob>();
        let tx = self.tx.clone();
        let log_dir = self.opts.log_dir.clone();
        let store_id = self.store_id.clone();
        std::thread::Builder::new()
            .name(format!("slot-{slot}"))
            .stack_size(128 * 1024)
            .spawn(move || run_slot(slot, &job_rx, &tx, &log_dir, &store_id))?;
        self.slots.push(job_tx);
        Ok(slot)
    }

    /// The slot thread started the job: its pid goes out with the next results.
    fn on_started(&mut self, job: JobId, pid: i32, log_path: PathBuf) {
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
        self.pending_spawns.push(SpawnRecord {
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
        self.flush_at
            .get_or_insert_with(|| Instant::now() + COMMIT_DELAY);
    }

    /// The slot thread could not start the job: that is its result.
    fn on_spawn_failed(&mut self, job: JobId, message: String) {
        let Some(r) = self.running.remove(&job) else {
            return;
        };
        self.log
            .info(format_args!("job {job} could not start: {message}"));
        self.unsent.push(FinishRequest {
            job_id: job,
            lease: r.lease,
            outcome: Outcome::SpawnError,
            exit_code: None,
            signal: None,
            error: Some(message),
        });
    }

    fn on_exit(&mut self, job: JobId, status: Option<ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let Some(r) = self.running.remove(&job) else {
            return;
        };
        let code = status.and_then(|s| s.code());
        let signal = status.and_then(|s| s.signal());
        let elapsed = format_duration(r.started.elapsed());
        let (outcome, error) = match r.stopping.map(|s| s.0) {
            Some(StopReason::Timeout) => (
                Outcome::Timeout,
                Some(format!(
                    "timed out after {}",
                    r.timeout.map(format_duration).unwrap_or_default()
                )),
            ),
            Some(StopReason::Cancel) => {
                (Outcome::Cancelled, Some("cancelled while running".into()))
            }
            Some(StopReason::Interrupt) => (
                Outcome::Interrupted,
                Some("interrupted: its worker stopped; queued again".into()),
            ),
            None => match (code, signal) {
                (Some(0), _) => (Outcome::Succeeded, None),
                (Some(c), _) => (Outcome::Failed, Some(format!("exited with status {c}"))),
                (None, Some(s)) => (
                    Outcome::Failed,
                    Some(format!("killed by signal {s} ({})", signals::name(s))),
                ),
                (None, None) => (Outcome::Failed, Some("its exit status was lost".into())),
            },
        };
        self.log.info(format_args!(
            "job {job} attempt {} ended: {outcome} after {elapsed}{}",
            r.attempt,
            error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
        self.unsent.push(FinishRequest {
            job_id: job,
            lease: r.lease,
            outcome,
            exit_code: code,
            signal,
            error,
        });
    }

    /// Counts and logs what the store made of the results just sent, and forgets them.
    fn account(&mut self, outcomes: Vec<FinishOutcome>) {
        for (req, out) in self.unsent.iter().zip(outcomes) {
            match out {
                FinishOutcome::Done(workq_core::JobState::Succeeded) => self.done += 1,
                FinishOutcome::Done(_) => self.failed += 1,
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
        self.unsent.clear();
    }

    fn enforce_deadlines(&mut self, now: Instant) {
        for (id, r) in self.running.iter_mut() {
            if let Some((_, kill_at)) = r.stopping {
                if now >= kill_at {
                    r.kill();
                    r.stopping = r
                        .stopping
                        .map(|(why, _)| (why, now + Duration::from_secs(3600)));
                }
                continue;
            }
            if let Some(d) = r.deadline {
                if now >= d {
                    self.log.info(format_args!(
                        "job {id} timed out after {}: sending SIGTERM, SIGKILL in {}",
                        r.timeout.map(format_duration).unwrap_or_default(),
                        format_duration(r.kill_grace)
                    ));
                    r.term();
                    r.stopping = Some((StopReason::Timeout, now + r.kill_grace));
                    r.deadline = None;
                }
            }
        }
    }

    fn interrupt_all(&mut self, now: Instant) {
        for (id, r) in self.running.iter_mut() {
            if r.stopping.is_none() {
                self.log.info(format_args!(
                    "job {id}: interrupting (SIGTERM, SIGKILL in {}); it goes back to the queue",
                    format_duration(r.kill_grace)
                ));
                r.term();
                r.stopping = Some((StopReason::Interrupt, now + r.kill_grace));
            }
        }
    }

    fn check_cancels(&mut self) {
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
                    r.term();
                    r.stopping = Some((StopReason::Cancel, now + r.kill_grace));
                }
            }
        }
    }

    /// On a store shared across hosts, a worker that cannot heartbeat will be declared dead
    /// after the TTL and its jobs rescued elsewhere: before that happens it kills them itself,
    /// so a rescued job never runs twice at once. They end `interrupted` if the store still
    /// knows them as ours when it answers again; otherwise their results are stale.
    fn fence_if_unreachable(&mut self, now: Instant) {
        let limit = procinfo::fence_after();
        if self.fenced
            || !self.store.shared_across_hosts()
            || now.duration_since(self.last_heartbeat_ok) < limit
        {
            return;
        }
        self.fenced = true;
        self.log.error(format_args!(
            "cannot reach the store for {}: stopping my {} job(s) before other hosts take them over",
            format_duration(now.duration_since(self.last_heartbeat_ok)),
            self.running.len()
        ));
        for r in self.running.values_mut() {
            r.stopping = Some((StopReason::Interrupt, now + Duration::from_secs(3600)));
            r.kill();
        }
    }

    /// Deletes jobs that finished longer ago than `keep`, 500 per transaction and at most
    /// 20 batches per hour, so the store stays bounded under a steady stream of jobs.
    /// Purges finished jobs older than `keep`, at most 10,000 in 500-job transactions so that a
    /// sweep never holds the loop up for long. Returns true if more remain.
    fn purge_old_jobs(&self, keep: Duration) -> bool {
        let before = Timestamp(self.store.now().0.saturating_sub(keep.as_millis() as i64));
        let states = [
            workq_core::JobState::Succeeded,
            workq_core::JobState::Failed,
            workq_core::JobState::Cancelled,
        ];
        let mut total = 0;
        let mut more = true;
        for _ in 0..20 {
            match self.store.purge(before, &states, 500) {
                Ok(p) => {
                    for f in &p.log_files {
                        let _ = std::fs::remove_file(f);
                    }
                    total += p.jobs;
                    if p.jobs < 500 {
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

    /// Follows `workq worker pause/resume`: the flag lives in the store under our name.
    fn refresh_pause(&mut self) {
        match self.store.worker_paused(&self.host, &self.opts.name) {
            Ok(paused) => {
                let was = self.paused_state == WorkerState::Paused;
                if paused != was {
                    self.paused_state = if paused {
                        WorkerState::Paused
                    } else {
                        WorkerState::Running
                    };
                    self.log.info(format_args!(
                        "{}",
                        if paused {
                            "paused: claiming nothing new; running jobs go on"
                        } else {
                            "resumed: claiming again"
                        }
                    ));
                    if let Err(e) = self.store.heartbeat(self.id, self.paused_state) {
                        self.log.error(format_args!("heartbeat failed: {e}"));
                    }
                }
            }
            Err(e) => self
                .log
                .error(format_args!("cannot read the pause flag: {e}")),
        }
    }

    /// Jobs the store says this worker runs but the worker does not know: a commit reported as
    /// failed that went through after all (a connection lost during COMMIT), whose jobs were
    /// stopped. They go back to the queue as interrupted, which costs them nothing.
    fn requeue_forgotten(&mut self) {
        let known = |s: &Self, job: JobId| {
            s.running.contains_key(&job) || s.unsent.iter().any(|u| u.job_id == job)
        };
        // Cheap and by worker first; the store-wide list (for the leases) only if needed.
        let Ok(ours) = self.store.running_attempts(self.id) else {
            return;
        };
        if ours.iter().all(|a| known(self, a.job_id)) {
            return;
        }
        let Ok(all) = self.store.running_jobs() else {
            return;
        };
        for r in all {
            if r.worker_id == Some(self.id)
                && !self.running.contains_key(&r.job_id)
                && !self.unsent.iter().any(|u| u.job_id == r.job_id)
            {
                self.log.info(format_args!(
                    "job {}: the store has it running here, but it is not: queued again",
                    r.job_id
                ));
                self.unsent.push(FinishRequest {
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

    fn sweep(&mut self) {
        let due = self
            .last_prune
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
        if due {
            self.last_prune = Some(Instant::now());
            let before =
                Timestamp(self.store.now().0 - self.opts.registry_retention.as_millis() as i64);
            match self.store.prune_workers(before) {
                Ok(0) => {}
                Ok(n) => self.log.info(format_args!(
                    "pruned {n} ended worker(s) older than {} from the registry",
                    format_duration(self.opts.registry_retention)
                )),
                Err(e) => self
                    .log
                    .error(format_args!("could not prune the registry: {e}")),
            }
        }
        // A stream faster than one sweep's share is caught up a share per heartbeat, so
        // the store cannot grow without bound.
        if let Some(keep) = self.opts.job_retention {
            if due || self.purge_backlog {
                self.purge_backlog = self.purge_old_jobs(keep);
            }
        }
        self.requeue_forgotten();
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

/// How long a slot waits for the just-killed rest of a job's group to let go of its output
/// before it reports the exit anyway and goes on draining (a process that escaped the group).
const LINGER: Duration = Duration::from_millis(20);

/// A slot thread: starts each job it is given and watches it until it exits, draining its
/// output into its log. It must outlive its jobs: their parent-death signal fires when the
/// thread that started them ends.
fn run_slot(
    slot: usize,
    jobs: &Receiver<ClaimedJob>,
    tx: &Sender<Event>,
    log_dir: &std::path::Path,
    store_id: &str,
) {
    while let Ok(job) = jobs.recv() {
        let id = job.id;
        let started = match spawn::spawn_job(&job, log_dir, store_id) {
            Ok(s) => s,
            Err(e) => {
                let message = spawn::describe_spawn_error(&job, &e);
                let path = spawn::log_path(log_dir, job.id, job.attempt);
                if let Some(dir) = path.parent() {
                    if std::fs::create_dir_all(dir).is_ok() {
                        let _ = std::fs::write(&path, format!("workq: {message}\n"));
                    }
                }
                let _ = tx.send(Event::SpawnFailed {
                    job: id,
                    slot,
                    message,
                });
                continue;
            }
        };
        let pid = started.pid;
        let _ = tx.send(Event::Started {
            job: id,
            pid,
            log_path: started.log_path,
        });
        let mut output = started.output;
        let note = tx.clone();
        let mut report = |message: String| {
            let _ = note.send(Event::OutputProblem { job: id, message });
        };
        let status = match &mut output {
            Some(o) => o.run_until_exit(pid, &mut report).ok(),
            None => crate::launch::wait(pid).ok(),
        };
        // Whatever the leader left running in its group ends with it.
        spawn::signal_group(pid, libc::SIGKILL);
        let ended = match &mut output {
            Some(o) => o.drain_now(&mut report) || o.ends_within(LINGER, &mut report),
            None => true,
        };
        let _ = tx.send(Event::Exited {
            job: id,
            status,
            slot: ended.then_some(slot),
        });
        if !ended {
            if let Some(o) = &mut output {
                o.drain_to_end(&mut report);
            }
            let _ = tx.send(Event::SlotFree(slot));
        }
    }
}

/// Time since `t` in whole seconds, for uptime displays.
pub fn uptime_secs(t: Timestamp, now: Timestamp) -> u64 {
    now.since(t).as_secs()
}
