//! Slot threads: one per job running at once, each starting its jobs and watching them until
//! they exit, so the loop never waits for an exec.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use workq_core::ClaimedJob;

use super::event_loop::Event;
use super::fence::Fence;
use crate::{container, spawn};

/// The slot threads, started on first need and kept for the worker's life.
pub(super) struct Slots {
    /// Each thread's job channel, by slot number.
    threads: Vec<Sender<ClaimedJob>>,
    /// Slot threads waiting for a job.
    idle: Vec<usize>,
    /// Where the threads report.
    events: Sender<Event>,
    log_dir: PathBuf,
    store_id: String,
    /// Told each job's process group and exit, so the watchdog can kill them.
    fence: Arc<Fence>,
}

impl Slots {
    /// No threads yet; they will report to `events`.
    pub fn new(
        events: Sender<Event>,
        log_dir: PathBuf,
        store_id: String,
        fence: Arc<Fence>,
    ) -> Slots {
        Slots {
            threads: Vec::new(),
            idle: Vec::new(),
            events,
            log_dir,
            store_id,
            fence,
        }
    }

    /// The store's id, which names a job's container.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Hands `job` to an idle slot thread, starting one if none is idle.
    pub fn send(&mut self, job: ClaimedJob) -> io::Result<()> {
        let slot = match self.idle.pop() {
            Some(slot) => slot,
            None => self.start_thread()?,
        };
        self.threads[slot]
            .send(job)
            .map_err(|_| io::Error::other("its slot thread is gone"))
    }

    /// Slot `slot` has nothing to do until it is sent a job.
    pub fn free(&mut self, slot: usize) {
        self.idle.push(slot);
    }

    /// Starts one more slot thread and returns its number.
    fn start_thread(&mut self) -> io::Result<usize> {
        let slot = self.threads.len();
        let (job_tx, job_rx) = mpsc::channel::<ClaimedJob>();
        let tx = self.events.clone();
        let log_dir = self.log_dir.clone();
        let store_id = self.store_id.clone();
        let fence = self.fence.clone();
        std::thread::Builder::new()
            .name(format!("slot-{slot}"))
            .stack_size(128 * 1024)
            .spawn(move || run_slot(slot, &job_rx, &tx, &log_dir, &store_id, &fence))?;
        self.threads.push(job_tx);
        Ok(slot)
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
    log_dir: &Path,
    store_id: &str,
    fence: &Fence,
) {
    while let Ok(job) = jobs.recv() {
        let id = job.id;
        let started = match spawn::spawn_job(&job, log_dir, store_id) {
            Ok(s) => s,
            Err(e) => {
                let message = spawn::describe_spawn_error(&job, &e);
                write_spawn_error(&spawn::log_path(log_dir, job.id, job.attempt), &message);
                let _ = tx.send(Event::SpawnFailed {
                    job: id,
                    slot,
                    message,
                });
                continue;
            }
        };
        let pid = started.pid;
        fence.started(id, pid);
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
        fence.exited(id);
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
            engine_line: engine_line(&job, status, log_dir),
        });
        if !ended {
            if let Some(o) = &mut output {
                o.drain_to_end(&mut report);
            }
            let _ = tx.send(Event::SlotFree(slot));
        }
    }
}

/// For a job run in a container whose exit status is the engine's (125, 126, 127), the engine's
/// last error line from the job's log; nothing is read for any other job.
fn engine_line(job: &ClaimedJob, status: Option<ExitStatus>, log_dir: &Path) -> Option<String> {
    job.spec.container.as_ref()?;
    let code = status?.code()?;
    container::engine_failure(code)?;
    container::engine_error_line(&spawn::log_path(log_dir, job.id, job.attempt))
}

/// Puts why a job could not start into its log, where `workq logs` shows it (best effort: the
/// error also goes to the store).
fn write_spawn_error(path: &Path, message: &str) {
    if let Some(dir) = path.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = std::fs::write(path, format!("workq: {message}\n"));
        }
    }
}
