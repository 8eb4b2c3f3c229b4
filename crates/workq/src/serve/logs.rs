//! `GET /api/v1/jobs/{id}/log[?attempt=N][&follow=1]`: a job's output as text; with `follow`,
//! streamed as it is written until the attempt ends.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use workq_core::JobId;

use super::api::job_id;
use super::{ApiError, Pool, Shared};

/// Bytes read and sent at a time.
const CHUNK: usize = 64 * 1024;

/// Between reads of a followed log (and checks whether its attempt has ended).
const FOLLOW_TICK: Duration = Duration::from_millis(100);

/// Where attempt `attempt` of job `id` writes, and whether it has ended.
struct Target {
    path: PathBuf,
    ended: bool,
}

/// What a log request finds of job `id`.
enum Found {
    /// The job has not started; `ended` once it never will (cancelled while queued).
    NotStarted { ended: bool },
    /// Attempt number and where it writes.
    Attempt(u32, Target),
}

/// The log file and state of attempt `attempt` (0: the latest) of job `id`.
fn target(client: &workq::Client, id: JobId, attempt: u32) -> Result<Found, ApiError> {
    let job = client.get(id)?;
    let n = if attempt == 0 { job.attempt } else { attempt };
    if n == 0 {
        return Ok(Found::NotStarted {
            ended: job.state.is_terminal(),
        });
    }
    if n > job.attempt {
        return Err(ApiError::not_found(format!(
            "job {id} has no attempt {n} (it has had {})",
            job.attempt
        )));
    }
    let attempts = client.store().attempts(id)?;
    let a = attempts.iter().find(|a| a.attempt == n);
    let path = a
        .and_then(|a| a.log_path.clone())
        .map(PathBuf::from)
        .unwrap_or_else(|| workq_runtime::spawn::log_path(&client.log_dir(), id, n));
    let ended = a.is_none_or(|a| a.ended_at.is_some());
    Ok(Found::Attempt(n, Target { path, ended }))
}

/// The handler.
pub async fn job_log(
    State(s): State<Shared>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let mut attempt = 0u32;
    let mut follow = false;
    for kv in q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "attempt" => {
                attempt = v.parse().map_err(|_| {
                    ApiError::bad_request(format!("attempt: {v:?} is not an attempt number"))
                })?;
            }
            "follow" => follow = matches!(v, "" | "1" | "true"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use attempt or follow"
                )))
            }
        }
    }
    let found = s.pool.run(move |c| target(c, id, attempt)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let pool = s.pool.clone();
    std::thread::Builder::new()
        .name("workq-log".into())
        .spawn(move || match (follow, found) {
            (true, found) => follow_log(&pool, id, attempt, found, &tx),
            (false, Found::Attempt(_, t)) => {
                let mut offset = 0;
                while let Some(chunk) = read_from(&t.path, &mut offset) {
                    if tx.blocking_send(chunk).is_err() {
                        return;
                    }
                }
            }
            (false, Found::NotStarted { .. }) => {}
        })
        .map_err(|e| {
            ApiError::from(crate::error::CliError::unavailable(format!(
                "cannot read the log: {e}"
            )))
        })?;
    let closing = s.events.closing();
    let stream = futures_util::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        if *closing.borrow() {
            return None;
        }
        tokio::select! {
            chunk = rx.recv() => chunk.map(|c| (Ok::<_, std::io::Error>(c), (rx, closing))),
            // The server is shutting down: the reading thread ends at its next send.
            _ = closing.changed() => None,
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Sends what the attempt writes until it ends (or the client goes away); a job that has not
/// started yet is waited for, and one that ends without starting ends the stream. `found`:
/// what the request saw.
fn follow_log(
    pool: &Arc<Pool>,
    id: JobId,
    attempt: u32,
    found: Found,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let mut offset = 0u64;
    let mut want = match &found {
        Found::Attempt(n, _) => *n,
        Found::NotStarted { .. } => attempt,
    };
    let mut failures = 0;
    loop {
        let t = match pool.with(|c| target(c, id, want)) {
            Ok(t) => {
                failures = 0;
                t
            }
            // A store blip is ridden out; a job that went away (purged) ends the stream.
            Err(e) if e.is_unavailable() && failures < 50 => {
                failures += 1;
                std::thread::sleep(FOLLOW_TICK * 2);
                continue;
            }
            Err(_) => return,
        };
        let t = match t {
            Found::NotStarted { ended: true } => return,
            Found::NotStarted { ended: false } => {
                if tx.is_closed() {
                    return;
                }
                std::thread::sleep(FOLLOW_TICK);
                continue;
            }
            Found::Attempt(n, t) => {
                want = n;
                t
            }
        };
        while let Some(bytes) = read_from(&t.path, &mut offset) {
            if tx.blocking_send(bytes).is_err() {
                return;
            }
        }
        if t.ended {
            // What was written between the last read and the end.
            while let Some(bytes) = read_from(&t.path, &mut offset) {
                if tx.blocking_send(bytes).is_err() {
                    return;
                }
            }
            return;
        }
        if tx.is_closed() {
            return;
        }
        std::thread::sleep(FOLLOW_TICK);
    }
}

/// Up to [`CHUNK`] bytes of `path` from `offset` on (moving it), if there are any: a log of
/// any size goes out in pieces, never whole in memory.
fn read_from(path: &std::path::Path, offset: &mut u64) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(*offset)).ok()?;
    let mut buf = Vec::with_capacity(CHUNK);
    f.take(CHUNK as u64).read_to_end(&mut buf).ok()?;
    if buf.is_empty() {
        return None;
    }
    *offset += buf.len() as u64;
    Some(buf)
}
