//! The library facade: open a state dir, submit, inspect, wait for and cancel jobs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use workq_core::{Job, JobId, JobSpec, WorkerRecord};
use workq_runtime::{doorbell, procinfo, rescue};
use workq_store::{
    CancelOutcome, ListFilter, RetryOutcome, SqliteOptions, SqliteStore, Store, StoreError,
    Submitted,
};

/// Errors of the library facade.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state directory cannot be created or used.
    #[error("cannot use state dir {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// No such job.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// `wait` ran out of time.
    #[error("timed out waiting for {0} job(s)")]
    Timeout(usize),
}

/// A handle on one workq store and its state directory.
pub struct Client {
    store: Box<dyn Store>,
    state_dir: PathBuf,
}

impl Client {
    /// Opens the store in `state_dir` (creating the directory and database if needed).
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Client, Error> {
        let state_dir = state_dir.as_ref().to_path_buf();
        let db = state_dir.join("workq.db");
        Client::open_at(&state_dir, &db)
    }

    /// Opens the SQLite database `db`, with `state_dir` holding logs and sockets.
    pub fn open_at(state_dir: &Path, db: &Path) -> Result<Client, Error> {
        Client::open_with_lock_timeout(state_dir, db, SqliteOptions::default().lock_timeout)
    }

    /// Like [`Client::open_at`], waiting at most `lock_timeout` for a locked database.
    pub fn open_with_lock_timeout(
        state_dir: &Path,
        db: &Path,
        lock_timeout: Duration,
    ) -> Result<Client, Error> {
        Client::open_with(state_dir, db, lock_timeout, workq_store::JournalMode::Auto)
    }

    /// Opens the PostgreSQL store at `url`, with `state_dir` holding this host's logs and sockets.
    pub fn open_postgres(state_dir: &Path, url: &str) -> Result<Client, Error> {
        let io = procinfo::store_io_timeout();
        let opts = workq_store::PgOptions {
            host: procinfo::hostname(),
            connect_timeout: io,
            io_timeout: io,
            ..workq_store::PgOptions::default()
        };
        // The server first: a URL that does not work must not leave a state dir behind.
        let store = workq_store::PgStore::open(url, opts)?;
        for dir in [
            state_dir.to_path_buf(),
            state_dir.join("run"),
            state_dir.join("logs"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| Error::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(Client {
            store: Box::new(store),
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// Like [`Client::open_with_lock_timeout`], with an explicit SQLite journal mode.
    pub fn open_with(
        state_dir: &Path,
        db: &Path,
        lock_timeout: Duration,
        journal_mode: workq_store::JournalMode,
    ) -> Result<Client, Error> {
        for dir in [
            state_dir.to_path_buf(),
            state_dir.join("run"),
            state_dir.join("logs"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| Error::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::StateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let opts = SqliteOptions {
            clock: Arc::new(workq_store::SystemClock),
            host: procinfo::hostname(),
            lock_timeout,
            journal_mode,
        };
        let store = SqliteStore::open(db, opts)?;
        Ok(Client {
            store: Box::new(store),
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// The store behind this client.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where worker doorbells live.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }

    /// Where job logs live.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// Queues one job and wakes the workers.
    pub fn submit(&self, spec: JobSpec) -> Result<Submitted, Error> {
        let mut out = self.submit_many(std::slice::from_ref(&spec))?;
        Ok(out.remove(0))
    }

    /// Queues many jobs in one transaction and wakes the workers once.
    pub fn submit_many(&self, specs: &[JobSpec]) -> Result<Vec<Submitted>, Error> {
        let out = self.store.submit(specs)?;
        doorbell::ring_all(&self.run_dir());
        Ok(out)
    }

    /// One job.
    pub fn get(&self, id: JobId) -> Result<Job, Error> {
        self.store.get(id)?.ok_or(Error::JobNotFound(id))
    }

    /// Jobs matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, Error> {
        Ok(self.store.list(filter)?)
    }

    /// Blocks until every job in `ids` has finished (or `timeout` passes); returns them.
    pub fn wait(&self, ids: &[JobId], timeout: Option<Duration>) -> Result<Vec<Job>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let jobs = self.jobs(ids)?;
            let open = jobs.iter().filter(|j| !j.state.is_terminal()).count();
            if open == 0 {
                return Ok(jobs);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(open));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The jobs with these ids, in the given order; a missing id is an error.
    pub fn jobs(&self, ids: &[JobId]) -> Result<Vec<Job>, Error> {
        let found: std::collections::HashMap<JobId, Job> = self
            .jobs_in_states(ids, &[])?
            .into_iter()
            .map(|j| (j.id, j))
            .collect();
        ids.iter()
            .map(|id| found.get(id).cloned().ok_or(Error::JobNotFound(*id)))
            .collect()
    }

    /// Those of the jobs `ids` that are in one of `states` (any state if empty), in no
    /// particular order. Asks in chunks, so any number of ids fits in the store's statements.
    pub fn jobs_in_states(
        &self,
        ids: &[JobId],
        states: &[workq_core::JobState],
    ) -> Result<Vec<Job>, Error> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            out.extend(self.store.list(&ListFilter {
                ids: chunk.to_vec(),
                states: states.to_vec(),
                ..ListFilter::default()
            })?);
        }
        Ok(out)
    }

    /// Cancels jobs; running ones are stopped by their workers, which are woken at once.
    pub fn cancel(&self, ids: &[JobId]) -> Result<Vec<CancelOutcome>, Error> {
        let out = self.store.cancel(ids)?;
        doorbell::ring_all(&self.run_dir());
        Ok(out)
    }

    /// Queues failed or cancelled jobs again.
    pub fn retry(&self, ids: &[JobId]) -> Result<Vec<RetryOutcome>, Error> {
        let out = self.store.retry(ids)?;
        doorbell::ring_all(&self.run_dir());
        Ok(out)
    }

    /// Finds this host's workers that died without saying so: marks them dead, kills what is
    /// left of their jobs' processes and puts those jobs back in the queue.
    pub fn clean_up_dead_workers(&self) -> Result<(), Error> {
        rescue::sweep(self.store.as_ref(), None)?;
        Ok(())
    }

    /// Workers registered as live that serve `queue`. A worker of this host that died counts
    /// until [`Client::clean_up_dead_workers`] has run.
    pub fn live_workers_serving(&self, queue: &str) -> Result<Vec<WorkerRecord>, Error> {
        Ok(self
            .store
            .workers(false)?
            .into_iter()
            .filter(|w| w.queues.iter().any(|q| q == queue))
            .collect())
    }
}
