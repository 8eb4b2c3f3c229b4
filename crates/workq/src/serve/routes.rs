//! The one table of routes: `serve::router` registers each entry with its handler, and
//! `GET /api/v1/openapi.json` describes the same entries, so the document cannot list a route
//! the server lacks or miss one it has.

use axum::routing::{on, MethodFilter, MethodRouter};
use serde_json::Value;

use super::openapi::samples;
use super::{api, assets, events, logs, metrics, openapi, security, Shared};

/// The methods the routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET (axum answers HEAD with it too).
    Get,
    /// POST.
    Post,
}

impl Verb {
    /// The lower-case name, as OpenAPI keys operations.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
        }
    }
}

/// What a route asks of the caller, as `security::guard` enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Nothing (`/healthz`, and `/login`, which takes the token in its body).
    Open,
    /// The bearer token (or the dashboard's cookie) when the server has one; else a JSON 401.
    Token,
    /// The same, but without it the answer is the HTML page asking for the token.
    Page,
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A `{name}` segment of the path.
    Path,
    /// The query string.
    Query,
    /// A request header.
    Header,
}

/// One parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Where it goes.
    pub at: In,
    /// JSON Schema type of its value (`string`, `integer`, `boolean`).
    pub kind: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// A response body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// JSON; the schema is inferred from these sample documents, built by the handlers' own
    /// functions.
    Json(fn() -> Vec<Value>),
    /// Anything else, of this media type.
    Other(&'static str),
    /// No body (a redirect).
    Empty,
}

/// One success response.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// What it means.
    pub doc: &'static str,
    /// Its body.
    pub body: Body,
}

/// One route: the handler the router registers and what the OpenAPI document says of it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Method.
    pub verb: Verb,
    /// Full path in axum's syntax (`{id}`), which is also OpenAPI's path template syntax.
    pub path: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Who may call it.
    pub auth: Auth,
    /// Path, query and header parameters.
    pub params: &'static [Param],
    /// JSON request body samples (the schema is inferred from them), if it takes one.
    pub request: Option<fn() -> Vec<Value>>,
    /// Success responses.
    pub replies: &'static [Reply],
    /// Statuses it answers with the JSON error document itself (the guard's 401 and 403 are
    /// added by the document builder from `auth` and `verb`).
    pub errors: &'static [u16],
    /// The handler, registered for `verb`.
    pub handler: fn(MethodFilter) -> MethodRouter<Shared>,
}

impl Route {
    /// The method router for this entry.
    pub fn method_router(&self) -> MethodRouter<Shared> {
        (self.handler)(self.verb.filter())
    }
}

/// The prefix of the JSON API; its own fallback answers unknown routes under it with JSON.
pub const API: &str = "/api/v1";

const fn query(name: &'static str, kind: &'static str, doc: &'static str) -> Param {
    Param {
        name,
        at: In::Query,
        kind,
        doc,
    }
}

const fn path(name: &'static str, kind: &'static str, doc: &'static str) -> Param {
    Param {
        name,
        at: In::Path,
        kind,
        doc,
    }
}

const fn json(status: u16, doc: &'static str, samples: fn() -> Vec<Value>) -> Reply {
    Reply {
        status,
        doc,
        body: Body::Json(samples),
    }
}

const JOB_ID: Param = path("id", "integer", "The job's id.");
const WORKER_NAME: Param = path("name", "string", "The worker's name.");
const HOST: Param = query(
    "host",
    "string",
    "The worker's host (default: the server's own).",
);

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    Route {
        verb: Verb::Get,
        path: "/api/v1/status",
        summary: "Every queue with its counts, and every live worker (`workq status --json`).",
        auth: Auth::Token,
        params: &[],
        request: None,
        replies: &[json(200, "The status.", samples::status)],
        errors: &[503],
        handler: |m| on(m, api::status),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/jobs",
        summary: "A page of jobs, newest first (`workq list --json`), with the cursor of the next page.",
        auth: Auth::Token,
        params: &[
            query("state", "string", "Only these states, comma-separated (queued, scheduled, waiting, running, succeeded, failed, cancelled)."),
            query("queue", "string", "Only this queue."),
            query("label", "string", "Only jobs with this label, KEY=VALUE; may repeat."),
            query("q", "string", "Only jobs whose command line contains this text."),
            query("limit", "integer", "Jobs per page, 1 to 1000 (default 50)."),
            query("before", "integer", "Only jobs with a smaller id: the `next` of the previous page."),
        ],
        request: None,
        replies: &[json(200, "The page; `next` is null on the last one.", samples::jobs_page)],
        errors: &[400, 503],
        handler: |m| on(m, api::list_jobs),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/jobs",
        summary: "Queues one job, over the queue's configured defaults (`workq submit`). Durations are text such as \"1h30m\" or a number of seconds.",
        auth: Auth::Token,
        params: &[],
        request: Some(samples::submit_body),
        replies: &[
            json(201, "Queued: the new job.", samples::job),
            json(200, "The idempotency key was seen before: the job it created.", samples::job),
        ],
        errors: &[400, 404, 409, 413, 415, 503],
        handler: |m| on(m, api::submit),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/jobs/cancel",
        summary: "Cancels the jobs `ids` names, or those the filter selects (by default the queued and running ones).",
        auth: Auth::Token,
        params: &[],
        request: Some(samples::bulk_body),
        replies: &[json(200, "One row per job, and how many were done and skipped.", samples::bulk_cancel)],
        errors: &[400, 413, 503],
        handler: |m| on(m, api::bulk_cancel),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/jobs/retry",
        summary: "Queues again the jobs `ids` names, or those the filter selects (by default the failed ones).",
        auth: Auth::Token,
        params: &[],
        request: Some(samples::bulk_body),
        replies: &[json(200, "One row per job, and how many were done and skipped.", samples::bulk_retry)],
        errors: &[400, 413, 503],
        handler: |m| on(m, api::bulk_retry),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/jobs/{id}",
        summary: "One job with its attempts (`workq show ID --json`).",
        auth: Auth::Token,
        params: &[JOB_ID],
        request: None,
        replies: &[json(200, "The job.", samples::job_detail)],
        errors: &[400, 404, 503],
        handler: |m| on(m, api::show_job),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/jobs/{id}/log",
        summary: "A job's output; with `follow`, streamed as it is written until the attempt ends.",
        auth: Auth::Token,
        params: &[
            JOB_ID,
            query("attempt", "integer", "Which attempt (default: the latest)."),
            query("follow", "boolean", "Keep sending what is written until the attempt ends."),
        ],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The log (empty while the job has not started).",
            body: Body::Other("text/plain; charset=utf-8"),
        }],
        errors: &[400, 404, 503],
        handler: |m| on(m, logs::job_log),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/jobs/{id}/cancel",
        summary: "Cancels one job: a queued one at once, a running one by asking its worker (`workq cancel ID --no-wait --json`).",
        auth: Auth::Token,
        params: &[JOB_ID],
        request: None,
        replies: &[json(200, "What was done.", samples::cancel_row)],
        errors: &[400, 404, 409, 503],
        handler: |m| on(m, api::cancel_job),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/jobs/{id}/retry",
        summary: "Queues a failed or cancelled job again (`workq retry ID --json`).",
        auth: Auth::Token,
        params: &[JOB_ID],
        request: None,
        replies: &[json(200, "What was done.", samples::retry_row)],
        errors: &[400, 404, 409, 503],
        handler: |m| on(m, api::retry_job),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/workers",
        summary: "Live workers and recently ended ones (`workq workers list --json`).",
        auth: Auth::Token,
        params: &[query("all", "boolean", "Every worker row, however old.")],
        request: None,
        replies: &[json(200, "The workers.", samples::workers)],
        errors: &[400, 503],
        handler: |m| on(m, api::workers),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/workers/{name}/pause",
        summary: "Pauses a worker: it finishes what it runs and claims nothing more (`workq worker pause NAME --json`).",
        auth: Auth::Token,
        params: &[WORKER_NAME, HOST],
        request: None,
        replies: &[json(200, "The worker's new flag.", samples::pause_row)],
        errors: &[400, 404, 503],
        handler: |m| on(m, api::pause_worker),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/workers/{name}/resume",
        summary: "Lets a paused worker claim jobs again (`workq worker resume NAME --json`).",
        auth: Auth::Token,
        params: &[WORKER_NAME, HOST],
        request: None,
        replies: &[json(200, "The worker's new flag.", samples::pause_row)],
        errors: &[400, 404, 503],
        handler: |m| on(m, api::resume_worker),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/throughput",
        summary: "Jobs finished per minute and queue, for the dashboard's chart.",
        auth: Auth::Token,
        params: &[query("minutes", "integer", "How far back, 1 to 1440 (default 60).")],
        request: None,
        replies: &[json(200, "The points.", samples::throughput)],
        errors: &[400, 503],
        handler: |m| on(m, api::throughput),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/events",
        summary: "Server-Sent Events from the store's event log: `job`, `worker` and `audit` events, each with its log id (see x-events for their data).",
        auth: Auth::Token,
        params: &[
            query("since", "integer", "Resume after this event id (as Last-Event-ID)."),
            Param {
                name: "Last-Event-ID",
                at: In::Header,
                kind: "integer",
                doc: "Resume after this event id; without it or `since`, the stream starts with what happens next.",
            },
        ],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The stream, with a keep-alive comment every 15 s.",
            body: Body::Other("text/event-stream"),
        }],
        errors: &[400, 503],
        handler: |m| on(m, events::stream),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/openapi.json",
        summary: "This document.",
        auth: Auth::Token,
        params: &[],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The OpenAPI 3.1 document.",
            body: Body::Other("application/json"),
        }],
        errors: &[],
        handler: |m| on(m, openapi::document),
    },
    Route {
        verb: Verb::Get,
        path: "/healthz",
        summary: "The process answers (no token needed).",
        auth: Auth::Open,
        params: &[],
        request: None,
        replies: &[json(200, "It does.", samples::health)],
        errors: &[],
        handler: |m| on(m, api::healthz),
    },
    Route {
        verb: Verb::Get,
        path: "/readyz",
        summary: "The store answers and its schema is one this build understands.",
        auth: Auth::Token,
        params: &[],
        request: None,
        replies: &[json(200, "Ready.", samples::ready)],
        errors: &[503],
        handler: |m| on(m, api::readyz),
    },
    Route {
        verb: Verb::Get,
        path: "/metrics",
        summary: "Prometheus metrics (OpenMetrics text); 200 with workq_store_up 0 when the store cannot be read.",
        auth: Auth::Token,
        params: &[],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The exposition.",
            body: Body::Other(metrics::CONTENT_TYPE),
        }],
        errors: &[],
        handler: |m| on(m, metrics::scrape),
    },
    Route {
        verb: Verb::Post,
        path: "/login",
        summary: "Takes the token (form or JSON field `token`) and sets the dashboard's HttpOnly cookie.",
        auth: Auth::Open,
        params: &[],
        request: Some(samples::login_body),
        replies: &[
            Reply {
                status: 303,
                doc: "Signed in (or no token is needed): to the dashboard.",
                body: Body::Empty,
            },
            Reply {
                status: 401,
                doc: "Not the server's token: the page asking for it again.",
                body: Body::Other("text/html; charset=utf-8"),
            },
        ],
        errors: &[],
        handler: |m| on(m, security::login),
    },
    Route {
        verb: Verb::Post,
        path: "/logout",
        summary: "Forgets the dashboard's cookie.",
        auth: Auth::Token,
        params: &[],
        request: None,
        replies: &[Reply {
            status: 303,
            doc: "To the dashboard.",
            body: Body::Empty,
        }],
        errors: &[],
        handler: |m| on(m, security::logout),
    },
    Route {
        verb: Verb::Get,
        path: "/",
        summary: "The dashboard.",
        auth: Auth::Page,
        params: &[],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The page.",
            body: Body::Other("text/html; charset=utf-8"),
        }],
        errors: &[],
        handler: |m| on(m, assets::index),
    },
    Route {
        verb: Verb::Get,
        path: "/assets/app.js",
        summary: "The dashboard's script.",
        auth: Auth::Page,
        params: &[],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The script (304 when the If-None-Match ETag matches).",
            body: Body::Other("text/javascript; charset=utf-8"),
        }],
        errors: &[],
        handler: |m| on(m, assets::app_js),
    },
    Route {
        verb: Verb::Get,
        path: "/assets/app.css",
        summary: "The dashboard's style sheet.",
        auth: Auth::Page,
        params: &[],
        request: None,
        replies: &[Reply {
            status: 200,
            doc: "The style sheet (304 when the If-None-Match ETag matches).",
            body: Body::Other("text/css; charset=utf-8"),
        }],
        errors: &[],
        handler: |m| on(m, assets::app_css),
    },
];

/// The routes of `ROUTES`: those under [`API`] nested with its JSON fallback, the rest at the
/// root, so unknown `/api/v1/…` paths still get a JSON 404.
pub fn table_router() -> axum::Router<Shared> {
    let mut api = axum::Router::new();
    let mut root = axum::Router::new();
    for r in ROUTES {
        match r.path.strip_prefix(API) {
            Some(rest) => api = api.route(rest, r.method_router()),
            None => root = root.route(r.path, r.method_router()),
        }
    }
    root.nest(
        API,
        api.fallback(api::no_such_route)
            .method_not_allowed_fallback(api::wrong_api_method),
    )
    .method_not_allowed_fallback(api::wrong_method)
}
