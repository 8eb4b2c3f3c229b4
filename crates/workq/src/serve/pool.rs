//! A small pool of store handles for the server's blocking tasks. `Store` is `Send` but not
//! `Sync` (ARCHITECTURE.md §1), so each request borrows a whole handle. A handle whose call
//! found the store unavailable is dropped, not returned: the next request opens a fresh one,
//! which is how the server recovers once the store is back.

use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::error::{CliError, ErrorKind};
use crate::serve::ApiError;

/// Idle handles kept; more may be open at once under load, and are closed when returned.
const MAX_IDLE: usize = 4;

/// Store handles for the server.
pub struct Pool {
    ctx: Arc<Context>,
    idle: Mutex<Vec<workq::Client>>,
}

impl Pool {
    /// A pool that opens the store `ctx` names, on demand.
    pub fn new(ctx: &Arc<Context>) -> Pool {
        Pool {
            ctx: ctx.clone(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens a new handle.
    pub fn open(&self) -> Result<workq::Client, CliError> {
        self.ctx.client()
    }

    /// Runs `f` with a handle, on the calling (blocking) thread.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&workq::Client) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let taken = self.idle.lock().ok().and_then(|mut v| v.pop());
        let client = match taken {
            Some(c) => c,
            None => self.open().map_err(ApiError::from)?,
        };
        let out = f(&client);
        let broken = matches!(&out, Err(e) if e.is_unavailable());
        if !broken {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < MAX_IDLE {
                    idle.push(client);
                }
            }
        } else if let Ok(mut idle) = self.idle.lock() {
            // The others were opened before the outage too: start afresh.
            idle.clear();
        }
        out
    }

    /// Runs `f` with a handle on the blocking pool, from async code.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&workq::Client) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let pool = self.clone();
        match tokio::task::spawn_blocking(move || pool.with(f)).await {
            Ok(out) => out,
            Err(e) => Err(ApiError::from(CliError::new(
                ErrorKind::Failed,
                format!("a store call did not complete: {e}"),
            ))),
        }
    }
}
