//! The `/api/v1` handlers: each reads or changes the store through the library and answers
//! with the document the CLI prints for `--json` (`crate::views`, `crate::render::json`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use workq::{JobSpec, Submitted};
use workq_core::{parse_duration, JobId, Timestamp};
use workq_store::ThroughputPoint;

use super::{ApiError, Shared};
use crate::render;
use crate::views::{self, Selection};

/// Jobs per page when `limit` is not given, and the most one page may hold.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// A JSON request body whose every failure is a JSON error: 400 naming the field, 413 over
/// the size limit, 415 for another content type.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }
}

/// The pairs of a query string, in order (a key may repeat, as `label=` does).
fn query_pairs(q: &Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    match q {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("query string: {e}"))),
    }
}

/// A NUL in a value cannot be stored (PostgreSQL refuses it in text): a 400 naming the field.
fn no_nul(field: &str, v: &str) -> Result<(), ApiError> {
    if v.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field}: contains a NUL character"
        )));
    }
    Ok(())
}

fn parse_field<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("{name}: {v:?} is not valid")))
}

fn label(name: &str, v: &str) -> Result<(String, String), ApiError> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => Err(ApiError::bad_request(format!(
            "{name}: {v:?} is not KEY=VALUE"
        ))),
    }
}

/// `GET /api/v1/status`: as `workq status --json`.
pub async fn status(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let v = s
        .pool
        .run(|c| views::status(c.store()).map_err(ApiError::from))
        .await?;
    Ok(Json(v))
}

/// `GET /api/v1/jobs?state=&queue=&label=K=V&q=&limit=&before=`: a page of jobs, newest first,
/// as `workq list --json`, with the cursor of the next page.
pub async fn list_jobs(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut filter = workq::ListFilter {
        limit: DEFAULT_PAGE,
        ..workq::ListFilter::default()
    };
    let mut states = Vec::new();
    for (k, v) in query_pairs(&q)? {
        no_nul(&k, &v)?;
        match k.as_str() {
            "state" => states.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
            "queue" if !v.is_empty() => filter.queue = Some(v),
            "label" => filter.labels.push(label("label", &v)?),
            "q" if !v.trim().is_empty() => filter.command_contains = Some(v.trim().to_string()),
            "limit" => filter.limit = parse_field::<u32>("limit", &v)?.clamp(1, MAX_PAGE),
            "before" if !v.is_empty() => filter.before = Some(parse_field("before", &v)?),
            "queue" | "q" | "before" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use state, queue, label, q, limit or before"
                )))
            }
        }
    }
    for st in &states {
        let parsed: workq_core::JobState = st.parse().map_err(ApiError::bad_request)?;
        if states.len() == 1 {
            filter.scheduled_only = st == "scheduled";
            filter.waiting_only = st == "waiting";
        }
        if !filter.states.contains(&parsed) {
            filter.states.push(parsed);
        }
    }
    let page = filter.limit;
    filter.limit = page + 1;
    let jobs = s
        .pool
        .run(move |c| c.list(&filter).map_err(ApiError::from))
        .await?;
    let now = Timestamp::now();
    let more = jobs.len() > page as usize;
    let shown = &jobs[..jobs.len().min(page as usize)];
    let next = if more {
        shown.last().map(|j| j.id)
    } else {
        None
    };
    Ok(Json(jobs_page(shown, next, now)))
}

/// A page of `GET /api/v1/jobs`: the jobs, and the `before` cursor of the next page if any.
pub fn jobs_page(jobs: &[workq::Job], next: Option<JobId>, now: Timestamp) -> Value {
    let arr: Vec<Value> = jobs.iter().map(|j| render::json::job(j, now)).collect();
    json!({"jobs": arr, "next": next})
}

/// `GET /api/v1/jobs/{id}`: as `workq show ID --json`.
pub async fn show_job(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let v = s
        .pool
        .run(move |c| views::job_detail(c, id).map_err(ApiError::from))
        .await?;
    Ok(Json(v))
}

/// A job id from a path segment.
pub fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse::<JobId>()
        .map_err(|_| ApiError::bad_request(format!("job id {text:?} is not a number")))
}

/// `GET /api/v1/workers[?all=1]`: as `workq workers list --json [--all]`.
pub async fn workers(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let all = query_pairs(&q)?
        .iter()
        .any(|(k, v)| k == "all" && matches!(v.as_str(), "1" | "true" | ""));
    let v = s
        .pool
        .run(move |c| views::workers(c.store(), all, views::HUNG_AFTER).map_err(ApiError::from))
        .await?;
    Ok(Json(v))
}

/// The longest duration accepted in seconds (about 10,000 years).
const MAX_SECS: f64 = 3.2e11;

/// A duration given as text (`"10s"`, `"1h30m"`) or as a number of seconds.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum Dur {
    Secs(f64),
    Text(String),
}

impl Dur {
    fn get(&self, field: &str) -> Result<Duration, ApiError> {
        match self {
            // Ten thousand years is no limit anyone means; beyond it the stores' milliseconds
            // would overflow.
            Dur::Secs(n) if n.is_finite() && (0.0..=MAX_SECS).contains(n) => {
                Duration::try_from_secs_f64(*n)
                    .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
            }
            Dur::Secs(n) => Err(ApiError::bad_request(format!(
                "{field}: {n} is not a duration"
            ))),
            Dur::Text(t) => {
                parse_duration(t).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
            }
        }
    }
}

/// The body of `POST /api/v1/jobs`: what `workq submit` takes as flags. (Serialize and
/// Default only let the OpenAPI tests list its fields.)
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    command: Option<Vec<String>>,
    shell: Option<String>,
    queue: Option<String>,
    priority: Option<i32>,
    retries: Option<u32>,
    backoff: Option<Dur>,
    timeout: Option<Dur>,
    kill_grace: Option<Dur>,
    delay: Option<Dur>,
    at: Option<String>,
    #[serde(default)]
    after: Vec<JobId>,
    unique: Option<String>,
    idempotency_key: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
}

/// The job a submit body describes, over the queue's config defaults as `workq submit` does.
fn spec_of(s: &Shared, b: SubmitBody) -> Result<JobSpec, ApiError> {
    for w in b.command.iter().flatten() {
        no_nul("command", w)?;
    }
    let single = [
        ("shell", &b.shell),
        ("queue", &b.queue),
        ("at", &b.at),
        ("unique", &b.unique),
        ("idempotency_key", &b.idempotency_key),
        ("cwd", &b.cwd),
    ];
    for (field, v) in single {
        if let Some(v) = v {
            no_nul(field, v)?;
        }
    }
    for (field, map) in [("labels", &b.labels), ("env", &b.env)] {
        for (k, v) in map {
            no_nul(field, k)?;
            no_nul(field, v)?;
        }
    }
    let argv =
        match (b.command, b.shell) {
            (Some(c), None) if !c.is_empty() && !c[0].is_empty() => c,
            (None, Some(sh)) if !sh.trim().is_empty() => vec!["sh".into(), "-c".into(), sh],
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "command and shell: give one of them, not both",
                ))
            }
            (Some(_), None) => return Err(ApiError::bad_request("command: the command is empty")),
            (None, Some(_)) => return Err(ApiError::bad_request("shell: the command is empty")),
            (None, None) => return Err(ApiError::bad_request(
                "command: missing; give \"command\": [\"prog\", \"arg\"] or \"shell\": \"a | b\"",
            )),
        };
    let queue = b.queue.unwrap_or_else(|| "default".into());
    if queue.trim().is_empty() {
        return Err(ApiError::bad_request("queue: the queue name is empty"));
    }
    let mut spec = JobSpec::new(queue.clone(), argv);
    crate::config::apply_job_defaults(&s.ctx.config, &queue, &mut spec);
    spec.container = crate::container::container_for(&s.ctx, &queue)?;
    if let Some(p) = b.priority {
        spec.priority = p;
    }
    if let Some(r) = b.retries {
        spec.retries = r;
    }
    if let Some(d) = &b.backoff {
        spec.backoff = d.get("backoff")?;
    }
    if let Some(d) = &b.kill_grace {
        spec.kill_grace = d.get("kill_grace")?;
    }
    if let Some(d) = &b.timeout {
        let t = d.get("timeout")?;
        if t.is_zero() {
            return Err(ApiError::bad_request(
                "timeout: 0 would stop the job at once; leave it out for no limit",
            ));
        }
        spec.timeout = Some(t);
    }
    if let Some(d) = &b.delay {
        spec.run_at = Some(Timestamp::now().plus(d.get("delay")?));
    }
    if let Some(at) = &b.at {
        spec.run_at =
            Some(Timestamp::parse_at(at).map_err(|e| ApiError::bad_request(format!("at: {e}")))?);
    }
    spec.after = b.after;
    spec.unique_key = b.unique;
    spec.idempotency_key = b.idempotency_key;
    spec.labels = b.labels;
    spec.env.extend(b.env);
    let root = s
        .ctx
        .state_dir
        .parent()
        .unwrap_or(&s.ctx.state_dir)
        .to_path_buf();
    let dir = match (&b.cwd, &spec.cwd) {
        (Some(d), _) => root.join(d),
        (None, Some(c)) => root.join(c),
        (None, None) => root,
    };
    if b.cwd.is_some() && !dir.is_dir() {
        return Err(ApiError::bad_request(format!(
            "cwd: {} is not a directory",
            dir.display()
        )));
    }
    spec.cwd = Some(dir.display().to_string());
    Ok(spec)
}

/// `POST /api/v1/jobs`: queues one job; 201 and the job (200 and the existing job for an
/// idempotency key seen before; 409 when its unique key is taken).
pub async fn submit(
    State(s): State<Shared>,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, ApiError> {
    let spec = spec_of(&s, body)?;
    let (submitted, job) = s
        .pool
        .run(move |c| {
            let after = spec.after.clone();
            let submitted = c.submit(spec).map_err(|e| {
                let e = ApiError::from(e);
                if e.status == StatusCode::NOT_FOUND && !after.is_empty() {
                    ApiError::bad_request(format!("after: {}", e.message))
                } else {
                    e
                }
            })?;
            let job = c.get(submitted.id())?;
            Ok((submitted, job))
        })
        .await?;
    let body = render::json::job(&job, Timestamp::now());
    match submitted {
        Submitted::Created(_) => Ok((StatusCode::CREATED, Json(body)).into_response()),
        Submitted::Existing(_) => Ok((StatusCode::OK, Json(body)).into_response()),
        Submitted::Duplicate(existing) => Err(ApiError::conflict(format!(
            "job {existing} with unique key {:?} is already queued or running; nothing was submitted",
            job.spec.unique_key.unwrap_or_default()
        ))),
    }
}

/// `POST /api/v1/jobs/{id}/cancel`: as `workq cancel ID --no-wait --json`, one row; 404 for
/// no such job, 409 when it had already ended.
pub async fn cancel_job(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let report = s
        .pool
        .run(move |c| views::cancel(c, &[id], false).map_err(ApiError::from))
        .await?;
    if !report.missing.is_empty() {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    let row = report.rows.into_iter().next().unwrap_or(Value::Null);
    if row["done"] == false {
        return Err(ApiError::conflict(format!(
            "job {id} was not cancelled: {}",
            row["detail"].as_str().unwrap_or("it had already ended")
        )));
    }
    Ok(Json(row))
}

/// `POST /api/v1/jobs/{id}/retry`: as `workq retry ID --json`, one row; 404 for no such job,
/// 409 when it is not failed or cancelled.
pub async fn retry_job(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let report = s
        .pool
        .run(move |c| views::retry(c, &[id]).map_err(ApiError::from))
        .await?;
    if !report.missing.is_empty() {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    let row = report.rows.into_iter().next().unwrap_or(Value::Null);
    if report.refused {
        return Err(ApiError::conflict(format!(
            "job {id} {}",
            row["result"].as_str().unwrap_or("was not retried")
        )));
    }
    Ok(Json(row))
}

/// The body of the bulk actions: ids, or a filter.
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    ids: Option<Vec<JobId>>,
    state: Option<StringOrList>,
    queue: Option<String>,
    label: Option<StringOrList>,
}

/// One string or a list of them.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn items(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split(',').map(str::to_string).collect(),
            StringOrList::Many(v) => v,
        }
    }
}

impl BulkBody {
    /// The selection, or the ids; both or neither is a 400.
    fn resolve(self) -> Result<(Vec<JobId>, Selection), ApiError> {
        let mut sel = Selection {
            queue: self.queue.filter(|q| !q.is_empty()),
            states: self
                .state
                .map(StringOrList::items)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            labels: Vec::new(),
        };
        for l in self.label.map(StringOrList::items).unwrap_or_default() {
            sel.labels.push(label("label", &l)?);
        }
        match self.ids {
            Some(_) if !sel.is_empty() => Err(ApiError::bad_request(
                "ids: give either ids or a filter (state, queue, label), not both",
            )),
            Some(ids) if ids.is_empty() => Err(ApiError::bad_request("ids: the list is empty")),
            Some(ids) => Ok((ids, sel)),
            None if sel.is_empty() => Err(ApiError::bad_request(
                "ids: missing; give \"ids\": [1, 2] or a filter such as {\"queue\": \"q\", \"state\": \"failed\"}",
            )),
            None => Ok((Vec::new(), sel)),
        }
    }
}

/// The answer of a bulk action: every row, and how many were done and skipped.
pub fn bulk_answer(rows: Vec<Value>) -> Value {
    let done = rows.iter().filter(|r| r["done"] == true).count();
    json!({"results": rows, "done": done, "skipped": rows.len() - done})
}

/// `POST /api/v1/jobs/cancel`: cancels the jobs `ids` names or the filter selects (by default
/// the queued and running ones), answering per job.
pub async fn bulk_cancel(
    State(s): State<Shared>,
    JsonBody(body): JsonBody<BulkBody>,
) -> Result<Json<Value>, ApiError> {
    bulk(&s, body, &["queued", "running"], |c, ids| {
        Ok(views::cancel(c, ids, false)?.rows)
    })
    .await
}

/// `POST /api/v1/jobs/retry`: queues again the jobs `ids` names or the filter selects (by
/// default the failed ones), answering per job.
pub async fn bulk_retry(
    State(s): State<Shared>,
    JsonBody(body): JsonBody<BulkBody>,
) -> Result<Json<Value>, ApiError> {
    bulk(&s, body, &["failed"], |c, ids| {
        Ok(views::retry(c, ids)?.rows)
    })
    .await
}

/// A bulk action: `act` on the ids given, or on those the filter selects (`default_states`
/// when it names none), one answer row per job.
async fn bulk(
    s: &Shared,
    body: BulkBody,
    default_states: &'static [&'static str],
    act: fn(&workq::Client, &[JobId]) -> Result<Vec<Value>, crate::error::CliError>,
) -> Result<Json<Value>, ApiError> {
    let (ids, sel) = body.resolve()?;
    let rows = s
        .pool
        .run(move |c| {
            let ids = if ids.is_empty() {
                sel.ids(c, default_states)?
            } else {
                ids
            };
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            Ok(act(c, &ids)?)
        })
        .await?;
    Ok(Json(bulk_answer(rows)))
}

/// `POST /api/v1/workers/{name}/pause[?host=H]`: as `workq worker pause NAME --json`.
pub async fn pause_worker(
    State(s): State<Shared>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    set_paused(s, name, q, true).await
}

/// `POST /api/v1/workers/{name}/resume[?host=H]`: as `workq worker resume NAME --json`.
pub async fn resume_worker(
    State(s): State<Shared>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    set_paused(s, name, q, false).await
}

async fn set_paused(
    s: Shared,
    name: String,
    q: Option<String>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let host = query_pairs(&q)?
        .into_iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v)
        .unwrap_or_else(|| s.host.clone());
    no_nul("host", &host)?;
    no_nul("name", &name)?;
    let v = s
        .pool
        .run(move |c| {
            let known = c
                .store()
                .workers(true)?
                .iter()
                .any(|w| w.name == name && w.host == host);
            if !known {
                return Err(ApiError::not_found(format!(
                    "no worker named {name:?} has run on host {host}"
                ))
                .with_hint("GET /api/v1/workers?all=1 lists them"));
            }
            Ok(views::set_paused(c, &host, &[name], paused)?)
        })
        .await?;
    Ok(Json(v.into_iter().next().unwrap_or(Value::Null)))
}

/// `GET /api/v1/throughput[?minutes=60]`: jobs finished per minute and queue, for the
/// dashboard's chart.
pub async fn throughput(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut minutes = 60u64;
    for (k, v) in query_pairs(&q)? {
        if k == "minutes" {
            minutes = parse_field::<u64>("minutes", &v)?.clamp(1, 24 * 60);
        }
    }
    let since = Timestamp(Timestamp::now().0 - (minutes as i64) * 60_000);
    let points = s
        .pool
        .run(move |c| Ok(c.store().throughput(since, Duration::from_secs(60))?))
        .await?;
    Ok(Json(throughput_doc(since, 60, &points)))
}

/// The `GET /api/v1/throughput` document.
pub fn throughput_doc(since: Timestamp, bucket_secs: u64, points: &[ThroughputPoint]) -> Value {
    let arr: Vec<Value> = points
        .iter()
        .map(|p| {
            json!({"queue": p.queue, "at": p.at.to_rfc3339(), "succeeded": p.succeeded, "failed": p.failed})
        })
        .collect();
    json!({"bucket_secs": bucket_secs, "since": since.to_rfc3339(), "points": arr})
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(health_doc())
}

/// The `GET /healthz` document.
pub fn health_doc() -> Value {
    json!({"ok": true})
}

/// `GET /readyz`: the store answers and its schema is one this build understands.
pub async fn readyz(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let id = s.pool.run(|c| Ok(c.store().store_id()?)).await?;
    Ok(Json(ready_doc(&id)))
}

/// The `GET /readyz` document.
pub fn ready_doc(store_id: &str) -> Value {
    json!({"ok": true, "store_id": store_id})
}

/// Any other path under `/api/v1`.
pub async fn no_such_route(req: Request) -> ApiError {
    // Nested under /api/v1, the router hands over the path without that prefix.
    ApiError::not_found(format!(
        "no such API route: {} /api/v1{}",
        req.method(),
        req.uri().path()
    ))
    .with_hint("GET /api/v1/openapi.json lists every route")
}

/// A known path asked with a method it does not take: 405 with the JSON error.
pub async fn wrong_method(req: Request) -> ApiError {
    not_allowed(&req, "")
}

/// [`wrong_method`] under `/api/v1`, whose prefix the nested router has taken off the path.
pub async fn wrong_api_method(req: Request) -> ApiError {
    not_allowed(&req, "/api/v1")
}

fn not_allowed(req: &Request, prefix: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {prefix}{}",
            req.method(),
            req.uri().path()
        ),
    )
    .with_hint("GET /api/v1/openapi.json lists each route's method")
}
