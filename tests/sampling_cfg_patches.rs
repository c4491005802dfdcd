//! RescaleCFG, CFGNorm and CFGZeroStar: their `/object_info` is ComfyUI's
//! (`tests/data/object_info_guidance.json`), their CFG combine equals ComfyUI's
//! `comfy.samplers.cfg_function` with the patch functions the nodes set
//! (`cfg_patches` of `tests/data/custom_sampling_golden.json`, made by
//! `scripts/goldens/gen_custom_sampling_goldens.py`; within 2e-6 of the output's scale: the
//! per-sample std / norm reductions add in another order than torch's), and on the tiny SD1.5
//! fixture the patched MODEL changes what KSampler produces.

use candle_core::{Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::sampling::cfg_patches::{CfgFunction, CfgPatches, PostCfg};
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;

fn golden() -> Json {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/custom_sampling_golden.json"
    );
    let g: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    g["cfg_patches"].clone()
}

fn hexes(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
        .collect()
}

fn patches(name: &str) -> CfgPatches {
    let mut p = CfgPatches::default();
    for part in name.split('+') {
        let (kind, arg) = part.split_once('/').unwrap_or((part, ""));
        match kind {
            "RescaleCFG" => {
                p.cfg_function = Some(CfgFunction::RescaleCfg {
                    multiplier: arg.parse().unwrap(),
                })
            }
            "CFGNorm" => p.post_cfg.push(PostCfg::CfgNorm {
                strength: arg.parse().unwrap(),
            }),
            "CFGZeroStar" => p.post_cfg.push(PostCfg::CfgZeroStar),
            other => panic!("{other}"),
        }
    }
    p
}

#[test]
fn cfg_combine_matches_comfyui() {
    let g = golden();
    let shape: Vec<usize> = g["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let t = |k: &str| Tensor::from_vec(hexes(&g[k]), shape.as_slice(), &Device::Cpu).unwrap();
    let (cond, uncond, x) = (t("cond"), t("uncond"), t("x"));
    let mut n = 0;
    for (key, want) in g.as_object().unwrap() {
        if ["cond", "uncond", "x", "shape"].contains(&key.as_str()) {
            continue;
        }
        // "<patches>/<cfg>/<sigma>"
        let mut parts: Vec<&str> = key.rsplitn(3, '/').collect();
        parts.reverse();
        let (name, cfg, sigma) = (
            parts[0],
            parts[1].parse::<f64>().unwrap(),
            parts[2].parse::<f64>().unwrap(),
        );
        let out = patches(name)
            .combine(&cond, &uncond, cfg, &x, sigma as f32 as f64)
            .unwrap();
        let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = hexes(want);
        let scale = want.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        assert!(err <= 2e-6 * scale, "{key}: {:e} of scale", err / scale);
        n += 1;
    }
    assert_eq!(n, 28);
}

#[test]
fn object_info_matches_comfyui() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/object_info_guidance.json"
    );
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let reg = Registry::with_builtin_nodes();
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 3);
    for (class, info) in classes {
        let ours = reg.schema(class).unwrap().object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}

#[test]
fn patched_models_change_ksampler_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env = Arc::new(Environment::new(paths));
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let mut p = json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "r": {"class_type": "RescaleCFG", "inputs": {"model": ["1", 0], "multiplier": 0.7}},
        "n": {"class_type": "CFGNorm", "inputs": {"model": ["1", 0], "strength": 1.0}},
        "z": {"class_type": "CFGZeroStar", "inputs": {"model": ["1", 0]}},
    });
    let mut ids = Vec::new();
    for (k, model) in ["1", "r", "n", "z"].iter().enumerate() {
        p[format!("k{k}")] = json!({"class_type": "KSampler", "inputs": {"model": [model, 0],
            "seed": 3, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}});
        p[format!("d{k}")] = json!({"class_type": "VAEDecode", "inputs": {"samples": [format!("k{k}"), 0], "vae": ["1", 2]}});
        p[format!("s{k}")] = json!({"class_type": "SaveImage", "inputs": {"images": [format!("d{k}"), 0], "filename_prefix": format!("p{k}")}});
        ids.push(format!("s{k}"));
    }
    let wf = parse_workflow(&p.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), &reg, &env, None).unwrap();
    let out = exec.run("t", &valid, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let pixels: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let name = out.outputs[id]["images"][0]["filename"].as_str().unwrap();
            image::open(env.paths.output.join(name))
                .unwrap()
                .to_rgb8()
                .into_raw()
        })
        .collect();
    for k in 1..4 {
        assert_ne!(pixels[0], pixels[k], "patch {k} left the output unchanged");
    }
}
