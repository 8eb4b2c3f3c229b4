//! `workq serve` as a real process on an ephemeral loopback port, on SQLite and PostgreSQL:
//! every route and error status, pagination, Server-Sent Events with resume, the token,
//! cross-origin and read-only rules, and a store outage and recovery. Requests are plain
//! HTTP/1.1 over a TcpStream, so what is tested is what any client sees.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{state_of, Project};

/// A running `workq serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Project {
    /// `workq serve --listen 127.0.0.1:0 ARGS` once it listens.
    fn serve(&self, args: &[&str]) -> Server {
        self.serve_env(args, &[])
    }

    fn serve_env(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut c = self.cmd();
        c.args(["--json", "serve"]);
        if !args.contains(&"--listen") {
            c.args(["--listen", "127.0.0.1:0"]);
        }
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start workq serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the first line");
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "workq serve did not start: {line:?}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        Server {
            child,
            addr: v["listen"].as_str().expect("listen").to_string(),
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON error's kind, checking the error shape on the way.
    fn error_kind(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "error shape: {v}");
        v["error"]["kind"].as_str().expect("kind").to_string()
    }
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    s.write_all(body.as_bytes()).expect("send body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

fn get(s: &Server, path: &str) -> Resp {
    request(&s.addr, "GET", path, &[], "")
}

fn post(s: &Server, path: &str, body: Value) -> Resp {
    request(&s.addr, "POST", path, &[], &body.to_string())
}

/// An SSE connection, read event by event.
struct Events {
    reader: BufReader<TcpStream>,
}

/// One SSE event.
#[derive(Debug, Clone)]
struct Ev {
    id: i64,
    name: String,
    data: Value,
}

impl Events {
    fn open(s: &Server, last_event_id: Option<i64>) -> Events {
        Events::open_with(s, last_event_id, &[])
    }

    fn open_with(s: &Server, last_event_id: Option<i64>, headers: &[(&str, &str)]) -> Events {
        let mut t = TcpStream::connect(&s.addr).expect("connect");
        // Keep-alive comments come every 15 s; a silent stream is a failure.
        t.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut req = format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            s.addr
        );
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        t.write_all(req.as_bytes()).expect("send");
        let mut reader = BufReader::new(t);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        assert!(line.contains(" 200 "), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
        }
        Events { reader }
    }

    /// The next event (chunk-size lines and keep-alive comments skipped).
    fn next(&mut self) -> Ev {
        let (mut id, mut name, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read an event");
            assert!(n > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            } else if line.is_empty() && !data.is_empty() {
                return Ev {
                    id: id.expect("every event has an id"),
                    name,
                    data: serde_json::from_str(&data).expect("JSON data"),
                };
            }
        }
    }

    /// Events until one matches `pred` (a liveness bound of 30 s, not a timing assertion),
    /// all of them returned.
    fn until(&mut self, pred: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no matching event within 30 s; got {seen:?}"
            );
            let e = self.next();
            let done = pred(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// Every route and error status on one store.
fn routes_and_errors(p: &Project) {
    let a = p.submit(&["--label", "batch=1", "--", "echo", "one"]);
    let b = p.submit(&["--label", "batch=1", "--", "false"]);
    let s = p.serve(&[]);

    // Health and readiness.
    assert_eq!(get(&s, "/healthz").json()["ok"], true);
    let r = get(&s, "/readyz");
    assert_eq!(r.status, 200, "{}", r.body);

    // Reads have the CLI's shapes.
    let st = get(&s, "/api/v1/status");
    assert_eq!(st.status, 200);
    assert_eq!(st.json()["queues"], p.json(&["status"])["queues"]);
    let page = get(&s, "/api/v1/jobs?limit=100").json();
    assert_eq!(page["jobs"], p.json(&["list"]), "list shape");
    assert_eq!(page["next"], Value::Null);
    let show = get(&s, &format!("/api/v1/jobs/{a}")).json();
    assert_eq!(show, p.job(a));
    assert_eq!(
        get(&s, "/api/v1/workers").json(),
        p.json(&["workers", "list"])
    );
    let labelled = get(&s, "/api/v1/jobs?label=batch=1&state=queued").json();
    assert_eq!(labelled["jobs"].as_array().unwrap().len(), 2);
    let searched = get(&s, "/api/v1/jobs?q=fals").json();
    assert_eq!(searched["jobs"][0]["id"], b, "{searched}");

    // Submit: 201 and the job; idempotency 200; unique key taken 409; bad bodies 400.
    let r = post(
        &s,
        "/api/v1/jobs",
        json!({"command": ["echo", "from the api"], "labels": {"batch": "2"}, "retries": 2,
               "timeout": "1m", "priority": 5, "idempotency_key": "k1", "unique": "u1"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let c = r.json()["id"].as_i64().unwrap();
    assert_eq!(
        r.json(),
        p.json(&["show", &c.to_string()])
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.remove("attempts");
                Value::Object(o)
            })
            .unwrap()
    );
    assert_eq!(p.job(c)["labels"]["batch"], "2");
    let again = post(
        &s,
        "/api/v1/jobs",
        json!({"shell": "echo x", "idempotency_key": "k1"}),
    );
    assert_eq!((again.status, again.json()["id"].as_i64()), (200, Some(c)));
    let dup = post(
        &s,
        "/api/v1/jobs",
        json!({"shell": "echo y", "unique": "u1"}),
    );
    assert_eq!(
        (dup.status, dup.error_kind().as_str()),
        (409, "conflict"),
        "{}",
        dup.body
    );
    for (body, field) in [
        (json!({"shel": "x"}), "shel"),
        (json!({}), "command"),
        (json!({"command": ["x"], "timeout": "soon"}), "timeout"),
        (json!({"command": ["x"], "after": [999999]}), "after"),
        (json!({"command": "not a list"}), "request body"),
    ] {
        let r = post(&s, "/api/v1/jobs", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.error_kind(), "bad_request");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{body}: {}",
            r.body
        );
    }
    let r = request(&s.addr, "POST", "/api/v1/jobs", &[], "{not json");
    assert_eq!(r.status, 400, "{}", r.body);
    let big = format!("{{\"shell\": \"{}\"}}", "a".repeat(1 << 21));
    let r = request(&s.addr, "POST", "/api/v1/jobs", &[], &big);
    assert_eq!(
        (r.status, r.error_kind().as_str()),
        (413, "too_large"),
        "{}",
        r.body
    );

    // Unknown things: 404, with the JSON error.
    for path in [
        "/api/v1/jobs/999999",
        "/api/v1/nope",
        "/api/v1/jobs/999999/log",
    ] {
        let r = get(&s, path);
        assert_eq!(
            (r.status, r.error_kind().as_str()),
            (404, "not_found"),
            "{path}"
        );
    }
    assert_eq!(get(&s, "/api/v1/jobs/abc").status, 400);
    assert_eq!(get(&s, "/api/v1/jobs?limit=x").status, 400);
    assert_eq!(get(&s, "/api/v1/jobs?state=bogus").status, 400);
    let r = post(&s, "/api/v1/jobs/999999/cancel", json!({}));
    assert_eq!(r.status, 404);

    // Cancel, then cancel again (409), retry it (queued), retry a queued job (409).
    let r = post(&s, &format!("/api/v1/jobs/{a}/cancel"), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(r.json()["done"], true);
    let r = post(&s, &format!("/api/v1/jobs/{a}/cancel"), json!({}));
    assert_eq!((r.status, r.error_kind().as_str()), (409, "conflict"));
    let r = post(&s, &format!("/api/v1/jobs/{a}/retry"), json!({}));
    assert_eq!(
        (r.status, r.json()["result"].as_str()),
        (200, Some("queued")),
        "{}",
        r.body
    );
    let r = post(&s, &format!("/api/v1/jobs/{b}/retry"), json!({}));
    assert_eq!(r.status, 409, "{}", r.body);

    // Bulk: by ids (one missing: skipped, with why), and by filter.
    let r = post(&s, "/api/v1/jobs/cancel", json!({"ids": [a, 999999]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["done"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["results"][1]["state"], "not_found");
    let r = post(
        &s,
        "/api/v1/jobs/cancel",
        json!({"queue": "default", "state": "queued", "label": "batch=1"}),
    );
    let v = r.json();
    assert_eq!(v["done"], 1, "{v}");
    assert_eq!(v["results"][0]["id"], b);
    let r = post(
        &s,
        "/api/v1/jobs/retry",
        json!({"state": "cancelled", "queue": "default"}),
    );
    assert_eq!(r.json()["done"], 2, "{}", r.body);
    assert_eq!(post(&s, "/api/v1/jobs/retry", json!({})).status, 400);
    assert_eq!(
        post(&s, "/api/v1/jobs/retry", json!({"ids": [a], "queue": "q"})).status,
        400
    );

    // Pagination: newest first, page by page, nothing missed or repeated.
    for i in 0..5 {
        p.submit(&["-Q", "pages", "--", "echo", &i.to_string()]);
    }
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    for page in 0.. {
        assert!(page < 5, "pagination does not end: {seen:?}");
        let v = get(&s, &format!("/api/v1/jobs?queue=pages&limit=2{cursor}")).json();
        seen.extend(
            v["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_i64().unwrap()),
        );
        match v["next"].as_i64() {
            Some(n) => cursor = format!("&before={n}"),
            None => break,
        }
    }
    let all: Vec<i64> = p
        .json(&["list", "-Q", "pages"])
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, all);
    assert_eq!(seen.len(), 5);

    // A worker: pause and resume it (404 for one that never ran), and logs of its jobs.
    let _w = p.worker("api-w", 2);
    let ws = get(&s, "/api/v1/workers").json();
    let row = ws
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "api-w")
        .cloned()
        .expect("api-w listed");
    assert!(row["cpu_percent"].is_number(), "{row}");
    assert!(row["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{row}");
    let r = post(&s, "/api/v1/workers/api-w/pause", json!({}));
    assert_eq!(
        (r.status, r.json()["paused"].as_bool()),
        (200, Some(true)),
        "{}",
        r.body
    );
    let r = post(&s, "/api/v1/workers/api-w/resume", json!({}));
    assert_eq!(r.json()["paused"], false);
    assert_eq!(
        post(&s, "/api/v1/workers/nobody/pause", json!({})).status,
        404
    );
    let r = post(
        &s,
        "/api/v1/jobs",
        json!({"shell": "echo line1; sleep 1; echo line2"}),
    );
    let id = r.json()["id"].as_i64().unwrap();
    let followed = get(&s, &format!("/api/v1/jobs/{id}/log?follow=1"));
    assert_eq!(followed.status, 200);
    assert_eq!(followed.body, "line1\nline2\n");
    p.wait_job(id, "succeeded", |j| state_of(j) == "succeeded");
    assert_eq!(
        get(&s, &format!("/api/v1/jobs/{id}/log")).body,
        "line1\nline2\n"
    );
    assert_eq!(
        get(&s, &format!("/api/v1/jobs/{id}/log?attempt=1")).body,
        "line1\nline2\n"
    );
    assert_eq!(
        get(&s, &format!("/api/v1/jobs/{id}/log?attempt=2")).status,
        404
    );

    // The OpenAPI document names every route.
    let doc = get(&s, "/api/v1/openapi.json").json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
}

/// SSE: a job event per state change within a liveness bound, and a resume that replays.
fn events_and_resume(p: &Project) {
    let s = p.serve(&[]);
    let mut ev = Events::open(&s, None);
    let id = p.submit(&["--", "true"]);
    let first = ev.until(|e| e.name == "job" && e.data["id"] == id);
    let queued = first.last().unwrap().clone();
    assert_eq!(queued.data["state"], "queued", "{queued:?}");
    let _w = p.worker("sse-w", 1);
    let rest =
        ev.until(|e| e.name == "job" && e.data["id"] == id && e.data["state"] == "succeeded");
    let states: Vec<&str> = rest
        .iter()
        .filter(|e| e.name == "job" && e.data["id"] == id)
        .map(|e| e.data["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "succeeded"], "{rest:?}");
    assert!(
        rest.iter()
            .chain(&first)
            .any(|e| e.name == "worker" && e.data["kind"] == "worker_started"),
        "a worker event for sse-w's start: {first:?} {rest:?}"
    );
    // Reconnect after the queued event: everything since is replayed from the store, in order.
    let mut again = Events::open(&s, Some(queued.id));
    let replay =
        again.until(|e| e.name == "job" && e.data["id"] == id && e.data["state"] == "succeeded");
    let ids: Vec<i64> = replay.iter().map(|e| e.id).collect();
    let want: Vec<i64> = rest.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for w in &want {
        assert!(ids.contains(w), "event {w} replayed: {ids:?} vs {want:?}");
    }
    // A job submitted through the API shows up on the stream too.
    let r = post(&s, "/api/v1/jobs", json!({"command": ["true"]}));
    let api_id = r.json()["id"].as_i64().unwrap();
    again.until(|e| e.name == "job" && e.data["id"] == api_id);
}

#[test]
fn api_routes_and_errors_on_sqlite() {
    routes_and_errors(&Project::new());
}

#[test]
fn api_events_on_sqlite() {
    events_and_resume(&Project::new());
}

#[test]
fn api_routes_and_errors_on_postgres() {
    let Some(url) = super::pg::fresh_db("api") else {
        return;
    };
    routes_and_errors(&Project::with_store(&url));
}

#[test]
fn api_events_on_postgres() {
    let Some(url) = super::pg::fresh_db("apiev") else {
        return;
    };
    events_and_resume(&Project::with_store(&url));
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef-token";

fn token_cross_origin_read_only_and_audit(p: &Project) {
    let id = p.submit(&["--", "true"]);
    let file = p.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let s = p.serve(&["--token-file", file.to_str().unwrap()]);
    let bearer = format!("Bearer {TOKEN}");
    // Without a token: 401 everywhere but /healthz; the dashboard asks for it.
    assert_eq!(get(&s, "/healthz").status, 200);
    for path in ["/api/v1/status", "/metrics", "/api/v1/jobs", "/readyz"] {
        let r = get(&s, path);
        assert_eq!(r.status, 401, "{path}");
        if path.starts_with("/api") {
            assert_eq!(r.error_kind(), "unauthorized");
        }
    }
    let page = get(&s, "/");
    assert_eq!(page.status, 401);
    assert!(page.body.contains("token"), "{}", page.body);
    let wrong = request(
        &s.addr,
        "GET",
        "/api/v1/status",
        &[("Authorization", "Bearer nope")],
        "",
    );
    assert_eq!(wrong.status, 401);
    let ok = request(
        &s.addr,
        "GET",
        "/api/v1/status",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(ok.status, 200);
    // The dashboard's sign-in sets an HttpOnly, SameSite=Strict cookie that then works.
    let form = format!("token={TOKEN}");
    let r = request(
        &s.addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form,
    );
    let cookie = r.header("set-cookie").expect("a cookie").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        request(&s.addr, "GET", "/api/v1/status", &[("Cookie", pair)], "").status,
        200
    );
    // Another origin may not mutate, token or not.
    let path = format!("/api/v1/jobs/{id}/cancel");
    for h in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = request(
            &s.addr,
            "POST",
            &path,
            &[("Authorization", &bearer), h],
            "{}",
        );
        assert_eq!(
            (r.status, r.error_kind().as_str()),
            (403, "forbidden"),
            "{h:?}"
        );
    }
    assert_eq!(state_of(&p.job(id)), "queued");
    let own = format!("http://{}", s.addr);
    let r = request(
        &s.addr,
        "POST",
        &path,
        &[("Authorization", &bearer), ("Origin", &own)],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The mutation is in the store's event log with its source.
    let mut ev = Events::open_with(&s, Some(0), &[("Authorization", &bearer)]);
    let audit = ev.until(|e| e.name == "audit" && e.data["job_id"] == id);
    let d: Value =
        serde_json::from_str(audit.last().unwrap().data["detail"].as_str().unwrap()).unwrap();
    assert_eq!(d["source"], "api");
    assert_eq!(d["token"], true);
    assert_eq!(d["path"], path);
    assert_eq!(d["status"], 200);
    assert!(
        d["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{d}"
    );
    drop(ev);
    drop(s);

    // Read-only: reads work, every mutation is 403.
    let s = p.serve(&["--read-only"]);
    assert_eq!(get(&s, "/api/v1/status").status, 200);
    let r = post(&s, "/api/v1/jobs", json!({"command": ["true"]}));
    assert_eq!((r.status, r.error_kind().as_str()), (403, "forbidden"));
    assert!(r.body.contains("read-only"), "{}", r.body);
}

#[test]
fn token_cross_origin_read_only_and_audit_on_sqlite() {
    token_cross_origin_read_only_and_audit(&Project::new());
}

#[test]
fn token_cross_origin_read_only_and_audit_on_postgres() {
    let Some(url) = super::pg::fresh_db("apitok") else {
        return;
    };
    token_cross_origin_read_only_and_audit(&Project::with_store(&url));
}

#[test]
fn unsafe_listen_addresses_and_short_tokens_are_refused() {
    let p = Project::new();
    let out = p.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("--token-file"),
        "{err}"
    );
    let short = p.path().join("short");
    std::fs::write(&short, "tooshort").unwrap();
    let out = p.run(&["serve", "--token-file", short.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));
    let out = p.run(&["serve", "--listen", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    // With a token (from the environment), a non-loopback address is allowed.
    p.submit(&["--", "true"]);
    let s = p.serve_env(&["--listen", "0.0.0.0:0"], &[("WORKQ_TOKEN", TOKEN)]);
    let port = s.addr.rsplit(':').next().unwrap();
    let r = request(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/api/v1/status",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_locked_sqlite_store_gives_503_and_the_server_recovers() {
    let p = Project::new();
    p.submit(&["--", "true"]);
    let s = p.serve_env(&[], &[("WORKQ_LOCK_TIMEOUT", "300ms")]);
    let c = rusqlite::Connection::open(p.state().join("workq.db")).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; UPDATE jobs SET priority = priority;")
        .unwrap();
    let r = post(&s, "/api/v1/jobs", json!({"command": ["true"]}));
    c.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        (r.status, r.error_kind().as_str()),
        (503, "unavailable"),
        "{}",
        r.body
    );
    assert!(r.body.contains("locked"), "{}", r.body);
    let r = post(&s, "/api/v1/jobs", json!({"command": ["true"]}));
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn a_postgres_outage_gives_503_and_the_server_recovers_without_showing_the_password() {
    let mut cluster = match workq_store::pgtest::Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{e}");
            eprintln!("SKIPPING: {e}");
            return;
        }
    };
    let url = cluster.create_db("outage").unwrap();
    let secret = url.replace("postgres://workq@", "postgres://workq:s3cret@");
    let p = Project::with_store(&secret);
    p.submit(&["--", "true"]);
    let s = p.serve(&[]);
    assert_eq!(get(&s, "/api/v1/status").status, 200);
    let mut ev = Events::open(&s, None);
    cluster.stop_immediate();
    let deadline = Instant::now() + Duration::from_secs(30);
    let down = loop {
        let r = get(&s, "/api/v1/status");
        if r.status == 503 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (down.status, down.error_kind().as_str()),
        (503, "unavailable"),
        "{}",
        down.body
    );
    assert!(!down.body.contains("s3cret"), "{}", down.body);
    assert_eq!(get(&s, "/readyz").status, 503);
    assert_eq!(get(&s, "/healthz").status, 200);
    cluster.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(&s, "/api/v1/status");
        if r.status == 200 {
            assert!(!r.body.contains("s3cret"));
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The event stream goes on after the outage.
    let id = p.submit(&["--", "true"]);
    ev.until(|e| e.name == "job" && e.data["id"] == id);
}
