//! HTTP byte ranges for file responses (`/view` of a stored file answers `Range` with 206, as
//! ComfyUI's aiohttp FileResponse does): one `bytes=a-b`, `a-` or `-n` range; anything else
//! is served whole; a range past the end is 416.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A range that starts past the end (416).
#[derive(Debug, PartialEq)]
pub struct Unsatisfiable;

/// The byte range `[start, end]` (inclusive) a `Range` header asks of `len` bytes.
/// `Ok(None)`: no usable range (serve whole).
pub fn parse(value: &str, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return Ok(None);
            };
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return Ok(None),
                }
            };
            (start, end)
        }
    };
    if len == 0 || range.0 >= len {
        return Err(Unsatisfiable);
    }
    Ok(Some(range))
}

/// `full` (a complete 200 response for `bytes`) narrowed to the request's range, if any.
pub fn apply(
    headers: &HeaderMap,
    bytes: Vec<u8>,
    full: impl FnOnce(Vec<u8>) -> Response,
) -> Response {
    let len = bytes.len() as u64;
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match asked.map(|v| parse(v, len)) {
        None | Some(Ok(None)) => {
            let mut r = full(bytes);
            r.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return r;
        }
        Some(Err(Unsatisfiable)) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Some(Ok(Some(r))) => r,
    };
    let (start, end) = range;
    let part = bytes[start as usize..=end as usize].to_vec();
    let mut r = full(part);
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::{parse, Unsatisfiable};

    #[test]
    fn ranges() {
        assert_eq!(parse("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(parse("bytes=100-", 100), Err(Unsatisfiable));
        assert_eq!(parse("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse("items=0-1", 100), Ok(None));
        assert_eq!(parse("bytes=5-2", 100), Ok(None));
    }
}
