//! The dashboard: HTML, CSS and JavaScript compiled into the binary (no CDN, no build step).
//!
//! The page talks only to this server's `/api/v1` (same origin, the login cookie rides along),
//! so its Content-Security-Policy can forbid everything else: no request leaves the machine.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only this server's own scripts, styles and API; no inline script (the page has none), so
/// text that reaches the DOM can never run even if some escaping were missed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`: the dashboard.
pub async fn index() -> Response {
    (
        [
            // The page names its assets without a version, so it must be revalidated each time
            // to pick up a new binary's assets.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(INDEX),
    )
        .into_response()
}

/// `GET /assets/app.js`.
pub async fn app_js(headers: HeaderMap) -> Response {
    asset(&headers, APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/app.css`.
pub async fn app_css(headers: HeaderMap) -> Response {
    asset(&headers, APP_CSS, "text/css; charset=utf-8")
}

/// An asset with an ETag of its content: `no-cache` makes the browser ask each time (an
/// upgraded binary serves new assets under the same URL), and the ETag turns that question
/// into a 304 when nothing changed.
fn asset(headers: &HeaderMap, body: &'static str, content_type: &'static str) -> Response {
    let etag = format!("\"{:016x}\"", fnv1a(body.as_bytes()));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    // The tag is hex digits in quotes, always a valid header value; the fallback is never used.
    let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if cached {
        return (StatusCode::NOT_MODIFIED, common, [(header::ETAG, tag)], ()).into_response();
    }
    (
        common,
        [
            (header::ETAG, tag),
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        ],
        body,
    )
        .into_response()
}

/// FNV-1a, 64 bits: enough to tell two builds' assets apart, and no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The page that asks for the token (401); `root` when it stands in for the dashboard itself.
pub fn login_page(root: bool) -> Response {
    let _ = root;
    login_with("")
}

/// The token page after a wrong token.
pub fn login_page_with_error() -> Response {
    login_with("<p class=err>That token is not the one this server was started with.</p>")
}

fn login_with(message: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><title>workq: sign in</title>\
<style>body{{font:16px system-ui,sans-serif;max-width:28em;margin:4em auto;padding:0 1em}}input{{width:100%;padding:.5em;font:inherit}}.err{{color:#c00}}@media(prefers-color-scheme:dark){{body{{background:#111;color:#ddd}}input{{background:#222;color:#ddd}}}}</style></head>\
<body><h1>workq</h1><p>This server needs its token (the one in its --token-file or WORKQ_TOKEN).</p>{message}\
<form method=post action=/login><input type=password name=token autocomplete=current-password autofocus placeholder=token><p><button type=submit>Sign in</button></p></form></body></html>"
    );
    (StatusCode::UNAUTHORIZED, Html(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_asset_is_not_sent_again() {
        let first = asset(&HeaderMap::new(), APP_JS, "text/javascript");
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(
            asset(&h, APP_JS, "text/javascript").status(),
            StatusCode::NOT_MODIFIED
        );
        let mut other = HeaderMap::new();
        other.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"1\""));
        assert_eq!(
            asset(&other, APP_JS, "text/javascript").status(),
            StatusCode::OK
        );
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX.contains("src=\"/assets/app.js\""));
        assert!(INDEX.contains("href=\"/assets/app.css\""));
        // No inline script: the CSP would block it.
        assert!(!INDEX.contains("<script>"));
        for text in [INDEX, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn")
            );
            // Data is put in the DOM as text, never parsed as HTML.
            assert!(!text.contains("innerHTML") && !text.contains("insertAdjacentHTML"));
        }
    }
}
