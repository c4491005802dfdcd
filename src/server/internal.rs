//! `/internal/*` (ComfyUI's `api_server/routes/internal`, no `/api` alias): the terminal
//! panel's logs, the model folder paths for the missing-models dialog, and the file lists of
//! input/output/temp.

use super::error::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/logs", get(logs_text))
        .route("/internal/logs/raw", get(logs_raw))
        .route("/internal/logs/subscribe", patch(subscribe))
        .route("/internal/folder_paths", get(folder_paths))
        .route("/internal/files/{kind}", get(files))
}

async fn logs_text() -> Response {
    let text: String = super::logs::entries()
        .iter()
        .map(|e| {
            format!(
                "{} - {}",
                e["t"].as_str().unwrap_or(""),
                e["m"].as_str().unwrap_or("")
            )
        })
        .collect();
    Json(json!(text)).into_response()
}

async fn logs_raw() -> Response {
    let (cols, rows) = super::logs::SIZE;
    Json(json!({"entries": super::logs::entries(), "size": {"cols": cols, "rows": rows}}))
        .into_response()
}

async fn subscribe(body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(format!("invalid JSON body: {e}")).into_response(),
    };
    let (Some(client), Some(enabled)) = (v["clientId"].as_str(), v["enabled"].as_bool()) else {
        return ApiError::bad_request("expected {\"clientId\": string, \"enabled\": bool}")
            .into_response();
    };
    super::logs::set_subscribed(client, enabled);
    StatusCode::OK.into_response()
}

async fn folder_paths(State(s): State<AppState>) -> Response {
    let paths = &s.queue.env().paths;
    let mut out = serde_json::Map::new();
    for f in super::model_library::MODEL_FOLDERS
        .iter()
        .chain(["configs", "custom_nodes"].iter())
    {
        let dirs: Vec<String> = paths
            .model_dirs(f)
            .into_iter()
            .map(|p| {
                std::path::absolute(&p)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        out.insert(f.to_string(), json!(dirs));
    }
    Json(Value::Object(out)).into_response()
}

async fn files(State(s): State<AppState>, Path(kind): Path<String>) -> Response {
    let paths = &s.queue.env().paths;
    let dir = match kind.as_str() {
        "output" => paths.output.clone(),
        "input" => paths.input.clone(),
        "temp" => paths.temp.clone(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "Invalid directory type"})),
            )
                .into_response()
        }
    };
    let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (t, e.file_name().to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    Json(files.into_iter().map(|(_, n)| n).collect::<Vec<_>>()).into_response()
}
