//! Output files as hosted URLs: each `{filename, subfolder, type}` item of a result gets a
//! `url` under `/v1/files/{request_id}/{filename}`, served to the request's owner from the
//! job's output-file index (so only files the job produced are reachable).

use super::auth::Caller;
use super::errors::{code, ServerlessError};
use super::requests::load_owned;
use crate::server::paths::{resolve_existing_file, type_dir};
use crate::server::routes::files::{content_type, file_response};
use crate::server::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

pub fn api() -> Vec<super::openapi::ApiRoute> {
    vec![super::openapi::ApiRoute::new(
        "GET",
        "/v1/files/{id}/{filename}",
        "Requests",
        "An output file of one of the caller's requests",
        get(serve_file),
    )
    .returns_file()]
}

/// The URL of one output file.
pub fn file_url(base: &str, request_id: &str, filename: &str) -> String {
    format!("{base}/v1/files/{request_id}/{}", encode_segment(filename))
}

/// A copy of history `outputs` with a `url` on every item that names a file.
pub fn outputs_with_urls(base: &str, request_id: &str, outputs: &Value) -> Value {
    let mut out = outputs.clone();
    if let Some(nodes) = out.as_object_mut() {
        for ui in nodes.values_mut() {
            let Some(ui) = ui.as_object_mut() else {
                continue;
            };
            for items in ui.values_mut() {
                for it in items.as_array_mut().into_iter().flatten() {
                    let Some(name) = it.get("filename").and_then(Value::as_str) else {
                        continue;
                    };
                    let url = file_url(base, request_id, name);
                    if let Some(o) = it.as_object_mut() {
                        // `url` first, like the hosted services' examples.
                        let mut with = serde_json::Map::new();
                        with.insert("url".into(), Value::String(url));
                        with.extend(std::mem::take(o));
                        *o = with;
                    }
                }
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn serve_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, filename)): Path<(String, String)>,
) -> Response {
    let missing = || {
        ServerlessError::not_found(
            code::FILE_NOT_FOUND,
            format!("request {id} has no output file {filename:?}"),
        )
    };
    let files = {
        let (state, id) = (state.clone(), id.clone());
        crate::server::blocking(move || {
            let (job, _) = load_owned(&state, &caller, &id, None)?;
            state
                .queue
                .store()
                .output_files(&job.id)
                .map_err(ServerlessError::from)
        })
        .await
    };
    let files = match files {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(f) = files.iter().find(|f| f.filename == filename) else {
        return missing().into_response();
    };
    let Some(dir) = type_dir(state.queue.env(), &f.folder_type) else {
        return missing().into_response();
    };
    let path = match resolve_existing_file(&dir, &f.subfolder, &f.filename) {
        Ok(p) => p,
        Err(_) => return missing().into_response(),
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => file_response(bytes, content_type(&f.filename), &f.filename),
        Err(_) => missing().into_response(),
    }
}
