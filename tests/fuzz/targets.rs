//! The fuzz targets, one function per reader of client bytes. Shared by the stable runner
//! (`tests/fuzz_smoke.rs`, run by `cargo test`) and the cargo-fuzz crate (`fuzz/`, libFuzzer on
//! nightly), so both exercise the same code. A target must never panic, whatever the bytes;
//! the runner also bounds what each input may allocate.
#![allow(dead_code)]

use comfyrs::env::{Environment, Paths};
use comfyrs::node::Registry;
use comfyrs::workflow::{overrides_from_json, parse_set_arg, parse_workflow, Overrides};
use std::sync::OnceLock;

/// What the targets share: the built-in registry, an environment over an empty data dir, and
/// every class's `/object_info` entry made once (the converters ask for them per node; making
/// them lists model folders, which would otherwise dominate each input's time).
pub struct Context {
    pub registry: Registry,
    pub env: Environment,
    pub object_info: std::collections::HashMap<String, serde_json::Value>,
    pub runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

pub fn context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = Paths::under(dir.path());
        for d in [&paths.input, &paths.output, &paths.temp] {
            std::fs::create_dir_all(d).expect("data dir");
        }
        let registry = Registry::with_builtin_nodes();
        let env = Environment::new(paths);
        let object_info = registry
            .names()
            .filter_map(|class| {
                let info = registry.schema(class)?.object_info(&env);
                Some((class.to_string(), info))
            })
            .collect();
        Context {
            registry,
            env,
            object_info,
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            _dir: dir,
        }
    })
}

/// The workflow parser (`POST /prompt`'s `prompt`, `comfyrs run FILE`).
pub fn workflow(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_workflow(text);
    }
}

/// The override parsers: a JSON overrides document (deployments' `overrides`) and the CLI's
/// `--set NODE.INPUT=VALUE` lines.
pub fn overrides(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = overrides_from_json(&v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut o = Overrides::new();
        for line in text.lines() {
            let _ = parse_set_arg(line, &mut o);
        }
    }
}

/// Validation against the built-in nodes, then planning of what validates.
pub fn validate_plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(wf) = parse_workflow(text) else {
        return;
    };
    let ctx = context();
    if let Ok(valid) =
        comfyrs::prompt::prepare(wf, &Overrides::new(), &ctx.registry, &ctx.env, None)
    {
        let _ = comfyrs::graph::plan(&valid.graph, &ctx.env, |_| false);
    }
}

/// The multipart reader of `/upload/image` (boundary `B`).
pub fn multipart(data: &[u8]) {
    use axum::extract::FromRequest;
    let ctx = context();
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/upload/image")
        .header("content-type", "multipart/form-data; boundary=B")
        .body(axum::body::Body::from(data.to_vec()))
        .expect("request");
    ctx.runtime.block_on(async {
        if let Ok(mp) = axum::extract::Multipart::from_request(req, &()).await {
            let _ = comfyrs::server::routes::files::read_form(mp).await;
        }
    });
}

/// The image reader behind `/view` previews and mask uploads (PNG and the other formats),
/// with its size limit.
pub fn image(data: &[u8]) {
    let _ = comfyrs::server::routes::files::decode_image(data);
}

/// The UI-format converter (editor workflows given to `comfyrs run`, `/prompt` and
/// deployments), against the built-in nodes' `/object_info` entries.
pub fn ui_workflow(data: &[u8]) {
    let Ok(ui) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let ctx = context();
    let info = |class: &str| ctx.object_info.get(class).cloned();
    let _ = comfyrs::workflow::ui::convert_ui_workflow(&ui, &info);
}

/// The workflow-source reader (`comfyrs run FILE`, `comfyrs check`): JSON in either format, or
/// the workflow a PNG (text chunks), WebP or JPEG (EXIF) carries, then conversion to API format.
pub fn workflow_source(data: &[u8]) {
    use comfyrs::workflow::source;
    let Ok(found) = source::detect(data) else {
        return;
    };
    let ctx = context();
    let info = |class: &str| ctx.object_info.get(class).cloned();
    let _ = source::to_api(found, &info);
}

/// A target: bytes in, nothing out (it must not panic).
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("workflow", workflow),
    ("overrides", overrides),
    ("validate_plan", validate_plan),
    ("multipart", multipart),
    ("image", image),
    ("ui_workflow", ui_workflow),
    ("workflow_source", workflow_source),
];
