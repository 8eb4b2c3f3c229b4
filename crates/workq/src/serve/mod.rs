//! `workq serve`: the HTTP API (`/api/v1`), the live dashboard (`/`), Server-Sent Events and
//! Prometheus metrics, over the same library calls and JSON documents as the CLI
//! (`crate::views`). axum on a current-thread tokio runtime; every store call runs on the
//! blocking pool with a handle from a small pool of store connections (`pool.rs`), so no
//! request holds a write lock longer than its own transaction (ARCHITECTURE.md §10).

mod api;
mod assets;
mod error;
mod events;
mod logs;
mod metrics;
mod openapi;
mod pool;
mod routes;
mod security;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use std::future::IntoFuture;

use crate::context::Context;
use crate::error::{CliError, CmdResult};

pub use error::ApiError;
pub use pool::Pool;

/// The shortest token accepted, in bytes: guessing it must be out of reach.
pub const MIN_TOKEN_BYTES: usize = 32;

/// How long requests in flight may go on after SIGTERM before the server exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How `workq serve` was asked to run, resolved from flags, environment and config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The bearer token, when one is configured.
    pub token: Option<String>,
    /// Where the token came from, for messages (never the token itself).
    pub token_source: Option<String>,
    /// Refuse every mutation.
    pub read_only: bool,
}

/// What every request handler shares.
pub struct AppState {
    /// Store connections.
    pub pool: Arc<Pool>,
    /// The resolved command-line context (config for submit defaults, paths).
    pub ctx: Arc<Context>,
    /// The server's settings.
    pub settings: Settings,
    /// Live event fan-out for `/api/v1/events`.
    pub events: events::Hub,
    /// This host's name, for the per-host worker pause flags.
    pub host: String,
}

/// Shared state handle.
pub type Shared = Arc<AppState>;

/// Resolves the listen address, token and read-only flag: flags over `WORKQ_SERVE__*` and
/// config (already merged into `ctx.config`), over the defaults. A non-loopback address
/// without a token, or a short or unreadable token, is a usage error saying why.
pub fn resolve(
    ctx: &Context,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    read_only: bool,
) -> Result<Settings, CliError> {
    let (listen_text, listen_origin) = match listen {
        Some(l) => (l, "--listen".to_string()),
        None => (
            ctx.config
                .str("serve.listen")
                .unwrap_or_else(|| "127.0.0.1:7878".into()),
            format!("serve.listen ({})", ctx.config.source("serve.listen")),
        ),
    };
    let listen: SocketAddr =
        parse_listen(&listen_text).map_err(|e| CliError::usage(format!("{listen_origin}: {e}")))?;
    let root = ctx
        .state_dir
        .parent()
        .unwrap_or(&ctx.state_dir)
        .to_path_buf();
    let file = match token_file {
        Some(f) => Some((f, "--token-file".to_string())),
        None => ctx.config.str("serve.token_file").map(|f| {
            (
                root.join(f),
                format!(
                    "serve.token_file ({})",
                    ctx.config.source("serve.token_file")
                ),
            )
        }),
    };
    let (token, token_source) = match file {
        Some((path, origin)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                CliError::unreadable(format!("{origin} {}", path.display()), e)
                    .with_hint("write a token of at least 32 bytes there, e.g.: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE")
            })?;
            (
                Some(text.trim().to_string()),
                Some(format!("{origin} {}", path.display())),
            )
        }
        None => match std::env::var("WORKQ_TOKEN") {
            Ok(t) if !t.trim().is_empty() => {
                (Some(t.trim().to_string()), Some("WORKQ_TOKEN".into()))
            }
            _ => (None, None),
        },
    };
    if let (Some(t), Some(src)) = (&token, &token_source) {
        if t.len() < MIN_TOKEN_BYTES {
            return Err(CliError::usage(format!(
                "the token from {src} is {} bytes long; at least {MIN_TOKEN_BYTES} bytes are needed",
                t.len()
            ))
            .with_hint("make one with: head -c 32 /dev/urandom | base64"));
        }
    }
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(CliError::usage(format!(
            "refusing to listen on {listen} ({listen_origin}) without a token: anyone who can reach it could run commands as you"
        ))
        .with_hint("give a token of at least 32 bytes with --token-file FILE or WORKQ_TOKEN, or listen on 127.0.0.1"));
    }
    let read_only = read_only || ctx.config.bool("serve.read_only").unwrap_or(false);
    Ok(Settings {
        listen,
        token,
        token_source,
        read_only,
    })
}

/// `HOST:PORT`, `[V6]:PORT`, or `:PORT` (loopback).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let full = if t.starts_with(':') {
        format!("127.0.0.1{t}")
    } else if t == "localhost" || t.starts_with("localhost:") {
        t.replacen("localhost", "127.0.0.1", 1)
    } else {
        t.to_string()
    };
    full.parse().map_err(|_| {
        format!("{text:?} is not an address and port such as 127.0.0.1:7878 or [::1]:7878")
    })
}

/// Every route of `routes::ROUTES`, with the security layer around all of them.
pub fn router(state: Shared) -> Router {
    routes::table_router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs the server until SIGTERM or Ctrl-C; `on_listening` hears the bound address (the port
/// is known only then when 0 was asked) before the first request is served.
pub fn run(
    ctx: Context,
    settings: Settings,
    on_listening: &mut dyn FnMut(SocketAddr),
) -> CmdResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .map_err(|e| CliError::unavailable(format!("cannot start the server's runtime: {e}")))?;
    // The store is created on first use, as `worker start` does; one that cannot be reached
    // now is no reason not to start (requests get 503 until it is back), anything else is.
    match ctx.client() {
        Ok(_) => {}
        Err(e) if e.kind() == crate::error::ErrorKind::Unavailable => {
            eprintln!("workq serve: the store is unavailable for now ({}); requests get 503 until it answers", e.message());
        }
        Err(e) => return Err(e),
    }
    let ctx = Arc::new(ctx);
    let pool = Arc::new(Pool::new(&ctx));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| {
                CliError::unavailable(format!("cannot listen on {}: {e}", settings.listen))
                    .with_hint(
                    "another program may use that port: pick another with --listen 127.0.0.1:PORT",
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::unavailable(format!("cannot read the bound address: {e}")))?;
        let events = events::Hub::start(pool.clone());
        let state = Arc::new(AppState {
            pool,
            ctx,
            settings,
            events,
            host: workq_runtime::procinfo::hostname(),
        });
        let app = router(state.clone());
        on_listening(addr);
        // Under systemd (a Type=notify unit) the service is up once it listens.
        workq_runtime::sdnotify::ready();
        let stop = Arc::new(tokio::sync::Notify::new());
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown({
            let stop = stop.clone();
            async move { stop.notified().await }
        });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            out = &mut server => {
                out.map_err(|e| CliError::unavailable(format!("the server failed: {e}")))?;
            }
            _ = shutdown_signal() => {
                // Streams (events, followed logs) never end by themselves: end them, let the
                // requests in flight finish, and go after SHUTDOWN_GRACE whatever is left.
                stop.notify_one();
                workq_runtime::sdnotify::stopping();
                state.events.close();
                if let Ok(out) = tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                    out.map_err(|e| CliError::unavailable(format!("the server failed: {e}")))?;
                } else {
                    eprintln!("workq serve: requests still open after {}s; closing them", SHUTDOWN_GRACE.as_secs());
                }
            }
        }
        state.events.close();
        Ok(0)
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        // Without signal handlers the default action (exit) still stops the server.
        _ => std::future::pending::<()>().await,
    }
}
