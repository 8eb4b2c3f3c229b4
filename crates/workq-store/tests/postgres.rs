//! The store conformance suite on PostgreSQL: a throwaway cluster for this test process, one
//! fresh database per test. Skipped with a loud line when the server binaries are missing;
//! under CI=true a skip is a failure.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use workq_store::{pgtest, ManualClock, PgOptions, PgStore, Store};

/// True (after saying so loudly) when there is no PostgreSQL to test against.
fn skip() -> bool {
    match pgtest::shared() {
        Ok(_) => false,
        Err(e) => {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "PostgreSQL tests cannot be skipped under CI=true: {e}"
            );
            eprintln!("\n!!!!! SKIPPING PostgreSQL store tests: {e} !!!!!\n");
            true
        }
    }
}

fn fresh_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let cluster = pgtest::shared().expect("a PostgreSQL cluster");
    let n = N.fetch_add(1, Ordering::Relaxed);
    let c = cluster.lock().unwrap_or_else(|p| p.into_inner());
    c.create_db(&format!("conf_{}_{n}", std::process::id()))
        .expect("create a database")
}

fn open(url: &str, clock: ManualClock) -> PgStore {
    PgStore::open(
        url,
        PgOptions {
            clock: Arc::new(clock),
            host: "host-1".into(),
            ..PgOptions::default()
        },
    )
    .expect("open the PostgreSQL store")
}

fn fresh(clock: ManualClock) -> Box<dyn Store> {
    Box::new(open(&fresh_url(), clock))
}

fn pair(clock: ManualClock) -> (Box<dyn Store>, Box<dyn Store>) {
    let url = fresh_url();
    (
        Box::new(open(&url, clock.clone())),
        Box::new(open(&url, clock)),
    )
}

workq_store::store_conformance!(fresh, pair, skip = skip);

/// Several hosts opening a fresh database at once migrate it once (advisory lock).
#[test]
fn concurrent_first_opens_migrate_once() {
    if skip() {
        return;
    }
    let url = fresh_url();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = open(&url, ManualClock::new(workq_core::Timestamp(1)));
                s.store_id().expect("store id")
            })
        })
        .collect();
    let ids: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("open"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one store: {ids:?}");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let rows: i64 = c
        .query_one("SELECT count(*) FROM workq.meta", &[])
        .expect("meta")
        .get(0);
    let latest = open(&url, ManualClock::new(workq_core::Timestamp(1)))
        .diagnose()
        .expect("diagnose")
        .latest_schema;
    assert_eq!(rows, latest, "each migration recorded once");
}

/// A row written by hand with a NULL or a value of another type where the store needs one is an
/// error naming the table and the column, never a panic; a claimed job whose row cannot be read
/// fails alone, with that reason, and the jobs behind it are still claimed.
#[test]
fn unreadable_rows_are_errors_naming_table_and_column() {
    if skip() {
        return;
    }
    let url = fresh_url();
    let s = open(&url, ManualClock::new(workq_core::Timestamp(1_000)));
    let spec = |n: &str| workq_core::JobSpec::new("default", vec!["echo".into(), n.into()]);
    let ids: Vec<i64> = s
        .submit(&[spec("bad"), spec("good")])
        .expect("submit")
        .iter()
        .map(|r| r.id())
        .collect();
    let w = s
        .register_worker(&workq_store::WorkerRegistration {
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
        .expect("register");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    c.batch_execute(&format!(
        "ALTER TABLE workq.jobs ALTER COLUMN kill_grace_ms DROP NOT NULL;
         UPDATE workq.jobs SET kill_grace_ms = NULL WHERE id = {};
         ALTER TABLE workq.workers ALTER COLUMN slots TYPE integer;",
        ids[0]
    ))
    .expect("damage the rows");

    match s.get(ids[0]) {
        Err(workq_store::StoreError::BadRow { table, column, .. }) => {
            assert_eq!((table, column.as_str()), ("jobs", "kill_grace_ms"));
        }
        other => panic!("expected a BadRow error, got {other:?}"),
    }
    let e = s.workers(true).expect_err("slots is an integer now");
    let text = e.to_string();
    assert!(
        text.contains("table workers") && text.contains("slots"),
        "{text}"
    );

    let claimed = s
        .claim(w, &["default".into()], 2)
        .expect("the claim goes on");
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[1]],
        "the readable job is claimed"
    );
    let (state, error): (String, String) = {
        let r = c
            .query_one(
                "SELECT state, last_error FROM workq.jobs WHERE id = $1",
                &[&ids[0]],
            )
            .expect("read");
        (r.get(0), r.get(1))
    };
    assert_eq!(state, "failed");
    assert!(
        error.contains("table jobs") && error.contains("kill_grace_ms") && error.contains("NULL"),
        "{error}"
    );

    // A container spec that cannot be read is an error, never a job run on the host instead.
    let boxed = s.submit(&[spec("boxed")]).expect("submit")[0].id();
    c.execute(
        "UPDATE workq.jobs SET container = '{\"image\": 1}' WHERE id = $1",
        &[&boxed],
    )
    .expect("damage the container");
    match s.get(boxed) {
        Err(workq_store::StoreError::BadRow { table, column, .. }) => {
            assert_eq!((table, column.as_str()), ("jobs", "container"));
        }
        other => panic!("expected a BadRow error, got {other:?}"),
    }
    assert!(s
        .claim(w, &["default".into()], 2)
        .expect("claim")
        .is_empty());
    let state: String = c
        .query_one("SELECT state FROM workq.jobs WHERE id = $1", &[&boxed])
        .expect("read")
        .get(0);
    assert_eq!(state, "failed", "claimed and failed, not run");
}

/// A paused queue gives nothing to `claim_ids`, as to `claim` (no command pauses a queue yet,
/// so the row is written by hand).
#[test]
fn claim_ids_skips_a_paused_queue() {
    if skip() {
        return;
    }
    let url = fresh_url();
    let s = open(&url, ManualClock::new(workq_core::Timestamp(1_000)));
    let id = s
        .submit(&[workq_core::JobSpec::new("default", vec!["true".into()])])
        .expect("submit")[0]
        .id();
    let w = s
        .register_worker(&workq_store::WorkerRegistration {
            name: "w".into(),
            host: "host-1".into(),
            boot_id: "b".into(),
            pid: 1,
            pid_start_time: 1,
            queues: vec!["default".into()],
            slots: 1,
            version: "t".into(),
            settings: None,
        })
        .expect("register");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    c.batch_execute("INSERT INTO workq.queues (name, paused) VALUES ('default', TRUE)")
        .expect("pause");
    let q = vec!["default".to_string()];
    assert!(s.claim(w, &q, 1).expect("claim").is_empty());
    assert!(s.claim_ids(w, &q, &[id], 1).expect("claim_ids").is_empty());
    c.batch_execute("UPDATE workq.queues SET paused = FALSE")
        .expect("resume");
    assert_eq!(s.claim_ids(w, &q, &[id], 1).expect("claim_ids")[0].id, id);
}
