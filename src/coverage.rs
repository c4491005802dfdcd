//! `comfyrs check`: how much of a set of workflows comfyrs can run. Each workflow is read
//! (API or UI JSON, or an image carrying one), converted, and validated against the registry
//! in a scratch folder holding empty stand-in files for every model and image it names, so
//! only what comfyrs lacks (node classes, model families) keeps it from running.

use crate::env::{Environment, Paths, MODEL_EXTENSIONS};
use crate::node::Registry;
use crate::prompt::prepare;
use crate::workflow::source::{self, Found};
use crate::workflow::ui::{missing_classes, parse_ui_workflow, MissingClass, UiError};
use crate::workflow::{workflow_from_json, Overrides};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Model families comfyrs runs today; anything else a workflow loads is reported missing.
pub const SUPPORTED_FAMILIES: &[&str] = &["SD1.x", "SDXL", "SD3.x", "Flux"];

/// Image files LoadImage-style inputs name.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

/// Folders stand-in model files are put in (every loader's folder).
const MODEL_FOLDERS: &[&str] = &[
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
    "latent_upscale_models",
];

/// Model families by file-name patterns (lower case), most specific first.
const FAMILY_PATTERNS: &[(&str, &[&str])] = &[
    ("Flux", &["flux", "kontext", "ae.safetensors"]),
    ("SD3.x", &["sd3"]),
    (
        "SDXL",
        &[
            "sdxl",
            "sd_xl",
            "xl_base",
            "xl_refiner",
            "juggernautxl",
            "realvisxl",
        ],
    ),
    ("Stable Cascade", &["cascade"]),
    ("SVD", &["svd"]),
    ("SD2.x", &["v2-1", "sd2", "512-inpainting-ema", "768-v-ema"]),
    ("Wan", &["wan2", "wan_", "umt5"]),
    ("Hunyuan3D", &["hunyuan3d"]),
    (
        "HunyuanVideo",
        &["hunyuan_video", "hunyuanvideo", "llava_llama3"],
    ),
    ("HunyuanImage", &["hunyuanimage", "hunyuan_image"]),
    ("LTX-Video", &["ltx"]),
    ("Qwen-Image", &["qwen"]),
    ("HiDream", &["hidream"]),
    ("Cosmos", &["cosmos", "oldt5"]),
    ("Lumina", &["lumina", "netayume", "gemma"]),
    ("Chroma", &["chroma"]),
    ("OmniGen", &["omnigen"]),
    ("ACE-Step", &["ace_step", "ace-step"]),
    ("Stable Audio", &["stable_audio", "stable-audio"]),
    ("Mochi", &["mochi"]),
    ("AuraFlow", &["aura"]),
    ("PixArt", &["pixart"]),
    ("Stable Zero123", &["zero123"]),
    (
        "SD1.x",
        &[
            "v1-5",
            "sd15",
            "sd1.5",
            "sd_1.5",
            "dreamshaper_8",
            "v1-5-pruned",
        ],
    ),
];

/// The family a model file name suggests, if any.
pub fn family_of(file_name: &str) -> Option<&'static str> {
    let lower = file_name.to_ascii_lowercase();
    FAMILY_PATTERNS
        .iter()
        .find(|(_, pats)| pats.iter().any(|p| lower.contains(p)))
        .map(|(f, _)| *f)
}

/// One workflow's result.
#[derive(Debug, Clone)]
pub struct WorkflowReport {
    pub name: String,
    /// `api`, `ui`, or the image format it came in.
    pub format: String,
    pub missing: Vec<MissingClass>,
    /// Classes comfyrs lists (so the workflow loads and validates) but cannot run yet: the
    /// pending loaders of `nodes::model_loaders_pending`.
    pub not_implemented: Vec<String>,
    /// Conversion error (other than missing classes).
    pub convert_error: Option<String>,
    /// Validation error summary; None when valid (or not reached).
    pub validate_error: Option<String>,
    pub validated: bool,
    /// Model families its loaders name (guessed from file names).
    pub families: Vec<String>,
}

impl WorkflowReport {
    pub fn unsupported_families(&self) -> Vec<&str> {
        self.families
            .iter()
            .map(String::as_str)
            .filter(|f| !SUPPORTED_FAMILIES.contains(f))
            .collect()
    }
    /// Converts, validates, uses only implemented classes and needs only supported families.
    pub fn runs(&self) -> bool {
        self.missing.is_empty()
            && self.not_implemented.is_empty()
            && self.convert_error.is_none()
            && self.validated
            && self.unsupported_families().is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub workflows: Vec<WorkflowReport>,
}

fn workflow_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                let entries = std::fs::read_dir(&d)
                    .map_err(|e| format!("cannot read {}: {e}", d.display()))?;
                for e in entries.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                        matches!(x.to_ascii_lowercase().as_str(), "json" | "png" | "webp")
                    }) && !path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("index") || n == "fuse_options.json")
                    {
                        out.push(path);
                    }
                }
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    out.sort();
    Ok(out)
}

/// String literals in a prompt that look like file names (model or image files).
fn file_literals(prompt: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(nodes) = prompt.as_object() else {
        return out;
    };
    for node in nodes.values() {
        let class = node["class_type"].as_str().unwrap_or("").to_string();
        if let Some(Json::Object(inputs)) = node.get("inputs") {
            for v in inputs.values() {
                if let Json::String(s) = v {
                    // An annotated name (`x.png [output]`, LoadImageOutput) is a file too.
                    let bare = [" [input]", " [output]", " [temp]"]
                        .iter()
                        .fold(s.as_str(), |n, tag| n.trim_end_matches(tag));
                    let ext = Path::new(bare)
                        .extension()
                        .and_then(|e| e.to_str())
                        .map(|e| e.to_ascii_lowercase());
                    let known = ext.as_deref().is_some_and(|e| {
                        MODEL_EXTENSIONS.contains(&e) || IMAGE_EXTENSIONS.contains(&e)
                    });
                    if known && s.len() < 250 && !s.contains('\n') {
                        out.push((class.clone(), s.clone()));
                    }
                }
            }
        }
    }
    out
}

fn stand_in_env(dir: &Path, files: &[(String, String)]) -> std::io::Result<Environment> {
    let paths = Paths::under(dir);
    for (_, name) in files {
        let rel = name
            .trim_end_matches(" [input]")
            .trim_end_matches(" [output]");
        if !crate::env::is_safe_relative(rel) {
            continue;
        }
        let ext = Path::new(rel)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut targets = Vec::new();
        if MODEL_EXTENSIONS.contains(&ext.as_str()) {
            for f in MODEL_FOLDERS {
                targets.push(paths.model_roots[0].join(f).join(rel));
            }
        } else {
            targets.push(paths.input.join(rel));
            targets.push(paths.output.join(rel));
        }
        for t in targets {
            if let Some(parent) = t.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if !t.exists() {
                std::fs::write(&t, stand_in_bytes(&ext))?;
            }
        }
    }
    Ok(Environment::new(paths))
}

/// A valid tiny file for image stand-ins (validation may hash or open them), empty otherwise.
fn stand_in_bytes(ext: &str) -> Vec<u8> {
    if matches!(ext, "png" | "jpg" | "jpeg" | "webp") {
        let img = image::RgbImage::new(8, 8);
        let mut out = std::io::Cursor::new(Vec::new());
        let format = match ext {
            "png" => image::ImageFormat::Png,
            "webp" => image::ImageFormat::WebP,
            _ => image::ImageFormat::Jpeg,
        };
        if img.write_to(&mut out, format).is_ok() {
            return out.into_inner();
        }
    }
    Vec::new()
}

fn summarize_validation(err: &Json) -> String {
    let mut parts = Vec::new();
    if let Some(m) = err.pointer("/error/message").and_then(Json::as_str) {
        parts.push(m.to_string());
    }
    if let Some(Json::Object(nodes)) = err.get("node_errors") {
        for (id, e) in nodes {
            let class = e["class_type"].as_str().unwrap_or("?");
            if let Some(Json::Array(errs)) = e.get("errors") {
                for x in errs.iter().take(2) {
                    let d = x["details"].as_str().unwrap_or("");
                    parts.push(format!(
                        "{id} {class}: {}{}",
                        x["message"].as_str().unwrap_or(""),
                        if d.is_empty() {
                            String::new()
                        } else {
                            format!(" ({d})")
                        }
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        err.pointer("/error/details")
            .and_then(Json::as_str)
            .unwrap_or("invalid")
            .to_string()
    } else {
        parts.join("; ")
    }
}

/// Checks one workflow file.
pub fn check_file(path: &Path, registry: &Registry) -> WorkflowReport {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = WorkflowReport {
        name,
        format: String::new(),
        missing: Vec::new(),
        not_implemented: Vec::new(),
        convert_error: None,
        validate_error: None,
        validated: false,
        families: Vec::new(),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            report.convert_error = Some(format!("cannot read: {e}"));
            return report;
        }
    };
    let found = match source::detect(&bytes) {
        Ok(f) => f,
        Err(e) => {
            report.convert_error = Some(e.to_string());
            return report;
        }
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    report.format = match (&found, ext.as_str()) {
        (Found::Api(_), "json") => "api".into(),
        (Found::Ui(_), "json") => "ui".into(),
        (Found::Api(_), e) => format!("{e} (prompt)"),
        (Found::Ui(_), e) => format!("{e} (workflow)"),
    };
    let scratch = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => {
            report.convert_error = Some(format!("cannot make a scratch folder: {e}"));
            return report;
        }
    };
    let empty_env = Environment::new(Paths::under(&scratch));
    let info = |class: &str| registry.schema(class).map(|s| s.object_info(&empty_env));
    // Missing classes are listed in full even when conversion would stop at the first.
    if let Found::Ui(ui) = &found {
        if let Ok(wf) = parse_ui_workflow(ui) {
            report.missing = missing_classes(&wf, &|c| registry.schema(c).is_some());
        }
    }
    let prompt = match source::to_api(found, &info) {
        Ok(c) => c.prompt,
        Err(UiError::MissingClasses(m)) => {
            report.missing = m;
            let _ = std::fs::remove_dir_all(&scratch);
            return report;
        }
        Err(e) => {
            report.convert_error = Some(e.to_string());
            let _ = std::fs::remove_dir_all(&scratch);
            return report;
        }
    };
    if let Some(nodes) = prompt.as_object() {
        let mut missing: Vec<MissingClass> = Vec::new();
        for (id, n) in nodes {
            let class = n["class_type"].as_str().unwrap_or("");
            if crate::nodes::model_loaders_pending::is_pending(class)
                && !report.not_implemented.iter().any(|c| c == class)
            {
                report.not_implemented.push(class.to_string());
            }
            if registry.schema(class).is_none() {
                match missing.iter_mut().find(|m| m.class_type == class) {
                    Some(m) => m.nodes.push(id.clone()),
                    None => missing.push(MissingClass {
                        class_type: class.to_string(),
                        pack: crate::workflow::ui::known_pack(class).map(str::to_string),
                        nodes: vec![id.clone()],
                    }),
                }
            }
        }
        if report.missing.is_empty() {
            report.missing = missing;
        }
    }
    let files = file_literals(&prompt);
    let mut families: Vec<String> = files
        .iter()
        .filter(|(class, _)| class.contains("Loader") || class.contains("Checkpoint"))
        .filter_map(|(_, f)| family_of(f).map(str::to_string))
        .collect();
    families.sort();
    families.dedup();
    report.families = families;
    if report.missing.is_empty() {
        match stand_in_env(&scratch, &files) {
            Ok(env) => {
                let result = workflow_from_json(prompt)
                    .map_err(crate::prompt::PromptError::from)
                    .and_then(|wf| prepare(wf, &Overrides::new(), registry, &env, None));
                match result {
                    Ok(_) => report.validated = true,
                    Err(e) => {
                        report.validate_error = Some(summarize_validation(&e.to_comfy_json()))
                    }
                }
            }
            Err(e) => report.validate_error = Some(format!("cannot write stand-in files: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    report
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("comfyrs-check-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Checks every workflow under `paths`. Images found in folders count only when they carry a
/// workflow (template folders hold thumbnails); images named explicitly always count.
pub fn check_paths(paths: &[PathBuf], registry: &Registry) -> Result<Report, String> {
    let files: Vec<PathBuf> = workflow_files(paths)?
        .into_iter()
        .filter(|f| {
            let is_image = f
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| !e.eq_ignore_ascii_case("json"));
            !is_image
                || paths.contains(f)
                || std::fs::read(f).is_ok_and(|b| {
                    !matches!(
                        source::detect(&b),
                        Err(source::SourceError::NoWorkflowInImage { .. })
                    )
                })
        })
        .collect();
    if files.is_empty() {
        return Err("no workflow files (.json, .png, .webp) found".into());
    }
    Ok(Report {
        workflows: files.iter().map(|f| check_file(f, registry)).collect(),
    })
}

impl Report {
    /// Missing classes ranked by how many workflows need them: (class, pack, count).
    pub fn missing_ranked(&self) -> Vec<(String, Option<String>, usize)> {
        let mut counts: BTreeMap<String, (Option<String>, usize)> = BTreeMap::new();
        for w in &self.workflows {
            for m in &w.missing {
                let e = counts
                    .entry(m.class_type.clone())
                    .or_insert((m.pack.clone(), 0));
                e.1 += 1;
                if e.0.is_none() {
                    e.0 = m.pack.clone();
                }
            }
        }
        let mut v: Vec<_> = counts.into_iter().map(|(c, (p, n))| (c, p, n)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        v
    }

    /// Listed-but-not-implemented classes ranked by how many workflows use them.
    pub fn not_implemented_ranked(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for w in &self.workflows {
            for c in &w.not_implemented {
                *counts.entry(c.clone()).or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Unsupported model families ranked by how many workflows need them.
    pub fn families_ranked(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for w in &self.workflows {
            for f in w.unsupported_families() {
                *counts.entry(f.to_string()).or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    fn counts(&self) -> (usize, usize, usize, usize) {
        let total = self.workflows.len();
        let converts = self
            .workflows
            .iter()
            .filter(|w| w.missing.is_empty() && w.convert_error.is_none())
            .count();
        let validates = self.workflows.iter().filter(|w| w.validated).count();
        let runs = self.workflows.iter().filter(|w| w.runs()).count();
        (total, converts, validates, runs)
    }

    fn status(w: &WorkflowReport) -> String {
        if w.runs() {
            "runs".into()
        } else if !w.missing.is_empty() {
            format!(
                "missing nodes: {}",
                w.missing
                    .iter()
                    .map(|m| m.class_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if let Some(e) = &w.convert_error {
            format!("does not convert: {e}")
        } else if let Some(e) = &w.validate_error {
            format!("invalid: {e}")
        } else if !w.not_implemented.is_empty() {
            format!(
                "loaders not implemented yet: {}",
                w.not_implemented.join(", ")
            )
        } else {
            format!(
                "needs model families: {}",
                w.unsupported_families().join(", ")
            )
        }
    }

    /// The terminal report: one line per workflow, then the totals.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for w in &self.workflows {
            s.push_str(&format!(
                "{:<48} {:<16} {}\n",
                w.name,
                w.format,
                Self::status(w)
            ));
        }
        let (total, converts, validates, runs) = self.counts();
        s.push_str(&format!(
            "\n{total} workflows: {converts} convert, {validates} validate, {runs} run (families comfyrs runs: {})\n",
            SUPPORTED_FAMILIES.join(", ")
        ));
        let missing = self.missing_ranked();
        if !missing.is_empty() {
            s.push_str("missing node classes (workflows needing them):\n");
            for (c, p, n) in missing.iter().take(40) {
                s.push_str(&format!(
                    "  {n:>4}  {c}{}\n",
                    p.as_ref().map(|p| format!("  [{p}]")).unwrap_or_default()
                ));
            }
        }
        let pending = self.not_implemented_ranked();
        if !pending.is_empty() {
            s.push_str("loaders listed but not implemented yet (workflows using them):\n");
            for (c, n) in pending {
                s.push_str(&format!("  {n:>4}  {c}\n"));
            }
        }
        let fams = self.families_ranked();
        if !fams.is_empty() {
            s.push_str("model families comfyrs does not run yet (workflows needing them):\n");
            for (f, n) in fams {
                s.push_str(&format!("  {n:>4}  {f}\n"));
            }
        }
        s
    }

    /// The Markdown report (docs/coverage.md).
    pub fn to_markdown(&self, title: Option<&str>) -> String {
        let (total, converts, validates, runs) = self.counts();
        let mut s = String::from("# Workflow coverage\n\n");
        s.push_str("Generated by `comfyrs check`; do not edit by hand.\n\n");
        if let Some(t) = title {
            s.push_str(&format!("{t}\n\n"));
        }
        s.push_str(&format!(
            "| workflows | convert to API format | validate (stand-in model files) | run today |\n|---|---|---|---|\n| {total} | {converts} | {validates} | {runs} |\n\n"
        ));
        s.push_str(&format!(
            "\"Run today\" means: every node class is registered and implemented (not one of the loaders listed for model kinds comfyrs cannot run yet), the workflow validates, and every model family its loaders name is one comfyrs runs ({}). Families are guessed from model file names.\n\n",
            SUPPORTED_FAMILIES.join(", ")
        ));
        s.push_str("## Missing node classes, by number of workflows needing them\n\n| workflows | class | custom-node pack |\n|---|---|---|\n");
        for (c, p, n) in self.missing_ranked() {
            s.push_str(&format!(
                "| {n} | `{c}` | {} |\n",
                p.as_deref().unwrap_or("core")
            ));
        }
        s.push_str("\n## Loaders listed but not implemented yet\n\nRegistered with ComfyUI's schemas so these workflows load and validate; running one fails naming the model kind.\n\n| workflows | class |\n|---|---|\n");
        for (c, n) in self.not_implemented_ranked() {
            s.push_str(&format!("| {n} | `{c}` |\n"));
        }
        s.push_str(
            "\n## Model families comfyrs does not run yet\n\n| workflows | family |\n|---|---|\n",
        );
        for (f, n) in self.families_ranked() {
            s.push_str(&format!("| {n} | {f} |\n"));
        }
        s.push_str("\n## Per workflow\n\n| workflow | format | status |\n|---|---|---|\n");
        for w in &self.workflows {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                w.name,
                w.format,
                Self::status(w).replace('|', "\\|")
            ));
        }
        s
    }
}
