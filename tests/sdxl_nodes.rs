//! SDXL end to end on the tiny SDXL fixtures: checkpoint and separate-file loaders give the
//! same model, the size/aesthetic conditioning nodes reduce to ComfyUI's defaults, and
//! every unsupported loader type is a node error naming it.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions, TextEncoders};
use comfyrs::models::fixture::{TINY_SDXL_PATH, TINY_SDXL_REFINER_PATH};
use comfyrs::models::lora::KeyMap;
use comfyrs::models::Family;
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A models root with the tiny SDXL checkpoints, and its parts as separate files:
/// `diffusion_models/tiny_sdxl_unet`, `text_encoders/tiny_clip_l` (HF names),
/// `text_encoders/tiny_clip_g` (OpenCLIP names, as open_clip saves them) and `vae/tiny_sdxl_vae`.
fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for d in ["checkpoints", "diffusion_models", "text_encoders", "vae"] {
        std::fs::create_dir_all(models.join(d)).unwrap();
    }
    for p in [TINY_SDXL_PATH, TINY_SDXL_REFINER_PATH] {
        let name = Path::new(p).file_name().unwrap();
        std::fs::copy(root().join(p), models.join("checkpoints").join(name)).unwrap();
    }
    let all = candle_core::safetensors::load(root().join(TINY_SDXL_PATH), &Device::Cpu).unwrap();
    let part = |prefix: &str| -> HashMap<String, Tensor> {
        all.iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v.clone())))
            .collect()
    };
    let save = |m: HashMap<String, Tensor>, rel: &str| {
        candle_core::safetensors::save(&m, models.join(rel)).unwrap();
    };
    save(
        part("model.diffusion_model."),
        "diffusion_models/tiny_sdxl_unet.safetensors",
    );
    save(
        part("conditioner.embedders.0.transformer."),
        "text_encoders/tiny_clip_l.safetensors",
    );
    save(
        part("conditioner.embedders.1.model."),
        "text_encoders/tiny_clip_g.safetensors",
    );
    save(part("first_stage_model."), "vae/tiny_sdxl_vae.safetensors");
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

/// The pixels of the image node "9" saved.
fn pixels(env: &Environment, out: &RunOutcome) -> Vec<u8> {
    let name = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    image::open(env.paths.output.join(name))
        .unwrap()
        .to_rgb8()
        .into_raw()
}

/// SDXL txt2img at 64×64 with the checkpoint loader; `encoders` replaces nodes 6/7 (the
/// prompts) and `loaders` nodes 4 (MODEL, CLIP, VAE outputs at 4.0, 4.1, 4.2).
fn txt2img(ckpt: &str) -> Json {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 42, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdxl", "images": ["8", 0]}}
    })
}

#[test]
fn checkpoints_are_detected_with_their_text_encoders() {
    let opts = LoadOptions::default();
    let ck =
        load_checkpoint_with(root().join(TINY_SDXL_PATH), &Device::Cpu, DType::F32, &opts).unwrap();
    assert_eq!(ck.family, Family::Sdxl);
    assert!(matches!(ck.text, TextEncoders::Sdxl { .. }));
    assert_eq!(
        ck.model.as_unet().unwrap().config().adm_in_channels,
        Some(48 + 1536)
    );
    // OpenCLIP bigG was renamed to ComfyUI's HF keys, its projection transposed.
    assert!(ck
        .weights
        .contains_key("clip_g.transformer.text_model.encoder.layers.2.self_attn.v_proj.weight"));
    assert!(ck
        .weights
        .contains_key("clip_g.transformer.text_projection.weight"));
    assert!(!ck.weights.keys().any(|k| k.starts_with("conditioner.")));
    let r = load_checkpoint_with(
        root().join(TINY_SDXL_REFINER_PATH),
        &Device::Cpu,
        DType::F32,
        &opts,
    )
    .unwrap();
    assert_eq!(r.family, Family::SdxlRefiner);
    assert!(matches!(r.text, TextEncoders::SdxlRefiner(_)));
}

#[test]
fn sdxl_text_encoding_concatenates_l_and_g_with_g_pooled() {
    let (_d, env) = setup();
    let opts = LoadOptions::default();
    let ck =
        load_checkpoint_with(root().join(TINY_SDXL_PATH), &Device::Cpu, DType::F32, &opts).unwrap();
    let (_, clip, _) = comfyrs::nodes::sd_types::split_checkpoint(&ck);
    let tokens = clip.encoder.tokenize("a lighthouse at dusk");
    // bigG pads with 0, CLIP-L with EOS.
    let g = tokens.g.as_ref().unwrap();
    let l = tokens.l.as_ref().unwrap();
    assert_eq!(g[0].last().unwrap().0.id(), Some(0));
    assert_eq!(l[0].last().unwrap().0.id(), Some(49407));
    let (cond, pooled) = clip.encoder.encode(&tokens, None).unwrap();
    assert_eq!(cond.dims(), [1, 77, 32 + 48]);
    assert_eq!(pooled.dims(), [1, 48]);
    // The channels are [CLIP-L hidden −2 | bigG hidden −2], neither with the final LN.
    let TextEncoders::Sdxl { l: enc_l, g: enc_g } = &ck.text else {
        unreachable!()
    };
    let (lc, _) = enc_l.encode(l, None).unwrap();
    let (gc, gp) = enc_g.encode(g, None).unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(diff(&cond.narrow(2, 0, 32).unwrap(), &lc), 0.0);
    assert_eq!(diff(&cond.narrow(2, 32, 48).unwrap(), &gc), 0.0);
    assert_eq!(diff(&pooled, &gp), 0.0);
    // CLIPSetLastLayer(-1) takes the last layer, still without the final LN: a different cond.
    let (last, _) = clip.encoder.encode(&tokens, Some(-1)).unwrap();
    assert!(diff(&last, &cond) > 1e-4);
    drop(env);
}

#[test]
fn size_conditioning_defaults_are_the_latent_size() {
    let (_d, env) = setup();
    let plain = run(&env, &txt2img("tiny_sdxl.safetensors")).unwrap();
    let base = pixels(&env, &plain);
    assert!(base.iter().any(|&v| v != base[0]), "a flat image");
    // CLIPTextEncodeSDXL with width/height/target = the image size and no crop is exactly
    // what CLIPTextEncode gets from encode_model_conds' defaults.
    let sdxl = |w: i64, crop: i64| {
        let mut p = txt2img("tiny_sdxl.safetensors");
        for (id, text) in [("6", "a lighthouse at dusk"), ("7", "blurry")] {
            p[id] = json!({"class_type": "CLIPTextEncodeSDXL", "inputs": {
                "clip": ["4", 1], "width": w, "height": 64, "crop_w": crop, "crop_h": 0,
                "target_width": w, "target_height": 64, "text_g": text, "text_l": text}});
        }
        p
    };
    let same = run(&env, &sdxl(64, 0)).unwrap();
    assert_eq!(pixels(&env, &same), base);
    let wider = run(&env, &sdxl(1024, 0)).unwrap();
    assert_ne!(pixels(&env, &wider), base);
    let cropped = run(&env, &sdxl(64, 32)).unwrap();
    assert_ne!(pixels(&env, &cropped), base);
}

#[test]
fn refiner_aesthetic_score_defaults_by_prompt_type() {
    let (_d, env) = setup();
    let plain = run(&env, &txt2img("tiny_sdxl_refiner.safetensors")).unwrap();
    let base = pixels(&env, &plain);
    let refiner = |pos: f64, neg: f64| {
        let mut p = txt2img("tiny_sdxl_refiner.safetensors");
        for (id, text, ascore) in [("6", "a lighthouse at dusk", pos), ("7", "blurry", neg)] {
            p[id] = json!({"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
                "ascore": ascore, "width": 64, "height": 64, "text": text, "clip": ["4", 1]}});
        }
        p
    };
    // ComfyUI's defaults: 6 for the positive prompt, 2.5 for the negative.
    assert_eq!(pixels(&env, &run(&env, &refiner(6.0, 2.5)).unwrap()), base);
    assert_ne!(pixels(&env, &run(&env, &refiner(6.0, 6.0)).unwrap()), base);
    // CLIPTextEncodeSDXL needs both encoders: the refiner's CLIP is refused by name.
    let mut p = txt2img("tiny_sdxl_refiner.safetensors");
    p["6"] = json!({"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": ["4", 1], "width": 64, "height": 64, "crop_w": 0, "crop_h": 0,
        "target_width": 64, "target_height": 64, "text_g": "a", "text_l": "a"}});
    let err = run(&env, &p).unwrap_err();
    assert!(err.contains("SDXL refiner (CLIP-G)"), "{err}");
}

#[test]
fn separate_files_give_the_checkpoint_image() {
    let (_d, env) = setup();
    let base = pixels(&env, &run(&env, &txt2img("tiny_sdxl.safetensors")).unwrap());
    let split = |a: &str, b: &str| {
        let mut p = txt2img("tiny_sdxl.safetensors");
        p["4"] = json!({"class_type": "UNETLoader", "inputs": {
            "unet_name": "tiny_sdxl_unet.safetensors", "weight_dtype": "default"}});
        p["10"] = json!({"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": a, "clip_name2": b, "type": "sdxl"}});
        p["11"] =
            json!({"class_type": "VAELoader", "inputs": {"vae_name": "tiny_sdxl_vae.safetensors"}});
        p["6"]["inputs"]["clip"] = json!(["10", 0]);
        p["7"]["inputs"]["clip"] = json!(["10", 0]);
        p["8"]["inputs"]["vae"] = json!(["11", 0]);
        p
    };
    let out = run(
        &env,
        &split("tiny_clip_l.safetensors", "tiny_clip_g.safetensors"),
    )
    .unwrap();
    assert_eq!(pixels(&env, &out), base);
    // The files are told apart by their keys, not their order.
    let out = run(
        &env,
        &split("tiny_clip_g.safetensors", "tiny_clip_l.safetensors"),
    )
    .unwrap();
    assert_eq!(pixels(&env, &out), base);
    // Two CLIP-L files cannot make an SDXL CLIP.
    let err = run(
        &env,
        &split("tiny_clip_l.safetensors", "tiny_clip_l.safetensors"),
    )
    .unwrap_err();
    assert!(err.contains("one CLIP-L and one CLIP-G"), "{err}");
}

#[test]
fn unsupported_loader_types_are_errors_naming_them() {
    let (_d, env) = setup();
    let with = |id: &str, node: Json| {
        let mut p = txt2img("tiny_sdxl.safetensors");
        p[id] = node;
        p["6"]["inputs"]["clip"] = json!([id, 0]);
        p
    };
    let dual = |ty: &str| {
        with(
            "10",
            json!({"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "tiny_clip_l.safetensors", "clip_name2": "tiny_clip_g.safetensors",
            "type": ty}}),
        )
    };
    let err = run(&env, &dual("hidream")).unwrap_err();
    assert!(err.contains("type 'hidream'"), "{err}");
    // Flux runs, but needs a T5-XXL beside the CLIP-L (tests/flux_text.rs).
    let err = run(&env, &dual("flux")).unwrap_err();
    assert!(
        err.contains("type flux takes one CLIP-L and one T5-XXL file; these are CLIP-L and CLIP-G"),
        "{err}"
    );
    let err = run(
        &env,
        &with(
            "10",
            json!({"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": "tiny_clip_l.safetensors", "clip_name2": "tiny_clip_g.safetensors",
            "clip_name3": "tiny_clip_l.safetensors"}}),
        ),
    )
    .unwrap_err();
    // SD3's text encoders run (tests/sd3_text.rs), one file of each kind.
    assert!(
        err.contains("type sd3 takes at most one file of each kind")
            && err.contains("CLIP-L and CLIP-G and CLIP-L"),
        "{err}"
    );
    let err = run(
        &env,
        &with(
            "10",
            json!({"class_type": "CLIPLoader", "inputs": {
            "clip_name": "tiny_clip_l.safetensors", "type": "wan"}}),
        ),
    )
    .unwrap_err();
    assert!(err.contains("type 'wan'"), "{err}");
    // A lone bigG with type stable_diffusion is the refiner's encoder: 48 channels, which
    // the SDXL base UNet (context 80) cannot take.
    let p = with(
        "10",
        json!({"class_type": "CLIPLoader", "inputs": {
        "clip_name": "tiny_clip_g.safetensors", "type": "stable_diffusion"}}),
    );
    let err = run(&env, &p).unwrap_err();
    assert!(
        err.contains("the conditioning has 48 channels but this UNet's cross-attention takes 80"),
        "{err}"
    );
}

#[test]
fn empty_sd3_latent_is_narrowed_to_sdxl_channels() {
    let (_d, env) = setup();
    let base = pixels(&env, &run(&env, &txt2img("tiny_sdxl.safetensors")).unwrap());
    let mut p = txt2img("tiny_sdxl.safetensors");
    p["5"] = json!({"class_type": "EmptySD3LatentImage", "inputs": {
        "width": 64, "height": 64, "batch_size": 1}});
    assert_eq!(pixels(&env, &run(&env, &p).unwrap()), base);
}

#[test]
fn lora_key_map_names_both_sdxl_text_encoders_and_the_adm_embedding() {
    let opts = LoadOptions::default();
    let ck =
        load_checkpoint_with(root().join(TINY_SDXL_PATH), &Device::Cpu, DType::F32, &opts).unwrap();
    let map = KeyMap::for_weights(&ck.weights, true, true).unwrap();
    assert_eq!(
        map.get("lora_te1_text_model_encoder_layers_1_mlp_fc1"),
        Some("clip_l.transformer.text_model.encoder.layers.1.mlp.fc1.weight")
    );
    assert_eq!(
        map.get("lora_te2_text_model_encoder_layers_2_self_attn_q_proj"),
        Some("clip_g.transformer.text_model.encoder.layers.2.self_attn.q_proj.weight")
    );
    assert_eq!(
        map.get("text_encoder_2.text_model.encoder.layers.0.mlp.fc2"),
        Some("clip_g.transformer.text_model.encoder.layers.0.mlp.fc2.weight")
    );
    assert_eq!(
        map.get("lora_unet_label_emb_0_0"),
        Some("model.diffusion_model.label_emb.0.0.weight")
    );
    assert_eq!(
        map.get("lora_unet_add_embedding_linear_2"),
        Some("model.diffusion_model.label_emb.0.2.weight")
    );
    assert_eq!(
        map.get("lora_te2_text_projection"),
        Some("clip_g.transformer.text_projection.weight")
    );
    // The refiner's lone bigG answers to the single-encoder names.
    let r = load_checkpoint_with(
        root().join(TINY_SDXL_REFINER_PATH),
        &Device::Cpu,
        DType::F32,
        &opts,
    )
    .unwrap();
    let map = KeyMap::for_weights(&r.weights, true, true).unwrap();
    assert_eq!(
        map.get("lora_te_text_model_encoder_layers_0_mlp_fc1"),
        Some("clip_g.transformer.text_model.encoder.layers.0.mlp.fc1.weight")
    );
    assert_eq!(
        map.get("lora_te2_text_model_encoder_layers_0_mlp_fc1"),
        None
    );
}
