//! The packs under nodes/ against the original ComfyUI packs.
//!
//! tests/data/packs/reference.json is written by scripts/packs/gen_pack_refs.py, which loads
//! the original packs in ComfyUI 0.3.64 and records each class's `/object_info` entry and the
//! results of its execute() on fixed inputs. Here every class is loaded as the shipped binary
//! loads it (built-ins, then `comfyrs_cli::PACKS`) and compared field by field, through the
//! public harness a pack author uses (`comfyrs::testing::NodeHarness`).

use candle_core::{DType, Device, Tensor};
use comfyrs::node::types::{Image, Latent, Mask};
use comfyrs::node::{NodeError, Value};
use comfyrs::testing::NodeHarness;
use serde_json::{json, Value as Json};

/// reference.json, with the `/object_info` entries of lazy_reference.json (the classes with
/// lazy inputs, made by scripts/packs/gen_lazy_refs.py) added.
fn reference() -> Json {
    let read =
        |p: &str| -> Json { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/packs/");
    let mut r = read(&format!("{dir}reference.json"));
    let lazy = read(&format!("{dir}lazy_reference.json"));
    for (class, entry) in lazy["object_info"].as_object().unwrap() {
        r["object_info"][class] = entry.clone();
    }
    r
}

fn harness() -> NodeHarness {
    NodeHarness::new(comfyrs_cli::PACKS).expect("the shipped packs load without clashes")
}

#[test]
fn object_info_matches_the_original_packs_field_by_field() {
    let reference = reference();
    let h = harness();
    let classes = reference["object_info"].as_object().unwrap();
    // Every pack class has a reference.
    for name in h.registry.names() {
        let origin = &h.registry.get(name).unwrap().origin;
        if *origin != comfyrs::node::Origin::Core {
            assert!(classes.contains_key(name), "{name} has no reference entry");
        }
    }
    for (class, theirs) in classes {
        let ours = h
            .object_info(class)
            .unwrap_or_else(|| panic!("{class} is not registered"));
        let (theirs, ours) = (theirs.as_object().unwrap(), ours.as_object().unwrap());
        for key in theirs.keys().chain(ours.keys()) {
            assert_eq!(
                ours.get(key),
                theirs.get(key),
                "{class}: field '{key}' differs (ours, then ComfyUI's)"
            );
        }
    }
}

fn value(j: &Json) -> Value {
    match j {
        Json::String(s) => Value::String(s.clone()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) if n.is_i64() => Value::Int(n.as_i64().unwrap() as i128),
        Json::Number(n) if n.is_u64() => Value::Int(n.as_u64().unwrap() as i128),
        Json::Number(n) => Value::Float(n.as_f64().unwrap()),
        Json::Object(o) if o.contains_key("image") || o.contains_key("mask") => {
            let dims = o.get("image").or(o.get("mask")).unwrap();
            let shape: Vec<usize> = dims
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            // The script's pattern: value i is ((i * 37) % 101) / 100 in float32.
            let n: usize = shape.iter().product();
            let t = if o.get("pattern") == Some(&json!(true)) {
                let data: Vec<f32> = (0..n)
                    .map(|i| (((i * 37) % 101) as f64 / 100.0) as f32)
                    .collect();
                Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
            } else {
                Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
            };
            if o.contains_key("image") {
                Value::object(Image(t))
            } else {
                Value::object(Mask(t))
            }
        }
        other => Value::Json(other.clone()),
    }
}

fn output_json(v: &Value) -> Json {
    match v {
        Value::Int(i) => match i64::try_from(*i) {
            Ok(v) => json!(v),
            Err(_) => json!(*i as u64),
        },
        Value::Float(f) => json!(f),
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::Json(j) => j.clone(),
        Value::List(items) => Json::Array(items.iter().map(output_json).collect()),
        Value::Object(_) => {
            if let Some(img) = v.downcast::<Image>() {
                tensor_json(&img.0)
            } else if let Some(l) = v.downcast::<Latent>() {
                json!({"samples": tensor_json(&l.samples)})
            } else {
                panic!("unexpected payload {v:?}")
            }
        }
    }
}

/// As the script writes tensors: float32 bits in hex, or their sha256 past 4096 values.
fn tensor_json(t: &Tensor) -> Json {
    use sha2::{Digest, Sha256};
    let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    if data.len() <= 4096 {
        let hex: String = data
            .iter()
            .map(|x| format!("{:08x}", x.to_bits()))
            .collect();
        json!({"shape": t.dims(), "hex": hex})
    } else {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_be_bytes()).collect();
        json!({"shape": t.dims(), "sha256": format!("{:x}", Sha256::digest(&bytes))})
    }
}

/// A saved image's UI entry as the reference records it: the entry plus the decoded file's
/// size, mode and RGB sha256. The file name's random part is checked by shape, not value.
fn saved_image_json(env: &comfyrs::env::Environment, entry: &Json) -> Json {
    use sha2::{Digest, Sha256};
    let name = entry["filename"].as_str().unwrap();
    let dir = match entry["type"].as_str().unwrap() {
        "temp" => &env.paths.temp,
        _ => &env.paths.output,
    };
    let path = dir.join(entry["subfolder"].as_str().unwrap()).join(name);
    let decoded = image::open(&path).unwrap();
    let mode = match decoded.color() {
        image::ColorType::Rgb8 => "RGB",
        image::ColorType::Rgba8 => "RGBA",
        image::ColorType::L8 => "L",
        other => panic!("{other:?}"),
    };
    let rgb = decoded.to_rgb8();
    let mut e = entry.as_object().unwrap().clone();
    e.insert("size".into(), json!([rgb.width(), rgb.height()]));
    e.insert("mode".into(), json!(mode));
    e.insert(
        "rgb_sha256".into(),
        json!(format!("{:x}", Sha256::digest(rgb.as_raw()))),
    );
    Json::Object(e)
}

/// `ComfyUI_temp_` + five letters + `_NNNNN_.png` (the letters are random per node).
fn same_temp_name(ours: &str, theirs: &str) -> bool {
    let (o, t) = (ours.as_bytes(), theirs.as_bytes());
    o.len() == t.len()
        && o[..13] == t[..13]
        && o[13..18].iter().all(u8::is_ascii_lowercase)
        && o[18..] == t[18..]
}

#[test]
fn execute_matches_the_original_packs() {
    let reference = reference();
    let mut h = harness();
    let dir = tempfile::tempdir().unwrap();
    h.env = comfyrs::env::Environment::new(comfyrs::env::Paths::under(dir.path()));
    std::fs::create_dir_all(&h.env.paths.temp).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    for case in cases {
        let class = case["class"].as_str().unwrap();
        let list_input = h.registry.schema(class).unwrap().input_is_list;
        let inputs: Vec<(&str, Value)> = case["inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let v = match (list_input, v) {
                    (true, Json::Array(items)) => Value::List(items.iter().map(value).collect()),
                    _ => value(v),
                };
                (k.as_str(), v)
            })
            .collect();
        let expected = &case["output"];
        let got = h.run(class, inputs);
        let what = format!("{class} on {}", case["inputs"]);
        match (expected.get("error"), got) {
            (Some(kind), Err(NodeError::Failed { exception_type, .. })) => {
                assert_eq!(Some(exception_type.as_str()), kind.as_str(), "{what}")
            }
            (Some(kind), other) => panic!("{what}: expected a {kind} error, got {other:?}"),
            (None, Err(e)) => panic!("{what}: {e}"),
            (None, Ok(out)) => {
                let values: Vec<Json> = out.values.iter().map(output_json).collect();
                assert_eq!(&Json::Array(values), &expected["result"], "{what}: result");
                let mut ui = out.ui.map(Json::Object).unwrap_or(Json::Null);
                if let Some(Json::Array(images)) = ui.get_mut("images") {
                    let theirs = expected["ui"]["images"].as_array().unwrap();
                    for (k, entry) in images.iter_mut().enumerate() {
                        *entry = saved_image_json(&h.env, entry);
                        let (o, t) = (
                            entry["filename"].as_str().unwrap().to_string(),
                            theirs[k]["filename"].as_str().unwrap(),
                        );
                        assert!(same_temp_name(&o, t), "{what}: file name {o} vs {t}");
                        entry["filename"] = json!(t);
                    }
                }
                assert_eq!(&ui, expected.get("ui").unwrap_or(&Json::Null), "{what}: ui");
            }
        }
    }
}

#[test]
fn pack_classes_cannot_take_core_names_or_each_others() {
    use comfyrs::node::{Registry, RegistryError};
    fn clash_with_core(r: &mut Registry) -> Result<(), RegistryError> {
        // A pack that re-registers the built-in PrimitiveInt under its own name.
        let core = Registry::with_builtin_nodes();
        let node = core.get("PrimitiveInt").unwrap().node.clone();
        r.pack("my-pack").register_arc(node)
    }
    let err = Registry::load(comfyrs::nodes::register_builtin, &[clash_with_core])
        .err()
        .expect("a core name is refused");
    assert_eq!(
        err.to_string(),
        "node pack 'my-pack' registers 'PrimitiveInt', a core node class; core classes cannot be overridden"
    );

    fn second_kj(r: &mut Registry) -> Result<(), RegistryError> {
        let h = NodeHarness::new(comfyrs_cli::PACKS).unwrap();
        let node = h.registry.get("INTConstant").unwrap().node.clone();
        r.pack("another-pack").register_arc(node)
    }
    let mut packs = comfyrs_cli::PACKS.to_vec();
    packs.push(second_kj);
    let err = Registry::load(comfyrs::nodes::register_builtin, &packs)
        .err()
        .expect("a clash between packs is refused");
    assert_eq!(
        err.to_string(),
        "node class 'INTConstant' is registered by both pack 'ComfyUI-KJNodes' and pack 'another-pack'"
    );

    fn unnamed(r: &mut Registry) -> Result<(), RegistryError> {
        // Registering without Registry::pack from a pack function is refused.
        let core = Registry::with_builtin_nodes();
        r.register_arc(core.get("PrimitiveInt").unwrap().node.clone())
    }
    let err = Registry::load(comfyrs::nodes::register_builtin, &[unnamed])
        .err()
        .expect("an unnamed registration is refused");
    assert!(matches!(err, RegistryError::Unnamed { .. }), "{err}");
}

#[test]
fn the_binary_lists_pack_nodes_with_their_pack_module() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(["nodes", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["ShowText|pysssss"]["python_module"],
        "custom_nodes.ComfyUI-Custom-Scripts"
    );
    assert_eq!(info["KSampler"]["python_module"], "nodes");
}

/// Pack nodes in a real workflow through the binary: literal validation (combos, forceInput
/// links), scheduling and the UI output, with a frontend-driven node (`Anything Everywhere`)
/// that is in the prompt but never runs. The expected texts are ComfyUI's, from the reference.
#[test]
fn a_workflow_mixing_pack_nodes_runs_through_the_binary() {
    let reference = reference();
    let styled = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "SDXLPromptStyler" && c["inputs"]["style"] == "sai-cinematic")
        .unwrap()["output"]["result"]
        .clone();
    let wf = json!({
        "1": {"class_type": "StringConstant", "inputs": {"string": "a red fox"}},
        "2": {"class_type": "SDXLPromptStyler", "inputs": {
            "text_positive": ["1", 0], "text_negative": "blurry", "style": "sai-cinematic",
            "log_prompt": false, "style_positive": true, "style_negative": true}},
        "3": {"class_type": "Text Concatenate", "inputs": {
            "delimiter": " | ", "clean_whitespace": "true", "text_a": ["2", 0], "text_b": ["2", 1]}},
        "4": {"class_type": "ShowText|pysssss", "inputs": {"text": ["3", 0]}},
        "5": {"class_type": "Anything Everywhere", "inputs": {"anything": ["1", 0]}},
        "6": {"class_type": "INTConstant", "inputs": {"value": 41}},
        "7": {"class_type": "MathExpression|pysssss", "inputs": {"expression": "a + 1", "a": ["6", 0]}},
        "8": {"class_type": "Display Any (rgthree)", "inputs": {"source": ["7", 1]}},
        "9": {"class_type": "Any Switch (rgthree)", "inputs": {"any_01": ["1", 0], "any_02": ["6", 0]}},
        "10": {"class_type": "Display Any (rgthree)", "inputs": {"source": ["9", 0]}},
        "11": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0}},
        "12": {"class_type": "ImageResizeKJ", "inputs": {
            "image": ["11", 0], "width": 8, "height": 0, "upscale_method": "bilinear",
            "keep_proportion": true, "divisible_by": 2, "crop": 0}},
        "13": {"class_type": "Display Any (rgthree)", "inputs": {"source": ["12", 2]}}
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.json");
    std::fs::write(&path, wf.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .arg("run")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "{}: {} | {}",
        4,
        styled[0].as_str().unwrap(),
        styled[1].as_str().unwrap()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&expected.as_str()), "{stdout}");
    assert!(lines.contains(&"8: 42.0"), "{stdout}");
    // Any Switch's dynamic inputs pass validation and reach the node.
    assert!(lines.contains(&"10: a red fox"), "{stdout}");
    // A mixed combo (ImageResizeKJ's crop holds the number 0) takes the number literal.
    assert!(lines.contains(&"13: 4"), "{stdout}");
    assert!(
        !stdout.contains("5:"),
        "Anything Everywhere never runs: {stdout}"
    );

    // A bad combo value on a pack node is a validation error naming the node and input.
    // (Only that output: with another valid output, the prompt would run without it, as in
    // ComfyUI.)
    let mut bad = wf.clone();
    bad["3"]["inputs"]["clean_whitespace"] = json!("maybe");
    for id in ["5", "6", "7", "8", "9", "10", "11", "12", "13"] {
        bad.as_object_mut().unwrap().remove(id);
    }
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .arg("run")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("value_not_in_list") && err.contains("clean_whitespace"),
        "{err}"
    );

    // A number that is not among a mixed combo's choices is refused too.
    let mut bad = json!({});
    for id in ["11", "12", "13"] {
        bad[id] = wf[id].clone();
    }
    bad["12"]["inputs"]["crop"] = json!(1);
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .arg("run")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("value_not_in_list") && err.contains("crop"),
        "{err}"
    );
}

/// Every pack crate under nodes/ (a crate with a `register` function) is in the shipped
/// binary: a dependency of this package and an entry of `comfyrs_cli::PACKS`.
#[test]
fn the_shipped_binary_lists_every_pack_under_nodes() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let manifest = std::fs::read_to_string(root.join("cli/Cargo.toml")).unwrap();
    let list = std::fs::read_to_string(root.join("cli/src/lib.rs")).unwrap();
    let mut packs = 0;
    for entry in std::fs::read_dir(root.join("nodes")).unwrap() {
        let dir = entry.unwrap().path();
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
        if !lib.contains("pub fn register(r: &mut Registry)") {
            continue; // a helper library (nodes/pyexpr), not a pack
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let krate = format!("comfyrs_pack_{}", name.replace('-', "_"));
        assert!(
            manifest.contains(&format!("path = \"../nodes/{name}\"")),
            "nodes/{name} is not a dependency of cli/Cargo.toml"
        );
        assert!(
            list.contains(&format!("{krate}::register")),
            "nodes/{name} is not in comfyrs_cli::PACKS"
        );
        packs += 1;
    }
    assert_eq!(packs, comfyrs_cli::PACKS.len());
}
