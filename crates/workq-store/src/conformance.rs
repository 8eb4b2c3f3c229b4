//! The store conformance suite: the behaviour every [`Store`] backend must show, written once.
//!
//! Each `pub fn` checks one behaviour and panics with a message saying what went wrong. It takes
//! a [`Factory`]: something that opens a fresh, empty store reading its time from the given
//! [`ManualClock`], so schedules, retries and rescues are tested without sleeping. The one
//! behaviour that needs two handles on the same store ([`changed_after_another_handle_writes`])
//! takes a [`PairFactory`] instead, which opens one fresh store twice (as two processes would).
//!
//! A backend runs the whole suite with one line in an integration test:
//!
//! ```ignore
//! fn fresh_store(clock: ManualClock) -> Box<dyn Store> { /* open an empty store */ }
//! fn store_pair(clock: ManualClock) -> (Box<dyn Store>, Box<dyn Store>) { /* open one twice */ }
//!
//! workq_store::store_conformance!(fresh_store, store_pair);
//! ```
//!
//! [`Guarded`] keeps whatever backs a test store (a temporary directory, a scratch schema) alive
//! exactly as long as the store.

use std::time::Duration;

use workq_core::{
    Attempt, ClaimedJob, Job, JobId, JobSpec, JobState, Outcome, Timestamp, WorkerId, WorkerRecord,
    WorkerState,
};

use crate::{
    CancelOutcome, Diagnosis, FinishOutcome, FinishRequest, ListFilter, ManualClock, OutcomeCounts,
    QueueMetrics, QueueStats, RescueKind, Rescued, Result, RetryOutcome, RunningJob, SpawnRecord,
    Store, StoreError, StoredEvent, Submitted, ThroughputPoint, WorkerRegistration,
};

/// Opens a fresh, empty store that reads time from the given clock.
pub type Factory = dyn Fn(ManualClock) -> Box<dyn Store>;

/// Opens one fresh, empty store through two independent handles, both on the given clock.
pub type PairFactory = dyn Fn(ManualClock) -> (Box<dyn Store>, Box<dyn Store>);

/// Instantiates the conformance suite: one `#[test]` per behaviour of [`crate::conformance`].
///
/// `store_conformance!(fresh, pair, skip = f)` returns from every test at once when `f()` is
/// true (a backend whose server is not installed; `f` should say so loudly).
/// `store_conformance!(fresh, pair)` takes a [`Factory`] and a [`PairFactory`] (functions or
/// closures). Put it at the top level of an integration test file, or inside a module.
#[macro_export]
macro_rules! store_conformance {
    ($factory:expr, $pair:expr $(,)?) => {
        $crate::store_conformance!($factory, $pair, skip = || false);
    };
    ($factory:expr, $pair:expr, skip = $skip:expr $(,)?) => {
        $crate::store_conformance!(@each $factory, $skip;
            submitted_job_round_trips,
            claim_order,
            claim_limit_and_rest,
            claim_ids_takes_only_the_given_ready_jobs,
            scheduled_jobs_wait_for_run_at,
            lease_fencing,
            finish_after_rescue_is_stale,
            a_worker_declared_dead_claims_nothing_and_learns_it,
            retries_back_off_exponentially,
            timeout_and_spawn_error_count_as_failures,
            interrupted_requeues_without_counting_a_failure,
            unique_keys,
            idempotency_keys,
            dependencies_wait_for_success,
            dependency_listed_twice_counts_once,
            dependency_failure_cancels_dependents_transitively,
            after_unknown_job_is_not_found_and_stores_nothing,
            after_failed_or_cancelled_job_is_conflict,
            batch_submit_is_atomic,
            cancel_queued_job,
            cancel_running_job,
            retry_requeues_with_a_fresh_budget,
            retried_dependent_runs_once_its_dependency_succeeds,
            rescue_requeues_lost_jobs,
            rescue_fails_job_after_max_rescues,
            queue_stats_counts,
            list_filters,
            list_waiting_only,
            workers_registry,
            interrupted_rescue_costs_the_job_nothing,
            crash_looping_and_pruning,
            worker_pause_flags,
            running_jobs_and_worker_outcomes,
            store_id_and_diagnosis,
            unique_keys_seen_for_batch_runs,
            container_spec_round_trips,
            purge_removes_old_finished_jobs_in_batches,
            step_records_finishes_and_claims_at_once,
            event_log_records_each_state_change,
            record_event_appends_an_audit_row,
            queue_metrics_from_tallies,
            throughput_buckets_finished_jobs,
            list_before_and_command_contains,
            heartbeat_state_changes_and_purges_keep_the_log_resumable,
        );
        #[test]
        fn changed_after_another_handle_writes() {
            if ($skip)() {
                return;
            }
            $crate::conformance::changed_after_another_handle_writes(&$pair);
        }
    };
    (@each $factory:expr, $skip:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if ($skip)() {
                    return;
                }
                $crate::conformance::$name(&$factory);
            }
        )*
    };
}

/// A store together with what must outlive it (a temporary directory, a scratch database).
///
/// Implements [`Store`] by delegation. The store is dropped before the guard.
pub struct Guarded<S, G> {
    store: S,
    _guard: G,
}

impl<S: Store, G: Send> Guarded<S, G> {
    /// Keeps `guard` alive as long as `store`.
    pub fn new(store: S, guard: G) -> Self {
        Guarded {
            store,
            _guard: guard,
        }
    }
}

impl<S: Store, G: Send> Store for Guarded<S, G> {
    fn now(&self) -> Timestamp {
        self.store.now()
    }
    fn submit(&self, jobs: &[JobSpec]) -> Result<Vec<Submitted>> {
        self.store.submit(jobs)
    }
    fn claim(&self, worker: WorkerId, queues: &[String], limit: u32) -> Result<Vec<ClaimedJob>> {
        self.store.claim(worker, queues, limit)
    }
    fn claim_ids(
        &self,
        worker: WorkerId,
        queues: &[String],
        ids: &[JobId],
        limit: u32,
    ) -> Result<Vec<ClaimedJob>> {
        self.store.claim_ids(worker, queues, ids, limit)
    }
    fn record_spawn(&self, spawns: &[SpawnRecord]) -> Result<()> {
        self.store.record_spawn(spawns)
    }
    fn finish(&self, worker: WorkerId, results: &[FinishRequest]) -> Result<Vec<FinishOutcome>> {
        self.store.finish(worker, results)
    }
    fn step(
        &self,
        worker: WorkerId,
        spawns: &[SpawnRecord],
        results: &[FinishRequest],
        queues: &[String],
        limit: u32,
    ) -> Result<(Vec<FinishOutcome>, Vec<ClaimedJob>)> {
        self.store.step(worker, spawns, results, queues, limit)
    }
    fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.store.get(id)
    }
    fn attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        self.store.attempts(id)
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        self.store.list(filter)
    }
    fn count_unfinished(&self, queue: Option<&str>) -> Result<u64> {
        self.store.count_unfinished(queue)
    }
    fn cancel(&self, ids: &[JobId]) -> Result<Vec<CancelOutcome>> {
        self.store.cancel(ids)
    }
    fn retry(&self, ids: &[JobId]) -> Result<Vec<RetryOutcome>> {
        self.store.retry(ids)
    }
    fn failed_ids(&self, queue: Option<&str>) -> Result<Vec<JobId>> {
        self.store.failed_ids(queue)
    }
    fn cancel_requests(&self, worker: WorkerId) -> Result<Vec<(JobId, i64)>> {
        self.store.cancel_requests(worker)
    }
    fn next_run_at(&self, queues: &[String]) -> Result<Option<Timestamp>> {
        self.store.next_run_at(queues)
    }
    fn changed(&self) -> Result<bool> {
        self.store.changed()
    }
    fn register_worker(&self, reg: &WorkerRegistration) -> Result<WorkerId> {
        self.store.register_worker(reg)
    }
    fn heartbeat(&self, worker: WorkerId, state: WorkerState) -> Result<crate::Heartbeat> {
        self.store.heartbeat(worker, state)
    }
    fn worker_stopped(&self, worker: WorkerId, reason: &str) -> Result<()> {
        self.store.worker_stopped(worker, reason)
    }
    fn workers(&self, include_ended: bool) -> Result<Vec<WorkerRecord>> {
        self.store.workers(include_ended)
    }
    fn running_attempts(&self, worker: WorkerId) -> Result<Vec<Attempt>> {
        self.store.running_attempts(worker)
    }
    fn rescue_worker(
        &self,
        worker: WorkerId,
        reason: &str,
        how: RescueKind,
    ) -> Result<Vec<Rescued>> {
        self.store.rescue_worker(worker, reason, how)
    }
    fn mark_crash_looping(&self, worker: WorkerId, reason: &str) -> Result<()> {
        self.store.mark_crash_looping(worker, reason)
    }
    fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        self.store.prune_workers(before)
    }
    fn set_worker_paused(&self, host: &str, name: &str, paused: bool) -> Result<()> {
        self.store.set_worker_paused(host, name, paused)
    }
    fn worker_paused(&self, host: &str, name: &str) -> Result<bool> {
        self.store.worker_paused(host, name)
    }
    fn running_jobs(&self) -> Result<Vec<RunningJob>> {
        self.store.running_jobs()
    }
    fn worker_outcomes(&self, worker: WorkerId, since: Timestamp) -> Result<OutcomeCounts> {
        self.store.worker_outcomes(worker, since)
    }
    fn store_id(&self) -> Result<String> {
        self.store.store_id()
    }
    fn jobs_with_unique_keys(&self, keys: &[String]) -> Result<Vec<(String, JobId, JobState)>> {
        self.store.jobs_with_unique_keys(keys)
    }
    fn diagnose(&self) -> Result<Diagnosis> {
        self.store.diagnose()
    }
    fn purge(&self, before: Timestamp, states: &[JobState], limit: u32) -> Result<crate::Purged> {
        self.store.purge(before, states, limit)
    }
    fn subscribe(&self, on_change: Box<dyn Fn() + Send>) -> Option<Box<dyn std::any::Any + Send>> {
        self.store.subscribe(on_change)
    }
    fn subscribe_events(
        &self,
        on_change: Box<dyn Fn() + Send>,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        self.store.subscribe_events(on_change)
    }
    fn shared_across_hosts(&self) -> bool {
        self.store.shared_across_hosts()
    }
    fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        self.store.queue_stats()
    }
    fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>> {
        self.store.events_after(after, limit)
    }
    fn last_event_id(&self) -> Result<i64> {
        self.store.last_event_id()
    }
    fn commit_horizon(&self) -> Result<Option<(i64, i64)>> {
        self.store.commit_horizon()
    }
    fn record_event(
        &self,
        kind: &str,
        job: Option<JobId>,
        worker: Option<WorkerId>,
        detail: &str,
    ) -> Result<i64> {
        self.store.record_event(kind, job, worker, detail)
    }
    fn queue_metrics(&self) -> Result<Vec<QueueMetrics>> {
        self.store.queue_metrics()
    }
    fn throughput(&self, since: Timestamp, bucket: Duration) -> Result<Vec<ThroughputPoint>> {
        self.store.throughput(since, bucket)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Where every test's clock starts (2023-11-14T22:13:20Z).
const T0: Timestamp = Timestamp(1_700_000_000_000);

const SEC: Duration = Duration::from_secs(1);

fn ok<T>(what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: unexpected store error: {e} ({e:?})"))
}

fn queues(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn spec(queue: &str, tag: &str) -> JobSpec {
    JobSpec::new(queue, vec!["echo".to_string(), tag.to_string()])
}

fn with_retries(mut sp: JobSpec, retries: u32, backoff: Duration) -> JobSpec {
    sp.retries = retries;
    sp.backoff = backoff;
    sp
}

fn after(mut sp: JobSpec, deps: &[JobId]) -> JobSpec {
    sp.after = deps.to_vec();
    sp
}

fn submit1(s: &dyn Store, sp: JobSpec) -> JobId {
    let tag = sp.argv.join(" ");
    match ok("submit", s.submit(std::slice::from_ref(&sp)))[..] {
        [Submitted::Created(id)] => id,
        ref other => panic!("submit of {tag:?} should create one job, got {other:?}"),
    }
}

fn registration(name: &str) -> WorkerRegistration {
    WorkerRegistration {
        name: name.to_string(),
        host: "host-1".to_string(),
        boot_id: "boot-1".to_string(),
        pid: 4242,
        pid_start_time: 987_654,
        queues: queues(&["default"]),
        slots: 4,
        version: "0.0.0-conformance".to_string(),
        settings: Some(format!("{{\"name\":\"{name}\"}}")),
    }
}

fn worker(s: &dyn Store, name: &str) -> WorkerId {
    ok("register_worker", s.register_worker(&registration(name)))
}

fn claim(s: &dyn Store, w: WorkerId, qs: &[&str], limit: u32) -> Vec<ClaimedJob> {
    ok("claim", s.claim(w, &queues(qs), limit))
}

fn claim_one(s: &dyn Store, w: WorkerId, qs: &[&str]) -> ClaimedJob {
    let mut got = claim(s, w, qs, 1);
    assert_eq!(
        got.len(),
        1,
        "claim(limit 1) from {qs:?} should return one job, got {:?}",
        ids_of(&got)
    );
    got.remove(0)
}

fn ids_of(claimed: &[ClaimedJob]) -> Vec<JobId> {
    let mut ids: Vec<JobId> = claimed.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

fn request(job_id: JobId, lease: i64, outcome: Outcome) -> FinishRequest {
    let (exit_code, error) = match outcome {
        Outcome::Succeeded => (Some(0), None),
        Outcome::Failed => (Some(1), Some("exited with status 1".to_string())),
        other => (None, Some(format!("attempt ended: {other}"))),
    };
    FinishRequest {
        job_id,
        lease,
        outcome,
        exit_code,
        signal: None,
        error,
    }
}

fn finish(s: &dyn Store, w: WorkerId, c: &ClaimedJob, outcome: Outcome) -> FinishOutcome {
    finish_lease(s, w, c.id, c.lease, outcome)
}

fn finish_lease(
    s: &dyn Store,
    w: WorkerId,
    id: JobId,
    lease: i64,
    outcome: Outcome,
) -> FinishOutcome {
    match ok("finish", s.finish(w, &[request(id, lease, outcome)]))[..] {
        [one] => one,
        ref other => panic!("finish of one attempt should return one outcome, got {other:?}"),
    }
}

fn job(s: &dyn Store, id: JobId) -> Job {
    ok("get", s.get(id)).unwrap_or_else(|| panic!("job {id} should exist"))
}

fn state(s: &dyn Store, id: JobId) -> JobState {
    job(s, id).state
}

fn outcomes(s: &dyn Store, id: JobId) -> Vec<Option<Outcome>> {
    ok("attempts", s.attempts(id))
        .iter()
        .map(|a| a.outcome)
        .collect()
}

fn list_ids(s: &dyn Store, filter: &ListFilter) -> Vec<JobId> {
    ok("list", s.list(filter)).iter().map(|j| j.id).collect()
}

fn all_ids(s: &dyn Store) -> Vec<JobId> {
    list_ids(s, &ListFilter::default())
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn worker_record(s: &dyn Store, w: WorkerId) -> WorkerRecord {
    ok("workers", s.workers(true))
        .into_iter()
        .find(|r| r.id == w)
        .unwrap_or_else(|| panic!("worker {w} should be listed by workers(true)"))
}

fn worker_ids(records: &[WorkerRecord]) -> Vec<WorkerId> {
    sorted(records.iter().map(|r| r.id).collect())
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn advance_to(clock: &ManualClock, s: &dyn Store, at: Timestamp) {
    clock.advance(at.since(s.now()));
    assert!(s.now() >= at, "the store must read the clock it was given");
}

fn requeued_within(what: &str, got: FinishOutcome, lo: Timestamp, hi: Timestamp) -> Timestamp {
    match got {
        FinishOutcome::Requeued(at) if at >= lo && at <= hi => at,
        other => panic!(
            "{what}: expected Requeued(t) with t in [{}, {}] ms, got {other:?}",
            lo.0, hi.0
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Submitting and claiming
// ---------------------------------------------------------------------------------------------

/// A submitted job reads back with its spec intact, queued and untouched; a claim hands out the
/// same spec.
pub fn submitted_job_round_trips(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let now = s.now();
    assert_eq!(
        now, T0,
        "the store must read time from the clock it was given"
    );

    let mut sp = JobSpec::new(
        "builds",
        vec!["sh".into(), "-c".into(), "echo 'hi there' \"$A\"".into()],
    );
    sp.env.insert("A".into(), "1".into());
    sp.env.insert("B".into(), "two words".into());
    sp.cwd = Some("/srv/work".into());
    sp.labels.insert("team".into(), "infra".into());
    sp.priority = -3;
    sp.retries = 4;
    sp.backoff = Duration::from_millis(1500);
    sp.timeout = Some(Duration::from_secs(90));
    sp.kill_grace = Duration::from_secs(3);
    sp.run_at = Some(now);
    sp.unique_key = Some("u-1".into());
    sp.idempotency_key = Some("i-1".into());
    sp.max_rescues = 7;
    let id = submit1(s, sp.clone());

    let j = job(s, id);
    assert_eq!(j.id, id);
    assert_eq!(
        j.spec, sp,
        "job {id}: the stored spec differs from the submitted one"
    );
    assert_eq!(j.state, JobState::Queued, "a new job is queued");
    assert_eq!(j.run_at, now);
    assert_eq!(j.deps_pending, 0);
    assert_eq!((j.attempt, j.failures, j.rescues), (0, 0, 0));
    assert_eq!(j.worker_id, None);
    assert!(!j.cancel_requested);
    assert_eq!((j.exit_code, j.last_error.as_deref()), (None, None));
    assert_eq!(j.created_at, now);
    assert_eq!((j.started_at, j.finished_at), (None, None));
    assert_eq!(j.display_state(now), "queued");
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 1);

    let plain = submit1(s, spec("default", "plain"));
    assert!(plain > id, "ids grow: {plain} was submitted after {id}");
    assert_eq!(job(s, plain).run_at, now, "a job without run_at is due now");
    assert!(
        ok("get", s.get(plain + 1000)).is_none(),
        "get of an unknown id is None"
    );

    let w = worker(s, "w");
    let c = claim_one(s, w, &["builds"]);
    assert_eq!(c.id, id);
    assert_eq!(
        c.spec, sp,
        "the claimed spec differs from the submitted one"
    );
    assert_eq!(c.attempt, 1);
}

/// Jobs are claimed by priority (highest first), then `run_at` (earliest first), then id, across
/// all the queues asked for, and only from those queues and only once due.
pub fn claim_order(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let now = s.now();
    let mk = |queue: &str, tag: &str, priority: i32, secs_ago: i64| {
        let mut sp = spec(queue, tag);
        sp.priority = priority;
        sp.run_at = Some(Timestamp(now.0 - secs_ago * 1000));
        sp
    };
    // Submitted in an order that matches none of the sort keys.
    let f = submit1(s, mk("default", "f", -1, 0));
    let a = submit1(s, mk("default", "a", 0, 10));
    let b = submit1(s, mk("default", "b", 5, 0));
    let c = submit1(s, mk("default", "c", 0, 20));
    let d = submit1(s, mk("other", "d", 5, 5));
    let e = submit1(s, mk("default", "e", 0, 20));
    let _not_due = submit1(s, mk("default", "not-due", 9, -1));
    let _not_served = submit1(s, mk("elsewhere", "not-served", 100, 30));

    let w = worker(s, "w");
    let order: Vec<JobId> = (0..6)
        .map(|_| claim_one(s, w, &["default", "other"]).id)
        .collect();
    assert_eq!(
        order,
        vec![d, b, c, e, a, f],
        "claim order must be priority DESC, run_at ASC, id ASC (ids: a={a} b={b} c={c} d={d} e={e} f={f})"
    );
    let rest = claim(s, w, &["default", "other"], 10);
    assert!(
        rest.is_empty(),
        "a job not yet due or in another queue was claimed: {:?}",
        ids_of(&rest)
    );

    // A multi-job claim takes the best jobs, whatever order it returns them in.
    let p: Vec<JobId> = (0..4)
        .map(|i| {
            let mut sp = spec("batch", &format!("p{i}"));
            sp.priority = i;
            submit1(s, sp)
        })
        .collect();
    let top = claim(s, w, &["batch"], 2);
    assert_eq!(
        ids_of(&top),
        vec![p[2], p[3]],
        "claim(limit 2) must take the two highest priorities"
    );
}

/// A claim returns at most `limit` jobs (the worker's free slots), each with its own lease, and
/// the next claim gets the rest.
pub fn claim_limit_and_rest(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let now = s.now();
    let specs: Vec<JobSpec> = (0..5).map(|i| spec("default", &format!("j{i}"))).collect();
    let all: Vec<JobId> = ok("submit", s.submit(&specs))
        .into_iter()
        .map(Submitted::id)
        .collect();
    let (w1, w2) = (worker(s, "w1"), worker(s, "w2"));

    assert!(
        claim(s, w1, &["default"], 0).is_empty(),
        "claim(limit 0) must claim nothing"
    );
    assert!(
        claim(s, w1, &[], 5).is_empty(),
        "claim from no queues must claim nothing"
    );

    let first = claim(s, w1, &["default"], 3);
    assert_eq!(first.len(), 3, "claim(limit 3) with 5 ready jobs");
    let mut leases: Vec<i64> = first.iter().map(|c| c.lease).collect();
    leases.sort_unstable();
    leases.dedup();
    assert_eq!(leases.len(), 3, "every claimed attempt needs its own lease");
    for c in &first {
        assert_eq!(c.attempt, 1, "job {}: first attempt", c.id);
        let j = job(s, c.id);
        assert_eq!(j.state, JobState::Running, "job {} was claimed", c.id);
        assert_eq!(j.worker_id, Some(w1));
        assert_eq!(j.worker_name.as_deref(), Some("w1"));
        assert_eq!(j.attempt, 1);
        assert_eq!(j.started_at, Some(now));
    }

    let second = claim(s, w2, &["default"], 3);
    assert_eq!(second.len(), 2, "the second claim gets the 2 jobs left");
    let mut both = ids_of(&first);
    both.extend(ids_of(&second));
    both.sort_unstable();
    assert_eq!(both, all, "the two claims together take each job once");
    assert!(claim(s, w2, &["default"], 3).is_empty(), "nothing left");
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 5);

    // A queue named twice still fills the free slots.
    let more: Vec<JobId> = (0..3)
        .map(|i| submit1(s, spec("default", &format!("m{i}"))))
        .collect();
    let got = claim(s, w1, &["default", "default"], 2);
    assert_eq!(
        ids_of(&got),
        more[..2].to_vec(),
        "claim(limit 2) with the queue listed twice must claim 2 distinct jobs"
    );
    assert_eq!(ids_of(&claim(s, w1, &["default"], 5)), more[2..].to_vec());
}

/// `claim_ids` takes only the given jobs, and only those a claim could take: ready (no pending
/// dependency, `run_at` reached), queued, in one of the worker's queues; in queue order, up to
/// the limit, each with a fresh lease that fences its finish as any claim's does.
pub fn claim_ids_takes_only_the_given_ready_jobs(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = &*factory(clock.clone());
    let w = worker(s, "w");
    let ids = |s: &dyn Store, qs: &[&str], want: &[JobId], limit: u32| {
        ids_of(&ok("claim_ids", s.claim_ids(w, &queues(qs), want, limit)))
    };
    let before = submit1(s, spec("default", "older, not asked for"));
    let low = submit1(s, spec("default", "low"));
    let mut high = spec("default", "high");
    high.priority = 5;
    let high = submit1(s, high);
    let elsewhere = submit1(s, spec("other", "other queue"));
    let waiting = submit1(s, after(spec("default", "waiting"), &[before]));
    let mut later = spec("default", "later");
    later.run_at = Some(T0.plus(SEC * 60));
    let later = submit1(s, later);
    let nobody: &[JobId] = &[];
    assert_eq!(ids(s, &["default"], &[], 4), nobody, "no ids, no jobs");
    assert_eq!(ids(s, &["default"], &[low, high], 0), nobody, "limit 0");
    assert_eq!(
        ids(s, &["default"], &[elsewhere, waiting, later, 9999], 4),
        nobody,
        "another queue, a pending dependency, a future run_at, an unknown id"
    );
    let got = ok(
        "claim_ids",
        s.claim_ids(w, &queues(&["default"]), &[low, high, high], 1),
    );
    assert_eq!(
        ids_of(&got),
        vec![high],
        "queue order, the limit, an id given twice once"
    );
    assert_eq!(got[0].attempt, 1);
    assert_eq!(
        ids(s, &["default"], &[high], 4),
        nobody,
        "a running job is not claimed again"
    );
    assert_eq!(
        state(s, before),
        JobState::Queued,
        "a job not asked for stays queued"
    );
    assert_eq!(
        finish_lease(s, w, high, got[0].lease ^ 1, Outcome::Succeeded),
        FinishOutcome::Stale,
        "another lease is fenced off"
    );
    assert_eq!(
        finish(s, w, &got[0], Outcome::Succeeded),
        FinishOutcome::Done(JobState::Succeeded)
    );
    advance_to(&clock, s, T0.plus(SEC * 60));
    assert_eq!(
        ids(s, &["default", "other"], &[later, elsewhere, low], 8),
        vec![low, elsewhere, later]
    );
    assert_eq!(outcomes(s, later), vec![None], "its attempt row is open");
}

/// A job whose `run_at` is in the future waits until the clock reaches it, and `next_run_at`
/// reports when that is.
pub fn scheduled_jobs_wait_for_run_at(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let now = s.now();
    let mut later = spec("default", "later");
    later.run_at = Some(now.plus(60 * SEC));
    let later = submit1(s, later);
    let mut sooner = spec("other", "sooner");
    sooner.run_at = Some(now.plus(30 * SEC));
    let sooner = submit1(s, sooner);
    let w = worker(s, "w");

    assert!(
        claim(s, w, &["default", "other"], 10).is_empty(),
        "a scheduled job was claimed before its run_at"
    );
    let next = |qs: &[&str]| ok("next_run_at", s.next_run_at(&queues(qs)));
    assert_eq!(next(&["default"]), Some(now.plus(60 * SEC)));
    assert_eq!(next(&["default", "other"]), Some(now.plus(30 * SEC)));
    assert_eq!(next(&["nothing-here"]), None);
    assert_eq!(job(s, later).state, JobState::Queued);
    assert_eq!(job(s, later).display_state(now), "scheduled");
    let scheduled = ListFilter {
        scheduled_only: true,
        ..Default::default()
    };
    assert_eq!(list_ids(s, &scheduled), vec![sooner, later]);

    clock.advance(60 * SEC - Duration::from_millis(1));
    assert_eq!(
        ids_of(&claim(s, w, &["default", "other"], 10)),
        vec![sooner],
        "only the job whose run_at has passed is claimable"
    );
    assert_eq!(
        next(&["default", "other"]),
        Some(now.plus(60 * SEC)),
        "next_run_at reports the job still scheduled"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        claim_one(s, w, &["default"]).id,
        later,
        "a job is claimable once the clock reaches its run_at"
    );
    assert_eq!(next(&["default", "other"]), None);
    assert!(list_ids(s, &scheduled).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

/// Every write for an attempt must present its lease: with a wrong one, a finish is `Stale` and
/// changes nothing, and spawn bookkeeping is ignored.
pub fn lease_fencing(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let id = submit1(s, spec("default", "fenced"));
    let w = worker(s, "w");
    let c = claim_one(s, w, &["default"]);
    let wrong = c.lease ^ 1;

    let spawn = |lease: i64, pid: i32| SpawnRecord {
        job_id: id,
        lease,
        pid,
        pgid: pid,
        pid_start_time: 777,
        log_path: format!("/logs/{id}-{pid}.log"),
    };
    ok("record_spawn", s.record_spawn(&[spawn(wrong, 1111)]));
    let running = ok("running_attempts", s.running_attempts(w));
    assert_eq!(running.len(), 1);
    assert_eq!(
        running[0].pid, None,
        "a spawn with a wrong lease was recorded"
    );
    ok("record_spawn", s.record_spawn(&[spawn(c.lease, 2222)]));
    let running = ok("running_attempts", s.running_attempts(w));
    assert_eq!(
        (running[0].pid, running[0].pgid, running[0].pid_start_time),
        (Some(2222), Some(2222), Some(777))
    );
    assert_eq!(
        running[0].log_path.as_deref(),
        Some(format!("/logs/{id}-2222.log").as_str())
    );

    let before = job(s, id);
    let attempts_before = ok("attempts", s.attempts(id));
    for outcome in [Outcome::Succeeded, Outcome::Failed, Outcome::Interrupted] {
        assert_eq!(
            finish_lease(s, w, id, wrong, outcome),
            FinishOutcome::Stale,
            "finish({outcome}) with a wrong lease must be stale"
        );
    }
    assert_eq!(job(s, id), before, "a stale finish changed the job");
    assert_eq!(
        ok("attempts", s.attempts(id)),
        attempts_before,
        "a stale finish changed the attempt"
    );

    // One batch, one stale and one current: each gets its own answer, in order.
    let results = ok(
        "finish",
        s.finish(
            w,
            &[
                request(id, wrong, Outcome::Succeeded),
                request(id, c.lease, Outcome::Failed),
            ],
        ),
    );
    assert_eq!(
        results,
        vec![FinishOutcome::Stale, FinishOutcome::Done(JobState::Failed)]
    );
    assert_eq!(
        finish(s, w, &c, Outcome::Succeeded),
        FinishOutcome::Stale,
        "a second finish of an ended attempt must be stale"
    );
    assert_eq!(state(s, id), JobState::Failed);
    assert_eq!(outcomes(s, id), vec![Some(Outcome::Failed)]);
}

/// Once a dead worker's job was rescued, that worker's finish is stale, even after the job was
/// claimed again by someone else.
/// A worker another host declared dead (cut off from the store past the TTL) learns it from its
/// next heartbeat, and claims nothing under that id in the meantime: no sweep would ever rescue
/// what it took, since sweeps skip ended rows. Under a new registration it claims again.
pub fn a_worker_declared_dead_claims_nothing_and_learns_it(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let first = submit1(s, spec("default", "first"));
    let w1 = worker(s, "cut-off");
    assert_eq!(
        ok("heartbeat", s.heartbeat(w1, WorkerState::Running)),
        crate::Heartbeat::Alive
    );
    claim_one(s, w1, &["default"]);
    ok(
        "rescue_worker",
        s.rescue_worker(w1, "no heartbeat from host-1 for 61s", RescueKind::Lost),
    );
    let second = submit1(s, spec("default", "second"));
    assert!(
        claim(s, w1, &["default"], 5).is_empty(),
        "a dead worker's claim must take nothing"
    );
    let (_, taken) = ok("step", s.step(w1, &[], &[], &queues(&["default"]), 5));
    assert!(taken.is_empty(), "nor may its step claim");
    assert!(
        ok(
            "claim_ids",
            s.claim_ids(w1, &queues(&["default"]), &[first, second], 5)
        )
        .is_empty(),
        "nor its claim of given jobs"
    );
    assert_eq!(
        ok("heartbeat", s.heartbeat(w1, WorkerState::Running)),
        crate::Heartbeat::Ended,
        "the heartbeat tells the worker it was declared dead"
    );
    assert_eq!(
        worker_record(s, w1).state,
        WorkerState::Dead,
        "and does not revive the row"
    );
    let again = worker(s, "cut-off");
    assert_ne!(again, w1);
    assert_eq!(
        ids_of(&claim(s, again, &["default"], 5)),
        vec![first, second],
        "re-registered, it claims both (the rescued one and the new one)"
    );
    ok("worker_stopped", s.worker_stopped(again, "drained"));
    assert_eq!(
        ok("heartbeat", s.heartbeat(again, WorkerState::Draining)),
        crate::Heartbeat::Ended
    );
}

pub fn finish_after_rescue_is_stale(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let id = submit1(s, spec("default", "rescued"));
    let (w1, w2) = (worker(s, "w1"), worker(s, "w2"));
    let c1 = claim_one(s, w1, &["default"]);
    ok(
        "rescue_worker",
        s.rescue_worker(w1, "pid gone", RescueKind::Lost),
    );
    assert_eq!(state(s, id), JobState::Queued);

    assert_eq!(
        finish(s, w1, &c1, Outcome::Succeeded),
        FinishOutcome::Stale,
        "a finish after the rescue must be stale"
    );
    let j = job(s, id);
    assert_eq!(
        (j.state, j.rescues, j.attempt),
        (JobState::Queued, 1, 1),
        "a stale finish changed the rescued job"
    );

    let c2 = claim_one(s, w2, &["default"]);
    assert_eq!(c2.attempt, 2);
    assert_ne!(c2.lease, c1.lease, "a new attempt needs a new lease");
    assert_eq!(finish(s, w1, &c1, Outcome::Failed), FinishOutcome::Stale);
    let j = job(s, id);
    assert_eq!(
        (j.state, j.worker_id),
        (JobState::Running, Some(w2)),
        "the old lease must not touch the new attempt"
    );
    assert_eq!(
        finish(s, w2, &c2, Outcome::Succeeded),
        FinishOutcome::Done(JobState::Succeeded)
    );
    assert_eq!(
        outcomes(s, id),
        vec![Some(Outcome::Lost), Some(Outcome::Succeeded)]
    );
}

// ---------------------------------------------------------------------------------------------
// Outcomes and retries
// ---------------------------------------------------------------------------------------------

/// A failed attempt is retried after `backoff · 2^(n-1)` plus up to 25 % jitter, until the
/// retries are used up; then the job fails.
pub fn retries_back_off_exponentially(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let id = submit1(s, with_retries(spec("default", "flaky"), 2, 10 * SEC));
    let w = worker(s, "w");

    let c = claim_one(s, w, &["default"]);
    let t = s.now();
    let at1 = requeued_within(
        "first failure (retries=2, backoff=10s)",
        finish(s, w, &c, Outcome::Failed),
        t.plus(10 * SEC),
        t.plus(Duration::from_millis(12_500)),
    );
    let j = job(s, id);
    assert_eq!(
        (j.state, j.failures, j.attempt, j.run_at),
        (JobState::Queued, 1, 1, at1),
        "after the first failure the job is queued for run_at {}",
        at1.0
    );
    assert_eq!(j.exit_code, Some(1));
    assert!(j.last_error.is_some(), "the failure's error is kept");
    assert!(
        claim(s, w, &["default"], 1).is_empty(),
        "a job was claimed before its backoff ended"
    );
    assert_eq!(
        ok("next_run_at", s.next_run_at(&queues(&["default"]))),
        Some(at1)
    );

    advance_to(&clock, s, at1);
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.attempt, 2);
    let t = s.now();
    let at2 = requeued_within(
        "second failure",
        finish(s, w, &c, Outcome::Failed),
        t.plus(20 * SEC),
        t.plus(25 * SEC),
    );
    assert_eq!(job(s, id).failures, 2);

    advance_to(&clock, s, at2);
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.attempt, 3);
    assert_eq!(
        finish(s, w, &c, Outcome::Failed),
        FinishOutcome::Done(JobState::Failed),
        "the third failure with retries=2 fails the job"
    );
    let j = job(s, id);
    assert_eq!((j.state, j.failures), (JobState::Failed, 3));
    assert_eq!(j.finished_at, Some(s.now()));
    assert_eq!(ok("failed_ids", s.failed_ids(None)), vec![id]);
    assert_eq!(ok("failed_ids", s.failed_ids(Some("default"))), vec![id]);
    assert!(ok("failed_ids", s.failed_ids(Some("other"))).is_empty());
    let attempts = ok("attempts", s.attempts(id));
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "attempts are listed oldest first"
    );
    for a in &attempts {
        assert_eq!(a.outcome, Some(Outcome::Failed));
        assert_eq!(a.exit_code, Some(1));
        assert_eq!(a.worker_id, Some(w));
        assert!(a.ended_at.is_some());
    }
    assert!(claim(s, w, &["default"], 1).is_empty());
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 0);
}

/// `timeout` and `spawn_error` count against the retries like `failed`.
pub fn timeout_and_spawn_error_count_as_failures(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let id = submit1(s, with_retries(spec("default", "slow"), 1, SEC));

    let c = claim_one(s, w, &["default"]);
    let t = s.now();
    let at = requeued_within(
        "a timeout with retries=1",
        finish(s, w, &c, Outcome::Timeout),
        t.plus(SEC),
        t.plus(Duration::from_millis(1250)),
    );
    assert_eq!(job(s, id).failures, 1, "a timeout counts as a failure");
    advance_to(&clock, s, at);
    let c = claim_one(s, w, &["default"]);
    assert_eq!(
        finish(s, w, &c, Outcome::SpawnError),
        FinishOutcome::Done(JobState::Failed),
        "a spawn error after a timeout uses up retries=1"
    );
    assert_eq!(job(s, id).failures, 2);
    assert_eq!(
        outcomes(s, id),
        vec![Some(Outcome::Timeout), Some(Outcome::SpawnError)]
    );

    for outcome in [Outcome::Timeout, Outcome::SpawnError] {
        let id = submit1(s, spec("default", outcome.as_str()));
        let c = claim_one(s, w, &["default"]);
        assert_eq!(c.id, id);
        assert_eq!(
            finish(s, w, &c, outcome),
            FinishOutcome::Done(JobState::Failed),
            "{outcome} with retries=0 fails the job"
        );
        assert_eq!(job(s, id).failures, 1);
    }
}

/// An interrupted attempt (its worker was stopping) goes straight back to the queue and does not
/// count as a failure.
pub fn interrupted_requeues_without_counting_a_failure(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let id = submit1(s, spec("default", "long"));
    let w = worker(s, "w");
    for attempt in 1..=2 {
        let c = claim_one(s, w, &["default"]);
        assert_eq!(c.attempt, attempt);
        assert_eq!(
            finish(s, w, &c, Outcome::Interrupted),
            FinishOutcome::Requeued(s.now()),
            "an interrupted attempt is requeued at once, even with retries=0"
        );
        let j = job(s, id);
        assert_eq!((j.state, j.failures), (JobState::Queued, 0));
        assert!(j.run_at <= s.now());
    }
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.attempt, 3);
    assert_eq!(
        finish(s, w, &c, Outcome::Succeeded),
        FinishOutcome::Done(JobState::Succeeded)
    );
    let j = job(s, id);
    assert_eq!((j.state, j.failures), (JobState::Succeeded, 0));
    assert_eq!(j.exit_code, Some(0));
    assert_eq!(j.finished_at, Some(s.now()));
    assert_eq!(
        outcomes(s, id),
        vec![
            Some(Outcome::Interrupted),
            Some(Outcome::Interrupted),
            Some(Outcome::Succeeded)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// At most one queued-or-running job per unique key: a second submit returns the first job as
/// `Duplicate`; once it has ended, the key is free again.
pub fn unique_keys(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let keyed = |key: &str, tag: &str| {
        let mut sp = spec("default", tag);
        sp.unique_key = Some(key.to_string());
        sp
    };
    let w = worker(s, "w");

    let a = submit1(s, keyed("nightly", "a"));
    assert_eq!(
        ok("submit", s.submit(&[keyed("nightly", "b")])),
        vec![Submitted::Duplicate(a)],
        "same unique key while the first is queued"
    );
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.id, a);
    assert_eq!(
        ok("submit", s.submit(&[keyed("nightly", "b")])),
        vec![Submitted::Duplicate(a)],
        "same unique key while the first is running"
    );
    assert_eq!(all_ids(s), vec![a], "a duplicate must store nothing");
    finish(s, w, &c, Outcome::Succeeded);

    let b = submit1(s, keyed("nightly", "b"));
    assert_ne!(b, a, "after the first succeeded the key is free");
    ok("cancel", s.cancel(&[b]));
    let c2 = submit1(s, keyed("nightly", "c"));
    let claimed = claim_one(s, w, &["default"]);
    assert_eq!(claimed.id, c2);
    finish(s, w, &claimed, Outcome::Failed);
    let d = submit1(s, keyed("nightly", "d"));
    assert!(d > c2, "after a cancel or a failure the key is free");

    let other = submit1(s, keyed("weekly", "x"));
    assert_ne!(other, d, "different keys do not collide");
    let none1 = submit1(s, spec("default", "no key"));
    let none2 = submit1(s, spec("default", "no key"));
    assert_ne!(none1, none2, "jobs without a key never collide");

    let batch = ok(
        "submit",
        s.submit(&[keyed("hourly", "h1"), keyed("hourly", "h2")]),
    );
    match batch[..] {
        [Submitted::Created(h), Submitted::Duplicate(dup)] if dup == h => {}
        ref other => panic!("the same unique key twice in one batch: got {other:?}"),
    }
}

/// A submit with an idempotency key seen before returns the job it created as `Existing`,
/// whatever that job's state.
pub fn idempotency_keys(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let keyed = |key: &str, tag: &str| {
        let mut sp = spec("default", tag);
        sp.idempotency_key = Some(key.to_string());
        sp
    };
    let w = worker(s, "w");
    let a = submit1(s, keyed("req-1", "a"));
    let again = || ok("submit", s.submit(&[keyed("req-1", "a again")]));
    assert_eq!(again(), vec![Submitted::Existing(a)], "while queued");
    let c = claim_one(s, w, &["default"]);
    assert_eq!(again(), vec![Submitted::Existing(a)], "while running");
    finish(s, w, &c, Outcome::Failed);
    assert_eq!(again(), vec![Submitted::Existing(a)], "after it failed");
    assert_eq!(
        state(s, a),
        JobState::Failed,
        "a repeated submit must not requeue the job"
    );

    let b = submit1(s, keyed("req-2", "b"));
    assert_ne!(b, a);
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Succeeded);
    assert_eq!(
        ok("submit", s.submit(&[keyed("req-2", "b")])),
        vec![Submitted::Existing(b)],
        "after it succeeded"
    );

    let batch = ok(
        "submit",
        s.submit(&[keyed("req-3", "x"), keyed("req-3", "x")]),
    );
    let x = match batch[..] {
        [Submitted::Created(x), Submitted::Existing(same)] if same == x => x,
        ref other => panic!("the same idempotency key twice in one batch: got {other:?}"),
    };
    ok("cancel", s.cancel(&[x]));
    assert_eq!(
        ok("submit", s.submit(&[keyed("req-3", "x")])),
        vec![Submitted::Existing(x)],
        "after it was cancelled"
    );
    assert_eq!(
        all_ids(s),
        vec![x, b, a],
        "repeated submits must store nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Dependencies and batches
// ---------------------------------------------------------------------------------------------

/// A job `after` others is not claimable until all of them have succeeded.
pub fn dependencies_wait_for_success(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let a = submit1(s, spec("default", "a"));
    let b = submit1(s, after(spec("default", "b"), &[a]));
    let j = job(s, b);
    assert_eq!((j.state, j.deps_pending), (JobState::Queued, 1));
    assert_eq!(j.display_state(s.now()), "waiting");
    assert_eq!(
        ok("next_run_at", s.next_run_at(&queues(&["default"]))),
        None,
        "a waiting job has no run_at to wake up for"
    );

    let got = claim(s, w, &["default"], 10);
    assert_eq!(ids_of(&got), vec![a], "only the dependency is claimable");
    finish(s, w, &got[0], Outcome::Succeeded);
    assert_eq!(job(s, b).deps_pending, 0);
    assert_eq!(
        claim_one(s, w, &["default"]).id,
        b,
        "the dependent is claimable once its dependency succeeded"
    );

    // Several dependencies: all must succeed.
    let x = submit1(s, spec("deps", "x"));
    let y = submit1(s, spec("deps", "y"));
    let z = submit1(s, after(spec("deps", "z"), &[x, y]));
    assert_eq!(job(s, z).deps_pending, 2);
    let got = claim(s, w, &["deps"], 10);
    assert_eq!(ids_of(&got), vec![x, y]);
    let cx = got.iter().find(|c| c.id == x).unwrap();
    let cy = got.iter().find(|c| c.id == y).unwrap();
    finish(s, w, cx, Outcome::Succeeded);
    assert_eq!(job(s, z).deps_pending, 1);
    assert!(
        claim(s, w, &["deps"], 10).is_empty(),
        "a job ran before all its dependencies succeeded"
    );
    finish(s, w, cy, Outcome::Succeeded);
    assert_eq!(claim_one(s, w, &["deps"]).id, z);

    // A dependency that already succeeded does not hold anything back.
    let late = submit1(s, after(spec("late", "late"), &[a]));
    assert_eq!(job(s, late).deps_pending, 0);
    assert_eq!(claim_one(s, w, &["late"]).id, late);

    // A dependency that is still running counts, and a retried failure is not a success.
    let r = submit1(s, with_retries(spec("retrying", "r"), 1, SEC));
    let cr = claim_one(s, w, &["retrying"]);
    let dep = submit1(s, after(spec("after-r", "dep"), &[r]));
    assert_eq!(job(s, dep).deps_pending, 1);
    assert!(matches!(
        finish(s, w, &cr, Outcome::Failed),
        FinishOutcome::Requeued(_)
    ));
    assert_eq!(state(s, dep), JobState::Queued);
    assert_eq!(job(s, dep).deps_pending, 1);
    assert!(claim(s, w, &["after-r"], 1).is_empty());
}

/// A job listing the same dependency twice waits for it once, and runs when it succeeds.
pub fn dependency_listed_twice_counts_once(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let a = submit1(s, spec("default", "a"));
    let b = submit1(s, after(spec("default", "b"), &[a, a]));
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.id, a);
    finish(s, w, &c, Outcome::Succeeded);
    let j = job(s, b);
    assert_eq!(
        j.deps_pending, 0,
        "job {b} is after [{a}, {a}]; {a} succeeded, so nothing should be pending"
    );
    assert_eq!(claim_one(s, w, &["default"]).id, b);
}

/// When a job fails (or is cancelled), every job waiting on it, directly or not, is cancelled.
pub fn dependency_failure_cancels_dependents_transitively(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let a = submit1(s, spec("default", "a"));
    let b = submit1(s, after(spec("default", "b"), &[a]));
    let c = submit1(s, after(spec("default", "c"), &[b]));
    let other = submit1(s, spec("elsewhere", "other"));
    let d = submit1(s, after(spec("default", "d"), &[a, other]));
    let free = submit1(s, spec("elsewhere", "free"));
    let free_dep = submit1(s, after(spec("elsewhere", "free-dep"), &[other]));

    let ca = claim_one(s, w, &["default"]);
    assert_eq!(ca.id, a);
    assert_eq!(
        finish(s, w, &ca, Outcome::Failed),
        FinishOutcome::Done(JobState::Failed)
    );
    for (name, id) in [
        ("b (after a)", b),
        ("c (after b)", c),
        ("d (after a, other)", d),
    ] {
        let j = job(s, id);
        assert_eq!(
            j.state,
            JobState::Cancelled,
            "job {name} must be cancelled when a failed"
        );
        assert!(j.finished_at.is_some(), "job {name}: finished_at");
        assert!(j.last_error.is_some(), "job {name}: last_error says why");
    }
    for id in [other, free, free_dep] {
        assert_eq!(
            state(s, id),
            JobState::Queued,
            "job {id} does not depend on a and must stay queued"
        );
    }
    assert!(
        claim(s, w, &["default"], 10).is_empty(),
        "a cancelled dependent was claimed"
    );

    // Cancelling a queued job cascades the same way.
    let g = submit1(s, spec("default", "g"));
    let h = submit1(s, after(spec("default", "h"), &[g]));
    let i = submit1(s, after(spec("default", "i"), &[h]));
    assert_eq!(
        ok("cancel", s.cancel(&[g])),
        vec![CancelOutcome::Cancelled(g)]
    );
    assert_eq!(state(s, h), JobState::Cancelled);
    assert_eq!(state(s, i), JobState::Cancelled);
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 3);
}

/// `after` an unknown job is `NotFound`, and nothing from that batch is stored.
pub fn after_unknown_job_is_not_found_and_stores_nothing(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let existing = submit1(s, spec("default", "existing"));
    let missing = existing + 1_000_000;
    let batch = [
        spec("default", "ok-1"),
        after(spec("default", "bad"), &[existing, missing]),
        spec("default", "ok-2"),
    ];
    match s.submit(&batch) {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("submit after unknown job {missing}: expected NotFound, got {other:?}"),
    }
    assert_eq!(
        all_ids(s),
        vec![existing],
        "a refused batch must store nothing"
    );
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 1);
    let w = worker(s, "w");
    assert_eq!(ids_of(&claim(s, w, &["default"], 10)), vec![existing]);
    assert!(ok("get", s.get(missing)).is_none());
}

/// `after` a job that already failed or was cancelled is a `Conflict`: it could never run.
pub fn after_failed_or_cancelled_job_is_conflict(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let failed = submit1(s, spec("default", "failed"));
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Failed);
    assert_eq!(state(s, failed), JobState::Failed);
    let cancelled = submit1(s, spec("default", "cancelled"));
    ok("cancel", s.cancel(&[cancelled]));

    for dep in [failed, cancelled] {
        let batch = [
            spec("default", "fine"),
            after(spec("default", "doomed"), &[dep]),
        ];
        match s.submit(&batch) {
            Err(StoreError::Conflict(_)) => {}
            other => panic!(
                "submit after job {dep} ({}): expected Conflict, got {other:?}",
                state(s, dep)
            ),
        }
    }
    assert_eq!(
        all_ids(s),
        vec![cancelled, failed],
        "a refused batch must store nothing"
    );
}

/// A batch is stored in one go: results in input order, or nothing at all.
pub fn batch_submit_is_atomic(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    assert!(ok("submit", s.submit(&[])).is_empty());
    let specs: Vec<JobSpec> = (0..3).map(|i| spec("default", &format!("b{i}"))).collect();
    let got = ok("submit", s.submit(&specs));
    assert_eq!(got.len(), specs.len(), "one result per job: {got:?}");
    let ids: Vec<JobId> = got
        .iter()
        .map(|r| match r {
            Submitted::Created(id) => *id,
            other => panic!("a plain batch creates every job, got {other:?}"),
        })
        .collect();
    assert!(
        ids.windows(2).all(|p| p[0] < p[1]),
        "batch ids follow input order: {ids:?}"
    );
    for (id, sp) in ids.iter().zip(&specs) {
        assert_eq!(job(s, *id).spec.argv, sp.argv, "job {id} is not its spec");
    }

    // A duplicate inside a batch does not refuse the batch.
    let mut keyed = spec("default", "keyed");
    keyed.unique_key = Some("k".into());
    let k = submit1(s, keyed.clone());
    let mixed = ok(
        "submit",
        s.submit(&[spec("default", "m1"), keyed, spec("default", "m2")]),
    );
    match mixed[..] {
        [Submitted::Created(_), Submitted::Duplicate(dup), Submitted::Created(_)] if dup == k => {}
        ref other => panic!("[new, duplicate, new]: got {other:?}"),
    }
    let before = all_ids(s);

    // One refused job refuses the whole batch, wherever it is.
    let bad = after(spec("default", "bad"), &[i64::MAX - 7]);
    for batch in [
        vec![bad.clone(), spec("default", "x")],
        vec![spec("default", "x"), spec("default", "y"), bad],
    ] {
        assert!(
            s.submit(&batch).is_err(),
            "a batch with a bad job must fail"
        );
        assert_eq!(all_ids(s), before, "a refused batch stored something");
    }
    let next = submit1(s, spec("default", "next"));
    assert!(next > *before.iter().max().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Cancel and retry
// ---------------------------------------------------------------------------------------------

/// Cancelling a queued job cancels it at once; ended and unknown jobs say so.
pub fn cancel_queued_job(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let id = submit1(s, spec("default", "doomed"));
    let missing = id + 1000;
    assert_eq!(
        ok("cancel", s.cancel(&[id, missing])),
        vec![
            CancelOutcome::Cancelled(id),
            CancelOutcome::NotFound(missing)
        ]
    );
    let j = job(s, id);
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.finished_at, Some(s.now()));
    let w = worker(s, "w");
    assert!(
        claim(s, w, &["default"], 1).is_empty(),
        "a cancelled job was claimed"
    );
    assert_eq!(
        ok("cancel", s.cancel(&[id])),
        vec![CancelOutcome::AlreadyDone(id, JobState::Cancelled)]
    );

    let done = submit1(s, spec("default", "done"));
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Succeeded);
    assert_eq!(
        ok("cancel", s.cancel(&[done])),
        vec![CancelOutcome::AlreadyDone(done, JobState::Succeeded)]
    );
    assert_eq!(state(s, done), JobState::Succeeded);
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 0);
}

/// Cancelling a running job asks its worker (through `cancel_requests`); the attempt's end is
/// then recorded as cancelled, unless it had already succeeded.
pub fn cancel_running_job(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let (w1, w2) = (worker(s, "w1"), worker(s, "w2"));
    let id = submit1(s, with_retries(spec("default", "long"), 3, SEC));
    let c = claim_one(s, w1, &["default"]);
    submit1(s, spec("default", "bystander"));
    let c2 = claim_one(s, w2, &["default"]);

    assert_eq!(
        ok("cancel", s.cancel(&[id])),
        vec![CancelOutcome::Requested(id, Some(w1))]
    );
    let j = job(s, id);
    assert_eq!(
        (j.state, j.cancel_requested),
        (JobState::Running, true),
        "a running job keeps running until its worker stops it"
    );
    assert_eq!(
        ok("cancel_requests", s.cancel_requests(w1)),
        vec![(id, c.lease)]
    );
    assert!(ok("cancel_requests", s.cancel_requests(w2)).is_empty());
    assert_eq!(
        ok("cancel", s.cancel(&[id])),
        vec![CancelOutcome::Requested(id, Some(w1))],
        "asking twice is harmless"
    );

    assert_eq!(
        finish(s, w1, &c, Outcome::Failed),
        FinishOutcome::Done(JobState::Cancelled),
        "a requested cancel ends as cancelled, not as a retried failure"
    );
    let j = job(s, id);
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.failures, 0, "a cancel is not a failure");
    assert_eq!(outcomes(s, id), vec![Some(Outcome::Cancelled)]);
    assert!(ok("cancel_requests", s.cancel_requests(w1)).is_empty());
    assert_eq!(state(s, c2.id), JobState::Running);

    // A cancel that loses the race against a clean exit: the success stands.
    let raced = submit1(s, spec("default", "raced"));
    let c = claim_one(s, w1, &["default"]);
    assert_eq!(c.id, raced);
    ok("cancel", s.cancel(&[raced]));
    assert_eq!(
        finish(s, w1, &c, Outcome::Succeeded),
        FinishOutcome::Done(JobState::Succeeded)
    );
    assert_eq!(outcomes(s, raced), vec![Some(Outcome::Succeeded)]);
}

/// Retrying a failed or cancelled job queues it again now, with its failures reset (a fresh
/// retry budget); other jobs are left alone.
pub fn retry_requeues_with_a_fresh_budget(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let id = submit1(s, with_retries(spec("default", "flaky"), 1, 10 * SEC));
    let c = claim_one(s, w, &["default"]);
    let FinishOutcome::Requeued(at) = finish(s, w, &c, Outcome::Failed) else {
        panic!("the first failure with retries=1 requeues");
    };
    advance_to(&clock, s, at);
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Failed);
    assert_eq!((state(s, id), job(s, id).failures), (JobState::Failed, 2));

    clock.advance(60 * SEC);
    let missing = id + 1000;
    assert_eq!(
        ok("retry", s.retry(&[id, missing])),
        vec![RetryOutcome::Requeued(id), RetryOutcome::NotFound(missing)]
    );
    let j = job(s, id);
    assert_eq!((j.state, j.failures), (JobState::Queued, 0));
    assert_eq!(j.finished_at, None);
    assert!(j.run_at <= s.now(), "a retried job is due at once");
    assert!(ok("failed_ids", s.failed_ids(None)).is_empty());
    assert_eq!(
        ok("retry", s.retry(&[id])),
        vec![RetryOutcome::NotRetryable(id, JobState::Queued)]
    );

    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.attempt, 3, "attempt numbers keep counting after a retry");
    assert!(
        matches!(
            finish(s, w, &c, Outcome::Failed),
            FinishOutcome::Requeued(_)
        ),
        "after a retry the job has its retries again"
    );
    assert_eq!(job(s, id).failures, 1);
    assert_eq!(ok("attempts", s.attempts(id)).len(), 3);

    // Cancelled jobs can be retried; succeeded ones cannot.
    let x = submit1(s, spec("other", "x"));
    ok("cancel", s.cancel(&[x]));
    assert_eq!(ok("retry", s.retry(&[x])), vec![RetryOutcome::Requeued(x)]);
    let cx = claim_one(s, w, &["other"]);
    assert_eq!(cx.id, x);
    finish(s, w, &cx, Outcome::Succeeded);
    assert_eq!(
        ok("retry", s.retry(&[x])),
        vec![RetryOutcome::NotRetryable(x, JobState::Succeeded)]
    );

    // A retry never breaks "one queued-or-running job per unique key".
    let keyed = |tag: &str| {
        let mut sp = spec("keyed", tag);
        sp.unique_key = Some("k".into());
        sp
    };
    let old = submit1(s, keyed("old"));
    let c = claim_one(s, w, &["keyed"]);
    finish(s, w, &c, Outcome::Failed);
    let new = submit1(s, keyed("new"));
    assert_eq!(
        ok("retry", s.retry(&[old])),
        vec![RetryOutcome::Requeued(old)]
    );
    let holders: Vec<JobId> = ok("list", s.list(&ListFilter::default()))
        .into_iter()
        .filter(|j| !j.state.is_terminal() && j.spec.unique_key.as_deref() == Some("k"))
        .map(|j| j.id)
        .collect();
    assert_eq!(
        holders,
        vec![new],
        "after retrying {old}, only {new} may hold the unique key"
    );
    assert_eq!(
        ok("submit", s.submit(&[keyed("newest")])),
        vec![Submitted::Duplicate(new)]
    );
}

/// A dependent cancelled because its dependency failed runs once both were retried and the
/// dependency succeeded, in whichever order they were retried.
pub fn retried_dependent_runs_once_its_dependency_succeeds(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");

    for dependency_first in [true, false] {
        let q = if dependency_first {
            "dep-first"
        } else {
            "dep-last"
        };
        let a = submit1(s, spec(q, "a"));
        let b = submit1(s, after(spec(q, "b"), &[a]));
        let c = claim_one(s, w, &[q]);
        finish(s, w, &c, Outcome::Failed);
        assert_eq!(state(s, b), JobState::Cancelled);

        if dependency_first {
            ok("retry", s.retry(&[a]));
            let c = claim_one(s, w, &[q]);
            assert_eq!(c.id, a);
            finish(s, w, &c, Outcome::Succeeded);
            ok("retry", s.retry(&[b]));
        } else {
            ok("retry", s.retry(&[b]));
            assert!(
                claim(s, w, &[q], 1).is_empty(),
                "{b} was retried while {a} is still failed: it must wait"
            );
            ok("retry", s.retry(&[a]));
            let c = claim_one(s, w, &[q]);
            assert_eq!(c.id, a);
            finish(s, w, &c, Outcome::Succeeded);
        }
        let j = job(s, b);
        assert_eq!(
            (j.state, j.deps_pending),
            (JobState::Queued, 0),
            "retried {b} after its dependency {a} succeeded (dependency retried first: {dependency_first})"
        );
        assert_eq!(claim_one(s, w, &[q]).id, b);
    }
}

// ---------------------------------------------------------------------------------------------
// Rescue
// ---------------------------------------------------------------------------------------------

/// Rescuing a dead worker requeues its running jobs (attempt outcome `lost`), marks it dead, and
/// a second sweep changes nothing.
pub fn rescue_requeues_lost_jobs(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let (w1, w2) = (worker(s, "w1"), worker(s, "w2"));
    let j1 = submit1(s, spec("default", "j1"));
    let j2 = submit1(s, spec("default", "j2"));
    let j3 = submit1(s, spec("default", "j3"));
    let mine = claim(s, w1, &["default"], 2);
    assert_eq!(ids_of(&mine), vec![j1, j2]);
    let theirs = claim_one(s, w2, &["default"]);
    assert_eq!(theirs.id, j3);
    assert_eq!(ok("running_attempts", s.running_attempts(w1)).len(), 2);

    clock.advance(SEC);
    let mut rescued = ok(
        "rescue_worker",
        s.rescue_worker(w1, "pid 4242 is gone", RescueKind::Lost),
    );
    rescued.sort_by_key(|r| r.job_id);
    assert_eq!(
        rescued,
        vec![
            Rescued {
                job_id: j1,
                attempt: 1,
                new_state: JobState::Queued
            },
            Rescued {
                job_id: j2,
                attempt: 1,
                new_state: JobState::Queued
            },
        ]
    );
    for id in [j1, j2] {
        let j = job(s, id);
        assert_eq!(
            (j.state, j.rescues, j.failures),
            (JobState::Queued, 1, 0),
            "job {id} after its worker died"
        );
        assert!(j.run_at <= s.now(), "a rescued job is due at once");
        let attempts = ok("attempts", s.attempts(id));
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Some(Outcome::Lost));
        assert_eq!(attempts[0].ended_at, Some(s.now()));
    }
    assert_eq!(
        (state(s, j3), job(s, j3).worker_id),
        (JobState::Running, Some(w2)),
        "another worker's job must not be touched"
    );
    let dead = worker_record(s, w1);
    assert_eq!(dead.state, WorkerState::Dead);
    assert_eq!(dead.stopped_at, Some(s.now()));
    assert_eq!(dead.stop_reason.as_deref(), Some("pid 4242 is gone"));
    assert_eq!(dead.running_jobs, 0);
    let live: Vec<WorkerId> = ok("workers", s.workers(false))
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(live, vec![w2], "workers(false) must leave out the dead one");
    assert!(ok("running_attempts", s.running_attempts(w1)).is_empty());

    clock.advance(SEC);
    assert!(
        ok(
            "rescue_worker",
            s.rescue_worker(w1, "again", RescueKind::Lost)
        )
        .is_empty(),
        "a second rescue of the same worker must find nothing"
    );
    let still = worker_record(s, w1);
    assert_eq!(
        still, dead,
        "a second rescue changed the dead worker's record"
    );
    assert_eq!(job(s, j1).rescues, 1, "a second rescue counted again");

    let again = claim(s, w2, &["default"], 5);
    assert_eq!(ids_of(&again), vec![j1, j2]);
    assert!(again.iter().all(|c| c.attempt == 2));

    // A job whose cancel was requested ends cancelled when its worker dies.
    ok("cancel", s.cancel(&[j3]));
    let mut rescued = ok(
        "rescue_worker",
        s.rescue_worker(w2, "pid gone", RescueKind::Lost),
    );
    rescued.sort_by_key(|r| r.job_id);
    assert_eq!(
        rescued
            .iter()
            .map(|r| (r.job_id, r.new_state))
            .collect::<Vec<_>>(),
        vec![
            (j1, JobState::Queued),
            (j2, JobState::Queued),
            (j3, JobState::Cancelled)
        ]
    );
    assert_eq!(state(s, j3), JobState::Cancelled);
}

/// A job lost more than `max_rescues` times fails instead of looping forever, and its dependents
/// are cancelled.
pub fn rescue_fails_job_after_max_rescues(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let mut poison = spec("default", "poison");
    poison.max_rescues = 2;
    let id = submit1(s, poison);
    let dependent = submit1(s, after(spec("default", "dependent"), &[id]));

    for round in 1..=2u32 {
        let w = worker(s, &format!("victim-{round}"));
        let c = claim_one(s, w, &["default"]);
        assert_eq!((c.id, c.attempt), (id, round));
        assert_eq!(
            ok(
                "rescue_worker",
                s.rescue_worker(w, "killed", RescueKind::Lost)
            ),
            vec![Rescued {
                job_id: id,
                attempt: round,
                new_state: JobState::Queued
            }],
            "rescue {round} of max_rescues=2 requeues"
        );
        let j = job(s, id);
        assert_eq!(
            (j.state, j.rescues, j.failures),
            (JobState::Queued, round, 0)
        );
    }
    let w = worker(s, "victim-3");
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.attempt, 3);
    assert_eq!(
        ok(
            "rescue_worker",
            s.rescue_worker(w, "killed", RescueKind::Lost)
        ),
        vec![Rescued {
            job_id: id,
            attempt: 3,
            new_state: JobState::Failed
        }],
        "after max_rescues=2 rescues the next loss fails the job"
    );
    let j = job(s, id);
    assert_eq!(j.state, JobState::Failed);
    assert!(j.finished_at.is_some());
    assert!(j.last_error.is_some(), "the failure says why");
    assert_eq!(state(s, dependent), JobState::Cancelled);
    assert_eq!(
        outcomes(s, id),
        vec![Some(Outcome::Lost); 3],
        "each loss is recorded as a lost attempt"
    );

    // max_rescues = 0: the first loss fails the job.
    let mut fragile = spec("default", "fragile");
    fragile.max_rescues = 0;
    let f = submit1(s, fragile);
    let w = worker(s, "victim-4");
    claim_one(s, w, &["default"]);
    assert_eq!(
        ok(
            "rescue_worker",
            s.rescue_worker(w, "killed", RescueKind::Lost)
        ),
        vec![Rescued {
            job_id: f,
            attempt: 1,
            new_state: JobState::Failed
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Per-queue counts of every state, and the mean duration of succeeded jobs.
pub fn queue_stats_counts(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    assert!(ok("queue_stats", s.queue_stats()).is_empty());

    let fast = submit1(s, spec("alpha", "fast"));
    let slow = submit1(s, spec("alpha", "slow"));
    let bad = submit1(s, spec("alpha", "bad"));
    let running = submit1(s, spec("alpha", "running"));
    let claimed = claim(s, w, &["alpha"], 4);
    assert_eq!(claimed.len(), 4);
    let of = |id: JobId| claimed.iter().find(|c| c.id == id).unwrap();
    clock.advance(2 * SEC);
    finish(s, w, of(fast), Outcome::Succeeded);
    clock.advance(2 * SEC);
    finish(s, w, of(slow), Outcome::Succeeded);
    finish(s, w, of(bad), Outcome::Failed);

    submit1(s, spec("alpha", "ready"));
    submit1(s, after(spec("alpha", "waiting"), &[running]));
    let mut later = spec("alpha", "scheduled");
    later.run_at = Some(s.now().plus(3600 * SEC));
    submit1(s, later);
    let gone = submit1(s, spec("alpha", "cancelled"));
    ok("cancel", s.cancel(&[gone]));
    submit1(s, spec("beta", "b"));

    let stats = ok("queue_stats", s.queue_stats());
    assert_eq!(stats.len(), 2, "one row per queue: {stats:?}");
    let find = |name: &str| {
        stats
            .iter()
            .find(|q| q.queue == name)
            .unwrap_or_else(|| panic!("queue_stats has no row for {name}: {stats:?}"))
    };
    let alpha = find("alpha");
    assert_eq!(
        (
            alpha.queued,
            alpha.scheduled,
            alpha.running,
            alpha.succeeded,
            alpha.failed,
            alpha.cancelled,
            alpha.paused
        ),
        (2, 1, 1, 2, 1, 1, false),
        "alpha: (queued incl. waiting, scheduled, running, succeeded, failed, cancelled, paused)"
    );
    match alpha.mean_duration_ms {
        Some(m) if (m - 3000.0).abs() < 1e-6 => {}
        other => panic!("alpha: mean of 2 s and 4 s should be 3000 ms, got {other:?}"),
    }
    let beta = find("beta");
    assert_eq!(
        beta,
        &QueueStats {
            queue: "beta".into(),
            queued: 1,
            ..Default::default()
        }
    );
    assert_eq!(ok("count_unfinished", s.count_unfinished(Some("alpha"))), 4);
    assert_eq!(ok("count_unfinished", s.count_unfinished(Some("beta"))), 1);
    assert_eq!(ok("count_unfinished", s.count_unfinished(None)), 5);

    // A scheduled job counts as queued once it is due.
    clock.advance(3600 * SEC);
    let alpha = ok("queue_stats", s.queue_stats())
        .into_iter()
        .find(|q| q.queue == "alpha")
        .unwrap();
    assert_eq!((alpha.queued, alpha.scheduled), (3, 0));
}

/// `list` filters by state, queue, labels, ids and scheduling, newest first, up to a limit.
pub fn list_filters(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let labelled = |queue: &str, tag: &str, pairs: &[(&str, &str)]| {
        let mut sp = spec(queue, tag);
        for (k, v) in pairs {
            sp.labels.insert(k.to_string(), v.to_string());
        }
        sp
    };
    let j1 = submit1(s, labelled("default", "j1", &[("team", "infra")]));
    let j2 = submit1(
        s,
        labelled("default", "j2", &[("team", "web"), ("env", "prod")]),
    );
    let j3 = submit1(
        s,
        labelled("other", "j3", &[("team", "infra"), ("env", "prod")]),
    );
    let mut sp4 = spec("default", "j4");
    sp4.run_at = Some(s.now().plus(3600 * SEC));
    let j4 = submit1(s, sp4);
    let j5 = submit1(s, labelled("other", "j5", &[("team", "web")]));
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.id, j1);
    finish(s, w, &c, Outcome::Succeeded);
    ok("cancel", s.cancel(&[j5]));

    let check = |what: &str, f: ListFilter, want: Vec<JobId>| {
        assert_eq!(list_ids(s, &f), want, "list {what} ({f:?})");
    };
    check(
        "everything, newest first",
        ListFilter::default(),
        vec![j5, j4, j3, j2, j1],
    );
    check(
        "queued",
        ListFilter {
            states: vec![JobState::Queued],
            ..Default::default()
        },
        vec![j4, j3, j2],
    );
    check(
        "succeeded or cancelled",
        ListFilter {
            states: vec![JobState::Succeeded, JobState::Cancelled],
            ..Default::default()
        },
        vec![j5, j1],
    );
    check(
        "in queue other",
        ListFilter {
            queue: Some("other".into()),
            ..Default::default()
        },
        vec![j5, j3],
    );
    check(
        "team=infra",
        ListFilter {
            labels: labels(&[("team", "infra")]),
            ..Default::default()
        },
        vec![j3, j1],
    );
    check(
        "team=infra and env=prod",
        ListFilter {
            labels: labels(&[("team", "infra"), ("env", "prod")]),
            ..Default::default()
        },
        vec![j3],
    );
    check(
        "team=nobody",
        ListFilter {
            labels: labels(&[("team", "nobody")]),
            ..Default::default()
        },
        vec![],
    );
    check(
        "by ids",
        ListFilter {
            ids: vec![j1, j3],
            ..Default::default()
        },
        vec![j3, j1],
    );
    check(
        "limit 2",
        ListFilter {
            limit: 2,
            ..Default::default()
        },
        vec![j5, j4],
    );
    check(
        "queued in default",
        ListFilter {
            states: vec![JobState::Queued],
            queue: Some("default".into()),
            ..Default::default()
        },
        vec![j4, j2],
    );
    check(
        "scheduled",
        ListFilter {
            scheduled_only: true,
            ..Default::default()
        },
        vec![j4],
    );
    check(
        "team=web in default, limit 1",
        ListFilter {
            queue: Some("default".into()),
            labels: labels(&[("team", "web")]),
            limit: 1,
            ..Default::default()
        },
        vec![j2],
    );
    check(
        "in an unknown queue",
        ListFilter {
            queue: Some("nope".into()),
            ..Default::default()
        },
        vec![],
    );
}

/// `waiting_only` lists the queued jobs whose dependency has not succeeded yet, and only them:
/// not ready, scheduled or running ones; a job leaves the list once its dependency succeeds.
pub fn list_waiting_only(factory: &Factory) {
    let s = &*factory(ManualClock::new(T0));
    let w = worker(s, "w");
    let dep = submit1(s, spec("default", "dep"));
    let waiting = submit1(s, after(spec("default", "waiting"), &[dep]));
    let mut later = spec("default", "later");
    later.run_at = Some(T0.plus(Duration::from_secs(3600)));
    let later = submit1(s, later);
    let other = submit1(s, after(spec("other", "waiting elsewhere"), &[dep]));
    let waiting_in = |queue: Option<&str>| {
        list_ids(
            s,
            &ListFilter {
                waiting_only: true,
                queue: queue.map(str::to_string),
                ..Default::default()
            },
        )
    };
    assert_eq!(waiting_in(None), vec![other, waiting], "every waiting job");
    assert_eq!(
        waiting_in(Some("default")),
        vec![waiting],
        "waiting in default"
    );
    let both = ListFilter {
        states: vec![JobState::Queued],
        waiting_only: true,
        ..Default::default()
    };
    assert_eq!(
        list_ids(s, &both),
        vec![other, waiting],
        "with states [queued]"
    );
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.id, dep, "the dependency runs first");
    assert_eq!(
        waiting_in(None),
        vec![other, waiting],
        "a running dependency"
    );
    finish(s, w, &c, Outcome::Succeeded);
    assert_eq!(waiting_in(None), Vec::<JobId>::new(), "released by success");
    assert_eq!(
        state(s, later),
        JobState::Queued,
        "the scheduled job never showed"
    );
}

/// The worker registry: registration, heartbeats, stop, live/ended listing and job counters.
pub fn workers_registry(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let reg = registration("alpha");
    let w1 = ok("register_worker", s.register_worker(&reg));
    clock.advance(SEC);
    let w2 = worker(s, "beta");
    assert_ne!(w1, w2);

    let live = ok("workers", s.workers(false));
    assert_eq!(worker_ids(&live), sorted(vec![w1, w2]));
    let r1 = live.iter().find(|r| r.id == w1).unwrap();
    assert_eq!(
        (
            r1.name.as_str(),
            r1.host.as_str(),
            r1.boot_id.as_str(),
            r1.pid,
            r1.pid_start_time
        ),
        (
            reg.name.as_str(),
            reg.host.as_str(),
            reg.boot_id.as_str(),
            reg.pid,
            reg.pid_start_time
        )
    );
    assert_eq!((&r1.queues, r1.slots), (&reg.queues, reg.slots));
    assert_eq!(r1.version, reg.version);
    assert_eq!(r1.state, WorkerState::Starting);
    assert_eq!((r1.started_at, r1.heartbeat_at), (T0, T0));
    assert_eq!((r1.stopped_at, r1.stop_reason.as_deref()), (None, None));
    assert_eq!((r1.running_jobs, r1.jobs_done, r1.jobs_failed), (0, 0, 0));

    clock.advance(5 * SEC);
    ok("heartbeat", s.heartbeat(w1, WorkerState::Running));
    let r1 = worker_record(s, w1);
    assert_eq!(r1.state, WorkerState::Running);
    assert_eq!(r1.heartbeat_at, s.now());
    assert_eq!(r1.started_at, T0, "a heartbeat must not move started_at");

    let ids: Vec<JobId> = (0..3)
        .map(|i| submit1(s, spec("default", &format!("j{i}"))))
        .collect();
    let claimed = claim(s, w1, &["default"], 3);
    assert_eq!(ids_of(&claimed), ids);
    assert_eq!(worker_record(s, w1).running_jobs, 3);
    assert_eq!(worker_record(s, w2).running_jobs, 0);
    ok(
        "record_spawn",
        s.record_spawn(&[SpawnRecord {
            job_id: claimed[0].id,
            lease: claimed[0].lease,
            pid: 5000,
            pgid: 5000,
            pid_start_time: 12,
            log_path: "/logs/x.log".into(),
        }]),
    );
    let running = ok("running_attempts", s.running_attempts(w1));
    assert_eq!(running.len(), 3);
    let spawned = running
        .iter()
        .find(|a| a.job_id == claimed[0].id)
        .expect("running_attempts lists the spawned job");
    assert_eq!((spawned.pid, spawned.attempt), (Some(5000), 1));
    assert_eq!(spawned.worker_id, Some(w1));
    assert_eq!(spawned.worker_name.as_deref(), Some("alpha"));
    assert!(running
        .iter()
        .all(|a| a.outcome.is_none() && a.ended_at.is_none()));
    assert!(ok("running_attempts", s.running_attempts(w2)).is_empty());

    finish(s, w1, &claimed[0], Outcome::Succeeded);
    finish(s, w1, &claimed[1], Outcome::Failed);
    let r1 = worker_record(s, w1);
    assert_eq!(
        (r1.running_jobs, r1.jobs_done, r1.jobs_failed),
        (1, 1, 1),
        "worker {w1}: (running, done, failed)"
    );
    assert_eq!(ok("running_attempts", s.running_attempts(w1)).len(), 1);

    ok("heartbeat", s.heartbeat(w2, WorkerState::Paused));
    assert_eq!(worker_record(s, w2).state, WorkerState::Paused);
    clock.advance(SEC);
    ok("worker_stopped", s.worker_stopped(w2, "drained"));
    let live: Vec<WorkerId> = ok("workers", s.workers(false))
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        live,
        vec![w1],
        "workers(false) must leave out stopped workers"
    );
    let r2 = worker_record(s, w2);
    assert_eq!(r2.state, WorkerState::Stopped);
    assert_eq!(r2.stopped_at, Some(s.now()));
    assert_eq!(r2.stop_reason.as_deref(), Some("drained"));
    assert_eq!(
        worker_ids(&ok("workers", s.workers(true))),
        sorted(vec![w1, w2])
    );

    ok("heartbeat", s.heartbeat(w2, WorkerState::Running));
    assert_eq!(
        worker_record(s, w2).state,
        WorkerState::Stopped,
        "a late heartbeat must not bring a stopped worker back"
    );
}

/// A worker killed after its stop timeout gives its jobs back as `interrupted`: no rescue or
/// failure is counted, and the worker ends `stopped`, not dead.
pub fn interrupted_rescue_costs_the_job_nothing(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let mut sp = spec("default", "j");
    sp.max_rescues = 0;
    let j = submit1(s, sp);
    claim_one(s, w, &["default"]);
    clock.advance(SEC);
    let rescued = ok(
        "rescue_worker",
        s.rescue_worker(w, "killed by worker stop", RescueKind::Interrupted),
    );
    assert_eq!(
        rescued,
        vec![Rescued {
            job_id: j,
            attempt: 1,
            new_state: JobState::Queued
        }],
        "an interrupted job goes back to the queue even with max_rescues = 0"
    );
    let jb = job(s, j);
    assert_eq!(
        (jb.state, jb.rescues, jb.failures),
        (JobState::Queued, 0, 0)
    );
    let attempts = ok("attempts", s.attempts(j));
    assert_eq!(attempts[0].outcome, Some(Outcome::Interrupted));
    let rec = worker_record(s, w);
    assert_eq!(rec.state, WorkerState::Stopped);
    assert_eq!(rec.stop_reason.as_deref(), Some("killed by worker stop"));
    assert!(
        ok(
            "rescue_worker",
            s.rescue_worker(w, "again", RescueKind::Lost)
        )
        .is_empty(),
        "a second rescue must find nothing"
    );
    assert_eq!(worker_record(s, w).state, WorkerState::Stopped);
}

/// A crash-looping mark sticks to an ended worker; pruning removes only ended rows older than
/// the cut-off, and never a row that still has running jobs.
pub fn crash_looping_and_pruning(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let old_stopped = worker(s, "old-stopped");
    let old_dead = worker(s, "old-dead");
    let looping = worker(s, "looping");
    let live = worker(s, "live");
    ok("worker_stopped", s.worker_stopped(old_stopped, "drained"));
    ok(
        "rescue_worker",
        s.rescue_worker(old_dead, "gone", RescueKind::Lost),
    );
    ok(
        "rescue_worker",
        s.rescue_worker(looping, "gone", RescueKind::Lost),
    );
    ok(
        "mark_crash_looping",
        s.mark_crash_looping(looping, "3 restarts in 1h"),
    );
    let rec = worker_record(s, looping);
    assert_eq!(rec.state, WorkerState::CrashLooping);
    assert_eq!(rec.stop_reason.as_deref(), Some("3 restarts in 1h"));
    assert!(!rec.state.is_live());
    assert_eq!(
        rec.settings.as_deref(),
        Some("{\"name\":\"looping\"}"),
        "settings round-trip"
    );
    ok("heartbeat", s.heartbeat(looping, WorkerState::Running));
    assert_eq!(
        worker_record(s, looping).state,
        WorkerState::CrashLooping,
        "a late heartbeat must not revive a crash-looping worker"
    );

    clock.advance(3600 * SEC);
    let recent = worker(s, "recent");
    ok("worker_stopped", s.worker_stopped(recent, "drained"));
    let cut = s.now();
    let pruned = ok("prune_workers", s.prune_workers(cut));
    assert_eq!(pruned, 3, "three rows ended before the cut-off");
    assert_eq!(
        worker_ids(&ok("workers", s.workers(true))),
        sorted(vec![live, recent])
    );
    assert_eq!(ok("prune_workers", s.prune_workers(cut)), 0);
}

/// Pause flags belong to a worker name on a host, outlive its registrations, and default to off.
pub fn worker_pause_flags(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    assert!(!ok("worker_paused", s.worker_paused("h1", "a")));
    ok("set_worker_paused", s.set_worker_paused("h1", "a", true));
    assert!(ok("worker_paused", s.worker_paused("h1", "a")));
    assert!(
        !ok("worker_paused", s.worker_paused("h2", "a")),
        "other host"
    );
    assert!(
        !ok("worker_paused", s.worker_paused("h1", "b")),
        "other name"
    );
    ok("set_worker_paused", s.set_worker_paused("h1", "a", true));
    assert!(
        ok("worker_paused", s.worker_paused("h1", "a")),
        "idempotent"
    );
    ok("set_worker_paused", s.set_worker_paused("h1", "a", false));
    assert!(!ok("worker_paused", s.worker_paused("h1", "a")));
}

/// `running_jobs` lists every running attempt with its lease and limits; `worker_outcomes`
/// counts one worker's recent attempt outcomes.
pub fn running_jobs_and_worker_outcomes(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let (w1, w2) = (worker(s, "w1"), worker(s, "w2"));
    let mut sp = spec("default", "limited");
    sp.timeout = Some(Duration::from_secs(90));
    sp.kill_grace = Duration::from_secs(7);
    let limited = submit1(s, sp);
    let plain = submit1(s, spec("default", "plain"));
    let c1 = claim_one(s, w1, &["default"]);
    clock.advance(SEC);
    let c2 = claim_one(s, w2, &["default"]);
    let mut running = ok("running_jobs", s.running_jobs());
    running.sort_by_key(|r| r.job_id);
    assert_eq!(
        running,
        vec![
            RunningJob {
                job_id: limited,
                attempt: 1,
                lease: c1.lease,
                worker_id: Some(w1),
                started_at: T0,
                timeout: Some(Duration::from_secs(90)),
                kill_grace: Duration::from_secs(7),
            },
            RunningJob {
                job_id: plain,
                attempt: 1,
                lease: c2.lease,
                worker_id: Some(w2),
                started_at: T0.plus(SEC),
                timeout: None,
                kill_grace: JobSpec::new("q", vec!["x".into()]).kill_grace,
            },
        ]
    );
    let since = s.now();
    finish(s, w1, &c1, Outcome::Succeeded);
    finish(s, w2, &c2, Outcome::Failed);
    for (tag, outcome) in [("a", Outcome::Timeout), ("b", Outcome::Cancelled)] {
        submit1(s, spec("default", tag));
        let c = claim_one(s, w1, &["default"]);
        finish(s, w1, &c, outcome);
    }
    assert_eq!(
        ok("worker_outcomes", s.worker_outcomes(w1, since)),
        OutcomeCounts {
            succeeded: 1,
            failed: 1,
            other: 1
        }
    );
    assert_eq!(
        ok("worker_outcomes", s.worker_outcomes(w2, since)),
        OutcomeCounts {
            succeeded: 0,
            failed: 1,
            other: 0
        }
    );
    clock.advance(SEC);
    assert_eq!(
        ok("worker_outcomes", s.worker_outcomes(w1, s.now())),
        OutcomeCounts::default(),
        "outcomes before `since` are left out"
    );
    assert!(ok("running_jobs", s.running_jobs()).is_empty());
}

/// `jobs_with_unique_keys` finds the newest queued, running or succeeded job per key and
/// ignores failed and cancelled ones.
pub fn unique_keys_seen_for_batch_runs(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let keyed = |tag: &str, key: &str| {
        let mut sp = spec("default", tag);
        sp.unique_key = Some(key.to_string());
        sp
    };
    let done = submit1(s, keyed("a", "k-done"));
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Succeeded);
    let failed = submit1(s, keyed("b", "k-failed"));
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Failed);
    let queued = submit1(s, keyed("c", "k-queued"));
    let again = submit1(s, keyed("d", "k-done"));
    let keys: Vec<String> = ["k-done", "k-failed", "k-queued", "k-none"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let mut got = ok("jobs_with_unique_keys", s.jobs_with_unique_keys(&keys));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("k-done".to_string(), again, JobState::Queued),
            ("k-queued".to_string(), queued, JobState::Queued),
        ],
        "the newest job per key; failed {failed} and succeeded {done} are older or excluded"
    );
}

/// A job's container settings come back from `get` and from a claim.
pub fn container_spec_round_trips(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let w = worker(s, "w");
    let mut sp = spec("default", "c");
    sp.container = Some(workq_core::Container {
        runtime: "podman".into(),
        image: "example/tool:1.0".into(),
        user: Some("1000:1000".into()),
        args: vec!["--gpus".into(), "all".into()],
    });
    let id = submit1(s, sp.clone());
    assert_eq!(job(s, id).spec.container, sp.container);
    assert_eq!(claim_one(s, w, &["default"]).spec.container, sp.container);
    let plain = submit1(s, spec("default", "plain"));
    assert_eq!(job(s, plain).spec.container, None);
}

/// Purge deletes only finished jobs of the given states that ended before the cut-off, at most
/// `limit` per call, with their attempts, returning their log files; the rest is untouched.
pub fn purge_removes_old_finished_jobs_in_batches(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let mut old = Vec::new();
    for (i, outcome) in [Outcome::Succeeded, Outcome::Succeeded, Outcome::Failed]
        .into_iter()
        .enumerate()
    {
        let id = submit1(s, spec("default", &format!("old{i}")));
        let c = claim_one(s, w, &["default"]);
        ok(
            "record_spawn",
            s.record_spawn(&[SpawnRecord {
                job_id: c.id,
                lease: c.lease,
                pid: 1,
                pgid: 1,
                pid_start_time: 1,
                log_path: format!("/logs/{id}.1.log"),
            }]),
        );
        finish(s, w, &c, outcome);
        old.push(id);
    }
    let dependent = submit1(s, after(spec("default", "dep"), &[old[0]]));
    clock.advance(3600 * SEC);
    let recent = submit1(s, spec("default", "recent"));
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.id, dependent, "the dependent of a succeeded job runs");
    finish(s, w, &c, Outcome::Succeeded);
    let c = claim_one(s, w, &["default"]);
    finish(s, w, &c, Outcome::Succeeded);
    let queued = submit1(s, spec("default", "queued"));
    let cut = T0.plus(60 * SEC);

    let only_failed = ok("purge", s.purge(cut, &[JobState::Failed], 10));
    assert_eq!(only_failed.jobs, 1);
    assert_eq!(
        only_failed.log_files,
        vec![format!("/logs/{}.1.log", old[2])]
    );
    assert!(ok("get", s.get(old[2])).is_none());
    let first = ok(
        "purge",
        s.purge(cut, &[JobState::Succeeded, JobState::Queued], 1),
    );
    assert_eq!(
        first.jobs, 1,
        "at most `limit` per call, and never an unfinished state"
    );
    let second = ok("purge", s.purge(cut, &[JobState::Succeeded], 10));
    assert_eq!(second.jobs, 1);
    assert_eq!(
        ok("purge", s.purge(cut, &[JobState::Succeeded], 10)).jobs,
        0
    );
    for id in &old {
        assert!(ok("get", s.get(*id)).is_none(), "job {id} should be purged");
        assert!(ok("attempts", s.attempts(*id)).is_empty());
    }
    for id in [dependent, recent, queued] {
        assert!(
            ok("get", s.get(id)).is_some(),
            "job {id} is newer or unfinished"
        );
    }
}

/// `step` does what record_spawn, finish and claim do, in one go; a stale result in it does not
/// stop the rest.
pub fn step_records_finishes_and_claims_at_once(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let a = submit1(s, spec("default", "a"));
    let b = submit1(s, spec("default", "b"));
    let c = submit1(s, spec("default", "c"));
    let (none, first) = ok("step", s.step(w, &[], &[], &queues(&["default"]), 1));
    assert!(none.is_empty());
    assert_eq!(ids_of(&first), vec![a]);
    let ca = &first[0];
    let spawn = SpawnRecord {
        job_id: a,
        lease: ca.lease,
        pid: 77,
        pgid: 77,
        pid_start_time: 5,
        log_path: "/logs/a.log".into(),
    };
    let done = FinishRequest {
        job_id: a,
        lease: ca.lease,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        error: None,
    };
    let stale = FinishRequest {
        job_id: b,
        lease: 12345,
        outcome: Outcome::Failed,
        exit_code: Some(1),
        signal: None,
        error: None,
    };
    clock.advance(SEC);
    let (outcomes, claimed) = ok(
        "step",
        s.step(w, &[spawn], &[done, stale], &queues(&["default"]), 2),
    );
    assert_eq!(
        outcomes,
        vec![
            FinishOutcome::Done(JobState::Succeeded),
            FinishOutcome::Stale
        ]
    );
    assert_eq!(ids_of(&claimed), vec![b, c]);
    let attempts = ok("attempts", s.attempts(a));
    assert_eq!(
        attempts[0].pid,
        Some(77),
        "the spawn was recorded before the finish"
    );
    assert_eq!(attempts[0].outcome, Some(Outcome::Succeeded));
    assert_eq!(worker_record(s, w).jobs_done, 1);
    assert_eq!(state(s, b), JobState::Running);
}

/// The store id is stable and non-empty; the diagnosis reports a healthy schema.
pub fn store_id_and_diagnosis(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let id = ok("store_id", s.store_id());
    assert!(id.len() >= 8, "store id {id:?} is too short to be unique");
    assert_eq!(ok("store_id", s.store_id()), id);
    let other = factory(ManualClock::new(T0));
    assert_ne!(
        ok("store_id", other.store_id()),
        id,
        "two stores must not share an id"
    );
    let d = ok("diagnose", s.diagnose());
    assert_eq!(d.integrity, "ok");
    assert!(d.schema_version >= 1);
    assert_eq!(
        d.schema_version, d.latest_schema,
        "opening migrates to the latest"
    );
    // A server (PostgreSQL) reports itself and its sessions, this one among them.
    if let Some(server) = &d.server {
        assert!(!server.is_empty());
        let (sessions, max) = d.connections.expect("sessions with a server");
        assert!(sessions >= 1 && max >= sessions, "{sessions} of {max}");
        assert!(d.clock_skew_ms.is_some());
    }
    assert!(!d.backend.is_empty() && !d.location.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Two handles
// ---------------------------------------------------------------------------------------------

/// `changed()` notices writes made through another handle on the same store, once.
pub fn changed_after_another_handle_writes(pair: &PairFactory) {
    let (a, b) = pair(ManualClock::new(T0));
    let (a, b) = (&*a, &*b);
    ok("changed", a.changed());
    ok("changed", b.changed());
    assert!(
        !ok("changed", a.changed()),
        "changed() with no write since the previous call"
    );

    let id = submit1(b, spec("default", "from b"));
    assert!(
        ok("changed", a.changed()),
        "changed() must notice a submit through another handle"
    );
    assert!(
        !ok("changed", a.changed()),
        "changed() reports a write once"
    );
    assert_eq!(
        job(a, id).spec.argv,
        vec!["echo".to_string(), "from b".to_string()],
        "both handles must see one store"
    );

    let w = worker(a, "w");
    let c = claim_one(a, w, &["default"]);
    ok("changed", b.changed());
    finish(a, w, &c, Outcome::Succeeded);
    assert!(
        ok("changed", b.changed()),
        "changed() must notice a finish through another handle"
    );
    assert_eq!(state(b, id), JobState::Succeeded);
}

// ---------------------------------------------------------------------------------------------
// The event log, metrics and throughput (`workq serve`)
// ---------------------------------------------------------------------------------------------

/// Every event after `after`, as (kind, job, state); ids must grow.
fn events_since(s: &dyn Store, after: i64) -> Vec<(String, Option<JobId>, Option<String>)> {
    let got = ok("events_after", s.events_after(after, 10_000));
    for pair in got.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "events_after must return ids in increasing order: {got:?}"
        );
    }
    assert!(
        got.iter().all(|e| e.id > after),
        "events_after({after}) returned an id at or below it: {got:?}"
    );
    got.into_iter()
        .map(|e| (e.kind, e.job_id, e.state))
        .collect()
}

/// (kind, job, state) as the event log should hold it.
fn ev(kind: &str, job: JobId, state: &str) -> (String, Option<JobId>, Option<String>) {
    (kind.to_string(), Some(job), Some(state.to_string()))
}

/// Each job state change appends one event naming the job's new state: submit, claim
/// (`started`, with the worker), success (and a dependent `released`), failure requeued or
/// final (its dependents `cancelled`), cancel of a queued and of a running job, retry and
/// rescue; worker events carry the worker's new state.
pub fn event_log_records_each_state_change(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    assert_eq!(ok("last_event_id", s.last_event_id()), 0);
    assert!(ok("events_after", s.events_after(0, 10)).is_empty());
    let w = worker(s, "w");
    let start = ok("last_event_id", s.last_event_id());
    let reg = ok("events_after", s.events_after(0, 10));
    assert_eq!(reg.len(), 1, "registering writes worker_started: {reg:?}");
    assert_eq!(
        (
            reg[0].kind.as_str(),
            reg[0].worker_id,
            reg[0].state.as_deref()
        ),
        ("worker_started", Some(w), Some("starting"))
    );
    assert_eq!(reg[0].id, start);

    let a = submit1(s, spec("default", "a"));
    let b = submit1(s, after(spec("default", "b"), &[a]));
    let flaky = submit1(s, with_retries(spec("default", "flaky"), 1, SEC));
    let c = submit1(s, after(spec("default", "c"), &[flaky]));
    let d = submit1(s, after(spec("default", "d"), &[c]));
    assert_eq!(
        events_since(s, start),
        vec![
            ev("submitted", a, "queued"),
            ev("submitted", b, "queued"),
            ev("submitted", flaky, "queued"),
            ev("submitted", c, "queued"),
            ev("submitted", d, "queued"),
        ]
    );
    let mark = ok("last_event_id", s.last_event_id());

    let got = claim(s, w, &["default"], 2);
    assert_eq!(ids_of(&got), vec![a, flaky]);
    let started = ok("events_after", s.events_after(mark, 100));
    assert_eq!(
        started.len(),
        2,
        "one started event per claimed job: {started:?}"
    );
    for e in &started {
        assert_eq!(
            (e.kind.as_str(), e.worker_id, e.state.as_deref(), e.at),
            ("started", Some(w), Some("running"), T0),
        );
    }
    assert_eq!(
        sorted(started.iter().filter_map(|e| e.job_id).collect()),
        vec![a, flaky]
    );
    let mark = ok("last_event_id", s.last_event_id());
    let of = |id: JobId| got.iter().find(|c| c.id == id).unwrap();
    finish(s, w, of(a), Outcome::Succeeded);
    finish(s, w, of(flaky), Outcome::Failed);
    assert_eq!(
        events_since(s, mark),
        vec![
            ev("released", b, "queued"),
            ev("succeeded", a, "succeeded"),
            ev("requeued", flaky, "queued"),
        ],
        "success releases the dependent, then records itself; a failure with budget left is \
         requeued"
    );
    clock.advance(10 * SEC);
    let again = claim(s, w, &["default"], 2);
    assert_eq!(ids_of(&again), vec![b, flaky]);
    let of = |id: JobId| again.iter().find(|c| c.id == id).unwrap();
    let mid = ok("last_event_id", s.last_event_id());
    finish(s, w, of(flaky), Outcome::Failed);
    assert_eq!(
        events_since(s, mid),
        vec![
            ev("cancelled", c, "cancelled"),
            ev("cancelled", d, "cancelled"),
            ev("failed", flaky, "failed"),
        ],
        "a final failure cancels its dependents transitively, one event each"
    );
    // 3 events of the first finishes, 2 started, 3 of the final failure.
    let two = ok("events_after", s.events_after(mark, 2));
    assert_eq!(two.len(), 2, "limit is honoured");
    assert_eq!(
        ok("events_after", s.events_after(two[1].id, 100)).len(),
        6,
        "paging from the last id read continues where it left off"
    );

    let mark = ok("last_event_id", s.last_event_id());
    ok("cancel", s.cancel(&[b]));
    finish(s, w, of(b), Outcome::Cancelled);
    ok("retry", s.retry(&[b]));
    let queued = submit1(s, spec("default", "queued"));
    ok("cancel", s.cancel(&[queued]));
    assert_eq!(
        events_since(s, mark),
        vec![
            ev("cancel_requested", b, "running"),
            ev("cancelled", b, "cancelled"),
            ev("retried", b, "queued"),
            ev("submitted", queued, "queued"),
            ev("cancelled", queued, "cancelled"),
        ]
    );

    let mark = ok("last_event_id", s.last_event_id());
    let c = claim_one(s, w, &["default"]);
    assert_eq!(c.id, b);
    ok(
        "rescue_worker",
        s.rescue_worker(w, "gone", RescueKind::Lost),
    );
    let tail = ok("events_after", s.events_after(mark, 100));
    let rows: Vec<_> = tail
        .iter()
        .map(|e| (e.kind.as_str(), e.job_id, e.worker_id, e.state.as_deref()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("started", Some(b), Some(w), Some("running")),
            ("rescued", Some(b), Some(w), Some("queued")),
            ("worker_dead", None, Some(w), Some("dead")),
        ]
    );
    assert_eq!(
        ok("last_event_id", s.last_event_id()),
        tail.last().map_or(0, |e| e.id)
    );
    assert!(
        ok("events_after", s.events_after(0, 0)).is_empty(),
        "limit 0 reads nothing"
    );
}

/// `record_event` appends one row in its own transaction and returns its id; its state is the
/// kind when that names a job state, else none.
pub fn record_event_appends_an_audit_row(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let id = submit1(s, spec("default", "x"));
    let before = ok("last_event_id", s.last_event_id());
    let api = ok(
        "record_event",
        s.record_event("api", Some(id), None, r#"{"action":"cancel"}"#),
    );
    assert!(api > before, "a new id above every earlier one");
    assert_eq!(ok("last_event_id", s.last_event_id()), api);
    let got = ok("events_after", s.events_after(before, 10));
    assert_eq!(
        got,
        vec![StoredEvent {
            id: api,
            at: T0,
            kind: "api".into(),
            job_id: Some(id),
            worker_id: None,
            state: None,
            detail: Some(r#"{"action":"cancel"}"#.into()),
        }]
    );
    let other = ok(
        "record_event",
        s.record_event("cancelled", Some(id), Some(7), "{}"),
    );
    assert!(other > api);
    let got = ok("events_after", s.events_after(api, 10));
    assert_eq!(
        (got[0].state.as_deref(), got[0].worker_id),
        (Some("cancelled"), Some(7))
    );
}

/// A histogram as (the bounds where its cumulative count steps up, with the count there;
/// count; sum in ms), after checking its shape.
fn hist_shape(h: &crate::StoredHistogram) -> (Vec<(f64, u64)>, u64, i64) {
    assert_eq!(
        h.buckets.len(),
        crate::HISTOGRAM_BOUNDS_SECS.len(),
        "one cumulative count per bound"
    );
    for pair in h.buckets.windows(2) {
        assert!(
            pair[0] <= pair[1],
            "buckets are cumulative: {:?}",
            h.buckets
        );
    }
    let mut steps = Vec::new();
    let mut prev = 0;
    for (bound, n) in crate::HISTOGRAM_BOUNDS_SECS.iter().zip(&h.buckets) {
        if *n != prev {
            steps.push((*bound, *n));
            prev = *n;
        }
    }
    (steps, h.count, (h.sum_secs * 1000.0).round() as i64)
}

/// `queue_metrics` reports per queue the attempts ended by outcome (which purging does not
/// lower), histograms of attempt durations and of claim waits, and the oldest `run_at` among
/// jobs ready now (not waiting on a dependency, not scheduled later, whatever their priority).
pub fn queue_metrics_from_tallies(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    assert!(ok("queue_metrics", s.queue_metrics()).is_empty());

    let quick = submit1(s, spec("alpha", "quick"));
    let slow = submit1(s, spec("alpha", "slow"));
    let bad = submit1(s, spec("alpha", "bad"));
    clock.advance(2 * SEC); // each waits 2 s for its claim
    let got = claim(s, w, &["alpha"], 3);
    assert_eq!(got.len(), 3);
    let of = |id: JobId| got.iter().find(|c| c.id == id).unwrap();
    clock.advance(Duration::from_millis(40));
    finish(s, w, of(quick), Outcome::Succeeded); // ran 40 ms
    finish(s, w, of(bad), Outcome::Timeout); // ran 40 ms
    clock.advance(Duration::from_millis(4960));
    finish(s, w, of(slow), Outcome::Succeeded); // ran 5 s

    // Ready: priorities 0 and 5, the oldest by run_at at priority 0. A job waiting on a
    // dependency (due since T0) and a scheduled one never count.
    let t_ready = s.now();
    submit1(s, spec("alpha", "ready-0"));
    clock.advance(SEC);
    let mut urgent = spec("alpha", "ready-5");
    urgent.priority = 5;
    submit1(s, urgent);
    let mut later = spec("alpha", "scheduled");
    later.run_at = Some(s.now().plus(3600 * SEC));
    let blocker = submit1(s, later);
    let mut waiting = after(spec("alpha", "waiting"), &[blocker]);
    waiting.run_at = Some(T0);
    submit1(s, waiting);
    submit1(s, spec("beta", "b"));

    let m = ok("queue_metrics", s.queue_metrics());
    assert_eq!(
        m.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(),
        vec!["alpha", "beta"]
    );
    let alpha = &m[0];
    assert_eq!(
        alpha.attempts,
        vec![("succeeded".to_string(), 2), ("timeout".to_string(), 1)]
    );
    assert_eq!(
        hist_shape(&alpha.duration),
        (vec![(0.05, 2), (5.0, 3)], 3, 40 + 40 + 5000)
    );
    assert_eq!(hist_shape(&alpha.wait), (vec![(2.5, 3)], 3, 3 * 2000));
    assert_eq!(alpha.oldest_ready_at, Some(t_ready));
    let beta = &m[1];
    assert!(beta.attempts.is_empty());
    assert_eq!(hist_shape(&beta.duration), (vec![], 0, 0));
    assert_eq!(beta.oldest_ready_at, Some(s.now()));

    // Purging the finished jobs leaves the tallies alone.
    clock.advance(3600 * SEC);
    let purged = ok(
        "purge",
        s.purge(
            s.now(),
            &[JobState::Succeeded, JobState::Failed, JobState::Cancelled],
            100,
        ),
    );
    assert_eq!(purged.jobs, 3);
    let again = ok("queue_metrics", s.queue_metrics());
    assert_eq!(again[0].attempts, alpha.attempts);
    assert_eq!(again[0].duration, alpha.duration);
    assert_eq!(again[0].wait, alpha.wait);
}

/// `throughput` counts jobs that ended since `since` per queue and time bucket (a multiple of
/// its width), succeeded apart from failed or cancelled, oldest bucket first.
pub fn throughput_buckets_finished_jobs(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let minute = 60 * SEC;
    let run = |queue: &str, outcome: Outcome| {
        submit1(s, spec(queue, "x"));
        let c = claim_one(s, w, &[queue]);
        finish(s, w, &c, outcome);
    };
    run("alpha", Outcome::Succeeded); // before `since`: not counted
    clock.advance(minute);
    let since = s.now();
    run("alpha", Outcome::Succeeded);
    run("alpha", Outcome::Failed);
    run("beta", Outcome::Succeeded);
    let gone = submit1(s, spec("alpha", "cancelled"));
    ok("cancel", s.cancel(&[gone]));
    clock.advance(minute);
    run("alpha", Outcome::Succeeded);
    submit1(s, spec("alpha", "still queued"));

    let width = minute.as_millis() as i64;
    let b0 = Timestamp(since.0 / width * width);
    let b1 = Timestamp(b0.0 + width);
    let point = |queue: &str, at: Timestamp, succeeded: u64, failed: u64| ThroughputPoint {
        queue: queue.into(),
        at,
        succeeded,
        failed,
    };
    assert_eq!(
        ok("throughput", s.throughput(since, minute)),
        vec![
            point("alpha", b0, 1, 2),
            point("beta", b0, 1, 0),
            point("alpha", b1, 1, 0),
        ]
    );
    assert!(ok("throughput", s.throughput(s.now().plus(SEC), minute)).is_empty());
}

/// `list` pages newest first below a cursor (`before`), and finds jobs by a piece of their
/// stored command line, or by id when the text is a number.
pub fn list_before_and_command_contains(factory: &Factory) {
    let s = factory(ManualClock::new(T0));
    let s = &*s;
    let ids: Vec<JobId> = (0..5)
        .map(|i| submit1(s, spec("default", &format!("job-{i}"))))
        .collect();
    let page = |before: Option<JobId>| {
        list_ids(
            s,
            &ListFilter {
                before,
                limit: 2,
                ..Default::default()
            },
        )
    };
    assert_eq!(page(None), vec![ids[4], ids[3]]);
    assert_eq!(page(Some(ids[3])), vec![ids[2], ids[1]]);
    assert_eq!(page(Some(ids[1])), vec![ids[0]]);
    assert!(page(Some(ids[0])).is_empty());

    let find = |text: &str| {
        list_ids(
            s,
            &ListFilter {
                command_contains: Some(text.to_string()),
                ..Default::default()
            },
        )
    };
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(find("job-3"), vec![ids[3]]);
    assert_eq!(find("job-"), newest_first);
    assert!(find("JOB-3").is_empty(), "case-sensitive");
    assert!(find("nothing").is_empty());
    assert!(find("%").is_empty(), "no wildcards");
    let by_id = find(&ids[2].to_string());
    assert!(
        by_id.contains(&ids[2]),
        "digits match the job id: {by_id:?}"
    );
    let mut digits = spec("default", "x");
    digits.argv = vec!["sleep".into(), "987654".into()];
    let sleeper = submit1(s, digits);
    assert_eq!(
        find("987654"),
        vec![sleeper],
        "digits also match the command text"
    );
    assert_eq!(
        list_ids(
            s,
            &ListFilter {
                command_contains: Some("job-".into()),
                before: Some(ids[2]),
                ..Default::default()
            },
        ),
        vec![ids[1], ids[0]]
    );
}

/// A heartbeat that changes a worker's state appends one `worker_state` event with the new
/// state, one that changes nothing appends none; a purge keeps the newest event, so an id is
/// never handed out twice and a reader resuming from an id misses nothing; the commit horizon,
/// where a backend has one, is ordered.
pub fn heartbeat_state_changes_and_purges_keep_the_log_resumable(factory: &Factory) {
    let clock = ManualClock::new(T0);
    let s = factory(clock.clone());
    let s = &*s;
    let w = worker(s, "w");
    let mark = ok("last_event_id", s.last_event_id());
    ok("heartbeat", s.heartbeat(w, WorkerState::Running));
    ok("heartbeat", s.heartbeat(w, WorkerState::Running));
    ok("heartbeat", s.heartbeat(w, WorkerState::Paused));
    let got: Vec<(String, Option<WorkerId>, Option<String>)> =
        ok("events_after", s.events_after(mark, 100))
            .into_iter()
            .map(|e| (e.kind, e.worker_id, e.state))
            .collect();
    assert_eq!(
        got,
        vec![
            (
                "worker_state".to_string(),
                Some(w),
                Some("running".to_string())
            ),
            (
                "worker_state".to_string(),
                Some(w),
                Some("paused".to_string())
            ),
        ]
    );
    let newest = ok("record_event", s.record_event("api", None, None, "{}"));
    clock.advance(Duration::from_secs(30 * 86_400));
    ok(
        "purge",
        s.purge(
            s.now(),
            &[JobState::Succeeded, JobState::Failed, JobState::Cancelled],
            1000,
        ),
    );
    assert_eq!(ok("last_event_id", s.last_event_id()), newest);
    let next = ok("record_event", s.record_event("api", None, None, "{}"));
    assert!(
        next > newest,
        "an event id came back after a purge: {next} <= {newest}"
    );
    if let Some((xmin, xmax)) = ok("commit_horizon", s.commit_horizon()) {
        assert!(xmin <= xmax, "{xmin} > {xmax}");
    }
}
