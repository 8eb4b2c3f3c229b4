//! Who may do what: the bearer token (or the dashboard's cookie carrying it), compared in
//! constant time; mutations from another origin refused, so a web page in the user's browser
//! cannot drive a loopback server; read-only mode; and one audit row per mutation, naming its
//! source (README "workq serve", Security).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::{ApiError, Shared};

/// The cookie the dashboard keeps the token in.
pub const COOKIE: &str = "workq_token";

/// Checks every request; records every mutation that reached a handler.
pub async fn guard(
    State(state): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if path == "/healthz" {
        return next.run(req).await;
    }
    if state.settings.token.is_none() {
        if let Some(why) = foreign_host(req.headers()) {
            return ApiError::forbidden(format!("{method} {path} refused: {why}"))
                .with_hint("without a token the server answers only requests addressed to 127.0.0.1, [::1] or localhost; give it a token (--token-file) to serve other names")
                .into_response();
        }
    }
    if mutating {
        if let Some(why) = cross_origin(req.headers()) {
            return ApiError::forbidden(format!("{method} {path} refused: {why}"))
                .with_hint("changes are accepted only from the dashboard's own page or from clients that send no Origin")
                .into_response();
        }
    }
    let authed = match &state.settings.token {
        None => false,
        Some(token) => {
            let given =
                bearer(req.headers()).or_else(|| cookie(req.headers()).and_then(|c| unhex(&c)));
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => true,
                _ if path == "/login" => false,
                _ if method == Method::GET
                    && !path.starts_with("/api/")
                    && path != "/metrics"
                    && path != "/readyz" =>
                {
                    // The dashboard's page asks for the token (and assets need none of it).
                    return super::assets::login_page(path == "/").into_response();
                }
                _ => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "a valid token is required")
                        .with_hint("send Authorization: Bearer TOKEN (the token workq serve was started with)")
                        .into_response();
                }
            }
        }
    };
    if mutating && state.settings.read_only && path != "/login" && path != "/logout" {
        return ApiError::forbidden(format!(
            "{method} {path} refused: this server is read-only (--read-only or serve.read_only)"
        ))
        .into_response();
    }
    let response = next.run(req).await;
    if mutating && path.starts_with("/api/") {
        audit(&state, &method, &path, remote, authed, response.status());
    }
    response
}

/// Why a mutating request counts as cross-origin, if it does: a `Sec-Fetch-Site` of
/// `cross-site`, or an `Origin` other than the server's own (`http://` + `Host`).
fn cross_origin(h: &HeaderMap) -> Option<String> {
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    if text(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Some(
            "the browser says it comes from another site (Sec-Fetch-Site: cross-site)".into(),
        );
    }
    let origin = h.get(header::ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some("its Origin header is not text".into());
    };
    let host = text(header::HOST).unwrap_or("");
    let own = [format!("http://{host}"), format!("https://{host}")];
    if host.is_empty() || !own.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        return Some(format!("it comes from another origin ({origin})"));
    }
    None
}

/// Why a request to a server without a token is refused because of its `Host`: a name other
/// than a loopback address or `localhost` is how DNS rebinding reaches a loopback server
/// (a page of evil.example, its name re-pointed at 127.0.0.1, would count as same-origin).
fn foreign_host(h: &HeaderMap) -> Option<String> {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Some("it names no Host".into());
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(n, _)| n).unwrap_or(host),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| format!("it is addressed to {host}, not to this machine's loopback"))
}

fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Appends the mutation to the store's event log (kind `api`) in the background: the answer
/// has been decided and is not held up by the audit write.
fn audit(
    state: &Shared,
    method: &Method,
    path: &str,
    remote: SocketAddr,
    token: bool,
    status: StatusCode,
) {
    let job = path
        .strip_prefix("/api/v1/jobs/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| id.parse::<i64>().ok());
    let detail = json!({
        "source": "api", "method": method.as_str(), "path": path,
        "remote": remote.to_string(), "token": token, "status": status.as_u16(),
    })
    .to_string();
    let pool = state.pool.clone();
    tokio::task::spawn_blocking(move || {
        let _ = pool.with(|c| {
            c.store()
                .record_event("api", job, None, &detail)
                .map_err(ApiError::from)
        });
    });
}

/// `POST /login` with a form or JSON field `token`: sets the HttpOnly, SameSite=Strict cookie
/// and sends the browser to the dashboard.
pub async fn login(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let given = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .or_else(|| {
            text.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "token")
                .map(|(_, v)| percent_decode(v))
        })
        .unwrap_or_default();
    let Some(token) = &state.settings.token else {
        return Redirect::to("/").into_response();
    };
    if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        return super::assets::login_page_with_error().into_response();
    }
    // Hex, so any token (spaces, `;`, non-ASCII) makes a valid cookie.
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        hex(given.trim().as_bytes())
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`: forgets the cookie.
pub async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text a [`hex`] cookie holds; `None` when it is not hex of UTF-8.
fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `application/x-www-form-urlencoded` value decoding (`+` is a space).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn cookies_carry_any_token_as_hex() {
        let t = "a; b,c é";
        assert_eq!(unhex(&hex(t.as_bytes())).as_deref(), Some(t));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn without_a_token_only_loopback_names_are_served() {
        let with = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            foreign_host(&h)
        };
        for ok in [
            "127.0.0.1:7878",
            "localhost:1",
            "[::1]:7878",
            "127.0.0.2",
            "LOCALHOST:9",
        ] {
            assert!(with(ok).is_none(), "{ok}");
        }
        for bad in [
            "evil.example:7878",
            "192.168.1.5:7878",
            "[fe80::1]:7878",
            "localhost.evil:7878",
        ] {
            assert!(with(bad).is_some(), "{bad}");
        }
        assert!(foreign_host(&HeaderMap::new()).is_some());
    }

    #[test]
    fn form_values_decode() {
        assert_eq!(percent_decode("a%2Bb+c%3d"), "a+b c=");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn only_the_servers_own_origin_may_mutate() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7878".parse().unwrap());
        assert!(cross_origin(&h).is_none());
        h.insert(header::ORIGIN, "http://127.0.0.1:7878".parse().unwrap());
        assert!(cross_origin(&h).is_none());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(cross_origin(&h).is_some());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_origin(&h).is_some());
    }
}
