//! The worker: claim up to the free slots, run each job as a child process group, finish it,
//! heartbeat, sweep for dead workers, and drain cleanly on SIGTERM, SIGINT or SIGHUP.
//!
//! [`run_worker`] registers the worker and runs its event loop (`event_loop`) on the calling
//! thread; slot threads (`slots`) start and watch the jobs; the loop's choices are pure
//! functions (`decide`).

mod decide;
mod event_loop;
mod fence;
mod jobs;
mod slots;
mod step;
mod upkeep;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use workq_core::{format_duration, JobId, WorkerId};
use workq_store::{Store, WorkerRegistration};

use crate::logger::Logger;
use crate::{doorbell, procinfo, signals, RuntimeError};
use event_loop::{Event, Loop, Registered};

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
    /// Only these jobs are claimed (empty: any job of its queues): `submit --wait`'s temporary
    /// worker must not run other jobs waiting in the queue.
    pub only_jobs: Vec<JobId>,
}

impl WorkerOptions {
    /// Defaults for a worker named `name` on `queues` with `slots` slots.
    pub fn new(name: &str, queues: Vec<String>, slots: u32, state_dir: &Path) -> Self {
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
            only_jobs: Vec::new(),
        }
    }

    /// Options for a worker configured by `settings`.
    pub fn from_settings(settings: &crate::WorkerSettings, state_dir: &Path) -> Self {
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

impl WorkerOptions {
    /// The queues as the registry shows them. A worker limited to some jobs does not serve its
    /// queues, so it must not count as their worker (for `wait`, `submit --wait`, `status`);
    /// its entry says what it runs instead.
    fn registered_queues(&self) -> Vec<String> {
        if self.only_jobs.is_empty() {
            return self.queues.clone();
        }
        let ids: Vec<String> = self.only_jobs.iter().map(JobId::to_string).collect();
        self.queues
            .iter()
            .map(|q| format!("{q} (only job {})", ids.join(",")))
            .collect()
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
    prepare(&opts)?;
    let started = Instant::now();
    let me = register(store, &opts)?;
    let id = me.id;
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
    announce(log, &opts, id, bell.is_none());
    let fence = std::sync::Arc::new(fence::Fence::new(
        store.shared_across_hosts().then(procinfo::fence_after),
    ));
    let ran = std::thread::scope(|scope| {
        // Stops the watchdog however the loop ends, or the scope would wait for it forever.
        struct StopOnDrop<'f>(&'f fence::Fence);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let _stop = StopOnDrop(&fence);
        if fence.armed() {
            let watchdog = fence.clone();
            let spawned = std::thread::Builder::new()
                .name("workq-fence".into())
                .stack_size(128 * 1024)
                .spawn_scoped(scope, move || watchdog.watch(log));
            if let Err(e) = spawned {
                // Without it nothing fences, and a job could run twice at once: no worker.
                return Err(format!("cannot start the fence watchdog thread: {e}"));
            }
        }
        let mut lp = Loop::new(store, opts, log, me, tx, fence.clone());
        // Under systemd (Type=notify) the unit is up once the worker claims.
        let mut ready = |id: WorkerId| {
            crate::sdnotify::ready();
            on_ready(id);
        };
        let reason = lp.run(&rx, bell.as_ref(), &mut ready);
        Ok((lp, reason))
    });
    let (lp, reason) = match ran {
        Ok(done) => done,
        Err(why) => {
            let _ = store.worker_stopped(id, &why);
            return Err(RuntimeError::Invalid(why));
        }
    };
    let uptime = started.elapsed();
    // The loop may have registered again under a new id (ARCHITECTURE.md §4.4).
    let id = lp.id;
    if let Err(e) = store.worker_stopped(id, &reason) {
        log.error(format_args!("could not record the stop in the store: {e}"));
    }
    drop(bell);
    log.info(format_args!(
        "worker {} stopped: {reason}; {} done, {} failed, up {}",
        lp.opts.name,
        lp.tally.done,
        lp.tally.failed,
        format_duration(uptime)
    ));
    Ok(WorkerSummary {
        worker_id: id,
        reason,
        done: lp.tally.done,
        failed: lp.tally.failed,
        uptime,
    })
}

/// Refuses options no worker can run with, and makes its directories.
fn prepare(opts: &WorkerOptions) -> Result<(), RuntimeError> {
    if opts.slots == 0 {
        return Err(RuntimeError::Invalid(
            "a worker needs at least one slot".into(),
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
    Ok(())
}

/// Adds this process to the worker registry.
fn register(store: &dyn Store, opts: &WorkerOptions) -> Result<Registered, RuntimeError> {
    let pid = std::process::id() as i32;
    let host = procinfo::hostname();
    let store_id = store.store_id()?;
    let id = store.register_worker(&WorkerRegistration {
        name: opts.name.clone(),
        host: host.clone(),
        boot_id: procinfo::boot_id(),
        pid,
        pid_start_time: procinfo::start_time(pid),
        queues: opts.registered_queues(),
        slots: opts.slots,
        version: env!("CARGO_PKG_VERSION").to_string(),
        settings: opts.settings.as_ref().map(|s| s.to_json()),
    })?;
    Ok(Registered { id, host, store_id })
}

/// The start lines of the worker log.
fn announce(log: &Logger, opts: &WorkerOptions, id: WorkerId, polling: bool) {
    if polling {
        log.info(format_args!(
            "state dir path too long for a unix socket; waking by polling every {:?}",
            opts.poll
        ));
    }
    log.info(format_args!(
        "worker {} (id {id}, pid {}) started: queues {}, {} slot{}, stop timeout {}",
        opts.name,
        std::process::id(),
        opts.queues.join(","),
        opts.slots,
        if opts.slots == 1 { "" } else { "s" },
        format_duration(opts.stop_timeout)
    ));
    if let Some(settings) = &opts.settings {
        log.info(format_args!("settings: {}", settings.describe()));
    }
}
