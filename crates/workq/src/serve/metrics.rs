//! `GET /metrics`: Prometheus text format.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Shared};

/// The scrape.
pub async fn scrape(State(s): State<Shared>) -> Response {
    let _ = s;
    ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "metrics are being built",
    )
    .into_response()
}
