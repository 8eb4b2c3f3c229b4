//! Store errors: each names the file or object involved and says what to do.

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A job, worker or other object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with stored state (duplicate key, wrong state).
    #[error("{0}")]
    Conflict(String),
    /// A stored row holds a NULL or a value of another type where the store needs a value: the
    /// row was written by hand or by another program.
    #[error("a row of table {table} (id {id}) has an unreadable {column}: {detail}; repair or delete that row")]
    BadRow {
        /// The table.
        table: &'static str,
        /// The row's id, or "?" when the row has none that was read.
        id: String,
        /// The column.
        column: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The store cannot be opened or reached.
    #[error("cannot open the store at {path}: {reason}")]
    Unavailable {
        /// The file or URL.
        path: String,
        /// What failed, with the fix.
        reason: String,
    },
    /// The file exists but is not a SQLite database.
    #[error("{path} is not a workq database (not a SQLite file)")]
    NotADatabase {
        /// The file.
        path: String,
    },
    /// The database was written by a newer workq.
    #[error("{path} has schema version {found}, but this workq understands up to {supported}: upgrade workq (nothing was changed)")]
    NewerSchema {
        /// The file.
        path: String,
        /// Version found.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A migration already applied differs from the one this build carries.
    #[error("{path}: migration {version} was applied with different contents (checksum {found:#x}, expected {expected:#x}); the database was created by an incompatible build")]
    MigrationMismatch {
        /// The file.
        path: String,
        /// The migration version.
        version: i64,
        /// Stored checksum.
        found: u64,
        /// Embedded checksum.
        expected: u64,
    },
    /// Another program holds a lock on the database for longer than the timeout.
    #[error("{path} is locked{holder} and stayed locked for {waited_ms} ms; wait for that program to finish or stop it, then try again", holder = match .holder { Some(pid) => format!(" by process {pid}"), None => String::new() })]
    Locked {
        /// The file.
        path: String,
        /// The pid holding the lock, when it can be found.
        holder: Option<i32>,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The database or its directory cannot be written.
    #[error("{path} is read-only ({reason})")]
    ReadOnly {
        /// The file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The filesystem is full.
    #[error(
        "the disk holding {path} is full; free some space and try again (nothing stored was lost)"
    )]
    DiskFull {
        /// The file.
        path: String,
    },
    /// The database is damaged.
    #[error("{path} is damaged ({detail}); restore it from a backup or move it aside")]
    Corrupt {
        /// The file.
        path: String,
        /// What the engine reported.
        detail: String,
    },
    /// Any other backend failure, with context.
    #[error("store error on {path}: {detail}")]
    Backend {
        /// The file or URL.
        path: String,
        /// What happened.
        detail: String,
    },
}

impl StoreError {
    /// True for errors that mean the store is unusable right now (exit code 5).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, StoreError::NotFound(_) | StoreError::Conflict(_))
    }
}

impl From<workq_core::lifecycle::DependencyError> for StoreError {
    fn from(e: workq_core::lifecycle::DependencyError) -> Self {
        use workq_core::lifecycle::DependencyError;
        match e {
            DependencyError::Missing(dep) => {
                StoreError::NotFound(format!("job {dep} (a dependency)"))
            }
            DependencyError::Ended(..) => StoreError::Conflict(e.to_string()),
        }
    }
}
