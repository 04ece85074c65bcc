//! The one error type of the HTTP API, and the one place it becomes a status
//! code and a `{"error": ...}` body.
//!
//! Modules return their own meaning ("this field is wrong", "S3 refused us");
//! only [`IntoResponse`] below knows about HTTP. Messages are written for the
//! caller and say what to change; none may carry a secret (the S3 layer
//! scrubs credentials before an error gets here).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The body is not JSON at all.
    #[error("Invalid JSON")]
    InvalidJson,

    /// A field is missing, has the wrong type, or holds a value that cannot
    /// be used. The message names the field (and the row, for data).
    #[error("{0}")]
    Invalid(String),

    /// The caller's SQL was refused or failed in DuckDB (syntax, unknown
    /// table or column, a statement that is not a read).
    #[error("{0}")]
    Sql(String),

    /// The request asks for something this gateway is configured to refuse.
    #[error("{0}")]
    Forbidden(String),

    /// An authenticated route was called without the right token.
    #[error("{0}")]
    Unauthorized(String),

    #[error("{0}")]
    NotFound(String),

    #[error("request body is larger than the {limit}-byte limit; split it into smaller requests")]
    PayloadTooLarge { limit: usize },

    /// Admission control said no: the route's queue is full.
    #[error("{message}")]
    Busy { message: String, extra: Map<String, Value> },

    /// The work took longer than allowed and was cancelled.
    #[error("{0}")]
    Timeout(String),

    /// The object store failed or refused us.
    #[error("{0}")]
    Upstream(String),

    /// A bug or an environment failure on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Error::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidJson | Error::Invalid(_) | Error::Sql(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.to_string()));
        if let Error::Busy { extra, .. } = self {
            body.extend(extra);
        }
        (status, Json(Value::Object(body))).into_response()
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Internal(format!("worker task failed: {err}"))
    }
}

/// A JSON error body for places that are not handlers (fallbacks, rejections).
pub fn error_body(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

impl From<crate::live::pool::ReadError> for Error {
    fn from(err: crate::live::pool::ReadError) -> Self {
        use crate::live::pool::ReadError;
        match err {
            ReadError::Refused(r) => Error::Sql(r.to_string()),
            ReadError::Sql(m) => Error::Sql(m),
            ReadError::Timeout(_) => Error::Timeout(err.to_string()),
            ReadError::TooLarge(_) => Error::Invalid(err.to_string()),
            ReadError::Internal(m) => Error::Internal(m),
        }
    }
}
