//! JSON errors: every failure the server answers is JSON. Its own are `{"error": "..."}`
//! (serverless routes: `{"code", "message"}`); what axum and its extractors answer as plain
//! text or an empty body (405, 413 of a chunked body, bad UTF-8 in a path, a malformed
//! multipart body) is rewritten to the same shapes by [`json_errors`]. Internal failures
//! are logged with their cause and answered with a stable message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"error": message.into()}),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// A failure of the server itself: the cause (SQLite, I/O, a join error) is logged, the
    /// client gets a stable message (internal text can reveal paths and schema).
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {cause}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
    }
    /// A body that is already a JSON document (ComfyUI's prompt errors).
    pub fn with_body(status: StatusCode, body: Value) -> ApiError {
        ApiError { status, body }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// 503 with `Retry-After`: the work would cross `--max-memory`.
pub fn over_ceiling(e: &crate::queue::memory::OverCeiling) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// Refuses a request that takes work on (any method but GET, HEAD, OPTIONS) when the process
/// is over `--max-memory`, or when its declared body would take it over once parsed, before
/// the body is read (503 with `Retry-After`, in the family's JSON).
pub async fn memory_guard(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Reads (GET, HEAD, OPTIONS) stay possible: they take no work on.
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return next.run(req).await;
    }
    let need = declared.saturating_mul(crate::queue::memory::BODY_FACTOR);
    if let Err(e) = state.queue.memory.admit(need) {
        let mut r = if is_serverless_path(req.uri().path()) {
            crate::server::serverless::requests::over_ceiling(&e).into_response()
        } else {
            over_ceiling(&e).into_response()
        };
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("10"),
        );
        return r;
    }
    next.run(req).await
}

/// What a client is told about an internal failure (the cause goes to the log).
pub const INTERNAL_MESSAGE: &str = "internal server error; the server log has the cause";

/// Whether a path belongs to the serverless families (their errors carry a `code`).
/// `/v2/userdata` is ComfyUI's (the editor's file browser).
pub fn is_serverless_path(path: &str) -> bool {
    (["/prod/", "/v1/", "/v2/", "/api/admin/"]
        .iter()
        .any(|p| path.starts_with(p))
        && !path.starts_with("/v2/userdata"))
        || matches!(path, "/health" | "/openapi.json" | "/docs" | "/v1")
}

/// Rewrites every error response that is not JSON into the JSON of its route family, keeping
/// the status and headers (`Allow`, `WWW-Authenticate`, `Retry-After`). The text axum gave
/// (bounded) becomes the message; an empty body gets the status's reason.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let serverless = is_serverless_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 2048)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = if status.is_server_error() {
        // Never internal text.
        INTERNAL_MESSAGE.to_string()
    } else if text.is_empty() {
        reason
    } else {
        text
    };
    let body = if serverless {
        json!({"code": family_code(status), "message": message})
    } else {
        json!({"error": message})
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// The serverless error code for a status axum produced.
fn family_code(status: StatusCode) -> &'static str {
    use crate::server::serverless::errors::code;
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => code::BODY_TOO_LARGE,
        StatusCode::UNAUTHORIZED => code::UNAUTHORIZED,
        StatusCode::FORBIDDEN => code::FORBIDDEN,
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        s if s.is_server_error() => code::INTERNAL,
        _ => code::INVALID_REQUEST,
    }
}

/// Parses a JSON body; an empty body is `{}`.
pub fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
