//! GET /view, POST /upload/image, POST /upload/mask (spec §5).

use crate::server::error::{ApiError, ApiResult};
use crate::server::paths::{
    basename, resolve_existing_file, resolve_folder, strip_annotation, type_dir, PathError,
    NAME_MAX,
};
use crate::server::AppState;
use axum::extract::{Multipart, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use image::{DynamicImage, ImageFormat, RgbaImage};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/view", get(view))
        .route("/upload/image", post(upload_image))
        .route("/upload/mask", post(upload_mask))
}

fn view_error(e: PathError) -> ApiError {
    match e {
        PathError::BadName(m) => ApiError::bad_request(m),
        PathError::Escapes(m) => ApiError::forbidden(m),
        PathError::NotFound => ApiError::not_found("file not found"),
    }
}

/// Content type by extension; active content is never served as such.
pub(crate) fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("flac") => "audio/flac",
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        Some("glb") => "model/gltf-binary",
        _ => "application/octet-stream",
    }
}

pub(crate) fn file_response(bytes: Vec<u8>, ctype: &str, name: &str) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let safe: String = name
        .chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The most pixels an image the server decodes itself (/view previews and channels, mask
/// uploads) may have: 32 MiP, e.g. 8192 x 4096. A small compressed file can declare a huge
/// image; the check reads the header before anything is allocated.
pub const DECODE_MAX_PIXELS: u64 = 32 * 1024 * 1024;

/// Decodes an image whose declared size is within [`DECODE_MAX_PIXELS`] (and whose decoder
/// allocates at most 8 bytes a pixel of it).
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, String> {
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| format!("not an image: {e}"))?;
    if w as u64 * h as u64 > DECODE_MAX_PIXELS {
        return Err(format!(
            "the image is {w}x{h}; at most {DECODE_MAX_PIXELS} pixels are decoded"
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(DECODE_MAX_PIXELS * 8);
    let mut r = reader()?;
    r.limits(limits);
    r.decode().map_err(|e| format!("not an image: {e}"))
}

fn encode(img: &DynamicImage, fmt: ImageFormat, quality: u8) -> ApiResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    match fmt {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            DynamicImage::ImageRgb8(img.to_rgb8())
                .write_with_encoder(enc)
                .map_err(ApiError::internal)?;
        }
        _ => img.write_to(&mut out, fmt).map_err(ApiError::internal)?,
    }
    Ok(out.into_inner())
}

async fn view(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let Some(raw) = q.get("filename") else {
        return Err(ApiError::not_found("missing 'filename'"));
    };
    let (name, forced) = strip_annotation(raw);
    let ty = forced.unwrap_or_else(|| q.get("type").map(String::as_str).unwrap_or("output"));
    crate::server::paths::check_filename(name).map_err(view_error)?;
    let Some(dir) = type_dir(s.queue.env(), ty) else {
        return Err(ApiError::bad_request(format!("unknown type '{ty}'")));
    };
    let sub = q.get("subfolder").map(String::as_str).unwrap_or("");
    let local = resolve_existing_file(&dir, sub, name);
    // With --outputs s3://..., files not on this node's disk come from object storage.
    let stored = match (local.as_ref(), s.queue.objects()) {
        (Err(PathError::NotFound), Some(o)) => {
            let Some(key) = o.key(ty, sub, name) else {
                return Err(ApiError::not_found("file not found"));
            };
            let plain = !q.contains_key("preview") && !q.contains_key("channel");
            if plain && o.presigns() {
                if let Some(url) = o.presigned(&key).await {
                    let url = url.map_err(ApiError::internal)?;
                    return Ok(axum::response::Redirect::temporary(&url).into_response());
                }
            }
            match o.get(&key).await.map_err(ApiError::internal)? {
                Some(b) => Some(b),
                None => return Err(ApiError::not_found("file not found")),
            }
        }
        _ => None,
    };
    let path = match stored {
        Some(_) => None,
        None => Some(local.map_err(view_error)?),
    };
    let file_name = basename(name).to_string();
    let preview = q.get("preview").cloned();
    // The preview branch looks at the raw parameter (absent = ""), the others default to rgba.
    let raw_channel = q.get("channel").cloned().unwrap_or_default();
    let channel = q.get("channel").cloned().unwrap_or_else(|| "rgba".into());
    tokio::task::spawn_blocking(move || -> ApiResult<Response> {
        let bytes = match (stored, path) {
            (Some(b), _) => b,
            (None, Some(p)) => std::fs::read(&p).map_err(ApiError::internal)?,
            (None, None) => return Err(ApiError::not_found("file not found")),
        };
        if preview.is_none() && channel == "rgba" {
            // A stored file as it is: `Range` gets 206, as ComfyUI answers it.
            return Ok(crate::server::range::apply(&headers, bytes, |b| {
                file_response(b, content_type(&file_name), &file_name)
            }));
        }
        let img = decode_image(&bytes)
            .map_err(|e| ApiError::bad_request(format!("'{file_name}' cannot be shown: {e}")))?;
        if let Some(p) = preview {
            let parts: Vec<&str> = p.split(';').collect();
            let mut fmt = match parts[0] {
                "jpeg" => ImageFormat::Jpeg,
                _ => ImageFormat::WebP,
            };
            if raw_channel.contains('a') {
                fmt = ImageFormat::WebP;
            }
            let quality = parts
                .last()
                .and_then(|q| q.parse::<u8>().ok())
                .unwrap_or(90)
                .clamp(1, 100);
            let img = if fmt == ImageFormat::Jpeg || raw_channel == "rgb" {
                DynamicImage::ImageRgb8(img.to_rgb8())
            } else {
                img
            };
            let ctype = if fmt == ImageFormat::Jpeg {
                "image/jpeg"
            } else {
                "image/webp"
            };
            return Ok(file_response(
                encode(&img, fmt, quality)?,
                ctype,
                &file_name,
            ));
        }
        let out = match channel.as_str() {
            "rgb" => DynamicImage::ImageRgb8(img.to_rgb8()),
            "a" => {
                let has_alpha = img.color().has_alpha();
                let rgba = img.to_rgba8();
                let mut out = RgbaImage::new(rgba.width(), rgba.height());
                for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
                    *o = image::Rgba([0, 0, 0, if has_alpha { p[3] } else { 255 }]);
                }
                DynamicImage::ImageRgba8(out)
            }
            _ => img,
        };
        Ok(file_response(
            encode(&out, ImageFormat::Png, 0)?,
            "image/png",
            &file_name,
        ))
    })
    .await
    .map_err(ApiError::internal)?
}

/// The fields of an upload form.
#[derive(Default)]
pub struct UploadForm {
    image: Option<(String, Vec<u8>)>,
    ty: Option<String>,
    subfolder: String,
    overwrite: bool,
    original_ref: Option<String>,
}

/// Reads an upload form (public for the fuzz targets: tests/fuzz/targets.rs).
pub async fn read_form(mut mp: Multipart) -> ApiResult<UploadForm> {
    let mut f = UploadForm::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::new(
                    e.status(),
                    format!("bad multipart body: {}", e.body_text()),
                ))
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(String::from);
        let data = field.bytes().await.map_err(|e| {
            ApiError::new(e.status(), format!("bad multipart body: {}", e.body_text()))
        })?;
        let text = || String::from_utf8_lossy(&data).into_owned();
        match name.as_str() {
            "image" => f.image = Some((file_name.unwrap_or_default(), data.to_vec())),
            "type" => f.ty = Some(text()),
            "subfolder" => f.subfolder = text(),
            "overwrite" => f.overwrite = matches!(text().as_str(), "true" | "1"),
            "original_ref" => f.original_ref = Some(text()),
            _ => {}
        }
    }
    Ok(f)
}

/// Where an upload goes: the folder, the final name, and whether an identical file is there.
fn target(
    s: &AppState,
    f: &UploadForm,
    file_name: &str,
    content: &[u8],
) -> ApiResult<(PathBuf, String, bool)> {
    let ty = f.ty.as_deref().unwrap_or("input");
    let Some(base) = type_dir(s.queue.env(), ty) else {
        return Err(ApiError::bad_request(format!(
            "unknown type '{ty}' (expected input, temp or output)"
        )));
    };
    let name = basename(file_name);
    if name.is_empty() || name == "." || name == ".." {
        return Err(ApiError::bad_request("the image has no file name"));
    }
    // Room for the " (N)" a name may get when the name is taken.
    if name.len() > NAME_MAX - 16 {
        return Err(ApiError::bad_request(format!(
            "the image's file name is {} bytes long; at most {} are allowed",
            name.len(),
            NAME_MAX - 16
        )));
    }
    std::fs::create_dir_all(&base).map_err(ApiError::internal)?;
    let dir = resolve_folder(&base, &f.subfolder, true).map_err(|e| match e {
        PathError::BadName(m) | PathError::Escapes(m) => ApiError::bad_request(m),
        PathError::NotFound => ApiError::bad_request("bad subfolder"),
    })?;
    let mut final_name = name.to_string();
    if !f.overwrite {
        let (stem, ext) = match name.rsplit_once('.') {
            Some((a, b)) if !a.is_empty() => (a.to_string(), format!(".{b}")),
            _ => (name.to_string(), String::new()),
        };
        let mut i = 1;
        // `symlink_metadata`: a name held by a symlink (even a dangling one) is taken, and its
        // content is never compared (that would tell whether a file outside the folder has
        // the uploaded content).
        while std::fs::symlink_metadata(dir.join(&final_name)).is_ok() {
            if same_content(&dir.join(&final_name), content) {
                return Ok((dir, final_name, true));
            }
            final_name = format!("{stem} ({i}){ext}");
            i += 1;
        }
    }
    // A symlinked target could point anywhere: replace, never write through it.
    let path = dir.join(&final_name);
    if path.is_symlink() {
        std::fs::remove_file(&path).map_err(ApiError::internal)?;
    } else if path.is_dir() {
        return Err(ApiError::bad_request(format!(
            "'{final_name}' is a folder; choose another file name"
        )));
    }
    Ok((dir, final_name, false))
}

/// Whether `path` is a regular file (not a symlink) with exactly `content`.
fn same_content(path: &Path, content: &[u8]) -> bool {
    let regular = std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_file() && m.len() == content.len() as u64);
    regular
        && std::fs::read(path)
            .is_ok_and(|existing| blake3::hash(&existing) == blake3::hash(content))
}

fn upload_response(name: &str, f: &UploadForm) -> Json<Value> {
    Json(json!({
        "name": name,
        "subfolder": f.subfolder,
        "type": f.ty.as_deref().unwrap_or("input"),
    }))
}

async fn upload_image(State(s): State<AppState>, mp: Multipart) -> ApiResult<Json<Value>> {
    let f = read_form(mp).await?;
    let Some((file_name, data)) = f.image.as_ref().filter(|(n, _)| !n.is_empty()) else {
        return Err(ApiError::bad_request("missing 'image' file part"));
    };
    let (dir, name, exists) = target(&s, &f, file_name, data)?;
    if !exists {
        tokio::fs::write(dir.join(&name), data)
            .await
            .map_err(ApiError::internal)?;
    }
    store_upload(&s, &f, &name, data).await?;
    Ok(upload_response(&name, &f))
}

/// With --outputs s3://..., an upload is also stored as an object, so a worker on another
/// machine fetches it before running a job that names it (this node validates against its
/// own copy).
async fn store_upload(s: &AppState, f: &UploadForm, name: &str, data: &[u8]) -> ApiResult<()> {
    let Some(o) = s.queue.objects() else {
        return Ok(());
    };
    let ty = f.ty.as_deref().unwrap_or("input");
    let Some(key) = o.key(ty, &f.subfolder, name) else {
        return Ok(());
    };
    o.put(&key, data.to_vec()).await.map_err(ApiError::internal)
}

async fn upload_mask(State(s): State<AppState>, mp: Multipart) -> ApiResult<Json<Value>> {
    let f = read_form(mp).await?;
    let Some((file_name, data)) = f.image.as_ref().filter(|(n, _)| !n.is_empty()) else {
        return Err(ApiError::bad_request("missing 'image' file part"));
    };
    let Some(orig) = f.original_ref.as_deref() else {
        return Err(ApiError::bad_request("missing 'original_ref'"));
    };
    let orig: Value = serde_json::from_str(orig)
        .map_err(|e| ApiError::bad_request(format!("original_ref is not JSON: {e}")))?;
    let raw = orig["filename"].as_str().unwrap_or("");
    let (oname, forced) = strip_annotation(raw);
    let oty = forced.unwrap_or_else(|| orig["type"].as_str().unwrap_or("output"));
    let Some(odir) = type_dir(s.queue.env(), oty) else {
        return Err(ApiError::bad_request(format!("unknown type '{oty}'")));
    };
    let osub = orig["subfolder"].as_str().unwrap_or("");
    let original = match resolve_existing_file(&odir, osub, oname) {
        Ok(p) => p,
        Err(PathError::NotFound) => {
            // ComfyUI writes nothing but still answers.
            let (_, name, _) = target(&s, &f, file_name, data)?;
            return Ok(upload_response(&name, &f));
        }
        Err(e) => return Err(view_error(e)),
    };
    let mask = decode_image(data)
        .map_err(|e| ApiError::bad_request(format!("the mask cannot be used: {e}")))?
        .to_rgba8();
    let original = std::fs::read(&original).map_err(ApiError::internal)?;
    let mut img = decode_image(&original)
        .map_err(|e| ApiError::bad_request(format!("the original cannot be used: {e}")))?
        .to_rgba8();
    if img.dimensions() != mask.dimensions() {
        return Err(ApiError::bad_request(format!(
            "mask size {:?} differs from the image size {:?}",
            mask.dimensions(),
            img.dimensions()
        )));
    }
    for (p, m) in img.pixels_mut().zip(mask.pixels()) {
        p[3] = m[3];
    }
    let png = encode(&DynamicImage::ImageRgba8(img), ImageFormat::Png, 0)?;
    let (dir, name, exists) = target(&s, &f, file_name, &png)?;
    if !exists {
        tokio::fs::write(dir.join(&name), &png)
            .await
            .map_err(ApiError::internal)?;
    }
    store_upload(&s, &f, &name, &png).await?;
    let _ = StatusCode::OK;
    Ok(upload_response(&name, &f))
}
