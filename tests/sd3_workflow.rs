//! SD3.5 end to end: the tiny all-in-one SD3.5-medium checkpoint through comfyrs's executor
//! (CheckpointLoaderSimple, CLIPTextEncode, EmptySD3LatentImage, ModelSamplingSD3,
//! ConditioningZeroOut / ConditioningSetTimestepRange / ConditioningCombine, KSampler,
//! VAEDecode, SaveImage), the sampled latent compared with ComfyUI's KSampler on the same
//! file (tests/data/sd3/sampling.*, `scripts/goldens/gen_sd3_goldens.py`); UNETLoader of an
//! MMDiT file; and clear errors for SD3 misuse.

use candle_core::{Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::fixture as fx;
use comfyrs::node::types::Latent;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry,
};
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (d, p) in [
        ("checkpoints", fx::TINY_SD35_CKPT_PATH),
        ("diffusion_models", fx::TINY_SD35_MEDIUM_PATH),
        ("diffusion_models", fx::TINY_SD35_LARGE_PATH),
        ("vae", fx::TINY_FLUX_VAE_PATH),
        ("text_encoders", fx::TINY_CLIP_G_PATH),
    ] {
        std::fs::create_dir_all(models.join(d)).unwrap();
        let name = Path::new(p).file_name().unwrap();
        std::fs::copy(root().join(p), models.join(d).join(name)).unwrap();
    }
    // The checkpoint's CLIP-L as a split file (DualCLIPLoader).
    let bytes = std::fs::read(root().join(fx::TINY_SD35_CKPT_PATH)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("text_encoders.clip_l.transformer.")
                .map(|r| (r.to_string(), v))
        })
        .collect();
    std::fs::write(
        models.join("text_encoders/sd3_clip_l.safetensors"),
        safetensors::tensor::serialize(views, None).unwrap(),
    )
    .unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![models];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
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

fn sampling_golden() -> (std::collections::HashMap<String, Tensor>, Json) {
    let t = candle_core::safetensors::load(
        root().join("tests/data/sd3/sampling.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let meta = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/sd3/sampling.json")).unwrap(),
    )
    .unwrap();
    (t, meta)
}

/// The SD3.5 template graph (sd3.5_simple_example's node ids) at 96×64 with the case's
/// sampler settings; `model` and `negative` are the links KSampler takes.
fn graph(case: &Json, pos: &str, neg: &str, model: Json, negative: Json) -> Json {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "tiny_sd35_medium.safetensors"}},
        "16": {"class_type": "CLIPTextEncode", "inputs": {"text": pos, "clip": ["4", 1]}},
        "40": {"class_type": "CLIPTextEncode", "inputs": {"text": neg, "clip": ["4", 1]}},
        "53": {"class_type": "EmptySD3LatentImage",
               "inputs": {"width": 96, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": case["seed"], "steps": case["steps"], "cfg": case["cfg"],
            "sampler_name": case["sampler"], "scheduler": case["scheduler"], "denoise": 1.0,
            "model": model, "positive": ["16", 0], "negative": negative,
            "latent_image": ["53", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sd35", "images": ["8", 0]}},
        "90": {"class_type": "TestCaptureLatent", "inputs": {"samples": ["3", 0]}},
        "41": {"class_type": "ModelSamplingSD3",
               "inputs": {"model": ["4", 0], "shift": case["shift"].as_f64().unwrap_or(3.0)}},
        "70": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["40", 0]}},
        "71": {"class_type": "ConditioningSetTimestepRange",
               "inputs": {"conditioning": ["70", 0], "start": 0.1, "end": 1.0}},
        "72": {"class_type": "ConditioningSetTimestepRange",
               "inputs": {"conditioning": ["40", 0], "start": 0.0, "end": 0.1}},
        "73": {"class_type": "ConditioningCombine",
               "inputs": {"conditioning_1": ["71", 0], "conditioning_2": ["72", 0]}},
    })
}

/// max |a − b| relative to max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let s = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / s.max(1e-6)
}

#[test]
fn ksampler_workflows_match_comfyui() {
    let (g, meta) = sampling_golden();
    let (pos, neg) = (
        meta["positive"].as_str().unwrap(),
        meta["negative"].as_str().unwrap(),
    );
    let (_dir, env) = setup();
    let cases = meta["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 5);
    for (name, case) in cases
        .iter()
        .filter(|(n, _)| !["triple", "slg"].contains(&n.as_str()))
    {
        let model = if name == "shift5" {
            json!(["41", 0])
        } else {
            json!(["4", 0])
        };
        let negative = if name == "zero_neg" {
            json!(["73", 0])
        } else {
            json!(["40", 0])
        };
        let (out, latents) = run(&env, &graph(case, pos, neg, model, negative));
        let out = out.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(latents.len(), 1, "{name}");
        let want = &g[&format!("case.{name}")];
        let r = rel(&latents[0], want);
        assert!(r < 1e-4, "{name}: max |Δ| / max = {r}");
        // The whole template ran: a 96×64 image was saved.
        let file = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
        let img = image::open(env.paths.output.join(file)).unwrap();
        assert_eq!((img.width(), img.height()), (96, 64), "{name}");
    }
}

#[test]
fn mismatched_text_encoders_are_a_clear_error() {
    // UNETLoader (SD3.5 large) + CLIPLoader type sd3 with CLIP-G alone: ComfyUI's zeros for
    // the missing CLIP-L are 768 wide, so the pooled vector is 768 + 48, not the tiny
    // model's 80. A clear node error, not a panic.
    let (_dir, env) = setup();
    let prompt = json!({
        "1": {"class_type": "UNETLoader", "inputs": {
            "unet_name": "tiny_sd35_large.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {
            "clip_name": "tiny_clip_g.safetensors", "type": "sd3"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
            "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "TestCaptureLatent", "inputs": {"samples": ["5", 0]}},
    });
    let (out, _) = run(&env, &prompt);
    let e = out.unwrap_err();
    assert!(
        e.contains("pooled output is 816 wide")
            && e.contains("SD3.5 large model's y_embedder takes 80"),
        "{e}"
    );
}

#[test]
fn split_files_give_the_checkpoints_result() {
    // UNETLoader + DualCLIPLoader(sd3) + VAELoader over files holding the checkpoint's
    // tensors (same keys, same values) sample exactly the checkpoint template's latent and
    // decode the same image.
    let (g, meta) = sampling_golden();
    let case = &meta["cases"]["template"];
    let (_dir, env) = setup();
    let (pos, neg) = (
        meta["positive"].as_str().unwrap(),
        meta["negative"].as_str().unwrap(),
    );
    let mut prompt = graph(case, pos, neg, json!(["12", 0]), json!(["40", 0]));
    let p = prompt.as_object_mut().unwrap();
    p.insert(
        "12".into(),
        json!({"class_type": "UNETLoader", "inputs": {
            "unet_name": "tiny_sd35_medium.safetensors", "weight_dtype": "default"}}),
    );
    p.insert(
        "11".into(),
        json!({"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "tiny_clip_g.safetensors", "clip_name2": "sd3_clip_l.safetensors",
            "type": "sd3"}}),
    );
    p.insert(
        "10".into(),
        json!({"class_type": "VAELoader", "inputs": {"vae_name": "tiny_flux_vae.safetensors"}}),
    );
    for (node, input, link) in [
        ("16", "clip", json!(["11", 0])),
        ("40", "clip", json!(["11", 0])),
        ("8", "vae", json!(["10", 0])),
    ] {
        p[node]["inputs"][input] = link;
    }
    p.remove("4");
    p.remove("41");
    let (out, split) = run(&env, &prompt);
    let out = out.unwrap();
    let file = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    let split_img = image::open(env.paths.output.join(file)).unwrap().to_rgb8();
    let template = graph(case, pos, neg, json!(["4", 0]), json!(["40", 0]));
    let (out, ck) = run(&env, &template);
    let out = out.unwrap();
    let file = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    let ck_img = image::open(env.paths.output.join(file)).unwrap().to_rgb8();
    let d = (&split[0] - &ck[0])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    assert!(rel(&split[0], &g["case.template"]) < 1e-4);
    assert_eq!(split_img.into_raw(), ck_img.into_raw());
}

#[test]
fn triple_clip_loader_workflow_matches_comfyui() {
    // The text-encoder variant of the SD3.5 template: TripleCLIPLoader (CLIP-L, CLIP-G and a
    // T5-XXL of SD3's real width 4096) feeding CLIPTextEncode, the checkpoint's MODEL.
    let (g, meta) = sampling_golden();
    let case = &meta["cases"]["triple"];
    let (_dir, env) = setup();
    let te = env.paths.model_roots[0].join("text_encoders");
    std::fs::write(
        te.join("t5xxl_wide.safetensors"),
        fx::tiny_t5xxl_wide_bytes(),
    )
    .unwrap();
    let mut prompt = graph(
        case,
        meta["triple_positive"].as_str().unwrap(),
        meta["triple_negative"].as_str().unwrap(),
        json!(["4", 0]),
        json!(["40", 0]),
    );
    let p = prompt.as_object_mut().unwrap();
    p.insert(
        "43".into(),
        json!({"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": "sd3_clip_l.safetensors", "clip_name2": "tiny_clip_g.safetensors",
            "clip_name3": "t5xxl_wide.safetensors"}}),
    );
    p["16"]["inputs"]["clip"] = json!(["43", 0]);
    p["40"]["inputs"]["clip"] = json!(["43", 0]);
    let (out, latents) = run(&env, &prompt);
    out.unwrap();
    let r = rel(&latents[0], &g["case.triple"]);
    assert!(r < 1e-4, "triple: max |Δ| / max = {r}");
    // The T5 tokens change the result: the checkpoint's CLIP alone gives another latent.
    let mut ck_only = prompt.clone();
    ck_only["16"]["inputs"]["clip"] = json!(["4", 1]);
    ck_only["40"]["inputs"]["clip"] = json!(["4", 1]);
    let (out, other) = run(&env, &ck_only);
    out.unwrap();
    assert!(rel(&other[0], &g["case.triple"]) > 1e-3);
}

#[test]
fn skip_layer_guidance_sd3_matches_comfyui() {
    let (g, meta) = sampling_golden();
    let case = &meta["cases"]["slg"];
    let (_dir, env) = setup();
    let (pos, neg) = (
        meta["positive"].as_str().unwrap(),
        meta["negative"].as_str().unwrap(),
    );
    let mut prompt = graph(case, pos, neg, json!(["60", 0]), json!(["40", 0]));
    let slg = &case["slg"];
    prompt.as_object_mut().unwrap().insert(
        "60".into(),
        json!({"class_type": "SkipLayerGuidanceSD3", "inputs": {
            "model": ["4", 0], "layers": slg["layers"], "scale": slg["scale"],
            "start_percent": slg["start_percent"], "end_percent": slg["end_percent"]}}),
    );
    let (out, latents) = run(&env, &prompt);
    out.unwrap();
    let r = rel(&latents[0], &g["case.slg"]);
    assert!(r < 1e-4, "slg: max |Δ| / max = {r}");
    // It changes the result (the template case is the same run without it).
    assert!(rel(&latents[0], &g["case.template"]) > 1e-3);
    // Layers the model does not have: the skipped pass equals the cond pass, no change.
    prompt["60"]["inputs"]["layers"] = json!("7, 8, 9");
    let (out, none) = run(&env, &prompt);
    out.unwrap();
    assert!(rel(&none[0], &g["case.template"]) < 1e-4);
    // No layer number at all: the model is returned unpatched.
    prompt["60"]["inputs"]["layers"] = json!("none");
    let (out, unpatched) = run(&env, &prompt);
    out.unwrap();
    assert!(rel(&unpatched[0], &g["case.template"]) < 1e-4);
}

#[test]
fn skip_layer_guidance_layer_parsing() {
    use comfyrs::nodes::sd3::parse_layers;
    assert_eq!(parse_layers("7, 8, 9"), vec![7, 8, 9]);
    assert_eq!(parse_layers("layer7;x12 3"), vec![7, 12, 3]);
    assert_eq!(parse_layers(""), Vec::<usize>::new());
    assert_eq!(parse_layers("1, 99999999999999999999999"), vec![1]);
}

#[test]
fn object_info_matches_comfyui() {
    // tests/data/sd3/object_info_sd3.json: GET /object_info/<class> of ComfyUI a125cd84 (no
    // model files), made by scripts/goldens/gen_object_info.py.
    let p = root().join("tests/data/sd3/object_info_sd3.json");
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let reg = Registry::with_builtin_nodes();
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 5);
    for (class, info) in classes {
        let ours = reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}
