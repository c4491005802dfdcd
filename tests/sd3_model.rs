//! comfyrs's MMDiT (SD3 medium, SD3.5 large with RMS QK-norm, SD3.5 medium = MMDiT-X)
//! against ComfyUI v0.3.64's own `mmdit.py`, on the tiny fixture files
//! (`fixtures/models/diffusion_models/tiny_{sd3_medium,sd35_large,sd35_medium}`; goldens in
//! tests/data/sd3/module.*, made by `scripts/goldens/gen_sd3_goldens.py`): the config
//! ComfyUI's `model_detection` reads from the keys, the forward pass (with and without the
//! pooled vector, and an odd latent size), and one denoised prediction through ComfyUI's
//! `model_base.SD3` (discrete flow, shift 3) against comfyrs's MODEL from UNETLoader's
//! loader.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::load_safetensors;
use comfyrs::models::component_files::load_diffusion_model;
use comfyrs::models::fixture as fx;
use comfyrs::models::mmdit::{Config, Mmdit, MmditInputs};
use comfyrs::models::nn::weights_vb;
use comfyrs::models::{Family, LatentFormat};
use comfyrs::node::types::Latent;
use comfyrs::nodes::sampling::run_sampler;
use comfyrs::nodes::sd_types::{model_payload, CondEntry, Conditioning};
use comfyrs::sampling::samplers::SamplerKind;
use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root().join("tests/data/sd3/module.safetensors"),
        &Device::Cpu,
    )
    .expect("tests/data/sd3/module.safetensors")
}

const VARIANTS: [(&str, &str); 3] = [
    ("sd3_medium", fx::TINY_SD3_MEDIUM_PATH),
    ("sd35_large", fx::TINY_SD35_LARGE_PATH),
    ("sd35_medium", fx::TINY_SD35_MEDIUM_PATH),
];

fn weights(path: &str) -> HashMap<String, Tensor> {
    load_safetensors(&root().join(path), &Device::Cpu, DType::F32).unwrap()
}

fn detect(w: &HashMap<String, Tensor>) -> Config {
    Config::detect(
        |k| w.get(k).map(|t| t.dims().to_vec()),
        &mut w.keys().map(|k| k.as_str()),
        "",
    )
    .unwrap()
}

fn model(path: &str) -> Mmdit {
    let w = weights(path);
    let cfg = detect(&w);
    Mmdit::new(weights_vb(w, DType::F32, &Device::Cpu), &cfg).unwrap()
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

#[test]
fn config_matches_comfyui_detection() {
    let meta: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/sd3/module.json")).unwrap(),
    )
    .unwrap();
    for (name, path) in VARIANTS {
        let cfg = detect(&weights(path));
        let m = &meta[name];
        assert_eq!(cfg.depth as u64, m["depth"].as_u64().unwrap(), "{name}");
        assert_eq!(cfg.in_channels as u64, m["in_channels"].as_u64().unwrap());
        assert_eq!(cfg.out_channels as u64, m["out_channels"].as_u64().unwrap());
        assert_eq!(cfg.patch_size as u64, m["patch_size"].as_u64().unwrap());
        assert_eq!(
            cfg.adm_in_channels.map(|v| v as u64),
            m["adm_in_channels"].as_u64()
        );
        assert_eq!(
            cfg.context_in.map(|v| v as u64),
            m["context_embedder_config"]["params"]["in_features"].as_u64()
        );
        assert_eq!(
            cfg.pos_embed_max_size as u64,
            m["pos_embed_max_size"].as_u64().unwrap()
        );
        assert_eq!(cfg.qk_norm, m["qk_norm"].as_str() == Some("rms"), "{name}");
        let layers: Vec<usize> = m["x_block_self_attn_layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(cfg.x_block_self_attn_layers, layers, "{name}");
    }
    assert_eq!(
        detect(&weights(fx::TINY_SD3_MEDIUM_PATH)).variant(),
        "SD3 medium"
    );
    assert_eq!(
        detect(&weights(fx::TINY_SD35_LARGE_PATH)).variant(),
        "SD3.5 large"
    );
    assert_eq!(
        detect(&weights(fx::TINY_SD35_MEDIUM_PATH)).variant(),
        "SD3.5 medium (MMDiT-X)"
    );
}

#[test]
fn forward_matches_comfyui_for_every_variant() {
    let g = goldens();
    for (name, path) in VARIANTS {
        let m = model(path);
        let run = |x: &Tensor, n: usize, y: bool| {
            let yv = g["y"].narrow(0, 0, n).unwrap();
            m.forward(&MmditInputs {
                x,
                timesteps: &g["t"].narrow(0, 0, n).unwrap(),
                context: &g["context"].narrow(0, 0, n).unwrap(),
                y: y.then_some(&yv),
                skip_blocks: &[],
                control: None,
            })
            .unwrap()
        };
        check(
            name,
            &run(&g["x"], 2, true),
            &g[&format!("{name}.out")],
            1e-5,
        );
        check(
            &format!("{name} without y"),
            &run(&g["x"], 2, false),
            &g[&format!("{name}.noy")],
            1e-5,
        );
        let odd = run(&g["x_odd"], 1, true);
        assert_eq!(odd.dims(), &[1, 16, 5, 7]);
        check(
            &format!("{name} odd 5x7"),
            &odd,
            &g[&format!("{name}.odd")],
            1e-5,
        );
    }
}

#[test]
fn variants_differ_where_their_layers_differ() {
    // The goldens are not all the same network: QK-norm and MMDiT-X change the output.
    let g = goldens();
    let d = |a: &str, b: &str| {
        (&g[a] - &g[b])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(d("sd3_medium.out", "sd35_large.out") > 1e-3);
    assert!(d("sd35_large.out", "sd35_medium.out") > 1e-3);
    assert!(d("sd35_medium.out", "sd35_medium.noy") > 1e-3);
}

#[test]
fn position_table_bounds_are_a_clear_error() {
    let m = model(fx::TINY_SD3_MEDIUM_PATH);
    // 34 latent rows = 17 patches > the 16-patch table.
    let x = Tensor::zeros((1, 16, 34, 8), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    let ctx = Tensor::zeros((1, 4, 4096), DType::F32, &Device::Cpu).unwrap();
    let e = m
        .forward(&MmditInputs {
            x: &x,
            timesteps: &t,
            context: &ctx,
            y: None,
            skip_blocks: &[],
            control: None,
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("17x4 patches") && e.contains("at most 16x16 patches (256x256 pixels)"),
        "{e}"
    );
}

#[test]
fn one_step_matches_comfyui_model_base_sd3() {
    let g = goldens();
    let file = load_diffusion_model(
        &root().join(fx::TINY_SD35_MEDIUM_PATH),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(file.family, Family::Sd3);
    let model = model_payload(
        file.model.clone(),
        &file.weights,
        file.family,
        file.prediction,
    );
    // One euler step from σ = 0.6 to 0 on an all-zero latent returns the denoised
    // prediction at x = 0.6·noise (CONST noise scaling), in unscaled latent space.
    let x = g["x"].narrow(0, 0, 1).unwrap();
    let noise = (&x / 0.6).unwrap();
    let ctx = g["context"].narrow(0, 0, 1).unwrap();
    let y = g["y"].narrow(0, 0, 1).unwrap();
    let positive = Conditioning(vec![CondEntry::new(ctx, Some(y))]);
    let latent = Latent {
        samples: x.zeros_like().unwrap(),
        noise_mask: None,
        batch_index: None,
    };
    let (out, _) = run_sampler(
        None,
        &model,
        &positive,
        None,
        1.0,
        SamplerKind::Euler,
        &[0.6, 0.0],
        &latent,
        &noise,
        0,
    )
    .unwrap();
    let expected = LatentFormat::sd3()
        .process_out(&g["step.denoised"])
        .unwrap();
    check("one step", &out, &expected, 2e-5);
}

#[test]
fn scaled_fp8_file_matches_comfyui_and_stays_fp8() {
    // The `sd3.5_large_fp8_scaled` layout through UNETLoader's loader: Linear weights stay
    // e4m3fn in memory with their f32 scale_weight, ComfyUI's scaled-fp8 rule per Linear.
    let g = goldens();
    let file = load_diffusion_model(
        &root().join(fx::TINY_SD35_LARGE_FP8_SCALED_PATH),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(file.family, Family::Sd3);
    let qkv = &file.weights["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"];
    assert_eq!(qkv.dtype(), DType::F8E4M3);
    let m = file.model.as_mmdit().unwrap();
    assert_eq!(m.config().variant(), "SD3.5 large");
    let out = m
        .forward(&MmditInputs {
            x: &g["x"],
            timesteps: &g["t"],
            context: &g["context"],
            y: Some(&g["y"]),
            skip_blocks: &[],
            control: None,
        })
        .unwrap();
    check("fp8 scaled", &out, &g["sd35_large_fp8_scaled.out"], 1e-5);
    // Quantisation is visible: not the fp16 file's output.
    let d = (&out - &g["sd35_large.out"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 1e-3, "{d}");
}

#[test]
fn generator_reproduces_committed_sd3_fixtures() {
    type Writer = fn() -> Vec<u8>;
    let files: [(&str, Writer); 6] = [
        (fx::TINY_SD3_MEDIUM_PATH, fx::tiny_sd3_medium_bytes),
        (fx::TINY_SD35_MEDIUM_PATH, fx::tiny_sd35_medium_bytes),
        (fx::TINY_SD35_LARGE_PATH, fx::tiny_sd35_large_bytes),
        (
            fx::TINY_SD35_LARGE_FP8_SCALED_PATH,
            fx::tiny_sd35_large_fp8_scaled_bytes,
        ),
        (fx::TINY_CLIP_G_PATH, fx::tiny_clip_g_bytes),
        (fx::TINY_SD35_CKPT_PATH, fx::tiny_sd35_checkpoint_bytes),
    ];
    for (path, bytes) in files {
        let committed = std::fs::read(root().join(path)).unwrap();
        assert!(
            committed == bytes(),
            "{path} differs from the generator's output"
        );
    }
}
