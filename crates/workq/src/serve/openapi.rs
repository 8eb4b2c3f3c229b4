//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document built from `routes::ROUTES`, the table
//! the router is built from. Every JSON schema in it is inferred from sample documents made by
//! the functions the handlers answer with, so a field added to a document is in its schema.

use std::collections::BTreeMap;

use axum::Json;
use serde_json::{json, Map, Value};

use super::routes::{Auth, Body, In, Verb, ROUTES};

/// Keys whose objects map the user's own keys to values (labels, environment): described by
/// `additionalProperties`, since the keys of a sample say nothing about other documents.
const MAPS: &[&str] = &["labels", "env"];

/// The handler.
pub async fn document() -> Json<Value> {
    Json(build())
}

/// The whole document.
pub fn build() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for r in ROUTES {
        paths
            .entry(r.path)
            .or_default()
            .insert(r.verb.name().into(), Value::Object(operation(r)));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "workq",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of `workq serve`: the same JSON documents as the CLI's --json. \
                Without a configured token (loopback only) no authentication is asked for.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": infer(&samples::errors())},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "The token workq serve was started with (--token-file or WORKQ_TOKEN)."},
                "cookie": {"type": "apiKey", "in": "cookie", "name": super::security::COOKIE,
                           "description": "The dashboard's cookie, set by POST /login."},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
    })
}

/// The operation object of route `r`.
fn operation(r: &super::routes::Route) -> Map<String, Value> {
    let mut op = Map::new();
    op.insert("summary".into(), json!(r.summary));
    op.insert(
        "operationId".into(),
        json!(format!("{} {}", r.verb.name(), r.path)),
    );
    let params: Vec<Value> = r
        .params
        .iter()
        .map(|p| {
            let at = match p.at {
                In::Path => "path",
                In::Query => "query",
                In::Header => "header",
            };
            json!({
                "name": p.name, "in": at, "required": p.at == In::Path,
                "description": p.doc, "schema": {"type": p.kind},
            })
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(samples) = r.request {
        let mut schema = infer(&samples());
        if let Some(o) = schema.as_object_mut() {
            // Both bodies are `deny_unknown_fields`.
            o.insert("additionalProperties".into(), json!(false));
            o.remove("required");
        }
        op.insert(
            "requestBody".into(),
            json!({"required": false, "content": {"application/json": {"schema": schema}}}),
        );
    }
    op.insert("responses".into(), Value::Object(responses(r)));
    if r.auth == Auth::Open {
        op.insert("security".into(), json!([]));
    }
    if r.path == "/api/v1/events" {
        op.insert("x-events".into(), samples::event_schemas());
    }
    op
}

/// The responses of route `r`: its replies, then its errors and the guard's.
fn responses(r: &super::routes::Route) -> Map<String, Value> {
    let mut responses = Map::new();
    for reply in r.replies {
        let content = match reply.body {
            Body::Json(samples) => Some(json!({"application/json": {"schema": infer(&samples())}})),
            Body::Other(media) => Some(json!({ media: {"schema": {"type": "string"}} })),
            Body::Empty => None,
        };
        let mut resp = json!({"description": reply.doc});
        if let Some(c) = content {
            resp["content"] = c;
        }
        responses.insert(reply.status.to_string(), resp);
    }
    let mut errors: Vec<u16> = r.errors.to_vec();
    if r.auth == Auth::Token {
        errors.push(401);
    }
    if r.verb == Verb::Post && r.path.starts_with(super::routes::API) {
        // Cross-origin and read-only refusals (security::guard).
        errors.push(403);
    }
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": error_doc(status),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }),
        );
    }
    if r.auth == Auth::Page {
        responses.insert(
            "401".into(),
            json!({"description": "No valid token: the page asking for it.",
                   "content": {"text/html; charset=utf-8": {"schema": {"type": "string"}}}}),
        );
    }
    responses
}

/// What an error status means here.
fn error_doc(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed; the message names the field.",
        401 => "A valid token is required.",
        403 => "Refused: from another origin, or the server is read-only.",
        404 => "No such job, worker or attempt.",
        409 => "Conflicts with the job's state or its unique key.",
        413 => "The body is over 1 MiB.",
        415 => "The body is not JSON.",
        503 => "The store cannot be reached.",
        _ => "Failed.",
    }
}

/// The JSON Schema of values like `samples`: the union of their types (`null` among them makes
/// it nullable), an object's properties from every sample that has them (required when all
/// have them), an array's items from all its elements.
pub fn infer(samples: &[Value]) -> Value {
    infer_refs(&samples.iter().collect::<Vec<_>>())
}

fn infer_refs(samples: &[&Value]) -> Value {
    let mut types: Vec<&str> = Vec::new();
    let mut add = |t| {
        if !types.contains(&t) {
            types.push(t);
        }
    };
    let mut objects = Vec::new();
    let mut items = Vec::new();
    for v in samples {
        match v {
            Value::Null => add("null"),
            Value::Bool(_) => add("boolean"),
            Value::Number(n) if n.is_f64() => add("number"),
            Value::Number(_) => add("integer"),
            Value::String(_) => add("string"),
            Value::Array(a) => {
                add("array");
                items.extend(a.iter());
            }
            Value::Object(o) => {
                add("object");
                objects.push(o);
            }
        }
    }
    if types.contains(&"number") {
        // An integer sample of a number field is still a number.
        types.retain(|t| *t != "integer");
    }
    // Stable output: by name, null last.
    types.sort_by_key(|t| (*t == "null", *t));
    let mut schema = Map::new();
    match types.as_slice() {
        [] => {}
        [one] => {
            schema.insert("type".into(), json!(one));
        }
        many => {
            schema.insert("type".into(), json!(many));
        }
    }
    if types.contains(&"array") {
        schema.insert("items".into(), infer_refs(&items));
    }
    if !objects.is_empty() {
        let mut keys: Vec<&String> = objects.iter().flat_map(|o| o.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut props = Map::new();
        let mut required = Vec::new();
        for k in keys {
            let values: Vec<&Value> = objects.iter().filter_map(|o| o.get(k)).collect();
            if values.len() == objects.len() {
                required.push(json!(k));
            }
            let s = if MAPS.contains(&k.as_str()) {
                let inner: Vec<&Value> = values
                    .iter()
                    .filter_map(|v| v.as_object())
                    .flat_map(|o| o.values())
                    .collect();
                let mut m = infer_refs(&[]);
                m["type"] = json!("object");
                m["additionalProperties"] = infer_refs(&inner);
                m
            } else {
                infer_refs(&values)
            };
            props.insert(k.clone(), s);
        }
        schema.insert("properties".into(), Value::Object(props));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
    }
    Value::Object(schema)
}

/// Sample documents, each made by the function its handler answers with, from values that set
/// every optional field in one sample and leave it empty in another.
pub mod samples {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::{json, Value};
    use workq_core::{
        Attempt, Container, Job, JobSpec, JobState, Outcome, Timestamp, WorkerRecord, WorkerState,
    };
    use workq_store::{QueueStats, StoredEvent, ThroughputPoint};

    use crate::render;
    use crate::serve::api;
    use crate::serve::events::Sent;
    use crate::serve::ApiError;
    use crate::views;

    const NOW: Timestamp = Timestamp(1_767_225_600_000);

    fn at(secs_ago: i64) -> Timestamp {
        Timestamp(NOW.0 - secs_ago * 1000)
    }

    fn queued_job() -> Job {
        let mut spec = JobSpec::new("default", vec!["echo".into(), "hi".into()]);
        spec.cwd = Some("/srv/app".into());
        Job {
            id: 41,
            state: JobState::Queued,
            spec,
            run_at: at(5),
            deps_pending: 0,
            attempt: 0,
            failures: 0,
            rescues: 0,
            worker_id: None,
            worker_name: None,
            cancel_requested: false,
            exit_code: None,
            last_error: None,
            created_at: at(5),
            started_at: None,
            finished_at: None,
        }
    }

    fn failed_job() -> Job {
        let mut spec = JobSpec::new("mail", vec!["send".into(), "--all".into()]);
        spec.cwd = Some("/srv/app".into());
        spec.labels = BTreeMap::from([("team".into(), "ops".into())]);
        spec.env = BTreeMap::from([("MODE".into(), "batch".into())]);
        spec.timeout = Some(Duration::from_millis(90_500));
        spec.unique_key = Some("send-all".into());
        spec.idempotency_key = Some("req-7".into());
        spec.container = Some(Container {
            runtime: "podman".into(),
            image: "alpine:3".into(),
            user: Some("1000:1000".into()),
            args: vec!["--network=none".into()],
        });
        Job {
            id: 42,
            state: JobState::Failed,
            spec,
            run_at: at(60),
            deps_pending: 0,
            attempt: 1,
            failures: 1,
            rescues: 0,
            worker_id: Some(3),
            worker_name: Some("w1".into()),
            cancel_requested: false,
            exit_code: Some(1),
            last_error: Some("exit status 1".into()),
            created_at: at(60),
            started_at: Some(at(59)),
            finished_at: Some(at(58)),
        }
    }

    fn attempts() -> Vec<Attempt> {
        let ended = Attempt {
            job_id: 42,
            attempt: 1,
            worker_id: Some(3),
            worker_name: Some("w1".into()),
            host: Some("box".into()),
            pid: Some(4242),
            pgid: Some(4242),
            pid_start_time: Some(0),
            started_at: at(59),
            ended_at: Some(at(58)),
            outcome: Some(Outcome::Failed),
            exit_code: Some(1),
            signal: Some(15),
            error: Some("exit status 1".into()),
            log_path: Some("/srv/app/.workq/logs/000/42.1.log".into()),
            lease: 7,
        };
        let running = Attempt {
            attempt: 2,
            worker_name: None,
            host: None,
            pid: None,
            ended_at: None,
            outcome: None,
            exit_code: None,
            signal: None,
            error: None,
            log_path: None,
            ..ended.clone()
        };
        vec![ended, running]
    }

    fn worker(state: WorkerState, stopped: bool) -> WorkerRecord {
        WorkerRecord {
            id: 3,
            name: "w1".into(),
            host: "box".into(),
            boot_id: "boot".into(),
            pid: 1234,
            pid_start_time: 0,
            queues: vec!["default".into(), "mail".into()],
            slots: 2,
            state,
            running_jobs: 1,
            jobs_done: 10,
            jobs_failed: 1,
            started_at: at(3600),
            heartbeat_at: at(1),
            stopped_at: stopped.then(|| at(10)),
            stop_reason: stopped.then(|| "stopped by signal".into()),
            version: env!("CARGO_PKG_VERSION").into(),
            settings: None,
        }
    }

    /// `GET /api/v1/status`.
    pub fn status() -> Vec<Value> {
        let stats = [
            QueueStats {
                queue: "default".into(),
                queued: 3,
                mean_duration_ms: Some(1500.0),
                ..QueueStats::default()
            },
            QueueStats {
                queue: "mail".into(),
                ..QueueStats::default()
            },
        ];
        let workers = [worker(WorkerState::Running, false)];
        vec![views::status_doc(&stats, &workers, NOW, "box", "boot")]
    }

    /// `GET /api/v1/jobs`.
    pub fn jobs_page() -> Vec<Value> {
        vec![
            api::jobs_page(&[queued_job(), failed_job()], Some(41), NOW),
            api::jobs_page(&[], None, NOW),
        ]
    }

    /// A job (`POST /api/v1/jobs`).
    pub fn job() -> Vec<Value> {
        vec![
            render::json::job(&queued_job(), NOW),
            render::json::job(&failed_job(), NOW),
        ]
    }

    /// `GET /api/v1/jobs/{id}`.
    pub fn job_detail() -> Vec<Value> {
        vec![
            views::job_detail_doc(&failed_job(), &attempts(), NOW),
            views::job_detail_doc(&queued_job(), &[], NOW),
        ]
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub fn cancel_row() -> Vec<Value> {
        vec![views::cancel_row(
            41,
            "cancelled",
            "it had not started",
            true,
        )]
    }

    /// `POST /api/v1/jobs/{id}/retry`.
    pub fn retry_row() -> Vec<Value> {
        vec![views::retry_row(42, "queued", true)]
    }

    /// `POST /api/v1/jobs/cancel`.
    pub fn bulk_cancel() -> Vec<Value> {
        vec![api::bulk_answer(cancel_row())]
    }

    /// `POST /api/v1/jobs/retry`.
    pub fn bulk_retry() -> Vec<Value> {
        vec![api::bulk_answer(retry_row())]
    }

    /// `GET /api/v1/workers`.
    pub fn workers() -> Vec<Value> {
        vec![Value::Array(vec![
            views::worker_row_with(
                &worker(WorkerState::Running, false),
                "busy",
                NOW,
                Some((0.4, 13_500_000)),
            ),
            views::worker_row(&worker(WorkerState::Stopped, true), "stopped", NOW),
        ])]
    }

    /// `POST /api/v1/workers/{name}/pause` and `resume`.
    pub fn pause_row() -> Vec<Value> {
        vec![views::pause_row("w1", true, true)]
    }

    /// `GET /api/v1/throughput`.
    pub fn throughput() -> Vec<Value> {
        let p = ThroughputPoint {
            queue: "default".into(),
            at: at(60),
            succeeded: 12,
            failed: 1,
        };
        vec![api::throughput_doc(at(3600), 60, &[p])]
    }

    /// `GET /healthz`.
    pub fn health() -> Vec<Value> {
        vec![api::health_doc()]
    }

    /// `GET /readyz`.
    pub fn ready() -> Vec<Value> {
        vec![api::ready_doc("0f3c2a9e")]
    }

    /// The error document, with and without its optional hint.
    pub fn errors() -> Vec<Value> {
        vec![
            ApiError::not_found("job 9 not found").body(),
            ApiError::bad_request("limit: \"x\" is not valid")
                .with_hint("give a number")
                .body(),
        ]
    }

    /// The `POST /api/v1/jobs` body: every field set (durations as text; a number of seconds
    /// is taken too).
    pub fn submit_body() -> Vec<Value> {
        vec![
            json!({
                "command": ["echo", "hi"], "queue": "mail", "priority": 5, "retries": 2,
                "backoff": "10s", "timeout": "1h", "kill_grace": "5s", "delay": "30s",
                "at": "2026-01-01T00:00:00Z", "after": [41], "unique": "send-all",
                "idempotency_key": "req-7", "labels": {"team": "ops"}, "env": {"MODE": "batch"},
                "cwd": "sub/dir",
            }),
            json!({"shell": "make -j4 | tee out"}),
        ]
    }

    /// The body of the bulk actions: ids, or a filter (state and label: one or a list).
    pub fn bulk_body() -> Vec<Value> {
        vec![
            json!({"ids": [41, 42]}),
            json!({"queue": "mail", "state": "failed", "label": "team=ops"}),
        ]
    }

    /// The `POST /login` body (a form with the same field works too).
    pub fn login_body() -> Vec<Value> {
        vec![json!({"token": "the server's token"})]
    }

    /// The data of each SSE event name, from `Sent::of` on sample log rows.
    pub fn event_schemas() -> Value {
        let row = |kind: &str,
                   job: Option<i64>,
                   worker: Option<i64>,
                   state: Option<&str>,
                   detail: Option<&str>| {
            Sent::of(&StoredEvent {
                id: 1,
                at: NOW,
                kind: kind.into(),
                job_id: job,
                worker_id: worker,
                state: state.map(str::to_string),
                detail: detail.map(str::to_string),
            })
        };
        let sent = [
            row("started", Some(42), Some(3), Some("running"), None),
            row("submitted", Some(41), None, Some("queued"), None),
            row("worker_paused", None, None, None, Some("w1")),
            row("worker_state", None, Some(3), Some("paused"), Some("w1")),
            row("api", Some(42), None, None, Some("{}")),
            row("stale", Some(42), Some(3), None, Some("late")),
        ];
        let mut by_name: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for s in &sent {
            // Sent::of built this text with serde_json a line above: it parses.
            let data = serde_json::from_str(&s.data).unwrap_or(Value::Null);
            by_name.entry(s.name).or_default().push(data);
        }
        let schemas: serde_json::Map<String, Value> = by_name
            .into_iter()
            .map(|(name, data)| (name.to_string(), super::infer(&data)))
            .collect();
        Value::Object(schemas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::api::{BulkBody, SubmitBody};
    use crate::serve::routes::table_router;

    /// Every schema under `v` whose only type is `null`: a field no sample gave a value.
    fn null_only(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.get("type") == Some(&json!("null")) {
                    out.push(at.to_string());
                }
                for (k, c) in o {
                    null_only(c, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    null_only(c, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_route_is_in_the_document() {
        let doc = build();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = serde_json::to_string(&doc).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
        let mut ops = 0;
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.verb.name()];
            assert!(op.is_object(), "{} {} missing", r.verb.name(), r.path);
            assert!(op["responses"].as_object().is_some_and(|m| !m.is_empty()));
            ops += 1;
        }
        let in_doc: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(in_doc, ops, "the document has operations the table lacks");
    }

    #[test]
    fn the_table_builds_a_router_and_has_no_duplicates() {
        // axum panics on a conflicting or malformed route: building it is the check.
        let _ = table_router();
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.verb, r.path)),
                "{} {} twice",
                r.verb.name(),
                r.path
            );
        }
    }

    #[test]
    fn path_parameters_match_the_path() {
        for r in ROUTES {
            let in_path: Vec<&str> = r
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let documented: Vec<&str> = r
                .params
                .iter()
                .filter(|p| p.at == In::Path)
                .map(|p| p.name)
                .collect();
            assert_eq!(in_path, documented, "{}", r.path);
        }
    }

    #[test]
    fn every_field_has_a_type_beyond_null() {
        let mut out = Vec::new();
        null_only(&build(), "", &mut out);
        assert!(out.is_empty(), "fields no sample sets: {out:?}");
    }

    #[test]
    fn job_schema_follows_the_json_document() {
        let doc = build();
        let schema = &doc["paths"]["/api/v1/jobs/{id}"]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        for job in samples::job() {
            for k in job.as_object().unwrap().keys() {
                assert!(
                    schema["properties"].get(k).is_some(),
                    "{k} not in the schema"
                );
            }
        }
        assert_eq!(
            schema["properties"]["exit_code"]["type"],
            json!(["integer", "null"])
        );
        assert_eq!(
            schema["properties"]["labels"]["additionalProperties"]["type"],
            "string"
        );
        assert_eq!(schema["properties"]["attempts"]["type"], "array");
        assert!(schema["properties"]["attempts"]["items"]["properties"]["outcome"].is_object());
    }

    #[test]
    fn the_error_schema_has_kind_message_and_an_optional_hint() {
        let e = &build()["components"]["schemas"]["Error"]["properties"]["error"];
        assert_eq!(e["required"], json!(["kind", "message"]));
        assert!(e["properties"]["hint"].is_object());
    }

    #[test]
    fn the_sse_route_is_an_event_stream() {
        let doc = build();
        let op = &doc["paths"]["/api/v1/events"]["get"];
        assert!(op["responses"]["200"]["content"]["text/event-stream"].is_object());
        for name in ["job", "worker", "audit"] {
            assert!(op["x-events"][name]["properties"].is_object(), "{name}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    /// The request samples are what the handlers accept, and name every field they accept.
    fn body_matches<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
        samples: fn() -> Vec<Value>,
    ) {
        let mut documented = std::collections::BTreeSet::new();
        for s in samples() {
            let parsed: Result<T, _> = serde_json::from_value(s.clone());
            assert!(parsed.is_ok(), "{s} is refused: {:?}", parsed.err());
            documented.extend(s.as_object().unwrap().keys().cloned());
        }
        let all = serde_json::to_value(T::default()).unwrap();
        let fields: std::collections::BTreeSet<String> =
            all.as_object().unwrap().keys().cloned().collect();
        assert_eq!(documented, fields);
    }

    #[test]
    fn request_bodies_match_the_handlers_types() {
        body_matches::<SubmitBody>(samples::submit_body);
        body_matches::<BulkBody>(samples::bulk_body);
    }
}
