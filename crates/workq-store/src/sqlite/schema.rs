//! Embedded, versioned, checksummed migrations. Append only: never edit a released migration.

/// Migrations in order; migration `i` brings the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    version    INTEGER PRIMARY KEY,
    checksum   INTEGER NOT NULL,
    applied_at INTEGER NOT NULL
);
CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    concurrency INTEGER
);
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    deps_pending     INTEGER NOT NULL DEFAULT 0,
    argv             TEXT    NOT NULL,
    env              TEXT,
    cwd              TEXT,
    labels           TEXT,
    retries          INTEGER NOT NULL DEFAULT 0,
    backoff_ms       INTEGER NOT NULL,
    timeout_ms       INTEGER,
    kill_grace_ms    INTEGER NOT NULL,
    unique_key       TEXT,
    idempotency_key  TEXT UNIQUE,
    attempt          INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    rescues          INTEGER NOT NULL DEFAULT 0,
    max_rescues      INTEGER NOT NULL DEFAULT 3,
    lease            INTEGER,
    worker_id        INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    exit_code        INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE state = 'queued' AND deps_pending = 0;
CREATE INDEX jobs_running ON jobs (worker_id) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');
CREATE TABLE deps (
    after_id INTEGER NOT NULL,
    job_id   INTEGER NOT NULL,
    PRIMARY KEY (after_id, job_id)
) WITHOUT ROWID;
CREATE TABLE attempts (
    job_id         INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    worker_id      INTEGER,
    host           TEXT,
    lease          INTEGER NOT NULL,
    pid            INTEGER,
    pgid           INTEGER,
    pid_start_time INTEGER,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    outcome        TEXT,
    exit_code      INTEGER,
    signal         INTEGER,
    error          TEXT,
    log_path       TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
CREATE TABLE workers (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    host           TEXT    NOT NULL,
    boot_id        TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    pid_start_time INTEGER NOT NULL,
    queues         TEXT    NOT NULL,
    slots          INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    heartbeat_at   INTEGER NOT NULL,
    stopped_at     INTEGER,
    stop_reason    TEXT,
    jobs_done      INTEGER NOT NULL DEFAULT 0,
    jobs_failed    INTEGER NOT NULL DEFAULT 0,
    version        TEXT    NOT NULL,
    mode           TEXT    NOT NULL DEFAULT 'foreground'
);
CREATE INDEX workers_live ON workers (state) WHERE state NOT IN ('stopped', 'dead');
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    job_id    INTEGER,
    worker_id INTEGER,
    detail    TEXT
);
"#,
    r#"
CREATE TABLE store_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO store_info (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
CREATE TABLE worker_controls (
    host       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (host, name)
) WITHOUT ROWID;
ALTER TABLE workers ADD COLUMN settings TEXT;
CREATE INDEX workers_ended ON workers (stopped_at) WHERE stopped_at IS NOT NULL;
CREATE INDEX attempts_by_worker ON attempts (worker_id, ended_at);
"#,
    r#"
CREATE INDEX jobs_by_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;
ALTER TABLE jobs ADD COLUMN container TEXT;
-- Per-queue counts kept by triggers, so `status` costs the same with a million rows.
CREATE TABLE queue_counts (
    queue   TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    n       INTEGER NOT NULL DEFAULT 0,
    dur_sum INTEGER NOT NULL DEFAULT 0,
    dur_n   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO queue_counts (queue, state, n, dur_sum, dur_n)
    SELECT queue, state, count(*),
           coalesce(sum(CASE WHEN state = 'succeeded' AND started_at IS NOT NULL
                             THEN finished_at - started_at END), 0),
           count(CASE WHEN state = 'succeeded' AND started_at IS NOT NULL THEN 1 END)
    FROM jobs GROUP BY queue, state;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE queue_counts SET n = n - 1,
        dur_sum = dur_sum - (CASE WHEN OLD.state = 'succeeded' AND OLD.started_at IS NOT NULL
                                  THEN OLD.finished_at - OLD.started_at ELSE 0 END),
        dur_n = dur_n - (CASE WHEN OLD.state = 'succeeded' AND OLD.started_at IS NOT NULL
                              THEN 1 ELSE 0 END)
    WHERE queue = OLD.queue AND state = OLD.state;
END;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
    UPDATE queue_counts SET n = n - 1,
        dur_sum = dur_sum - (CASE WHEN OLD.state = 'succeeded' AND OLD.started_at IS NOT NULL
                                  THEN OLD.finished_at - OLD.started_at ELSE 0 END),
        dur_n = dur_n - (CASE WHEN OLD.state = 'succeeded' AND OLD.started_at IS NOT NULL
                              THEN 1 ELSE 0 END)
    WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO queue_counts (queue, state, n, dur_sum, dur_n)
        VALUES (NEW.queue, NEW.state, 1,
                CASE WHEN NEW.state = 'succeeded' AND NEW.started_at IS NOT NULL
                     THEN NEW.finished_at - NEW.started_at ELSE 0 END,
                CASE WHEN NEW.state = 'succeeded' AND NEW.started_at IS NOT NULL THEN 1 ELSE 0 END)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1,
            dur_sum = dur_sum + excluded.dur_sum, dur_n = dur_n + excluded.dur_n;
END;
-- Queued jobs due later than they were made (delayed, retried, rescued): few, so counting the
-- scheduled ones stays cheap.
CREATE INDEX jobs_delayed ON jobs (queue, run_at) WHERE state = 'queued' AND run_at > created_at;
"#,
];

/// The schema version this build creates and understands.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// FNV-1a over the migration text: stable across builds and platforms.
pub(crate) fn checksum(sql: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & (i64::MAX as u64)
}
