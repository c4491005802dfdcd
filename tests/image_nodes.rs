//! Image, latent and mask nodes against ComfyUI's own results.
//!
//! `tests/data/image_nodes_ref.json` is written by `tests/data/gen_image_nodes_ref.py`, which runs
//! ComfyUI's node functions (and `comfy.utils.common_upscale`) on fixed inputs. Each case is run
//! here as a real workflow: test-only source nodes feed the reference inputs into the node, and
//! a capture node returns its output as a UI dict, which is compared with ComfyUI's output.
//!
//! `lanczos` cases run comfyrs' lanczos on RGB, RGBA and LA images against Pillow's (through
//! ComfyUI's `common_upscale`), and `reshape_mask` cases the mask resize of sampling against
//! `comfy.utils.reshape_mask`.
//!
//! Tolerances: everything is compared bit for bit except
//! - bislerp: torch evaluates `acos`/`sin` with its own vectorised float32 code, which can differ
//!   from the C library's by an ulp; after the divisions and products that follow them the
//!   results agree to 1e-5 relative (|a - b| <= 1e-5 * max(1, |b|));
//! - area down to 1x1: torch computes it as a `mean` with a vectorised reduction whose order
//!   differs from a sequential sum by an ulp or so (1e-6 relative).
//!
//! Large reference outputs are stored as a sha256 of their float32 bytes plus the first values,
//! and compared exactly.

use candle_core::{Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use comfyrs::image_ops::{
    common_upscale, lanczos_vertical_first, Crop, Planes, TorchLayout, UpscaleMethod,
};
use comfyrs::node::types::{Image, Latent, Mask};
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    Value,
};
use comfyrs::prompt::{prepare, PromptError};
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn reference() -> &'static Json {
    static REF: OnceLock<Json> = OnceLock::new();
    REF.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/image_nodes_ref.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    })
}

fn from_hex(s: &str) -> Vec<f32> {
    (0..s.len() / 8)
        .map(|i| f32::from_bits(u32::from_str_radix(&s[i * 8..i * 8 + 8], 16).unwrap()))
        .collect()
}

fn to_hex(v: &[f32]) -> String {
    v.iter().map(|x| format!("{:08x}", x.to_bits())).collect()
}

fn shape(j: &Json) -> Vec<usize> {
    j["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

fn tensor(j: &Json) -> Tensor {
    Tensor::from_vec(from_hex(j["hex"].as_str().unwrap()), shape(j), &Device::Cpu).unwrap()
}

fn tensor_json(t: &Tensor) -> Json {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    json!({"shape": t.dims(), "hex": to_hex(&v)})
}

fn input(key: &str) -> &'static Json {
    &reference()["inputs"][key]
}

fn latent_from_json(j: &Json) -> Latent {
    Latent {
        samples: tensor(&j["samples"]),
        noise_mask: j.get("noise_mask").map(tensor),
        batch_index: j.get("batch_index").map(|b| {
            b.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        }),
    }
}

// ---- test-only nodes: reference inputs in, node outputs out -----------------------------------

struct Source(&'static str);
impl Node for Source {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(&format!("TestSource{}", self.0))
            .category("testing")
            .input(InputSpec::string("key"))
            .output(OutputSpec::new(self.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let j = input(i.string("key")?);
        let v = match self.0 {
            "IMAGE" => Value::object(Image(tensor(j))),
            "MASK" => Value::object(Mask(tensor(j))),
            _ => Value::object(latent_from_json(j)),
        };
        Ok(NodeOutput::one(v))
    }
}

struct Capture(&'static str);
impl Node for Capture {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(&format!("TestCapture{}", self.0))
            .category("testing")
            .input(InputSpec::of("value", self.0))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut ui = Map::new();
        match self.0 {
            "IMAGE" => {
                ui.insert("out".into(), tensor_json(&i.object::<Image>("value")?.0));
            }
            "MASK" => {
                ui.insert("out".into(), tensor_json(&i.object::<Mask>("value")?.0));
            }
            _ => {
                let l = i.object::<Latent>("value")?;
                let mut o = json!({"samples": tensor_json(&l.samples)});
                if let Some(m) = &l.noise_mask {
                    o["noise_mask"] = tensor_json(m);
                }
                if let Some(b) = &l.batch_index {
                    o["batch_index"] = json!(b);
                }
                ui.insert("out".into(), o);
            }
        }
        Ok(NodeOutput::ui(ui))
    }
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::with_builtin_nodes();
    for kind in ["IMAGE", "MASK", "LATENT"] {
        r.register(Source(kind)).unwrap();
        r.register(Capture(kind)).unwrap();
    }
    Arc::new(r)
}

fn environment() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

/// A workflow running `node` on `args` ("@key" = a reference input) and capturing output 0.
fn workflow(node: &str, args: &Map<String, Json>, out_kind: &str) -> Json {
    let mut wf = Map::new();
    let mut inputs = Map::new();
    for (k, (name, v)) in args.iter().enumerate() {
        match v.as_str().and_then(|s| s.strip_prefix('@')) {
            Some(key) => {
                let id = format!("s{k}");
                let kind = input(key)["kind"].as_str().unwrap();
                wf.insert(
                    id.clone(),
                    json!({"class_type": format!("TestSource{kind}"), "inputs": {"key": key}}),
                );
                inputs.insert(name.clone(), json!([id, 0]));
            }
            None => {
                inputs.insert(name.clone(), v.clone());
            }
        }
    }
    wf.insert("n".into(), json!({"class_type": node, "inputs": inputs}));
    wf.insert(
        "c".into(),
        json!({"class_type": format!("TestCapture{out_kind}"), "inputs": {"value": ["n", 0]}}),
    );
    Json::Object(wf)
}

struct Harness {
    _dir: tempfile::TempDir,
    env: Arc<Environment>,
    reg: Arc<Registry>,
    exec: Executor,
}

impl Harness {
    fn new() -> Self {
        let (dir, env) = environment();
        let reg = registry();
        let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
        Harness {
            _dir: dir,
            env,
            reg,
            exec,
        }
    }

    fn prepare(&self, wf: &Json) -> Result<comfyrs::graph::ValidPrompt, PromptError> {
        let wf = parse_workflow(&wf.to_string()).unwrap();
        prepare(wf, &Overrides::default(), &self.reg, &self.env, None)
    }

    /// Runs the workflow; `Ok(captured output)` or `Err(execution_error payload)`.
    fn run(&self, wf: &Json) -> Result<Json, Json> {
        let valid = self
            .prepare(wf)
            .unwrap_or_else(|e| panic!("invalid workflow: {e}"));
        let out = self
            .exec
            .run("test", &valid, None, &Interrupt::new(), &NoEvents);
        match out.status {
            RunStatus::Success => Ok(out.outputs["c"]["out"].clone()),
            RunStatus::Error(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }
}

/// How closely a case must match ComfyUI (see the module doc).
#[derive(Debug, Clone, Copy)]
enum Tolerance {
    Exact,
    Relative(f32),
}

fn tolerance(case: &Json) -> Tolerance {
    let name = case["name"].as_str().unwrap();
    let method = case["args"]["upscale_method"].as_str().unwrap_or("");
    if method == "bislerp" {
        Tolerance::Relative(1e-5)
    } else if method == "area" && name.ends_with("->1x1") {
        // torch turns a 1x1 adaptive average pool into `mean`, whose vectorised reduction
        // adds in another order than the window sum comfyrs (and torch otherwise) uses.
        Tolerance::Relative(1e-6)
    } else {
        Tolerance::Exact
    }
}

/// Compares a produced tensor (JSON) with the reference; returns the worst difference.
fn compare(what: &str, got: &Json, want: &Json, tol: Tolerance) -> f32 {
    assert_eq!(shape(got), shape(want), "{what}: shape");
    let got_hex = got["hex"].as_str().unwrap();
    if let Some(digest) = want.get("sha256") {
        // A large output: its first values, then the digest of all of them.
        let head = want["hex_head"].as_str().unwrap();
        let n = head.len().min(got_hex.len());
        compare_values(
            what,
            &from_hex(&got_hex[..n]),
            &from_hex(head),
            Tolerance::Exact,
        );
        let bytes: Vec<u8> = (0..got_hex.len() / 2)
            .map(|i| u8::from_str_radix(&got_hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            digest.as_str().unwrap(),
            "{what}: sha256 of all values"
        );
        return 0.0;
    }
    compare_values(
        what,
        &from_hex(got_hex),
        &from_hex(want["hex"].as_str().unwrap()),
        tol,
    )
}

fn compare_values(what: &str, g: &[f32], w: &[f32], tol: Tolerance) -> f32 {
    assert_eq!(g.len(), w.len(), "{what}: length");
    let mut worst = 0.0f32;
    for (k, (a, b)) in g.iter().zip(w).enumerate() {
        let ok = match tol {
            Tolerance::Exact => a.to_bits() == b.to_bits(),
            Tolerance::Relative(r) => (a - b).abs() <= r * b.abs().max(1.0),
        };
        worst = worst.max((a - b).abs());
        assert!(
            ok,
            "{what}: element {k}: got {a:e}, ComfyUI {b:e} ({tol:?})"
        );
    }
    worst
}

fn compare_output(name: &str, kind: &str, got: &Json, want: &Json, tol: Tolerance) -> f32 {
    if kind == "LATENT" {
        let mut worst = compare(
            &format!("{name} samples"),
            &got["samples"],
            &want["samples"],
            tol,
        );
        assert_eq!(
            got.get("noise_mask").is_some(),
            want.get("noise_mask").is_some(),
            "{name}: noise_mask presence"
        );
        if let Some(m) = want.get("noise_mask") {
            worst = worst.max(compare(
                &format!("{name} noise_mask"),
                &got["noise_mask"],
                m,
                tol,
            ));
        }
        assert_eq!(
            got.get("batch_index"),
            want.get("batch_index"),
            "{name}: batch_index"
        );
        worst
    } else {
        compare(name, got, want, tol)
    }
}

#[test]
fn nodes_match_comfyui() {
    let h = Harness::new();
    let mut ran = 0;
    for case in reference()["cases"].as_array().unwrap() {
        let node = case["node"].as_str().unwrap();
        if ["common_upscale", "lanczos", "reshape_mask"].contains(&node) {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let want = &case["outputs"][0];
        let kind = want["kind"].as_str().unwrap();
        let wf = workflow(node, case["args"].as_object().unwrap(), kind);
        let got = h
            .run(&wf)
            .unwrap_or_else(|e| panic!("{name}: {}", e["exception_message"]));
        compare_output(name, kind, &got, want, tolerance(case));
        ran += 1;
    }
    assert_eq!(ran, 115, "every node case ran");
}

#[test]
fn common_upscale_matches_torch() {
    let mut ran = 0;
    let mut worst_bislerp = 0.0f32;
    for case in reference()["cases"].as_array().unwrap() {
        if case["node"] != "common_upscale" {
            continue;
        }
        let args = &case["args"];
        let key = args["samples"].as_str().unwrap().trim_start_matches('@');
        let src = Planes::from_nchw(&tensor(&input(key)["samples"])).unwrap();
        let method = UpscaleMethod::from_name(args["upscale_method"].as_str().unwrap()).unwrap();
        let crop = Crop::from_name(args["crop"].as_str().unwrap()).unwrap();
        let (w, h) = (
            args["width"].as_u64().unwrap() as usize,
            args["height"].as_u64().unwrap() as usize,
        );
        let out = common_upscale(&src, w, h, method, crop, TorchLayout::ChannelsFirst).unwrap();
        let got = tensor_json(&out.to_nchw().unwrap());
        let name = case["name"].as_str().unwrap();
        let d = compare(name, &got, &case["outputs"][0], tolerance(case));
        if method == UpscaleMethod::Bislerp {
            worst_bislerp = worst_bislerp.max(d);
        }
        ran += 1;
    }
    assert_eq!(ran, 45);
    eprintln!("bislerp: largest |difference| from torch {worst_bislerp:e}");
}

/// ComfyUI's lanczos (Pillow 13's LANCZOS resize) on RGB, RGBA and LA images, bit for bit. The
/// generator records which pass Pillow ran first (by comparing with the two one-pass chains);
/// both orders must be covered, and comfyrs' rule must pick Pillow's order in every case.
#[test]
fn lanczos_matches_pillow() {
    let mut ran = 0;
    let (mut vertical_first, mut horizontal_first, mut premultiplied_vertical_first) = (0, 0, 0);
    for case in reference()["cases"].as_array().unwrap() {
        if case["node"] != "lanczos" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let args = &case["args"];
        let key = args["image"].as_str().unwrap().trim_start_matches('@');
        let src = Planes::from_nhwc(&tensor(input(key))).unwrap();
        let (w, h) = (
            args["width"].as_u64().unwrap() as usize,
            args["height"].as_u64().unwrap() as usize,
        );
        match case["order"].as_str().unwrap() {
            "vertical-first" => {
                assert!(lanczos_vertical_first(src.w, src.h, w, h), "{name}");
                vertical_first += 1;
                if src.c != 3 {
                    premultiplied_vertical_first += 1;
                }
            }
            "horizontal-first" => {
                assert!(!lanczos_vertical_first(src.w, src.h, w, h), "{name}");
                horizontal_first += 1;
            }
            "either" | "none" => {}
            other => panic!("{name}: unknown order {other}"),
        }
        let out = common_upscale(
            &src,
            w,
            h,
            UpscaleMethod::Lanczos,
            Crop::Disabled,
            TorchLayout::ChannelsLast,
        )
        .unwrap();
        let got = tensor_json(&out.to_nchw().unwrap());
        compare(name, &got, &case["outputs"][0], Tolerance::Exact);
        ran += 1;
    }
    assert_eq!(ran, 51);
    assert_eq!((vertical_first, horizontal_first), (17, 24));
    assert_eq!(premultiplied_vertical_first, 4);
}

/// `comfy.utils.reshape_mask` (torch's bilinear on a `[N, 1, H, W]` mask, then channel and
/// batch repeats) bit for bit, with outputs on both sides of torch's kernel switch
/// (`out_h + out_w <= 128`).
#[test]
fn reshape_mask_matches_torch() {
    let mut kernels = [0, 0];
    for case in reference()["cases"].as_array().unwrap() {
        if case["node"] != "reshape_mask" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let key = case["args"]["mask"]
            .as_str()
            .unwrap()
            .trim_start_matches('@');
        let shape: Vec<usize> = case["args"]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let out = comfyrs::sampling::masks::reshape_mask(&tensor(input(key)), &shape).unwrap();
        compare(
            name,
            &tensor_json(&out),
            &case["outputs"][0],
            Tolerance::Exact,
        );
        kernels[usize::from(shape[2] + shape[3] > 128)] += 1;
    }
    assert_eq!(kernels, [5, 3], "channels-last and generic kernel cases");
}

#[test]
fn object_info_matches_comfyui() {
    let h = Harness::new();
    let want = reference()["object_info"].as_object().unwrap();
    assert_eq!(want.len(), 21);
    for (name, info) in want {
        let schema = h
            .reg
            .schema(name)
            .unwrap_or_else(|| panic!("{name} is not registered"));
        assert_eq!(&schema.object_info(&h.env), info, "{name}");
    }
}

// ---- errors ----------------------------------------------------------------------------------

/// Runs `node` and expects a ValueError whose message names `input` and contains `needle`.
fn expect_error(h: &Harness, node: &str, args: Json, out_kind: &str, input: &str, needle: &str) {
    let wf = workflow(node, args.as_object().unwrap(), out_kind);
    let e = h.run(&wf).expect_err(node);
    assert_eq!(e["node_id"], "n", "{node}");
    assert_eq!(e["node_type"], node);
    assert_eq!(e["exception_type"], "ValueError", "{node}: {e}");
    let msg = e["exception_message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("input '{input}': ")) && msg.contains(needle),
        "{node}: {msg}"
    );
}

#[test]
fn bad_inputs_are_clear_node_errors() {
    let h = Harness::new();
    // A 7x5 latent scaled by 0.1 would be 1x0.
    expect_error(
        &h,
        "LatentUpscaleBy",
        json!({"samples": "@lat_a", "upscale_method": "bilinear", "scale_by": 0.1}),
        "LATENT",
        "scale_by",
        "at least 1",
    );
    expect_error(
        &h,
        "ImageScaleBy",
        json!({"image": "@img_small", "upscale_method": "area", "scale_by": 0.1}),
        "IMAGE",
        "scale_by",
        "at least 1",
    );
    expect_error(
        &h,
        "ImageScale",
        json!({"image": "@lz_gray", "upscale_method": "lanczos", "width": 8, "height": 8, "crop": "disabled"}),
        "IMAGE",
        "image",
        "2 (LA), 3 (RGB) or 4 (RGBA) channels, like PIL; this one has 1",
    );
    expect_error(
        &h,
        "LatentComposite",
        json!({"samples_to": "@lat_a", "samples_from": "@lat_b", "x": 64, "y": 0, "feather": 0}),
        "LATENT",
        "x",
        "beyond samples_to's width of 56 px",
    );
    expect_error(
        &h,
        "LatentComposite",
        json!({"samples_to": "@lat_m", "samples_from": "@lat_a", "x": 0, "y": 0, "feather": 0}),
        "LATENT",
        "samples_from",
        "batch 2",
    );
    expect_error(
        &h,
        "LatentBlend",
        json!({"samples1": "@lat_m", "samples2": "@lat_a", "blend_factor": 0.5}),
        "LATENT",
        "samples2",
        "cannot be blended",
    );
    expect_error(
        &h,
        "ImageBatch",
        json!({"image1": "@img_a", "image2": "@img_rgba"}),
        "IMAGE",
        "image2",
        "4 channels but image1 has 3",
    );
    expect_error(
        &h,
        "ImageToMask",
        json!({"image": "@img_a", "channel": "alpha"}),
        "MASK",
        "channel",
        "this one has 3",
    );
    expect_error(
        &h,
        "CropMask",
        json!({"mask": "@mask_a", "x": 9, "y": 0, "width": 2, "height": 2}),
        "MASK",
        "x",
        "outside the 9 px wide mask",
    );
    expect_error(
        &h,
        "MaskComposite",
        json!({"destination": "@mask_bin", "source": "@mask_a", "x": 0, "y": 0, "operation": "add"}),
        "MASK",
        "source",
        "a batch of 2 masks",
    );
    expect_error(
        &h,
        "MaskComposite",
        json!({"destination": "@mask_a", "source": "@mask_c", "x": 0, "y": 7, "operation": "or"}),
        "MASK",
        "y",
        "beyond the destination's height of 6",
    );
}

#[test]
fn out_of_range_values_fail_validation() {
    let h = Harness::new();
    for (node, args, input) in [
        (
            "LatentFromBatch",
            json!({"samples": "@lat_m", "batch_index": 64, "length": 1}),
            "batch_index",
        ),
        (
            "RepeatLatentBatch",
            json!({"samples": "@lat_m", "amount": 0}),
            "amount",
        ),
        (
            "LatentUpscale",
            json!({"samples": "@lat_a", "upscale_method": "lanczos", "width": 64, "height": 64, "crop": "disabled"}),
            "upscale_method",
        ),
        (
            "ImageScale",
            json!({"image": "@img_a", "upscale_method": "bislerp", "width": 64, "height": 64, "crop": "disabled"}),
            "upscale_method",
        ),
    ] {
        let kind = if node == "ImageScale" {
            "IMAGE"
        } else {
            "LATENT"
        };
        let wf = workflow(node, args.as_object().unwrap(), kind);
        let Err(PromptError::Invalid(failure)) = h.prepare(&wf) else {
            panic!("{node}: expected a validation error");
        };
        let body = failure.to_json();
        let errors = &body["node_errors"]["n"]["errors"];
        assert_eq!(
            errors[0]["extra_info"]["input_name"], input,
            "{node}: {body}"
        );
    }
}
