//! §4 The LoRA catalog admin (seed 003): `catalogs/loras.json` (and `catalogs/models.json`)
//! with live presence/download status, pairs by `pair_id`, downloads and deletes. Auth is
//! `X-API-Key` (the configured admin keys); without any admin key the routes are refused.

use super::downloads::{DownloadJob, DownloadState};
use super::errors::{code, ServerlessError};
use super::openapi::{Access, ApiRoute};
use crate::server::auth::is_cross_site;
use crate::server::AppState;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

pub fn api() -> Vec<ApiRoute> {
    const T: &str = "LoRA catalog admin";
    [
        ApiRoute::new(
            "GET",
            "/api/admin/loras",
            T,
            "The LoRA catalog with live status and stats",
            get(list_loras),
        )
        .returns("CatalogListing"),
        ApiRoute::new(
            "GET",
            "/api/admin/loras/compatible/{base_model}",
            T,
            "LoRA pairs for a base model",
            get(compatible),
        )
        .returns("CompatiblePairs"),
        ApiRoute::new(
            "GET",
            "/api/admin/models",
            T,
            "The models catalog with live status and stats",
            get(list_models),
        )
        .returns("CatalogListing"),
        ApiRoute::new(
            "POST",
            "/api/admin/models/download/{filename}",
            T,
            "Start a background download of a catalog file",
            post(download),
        )
        .returns_status(202, "DownloadStarted"),
        ApiRoute::new(
            "DELETE",
            "/api/admin/models/{filename}",
            T,
            "Delete a catalog file from disk",
            delete(remove),
        )
        .returns("FileDeleted"),
    ]
    .into_iter()
    .map(|r| r.access(Access::AdminKey))
    .collect()
}

/// The admin routes behind the `X-API-Key` guard.
pub fn router(state: &AppState) -> Router<AppState> {
    super::openapi::router(api()).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        admin_guard,
    ))
}

/// `X-API-Key` must be one of the configured admin keys.
async fn admin_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_cross_site(req.headers()) {
        return ServerlessError::new(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            "cross-site request refused",
        )
        .into_response();
    }
    let keys = &state.serverless.config.admin_keys;
    if keys.is_empty() {
        return ServerlessError::new(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            "the admin API is off: start the server with --admin-key KEY (or COMFYRS_ADMIN_KEY)",
        )
        .into_response();
    }
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if !given.is_some_and(|g| keys.iter().any(|k| super::auth::same_secret(k, g))) {
        return ServerlessError::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "missing or wrong X-API-Key header",
        )
        .into_response();
    }
    next.run(req).await
}

/// Which catalog file.
#[derive(Clone, Copy)]
enum Kind {
    Loras,
    Models,
}

fn catalog_path(state: &AppState, kind: Kind) -> PathBuf {
    let dir = &state.serverless.config.catalogs_dir;
    dir.join(match kind {
        Kind::Loras => "loras.json",
        Kind::Models => "models.json",
    })
}

fn read_catalog(state: &AppState, kind: Kind) -> Result<Value, ServerlessError> {
    let path = catalog_path(state, kind);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(json!({"version": 0, "date": null, "categories": []}))
        }
        Err(e) => {
            return Err(ServerlessError::internal(format!(
                "{}: {e}",
                path.display()
            )))
        }
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        ServerlessError::internal(format!("{} is not valid JSON: {e}", path.display()))
    })?;
    if !v["categories"].is_array() {
        return Err(ServerlessError::internal(format!(
            "{}: expected {{version, date, categories: [...]}}",
            path.display()
        )));
    }
    Ok(v)
}

/// The bodies of the catalog admin routes (OpenAPI components). The catalog files are the
/// admin's, so their objects stay open; what this server adds is declared.
pub fn schemas() -> Vec<super::schemas::Named> {
    use super::schemas::*;
    let file_or_none = nullable(string());
    vec![
        (
            "CatalogListing",
            open_object(
                &["categories", "stats"],
                vec![
                    ("version", any()),
                    (
                        "date",
                        described(nullable(string()), "null when there is no catalog file"),
                    ),
                    (
                        "categories",
                        array(open_object(
                            &["models"],
                            vec![
                                ("id", string()),
                                ("name", string()),
                                ("models", array(reference("CatalogEntry"))),
                            ],
                        )),
                    ),
                    (
                        "stats",
                        object(
                            &[
                                "queued_count",
                                "downloading_count",
                                "present_count",
                                "total_count",
                                "global_speed",
                                "models_bytes",
                                "free_bytes",
                            ],
                            vec![
                                ("queued_count", integer()),
                                ("downloading_count", integer()),
                                ("present_count", integer()),
                                ("total_count", integer()),
                                ("global_speed", described(number(), "Bytes per second")),
                                ("models_bytes", integer()),
                                ("free_bytes", nullable(integer())),
                            ],
                        ),
                    ),
                ],
            ),
        ),
        (
            "CatalogEntry",
            open_object(
                &["name", "file", "status", "on_disk_bytes"],
                vec![
                    ("name", string()),
                    ("file", string()),
                    ("dest", described(string(), "Folder under models/")),
                    ("size_gb", number()),
                    ("url", uri()),
                    ("sha256", string()),
                    ("base_model", string()),
                    ("pair_id", string()),
                    ("pair_role", words(&["high", "low", "both"])),
                    ("tags", array(string())),
                    (
                        "status",
                        words(&["present", "queued", "downloading", "missing", "failed"]),
                    ),
                    ("on_disk_bytes", integer()),
                    (
                        "progress",
                        described(
                            object(
                                &["downloaded_bytes", "total_bytes", "percent", "speed"],
                                vec![
                                    ("downloaded_bytes", integer()),
                                    ("total_bytes", nullable(integer())),
                                    ("percent", nullable(number())),
                                    ("speed", described(number(), "Bytes per second")),
                                ],
                            ),
                            "While downloading",
                        ),
                    ),
                    ("error", described(string(), "Why the download failed")),
                ],
            ),
        ),
        (
            "CompatiblePairs",
            array(object(
                &["pair_id", "name", "high", "low", "both"],
                vec![
                    ("pair_id", string()),
                    (
                        "name",
                        described(string(), "Without High/Low Noise suffixes"),
                    ),
                    ("high", file_or_none.clone()),
                    ("low", file_or_none.clone()),
                    ("both", file_or_none),
                ],
            )),
        ),
        (
            "DownloadStarted",
            described(
                object(
                    &["status", "file"],
                    vec![
                        ("status", words(&["queued", "already_queued", "present"])),
                        ("file", string()),
                    ],
                ),
                "202 when queued; 200 with status present when the file is already there",
            ),
        ),
        (
            "FileDeleted",
            object(
                &["status", "file"],
                vec![("status", words(&["deleted"])), ("file", string())],
            ),
        ),
    ]
}

/// A catalog entry's file on disk: `models/<dest>/<file>`, refusing names that escape.
fn entry_path(state: &AppState, entry: &Value) -> Option<PathBuf> {
    let file = entry["file"].as_str()?;
    let dest = entry["dest"].as_str().unwrap_or("loras");
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('/')
            && !s.contains('\\')
            && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
    };
    if !safe(file) || file.contains('/') || !safe(dest) {
        return None;
    }
    let root = state.queue.env().paths.model_roots.first()?.clone();
    Some(root.join(dest).join(file))
}

/// Where an entry's file is on disk: its download destination, or the same name in any other
/// folder of its kind (another models root, `extra_model_paths.yaml`), as the loaders see it.
fn existing_path(state: &AppState, entry: &Value) -> Option<PathBuf> {
    let dest = entry_path(state, entry)?;
    if dest.is_file() {
        return Some(dest);
    }
    let file = entry["file"].as_str()?;
    let kind = entry["dest"].as_str().unwrap_or("loras");
    state.queue.env().paths.find_model(kind, file)
}

/// The status of one entry, with its bytes on disk.
fn entry_status(state: &AppState, entry: &Value) -> (&'static str, u64, Option<DownloadState>) {
    let file = entry["file"].as_str().unwrap_or("");
    let dl = state.serverless.downloads.state(file);
    let path = existing_path(state, entry);
    let on_disk = path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let status = match (&dl, on_disk) {
        (Some(DownloadState::Downloading { .. }), _) => "downloading",
        (Some(DownloadState::Queued), _) => "queued",
        (_, Some(_)) => "present",
        (Some(DownloadState::Failed(_)), None) => "failed",
        (None, None) => "missing",
    };
    (status, on_disk.unwrap_or(0), dl)
}

/// The catalog with live `status`, `on_disk_bytes` (and download progress) and `stats`.
fn annotated(state: &AppState, kind: Kind) -> Result<Value, ServerlessError> {
    let mut cat = read_catalog(state, kind)?;
    let (mut queued, mut downloading, mut present, mut total) = (0, 0, 0, 0);
    let (mut speed, mut bytes) = (0.0, 0u64);
    for c in cat["categories"].as_array_mut().into_iter().flatten() {
        for m in c["models"].as_array_mut().into_iter().flatten() {
            let (status, on_disk, dl) = entry_status(state, m);
            total += 1;
            bytes += on_disk;
            match status {
                "queued" => queued += 1,
                "downloading" => downloading += 1,
                "present" => present += 1,
                _ => {}
            }
            m["status"] = json!(status);
            m["on_disk_bytes"] = json!(on_disk);
            match dl {
                Some(DownloadState::Downloading {
                    done,
                    total,
                    speed: s,
                }) => {
                    speed += s;
                    m["progress"] = json!({"downloaded_bytes": done, "total_bytes": total,
                        "percent": total.map(|t| if t > 0 { done as f64 * 100.0 / t as f64 } else { 0.0 }),
                        "speed": s});
                }
                Some(DownloadState::Failed(e)) if status == "failed" => m["error"] = json!(e),
                _ => {}
            }
        }
    }
    let root = state.queue.env().paths.model_roots.first().cloned();
    cat["stats"] = json!({
        "queued_count": queued,
        "downloading_count": downloading,
        "present_count": present,
        "total_count": total,
        "global_speed": speed,
        "models_bytes": bytes,
        "free_bytes": root.and_then(|r| free_bytes(&r)),
    });
    Ok(cat)
}

#[cfg(unix)]
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_: &std::path::Path) -> Option<u64> {
    None
}

async fn list_loras(State(state): State<AppState>) -> Response {
    match annotated(&state, Kind::Loras) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_models(State(state): State<AppState>) -> Response {
    match annotated(&state, Kind::Models) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The display name without noise-level suffixes ("Ghibli Style High Noise" -> "Ghibli Style").
pub fn pair_name(name: &str) -> String {
    let re = regex::Regex::new(r"(?i)[\s_\-]*[\(\[]?\b(high|low)[\s_\-]*noise\b[\)\]]?\s*$")
        .expect("valid regex");
    let cut = re.replace(name, "").trim().to_string();
    let cut = cut
        .strip_suffix(" LoRA")
        .or_else(|| cut.strip_suffix(" Lora"))
        .unwrap_or(&cut)
        .trim()
        .to_string();
    if cut.is_empty() {
        name.to_string()
    } else {
        cut
    }
}

/// `GET /api/admin/loras/compatible/{base_model}`: entries for that base model grouped by
/// `pair_id`, `[{pair_id, name, high, low, both}]`, in catalog order.
async fn compatible(State(state): State<AppState>, Path(base): Path<String>) -> Response {
    let cat = match read_catalog(&state, Kind::Loras) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut groups: indexmap::IndexMap<String, Map<String, Value>> = indexmap::IndexMap::new();
    for c in cat["categories"].as_array().into_iter().flatten() {
        for m in c["models"].as_array().into_iter().flatten() {
            if !m["base_model"]
                .as_str()
                .is_some_and(|b| b.eq_ignore_ascii_case(&base))
            {
                continue;
            }
            let file = m["file"].as_str().unwrap_or("").to_string();
            let pair = m["pair_id"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| file.clone());
            let role = match m["pair_role"].as_str() {
                Some("high") => "high",
                Some("low") => "low",
                _ => "both",
            };
            let g = groups.entry(pair.clone()).or_insert_with(|| {
                let mut g = Map::new();
                g.insert("pair_id".into(), json!(pair));
                g.insert(
                    "name".into(),
                    json!(pair_name(m["name"].as_str().unwrap_or(&file))),
                );
                for r in ["high", "low", "both"] {
                    g.insert(r.into(), Value::Null);
                }
                g
            });
            g.insert(role.into(), json!(file));
        }
    }
    Json(Value::Array(
        groups.into_values().map(Value::Object).collect(),
    ))
    .into_response()
}

/// The catalog entry (either catalog) whose `file` is `filename`.
fn find_entry(state: &AppState, filename: &str) -> Result<Option<Value>, ServerlessError> {
    for kind in [Kind::Loras, Kind::Models] {
        let cat = read_catalog(state, kind)?;
        for c in cat["categories"].as_array().into_iter().flatten() {
            for m in c["models"].as_array().into_iter().flatten() {
                if m["file"] == filename {
                    return Ok(Some(m.clone()));
                }
            }
        }
    }
    Ok(None)
}

fn not_in_catalog(filename: &str) -> ServerlessError {
    ServerlessError::not_found(
        code::MODEL_NOT_FOUND,
        format!("{filename:?} is in neither catalogs/loras.json nor catalogs/models.json"),
    )
}

async fn download(State(state): State<AppState>, Path(filename): Path<String>) -> Response {
    let entry = match find_entry(&state, &filename) {
        Ok(Some(e)) => e,
        Ok(None) => return not_in_catalog(&filename).into_response(),
        Err(e) => return e.into_response(),
    };
    let Some(dest) = entry_path(&state, &entry) else {
        return ServerlessError::bad_request(
            code::INVALID_REQUEST,
            format!("catalog entry {filename:?} has an unsafe file or dest"),
        )
        .into_response();
    };
    if existing_path(&state, &entry).is_some() {
        return Json(json!({"status": "present", "file": filename})).into_response();
    }
    let Some(url) = entry["url"].as_str() else {
        return ServerlessError::bad_request(
            code::INVALID_REQUEST,
            format!("catalog entry {filename:?} has no url to download from"),
        )
        .into_response();
    };
    let queued = match state.serverless.downloads.enqueue(DownloadJob {
        file: filename.clone(),
        url: url.to_string(),
        dest,
        sha256: entry["sha256"].as_str().map(String::from),
    }) {
        Ok(q) => q,
        Err(e) => return ServerlessError::from(e).into_response(),
    };
    let status = if queued { "queued" } else { "already_queued" };
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": status, "file": filename})),
    )
        .into_response()
}

async fn remove(State(state): State<AppState>, Path(filename): Path<String>) -> Response {
    let entry = match find_entry(&state, &filename) {
        Ok(Some(e)) => e,
        Ok(None) => return not_in_catalog(&filename).into_response(),
        Err(e) => return e.into_response(),
    };
    let Some(dest) = entry_path(&state, &entry) else {
        return not_in_catalog(&filename).into_response();
    };
    state.serverless.downloads.forget(&filename);
    let _ = std::fs::remove_file(dest.with_file_name(format!("{filename}.part")));
    let path = existing_path(&state, &entry).unwrap_or(dest);
    match std::fs::remove_file(&path) {
        Ok(()) => Json(json!({"status": "deleted", "file": filename})).into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ServerlessError::not_found(code::FILE_NOT_FOUND, format!("{filename} is not on disk"))
                .into_response()
        }
        Err(e) => ServerlessError::internal(format!("cannot delete {}: {e}", path.display()))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::pair_name;

    #[test]
    fn pair_names_drop_noise_suffixes() {
        assert_eq!(pair_name("Ghibli Style High Noise"), "Ghibli Style");
        assert_eq!(pair_name("Ghibli Style - Low Noise"), "Ghibli Style");
        assert_eq!(pair_name("Ghibli Style (high noise)"), "Ghibli Style");
        assert_eq!(pair_name("Ghibli Style LoRA"), "Ghibli Style");
        assert_eq!(pair_name("Anime Style"), "Anime Style");
    }
}
