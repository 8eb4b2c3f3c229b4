//! API errors: `{"error": {"kind", "message", "hint"}}` with the HTTP status of their kind.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::{CliError, ErrorKind};

/// A failed request: its status, a machine-readable kind and a message naming what failed.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `too_large`,
    /// `unavailable`, `internal`.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl ApiError {
    /// An error with this status and message; the kind follows from the status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: kind_of(status),
            message: message.into(),
            hint: None,
        }
    }

    /// 400: the request is malformed (name the field in `message`).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }

    /// True when the store could not be reached (the handle that saw it is not reused).
    pub fn is_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut e = json!({"kind": self.kind, "message": self.message});
        if let Some(h) = &self.hint {
            e["hint"] = json!(h);
        }
        json!({ "error": e })
    }
}

fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        503 => "unavailable",
        504 => "timeout",
        _ => "internal",
    }
}

impl From<CliError> for ApiError {
    fn from(e: CliError) -> ApiError {
        let status = match e.kind() {
            ErrorKind::Usage => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Failed | ErrorKind::Interrupted => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            kind: kind_of(status),
            message: e.message().to_string(),
            hint: e.hint().map(str::to_string),
        }
    }
}

impl From<workq::Error> for ApiError {
    fn from(e: workq::Error) -> ApiError {
        ApiError::from(CliError::from(e))
    }
}

impl From<workq_store::StoreError> for ApiError {
    fn from(e: workq_store::StoreError) -> ApiError {
        ApiError::from(CliError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
