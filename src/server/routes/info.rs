//! /object_info, /system_stats, /models, /embeddings, /extensions, /features and the small
//! startup endpoints the frontend probes (spec §4, §6).

use crate::server::error::{ApiError, ApiResult};
use crate::server::AppState;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// ComfyUI's model folder keys.
pub const MODEL_FOLDERS: &[&str] = &[
    "checkpoints",
    "configs",
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
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/object_info", get(object_info))
        .route("/object_info/{class}", get(object_info_one))
        .route("/system_stats", get(system_stats))
        .route("/models", get(models))
        .route("/models/{folder}", get(models_in))
        .route("/embeddings", get(embeddings))
        .route("/features", get(features))
        .route("/global_subgraphs", get(|| async { Json(json!({})) }))
        .route("/node_replacements", get(|| async { Json(json!({})) }))
}

async fn object_info(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let q = s.queue.clone();
    let info = tokio::task::spawn_blocking(move || q.registry().object_info(q.env()))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(info))
}

async fn object_info_one(
    State(s): State<AppState>,
    Path(class): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut out = Map::new();
    if let Some(schema) = s.queue.registry().schema(&class) {
        out.insert(class.clone(), schema.object_info(s.queue.env()));
    }
    // ComfyUI answers {} for an unknown class.
    Ok(Json(Value::Object(out)))
}

/// (total, available) RAM in bytes from /proc/meminfo (0 where unknown).
fn ram() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

async fn system_stats(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let mut stats = local_system_stats();
    // A cluster node adds every live node (role, device, models held, running job) and the
    // queue depth all of them share.
    if s.queue.store().backend() != "sqlite" {
        let q = s.queue.clone();
        let cluster = crate::server::blocking(move || {
            let store = q.store();
            Ok::<_, ApiError>(json!({
                "backend": store.backend(),
                "this_node": store.node_id(),
                "role": s.config.cluster.role.as_str(),
                "queue_pending": store.pending_count()?,
                "queue_running": store.running_count()?,
                "nodes": store.live_nodes()?.into_iter().map(|n| json!({
                    "id": n.id,
                    "role": n.role,
                    "host": n.host,
                    "device": n.device,
                    "models": n.models.len(),
                    "node_classes": n.node_classes.len(),
                    "warm": n.warm,
                    "running": n.running,
                    "heartbeat_at": n.heartbeat_at,
                })).collect::<Vec<_>>(),
            }))
        })
        .await?;
        stats["cluster"] = cluster;
    }
    Ok(Json(stats))
}

fn local_system_stats() -> Value {
    let (total, free) = ram();
    let os = if cfg!(windows) { "nt" } else { "posix" };
    json!({
        "system": {
            "os": os,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": "0.3.64",
            "comfyrs_version": env!("CARGO_PKG_VERSION"),
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": format!("comfyrs {} (Rust)", env!("CARGO_PKG_VERSION")),
            "pytorch_version": "none (candle)",
            "embedded_python": false,
            "argv": std::env::args().collect::<Vec<_>>(),
        },
        "devices": [{
            "name": "cpu",
            "type": "cpu",
            "index": null,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }]
    })
}

async fn models() -> Json<Value> {
    Json(json!(MODEL_FOLDERS))
}

async fn models_in(
    State(s): State<AppState>,
    Path(folder): Path<String>,
) -> ApiResult<Json<Value>> {
    let folder = match folder.as_str() {
        "unet" => "diffusion_models".to_string(),
        "clip" => "text_encoders".to_string(),
        _ => folder,
    };
    if !MODEL_FOLDERS.contains(&folder.as_str()) {
        return Err(ApiError::not_found(format!(
            "unknown model folder '{folder}'"
        )));
    }
    Ok(Json(json!(s.queue.env().paths.list_models(&folder))))
}

async fn embeddings(State(s): State<AppState>) -> Json<Value> {
    let names: Vec<String> = s
        .queue
        .env()
        .paths
        .list_models("embeddings")
        .into_iter()
        .map(|n| match n.rsplit_once('.') {
            Some((stem, _)) => stem.to_string(),
            None => n,
        })
        .collect();
    Json(json!(names))
}

/// The server feature flags (also the WebSocket `feature_flags` reply).
pub fn server_features(s: &AppState) -> Value {
    json!({
        "supports_preview_metadata": true,
        "max_upload_size": s.config.max_upload_bytes as f64,
    })
}

async fn features(State(s): State<AppState>) -> Json<Value> {
    Json(server_features(&s))
}
