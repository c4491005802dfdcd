//! Serving ComfyUI's web frontend (the `comfyui-frontend-package` wheel, GPL-3.0; located at
//! run time, never shipped with comfyrs): where its files are, `GET /` (index.html, or a page
//! saying how to get the frontend), the static fallback after every API route, the optional
//! templates and docs packages, and the browser session cookie set from `/?token=...`.

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::path::{Path, PathBuf};
use tower::ServiceExt;

/// The frontend version ComfyUI 0.3.64 pins and comfyrs is tested with.
pub const TESTED_VERSION: &str = "1.27.10";

/// The cookie browsers authenticate with (the frontend never sends `Authorization`).
pub const SESSION_COOKIE: &str = "comfyrs_session";

/// Where the frontend and its optional companions are, and where user data lives.
#[derive(Debug, Clone, Default)]
pub struct FrontendConfig {
    /// The frontend's `static/` folder (holds `index.html`).
    pub root: Option<PathBuf>,
    /// comfyui-workflow-templates' `templates/` folder, served at `/templates`.
    pub templates: Option<PathBuf>,
    /// comfyui-embedded-docs' `docs/` folder, served at `/docs`.
    pub docs: Option<PathBuf>,
    /// User data (settings, saved workflows): `<dir>/default/...`. None: `DATA_DIR/user`
    /// derived from the output folder's parent.
    pub user_dir: Option<PathBuf>,
}

/// A located frontend: its root and version (from the wheel's `*.dist-info/METADATA`).
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub root: PathBuf,
    pub version: Option<String>,
    /// How it was found (for the startup log).
    pub how: String,
}

/// The version in a `comfyui_frontend_package-X.dist-info/METADATA` next to the package.
pub fn version_of(static_dir: &Path) -> Option<String> {
    let site = static_dir.parent()?.parent()?;
    for e in std::fs::read_dir(site).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("comfyui_frontend_package-") && name.ends_with(".dist-info") {
            let meta = std::fs::read_to_string(e.path().join("METADATA")).ok()?;
            return meta
                .lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .map(|v| v.trim().to_string());
        }
    }
    None
}

/// The `static/` folder of a Python package `pkg` (sub-folder `sub`) in `python`'s environment.
fn python_package_dir(python: &str, pkg: &str, sub: &str) -> Option<PathBuf> {
    let code = format!(
        "import importlib.resources, {pkg} as p; print(importlib.resources.files(p) / '{sub}')"
    );
    let out = std::process::Command::new(python)
        .args(["-c", &code])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_dir().then_some(p)
}

/// Finds the frontend: `explicit` (--front-end-root or COMFYRS_FRONTEND_ROOT), else the data
/// dir's cache `DATA/frontend/<version>/comfyui_frontend_package/static` (filled by the
/// documented `pip download` command), else the package in the `python3` environment.
pub fn locate(explicit: Option<&Path>, data_dir: &Path) -> Result<Option<Located>, String> {
    if let Some(root) = explicit {
        if !root.join("index.html").is_file() {
            return Err(format!(
                "--front-end-root {}: no index.html there (point it at the frontend's static/ folder)",
                root.display()
            ));
        }
        return Ok(Some(Located {
            root: root.to_path_buf(),
            version: version_of(root),
            how: "--front-end-root".into(),
        }));
    }
    let cache = data_dir.join("frontend");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        versions.sort();
        // The tested version first, else the newest folder.
        versions.sort_by_key(|p| p.file_name().is_some_and(|n| n == TESTED_VERSION));
        for v in versions.iter().rev() {
            let root = v.join("comfyui_frontend_package/static");
            if root.join("index.html").is_file() {
                return Ok(Some(Located {
                    version: version_of(&root)
                        .or_else(|| v.file_name().map(|n| n.to_string_lossy().into_owned())),
                    root,
                    how: format!("the data dir's cache {}", cache.display()),
                }));
            }
        }
    }
    if let Some(root) = python_package_dir("python3", "comfyui_frontend_package", "static") {
        if root.join("index.html").is_file() {
            return Ok(Some(Located {
                version: version_of(&root),
                root,
                how: "the python3 environment".into(),
            }));
        }
    }
    Ok(None)
}

/// comfyui-workflow-templates' and comfyui-embedded-docs' folders from `python3`, if installed.
pub fn locate_companions() -> (Option<PathBuf>, Option<PathBuf>) {
    (
        python_package_dir("python3", "comfyui_workflow_templates", "templates"),
        python_package_dir("python3", "comfyui_embedded_docs", "docs"),
    )
}

/// The command that fetches the tested frontend into `data_dir` with pip.
pub fn fetch_command(data_dir: &Path) -> String {
    let d = data_dir.join("frontend").join(TESTED_VERSION);
    format!(
        "pip download --no-deps comfyui-frontend-package=={TESTED_VERSION} -d {d} && \
         unzip -q -o {d}/comfyui_frontend_package-{TESTED_VERSION}-py3-none-any.whl -d {d}",
        d = d.display()
    )
}

/// The session cookie's value for a token: its SHA-256, so the cookie never holds the token.
pub fn session_value(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The values of the request's session cookies (checked against the admin credentials by
/// the guard: a cookie opens what the token it was made from opens).
pub fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

fn no_cache(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
}

/// `GET /`: the frontend's index.html (no caching, as ComfyUI), or how to install it. With
/// credentials configured, `/?token=T` (T already accepted by the guard: the `--token` or an
/// admin API token) sets the session cookie and redirects to `/`, so the token leaves the
/// address bar.
pub async fn index(State(s): State<AppState>, req: Request) -> Response {
    if s.serverless.has_credentials() {
        let token = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        if let Some(token) = token {
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                session_value(&token)
            );
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "./")]).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
    }
    let Some(root) = &s.config.frontend.root else {
        // A page, not an error: the server works, only the editor is not installed (every
        // error status leaves as JSON, so this one is a 200).
        let mut r = Html(help_page()).into_response();
        no_cache(&mut r);
        return r;
    };
    match tokio::fs::read(root.join("index.html")).await {
        Ok(bytes) => {
            let mut r =
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], bytes).into_response();
            no_cache(&mut r);
            r
        }
        Err(e) => {
            super::error::ApiError::internal(format!("cannot read the frontend's index.html: {e}"))
                .into_response()
        }
    }
}

fn help_page() -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>comfyrs</title></head><body>\
         <h1>comfyrs is running</h1>\
         <p>The HTTP API (<code>/prompt</code>, <code>/ws</code>, <code>/object_info</code>, ...) \
         is served here. The ComfyUI editor is not bundled with comfyrs (it is GPL-3.0): \
         install it and restart <code>comfyrs serve</code>, in one of these ways:</p><ul>\
         <li><code>pip install comfyui-frontend-package=={v}</code> (found in the python3 \
         environment), or</li>\
         <li><code>comfyrs serve --front-end-root DIR</code> with the package's \
         <code>static/</code> folder, or</li>\
         <li>fetch it into the data dir: <code>pip download --no-deps \
         comfyui-frontend-package=={v} -d DATA_DIR/frontend/{v} &amp;&amp; unzip -q \
         DATA_DIR/frontend/{v}/*.whl -d DATA_DIR/frontend/{v}</code>.</li></ul>\
         </body></html>",
        v = TESTED_VERSION
    )
}

/// Serves `rel` from `dir` (tower-http's ServeDir: no escaping the folder, Range, types).
async fn serve_from(dir: &Path, req: Request) -> Response {
    let svc = tower_http::services::ServeDir::new(dir).append_index_html_on_directories(false);
    match svc.oneshot(req).await {
        Ok(r) => r.map(axum::body::Body::new),
        Err(e) => super::error::ApiError::internal(e.to_string()).into_response(),
    }
}

/// After every API route: `/templates/**` and `/docs/**` from their packages, other paths
/// from the frontend root; `.js`, `.css` and `index*.json` get `Cache-Control: no-cache`.
/// Anything else (and every `/api/...` path) is the JSON 404.
pub async fn fallback(State(s): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/api/")
        || !matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        )
    {
        return super::routes::not_found(req.uri().clone())
            .await
            .into_response();
    }
    let cfg = &s.config.frontend;
    let (dir, strip) = if let (Some(t), true) = (&cfg.templates, path.starts_with("/templates/")) {
        (Some(t.clone()), "/templates")
    } else if let (Some(d), true) = (&cfg.docs, path.starts_with("/docs/")) {
        (Some(d.clone()), "/docs")
    } else {
        (cfg.root.clone(), "")
    };
    let Some(dir) = dir else {
        return super::routes::not_found(req.uri().clone())
            .await
            .into_response();
    };
    let mut req = req;
    if !strip.is_empty() {
        let rest = path[strip.len()..].to_string();
        let q = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        if let Ok(uri) = format!("{rest}{q}").parse() {
            *req.uri_mut() = uri;
        }
    }
    let uri = req.uri().clone();
    let mut r = serve_from(&dir, req).await;
    if r.status() == StatusCode::NOT_FOUND {
        return super::routes::not_found(uri).await.into_response();
    }
    let file = path.rsplit('/').next().unwrap_or("");
    if path.ends_with(".js")
        || path.ends_with(".css")
        || (file.starts_with("index") && file.ends_with(".json"))
    {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}
