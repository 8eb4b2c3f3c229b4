//! The PostgreSQL store: the same tables and semantics as the SQLite one, in schema `workq`,
//! for workers on many hosts. Claims use `FOR UPDATE SKIP LOCKED`; every write that can give a
//! worker something to do sends `NOTIFY workq_changes` (delivered at commit); a sequence bumped
//! by every write answers `changed()` with one cheap read.

mod claim;
mod import;
pub use import::CopyReport;
mod jobs;
mod metrics;
mod rows;
pub(crate) mod schema;
mod stmt;
mod transitions;
mod workers;

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};

use crate::{Clock, Result, StoreError, SystemClock};
use stmt::Cols;

/// Options of a PostgreSQL store.
#[derive(Clone)]
pub struct PgOptions {
    /// The clock (injected in tests).
    pub clock: Arc<dyn Clock>,
    /// Host name recorded on attempts.
    pub host: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long sent data may stay unacknowledged, and an idle connection unanswered, before
    /// the connection counts as broken (TCP user timeout and keepalives). Why: when the network
    /// drops packets instead of refusing them, a call would otherwise block for the kernel's
    /// retransmission limit (about 15 minutes), and a worker could not fence itself in time.
    pub io_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            clock: Arc::new(SystemClock),
            host: "localhost".into(),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
        }
    }
}

/// A workq store in a PostgreSQL database.
pub struct PgStore {
    url: String,
    display: String,
    conn: RefCell<Option<Client>>,
    opts: PgOptions,
    rng: crate::shared::Leases,
    /// The change counter at the previous `changed()` (read lazily: one-shot commands never ask).
    seen_change: Cell<Option<i64>>,
    /// Prepared statements of the current connection.
    pub(crate) stmts: stmt::Cache,
    /// Set inside a write that decides only as it goes whether it wrote events (a claim that
    /// took jobs), so that its commit notifies listeners.
    pub(crate) events_written: Cell<bool>,
}

/// The channel workers listen on.
pub const CHANNEL: &str = "workq_changes";

/// The channel of writes that only appended to the event log (a claim's `started` rows, a
/// worker's change of state): readers of the log listen to it as well as to [`CHANNEL`];
/// workers do not, so a claim does not wake every worker only to find nothing more.
pub const EVENTS_CHANNEL: &str = "workq_events";

pub(crate) enum TxErr {
    Pg(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for TxErr {
    fn from(e: postgres::Error) -> Self {
        TxErr::Pg(e)
    }
}

impl From<StoreError> for TxErr {
    fn from(e: StoreError) -> Self {
        TxErr::Store(e)
    }
}

/// The (first) host a URL names, as given.
fn host_of(url: &str) -> String {
    url.parse::<postgres::Config>()
        .ok()
        .and_then(|c| {
            c.get_hosts().first().map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
        })
        .unwrap_or_else(|| "localhost".into())
}

/// `user@host:port/db` of a URL, never the password.
pub fn describe_url(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let host = host_of(url);
            let port = c.get_ports().first().copied().unwrap_or(5432);
            let user = c.get_user().unwrap_or("(default user)");
            let db = c.get_dbname().unwrap_or(user);
            format!("postgres://{user}@{host}:{port}/{db}")
        }
        Err(_) => "the PostgreSQL URL given".into(),
    }
}

impl PgStore {
    /// Connects, creates or upgrades schema `workq` (under an advisory lock, so hosts starting
    /// at once migrate once), and returns the store.
    pub fn open(url: &str, opts: PgOptions) -> Result<PgStore> {
        let store = PgStore {
            url: url.to_string(),
            display: describe_url(url),
            conn: RefCell::new(None),
            opts,
            rng: crate::shared::Leases::new(),
            seen_change: Cell::new(None),
            stmts: Default::default(),
            events_written: Cell::new(false),
        };
        let mut client = store.connect()?;
        // Most opens find the schema current: one simple query instead of the locked migration.
        let current = client
            .simple_query("SELECT coalesce(max(version), 0)::text FROM workq.meta")
            .ok()
            .and_then(|msgs| {
                msgs.into_iter().find_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => {
                        r.get(0).and_then(|v| v.parse::<i64>().ok())
                    }
                    _ => None,
                })
            });
        if current != Some(schema::latest_version()) {
            store.migrate(&mut client)?;
        }
        *store.conn.borrow_mut() = Some(client);
        Ok(store)
    }

    /// `user@host:port/db` of this store (no password).
    pub fn location(&self) -> &str {
        &self.display
    }

    /// The URL this store connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect(&self) -> Result<Client> {
        let mut cfg: postgres::Config =
            self.url
                .parse()
                .map_err(|e: postgres::Error| StoreError::Unavailable {
                    path: self.display.clone(),
                    reason: format!(
                        "not a valid PostgreSQL URL ({e}); use postgres://USER@HOST:PORT/DATABASE"
                    ),
                })?;
        cfg.connect_timeout(self.opts.connect_timeout);
        bound_io(&mut cfg, self.opts.io_timeout);
        cfg.application_name("workq");
        // Session settings go with the connect, saving round trips: the search path, and the
        // server's side of `io_timeout`, so that a client cut off mid-transaction does not
        // keep its row locks (and a rescue waiting on them) until the server's TCP gives up,
        // which takes hours with its default keepalives (tcp_user_timeout: PostgreSQL 12+).
        let io_ms = self.opts.io_timeout.as_millis().max(1);
        cfg.options(&format!(
            "-c search_path=workq -c idle_in_transaction_session_timeout={} -c tcp_user_timeout={io_ms} -c tcp_keepalives_idle={} -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3",
            (io_ms * 2).max(1000),
            self.opts.io_timeout.as_secs().max(1)
        ));
        cfg.connect(NoTls).map_err(|e| {
            if e.as_db_error()
                .is_some_and(|d| d.message().contains("tcp_user_timeout"))
            {
                StoreError::Unavailable {
                    path: self.display.clone(),
                    reason: "the server does not know tcp_user_timeout: it is older than \
                             PostgreSQL 12, and workq needs 12 or newer; upgrade the server"
                        .into(),
                }
            } else {
                self.err(e)
            }
        })
    }

    fn migrate(&self, c: &mut Client) -> Result<()> {
        let mut run = || -> std::result::Result<(), TxErr> {
            let mut tx = c.transaction()?;
            // One migrator at a time across every host.
            tx.execute("SELECT pg_advisory_xact_lock(7426823517)", &[])?;
            tx.batch_execute("CREATE SCHEMA IF NOT EXISTS workq; SET LOCAL search_path TO workq")?;
            let exists: bool = tx
                .query_one("SELECT to_regclass('workq.meta') IS NOT NULL", &[])?
                .col("meta", 0)?;
            let mut version = 0i64;
            if exists {
                for row in tx.query("SELECT version, checksum FROM meta ORDER BY version", &[])? {
                    let v: i64 = row.col("meta", 0)?;
                    let sum: i64 = row.col("meta", 1)?;
                    version = version.max(v);
                    if let Some(sql) = schema::MIGRATIONS.get((v - 1) as usize) {
                        let expected = crate::sqlite::schema_checksum(sql);
                        if sum as u64 != expected {
                            return Err(TxErr::Store(StoreError::MigrationMismatch {
                                path: self.display.clone(),
                                version: v,
                                found: sum as u64,
                                expected,
                            }));
                        }
                    }
                }
            }
            let latest = schema::latest_version();
            if version > latest {
                return Err(TxErr::Store(StoreError::NewerSchema {
                    path: self.display.clone(),
                    found: version,
                    supported: latest,
                }));
            }
            let now = self.opts.clock.now().0;
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO meta (version, checksum, applied_at) VALUES ($1, $2, $3)",
                    &[
                        &(i as i64 + 1),
                        &(crate::sqlite::schema_checksum(sql) as i64),
                        &now,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        };
        match run() {
            Ok(()) => Ok(()),
            Err(TxErr::Pg(e)) => Err(self.err(e)),
            Err(TxErr::Store(e)) => Err(e),
        }
    }

    /// Runs a read with a live connection, reconnecting and trying once more if the connection
    /// was lost.
    fn with<T>(&self, f: impl FnMut(&mut Client) -> std::result::Result<T, TxErr>) -> Result<T> {
        self.run(true, f)
    }

    /// Runs `f` with a live connection; after a lost connection it reconnects and, only when
    /// `retry`, tries again. Writes are never retried: a commit whose answer was lost may have
    /// happened, and doing it twice could duplicate a job.
    fn run<T>(
        &self,
        retry: bool,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, TxErr>,
    ) -> Result<T> {
        let mut slot = self.conn.borrow_mut();
        for round in 0..2 {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                // Statements belong to the connection that prepared them.
                self.stmts.borrow_mut().clear();
                *slot = Some(self.connect()?);
            }
            let Some(client) = slot.as_mut() else {
                continue;
            };
            match f(client) {
                Ok(v) => return Ok(v),
                Err(TxErr::Store(e)) => return Err(e),
                Err(TxErr::Pg(e)) => {
                    let lost = e.is_closed() || client.is_closed() || is_connection_error(&e);
                    if lost {
                        *slot = None;
                        if round == 0 && retry {
                            // A server restart or a terminated session: one fresh try.
                            continue;
                        }
                    }
                    return Err(self.err(e));
                }
            }
        }
        Err(StoreError::Unavailable {
            path: self.display.clone(),
            reason: "the connection keeps failing".into(),
        })
    }

    /// Runs `f` in one transaction, committing on `Ok`; bumps the change counter, and with
    /// `notify` (or when `f` flagged [`PgStore::events_written`]) wakes listeners at commit.
    /// Every write that appends to the event log must notify, so `workq serve` hears of each
    /// event when it commits.
    fn write<T>(
        &self,
        notify: bool,
        mut f: impl FnMut(&mut Transaction<'_>) -> std::result::Result<T, TxErr>,
    ) -> Result<T> {
        self.run(false, |c| {
            self.events_written.set(false);
            let mut tx = c.transaction()?;
            let v = f(&mut tx)?;
            let events = self.events_written.replace(false);
            if notify || events {
                let channel = if notify { CHANNEL } else { EVENTS_CHANNEL };
                stmt::qy(
                    &self.stmts,
                    &mut tx,
                    "SELECT nextval('changes'), pg_notify($1, '')",
                    &[&channel],
                )?;
            } else {
                stmt::qy(&self.stmts, &mut tx, "SELECT nextval('changes')", &[])?;
            }
            tx.commit()?;
            Ok(v)
        })
    }

    fn change_counter(&self) -> Result<i64> {
        self.with(|c| {
            let row = stmt::q1(
                &self.stmts,
                c,
                "SELECT last_value + (CASE WHEN is_called THEN 1 ELSE 0 END) FROM changes",
                &[],
            )?;
            Ok(row.col::<i64>("changes", 0)?)
        })
    }

    pub(crate) fn err(&self, e: postgres::Error) -> StoreError {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            return if *code == SqlState::UNIQUE_VIOLATION {
                StoreError::Conflict(db.message().to_string())
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                StoreError::Unavailable {
                    path: self.display.clone(),
                    reason: format!(
                        "{}; create it first (createdb) or fix the database name in the URL",
                        db.message()
                    ),
                }
            } else if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                StoreError::Unavailable {
                    path: self.display.clone(),
                    reason: format!("authentication failed ({}); check the user and password (PGPASSWORD or ~/.pgpass) and pg_hba.conf", db.message()),
                }
            } else if *code == SqlState::DISK_FULL {
                StoreError::DiskFull {
                    path: self.display.clone(),
                }
            } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
                StoreError::ReadOnly {
                    path: self.display.clone(),
                    reason: db.message().to_string(),
                }
            } else if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::TOO_MANY_CONNECTIONS
            {
                StoreError::Unavailable {
                    path: self.display.clone(),
                    reason: db.message().to_string(),
                }
            } else {
                StoreError::Backend {
                    path: self.display.clone(),
                    detail: db.message().to_string(),
                }
            };
        }
        let text = e.to_string();
        let source = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let reason = if source.contains("lookup address") {
            format!(
                "the host name {} cannot be resolved ({source}): check the host in the URL",
                host_of(&self.url)
            )
        } else if source.contains("refused") || text.contains("refused") {
            "connection refused: is the server running and listening there?".to_string()
        } else if source.contains("timed out") || text.contains("timeout") {
            "the connection timed out".to_string()
        } else if e.is_closed() {
            "the connection was closed".to_string()
        } else if source.is_empty() {
            text
        } else {
            format!("{text}: {source}")
        };
        StoreError::Unavailable {
            path: self.display.clone(),
            reason,
        }
    }

    fn now_ms(&self) -> i64 {
        self.opts.clock.now().0
    }

    /// A fresh random 63-bit fencing token (never zero).
    fn new_lease(&self) -> i64 {
        self.rng.next()
    }
}

fn is_connection_error(e: &postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let c = db.code();
        return *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW;
    }
    true
}

/// Makes a connection that stops answering fail after about `io`: unacknowledged data after
/// `io` (TCP user timeout), and keepalive probes from `io` of silence on.
fn bound_io(cfg: &mut postgres::Config, io: Duration) {
    // Keepalive times are whole seconds.
    let idle = io.max(Duration::from_secs(1));
    cfg.tcp_user_timeout(io)
        .keepalives(true)
        .keepalives_idle(idle)
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3);
}

/// A thread that LISTENs on its own connection and calls `on_change` for each notification,
/// until dropped. Reconnects after errors (with a pause), so a server restart is survived.
pub struct Listener {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl PgStore {
    /// Starts a listener thread that calls `on_change` whenever a write sends a notification
    /// that a worker may act on ([`CHANNEL`]).
    pub fn listen(&self, on_change: Box<dyn Fn() + Send>) -> Listener {
        self.listen_to(&[CHANNEL], on_change)
    }

    /// Like [`PgStore::listen`], for every write that appended to the event log too.
    pub fn listen_events(&self, on_change: Box<dyn Fn() + Send>) -> Listener {
        self.listen_to(&[CHANNEL, EVENTS_CHANNEL], on_change)
    }

    fn listen_to(
        &self,
        channels: &'static [&'static str],
        on_change: Box<dyn Fn() + Send>,
    ) -> Listener {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let url = self.url.clone();
        let timeout = self.opts.connect_timeout;
        let io_timeout = self.opts.io_timeout;
        let _ = std::thread::Builder::new()
            .name("workq-listen".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    let Ok(mut cfg) = url.parse::<postgres::Config>() else {
                        return;
                    };
                    cfg.connect_timeout(timeout);
                    // A listener only reads: without keepalives it would wait on a connection
                    // that a partition broke until the kernel gave up on it.
                    bound_io(&mut cfg, io_timeout);
                    let Ok(mut c) = cfg.connect(NoTls) else {
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    };
                    let listen: String =
                        channels.iter().map(|ch| format!("LISTEN {ch};")).collect();
                    if c.batch_execute(&listen).is_err() {
                        continue;
                    }
                    // Whatever happened while we were away: look once.
                    on_change();
                    loop {
                        if flag.load(Ordering::Acquire) {
                            return;
                        }
                        let got = {
                            use postgres::fallible_iterator::FallibleIterator;
                            let mut n = c.notifications();
                            let mut it = n.timeout_iter(Duration::from_millis(500));
                            match it.next() {
                                Ok(Some(_)) => {
                                    // Coalesce a burst into one wake-up.
                                    while let Ok(Some(_)) = it.next() {}
                                    Some(true)
                                }
                                Ok(None) => Some(false),
                                Err(_) => None,
                            }
                        };
                        match got {
                            Some(true) => on_change(),
                            Some(false) if !c.is_closed() => {}
                            _ => break,
                        }
                    }
                }
            });
        Listener { stop }
    }
}

impl crate::Store for PgStore {
    fn now(&self) -> workq_core::Timestamp {
        self.opts.clock.now()
    }

    fn submit(&self, jobs: &[workq_core::JobSpec]) -> Result<Vec<crate::Submitted>> {
        jobs::submit(self, jobs)
    }

    fn claim(
        &self,
        worker: workq_core::WorkerId,
        queues: &[String],
        limit: u32,
    ) -> Result<Vec<workq_core::ClaimedJob>> {
        claim::claim(self, worker, queues, limit)
    }

    fn claim_ids(
        &self,
        worker: workq_core::WorkerId,
        queues: &[String],
        ids: &[workq_core::JobId],
        limit: u32,
    ) -> Result<Vec<workq_core::ClaimedJob>> {
        claim::claim_ids(self, worker, queues, ids, limit)
    }
    fn record_spawn(&self, spawns: &[crate::SpawnRecord]) -> Result<()> {
        claim::record_spawn(self, spawns)
    }

    fn finish(
        &self,
        worker: workq_core::WorkerId,
        results: &[crate::FinishRequest],
    ) -> Result<Vec<crate::FinishOutcome>> {
        claim::finish(self, worker, results)
    }

    fn step(
        &self,
        worker: workq_core::WorkerId,
        spawns: &[crate::SpawnRecord],
        results: &[crate::FinishRequest],
        queues: &[String],
        limit: u32,
    ) -> Result<(Vec<crate::FinishOutcome>, Vec<workq_core::ClaimedJob>)> {
        claim::step(self, worker, spawns, results, queues, limit)
    }

    fn get(&self, id: workq_core::JobId) -> Result<Option<workq_core::Job>> {
        jobs::get(self, id)
    }

    fn attempts(&self, id: workq_core::JobId) -> Result<Vec<workq_core::Attempt>> {
        jobs::attempts(self, id)
    }

    fn list(&self, filter: &crate::ListFilter) -> Result<Vec<workq_core::Job>> {
        jobs::list(self, filter)
    }

    fn count_unfinished(&self, queue: Option<&str>) -> Result<u64> {
        jobs::count_unfinished(self, queue)
    }

    fn cancel(&self, ids: &[workq_core::JobId]) -> Result<Vec<crate::CancelOutcome>> {
        jobs::cancel(self, ids)
    }

    fn retry(&self, ids: &[workq_core::JobId]) -> Result<Vec<crate::RetryOutcome>> {
        jobs::retry(self, ids)
    }

    fn failed_ids(&self, queue: Option<&str>) -> Result<Vec<workq_core::JobId>> {
        jobs::failed_ids(self, queue)
    }

    fn cancel_requests(
        &self,
        worker: workq_core::WorkerId,
    ) -> Result<Vec<(workq_core::JobId, i64)>> {
        claim::cancel_requests(self, worker)
    }

    fn next_run_at(&self, queues: &[String]) -> Result<Option<workq_core::Timestamp>> {
        claim::next_run_at(self, queues)
    }

    fn changed(&self) -> Result<bool> {
        claim::changed(self)
    }

    fn register_worker(&self, reg: &crate::WorkerRegistration) -> Result<workq_core::WorkerId> {
        workers::register(self, reg)
    }

    fn heartbeat(
        &self,
        worker: workq_core::WorkerId,
        state: workq_core::WorkerState,
    ) -> Result<crate::Heartbeat> {
        workers::heartbeat(self, worker, state)
    }

    fn worker_stopped(&self, worker: workq_core::WorkerId, reason: &str) -> Result<()> {
        workers::stopped(self, worker, reason)
    }

    fn workers(&self, include_ended: bool) -> Result<Vec<workq_core::WorkerRecord>> {
        workers::list(self, include_ended)
    }

    fn running_attempts(&self, worker: workq_core::WorkerId) -> Result<Vec<workq_core::Attempt>> {
        workers::running_attempts(self, worker)
    }

    fn rescue_worker(
        &self,
        worker: workq_core::WorkerId,
        reason: &str,
        how: crate::RescueKind,
    ) -> Result<Vec<crate::Rescued>> {
        workers::rescue(self, worker, reason, how)
    }

    fn mark_crash_looping(&self, worker: workq_core::WorkerId, reason: &str) -> Result<()> {
        workers::mark_crash_looping(self, worker, reason)
    }

    fn prune_workers(&self, before: workq_core::Timestamp) -> Result<u64> {
        workers::prune(self, before)
    }

    fn set_worker_paused(&self, host: &str, name: &str, paused: bool) -> Result<()> {
        workers::set_paused(self, host, name, paused)
    }

    fn worker_paused(&self, host: &str, name: &str) -> Result<bool> {
        workers::paused(self, host, name)
    }

    fn running_jobs(&self) -> Result<Vec<crate::RunningJob>> {
        workers::running_jobs(self)
    }

    fn worker_outcomes(
        &self,
        worker: workq_core::WorkerId,
        since: workq_core::Timestamp,
    ) -> Result<crate::OutcomeCounts> {
        workers::outcomes(self, worker, since)
    }

    fn store_id(&self) -> Result<String> {
        workers::store_id(self)
    }

    fn jobs_with_unique_keys(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, workq_core::JobId, workq_core::JobState)>> {
        jobs::with_unique_keys(self, keys)
    }

    fn purge(
        &self,
        before: workq_core::Timestamp,
        states: &[workq_core::JobState],
        limit: u32,
    ) -> Result<crate::Purged> {
        jobs::purge(self, before, states, limit)
    }

    fn diagnose(&self) -> Result<crate::Diagnosis> {
        workers::diagnose(self)
    }

    fn subscribe(&self, on_change: Box<dyn Fn() + Send>) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(self.listen(on_change)))
    }

    fn subscribe_events(
        &self,
        on_change: Box<dyn Fn() + Send>,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(self.listen_events(on_change)))
    }

    fn shared_across_hosts(&self) -> bool {
        true
    }

    fn queue_stats(&self) -> Result<Vec<crate::QueueStats>> {
        jobs::queue_stats(self)
    }

    fn events_after(&self, after: i64, limit: u32) -> Result<Vec<crate::StoredEvent>> {
        metrics::events_after(self, after, limit)
    }

    fn last_event_id(&self) -> Result<i64> {
        metrics::last_event_id(self)
    }

    fn commit_horizon(&self) -> Result<Option<(i64, i64)>> {
        metrics::commit_horizon(self).map(Some)
    }

    fn record_event(
        &self,
        kind: &str,
        job: Option<workq_core::JobId>,
        worker: Option<workq_core::WorkerId>,
        detail: &str,
    ) -> Result<i64> {
        metrics::record_event(self, kind, job, worker, detail)
    }

    fn queue_metrics(&self) -> Result<Vec<crate::QueueMetrics>> {
        metrics::queue_metrics(self)
    }

    fn throughput(
        &self,
        since: workq_core::Timestamp,
        bucket: Duration,
    ) -> Result<Vec<crate::ThroughputPoint>> {
        metrics::throughput(self, since, bucket)
    }
}
