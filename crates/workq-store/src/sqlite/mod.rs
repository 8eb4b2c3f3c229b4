//! The embedded SQLite backend: one file, WAL on local disks, a fair write lock.

mod claim;
mod jobs;
mod lock;
mod metrics;
mod rows;
pub(crate) mod schema;
mod transitions;
mod workers;
pub use lock::lock_holder;

/// The checksum recorded for a migration's text (shared with the PostgreSQL store).
pub(crate) fn schema_checksum(sql: &str) -> u64 {
    schema::checksum(sql)
}

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::clock::{Clock, SystemClock};
use crate::{Result, StoreError};

/// How SQLite journals writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    /// WAL on local disks, DELETE on network or virtual filesystems.
    Auto,
    /// Write-ahead log (fast; unsafe on network filesystems).
    Wal,
    /// Rollback journal (safe anywhere).
    Delete,
}

/// How to open a SQLite store.
#[derive(Clone)]
pub struct SqliteOptions {
    /// Journal mode.
    pub journal_mode: JournalMode,
    /// How long a write waits for a lock before failing with [`StoreError::Locked`].
    pub lock_timeout: Duration,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Host name recorded on attempts.
    pub host: String,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            journal_mode: JournalMode::Auto,
            lock_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
            host: String::from("localhost"),
        }
    }
}

/// Durability of one write transaction (ARCHITECTURE.md §4.6).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync on commit: submit, cancel, finish, rescue.
    Full,
    /// No fsync in WAL mode: claim, spawn bookkeeping, heartbeat.
    Normal,
}

/// An error inside a write transaction: either from SQLite or a refusal that rolls it back.
pub(crate) enum TxErr {
    /// The engine failed.
    Sql(rusqlite::Error),
    /// The request was refused; nothing is committed.
    Store(StoreError),
}

impl From<rusqlite::Error> for TxErr {
    fn from(e: rusqlite::Error) -> Self {
        TxErr::Sql(e)
    }
}

impl From<StoreError> for TxErr {
    fn from(e: StoreError) -> Self {
        TxErr::Store(e)
    }
}

/// A store in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    lock: lock::WriteLock,
    opts: SqliteOptions,
    journal: &'static str,
    sync_now: std::cell::Cell<Option<Durability>>,
    data_version: std::cell::Cell<i64>,
    rng: crate::shared::Leases,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore> {
        let display = path.display().to_string();
        let lock_path = {
            let mut p = path.as_os_str().to_owned();
            p.push(".lock");
            PathBuf::from(p)
        };
        let lock = lock::WriteLock::open(&lock_path).map_err(|e| io_open_error(&lock_path, &e))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map_err(&display, e))?;
        conn.busy_timeout(opts.lock_timeout)
            .map_err(|e| map_err(&display, e))?;
        // Keep each cached statement's plan. Otherwise SQLite re-prepares a statement whenever a
        // new value is bound to a parameter that could change its plan (the claim's LIMIT, which
        // alternates with the free slots, and its run_at bound): a third of the claim's cost.
        // Speed only: an SQLite without the option still works.
        let _ = conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        );
        // After a checkpoint, cut the WAL back to 16 MiB: it otherwise keeps the size of its
        // largest burst for good.
        conn.query_row("PRAGMA journal_size_limit = 16777216", [], |_| Ok(()))
            .map_err(|e| map_err(&display, e))?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            lock,
            opts,
            journal: "wal",
            sync_now: std::cell::Cell::new(None),
            data_version: std::cell::Cell::new(0),
            rng: crate::shared::Leases::new(),
        };
        store.prepare()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal mode in force (`wal` or `delete`).
    pub fn journal_mode(&self) -> &'static str {
        self.journal
    }

    /// Runs `PRAGMA quick_check` and returns its verdict (`ok` when healthy).
    pub fn quick_check(&self) -> Result<String> {
        self.conn
            .query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))
    }

    fn prepare(&mut self) -> Result<()> {
        let display = self.path.display().to_string();
        // The first real read tells a non-database file apart.
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| map_err(&display, e))?;
        let latest = schema::latest_version();
        if version > latest {
            return Err(StoreError::NewerSchema {
                path: display,
                found: version,
                supported: latest,
            });
        }
        let wanted = match self.opts.journal_mode {
            JournalMode::Wal => "wal",
            JournalMode::Delete => "delete",
            JournalMode::Auto => {
                if on_network_fs(&self.path) {
                    "delete"
                } else {
                    "wal"
                }
            }
        };
        let current: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| map_err(&display, e))?;
        if !current.eq_ignore_ascii_case(wanted) {
            let _guard = self.write_lock()?;
            let set: String = self
                .conn
                .query_row(&format!("PRAGMA journal_mode={wanted}"), [], |r| r.get(0))
                .map_err(|e| map_err(&display, e))?;
            if !set.eq_ignore_ascii_case(wanted) {
                return Err(StoreError::Backend {
                    path: display,
                    detail: format!("could not switch the journal to {wanted} (it is {set})"),
                });
            }
        }
        self.journal = if wanted == "wal" { "wal" } else { "delete" };
        if version < latest {
            self.migrate(version)?;
        }
        let dv: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        self.data_version.set(dv);
        Ok(())
    }

    fn migrate(&self, _seen: i64) -> Result<()> {
        let display = self.path.display().to_string();
        self.write(Durability::Full, |tx| {
            // Re-read under the lock: another process may have migrated meanwhile.
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version > 0 {
                let mut stmt = tx.prepare("SELECT version, checksum FROM meta ORDER BY version")?;
                let applied = stmt
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for (v, sum) in applied {
                    if let Some(sql) = schema::MIGRATIONS.get((v - 1) as usize) {
                        let expected = schema::checksum(sql);
                        if sum as u64 != expected {
                            return Err(TxErr::Store(StoreError::MigrationMismatch {
                                path: display.clone(),
                                version: v,
                                found: sum as u64,
                                expected,
                            }));
                        }
                    }
                }
            }
            let now = self.opts.clock.now().0;
            for (i, sql) in schema::MIGRATIONS
                .iter()
                .enumerate()
                .skip(version.max(0) as usize)
            {
                let v = i as i64 + 1;
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO meta (version, checksum, applied_at) VALUES (?1, ?2, ?3)",
                    rusqlite::params![v, schema::checksum(sql) as i64, now],
                )?;
                tx.pragma_update(None, "user_version", v)?;
            }
            Ok(())
        })
    }

    fn write_lock(&self) -> Result<lock::WriteGuard<'_>> {
        self.lock
            .acquire(self.opts.lock_timeout)
            .map_err(|waited| StoreError::Locked {
                path: self.lock.path().display().to_string(),
                holder: lock_holder(self.lock.path()),
                waited_ms: waited.as_millis() as u64,
            })
    }

    /// Runs `f` in one IMMEDIATE write transaction under the write lock, committing on `Ok`.
    fn write<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&Transaction<'_>) -> std::result::Result<T, TxErr>,
    ) -> Result<T> {
        let _guard = self.write_lock()?;
        if self.sync_now.get() != Some(durability) {
            let level = match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            };
            // Not a cached statement: SQLite compiles a PRAGMA again at every run anyway.
            self.conn
                .execute_batch(&format!("PRAGMA synchronous={level}"))
                .map_err(|e| self.err(e))?;
            self.sync_now.set(Some(durability));
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let value = match f(&tx) {
            Ok(v) => v,
            Err(TxErr::Sql(e)) => return Err(self.err(e)),
            Err(TxErr::Store(e)) => return Err(e),
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(value)
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        let display = self.path.display().to_string();
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) {
                return StoreError::Locked {
                    holder: lock_holder(&self.path),
                    path: display,
                    waited_ms: self.opts.lock_timeout.as_millis() as u64,
                };
            }
        }
        map_err(&display, e)
    }

    fn now(&self) -> i64 {
        self.opts.clock.now().0
    }

    /// A fresh random 63-bit fencing token (never zero).
    fn new_lease(&self) -> i64 {
        self.rng.next()
    }
}

fn io_open_error(path: &Path, e: &std::io::Error) -> StoreError {
    let display = path.display().to_string();
    match e.raw_os_error() {
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => StoreError::ReadOnly {
            path: display,
            reason: e.to_string(),
        },
        Some(libc::ENOSPC) => StoreError::DiskFull { path: display },
        _ => StoreError::Unavailable {
            path: display,
            reason: e.to_string(),
        },
    }
}

/// True when the filesystem holding `path` has less than 256 KiB left.
fn disk_nearly_full(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return false;
        }
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < 256 * 1024
    }
}

fn map_err(path: &str, e: rusqlite::Error) -> StoreError {
    let path = path.to_string();
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        let detail = msg.clone().unwrap_or_else(|| f.to_string());
        return match f.code {
            ErrorCode::NotADatabase => StoreError::NotADatabase { path },
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt { path, detail },
            ErrorCode::DiskFull => StoreError::DiskFull { path },
            // A write that fails for want of space often surfaces as a plain I/O error (the
            // WAL or journal could not grow): say what it is when the disk is indeed full.
            ErrorCode::SystemIoFailure if disk_nearly_full(Path::new(&path)) => {
                StoreError::DiskFull { path }
            }
            ErrorCode::ReadOnly => StoreError::ReadOnly {
                path,
                reason: detail,
            },
            ErrorCode::CannotOpen => StoreError::Unavailable {
                path,
                reason: format!("{detail}; check that the directory exists and is writable"),
            },
            ErrorCode::PermissionDenied => StoreError::ReadOnly {
                path,
                reason: detail,
            },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Locked {
                holder: lock_holder(Path::new(&path)),
                path,
                waited_ms: 0,
            },
            _ => StoreError::Backend { path, detail },
        };
    }
    StoreError::Backend {
        path,
        detail: e.to_string(),
    }
}

/// True on filesystems where WAL's shared memory is unsafe (NFS, SMB/CIFS, 9p, FUSE).
#[cfg(target_os = "linux")]
pub fn on_network_fs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const NETWORK: &[i64] = &[
        0x6969,      // NFS
        0x517B,      // SMB
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x0102_1997, // 9p (WSL, VMs)
        0x6573_5546, // FUSE (sshfs, Docker Desktop mounts)
        0x6A65_6A63, // virtiofs
        0x0BD0_0BD0, // Lustre
    ];
    NETWORK.contains(&(st.f_type as i64))
}

/// True on filesystems where WAL's shared memory is unsafe; unknown platforms say no.
#[cfg(not(target_os = "linux"))]
pub fn on_network_fs(_path: &Path) -> bool {
    false
}

impl crate::Store for SqliteStore {
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
    fn diagnose(&self) -> Result<crate::Diagnosis> {
        workers::diagnose(self)
    }
    fn purge(
        &self,
        before: workq_core::Timestamp,
        states: &[workq_core::JobState],
        limit: u32,
    ) -> Result<crate::Purged> {
        jobs::purge(self, before, states, limit)
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
