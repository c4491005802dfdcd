//! The frontend's per-user storage, as ComfyUI's `app/user_manager.py` and `app_settings.py`
//! serve it: `/users`, `/settings[/{id}]`, `/userdata[/{file}[/move/{dest}]]` and
//! `/v2/userdata`, under `USER_DIR/default/` (comfyrs is single-user: the `Comfy-User` header
//! is ignored, as in ComfyUI without `--multi-user`).
//!
//! Bodies are read as raw bytes: the frontend posts settings without `Content-Type`, sends an
//! empty body for `storeSetting(key, undefined)`, and `overwrite=undefined` means overwrite.

use super::error::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Component, PathBuf};

const USER: &str = "default";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(users).post(add_user))
        .route("/settings", get(all_settings).post(merge_settings))
        .route("/settings/{id}", get(one_setting).post(store_setting))
        .route("/userdata", get(list))
        .route(
            "/userdata/{file}",
            get(read_file).post(write_file).delete(delete_file),
        )
        .route(
            "/userdata/{file}/move/{dest}",
            axum::routing::post(move_file),
        )
        .route("/v2/userdata", get(list_v2))
}

/// `USER_DIR` (holding `default/`).
pub fn user_root(s: &AppState) -> PathBuf {
    s.config.frontend.user_dir.clone().unwrap_or_else(|| {
        let out = &s.queue.env().paths.output;
        out.parent()
            .map(|p| p.join("user"))
            .unwrap_or_else(|| PathBuf::from("user"))
    })
}

fn user_dir(s: &AppState) -> PathBuf {
    user_root(s).join(USER)
}

/// `rel` under the user's folder, or 403 when it would leave it.
fn user_path(s: &AppState, rel: &str) -> Result<PathBuf, ApiError> {
    let bad = || ApiError::forbidden(format!("'{rel}' is outside the user folder"));
    let mut out = user_dir(s);
    for c in std::path::Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

async fn users(State(s): State<AppState>) -> Response {
    Json(json!({"storage": "server", "migrated": user_dir(&s).is_dir()})).into_response()
}

async fn add_user() -> Response {
    ApiError::bad_request(
        "comfyrs serves a single user (like ComfyUI without --multi-user); users cannot be added",
    )
    .into_response()
}

fn settings_file(s: &AppState) -> PathBuf {
    user_dir(s).join("comfy.settings.json")
}

fn read_settings(s: &AppState) -> Map<String, Value> {
    std::fs::read(settings_file(s))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

fn write_settings(s: &AppState, m: &Map<String, Value>) -> Result<(), ApiError> {
    let f = settings_file(s);
    if let Some(dir) = f.parent() {
        std::fs::create_dir_all(dir).map_err(ApiError::internal)?;
    }
    let text = serde_json::to_string_pretty(m).map_err(ApiError::internal)?;
    std::fs::write(&f, text).map_err(ApiError::internal)
}

async fn all_settings(State(s): State<AppState>) -> Response {
    Json(Value::Object(read_settings(&s))).into_response()
}

async fn one_setting(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    Json(read_settings(&s).get(&id).cloned().unwrap_or(Value::Null)).into_response()
}

/// A JSON body whatever its Content-Type; an empty body is `null`.
fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn merge_settings(State(s): State<AppState>, body: Bytes) -> Response {
    let run = || -> Result<(), ApiError> {
        let Value::Object(new) = body_json(&body)? else {
            return Err(ApiError::bad_request("settings must be a JSON object"));
        };
        let mut m = read_settings(&s);
        m.extend(new);
        write_settings(&s, &m)
    };
    match run() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn store_setting(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let run = || -> Result<(), ApiError> {
        let v = body_json(&body)?;
        let mut m = read_settings(&s);
        m.insert(id, v);
        write_settings(&s, &m)
    };
    match run() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

fn seconds(t: std::io::Result<std::time::SystemTime>) -> Value {
    t.ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| json!(d.as_secs_f64()))
        .unwrap_or(Value::Null)
}

fn file_info(path: &std::path::Path, rel_to: &std::path::Path) -> Value {
    let meta = std::fs::metadata(path).ok();
    let rel = path
        .strip_prefix(rel_to)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    json!({
        "path": rel,
        "size": meta.as_ref().map(|m| m.len()).unwrap_or(0),
        "modified": meta.as_ref().map(|m| seconds(m.modified())).unwrap_or(Value::Null),
        "created": meta.as_ref().map(|m| seconds(m.created())).unwrap_or(Value::Null),
    })
}

fn files_under(dir: &std::path::Path, recurse: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if recurse {
                    stack.push(p);
                }
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

async fn list(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let dir = q.get("dir").cloned().unwrap_or_default();
    if dir.is_empty() {
        return ApiError::bad_request("Directory not provided").into_response();
    }
    let path = match user_path(&s, &dir) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !path.exists() {
        return ApiError::not_found("Directory not found").into_response();
    }
    let flag = |k: &str| q.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (recurse, full_info, split) = (flag("recurse"), flag("full_info"), flag("split"));
    let results: Vec<Value> = files_under(&path, recurse)
        .iter()
        .map(|f| {
            if full_info {
                return file_info(f, &path);
            }
            let rel = f
                .strip_prefix(&path)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if split {
                let mut parts = vec![json!(rel)];
                parts.extend(rel.split('/').map(|p| json!(p)));
                Value::Array(parts)
            } else {
                json!(rel)
            }
        })
        .collect();
    Json(results).into_response()
}

async fn read_file(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    let path = match user_path(&s, &file) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match std::fs::read(&path) {
        Ok(bytes) if path.is_file() => {
            let ctype = super::routes::files::content_type(&file);
            let mut r = bytes.into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(ctype) {
                r.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
            }
            r
        }
        _ => ApiError::not_found(format!("'{file}' not found")).into_response(),
    }
}

fn overwrite_and_info(q: &HashMap<String, String>) -> (bool, bool) {
    let overwrite = q.get("overwrite").map(String::as_str) != Some("false");
    let full_info = q
        .get("full_info")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    (overwrite, full_info)
}

fn saved_response(s: &AppState, path: &std::path::Path, full_info: bool) -> Response {
    let root = user_dir(s);
    if full_info {
        Json(file_info(path, &root)).into_response()
    } else {
        let rel = path
            .strip_prefix(&root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Json(json!(rel)).into_response()
    }
}

async fn write_file(
    State(s): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = match user_path(&s, &file) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (overwrite, full_info) = overwrite_and_info(&q);
    if !overwrite && path.exists() {
        return ApiError::new(StatusCode::CONFLICT, "File already exists").into_response();
    }
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return ApiError::internal(e).into_response();
        }
    }
    if let Err(e) = std::fs::write(&path, &body) {
        return ApiError::bad_request(format!("cannot save '{file}': {e}")).into_response();
    }
    saved_response(&s, &path, full_info)
}

async fn delete_file(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    let path = match user_path(&s, &file) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !path.is_file() {
        return ApiError::not_found(format!("'{file}' not found")).into_response();
    }
    match std::fs::remove_file(&path) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn move_file(
    State(s): State<AppState>,
    Path((file, dest)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (src, dst) = match (user_path(&s, &file), user_path(&s, &dest)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if !src.is_file() {
        return ApiError::not_found(format!("'{file}' not found")).into_response();
    }
    let (overwrite, full_info) = overwrite_and_info(&q);
    if !overwrite && dst.exists() {
        return ApiError::new(StatusCode::CONFLICT, "File already exists").into_response();
    }
    if let Some(dir) = dst.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return ApiError::internal(e).into_response();
        }
    }
    match std::fs::rename(&src, &dst) {
        Ok(()) => saved_response(&s, &dst, full_info),
        Err(e) => ApiError::bad_request(format!("cannot move '{file}': {e}")).into_response(),
    }
}

async fn list_v2(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let rel = q.get("path").cloned().unwrap_or_default();
    let base = user_dir(&s);
    let target = if rel.is_empty() {
        base.clone()
    } else {
        match user_path(&s, &rel) {
            Ok(p) => p,
            Err(_) => return ApiError::bad_request("Invalid path requested").into_response(),
        }
    };
    if !target.exists() {
        if target == base {
            return Json(json!([])).into_response();
        }
        return ApiError::not_found("Path not found").into_response();
    }
    if !target.is_dir() {
        return ApiError::bad_request("Requested path is not a directory").into_response();
    }
    let Ok(entries) = std::fs::read_dir(&target) else {
        return ApiError::internal("cannot read the directory").into_response();
    };
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let path = p
            .strip_prefix(&base)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        if p.is_dir() {
            dirs.push(json!({"name": name, "path": path, "type": "directory"}));
        } else if let Ok(m) = p.metadata() {
            files.push(json!({"name": name, "path": path, "type": "file",
                              "size": m.len(), "modified": seconds(m.modified())}));
        }
    }
    let key = |v: &Value| v["name"].as_str().unwrap_or("").to_string();
    dirs.sort_by_key(key);
    files.sort_by_key(key);
    dirs.extend(files);
    Json(dirs).into_response()
}
