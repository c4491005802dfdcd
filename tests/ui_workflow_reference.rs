//! The UI-to-API conversion against the real frontend: every workflow of ComfyUI's official
//! templates package (comfyui-workflow-templates 0.1.95, the version ComfyUI 0.3.64 pins) was
//! converted by frontend 1.27.10's own `app.graphToPrompt()` in headless Chromium
//! (`e2e/frontend_convert.mjs`, see tests/data/ui_workflows/README.md) and the API JSON kept
//! next to it. comfyrs's converter must produce the identical JSON, key order included.
//!
//! Two schema sources: ComfyUI 0.3.64's own `/object_info` (all templates, the frontend's
//! input), and comfyrs's registry (the templates whose every node comfyrs registers, which
//! also proves those schemas match ComfyUI's where the conversion can tell).

use comfyrs::env::{Environment, Paths};
use comfyrs::node::Registry;
use comfyrs::workflow::ui::{convert_ui_workflow, UiError};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ui_workflows")
}

/// (template path, reference API JSON path), for every template with a reference.
fn cases() -> Vec<(PathBuf, PathBuf)> {
    let dir = data_dir().join("templates");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("templates dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".api.json") {
            out.push((dir.join(format!("{stem}.json")), p));
        }
    }
    out.sort();
    out
}

fn read(p: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

/// Compares as text so key order counts too.
fn diff(name: &str, got: &Json, want: &Json) -> Option<String> {
    let g = serde_json::to_string_pretty(got).unwrap();
    let w = serde_json::to_string_pretty(want).unwrap();
    if g == w {
        return None;
    }
    let first = g
        .lines()
        .zip(w.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("line {}: got {a:?}, frontend {b:?}", i + 1))
        .unwrap_or_else(|| "lengths differ".into());
    Some(format!("{name}: {first}"))
}

#[test]
fn every_template_matches_the_frontend_with_comfyui_schemas() {
    let info = read(&data_dir().join("comfyui_0.3.64_object_info.json"));
    let lookup = |c: &str| info.get(c).cloned();
    let cases = cases();
    assert!(
        cases.len() >= 170,
        "found only {} reference cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for (template, reference) in &cases {
        let name = template.file_name().unwrap().to_string_lossy().into_owned();
        let ui = read(template);
        let want = read(reference);
        // Nodes the frontend had no class for (custom nodes) come out without class_type;
        // comfyrs must refuse the workflow and name exactly those nodes.
        let unknown: Vec<String> = want
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.get("class_type").is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if !unknown.is_empty() {
            match convert_ui_workflow(&ui, &lookup) {
                Err(UiError::MissingClasses(m)) => {
                    let mut named: Vec<String> =
                        m.iter().flat_map(|c| c.nodes.iter().cloned()).collect();
                    named.sort();
                    let mut unknown = unknown;
                    unknown.sort();
                    if named != unknown {
                        failures.push(format!(
                            "{name}: missing nodes {named:?}, frontend {unknown:?}"
                        ));
                    }
                }
                other => failures.push(format!("{name}: expected missing classes, got {other:?}")),
            }
            continue;
        }
        match convert_ui_workflow(&ui, &lookup) {
            Ok(c) => {
                if let Some(d) = diff(&name, &c.prompt, &want) {
                    failures.push(d);
                    // For investigating a difference: COMFYRS_UI_DUMP=DIR keeps our output.
                    if let Ok(dir) = std::env::var("COMFYRS_UI_DUMP") {
                        let text = serde_json::to_string_pretty(&c.prompt).unwrap();
                        std::fs::write(Path::new(&dir).join(&name), text).unwrap();
                    }
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} templates differ from the frontend:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn templates_comfyrs_registers_match_the_frontend_with_comfyrs_schemas() {
    let registry = Registry::with_builtin_nodes();
    let scratch = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(scratch.path()));
    let lookup = |c: &str| registry.schema(c).map(|s| s.object_info(&env));
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for (template, reference) in cases() {
        let want = read(&reference);
        let all_registered = want
            .as_object()
            .unwrap()
            .values()
            .all(|n| registry.schema(n["class_type"].as_str().unwrap()).is_some());
        if !all_registered {
            continue;
        }
        let name = template.file_name().unwrap().to_string_lossy().into_owned();
        match convert_ui_workflow(&read(&template), &lookup) {
            Ok(c) => {
                if let Some(d) = diff(&name, &c.prompt, &want) {
                    failures.push(d);
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        checked.push(name);
    }
    assert!(
        !checked.is_empty(),
        "no template uses only nodes comfyrs registers"
    );
    assert!(
        failures.is_empty(),
        "{} of {} templates differ:\n{}",
        failures.len(),
        checked.len(),
        failures.join("\n")
    );
    eprintln!("checked with comfyrs schemas: {}", checked.join(", "));
}
