//! Embedded, versioned, checksummed migrations. Append only: never edit a released migration.

/// `CASE` over a duration `d` in ms giving its histogram bucket: the index of the first bound of
/// [`crate::HISTOGRAM_BOUNDS_SECS`] that `d` does not exceed, 18 (`+Inf`) past the last. Part of
/// released migrations (both backends): never edit it; a new bucket layout needs a new macro.
macro_rules! bucket_of_d {
    () => {
        "CASE WHEN d <= 5 THEN 0 WHEN d <= 10 THEN 1 WHEN d <= 25 THEN 2 WHEN d <= 50 THEN 3 \
         WHEN d <= 100 THEN 4 WHEN d <= 250 THEN 5 WHEN d <= 500 THEN 6 WHEN d <= 1000 THEN 7 \
         WHEN d <= 2500 THEN 8 WHEN d <= 5000 THEN 9 WHEN d <= 10000 THEN 10 \
         WHEN d <= 30000 THEN 11 WHEN d <= 60000 THEN 12 WHEN d <= 300000 THEN 13 \
         WHEN d <= 900000 THEN 14 WHEN d <= 3600000 THEN 15 WHEN d <= 14400000 THEN 16 \
         WHEN d <= 86400000 THEN 17 ELSE 18 END"
    };
}
pub(crate) use bucket_of_d;

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
    concat!(
        r#"
-- The job's (or worker's) state after the change an event records, for `workq serve`.
ALTER TABLE events ADD COLUMN state TEXT;
-- Tallies for /metrics, kept by triggers on attempts, so a scrape reads O(queues) rows. Purging
-- jobs or their attempts never lowers them.
CREATE TABLE attempt_totals (
    queue   TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    n       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, outcome)
) WITHOUT ROWID;
-- Per queue, kind ('duration': ended_at - started_at of each ended attempt; 'wait': claim time
-- minus run_at, at each claim) and bucket (index into HISTOGRAM_BOUNDS_SECS, 18 = +Inf): the
-- observations in that bucket alone and their sum in ms.
CREATE TABLE histograms (
    queue  TEXT    NOT NULL,
    kind   TEXT    NOT NULL,
    bucket INTEGER NOT NULL,
    n      INTEGER NOT NULL DEFAULT 0,
    sum_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, kind, bucket)
) WITHOUT ROWID;
CREATE TRIGGER attempts_tally_end AFTER UPDATE OF ended_at ON attempts
WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL BEGIN
    INSERT INTO attempt_totals (queue, outcome, n)
        SELECT queue, coalesce(NEW.outcome, 'unknown'), 1 FROM jobs WHERE id = NEW.job_id
        ON CONFLICT (queue, outcome) DO UPDATE SET n = n + 1;
    INSERT INTO histograms (queue, kind, bucket, n, sum_ms)
        SELECT queue, 'duration', "#,
        bucket_of_d!(),
        r#", 1, d
        FROM (SELECT queue, max(NEW.ended_at - NEW.started_at, 0) AS d FROM jobs
              WHERE id = NEW.job_id) WHERE true
        ON CONFLICT (queue, kind, bucket) DO UPDATE SET n = n + 1, sum_ms = sum_ms + excluded.sum_ms;
END;
CREATE TRIGGER attempts_tally_claim AFTER INSERT ON attempts BEGIN
    INSERT INTO histograms (queue, kind, bucket, n, sum_ms)
        SELECT queue, 'wait', "#,
        bucket_of_d!(),
        r#", 1, d
        FROM (SELECT queue, max(NEW.started_at - run_at, 0) AS d FROM jobs
              WHERE id = NEW.job_id) WHERE true
        ON CONFLICT (queue, kind, bucket) DO UPDATE SET n = n + 1, sum_ms = sum_ms + excluded.sum_ms;
END;
-- Backfill from the attempts on record. The wait of earlier attempts is lost (run_at moved on):
-- only each job's latest claim counts.
INSERT INTO attempt_totals (queue, outcome, n)
    SELECT j.queue, coalesce(a.outcome, 'unknown'), count(*)
    FROM attempts a JOIN jobs j ON j.id = a.job_id
    WHERE a.ended_at IS NOT NULL GROUP BY j.queue, coalesce(a.outcome, 'unknown');
INSERT INTO histograms (queue, kind, bucket, n, sum_ms)
    SELECT queue, 'duration', b, count(*), sum(d) FROM (
        SELECT queue, d, "#,
        bucket_of_d!(),
        r#" AS b FROM (
            SELECT j.queue, max(a.ended_at - a.started_at, 0) AS d
            FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.ended_at IS NOT NULL))
    GROUP BY queue, b;
INSERT INTO histograms (queue, kind, bucket, n, sum_ms)
    SELECT queue, 'wait', b, count(*), sum(d) FROM (
        SELECT queue, d, "#,
        bucket_of_d!(),
        r#" AS b FROM (
            SELECT j.queue, max(a.started_at - j.run_at, 0) AS d
            FROM attempts a JOIN jobs j ON j.id = a.job_id AND a.attempt = j.attempt
            WHERE j.state <> 'queued'))
    GROUP BY queue, b;
"#
    ),
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

#[cfg(test)]
mod tests {

    /// The bucket bounds [`bucket_of_d!`] tests against, in ms.
    const BUCKET_BOUNDS_MS: &[i64] = &[
        5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000,
        3600000, 14400000, 86400000,
    ];

    /// The SQL bucket bounds are the ones the metrics types promise.
    #[test]
    fn bucket_bounds_match_the_histogram_bounds() {
        let secs: Vec<i64> = crate::HISTOGRAM_BOUNDS_SECS
            .iter()
            .map(|b| (b * 1000.0).round() as i64)
            .collect();
        assert_eq!(secs, BUCKET_BOUNDS_MS);
        let case = bucket_of_d!();
        for (i, ms) in BUCKET_BOUNDS_MS.iter().enumerate() {
            assert!(
                case.contains(&format!("WHEN d <= {ms} THEN {i} ")),
                "{ms} -> {i}"
            );
        }
        assert!(case.contains(&format!("ELSE {} END", BUCKET_BOUNDS_MS.len())));
    }
}
