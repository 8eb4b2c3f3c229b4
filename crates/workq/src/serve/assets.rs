//! The dashboard: HTML, CSS and JavaScript compiled into the binary (no CDN, no build step).

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");

/// `GET /`: the dashboard.
pub async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX)).into_response()
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
