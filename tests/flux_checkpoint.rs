//! Flux all-in-one checkpoints through CheckpointLoaderSimple (the `flux1-dev-fp8` layout:
//! fp8 transformer under `model.diffusion_model.`, CLIP-L and an fp8 T5-XXL under
//! `text_encoders.`, the VAE under `vae.`): detection, dtypes kept as stored, clear errors,
//! and the quickstart / schnell graphs giving exactly the image of UNETLoader +
//! DualCLIPLoader (type flux) + VAELoader over split files cut from the same checkpoint
//! (the same bytes under ComfyUI's split-file names).

use candle_core::{DType, Device};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions, VAE_PREFIX};
use comfyrs::models::fixture as fx;
use comfyrs::models::{Family, TextEncoders};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the tensors of `src` whose key starts with `prefix` to `dst`, the prefix
/// stripped, bytes and dtypes unchanged.
fn cut(src: &[u8], prefix: &str, dst: &Path) {
    let st = safetensors::SafeTensors::deserialize(src).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v)))
        .collect();
    assert!(!views.is_empty(), "no {prefix}* tensors");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(dst, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// A models dir with both all-in-one checkpoints and, for each, its parts as split files
/// (`diffusion_models/NAME.safetensors`, `text_encoders/NAME_{clip_l,t5xxl}.safetensors`,
/// `vae/NAME_vae.safetensors`).
fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let dev = std::fs::read(root().join(fx::TINY_FLUX_DEV_FP8_PATH)).unwrap();
    for (name, bytes) in [
        ("tiny_flux_dev_fp8", dev),
        ("tiny_flux_schnell_fp8", fx::tiny_flux_schnell_fp8_bytes()),
    ] {
        let ck = models.join("checkpoints");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::write(ck.join(format!("{name}.safetensors")), &bytes).unwrap();
        for (prefix, sub) in [
            (
                "model.diffusion_model.",
                format!("diffusion_models/{name}.safetensors"),
            ),
            (
                "text_encoders.clip_l.transformer.",
                format!("text_encoders/{name}_clip_l.safetensors"),
            ),
            (
                "text_encoders.t5xxl.transformer.",
                format!("text_encoders/{name}_t5xxl.safetensors"),
            ),
            ("vae.", format!("vae/{name}_vae.safetensors")),
        ] {
            cut(&bytes, prefix, &models.join(sub));
        }
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

/// Replaces the loaders of `graph` (model from node "12", CLIP from "11", VAE from "10")
/// by the split files of `name` or by CheckpointLoaderSimple ("4") on its checkpoint.
fn with_loaders(mut graph: Json, name: &str, checkpoint: bool) -> Json {
    let g = graph.as_object_mut().unwrap();
    let (model, clip, vae) = if checkpoint {
        g.insert(
            "4".into(),
            json!({"class_type": "CheckpointLoaderSimple", "inputs": {
                "ckpt_name": format!("{name}.safetensors")}}),
        );
        (json!(["4", 0]), json!(["4", 1]), json!(["4", 2]))
    } else {
        g.insert(
            "11".into(),
            json!({"class_type": "DualCLIPLoader", "inputs": {
                "clip_name1": format!("{name}_t5xxl.safetensors"),
                "clip_name2": format!("{name}_clip_l.safetensors"), "type": "flux"}}),
        );
        g.insert(
            "10".into(),
            json!({"class_type": "VAELoader", "inputs": {"vae_name": format!("{name}_vae.safetensors")}}),
        );
        g.insert(
            "12".into(),
            json!({"class_type": "UNETLoader", "inputs": {
                "unet_name": format!("{name}.safetensors"), "weight_dtype": "default"}}),
        );
        (json!(["12", 0]), json!(["11", 0]), json!(["10", 0]))
    };
    for node in g.values_mut() {
        for v in node["inputs"].as_object_mut().unwrap().values_mut() {
            if v == &json!(["12", 0]) {
                *v = model.clone();
            } else if v == &json!(["11", 0]) {
                *v = clip.clone();
            } else if v == &json!(["10", 0]) {
                *v = vae.clone();
            }
        }
    }
    graph
}

/// ComfyUI's flux_dev_example / flux_dev_checkpoint_example graph at 64×48, 3 steps.
fn quickstart() -> Json {
    json!({
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "a red fox in the snow", "clip": ["11", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["10", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["8", 0]}},
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0],
            "sigmas": ["17", 0], "latent_image": ["27", 0]}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "BasicScheduler", "inputs": {
            "scheduler": "simple", "steps": 3, "denoise": 1.0, "model": ["30", 0]}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": ["30", 0], "conditioning": ["26", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "30": {"class_type": "ModelSamplingFlux", "inputs": {
            "max_shift": 1.15, "base_shift": 0.5, "width": 64, "height": 48, "model": ["12", 0]}}
    })
}

/// ComfyUI's flux_schnell example: KSampler, cfg 1, 4 steps, EmptyLatentImage.
fn schnell() -> Json {
    json!({
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "a lighthouse at dusk", "clip": ["11", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0, "model": ["12", 0], "positive": ["6", 0], "negative": ["6", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["10", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "schnell", "images": ["8", 0]}}
    })
}

#[test]
fn checkpoint_loader_gives_the_split_files_image_for_dev_and_schnell() {
    let (_d, env) = setup();
    for (name, graph) in [
        ("tiny_flux_dev_fp8", quickstart()),
        ("tiny_flux_schnell_fp8", schnell()),
    ] {
        let split = pixels(
            &env,
            &run(&env, &with_loaders(graph.clone(), name, false)).unwrap(),
        );
        let ck = pixels(
            &env,
            &run(&env, &with_loaders(graph.clone(), name, true)).unwrap(),
        );
        assert!(split.iter().any(|&v| v != split[0]), "{name}: a flat image");
        assert!(
            ck == split,
            "{name}: the checkpoint's image differs from the split files'"
        );
        // The prompt reaches the model through the checkpoint's text encoders.
        let mut other = with_loaders(graph, name, true);
        other["6"]["inputs"]["text"] = json!("a grey wolf in the rain");
        assert!(pixels(&env, &run(&env, &other).unwrap()) != ck, "{name}");
    }
}

#[test]
fn detection_parts_and_stored_dtypes() {
    let opts = LoadOptions::default();
    let ck = load_checkpoint_with(
        root().join(fx::TINY_FLUX_DEV_FP8_PATH),
        &Device::Cpu,
        DType::F32,
        &opts,
    )
    .unwrap();
    assert_eq!(ck.family, Family::Flux);
    assert!(ck.model.as_flux().is_some());
    assert!(matches!(ck.text, TextEncoders::Flux { .. }));
    assert_eq!(ck.vae.config().z_channels, 16);
    let w = &ck.weights;
    // The transformer and T5's Linear weights stay fp8; CLIP-L and the VAE fp16 (as stored).
    let dt = |k: &str| w.get(k).unwrap_or_else(|| panic!("{k}")).dtype();
    assert_eq!(dt("model.diffusion_model.img_in.weight"), DType::F8E4M3);
    assert_eq!(dt("model.diffusion_model.img_in.bias"), DType::F8E4M3);
    assert_eq!(
        dt("t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"),
        DType::F8E4M3
    );
    assert_eq!(dt("t5xxl.transformer.shared.weight"), DType::F16);
    assert_eq!(
        dt("clip_l.transformer.text_model.embeddings.token_embedding.weight"),
        DType::F16
    );
    assert_eq!(
        dt(&format!("{VAE_PREFIX}decoder.conv_in.weight")),
        DType::F16
    );
    assert!(!w
        .keys()
        .any(|k| k.starts_with("text_encoders.") || k.starts_with("vae.")));

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.safetensors");
    std::fs::write(&p, fx::tiny_flux_schnell_fp8_bytes()).unwrap();
    let ck = load_checkpoint_with(&p, &Device::Cpu, DType::F32, &opts).unwrap();
    assert_eq!(ck.family, Family::FluxSchnell);
}

#[test]
fn a_flux_checkpoint_without_a_part_is_a_clear_error() {
    let bytes = std::fs::read(root().join(fx::TINY_FLUX_DEV_FP8_PATH)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (drop, what) in [
        ("vae.", "without a VAE (missing vae.decoder.conv_in.weight)"),
        (
            "text_encoders.t5xxl.",
            "without a T5-XXL text encoder (missing \
             text_encoders.t5xxl.transformer.encoder.final_layer_norm.weight)",
        ),
        (
            "text_encoders.clip_l.",
            "without a CLIP-L text encoder (missing \
             text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight)",
        ),
    ] {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let views: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(drop))
            .collect();
        let p = dir.path().join("partial.safetensors");
        std::fs::write(&p, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
        let err = load_checkpoint_with(&p, &Device::Cpu, DType::F32, &LoadOptions::default())
            .err()
            .expect("an error")
            .to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.contains(&format!("Flux checkpoint {what}")), "{err}");
    }
}

#[test]
fn generator_reproduces_the_committed_flux_checkpoint() {
    let committed = std::fs::read(root().join(fx::TINY_FLUX_DEV_FP8_PATH)).unwrap();
    assert!(
        committed == fx::tiny_flux_dev_fp8_bytes(),
        "regenerate with `cargo run --bin gen_fixtures`"
    );
}
