//! Every name of KSampler's `sampler_name` list runs through KSampler on the tiny SD1.5
//! fixture (the numerics of each are pinned by the toy-denoiser goldens,
//! `sampling_golden*.rs`); the CFG++ samplers also run under BasicGuider (no negative: their
//! uncond is zeros, as in ComfyUI) through SamplerCustomAdvanced.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::sampling::samplers::SamplerKind;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

fn base() -> Json {
    json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    })
}

#[test]
fn every_sampler_name_runs_through_ksampler_and_custom_sampling() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let mut p = base();
    let mut previews = Vec::new();
    for (k, name) in SamplerKind::NAMES.iter().enumerate() {
        let (ks, dec, prev) = (100 + 3 * k, 101 + 3 * k, 102 + 3 * k);
        p[ks.to_string()] = json!({"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 4, "cfg": 2.0, "sampler_name": name,
            "scheduler": "karras", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}});
        p[dec.to_string()] = json!({"class_type": "VAEDecode", "inputs": {"samples": [ks.to_string(), 0], "vae": ["1", 2]}});
        p[prev.to_string()] =
            json!({"class_type": "PreviewImage", "inputs": {"images": [dec.to_string(), 0]}});
        previews.push((name, prev.to_string()));
    }
    // CFG++ under BasicGuider.
    p["20"] =
        json!({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "res_multistep_cfg_pp"}});
    p["21"] = json!({"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 4, "denoise": 1.0}});
    p["22"] = json!({"class_type": "RandomNoise", "inputs": {"noise_seed": 3}});
    p["23"] = json!({"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["2", 0]}});
    p["24"] = json!({"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["22", 0], "guider": ["23", 0], "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["4", 0]}});
    p["25"] = json!({"class_type": "VAEDecode", "inputs": {"samples": ["24", 0], "vae": ["1", 2]}});
    p["26"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["25", 0]}});
    previews.push((&"res_multistep_cfg_pp (BasicGuider)", "26".into()));

    let wf = parse_workflow(&p.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), &reg, &env, None).unwrap();
    let out = exec.run("all", &valid, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    for (name, id) in previews {
        assert_eq!(
            out.outputs[&id]["images"].as_array().map(|a| a.len()),
            Some(1),
            "{name}"
        );
    }
}
