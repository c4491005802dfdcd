//! SD3 / SD3.5 ControlNets (issue 14) against ComfyUI v0.3.64's own classes, on the tiny
//! fixture files (fixtures/models/controlnet/tiny_sd35_controlnet_canny, _double_y and
//! tiny_sd3_controlnet; goldens in tests/data/sd3_controlnet/, made by
//! `scripts/goldens/gen_sd3_controlnet_goldens.py`):
//!
//! * the control models' forward (`ControlNetEmbedder` with the model's x_embedder, the
//!   "double y" variant with the model's y_embedder, the diffusers SD3 `cldm/mmdit.py` net),
//!   and the MMDiT adding their residuals after its joint blocks;
//! * the `sd3.5_large_canny_controlnet_example` template converted by comfyrs and run on the
//!   tiny SD3.5 checkpoint (LoadImage → ImageScale → Canny → ControlNetApplyAdvanced with the
//!   VAE → KSampler), the latent compared with ComfyUI's; a chain with the deprecated
//!   ControlNetApplySD3 and the diffusers SD3 ControlNet through the same nodes;
//! * the nodes' schemas and clear errors (no VAE, the wrong model family).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::load_safetensors;
use comfyrs::models::controlnet::sd3::Sd3Kind;
use comfyrs::models::controlnet::{load_control_model, ControlModel, Sd3ControlNet};
use comfyrs::models::fixture as fx;
use comfyrs::models::mmdit::{Config, Mmdit, MmditInputs};
use comfyrs::models::nn::weights_vb;
use comfyrs::node::types::Latent;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry,
};
use comfyrs::prompt::prepare;
use comfyrs::workflow::ui::convert_ui_workflow;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root().join("tests/data/sd3_controlnet").join(name),
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("tests/data/sd3_controlnet/{name}: {e}"))
}

fn mmdit(path: &str) -> Mmdit {
    let w = load_safetensors(&root().join(path), &Device::Cpu, DType::F32).unwrap();
    let cfg = Config::detect(
        |k| w.get(k).map(|t| t.dims().to_vec()),
        &mut w.keys().map(|k| k.as_str()),
        "",
    )
    .unwrap();
    Mmdit::new(weights_vb(w, DType::F32, &Device::Cpu), &cfg).unwrap()
}

fn sd3_net(path: &str) -> Sd3ControlNet {
    match load_control_model(&root().join(path), None, DType::F32, &Device::Cpu).unwrap() {
        ControlModel::Sd3(n) => n,
        other => panic!("{path}: loaded as {other:?}"),
    }
}

/// max |a − b| ≤ tol · max(1, max |b|).
fn check(name: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    assert_eq!(ours.dims(), theirs.dims(), "{name}: shape");
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{name}: max |Δ| {diff} (scale {scale})"
    );
}

const NETS: [(&str, &str); 3] = [
    ("sd35_canny", fx::TINY_SD35_CONTROLNET_CANNY_PATH),
    ("sd35_double_y", fx::TINY_SD35_CONTROLNET_DOUBLE_Y_PATH),
    ("sd3", fx::TINY_SD3_CONTROLNET_PATH),
];

#[test]
fn generator_reproduces_the_committed_fixtures() {
    for (path, bytes) in [
        (
            fx::TINY_SD35_CONTROLNET_CANNY_PATH,
            fx::tiny_sd35_controlnet_canny_bytes(),
        ),
        (
            fx::TINY_SD35_CONTROLNET_DOUBLE_Y_PATH,
            fx::tiny_sd35_controlnet_double_y_bytes(),
        ),
        (
            fx::TINY_SD3_CONTROLNET_PATH,
            fx::tiny_sd3_controlnet_bytes(),
        ),
    ] {
        assert!(std::fs::read(root().join(path)).unwrap() == bytes, "{path}");
    }
}

#[test]
fn files_load_as_comfyui_reads_them() {
    let canny = sd3_net(fx::TINY_SD35_CONTROLNET_CANNY_PATH);
    assert_eq!(
        canny.kind(),
        Sd3Kind::Sd35 {
            control_type: 1,
            double_y_emb: false
        }
    );
    assert_eq!((canny.hidden_size(), canny.num_blocks()), (128, 1));
    assert_eq!(
        canny.preprocess(),
        comfyrs::models::controlnet::sd3::HintPreprocess::Canny
    );
    let double = sd3_net(fx::TINY_SD35_CONTROLNET_DOUBLE_Y_PATH);
    assert_eq!(
        double.kind(),
        Sd3Kind::Sd35 {
            control_type: 0,
            double_y_emb: true
        }
    );
    let sd3 = sd3_net(fx::TINY_SD3_CONTROLNET_PATH);
    assert_eq!(sd3.kind(), Sd3Kind::Mmdit);
    assert_eq!(sd3.hint_channels(), 16);
    // SD3.5 nets process the hint latent with SD3's shift, the diffusers ones without.
    assert_eq!(canny.latent_format().shift_factor, Some(0.0609));
    assert_eq!(sd3.latent_format().shift_factor, Some(0.0));
}

#[test]
fn control_models_match_comfyui() {
    let g = data("module.safetensors");
    let model = mmdit(fx::TINY_SD35_LARGE_PATH);
    for (name, path) in NETS {
        let net = sd3_net(path);
        for (case, prefix, n) in [("full", "", 2usize), ("odd", "odd.", 1)] {
            let out = net
                .forward(
                    &g[&format!("{prefix}x")],
                    &g[&format!("{prefix}hint")],
                    &g["t"].narrow(0, 0, n).unwrap(),
                    &g["context"].narrow(0, 0, n).unwrap(),
                    Some(&g["y"].narrow(0, 0, n).unwrap()),
                    &model,
                )
                .unwrap();
            assert!(out.input.is_empty() && out.middle.is_empty());
            let want = (0..)
                .map_while(|i| g.get(&format!("{name}.{prefix}output.{i}")))
                .collect::<Vec<_>>();
            assert!(!want.is_empty(), "{name}: no golden outputs");
            assert_eq!(
                out.output.len(),
                want.len(),
                "{name} {case}: residual count"
            );
            for (i, (o, w)) in out.output.iter().zip(want).enumerate() {
                check(
                    &format!("{name} {case} output {i}"),
                    o.as_ref().unwrap(),
                    w,
                    2e-5,
                );
            }
        }
    }
}

#[test]
fn the_mmdit_adds_the_residuals_like_comfyui() {
    let g = data("module.safetensors");
    let model = mmdit(fx::TINY_SD35_LARGE_PATH);
    let net = sd3_net(fx::TINY_SD35_CONTROLNET_CANNY_PATH);
    let control = net
        .forward(
            &g["x"],
            &g["hint"],
            &g["t"],
            &g["context"],
            Some(&g["y"]),
            &model,
        )
        .unwrap();
    let run = |control: Option<&[Option<Tensor>]>| {
        model
            .forward(&MmditInputs {
                x: &g["x"],
                timesteps: &g["t"],
                context: &g["context"],
                y: Some(&g["y"]),
                skip_blocks: &[],
                control,
            })
            .unwrap()
    };
    check("plain", &run(None), &g["model.plain"], 2e-5);
    check(
        "with control",
        &run(Some(&control.output)),
        &g["model.with_control"],
        2e-5,
    );
}

// ---- the template and the apply nodes through the executor ----

/// `TestCaptureLatent`: an output node keeping the latent it is given.
struct Capture(Arc<Mutex<Vec<Tensor>>>);
impl Node for Capture {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestCaptureLatent")
            .category("test")
            .input(InputSpec::of("samples", "LATENT"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        self.0.lock().unwrap().push(l.samples.clone());
        Ok(NodeOutput::values(vec![]))
    }
}

/// The models folder with the fixtures under the template's names, and the control image.
fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (folder, fixture, name) in [
        (
            "checkpoints",
            fx::TINY_SD35_CKPT_PATH,
            "sd3.5_large_fp8_scaled.safetensors",
        ),
        (
            "controlnet",
            fx::TINY_SD35_CONTROLNET_CANNY_PATH,
            "sd3.5_large_controlnet_canny.safetensors",
        ),
        (
            "controlnet",
            fx::TINY_SD35_CONTROLNET_DOUBLE_Y_PATH,
            "tiny_sd35_controlnet_double_y.safetensors",
        ),
        (
            "controlnet",
            fx::TINY_SD3_CONTROLNET_PATH,
            "tiny_sd3_controlnet.safetensors",
        ),
        (
            "controlnet",
            fx::TINY_CONTROLNET_SD15_PATH,
            "tiny_controlnet_sd15.safetensors",
        ),
        ("checkpoints", fx::TINY_SD15_PATH, "tiny_sd15.safetensors"),
    ] {
        std::fs::create_dir_all(models.join(folder)).unwrap();
        std::fs::copy(root().join(fixture), models.join(folder).join(name)).unwrap();
    }
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![models];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(
        root().join("tests/data/sd3_controlnet/hint.png"),
        paths.input.join("sd3_controlnet_example.png"),
    )
    .unwrap();
    (dir, Arc::new(Environment::new(paths)))
}

fn run(env: &Arc<Environment>, prompt: &Json) -> (Result<RunOutcome, String>, Vec<Tensor>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut reg = Registry::with_builtin_nodes();
    reg.register(Capture(got.clone())).unwrap();
    let reg = Arc::new(reg);
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&prompt.to_string()).unwrap();
    let out = match prepare(wf, &Overrides::default(), &reg, env, None) {
        Ok(valid) => {
            let out = exec.run("p", &valid, None, &Interrupt::new(), &NoEvents);
            match &out.status {
                RunStatus::Success => Ok(out),
                s => Err(format!("{s:?}")),
            }
        }
        Err(e) => Err(format!("{e:?}")),
    };
    let latents = got.lock().unwrap().clone();
    (out, latents)
}

/// The official template converted to API form by comfyrs's converter, at the golden's
/// size, seed and step count, with a capture of KSampler's latent.
fn template(meta: &Json) -> Json {
    let reg = Registry::with_builtin_nodes();
    let scratch = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(scratch.path()));
    let lookup = |c: &str| reg.schema(c).map(|s| s.object_info(&env));
    let ui: Json =
        serde_json::from_str(
            &std::fs::read_to_string(root().join(
                "tests/data/ui_workflows/templates/sd3.5_large_canny_controlnet_example.json",
            ))
            .unwrap(),
        )
        .unwrap();
    let mut p = convert_ui_workflow(&ui, &lookup).unwrap().prompt;
    assert_eq!(p["51"]["class_type"], "ControlNetApplyAdvanced");
    assert_eq!(p["51"]["inputs"]["vae"], json!(["4", 2]));
    let (w, h) = (meta["width"].clone(), meta["height"].clone());
    for id in ["33", "48"] {
        p[id]["inputs"]["width"] = w.clone();
        p[id]["inputs"]["height"] = h.clone();
    }
    p["3"]["inputs"]["seed"] = meta["seed"].clone();
    p["3"]["inputs"]["steps"] = meta["steps"].clone();
    assert_eq!(p["3"]["inputs"]["cfg"], meta["cfg"]);
    assert_eq!(p["6"]["inputs"]["text"], meta["text"]);
    p["90"] = json!({"class_type": "TestCaptureLatent", "inputs": {"samples": ["3", 0]}});
    p
}

fn sampling() -> (HashMap<String, Tensor>, Json) {
    let meta = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/sd3_controlnet/sampling.json")).unwrap(),
    )
    .unwrap();
    (data("sampling.safetensors"), meta)
}

/// max |a − b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let s = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap()
}

#[test]
fn canny_template_matches_comfyui() {
    let (g, meta) = sampling();
    let (_dir, env) = setup();
    let prompt = template(&meta);
    let (out, latents) = run(&env, &prompt);
    let out = out.unwrap();
    assert_eq!(latents.len(), 1);
    let r = rel(&latents[0], &g["case.template"]);
    assert!(r < 2e-5, "template: relative max |Δ| {r}");
    // The whole template ran (SaveImage and the Canny preview).
    assert!(out.outputs.contains_key("9") && out.outputs.contains_key("49"));
    // Without the ControlNet (strength 0) the result differs: the control image matters.
    let mut off = prompt.clone();
    off["51"]["inputs"]["strength"] = json!(0.0);
    let (_, plain) = run(&env, &off);
    assert!(rel(&plain[0], &g["case.template"]) > 1e-3);
}

/// The template's graph with `extra` nodes (ids 60..) and KSampler's conditioning from
/// `cond` (a node id with positive/negative outputs).
fn graph_with(meta: &Json, extra: Json, cond: &str) -> Json {
    let mut p = template(meta);
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p["3"]["inputs"]["positive"] = json!([cond, 0]);
    p["3"]["inputs"]["negative"] = json!([cond, 1]);
    p
}

#[test]
fn chained_apply_sd3_and_diffusers_sd3_controlnet_match_comfyui() {
    let (g, meta) = sampling();
    let (_dir, env) = setup();
    let chain = graph_with(
        &meta,
        json!({
            "60": {"class_type": "ControlNetLoader",
                   "inputs": {"control_net_name": "tiny_sd35_controlnet_double_y.safetensors"}},
            "61": {"class_type": "ControlNetApplySD3", "inputs": {
                "positive": ["51", 0], "negative": ["51", 1], "control_net": ["60", 0],
                "vae": ["4", 2], "image": ["47", 0], "strength": 0.8,
                "start_percent": 0.2, "end_percent": 0.9}}
        }),
        "61",
    );
    let (out, latents) = run(&env, &chain);
    out.unwrap();
    let r = rel(&latents[0], &g["case.chain"]);
    assert!(r < 2e-5, "chain: relative max |Δ| {r}");

    let mut diffusers = template(&meta);
    diffusers["46"]["inputs"]["control_net_name"] = json!("tiny_sd3_controlnet.safetensors");
    diffusers["51"]["inputs"]["strength"] = json!(1.0);
    let (out, latents) = run(&env, &diffusers);
    out.unwrap();
    let r = rel(&latents[0], &g["case.sd3_diffusers"]);
    assert!(r < 2e-5, "sd3_diffusers: relative max |Δ| {r}");
}

#[test]
fn misuse_is_a_clear_error() {
    let (_, meta) = sampling();
    let (_dir, env) = setup();
    // No VAE on ControlNetApplyAdvanced: the node and input are named.
    let mut p = template(&meta);
    p["51"]["inputs"].as_object_mut().unwrap().remove("vae");
    let (out, _) = run(&env, &p);
    let e = out.unwrap_err();
    assert!(
        e.contains("ControlNetApplyAdvanced") && e.contains("vae") && e.contains("SD3.5"),
        "{e}"
    );
    // ControlNetApply (OLD) has no VAE input.
    let p = graph_with(
        &meta,
        json!({
            "60": {"class_type": "ControlNetApply", "inputs": {
                "conditioning": ["6", 0], "control_net": ["46", 0], "image": ["47", 0],
                "strength": 1.0}},
            "62": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["60", 0]}}
        }),
        "60",
    );
    let mut p = p;
    p["3"]["inputs"]["negative"] = json!(["62", 0]);
    let (out, _) = run(&env, &p);
    let e = out.unwrap_err();
    assert!(
        e.contains("ControlNetApply") && e.contains("control_net") && e.contains("VAE"),
        "{e}"
    );
    // An SD3.5 ControlNet on an SD1.5 model: named at sampling.
    let p = json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3.5_large_controlnet_canny.safetensors"}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["2", 0], "control_net": ["5", 0], "image": ["6", 0],
            "vae": ["1", 2], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["7", 0], "negative": ["7", 1],
            "latent_image": ["4", 0], "denoise": 1.0}},
        "90": {"class_type": "TestCaptureLatent", "inputs": {"samples": ["8", 0]}}
    });
    let (out, _) = run(&env, &p);
    let e = out.unwrap_err();
    assert!(
        e.contains("SD3.5 ControlNet") && e.contains("SD1.x/SDXL UNet"),
        "{e}"
    );
    // An SD1.5 ControlNet on the SD3.5 model.
    let mut p = template(&meta);
    p["46"]["inputs"]["control_net_name"] = json!("tiny_controlnet_sd15.safetensors");
    let (out, _) = run(&env, &p);
    let e = out.unwrap_err();
    assert!(
        e.contains("SD1.x/SDXL ControlNet") && e.contains("MMDiT"),
        "{e}"
    );
}

#[test]
fn apply_sd3_schema_matches_comfyui() {
    // tests/data/controlnet/object_info_sd3.json: GET /object_info/ControlNetApplySD3 of
    // ComfyUI a125cd84.
    let p = root().join("tests/data/controlnet/object_info_sd3.json");
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let reg = Registry::with_builtin_nodes();
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    for (class, info) in want.as_object().unwrap() {
        let ours = reg.schema(class).unwrap().object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}
