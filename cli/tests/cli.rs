//! The `comfyrs` binary: exit codes, error JSON on stderr, overrides from the command line.

use serde_json::{json, Value as Json};
use std::path::Path;
use std::process::{Command, Output};

fn comfyrs(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs the binary")
}

fn write(dir: &Path, name: &str, value: &Json) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(value).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

fn workflow() -> Json {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "2": {"class_type": "CaseConverter", "inputs": {"string": ["1", 0], "mode": "UPPERCASE"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    })
}

#[test]
fn run_succeeds_and_applies_set_and_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "wf.json", &workflow());
    let out = comfyrs(&["run", &wf], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3: HELLO");

    let ov = write(
        dir.path(),
        "ov.json",
        &json!({"2": {"inputs": {"mode": "Title Case"}}}),
    );
    let out = comfyrs(
        &["run", &wf, "--overrides", &ov, "--set", "1.value=a cat"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3: A Cat");
}

#[test]
fn json_events_are_comfyui_messages() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "wf.json", &workflow());
    let out = comfyrs(&["run", &wf, "--json-events"], dir.path());
    let msgs: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "execution_start",
            "execution_cached",
            "progress_state",
            "executing",
            "progress_state",
            "progress_state",
            "executing",
            "progress_state",
            "progress_state",
            "executing",
            "executed",
            "progress_state",
            "execution_success"
        ]
    );
    assert_eq!(msgs[10]["data"]["output"], json!({"text": ["HELLO"]}));
    assert_eq!(msgs[11]["data"]["nodes"].as_object().unwrap().len(), 3);
}

#[test]
fn invalid_workflow_exits_2_with_comfyui_error_json() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "wf.json", &workflow());
    let out = comfyrs(&["run", &wf, "--set", "2.mode=loud"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err: Json = serde_json::from_slice(&out.stderr).expect("stderr is the error JSON");
    assert_eq!(err["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(
        err["node_errors"]["2"]["errors"][0]["type"],
        "value_not_in_list"
    );
    assert_eq!(err["node_errors"]["2"]["class_type"], "CaseConverter");

    let out = comfyrs(&["validate", &wf, "--set", "9.x=1"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err: Json = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["type"], "invalid_override");

    std::fs::write(dir.path().join("bad.json"), "{\"1\": ").unwrap();
    let out = comfyrs(&["validate", "bad.json"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err: Json = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["type"], "invalid_json");
    assert_eq!(err["error"]["extra_info"]["line"], 1);
}

#[test]
fn execution_error_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(
        dir.path(),
        "wf.json",
        &json!({"1": {"class_type": "RegexReplace",
                      "inputs": {"string": "x", "regex_pattern": "(", "replace": ""}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
    );
    let out = comfyrs(&["run", &wf], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("execution error in node 1 (RegexReplace): input 'regex_pattern': invalid regular expression"), "{stderr}");
}

#[test]
fn nodes_json_is_object_info() {
    let dir = tempfile::tempdir().unwrap();
    let out = comfyrs(&["nodes", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let info: Json = serde_json::from_slice(&out.stdout).unwrap();
    for class in [
        "PrimitiveString",
        "PrimitiveStringMultiline",
        "PrimitiveInt",
        "PrimitiveFloat",
        "PrimitiveBoolean",
        "StringConcatenate",
        "StringReplace",
        "StringLength",
        "StringSubstring",
        "CaseConverter",
        "StringTrim",
        "RegexReplace",
        "PreviewAny",
    ] {
        assert_eq!(info[class]["name"], class);
    }
}

#[test]
fn run_and_validate_start_node_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/node_hosts/py_pack.py");
    let host = format!("pytest_pack=python3 {}", pack.display());
    let wf = write(
        dir.path(),
        "wf.json",
        &json!({
            "a": {"class_type": "PrimitiveString", "inputs": {"value": "A"}},
            "b": {"class_type": "PrimitiveString", "inputs": {"value": "B"}},
            "sw": {"class_type": "PyLazySwitch",
                   "inputs": {"select": 2, "a": ["a", 0], "b": ["b", 0]}},
            "out": {"class_type": "PreviewAny", "inputs": {"source": ["sw", 0]}}
        }),
    );
    // Without the host the class does not exist.
    let out = comfyrs(&["validate", &wf], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PyLazySwitch does not exist"));
    let out = comfyrs(&["validate", &wf, "--node-host", &host], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = comfyrs(&["run", &wf, "--node-host", &host], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "out: B (other: None)"
    );
}
