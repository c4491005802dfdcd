//! Flux's text encoders (CLIP-L + T5-XXL) against ComfyUI: the tiny fixture files loaded
//! as DualCLIPLoader type `flux` give the cond (T5) and pooled output (CLIP-L, unprojected)
//! that ComfyUI's `FluxClipModel` computes from the same files (fp16 T5 and scaled-fp8 T5;
//! tests/data/t5/flux_pair.*, scripts/goldens/gen_t5_goldens.py); detection and loader
//! errors; and DualCLIPLoader + CLIPTextEncodeFlux / CLIPTextEncode through the executor.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::TextEncoders;
use comfyrs::models::component_files::{
    detect_text_encoder, load_text_encoders, read_text_encoder_file, TextEncoderKind,
};
use comfyrs::models::fixture::{
    TINY_CLIP_L_PATH, TINY_SD15_PATH, TINY_T5XXL_FP8_SCALED_PATH, TINY_T5XXL_PATH,
};
use comfyrs::node::Registry;
use comfyrs::nodes::sd_types::{clip_payload, SdClip};
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_pair(t5: &str, emb: &Path) -> SdClip {
    let (l, t) = (root().join(TINY_CLIP_L_PATH), root().join(t5));
    // The T5 file first: the loader finds each member by its keys.
    let files = load_text_encoders(
        &[&t, &l],
        "flux",
        &Device::Cpu,
        DType::F32,
        true,
        vec![emb.to_path_buf()],
    )
    .unwrap();
    assert!(matches!(files.text, TextEncoders::Flux { .. }));
    clip_payload(&files.text, &files.weights)
}

/// Largest |a − b| relative to the largest |b|.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    if g.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    g.iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

/// tiny_t5xxl cast to plain fp8 e4m3fn (the `t5xxl_fp8_e4m3fn` layout: every tensor fp8),
/// with a NaN at `shared.weight[3, 0]`, as the golden script builds it with torch.
fn plain_fp8_t5_with_nan(dir: &Path) -> PathBuf {
    use comfyrs::models::fp8::{encode_f16, Fp8Kind};
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(root().join(TINY_T5XXL_PATH)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F16);
        let mut fp8: Vec<u8> = view
            .data()
            .chunks_exact(2)
            .map(|b| encode_f16(Fp8Kind::E4m3fn, half::f16::from_le_bytes([b[0], b[1]])))
            .collect();
        if name == "shared.weight" {
            let width = view.shape()[1];
            fp8[3 * width] = 0x7F; // NaN
        }
        out.push((name, view.shape().to_vec(), fp8));
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F8_E4M3, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let path = dir.join("tiny_t5xxl_fp8_e4m3fn.safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    path
}

#[test]
fn flux_pair_matches_comfyui() {
    let emb = tempfile::tempdir().unwrap();
    let data = root().join("tests/data/t5");
    let cases: Json =
        serde_json::from_str(&std::fs::read_to_string(data.join("flux_pair.json")).unwrap())
            .unwrap();
    let golden =
        candle_core::safetensors::load(data.join("flux_pair.safetensors"), &Device::Cpu).unwrap();
    let fp16 = load_pair(TINY_T5XXL_PATH, emb.path());
    let scaled = load_pair(TINY_T5XXL_FP8_SCALED_PATH, emb.path());
    let dir = tempfile::tempdir().unwrap();
    let fp8_nan = load_pair(
        plain_fp8_t5_with_nan(dir.path()).to_str().unwrap(),
        emb.path(),
    );
    let mut checked = 0;
    for c in cases.as_array().unwrap() {
        let key = c["key"].as_str().unwrap();
        let clip = if key.starts_with("fp16.") {
            &fp16
        } else if key.starts_with("fp8_nan.") {
            &fp8_nan
        } else {
            &scaled
        };
        let tokens = match c["kind"].as_str().unwrap() {
            "split" => clip
                .encoder
                .tokenize_flux(c["clip_l"].as_str().unwrap(), c["t5xxl"].as_str().unwrap())
                .unwrap(),
            _ => clip.encoder.tokenize(c["prompt"].as_str().unwrap()),
        };
        let layer = c
            .get("clip_layer")
            .and_then(|v| v.as_i64())
            .map(|v| v as i32);
        let (cond, pooled) = clip.encoder.encode(&tokens, layer).unwrap();
        let (wc, wp) = (
            &golden[&format!("{key}.cond")],
            &golden[&format!("{key}.pooled")],
        );
        let (dc, dp) = (rel_diff(&cond, wc), rel_diff(&pooled, wp));
        assert!(dc < 1e-5, "{key}: cond differs by {dc} (relative)");
        assert!(dp < 1e-5, "{key}: pooled differs by {dp} (relative)");
        checked += 1;
    }
    assert_eq!(checked, 15);
    // The goldens tell the encoders apart: fp16 and scaled-fp8 T5s give different conds.
    assert!(rel_diff(&golden["fp16.0.cond"], &golden["fp8_scaled.0.cond"]) > 1e-3);
}

#[test]
fn detects_t5_files_and_rejects_wrong_pairs() {
    let dev = Device::Cpu;
    let read = |p: &str| read_text_encoder_file(&root().join(p), &dev, DType::F32).unwrap();
    assert_eq!(
        detect_text_encoder(&read(TINY_T5XXL_PATH)),
        TextEncoderKind::T5Xxl
    );
    let scaled = read(TINY_T5XXL_FP8_SCALED_PATH);
    assert_eq!(detect_text_encoder(&scaled), TextEncoderKind::T5Xxl);
    assert!(scaled.contains_key("scaled_fp8"));
    assert_eq!(
        scaled["encoder.block.0.layer.0.SelfAttention.q.weight"].dtype(),
        DType::F8E4M3,
        "scaled fp8 weights stay fp8 in memory"
    );
    assert_eq!(
        detect_text_encoder(&read(TINY_CLIP_L_PATH)),
        TextEncoderKind::ClipL
    );

    // A T5 saved with its model's prefix loads the same.
    let dir = tempfile::tempdir().unwrap();
    let plain = candle_core::safetensors::load(root().join(TINY_T5XXL_PATH), &dev).unwrap();
    let prefixed: std::collections::HashMap<String, Tensor> = plain
        .iter()
        .map(|(k, v)| (format!("text_encoders.t5xxl.transformer.{k}"), v.clone()))
        .collect();
    let p = dir.path().join("t5_prefixed.safetensors");
    candle_core::safetensors::save(&prefixed, &p).unwrap();
    let w = read_text_encoder_file(&p, &dev, DType::F32).unwrap();
    assert!(w.contains_key("shared.weight"));
    assert_eq!(detect_text_encoder(&w), TextEncoderKind::T5Xxl);

    let l = root().join(TINY_CLIP_L_PATH);
    let t = root().join(TINY_T5XXL_PATH);
    let err = |paths: &[&Path], ty: &str| {
        load_text_encoders(paths, ty, &dev, DType::F32, true, vec![])
            .err()
            .expect("an error")
            .to_string()
    };
    let e = err(&[&l, &l], "flux");
    assert!(
        e.contains("type flux takes one CLIP-L and one T5-XXL file"),
        "{e}"
    );
    assert!(e.contains("CLIP-L and CLIP-L"), "{e}");
    let e = err(&[&t], "stable_diffusion");
    assert!(e.contains("T5-XXL"), "{e}");
    let e = err(&[&t, &l], "sdxl");
    assert!(
        e.contains("type sdxl takes one CLIP-L and one CLIP-G"),
        "{e}"
    );

    // A T5 file without its token embedding is an error naming the file and the tensor.
    let mut broken = plain.clone();
    broken.remove("shared.weight");
    let b = dir.path().join("t5_broken.safetensors");
    candle_core::safetensors::save(&broken, &b).unwrap();
    let e = err(&[&l, &b], "flux");
    assert!(
        e.contains("t5_broken.safetensors") && e.contains("shared.weight"),
        "{e}"
    );
}

/// A models root with the tiny Flux text encoders and the tiny SD1.5 checkpoint.
fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for d in ["checkpoints", "text_encoders", "embeddings"] {
        std::fs::create_dir_all(models.join(d)).unwrap();
    }
    for (p, folder) in [
        (TINY_CLIP_L_PATH, "text_encoders"),
        (TINY_T5XXL_PATH, "text_encoders"),
        (TINY_T5XXL_FP8_SCALED_PATH, "text_encoders"),
        (TINY_SD15_PATH, "checkpoints"),
    ] {
        let name = Path::new(p).file_name().unwrap();
        std::fs::copy(root().join(p), models.join(folder).join(name)).unwrap();
    }
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![models];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

fn run(env: &Arc<Environment>, prompt: &Json) -> Result<RunOutcome, String> {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&prompt.to_string()).map_err(|e| format!("{e:?}"))?;
    let valid =
        prepare(wf, &Overrides::default(), &reg, env, None).map_err(|e| format!("{e:?}"))?;
    let out = exec.run("p", &valid, None, &Interrupt::new(), &NoEvents);
    match &out.status {
        RunStatus::Success => Ok(out),
        s => Err(format!("{s:?}")),
    }
}

fn pixels(env: &Environment, out: &RunOutcome) -> Vec<u8> {
    let name = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    image::open(env.paths.output.join(name))
        .unwrap()
        .to_rgb8()
        .into_raw()
}

/// DualCLIPLoader(type flux) → `positive` (node 6) → a sampler. The tiny SD1.5 UNet stands
/// in for the diffusion model: its cross-attention is 32 wide like the tiny T5, so the T5
/// conditioning drives the image (SD1 ignores the pooled output and the guidance key).
fn graph(t5_file: &str, positive: Json) -> Json {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "10": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "tiny_clip_l.safetensors", "clip_name2": t5_file, "type": "flux"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": positive,
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["10", 0]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 7, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux_text", "images": ["8", 0]}}
    })
}

fn encode_flux(clip_l: &str, t5xxl: &str, guidance: f64) -> Json {
    json!({"class_type": "CLIPTextEncodeFlux", "inputs": {
        "clip": ["10", 0], "clip_l": clip_l, "t5xxl": t5xxl, "guidance": guidance}})
}

fn encode(text: &str) -> Json {
    json!({"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["10", 0]}})
}

#[test]
fn dual_clip_loader_flux_and_clip_text_encode_flux_run_end_to_end() {
    let (_dir, env) = setup();
    let t5 = "tiny_t5xxl.safetensors";
    let plain = pixels(
        &env,
        &run(&env, &graph(t5, encode("a stormy sea"))).unwrap(),
    );
    // CLIPTextEncodeFlux's t5xxl text is the conditioning: the same image as CLIPTextEncode
    // of that text whatever the clip_l text (only the pooled output, unused here).
    let split = run(
        &env,
        &graph(t5, encode_flux("a quiet meadow", "a stormy sea", 3.5)),
    )
    .unwrap();
    assert_eq!(pixels(&env, &split), plain);
    let other = pixels(
        &env,
        &run(&env, &graph(t5, encode("a quiet meadow"))).unwrap(),
    );
    assert_ne!(other, plain, "the T5 prompt changes the image");
    // The scaled-fp8 T5 loads and runs through the same graph.
    let fp8 = run(
        &env,
        &graph(
            "tiny_t5xxl_fp8_e4m3fn_scaled.safetensors",
            encode("a stormy sea"),
        ),
    )
    .unwrap();
    assert_eq!(pixels(&env, &fp8).len(), plain.len());

    // CLIPTextEncodeFlux needs a Flux CLIP: the SD1.5 checkpoint's is an error on `clip`.
    let mut g = graph(t5, encode_flux("a", "b", 3.5));
    g["6"]["inputs"]["clip"] = json!(["4", 1]);
    let e = run(&env, &g).unwrap_err();
    assert!(e.contains("CLIPTextEncodeFlux needs a Flux CLIP"), "{e}");
    // Two CLIP-L files are not a Flux pair.
    let mut g = graph(t5, encode("x"));
    g["10"]["inputs"]["clip_name2"] = json!("tiny_clip_l.safetensors");
    let e = run(&env, &g).unwrap_err();
    assert!(
        e.contains("type flux takes one CLIP-L and one T5-XXL file"),
        "{e}"
    );
}

#[test]
fn clip_text_encode_flux_sets_the_guidance_and_splits_the_prompts() {
    use comfyrs::nodes::clip_flux::encode_flux;
    use comfyrs::sampling::conds::Guidance;
    let emb = tempfile::tempdir().unwrap();
    let clip = load_pair(TINY_T5XXL_PATH, emb.path());
    let c = encode_flux(&clip, "a quiet meadow", "a stormy sea", 2.25).unwrap();
    assert_eq!(c.0.len(), 1);
    let e = &c.0[0];
    assert_eq!(e.opts.guidance, Some(Guidance::Value(2.25)));
    assert_eq!(e.cond.dims(), &[1, 256, 32]);
    let enc = |t: &str| {
        clip.encoder
            .encode(&clip.encoder.tokenize(t), None)
            .unwrap()
    };
    let (sea, _) = enc("a stormy sea");
    let (_, meadow_pooled) = enc("a quiet meadow");
    assert_eq!(rel_diff(&e.cond, &sea), 0.0, "cond = T5(t5xxl)");
    let pooled = e.pooled.as_ref().unwrap();
    assert_eq!(pooled.dims(), &[1, 32]);
    assert_eq!(
        rel_diff(pooled, &meadow_pooled),
        0.0,
        "pooled = CLIP-L(clip_l)"
    );
    // Plain CLIPTextEncode sets no guidance key (the model's default applies).
    assert!(comfyrs::nodes::sd_types::CondEntry::new(sea, None)
        .opts
        .guidance
        .is_none());
    // A prompt past the T5 bound is an error on the t5xxl input.
    let long = "cat ".repeat(6000);
    let err = encode_flux(&clip, "x", &long, 3.5).unwrap_err();
    assert!(format!("{err:?}").contains("t5xxl"), "{err:?}");
}

#[test]
fn object_info_matches_comfyui_for_clip_text_encode_flux_and_dual_clip_loader() {
    // tests/data/t5/object_info_flux_text.json: GET /object_info/<class> of ComfyUI a125cd84
    // (scripts/goldens/gen_object_info.py), with an empty text_encoders folder.
    let p = root().join("tests/data/t5/object_info_flux_text.json");
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let reg = Registry::with_builtin_nodes();
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![dir.path().join("models")];
    let env = Environment::new(paths);
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 2);
    for (class, info) in classes {
        let ours = reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}

#[test]
fn generator_reproduces_the_committed_text_encoder_fixtures() {
    use comfyrs::models::fixture as fx;
    type Writer = fn() -> Vec<u8>;
    let files: [(&str, Writer); 3] = [
        (TINY_CLIP_L_PATH, fx::tiny_clip_l_bytes),
        (TINY_T5XXL_PATH, fx::tiny_t5xxl_bytes),
        (TINY_T5XXL_FP8_SCALED_PATH, fx::tiny_t5xxl_fp8_scaled_bytes),
    ];
    for (rel, gen) in files {
        let committed = std::fs::read(root().join(rel)).expect("committed fixture");
        assert!(
            committed == gen(),
            "{rel}: regenerate with `cargo run --bin gen_fixtures`"
        );
    }
}
