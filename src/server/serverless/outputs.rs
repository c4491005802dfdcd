//! The route serving output files at `/v1/files/{request_id}/{filename}` (the URLs
//! [`super::results`] hands out) to the request's owner, from the job's output-file index (so
//! only files the job produced are reachable).

use super::auth::Caller;
use super::errors::{code, ServerlessError};
use super::requests::load_owned;
use crate::server::paths::{resolve_existing_file, type_dir};
use crate::server::routes::files::{content_type, file_response};
use crate::server::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

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
        // With --outputs s3://..., the file is in object storage.
        Err(_) => {
            let Some(o) = state.queue.objects() else {
                return missing().into_response();
            };
            let Some(key) = o.key(&f.folder_type, &f.subfolder, &f.filename) else {
                return missing().into_response();
            };
            if let Some(Ok(url)) = o.presigned(&key).await {
                return axum::response::Redirect::temporary(&url).into_response();
            }
            return match o.get(&key).await {
                Ok(Some(bytes)) => file_response(bytes, content_type(&f.filename), &f.filename),
                Ok(None) => missing().into_response(),
                Err(e) => {
                    tracing::error!("{e}");
                    missing().into_response()
                }
            };
        }
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => file_response(bytes, content_type(&f.filename), &f.filename),
        Err(_) => missing().into_response(),
    }
}
