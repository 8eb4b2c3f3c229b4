//! `GET /api/v1/events`: Server-Sent Events from the store's event log.
//!
//! One pump thread per server follows the log: it sleeps on the store's change signal (NOTIFY
//! on PostgreSQL; on SQLite `PRAGMA data_version`, a counter read every 20 ms, never a table
//! scan), reads the rows committed since the last one it saw (`Store::events_after`) and
//! broadcasts them. Each client first replays from the store what it missed (its
//! `Last-Event-ID`), then follows the broadcast; a client that falls behind the broadcast
//! re-reads from the store, so nothing still in the store is skipped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast;
use workq_store::StoredEvent;

use super::{ApiError, Pool, Shared};

/// Rows read from the store per query.
const PAGE: u32 = 1000;
/// Events a slow client may fall behind before it re-reads from the store.
const BUFFER: usize = 4096;
/// Between `data_version` reads where the store has no change channel (SQLite).
const POLL: Duration = Duration::from_millis(20);
/// The longest a missing event id holds back the ones after it, whatever the commit horizon
/// says (a safety net; see `Pump::gap_settled`).
const GAP_GIVE_UP: Duration = Duration::from_secs(30);

/// A missing id in the event log (see `Pump::gap_settled`).
struct Gap {
    /// The writers' `xmax` when it was first seen.
    mark: i64,
    /// Every transaction that could fill it had ended at the last look.
    ended: bool,
    /// When it was first seen.
    since: Instant,
}

/// One event as sent: the log row's id, the SSE event name and its JSON data.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The event log id (the SSE `id:`).
    pub id: i64,
    /// `job`, `worker` or `audit`.
    pub name: &'static str,
    /// The JSON data line.
    pub data: String,
}

impl Sent {
    /// The SSE form of a log row: `job` events carry the job id and its new state, `worker`
    /// events the worker id and its new state, `audit` events an administrative action.
    pub fn of(e: &StoredEvent) -> Sent {
        let at = e.at.to_rfc3339();
        let worker_kind = e.kind.starts_with("worker_");
        let (name, data) = match (e.job_id, &e.state) {
            // Rows without a state (`stale`, `api`) changed no job.
            (Some(job), Some(state)) if !worker_kind => (
                "job",
                json!({"id": job, "state": state, "kind": e.kind, "worker_id": e.worker_id, "at": at}),
            ),
            _ if worker_kind => (
                "worker",
                json!({"id": e.worker_id,
                       "state": e.state.clone().unwrap_or_else(|| worker_state_of(&e.kind).into()),
                       "kind": e.kind, "detail": e.detail, "at": at}),
            ),
            _ => (
                "audit",
                json!({"kind": e.kind, "job_id": e.job_id, "worker_id": e.worker_id, "detail": e.detail, "at": at}),
            ),
        };
        Sent {
            id: e.id,
            name,
            data: data.to_string(),
        }
    }
}

/// A worker's state after an event of `kind`.
fn worker_state_of(kind: &str) -> &'static str {
    match kind {
        "worker_started" => "starting",
        "worker_resumed" => "running",
        "worker_paused" => "paused",
        "worker_dead" => "dead",
        "worker_crash_looping" => "crash-looping",
        _ => "stopped",
    }
}

/// The server's event fan-out.
pub struct Hub {
    tx: broadcast::Sender<Arc<Sent>>,
    /// Set at shutdown: every open stream ends.
    closing: tokio::sync::watch::Sender<bool>,
    latest: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Hub {
    /// Starts the pump thread over `pool`'s store.
    pub fn start(pool: Arc<Pool>) -> Hub {
        let (tx, _) = broadcast::channel(BUFFER);
        let latest = Arc::new(AtomicI64::new(-1));
        let stop = Arc::new(AtomicBool::new(false));
        let pump = Pump {
            pool,
            tx: tx.clone(),
            latest: latest.clone(),
            stop: stop.clone(),
        };
        if let Err(e) = std::thread::Builder::new()
            .name("workq-events".into())
            .spawn(move || pump.run())
        {
            // Clients still get what is in the store when they connect, just not live.
            eprintln!(
                "workq serve: cannot start the event thread ({e}); /api/v1/events will not be live"
            );
        }
        let (closing, _) = tokio::sync::watch::channel(false);
        Hub {
            tx,
            closing,
            latest,
            stop,
        }
    }

    /// Stops the pump (at its next wake-up) and ends every open stream, for shutdown.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.closing.send_replace(true);
    }

    /// A receiver that changes when the server shuts down (streams end on it).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// The thread that follows the store's event log.
struct Pump {
    pool: Arc<Pool>,
    tx: broadcast::Sender<Arc<Sent>>,
    latest: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Pump {
    fn run(self) {
        let mut last: Option<i64> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let client = match self.pool.open() {
                Ok(c) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            // Ends (to reopen) when the store fails; `last` carries over, so nothing is lost.
            self.follow(&client, &mut last);
        }
    }

    /// Whether the gap in `gap` (created here when new) may be skipped: `Some(true)` once the
    /// rows after it were re-read after every transaction that could fill it had ended;
    /// `None` when the store failed.
    fn gap_settled(&self, store: &dyn workq_store::Store, gap: &mut Option<Gap>) -> Option<bool> {
        let horizon = store.commit_horizon().ok()?;
        let Some((xmin, xmax)) = horizon else {
            // Ids become visible in order here: a gap is a deleted row.
            return Some(true);
        };
        let g = gap.get_or_insert(Gap {
            mark: xmax,
            ended: false,
            since: Instant::now(),
        });
        if g.ended || g.since.elapsed() > GAP_GIVE_UP {
            // Seen ended before this re-read, and the id is still missing: rolled back.
            return Some(true);
        }
        g.ended = xmin >= g.mark;
        Some(false)
    }

    fn follow(&self, client: &workq::Client, last: &mut Option<i64>) {
        let store = client.store();
        let signal = Arc::new((Mutex::new(false), Condvar::new()));
        let on_change = {
            let signal = signal.clone();
            Box::new(move || {
                let (flag, cv) = &*signal;
                if let Ok(mut f) = flag.lock() {
                    *f = true;
                }
                cv.notify_all();
            })
        };
        let subscription = store.subscribe_events(on_change);
        let mut from: i64 = match *last {
            Some(l) => l,
            None => match store.last_event_id() {
                Ok(id) => id,
                Err(_) => return,
            },
        };
        *last = Some(from);
        self.latest.store(from, Ordering::Relaxed);
        let _ = store.changed();
        // A missing id above `from`: when it was first seen, and the writers' horizon then.
        let mut gap: Option<Gap> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let rows = match store.events_after(from, PAGE) {
                Ok(rows) => rows,
                Err(_) => return,
            };
            let mut held = false;
            for r in &rows {
                // Ids are handed out in order but, on PostgreSQL, committed in any order: a
                // missing id may belong to a transaction still running. Events go out in id
                // order, so one resuming from an id misses none: the later ones wait until
                // every transaction that could have taken the missing id has ended (the
                // store's commit horizon) and a re-read still lacks it (rolled back).
                if r.id > from + 1 {
                    match self.gap_settled(store, &mut gap) {
                        Some(true) => {}
                        Some(false) => {
                            held = true;
                            break;
                        }
                        None => return,
                    }
                }
                gap = None;
                from = r.id;
                // Published before it is sent, so a client that subscribes in between and
                // replays up to `latest` gets it from the store.
                self.latest.store(from, Ordering::Release);
                // No receivers is fine: nobody is listening right now.
                let _ = self.tx.send(Arc::new(Sent::of(r)));
            }
            *last = Some(from);
            if held {
                std::thread::sleep(POLL);
                continue;
            }
            if rows.len() == PAGE as usize {
                continue;
            }
            if subscription.is_some() {
                let (flag, cv) = &*signal;
                let Ok(mut f) = flag.lock() else { return };
                if !*f {
                    // A safety net under NOTIFY: a missed one costs at most this long.
                    f = match cv.wait_timeout(f, Duration::from_millis(500)) {
                        Ok((f, _)) => f,
                        Err(_) => return,
                    };
                }
                *f = false;
            } else {
                loop {
                    std::thread::sleep(POLL);
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match store.changed() {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// Per-client stream state.
struct Client {
    rx: broadcast::Receiver<Arc<Sent>>,
    closing: tokio::sync::watch::Receiver<bool>,
    latest: Arc<AtomicI64>,
    queue: VecDeque<Arc<Sent>>,
    last: i64,
    replay: bool,
    pool: Arc<Pool>,
}

/// `GET /api/v1/events[?since=ID]`: the event stream. `Last-Event-ID` (or `since`) resumes after
/// that event; without either, the stream starts with what happens next.
pub async fn stream(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = s.events.tx.subscribe();
    let since = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
        .map(str::to_string);
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(since);
    let (last, replay) = match resume {
        Some(text) => {
            let id = text.trim().parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID: {text:?} is not an event id"))
            })?;
            (id, true)
        }
        None => {
            let latest = s.events.latest.load(Ordering::Relaxed);
            if latest >= 0 {
                (latest, false)
            } else {
                // The pump has not read the log yet: ask the store where it ends.
                let id = s.pool.run(|c| Ok(c.store().last_event_id()?)).await?;
                (id, true)
            }
        }
    };
    let state = Client {
        rx,
        closing: s.events.closing(),
        latest: s.events.latest.clone(),
        queue: VecDeque::new(),
        last,
        replay,
        pool: s.pool.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut c| async move {
        loop {
            if let Some(ev) = c.queue.pop_front() {
                if ev.id <= c.last {
                    continue;
                }
                c.last = ev.id;
                let e = Event::default()
                    .id(ev.id.to_string())
                    .event(ev.name)
                    .data(ev.data.clone());
                return Some((Ok(e), c));
            }
            if c.replay {
                c.replay = false;
                let after = c.last;
                // Only up to what the pump has sent: past it, an id may still be missing.
                let upto = c.latest.load(Ordering::Acquire);
                match c
                    .pool
                    .run(move |cl| Ok(cl.store().events_after(after, PAGE)?))
                    .await
                {
                    Ok(rows) => {
                        // Another page only if this one was full and all of it was sendable.
                        c.replay = rows.len() == PAGE as usize
                            && rows.last().is_some_and(|r| upto < 0 || r.id <= upto);
                        c.queue.extend(
                            rows.iter()
                                .filter(|r| upto < 0 || r.id <= upto)
                                .map(|r| Arc::new(Sent::of(r))),
                        );
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        c.replay = true;
                    }
                }
                continue;
            }
            if *c.closing.borrow() {
                return None;
            }
            tokio::select! {
                got = c.rx.recv() => match got {
                    Ok(ev) => c.queue.push_back(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => c.replay = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = c.closing.changed() => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
