//! One small UI workflow per conversion rule (tests/data/ui_workflows/rules, written by
//! gen_rules.py), each compared with what the real frontend 1.27.10 made of it; plus the
//! rules that need no frontend: missing classes named with their pack, workflows read from
//! PNG/WebP/JPEG metadata written the way ComfyUI writes them, and the CLI's convert/check.

use comfyrs::env::{Environment, Paths};
use comfyrs::node::Registry;
use comfyrs::workflow::source::{detect, to_api, Found, SourceError};
use comfyrs::workflow::ui::{convert_ui_workflow, process_dynamic_prompt, UiError};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn data(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("tests/data/ui_workflows")
        .join(rel)
}

fn read(p: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

fn comfyui_info() -> Json {
    read(&data("comfyui_0.3.64_object_info.json"))
}

/// Converts rules/NAME.json with ComfyUI's schemas and checks it against the frontend's
/// output, as text (key order counts).
fn check_rule(name: &str) -> Json {
    let info = comfyui_info();
    let ui = read(&data(&format!("rules/{name}.json")));
    let want = read(&data(&format!("rules/{name}.api.json")));
    let got = convert_ui_workflow(&ui, &|c| info.get(c).cloned())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .prompt;
    assert_eq!(
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&want).unwrap(),
        "{name} differs from the frontend"
    );
    got
}

#[test]
fn widget_values_follow_declaration_order_and_skip_frontend_only_widgets() {
    let got = check_rule("widgets_in_order");
    // [seed, "randomize", steps, ...]: the control_after_generate value is not sent.
    assert_eq!(got["3"]["inputs"]["seed"], json!(42));
    assert_eq!(got["3"]["inputs"]["steps"], json!(20));
    assert!(got["3"]["inputs"].get("control_after_generate").is_none());
    // LoadImage ["example.png", "image"]: the upload button's value is not sent.
    assert_eq!(got["10"]["inputs"], json!({"image": "example.png"}));
    assert_eq!(
        got["11"]["inputs"]["crop"],
        json!("disabled"),
        "four widgets in order"
    );
}

#[test]
fn linked_widgets_send_links_and_primitive_nodes_send_their_value() {
    let got = check_rule("converted_widgets_and_primitives");
    assert_eq!(
        got["3"]["inputs"]["seed"],
        json!(1234),
        "PrimitiveNode value"
    );
    assert_eq!(
        got["3"]["inputs"]["steps"],
        json!(["21", 0]),
        "a real node's link"
    );
    assert_eq!(got["6"]["inputs"]["text"], json!("a primitive prompt"));
    assert!(got.get("20").is_none() && got.get("22").is_none());
}

#[test]
fn reroutes_are_resolved_through() {
    let got = check_rule("reroutes");
    assert_eq!(got["3"]["inputs"]["model"], json!(["4", 0]));
    assert!(got.get("30").is_none() && got.get("31").is_none() && got.get("32").is_none());
}

#[test]
fn bypassed_nodes_pass_the_matching_input_through() {
    let got = check_rule("bypassed_nodes");
    assert!(
        got.get("40").is_none(),
        "the bypassed LoraLoader is not sent"
    );
    assert_eq!(
        got["3"]["inputs"]["model"],
        json!(["4", 0]),
        "MODEL by type"
    );
    assert_eq!(got["41"]["inputs"]["clip"], json!(["4", 1]), "CLIP by type");
    // A bypassed VAEDecode has no IMAGE input: what it fed loses the input.
    assert_eq!(got["44"]["inputs"], json!({}));
}

#[test]
fn muted_nodes_are_dropped_with_links_to_them() {
    let got = check_rule("muted_nodes");
    assert!(got.get("9").is_none() && got.get("50").is_none());
    assert_eq!(got["51"]["inputs"], json!({"vae": ["4", 2]}));
}

#[test]
fn notes_and_groups_are_not_sent_and_titles_are_kept() {
    let got = check_rule("notes_and_groups");
    assert!(got.get("60").is_none() && got.get("61").is_none());
    assert_eq!(got["7"]["_meta"]["title"], json!("Negative"));
    assert_eq!(
        got["6"]["_meta"]["title"],
        json!("CLIP Text Encode (Prompt)")
    );
}

#[test]
fn dynamic_prompts_and_filename_replacements() {
    let got = check_rule("text_processing");
    assert_eq!(
        got["6"]["inputs"]["text"],
        json!("a cat \nsitting  still, {literal}")
    );
    assert_eq!(
        got["9"]["inputs"]["filename_prefix"],
        json!("run_42_blurry")
    );
    // {a|b} picks one option at random, as the frontend does.
    for _ in 0..20 {
        let p = process_dynamic_prompt("{red|green} {x}");
        assert!(p == "red x" || p == "green x", "{p}");
    }
}

#[test]
fn saved_values_of_force_input_inputs_are_dropped() {
    let got = check_rule("widget_values_migration");
    assert_eq!(
        got["70"]["inputs"],
        json!({"start_percent": 0.1, "end_percent": 0.9, "print_keyframes": true})
    );
}

#[test]
fn rules_match_with_comfyrs_schemas_too() {
    let registry = Registry::with_builtin_nodes();
    let scratch = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(scratch.path()));
    let mut checked = 0;
    for name in [
        "widgets_in_order",
        "converted_widgets_and_primitives",
        "reroutes",
        "bypassed_nodes",
        "muted_nodes",
        "notes_and_groups",
        "text_processing",
    ] {
        let want = read(&data(&format!("rules/{name}.api.json")));
        let got = convert_ui_workflow(&read(&data(&format!("rules/{name}.json"))), &|c| {
            registry.schema(c).map(|s| s.object_info(&env))
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .prompt;
        assert_eq!(
            serde_json::to_string_pretty(&got).unwrap(),
            serde_json::to_string_pretty(&want).unwrap(),
            "{name} with comfyrs's schemas"
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn missing_classes_are_named_with_their_pack() {
    let info = comfyui_info();
    let mut ui = read(&data("rules/widgets_in_order.json"));
    let nodes = ui["nodes"].as_array_mut().unwrap();
    nodes.push(
        json!({"id": 90, "type": "VHS_VideoCombine", "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "widgets_values": {}}),
    );
    nodes.push(
        json!({"id": 91, "type": "MyNode", "mode": 0, "inputs": [], "outputs": [],
                      "properties": {"cnr_id": "my-pack", "ver": "1.0"}}),
    );
    nodes.push(
        json!({"id": 92, "type": "MyNode", "mode": 0, "inputs": [], "outputs": [],
                      "properties": {"cnr_id": "my-pack"}}),
    );
    nodes.push(json!({"id": 93, "type": "Unheard Of", "mode": 0, "inputs": [], "outputs": []}));
    // A muted or bypassed node is never sent, so its class is not needed.
    nodes.push(json!({"id": 94, "type": "MutedThing", "mode": 2, "inputs": [], "outputs": []}));
    nodes.push(json!({"id": 95, "type": "BypassedThing", "mode": 4, "inputs": [], "outputs": []}));
    let err = convert_ui_workflow(&ui, &|c| info.get(c).cloned()).unwrap_err();
    let UiError::MissingClasses(missing) = &err else {
        panic!("{err:?}")
    };
    let summary: Vec<(String, Option<String>, Vec<String>)> = missing
        .iter()
        .map(|m| (m.class_type.clone(), m.pack.clone(), m.nodes.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "VHS_VideoCombine".into(),
                Some("comfyui-videohelpersuite".into()),
                vec!["90".into()]
            ),
            (
                "MyNode".into(),
                Some("my-pack".into()),
                vec!["91".into(), "92".into()]
            ),
            ("Unheard Of".into(), None, vec!["93".into()]),
        ]
    );
    assert_eq!(
        err.to_string(),
        "the workflow needs node classes comfyrs does not have: VHS_VideoCombine (custom nodes: \
         comfyui-videohelpersuite), MyNode (custom nodes: my-pack), Unheard Of"
    );
    let body = err.to_comfy_json();
    assert_eq!(body["error"]["type"], json!("missing_node_type"));
    assert_eq!(
        body["error"]["extra_info"]["missing"][1],
        json!({"class_type": "MyNode", "pack": "my-pack", "nodes": ["91", "92"]})
    );
}

#[test]
fn broken_links_are_errors_naming_the_node() {
    let info = comfyui_info();
    let mut ui = read(&data("rules/widgets_in_order.json"));
    // Node 8's `samples` input names a link that is not in the links list.
    for n in ui["nodes"].as_array_mut().unwrap() {
        if n["id"] == json!(8) {
            n["inputs"][0]["link"] = json!(999);
        }
    }
    let err = convert_ui_workflow(&ui, &|c| info.get(c).cloned()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 8: input 'samples' names link 999, which does not exist"
    );
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(data(&format!("images/{name}"))).unwrap()
}

#[test]
fn workflows_are_read_from_images_as_comfyui_writes_them() {
    let prompt = read(&data("rules/widgets_in_order.api.json"));
    let workflow = read(&data("rules/widgets_in_order.json"));
    // The API prompt (what ran) wins over the UI workflow when both are there.
    for f in [
        "prompt_and_workflow.png",
        "prompt_and_workflow.webp",
        "prompt_and_workflow.jpg",
    ] {
        assert_eq!(
            detect(&image(f)).unwrap(),
            Found::Api(prompt.clone()),
            "{f}"
        );
    }
    for f in ["workflow_only.png", "workflow_only.webp"] {
        assert_eq!(
            detect(&image(f)).unwrap(),
            Found::Ui(workflow.clone()),
            "{f}"
        );
    }
    assert_eq!(
        detect(&image("no_metadata.png")).unwrap_err(),
        SourceError::NoWorkflowInImage { format: "PNG" }
    );
    // A UI workflow from an image converts like the JSON file.
    let info = comfyui_info();
    let got = to_api(detect(&image("workflow_only.webp")).unwrap(), &|c| {
        info.get(c).cloned()
    })
    .unwrap();
    assert_eq!(got.prompt, prompt);
}

#[test]
fn json_files_are_told_apart_by_shape() {
    let api = br#"{"1": {"class_type": "EmptyLatentImage", "inputs": {}}}"#;
    assert!(matches!(detect(api).unwrap(), Found::Api(_)));
    let ui = std::fs::read(data("rules/reroutes.json")).unwrap();
    assert!(matches!(detect(&ui).unwrap(), Found::Ui(_)));
    let err = detect(b"{\"nodes\": [").unwrap_err();
    assert!(
        matches!(err, SourceError::InvalidJson { line: 1, .. }),
        "{err:?}"
    );
}

fn comfyrs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_comfyrs"))
}

#[test]
fn cli_convert_writes_the_api_json_and_lists_node_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("api.json");
    let o = comfyrs()
        .args(["convert"])
        .arg(data("images/workflow_only.png"))
        .arg("-o")
        .arg(&out)
        .args(["--base-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = read(&data("rules/widgets_in_order.api.json"));
    assert_eq!(read(&out), want);
    let listing = String::from_utf8_lossy(&o.stderr);
    assert!(
        listing.contains("       3  KSampler"),
        "node ids listed:\n{listing}"
    );
    // A UI workflow with a class comfyrs lacks fails with ComfyUI's error shape.
    let mut ui = read(&data("rules/reroutes.json"));
    ui["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 99, "type": "SetNode", "mode": 0, "inputs": [], "outputs": []}));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, ui.to_string()).unwrap();
    let o = comfyrs()
        .arg("validate")
        .arg(&bad)
        .arg("--base-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err: Json = serde_json::from_slice(&o.stderr).expect("error JSON on stderr");
    assert_eq!(
        err["error"]["extra_info"]["missing"],
        json!([{"class_type": "SetNode", "pack": "comfyui-kjnodes", "nodes": ["99"]}])
    );
}

#[test]
fn cli_check_reports_conversion_validation_and_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let wfs = dir.path().join("wfs");
    std::fs::create_dir(&wfs).unwrap();
    std::fs::copy(data("rules/reroutes.json"), wfs.join("a_reroutes.json")).unwrap();
    std::fs::copy(data("images/workflow_only.webp"), wfs.join("b_image.webp")).unwrap();
    let mut ui = read(&data("rules/reroutes.json"));
    ui["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 99, "type": "VHS_LoadVideo", "mode": 0, "inputs": [], "outputs": []}));
    std::fs::write(wfs.join("c_custom.json"), ui.to_string()).unwrap();
    // A listed-but-not-implemented loader: converts and validates, does not run.
    let pending = json!({
        "1": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "style.safetensors"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    std::fs::write(wfs.join("d_pending.json"), pending.to_string()).unwrap();
    let md = dir.path().join("coverage.md");
    let o = comfyrs()
        .arg("check")
        .arg(&wfs)
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("a_reroutes.json") && lines[0].ends_with("runs"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("b_image.webp")
            && lines[1].contains("webp (workflow)")
            && lines[1].ends_with("runs"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("c_custom.json") && lines[2].ends_with("missing nodes: VHS_LoadVideo"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("d_pending.json")
            && lines[3].ends_with("loaders not implemented yet: StyleModelLoader"),
        "{text}"
    );
    assert!(
        text.contains("4 workflows: 3 convert, 3 validate, 2 run"),
        "{text}"
    );
    assert!(
        text.contains("VHS_LoadVideo  [comfyui-videohelpersuite]"),
        "{text}"
    );
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| 4 | 3 | 3 | 2 |"), "{md}");
    assert!(md.contains("| 1 | `StyleModelLoader` |"), "{md}");
    assert!(
        md.contains("| 1 | `VHS_LoadVideo` | comfyui-videohelpersuite |"),
        "{md}"
    );
}

#[test]
fn cli_overrides_apply_to_converted_workflows_by_api_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = dir.path().join("models/checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    std::fs::write(ckpts.join("v1-5-pruned-emaonly.safetensors"), b"").unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::copy(
        data("images/no_metadata.png"),
        dir.path().join("input/example.png"),
    )
    .unwrap();
    let validate = |extra: &[&str]| {
        comfyrs()
            .arg("validate")
            .arg(data("images/workflow_only.png"))
            .arg("--base-dir")
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let o = validate(&[
        "--output",
        "9",
        "--set",
        "3.steps=5",
        "--set",
        "6.text=a dog",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = validate(&["--output", "9", "--set", "3.sampler_name=nope"]);
    assert_eq!(o.status.code(), Some(2));
    let err: Json = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(
        err["node_errors"]["3"]["errors"][0]["type"],
        json!("value_not_in_list")
    );
    let o = validate(&["--set", "30.model=1"]);
    assert_eq!(o.status.code(), Some(2));
    let err: Json = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(err["error"]["type"], json!("invalid_override"));
}
