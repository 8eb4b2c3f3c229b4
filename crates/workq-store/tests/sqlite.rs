//! The SQLite backend: the store conformance suite, and claims from several processes at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use workq_core::{JobId, JobSpec, JobState, Outcome};
use workq_store::conformance::Guarded;
use workq_store::{
    FinishOutcome, FinishRequest, ListFilter, ManualClock, SqliteOptions, SqliteStore, Store,
    Submitted, WorkerRegistration,
};

/// Opens the store in `dir` on `clock`; the store keeps `dir` alive until it is dropped.
fn open_in(dir: &Arc<TempDir>, clock: ManualClock) -> Box<dyn Store> {
    let path = dir.path().join("workq.db");
    let opts = SqliteOptions {
        clock: Arc::new(clock),
        ..Default::default()
    };
    let store =
        SqliteStore::open(&path, opts).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Box::new(Guarded::new(store, Arc::clone(dir)))
}

fn temp_dir() -> Arc<TempDir> {
    Arc::new(TempDir::new().expect("create a temporary directory"))
}

fn fresh_store(clock: ManualClock) -> Box<dyn Store> {
    open_in(&temp_dir(), clock)
}

fn store_pair(clock: ManualClock) -> (Box<dyn Store>, Box<dyn Store>) {
    let dir = temp_dir();
    (open_in(&dir, clock.clone()), open_in(&dir, clock))
}

workq_store::store_conformance!(fresh_store, store_pair);

// ---------------------------------------------------------------------------------------------
// Several processes claiming from one file
// ---------------------------------------------------------------------------------------------

/// Set by [`processes_never_claim_a_job_twice`] in the environment of the processes it starts
/// (this test binary again, running that same test): the database to drain. Its presence turns
/// the test into one claiming process, [`child_claimer`].
const CHILD_DB: &str = "WORKQ_TEST_CLAIMER_DB";
/// Where a `child_claimer` process writes the ids it claimed, one per line.
const CHILD_OUT: &str = "WORKQ_TEST_CLAIMER_OUT";

const JOBS: usize = 2000;
const CHILDREN: usize = 4;

fn open_shared(path: &Path) -> SqliteStore {
    let opts = SqliteOptions {
        // Generous: four processes and the test harness may share two slow cores.
        lock_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    SqliteStore::open(path, opts).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The body of one claiming process: not a test (so it can never pass by doing nothing), but
/// what [`processes_never_claim_a_job_twice`] runs when this binary starts it as a child.
fn child_claimer(db: &std::ffi::OsStr) {
    let out = PathBuf::from(std::env::var_os(CHILD_OUT).expect("CHILD_OUT is set with CHILD_DB"));
    let store = open_shared(Path::new(db));
    let worker = store
        .register_worker(&WorkerRegistration {
            name: format!("claimer-{}", std::process::id()),
            host: "localhost".into(),
            boot_id: "test".into(),
            pid: std::process::id() as i32,
            pid_start_time: 0,
            queues: vec!["default".into()],
            slots: 4,
            version: "test".into(),
            settings: None,
        })
        .expect("register the worker");
    let queues = vec!["default".to_string()];
    let mut claimed: Vec<JobId> = Vec::new();
    for round in 0u32.. {
        let limit = round % 4 + 1;
        let jobs = store.claim(worker, &queues, limit).expect("claim");
        assert!(
            jobs.len() <= limit as usize,
            "claim returned more than {limit}"
        );
        if jobs.is_empty() {
            // Every job was submitted before the claimers started and none is requeued.
            break;
        }
        let results: Vec<FinishRequest> = jobs
            .iter()
            .map(|j| FinishRequest {
                job_id: j.id,
                lease: j.lease,
                outcome: Outcome::Succeeded,
                exit_code: Some(0),
                signal: None,
                error: None,
            })
            .collect();
        let done = store.finish(worker, &results).expect("finish");
        for (job, outcome) in jobs.iter().zip(&done) {
            assert_eq!(
                *outcome,
                FinishOutcome::Done(JobState::Succeeded),
                "finish of job {} (lease {})",
                job.id,
                job.lease
            );
        }
        claimed.extend(jobs.iter().map(|j| j.id));
    }
    store
        .worker_stopped(worker, "no jobs left")
        .expect("worker_stopped");
    let text: String = claimed.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&out, text).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}

#[test]
fn processes_never_claim_a_job_twice() {
    if let Some(db) = std::env::var_os(CHILD_DB) {
        // Started by this test as one of its claiming processes: claim, then report.
        child_claimer(&db);
        return;
    }
    let dir = TempDir::new().expect("create a temporary directory");
    let db = dir.path().join("workq.db");
    let store = open_shared(&db);
    let specs: Vec<JobSpec> = (0..JOBS)
        .map(|i| JobSpec::new("default", vec!["true".into(), i.to_string()]))
        .collect();
    let mut submitted: Vec<JobId> = store
        .submit(&specs)
        .expect("submit")
        .into_iter()
        .map(|r| match r {
            Submitted::Created(id) => id,
            other => panic!("expected Created, got {other:?}"),
        })
        .collect();
    submitted.sort_unstable();

    let exe = std::env::current_exe().expect("current_exe");
    let children: Vec<_> = (0..CHILDREN)
        .map(|n| {
            let out = dir.path().join(format!("claimed-{n}.txt"));
            let child = Command::new(&exe)
                .args([
                    "--exact",
                    "processes_never_claim_a_job_twice",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_DB, &db)
                .env(CHILD_OUT, &out)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
            (n, out, child)
        })
        .collect();

    let mut times_claimed: BTreeMap<JobId, usize> = BTreeMap::new();
    let mut per_child = Vec::new();
    for (n, out, child) in children {
        let output = child.wait_with_output().expect("wait for a claimer");
        assert!(
            output.status.success(),
            "claimer {n} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
            panic!(
                "claimer {n} left no list at {} ({e}); did it run as a claimer?\n--- stdout\n{}",
                out.display(),
                String::from_utf8_lossy(&output.stdout)
            )
        });
        let mut count = 0;
        for line in text.lines() {
            let id: JobId = line.parse().expect("a job id per line");
            *times_claimed.entry(id).or_default() += 1;
            count += 1;
        }
        per_child.push(count);
    }

    println!("claims per process: {per_child:?}");
    let twice: Vec<(&JobId, &usize)> = times_claimed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "jobs claimed more than once (id, times): {twice:?}"
    );
    let claimed: Vec<JobId> = times_claimed.keys().copied().collect();
    assert_eq!(
        claimed.len(),
        JOBS,
        "claimed {} of {JOBS} jobs (per claimer: {per_child:?})",
        claimed.len()
    );
    assert_eq!(
        claimed, submitted,
        "the claimed ids are not the submitted ones"
    );

    let jobs = store.list(&ListFilter::default()).expect("list");
    assert_eq!(jobs.len(), JOBS);
    for j in &jobs {
        assert_eq!(
            (j.state, j.attempt),
            (JobState::Succeeded, 1),
            "job {} should have succeeded on its only attempt",
            j.id
        );
    }
    assert_eq!(store.count_unfinished(None).expect("count_unfinished"), 0);
    let workers = store.workers(true).expect("workers");
    assert_eq!(workers.len(), CHILDREN);
    assert_eq!(
        workers.iter().map(|w| w.jobs_done).sum::<u64>(),
        JOBS as u64,
        "the workers' jobs_done must add up to every job"
    );
}

/// A row written by hand with a value of another type where the store needs one is an error
/// naming the table and the column; a claimed job whose row cannot be read fails alone, with
/// that reason, and the jobs behind it are still claimed.
#[test]
fn unreadable_rows_are_errors_naming_table_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workq.db");
    let s = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let spec = |n: &str| JobSpec::new("default", vec!["echo".into(), n.into()]);
    let ids: Vec<i64> = s
        .submit(&[spec("bad"), spec("good")])
        .unwrap()
        .iter()
        .map(|r| r.id())
        .collect();
    let w = s
        .register_worker(&WorkerRegistration {
            name: "w".into(),
            host: "host-1".into(),
            boot_id: "b".into(),
            pid: 1,
            pid_start_time: 1,
            queues: vec!["default".into()],
            slots: 2,
            version: "t".into(),
            settings: None,
        })
        .unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE jobs SET kill_grace_ms = 'soon' WHERE id = ?1",
        [ids[0]],
    )
    .unwrap();
    drop(c);

    let e = s.get(ids[0]).expect_err("kill_grace_ms holds text");
    assert!(e.to_string().contains("kill_grace_ms"), "{e}");
    let claimed = s
        .claim(w, &["default".into()], 2)
        .expect("the claim goes on");
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[1]]);
    let job = s.list(&ListFilter {
        ids: vec![ids[1]],
        ..Default::default()
    });
    assert!(job.is_ok());
    let c = rusqlite::Connection::open(&path).unwrap();
    let (state, error): (String, String) = c
        .query_row(
            "SELECT state, last_error FROM jobs WHERE id = ?1",
            [ids[0]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "failed");
    assert!(
        error.contains("table jobs") && error.contains("kill_grace_ms"),
        "{error}"
    );

    // A container spec that cannot be read is an error, never a job run on the host instead.
    let boxed = s.submit(&[spec("boxed")]).unwrap()[0].id();
    c.execute(
        "UPDATE jobs SET container = '{\"image\": 1}' WHERE id = ?1",
        [boxed],
    )
    .unwrap();
    let e = s.get(boxed).expect_err("the container spec is unreadable");
    assert!(e.to_string().contains("not a container spec"), "{e}");
    assert!(s.claim(w, &["default".into()], 2).unwrap().is_empty());
    let state: String = c
        .query_row("SELECT state FROM jobs WHERE id = ?1", [boxed], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(state, "failed", "claimed and failed, not run");
}

/// A paused queue gives nothing to `claim_ids`, as to `claim` (no command pauses a queue yet,
/// so the row is written by hand).
#[test]
fn claim_ids_skips_a_paused_queue() {
    let dir = temp_dir();
    let path = dir.path().join("workq.db");
    let s = open_in(&dir, ManualClock::new(workq_core::Timestamp(1_000)));
    let id = s
        .submit(&[JobSpec::new("default", vec!["true".into()])])
        .unwrap()[0]
        .id();
    let w = s
        .register_worker(&WorkerRegistration {
            name: "w".into(),
            host: "h".into(),
            boot_id: "b".into(),
            pid: 1,
            pid_start_time: 1,
            queues: vec!["default".into()],
            slots: 1,
            version: "t".into(),
            settings: None,
        })
        .unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "INSERT INTO queues (name, paused) VALUES ('default', 1)",
        [],
    )
    .unwrap();
    let q = vec!["default".to_string()];
    assert!(s.claim(w, &q, 1).unwrap().is_empty());
    assert!(s.claim_ids(w, &q, &[id], 1).unwrap().is_empty());
    c.execute("UPDATE queues SET paused = 0", []).unwrap();
    assert_eq!(s.claim_ids(w, &q, &[id], 1).unwrap()[0].id, id);
}
