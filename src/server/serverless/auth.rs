//! Who is calling: `Authorization: Bearer <token>` resolved to the token's name (the owner of
//! the requests it creates), and `X-API-Key` for the admin routes.
//!
//! The serverless routes do not go through the ComfyUI guard's single-token check: they accept
//! any configured API token. The loopback origin check still applies.

use super::errors::{code, ServerlessError};
use crate::server::auth::is_cross_site;
use crate::server::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The owner of requests made without any token configured.
pub const ANONYMOUS: &str = "anonymous";

/// The caller's identity, put in the request extensions by [`guard`].
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub owner: String,
    /// Admin rights: every deployment is visible (requests stay with their owner).
    pub admin: bool,
}

/// Rejects cross-site requests and requests without a valid token (when tokens exist).
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_cross_site(req.headers()) {
        return ServerlessError::new(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            "cross-site request to a loopback server refused",
        )
        .into_response();
    }
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > state.serverless.config.max_body_bytes as u64);
    if too_big {
        return body_too_large(state.serverless.config.max_body_bytes).into_response();
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    match state.serverless.caller_of(bearer.as_deref()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            let mut r = e.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

pub fn body_too_large(limit: usize) -> ServerlessError {
    ServerlessError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::BODY_TOO_LARGE,
        format!("request body larger than the limit of {limit} bytes"),
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ServerlessError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ServerlessError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, "no caller")
        })
    }
}

/// Constant-time comparison, so token checks leak no timing.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
