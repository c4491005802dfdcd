//! The request guard, in ComfyUI's middleware order: body size, CORS or the loopback origin
//! check (spec §2.1), then the optional bearer token.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let cfg = &state.config;
    // 1. Body size (a chunked body over the limit is caught by DefaultBodyLimit).
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > cfg.max_upload_bytes as u64);
    if too_big {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than the limit of {} bytes (--max-upload-size)",
                cfg.max_upload_bytes
            ),
        )
        .into_response();
    }
    // 2. CORS or the origin check.
    if let Some(origin) = &cfg.cors_origin {
        let mut resp = if req.method() == Method::OPTIONS {
            StatusCode::OK.into_response()
        } else {
            check_token(&state, req, next).await
        };
        add_cors(resp.headers_mut(), origin);
        return resp;
    }
    if is_cross_site(req.headers()) {
        return ApiError::forbidden("cross-site request to a loopback server refused")
            .into_response();
    }
    if req.method() == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    check_token(&state, req, next).await
}

async fn check_token(state: &AppState, req: Request, next: Next) -> Response {
    match comfy_access(state, &req) {
        Ok(()) => next.run(req).await,
        Err(message) => {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Who may use the ComfyUI routes. They have no notion of an owner (every job, file and the
/// queue are visible there), so they take the server's `--token` or an admin API token.
/// Open only when no credential is configured at all, or with `--no-auth` when none of the
/// configured ones is for these routes.
fn comfy_access(state: &AppState, req: &Request) -> Result<(), &'static str> {
    let sl = &state.serverless;
    if !sl.has_credentials() {
        return Ok(());
    }
    if state.config.allow_no_auth && !sl.has_admin_token() {
        return Ok(());
    }
    let granted = presented_secrets(req).any(|secret| {
        sl.token_owner(&secret)
            .is_some_and(|owner| sl.is_admin(&owner))
    }) || crate::server::frontend::session_cookies(req.headers())
        .any(|value| sl.admin_session(value));
    if granted {
        Ok(())
    } else if sl.has_admin_token() {
        Err(
            "missing or wrong token: send 'Authorization: Bearer <token>' (or ?token=) with \
             the server token or an admin API token; browsers open the editor once at /?token=<token>",
        )
    } else {
        Err(
            "the ComfyUI API takes the server token (--token) or an admin API token, and \
             this server has neither; API tokens only open the serverless routes",
        )
    }
}

/// The secrets a request presents: the Bearer header and `?token=` values. (Browsers running
/// the editor present the session cookie instead, set by `GET /?token=...`.)
fn presented_secrets(req: &Request) -> impl Iterator<Item = String> + '_ {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let query = req.uri().query().into_iter().flat_map(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("token=").map(percent_decode))
    });
    header.into_iter().chain(query)
}

/// Minimal %XX decoding for query values.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn add_cors(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, DELETE, PUT, OPTIONS, PATCH"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

/// `(host, port)` of `host[:port]` (IPv6 in brackets).
fn split_host_port(s: &str) -> (String, Option<u16>) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_ascii_lowercase(), port);
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_ascii_lowercase(), p.parse().ok()),
        _ => (s.to_ascii_lowercase(), None),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// ComfyUI's check: a request with Host and Origin, whose Host is loopback and whose Origin
/// names another host (ports compared only when both have one), is refused.
pub fn is_cross_site(h: &HeaderMap) -> bool {
    let (Some(host), Some(origin)) = (
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
        h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let (hh, hp) = split_host_port(host);
    if !is_loopback_host(&hh) {
        return false;
    }
    let Some((_, rest)) = origin.split_once("://") else {
        // "null" or garbage from a loopback page: not the same origin.
        return true;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (oh, op) = split_host_port(authority);
    if hh != oh {
        return true;
    }
    matches!((hp, op), (Some(a), Some(b)) if a != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h
    }

    #[test]
    fn origin_check() {
        assert!(!is_cross_site(&headers(
            "127.0.0.1:8188",
            "http://127.0.0.1:8188"
        )));
        assert!(!is_cross_site(&headers(
            "127.0.0.1:8188",
            "http://127.0.0.1"
        )));
        assert!(is_cross_site(&headers("127.0.0.1:8188", "http://evil.com")));
        assert!(is_cross_site(&headers(
            "localhost:8188",
            "http://localhost:9999"
        )));
        assert!(is_cross_site(&headers(
            "[::1]:8188",
            "http://127.0.0.1:8188"
        )));
        assert!(!is_cross_site(&headers("example.com", "http://evil.com")));
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%20b+c%2F"), "a b c/");
        assert_eq!(percent_decode("%"), "%");
    }
}
