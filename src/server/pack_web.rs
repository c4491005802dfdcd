//! What node packs show the browser, at ComfyUI's routes: `/extensions` (the JS files of
//! every pack's `WEB_DIRECTORY`) and the files under `/extensions/<pack>/`, `/i18n` (the
//! packs' `locales/`), `/workflow_templates` and `/api/workflow_templates/<pack>/<file>`
//! (example workflows), plus `/comfyrs/node_hosts` (the running hosts, their nodes and the
//! classes they cannot run). Without packs the first three answer empty, as ComfyUI does.

use super::AppState;
use crate::remote::comfyui::PackAssets;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

/// The packs' assets and the hosts' report, set by `serve`.
#[derive(Debug, Clone, Default)]
pub struct PackWeb {
    pub assets: Option<Arc<PackAssets>>,
    /// [`crate::remote::NodeHosts::to_json`].
    pub hosts: Value,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/extensions", get(extensions))
        .route("/extensions/{name}/{*path}", get(extension_file))
        .route("/i18n", get(i18n))
        .route("/workflow_templates", get(templates))
        .route("/workflow_templates/{pack}/{*path}", get(template_file))
        .route("/comfyrs/node_hosts", get(hosts))
}

fn assets(s: &AppState) -> Option<Arc<PackAssets>> {
    s.config.custom_nodes.assets.clone()
}

async fn extensions(State(s): State<AppState>) -> Json<Value> {
    Json(json!(assets(&s)
        .map(|a| a.extensions())
        .unwrap_or_default()))
}

async fn i18n(State(s): State<AppState>) -> Json<Value> {
    Json(assets(&s).map(|a| a.i18n()).unwrap_or_else(|| json!({})))
}

async fn templates(State(s): State<AppState>) -> Json<Value> {
    Json(
        assets(&s)
            .map(|a| a.workflow_templates())
            .unwrap_or_else(|| json!({})),
    )
}

async fn hosts(State(s): State<AppState>) -> Json<Value> {
    let h = &s.config.custom_nodes.hosts;
    Json(if h.is_null() { json!([]) } else { h.clone() })
}

async fn extension_file(
    State(s): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    let file = assets(&s).and_then(|a| a.web_file(&name, &path));
    send(file, req).await
}

async fn template_file(
    State(s): State<AppState>,
    Path((pack, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    let file = assets(&s).and_then(|a| a.template_file(&pack, &path));
    send(file, req).await
}

/// A resolved file (types, ranges and conditional requests from tower-http), or the JSON 404.
async fn send(file: Option<std::path::PathBuf>, req: Request) -> Response {
    let uri = req.uri().clone();
    match file {
        Some(f) => match tower_http::services::ServeFile::new(f).oneshot(req).await {
            Ok(r) => r.map(axum::body::Body::new),
            Err(e) => super::error::ApiError::internal(e.to_string()).into_response(),
        },
        None => super::routes::not_found(uri).await.into_response(),
    }
}
