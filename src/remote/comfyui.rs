//! A ComfyUI `custom_nodes` folder as a node host (`serve --comfyui-packs DIR
//! --comfyui-python PY`): the host is `sdk/python/comfyui_host.py`, run by the user's ComfyUI
//! Python with a ComfyUI checkout importable, so packs load exactly as ComfyUI loads them.
//! Also here: the packs' web assets (`WEB_DIRECTORY`, `locales/`, example workflows), which
//! the server hands out at ComfyUI's routes.

use super::host::HostConfig;
use super::sandbox::SandboxMode;
use serde_json::{Map, Value as Json};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

const SDK: &str = include_str!("../../sdk/python/comfyrs_node.py");
const COMFYUI_HOST: &str = include_str!("../../sdk/python/comfyui_host.py");

/// Writes the Python SDK and the ComfyUI host script (compiled into comfyrs) to a folder the
/// host can import them from.
pub fn write_sdk() -> std::io::Result<PathBuf> {
    let hash = blake3::hash(format!("{SDK}{COMFYUI_HOST}").as_bytes()).to_hex();
    let dir = std::env::temp_dir().join(format!("comfyrs-sdk-{}", &hash[..16]));
    std::fs::create_dir_all(&dir)?;
    for (name, text) in [("comfyrs_node.py", SDK), ("comfyui_host.py", COMFYUI_HOST)] {
        let p = dir.join(name);
        if std::fs::read_to_string(&p).ok().as_deref() != Some(text) {
            let tmp = dir.join(format!("{name}.{}", std::process::id()));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &p)?;
        }
    }
    Ok(dir)
}

/// Where the ComfyUI checkout is: given, or the parent of a `custom_nodes` folder.
pub fn comfyui_root(packs: &Path, given: Option<&Path>) -> Result<PathBuf, String> {
    let root = match given {
        Some(r) => r.to_path_buf(),
        None => std::path::absolute(packs)
            .map_err(|e| e.to_string())?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("the packs folder has no parent")?,
    };
    if !root.join("nodes.py").is_file() || !root.join("comfy").is_dir() {
        return Err(format!(
            "{} is not a ComfyUI checkout (no nodes.py and comfy/); pass --comfyui-root",
            root.display()
        ));
    }
    Ok(root)
}

/// The host that runs the packs of `packs` with `python` and the ComfyUI at `root`.
pub fn host_config(
    packs: &Path,
    python: &Path,
    root: &Path,
    sandbox: SandboxMode,
) -> Result<HostConfig, String> {
    let sdk = write_sdk().map_err(|e| format!("cannot write the Python host script: {e}"))?;
    let abs = |p: &Path| -> Result<String, String> {
        Ok(std::path::absolute(p)
            .map_err(|e| e.to_string())?
            .display()
            .to_string())
    };
    if !packs.is_dir() {
        return Err(format!("--comfyui-packs {}: not a folder", packs.display()));
    }
    let mut cfg = HostConfig::new(
        "comfyui",
        vec![
            python.display().to_string(),
            sdk.join("comfyui_host.py").display().to_string(),
            "--comfyui".into(),
            abs(root)?,
            "--packs".into(),
            abs(packs)?,
        ],
    );
    cfg.workdir = Some(root.to_path_buf());
    cfg.env
        .push(("PYTHONPATH".into(), sdk.display().to_string()));
    cfg.env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    // Visible inside the sandbox (its /tmp is private). Packs keep settings in their own
    // folders (Custom-Scripts writes pysssss.json at import): the packs folder stays writable.
    cfg.ro_binds.push(sdk.clone());
    cfg.rw_binds.push(PathBuf::from(abs(packs)?));
    cfg.sandbox = sandbox;
    // Packs import torch and friends at load; give them time.
    cfg.start_timeout = Duration::from_secs(600);
    Ok(cfg)
}

/// The web-facing files of a custom_nodes folder, as ComfyUI 0.3.64 serves them
/// (`server.py` /extensions, `app/custom_node_manager.py` /i18n and /workflow_templates).
#[derive(Debug, Clone, Default)]
pub struct PackAssets {
    /// `EXTENSION_WEB_DIRS`: name -> folder, in load order (reported by the host, which knows
    /// each module's `WEB_DIRECTORY`).
    pub web_dirs: Vec<(String, PathBuf)>,
    /// Pack folders (name -> path), sorted.
    pub packs: Vec<(String, PathBuf)>,
}

/// The folders ComfyUI looks in for a pack's example workflows, in its order.
const EXAMPLE_FOLDERS: &[&str] = &[
    "example_workflows",
    "example",
    "examples",
    "workflow",
    "workflows",
];

impl PackAssets {
    /// The packs under `packs_dir`, with the web folders the host reported (`{name: path}`).
    pub fn new(packs_dir: &Path, web_dirs: &Json) -> PackAssets {
        let mut packs: Vec<(String, PathBuf)> = std::fs::read_dir(packs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| n != "__pycache__" && !n.ends_with(".disabled"))
            .collect();
        packs.sort();
        let web_dirs = web_dirs
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), PathBuf::from(v.as_str()?))))
                    .filter(|(_, p)| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        PackAssets { web_dirs, packs }
    }

    /// `GET /extensions`: every `.js` file under each web folder, as a URL.
    pub fn extensions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, dir) in &self.web_dirs {
            let mut files = Vec::new();
            collect_files(dir, dir, "js", &mut files);
            files.sort();
            for rel in files {
                out.push(format!("/extensions/{}/{rel}", quote(name)));
            }
        }
        out
    }

    /// The file behind `/extensions/<name>/<rel>`, if it exists inside that web folder.
    pub fn web_file(&self, name: &str, rel: &str) -> Option<PathBuf> {
        let (_, dir) = self.web_dirs.iter().find(|(n, _)| n == name)?;
        inside(dir, rel)
    }

    /// `GET /i18n`: every pack's `locales/<lang>/main.json` plus `nodeDefs`, `commands` and
    /// `settings` files, merged per language.
    pub fn i18n(&self) -> Json {
        let mut out = Map::new();
        for (_, dir) in &self.packs {
            let Ok(langs) = std::fs::read_dir(dir.join("locales")) else {
                continue;
            };
            let mut langs: Vec<PathBuf> = langs
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            langs.sort();
            for lang in langs {
                let code = lang
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let mut t = match read_json(&lang.join("main.json")) {
                    Some(Json::Object(m)) => m,
                    _ => Map::new(),
                };
                for extra in ["nodeDefs", "commands", "settings"] {
                    match read_json(&lang.join(format!("{extra}.json"))) {
                        Some(Json::Object(m)) if !m.is_empty() => {
                            t.insert(extra.into(), Json::Object(m));
                        }
                        _ => {}
                    }
                }
                let entry = out.entry(code).or_insert_with(|| Json::Object(Map::new()));
                if !t.is_empty() {
                    merge(entry, Json::Object(t));
                }
            }
        }
        Json::Object(out)
    }

    /// `GET /workflow_templates`: pack folder name -> example workflow names.
    pub fn workflow_templates(&self) -> Json {
        let mut out = Map::new();
        for folder in EXAMPLE_FOLDERS {
            for (name, dir) in &self.packs {
                let mut names: Vec<String> = std::fs::read_dir(dir.join(folder))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
                    .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
                    .collect();
                names.sort();
                if names.is_empty() {
                    continue;
                }
                let list = out
                    .entry(name.clone())
                    .or_insert_with(|| Json::Array(Vec::new()));
                if let Json::Array(a) = list {
                    a.extend(names.into_iter().map(Json::String));
                }
            }
        }
        Json::Object(out)
    }

    /// The file behind `/api/workflow_templates/<pack>/<rel>`.
    pub fn template_file(&self, pack: &str, rel: &str) -> Option<PathBuf> {
        let (_, dir) = self.packs.iter().find(|(n, _)| n == pack)?;
        EXAMPLE_FOLDERS
            .iter()
            .find_map(|f| inside(&dir.join(f), rel))
    }
}

/// `rel` under `dir`, refusing `..`, absolute paths and links that leave the folder.
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let p = dir.join(rel).canonicalize().ok()?;
    let base = dir.canonicalize().ok()?;
    (p.starts_with(&base) && p.is_file()).then_some(p)
}

fn collect_files(base: &Path, dir: &Path, ext: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(base, &p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
}

fn read_json(p: &Path) -> Option<Json> {
    let text = std::fs::read_to_string(p).ok()?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("Error loading {}: {e}", p.display());
            None
        }
    }
}

/// ComfyUI's `merge_json_recursive`: objects merge key by key, anything else is replaced.
fn merge(base: &mut Json, update: Json) {
    match (base, update) {
        (Json::Object(b), Json::Object(u)) => {
            for (k, v) in u {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, u) => *b = u,
    }
}

/// Python's `urllib.parse.quote` (safe "/").
fn quote(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assets_follow_comfyui_layout() {
        let d = tempfile::tempdir().unwrap();
        let pack = d.path().join("my pack");
        std::fs::create_dir_all(pack.join("js/sub")).unwrap();
        std::fs::write(pack.join("js/a.js"), "1").unwrap();
        std::fs::write(pack.join("js/sub/b.js"), "2").unwrap();
        std::fs::write(pack.join("js/c.css"), "3").unwrap();
        std::fs::create_dir_all(pack.join("locales/en")).unwrap();
        std::fs::write(pack.join("locales/en/main.json"), r#"{"a": {"x": 1}}"#).unwrap();
        std::fs::write(
            pack.join("locales/en/nodeDefs.json"),
            r#"{"N": {"display_name": "n"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(pack.join("example_workflows")).unwrap();
        std::fs::write(pack.join("example_workflows/demo.json"), "{}").unwrap();
        let web = json!({"my pack": pack.join("js").display().to_string()});
        let a = PackAssets::new(d.path(), &web);
        assert_eq!(
            a.extensions(),
            vec![
                "/extensions/my%20pack/a.js",
                "/extensions/my%20pack/sub/b.js"
            ]
        );
        assert!(a.web_file("my pack", "sub/b.js").is_some());
        assert!(a.web_file("my pack", "../locales/en/main.json").is_none());
        assert_eq!(
            a.i18n(),
            json!({"en": {"a": {"x": 1}, "nodeDefs": {"N": {"display_name": "n"}}}})
        );
        assert_eq!(a.workflow_templates(), json!({"my pack": ["demo"]}));
        assert!(a.template_file("my pack", "demo.json").is_some());
    }

    #[test]
    fn merge_is_recursive() {
        let mut a = json!({"x": {"a": 1, "b": 2}, "y": 1});
        merge(&mut a, json!({"x": {"b": 3}, "y": {"z": 1}}));
        assert_eq!(a, json!({"x": {"a": 1, "b": 3}, "y": {"z": 1}}));
    }
}
