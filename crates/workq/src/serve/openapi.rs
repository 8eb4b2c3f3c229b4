//! `GET /api/v1/openapi.json`.

use axum::Json;
use serde_json::{json, Value};

/// The document.
pub async fn document() -> Json<Value> {
    Json(json!({"openapi": "3.1.0"}))
}
