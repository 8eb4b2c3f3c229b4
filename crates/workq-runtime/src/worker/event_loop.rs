//! The worker's event loop: one thread that owns the store handle, fed by a channel (doorbell
//! rings, slot threads' reports, signals). Each turn it sends the signals that are due, steps
//! (claims and results) when something may have changed, heartbeats and polls on time, then
//! sleeps until the next event or timer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Instant;

use workq_core::{format_duration, JobId, WorkerId, WorkerState};
use workq_store::Store;

use super::decide::{self, Agenda, Drain};
use super::fence::Fence;
use super::jobs::Running;
use super::slots::Slots;
use super::step::Outbox;
use super::upkeep::{Standing, Upkeep};
use super::WorkerOptions;
use crate::logger::Logger;
use crate::{doorbell, signals};

/// What wakes the loop.
#[derive(Clone)]
pub(super) enum Event {
    /// Someone else wrote to the store (doorbell or store notification).
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
    /// group still holds its output open (then [`Event::SlotFree`] follows). `engine_line` is
    /// read only for a container whose engine failed (exit 125, 126, 127).
    Exited {
        job: JobId,
        status: Option<ExitStatus>,
        slot: Option<usize>,
        engine_line: Option<String>,
    },
    /// A slot thread finished draining output written after its job ended.
    SlotFree(usize),
    /// A problem with a job's output, for the worker log.
    OutputProblem { job: JobId, message: String },
    /// SIGTERM, SIGINT or SIGHUP.
    Signal(libc::c_int),
}

/// Jobs counted by how the store recorded them.
#[derive(Default)]
pub(super) struct Tally {
    /// Succeeded.
    pub done: u64,
    /// Failed or cancelled for good.
    pub failed: u64,
}

/// Who the worker is in the store.
pub(super) struct Registered {
    /// Its registry id.
    pub id: WorkerId,
    /// Its host name, under which its pause flag is kept.
    pub host: String,
    /// The store's id, which names job containers.
    pub store_id: String,
}

/// The worker's state, owned by its loop.
pub(super) struct Loop<'a> {
    pub store: &'a dyn Store,
    pub opts: WorkerOptions,
    pub log: &'a Logger,
    pub id: WorkerId,
    pub host: String,
    pub running: HashMap<JobId, Running>,
    pub slots: Slots,
    pub outbox: Outbox,
    pub standing: Standing,
    /// Shared with the fence watchdog and the slot threads.
    pub fence: Arc<Fence>,
    pub upkeep: Upkeep,
    pub tally: Tally,
    pub agenda: Agenda,
    /// Set when a stop signal arrives.
    pub drain: Option<Drain>,
}

impl<'a> Loop<'a> {
    /// A loop for the registered worker; slot threads report to `events`.
    pub fn new(
        store: &'a dyn Store,
        opts: WorkerOptions,
        log: &'a Logger,
        me: Registered,
        events: Sender<Event>,
        fence: Arc<Fence>,
    ) -> Loop<'a> {
        let now = Instant::now();
        Loop {
            store,
            slots: Slots::new(events, opts.log_dir.clone(), me.store_id, fence.clone()),
            fence,
            agenda: Agenda::new(now, opts.poll, opts.heartbeat),
            opts,
            log,
            id: me.id,
            host: me.host,
            running: HashMap::new(),
            outbox: Outbox::default(),
            standing: Standing {
                paused: false,
                rejoined: false,
                fenced: false,
            },
            upkeep: Upkeep::default(),
            tally: Tally::default(),
            drain: None,
        }
    }

    /// Runs until a stop signal's drain is over (or the channel closes); returns why it
    /// stopped. `on_ready` is called after the first step.
    pub fn run(
        &mut self,
        rx: &Receiver<Event>,
        bell: Option<&doorbell::Doorbell>,
        on_ready: &mut dyn FnMut(WorkerId),
    ) -> String {
        self.sweep();
        self.refresh_pause();
        let state = decide::heartbeat_state(false, self.standing.paused);
        if let Err(e) = self.store.heartbeat(self.id, state) {
            self.log.error(format_args!("heartbeat failed: {e}"));
        }
        // The periods count from the end of that first round, however long it took.
        self.agenda = Agenda::new(Instant::now(), self.opts.poll, self.opts.heartbeat);
        let mut told = false;
        loop {
            let now = Instant::now();
            if !self.turn(now, bell, &mut told, on_ready) {
                break;
            }
            if self.agenda.step {
                // Events first, even when every turn finds more to do (slow store calls and a
                // store that keeps changing): exits, signals and wake-ups must not starve.
                if let Ok(first) = rx.try_recv() {
                    self.take_events(first, rx);
                }
                continue;
            }
            let jobs = self
                .running
                .values()
                .map(|r| (r.deadline, r.stopping.map(|s| s.1)));
            let wake_at =
                self.agenda
                    .wake_at(self.drain.as_ref(), self.outbox.flush_time(now), jobs);
            match rx.recv_timeout(wake_at.saturating_duration_since(Instant::now())) {
                Ok(first) => self.take_events(first, rx),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.drain
            .take()
            .map(|d| d.reason)
            .unwrap_or_else(|| "event channel closed".into())
    }

    /// Everything due at `now` before the loop may sleep. False when the drain is over.
    fn turn(
        &mut self,
        now: Instant,
        bell: Option<&doorbell::Doorbell>,
        told: &mut bool,
        on_ready: &mut dyn FnMut(WorkerId),
    ) -> bool {
        self.fence_if_unreachable(now);
        self.lift_fence_when_clear();
        self.enforce_deadlines(now);
        if let Some(d) = &self.drain {
            if d.interrupt_due(now) {
                self.interrupt_all(now);
            }
            if Drain::over(!self.running.is_empty(), self.outbox.is_empty()) {
                return false;
            }
        }
        // Results go out when their commit delay is over (after a failed attempt, once it
        // is time to try again).
        if self.outbox.flush_time(now).is_some_and(|t| now >= t) {
            self.agenda.step = true;
        }
        if self.agenda.step {
            self.step(bell);
            // After the first step, and again with the new id after a rejoin (the PID file
            // names the registry row).
            if !*told || std::mem::take(&mut self.standing.rejoined) {
                *told = true;
                on_ready(self.id);
            }
        }
        if now >= self.agenda.next_heartbeat {
            self.heartbeat(now);
        }
        if now >= self.agenda.next_poll {
            self.poll(now);
        }
        if self.agenda.next_scheduled.is_some_and(|at| now >= at) {
            self.agenda.next_scheduled = None;
            self.agenda.step = true;
        }
        true
    }

    /// Reads what others may have changed (if they did), then claims, starts and commits.
    fn step(&mut self, bell: Option<&doorbell::Doorbell>) {
        self.agenda.step = false;
        if let Some(b) = bell {
            b.pending.store(false, Ordering::Release);
        }
        if std::mem::take(&mut self.agenda.outside_change) {
            self.check_cancels();
            if self.drain.is_none() {
                self.refresh_pause();
            }
        }
        let asked = self.step_and_spawn();
        self.agenda.next_scheduled =
            decide::next_scheduled(self.agenda.next_scheduled, asked, self.drain.is_some());
    }

    /// Looks for changes made without ringing the doorbell.
    fn poll(&mut self, now: Instant) {
        self.agenda.next_poll = now + self.opts.poll;
        match self.store.changed() {
            Ok(true) => self.agenda.outside_change(),
            Ok(false) => {}
            Err(e) => self.log.error(format_args!("cannot read the store: {e}")),
        }
    }

    /// Handles `first` and every event already waiting, so simultaneous exits share one commit.
    fn take_events(&mut self, first: Event, rx: &Receiver<Event>) {
        let mut exits = Vec::new();
        let mut pending = Some(first);
        while let Some(ev) = pending.take().or_else(|| rx.try_recv().ok()) {
            match ev {
                Event::Wake => self.agenda.outside_change(),
                Event::Started { job, pid, log_path } => self.on_started(job, pid, log_path),
                Event::SpawnFailed { job, slot, message } => {
                    self.slots.free(slot);
                    self.on_spawn_failed(job, message);
                    self.agenda.step = true;
                }
                Event::Exited {
                    job,
                    status,
                    slot,
                    engine_line,
                } => {
                    if let Some(slot) = slot {
                        self.slots.free(slot);
                    }
                    exits.push((job, status, engine_line));
                }
                Event::SlotFree(slot) => self.slots.free(slot),
                Event::OutputProblem { job, message } => {
                    self.log.error(format_args!("job {job}: {message}"));
                }
                Event::Signal(sig) => self.on_signal(sig),
            }
        }
        if !exits.is_empty() {
            for (job, status, engine_line) in exits {
                self.on_exit(job, status, engine_line);
            }
            // Their results go out right after the next claims are started.
            self.outbox.retry_at = None;
            self.agenda.step = true;
        }
    }

    /// A first stop signal starts a drain; a second interrupts the running jobs and kills
    /// them at once.
    fn on_signal(&mut self, sig: libc::c_int) {
        let name = signals::name(sig);
        if self.drain.is_none() {
            self.log.info(format_args!(
                "{name}: stopping; {} running job(s) get up to {} to finish",
                self.running.len(),
                format_duration(self.opts.stop_timeout)
            ));
            let reason = format!("{name} received");
            self.drain = Some(Drain::new(Instant::now(), self.opts.stop_timeout, reason));
            crate::sdnotify::stopping();
            let _ = self.store.heartbeat(self.id, WorkerState::Draining);
            return;
        }
        self.log.info(format_args!(
            "{name} again: stopping now, running jobs go back to the queue"
        ));
        let now = Instant::now();
        self.interrupt_all(now);
        self.kill_stopping_now(now);
    }
}
