//! The frontend's model library (ComfyUI's `app/model_manager.py` and `/view_metadata`):
//! model folders with their paths, the files in each with size and times, a preview image per
//! model (a sibling image, else the cover in the safetensors metadata), and a safetensors
//! file's `__metadata__`.

use super::error::ApiError;
use super::AppState;
use crate::env::MODEL_EXTENSIONS;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

/// ComfyUI 0.3.64's model folder names, in its order (less `configs` and `custom_nodes`).
pub const MODEL_FOLDERS: &[&str] = &[
    "checkpoints",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/experiment/models", get(folders))
        .route("/experiment/models/{folder}", get(files))
        .route(
            "/experiment/models/preview/{folder}/{index}/{*file}",
            get(preview),
        )
        .route("/view_metadata/{folder}", get(view_metadata))
}

fn known(folder: &str) -> Option<&'static str> {
    let f = match folder {
        "clip" => "text_encoders",
        "unet" => "diffusion_models",
        f => f,
    };
    MODEL_FOLDERS.iter().copied().find(|k| *k == f)
}

fn abs(p: PathBuf) -> String {
    std::path::absolute(&p)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

async fn folders(State(s): State<AppState>) -> Response {
    let paths = &s.queue.env().paths;
    let out: Vec<Value> = MODEL_FOLDERS
        .iter()
        .map(|f| {
            let dirs: Vec<String> = paths.model_dirs(f).into_iter().map(abs).collect();
            json!({"name": f, "folders": dirs})
        })
        .collect();
    Json(out).into_response()
}

fn secs(t: std::io::Result<std::time::SystemTime>) -> Value {
    t.ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| json!(d.as_secs_f64()))
        .unwrap_or(Value::Null)
}

async fn files(State(s): State<AppState>, Path(folder): Path<String>) -> Response {
    let Some(kind) = known(&folder) else {
        return ApiError::not_found(format!("unknown model folder '{folder}'")).into_response();
    };
    let mut out = Vec::new();
    for (index, dir) in s.queue.env().paths.model_dirs(kind).iter().enumerate() {
        let mut stack = vec![dir.clone()];
        let mut found = Vec::new();
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let p = e.path();
                if p.is_dir() {
                    if name != ".git" {
                        stack.push(p);
                    }
                    continue;
                }
                let ext_ok = p
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| MODEL_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()));
                if !ext_ok {
                    continue;
                }
                let Ok(m) = p.metadata() else { continue };
                let rel = p
                    .strip_prefix(dir)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or(name);
                found.push(
                    json!({"name": rel, "pathIndex": index, "modified": secs(m.modified()),
                                  "created": secs(m.created()), "size": m.len()}),
                );
            }
        }
        found.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_string());
        out.extend(found);
    }
    Json(out).into_response()
}

/// The safetensors header's `__metadata__` (headers over 1 MiB are not read, as in ComfyUI).
fn safetensors_metadata(path: &FsPath) -> Option<serde_json::Map<String, Value>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > 1024 * 1024 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v: Value = serde_json::from_slice(&header).ok()?;
    v.get("__metadata__")?.as_object().cloned()
}

fn is_safe(name: &str) -> bool {
    crate::env::is_safe_relative(name)
}

async fn view_metadata(
    State(s): State<AppState>,
    Path(folder): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let not_found = || ApiError::not_found("no safetensors metadata").into_response();
    let Some(name) = q.get("filename") else {
        return not_found();
    };
    if !name.ends_with(".safetensors") || !is_safe(name) {
        return not_found();
    }
    let Some(kind) = known(&folder) else {
        return not_found();
    };
    let Some(path) = s.queue.env().paths.find_model(kind, name) else {
        return not_found();
    };
    match tokio::task::spawn_blocking(move || safetensors_metadata(&path)).await {
        Ok(Some(m)) => Json(Value::Object(m)).into_response(),
        _ => not_found(),
    }
}

const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp"];

/// The model's first preview: `<stem>.<image>` or `<stem>.preview.<image>`, else the first
/// `ssmd_cover_images` entry of its safetensors metadata.
fn preview_image(model: &FsPath) -> Option<image::DynamicImage> {
    let dir = model.parent()?;
    let stem = model.file_stem()?.to_string_lossy().into_owned();
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let ext_ok = p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTS.contains(&x.to_ascii_lowercase().as_str()));
            let s = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            ext_ok && (s.as_deref() == Some(&stem) || s == Some(format!("{stem}.preview")))
        })
        .collect();
    candidates.sort();
    for c in candidates {
        if let Ok(img) = image::open(&c) {
            return Some(img);
        }
    }
    if model.extension().is_some_and(|e| e == "safetensors") {
        let meta = safetensors_metadata(model)?;
        let covers: Value = serde_json::from_str(meta.get("ssmd_cover_images")?.as_str()?).ok()?;
        let first = covers.as_array()?.first()?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(first)
            .ok()?;
        return image::load_from_memory(&bytes).ok();
    }
    None
}

async fn preview(
    State(s): State<AppState>,
    Path((folder, index, file)): Path<(String, usize, String)>,
) -> Response {
    let not_found = || ApiError::not_found("no preview").into_response();
    let Some(kind) = known(&folder) else {
        return not_found();
    };
    if !is_safe(&file) {
        return not_found();
    }
    let Some(dir) = s.queue.env().paths.model_dirs(kind).into_iter().nth(index) else {
        return not_found();
    };
    let model = dir.join(&file);
    let webp = tokio::task::spawn_blocking(move || {
        let img = preview_image(&model)?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::WebP).ok()?;
        Some(out.into_inner())
    })
    .await;
    match webp {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, "image/webp")], bytes).into_response(),
        _ => not_found(),
    }
}
