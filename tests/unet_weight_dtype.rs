//! UNETLoader's `weight_dtype` (fp8 weight storage) against ComfyUI's own UNet built the way
//! `load_diffusion_model_state_dict` builds it with `model_options["dtype"]` = fp8
//! (`manual_cast` ops, every parameter fp8, compute f32): tests/data/weight_dtype, made by
//! `scripts/goldens/gen_weight_dtype_goldens.py` from the tiny SDXL fixture.
//!
//! * the stored weights are ComfyUI's fp8 values bit for bit (torch's `.to(float8)`),
//!   biases and norms included;
//! * the UNet's output matches ComfyUI's for default / fp8_e4m3fn / fp8_e4m3fn_fast /
//!   fp8_e5m2 (and fp8 really changes it: the default output is far from the fp8 ones);
//! * fp8 storage (e4m3fn and e5m2) holds half the bytes of the file's fp16, and e5m2's U8
//!   bits compute exactly what the exact f16 of each e5m2 value computed before;
//! * the node: UNETLoader with each choice, its cache keeps the variants apart, a LoRA on an
//!   fp8-stored model goes back to fp8 with ComfyUI's stochastic rounding.

use candle_core::{DType, Device, Tensor};
use comfyrs::models::component_files::{load_diffusion_model_with, DiffusionModelFile};
use comfyrs::models::diffusion::ModelInputs;
use comfyrs::models::fixture::TINY_SDXL_PATH;
use comfyrs::models::fp8::Fp8Kind;
use comfyrs::models::nn::widen;
use comfyrs::models::unet::UNET_PREFIX;
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root().join("tests/data/weight_dtype/tiny_sdxl_unet.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn load(kind: Option<Fp8Kind>) -> DiffusionModelFile {
    load_diffusion_model_with(&root().join(TINY_SDXL_PATH), &Device::Cpu, DType::F32, kind).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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
}

fn forward(file: &DiffusionModelFile, g: &HashMap<String, Tensor>) -> Tensor {
    file.model
        .forward(&ModelInputs {
            x: &g["x"],
            timesteps: &g["timesteps"],
            context: &g["context"],
            y: Some(&g["y"]),
            guidance: None,
            ref_latents: &[],
            ref_method: Default::default(),
            control: None,
            unet: Default::default(),
            skip_blocks: &[],
            skip_single_blocks: &[],
        })
        .unwrap()
}

const CASES: [(&str, Option<Fp8Kind>); 4] = [
    ("default", None),
    ("fp8_e4m3fn", Some(Fp8Kind::E4m3fn)),
    ("fp8_e4m3fn_fast", Some(Fp8Kind::E4m3fn)),
    ("fp8_e5m2", Some(Fp8Kind::E5m2)),
];

#[test]
fn stored_weights_are_comfyuis_fp8_values() {
    let g = goldens();
    for (name, kind) in CASES {
        let file = load(kind);
        let mut checked = 0;
        for (k, want) in g.iter() {
            let Some(key) = k.strip_prefix(&format!("w.{name}.")) else {
                continue;
            };
            let got = &file.weights[&format!("{UNET_PREFIX}{key}")];
            let expect_dtype = match kind {
                None => DType::F16,
                Some(Fp8Kind::E4m3fn) => DType::F8E4M3,
                // candle has no e5m2 dtype: its bits, one byte per weight.
                Some(Fp8Kind::E5m2) => DType::U8,
            };
            assert_eq!(got.dtype(), expect_dtype, "{name} {key}");
            let got: Vec<f32> = widen(got, DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits(),
                    "{name} {key}[{i}]: {a} vs ComfyUI's {b}"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 6, "{name}");
        // Every floating weight of the UNet is in the chosen storage (ComfyUI: every parameter).
        if let Some(kind) = kind {
            for (k, t) in file.weights.iter() {
                match kind {
                    Fp8Kind::E4m3fn => assert_eq!(t.dtype(), DType::F8E4M3, "{k}"),
                    Fp8Kind::E5m2 => assert_eq!(t.dtype(), DType::U8, "{k}"),
                }
            }
        }
    }
}

#[test]
fn unet_output_matches_comfyui_for_each_weight_dtype() {
    let g = goldens();
    let default_out = &g["out.default"];
    for (name, kind) in CASES {
        let file = load(kind);
        let out = forward(&file, &g);
        let want = &g[&format!("out.{name}")];
        let d = max_diff(&out, want);
        assert!(d < 2e-4, "{name}: max |Δ| {d} against ComfyUI");
        if kind.is_some() {
            // The rounding matters at this size: far above the tolerance.
            let moved = max_diff(want, default_out);
            assert!(
                moved > 1e-2,
                "{name}: ComfyUI's fp8 output moved only {moved}"
            );
        }
    }
}

#[test]
fn fp8_storage_halves_the_weight_bytes() {
    let f16 = load(None);
    let e4m3 = load(Some(Fp8Kind::E4m3fn));
    let e5m2 = load(Some(Fp8Kind::E5m2));
    let params: usize = f16.weights.values().map(|t| t.elem_count()).sum();
    assert!(params > 100_000);
    assert_eq!(f16.weight_bytes(), 2 * params);
    assert_eq!(e4m3.weight_bytes(), params);
    // e5m2 as its U8 bits (candle has no e5m2 dtype): one byte per weight too.
    assert_eq!(e5m2.weight_bytes(), params);
}

/// e5m2 used to be held as the exact f16 of each value (two bytes per weight); its U8 bits,
/// decoded per operation, give the very same UNet output, and so does a LoRA-free rebuild of
/// the f16 map through the loader's layers (widened per op) against one widened at load.
#[test]
fn e5m2_bits_compute_exactly_what_its_f16_values_did() {
    let g = goldens();
    let file = load(Some(Fp8Kind::E5m2));
    let as_f16: HashMap<String, Tensor> = file
        .weights
        .iter()
        .map(|(k, t)| {
            assert_eq!(t.dtype(), DType::U8, "{k}");
            let bits: Vec<u8> = t.flatten_all().unwrap().to_vec1().unwrap();
            let halves: Vec<half::f16> = bits
                .iter()
                .map(|&b| half::f16::from_bits((b as u16) << 8))
                .collect();
            (
                k.clone(),
                Tensor::from_vec(halves, t.dims(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let as_f32: HashMap<String, Tensor> = as_f16
        .iter()
        .map(|(k, t)| (k.clone(), t.to_dtype(DType::F32).unwrap()))
        .collect();
    let out = forward(&file, &g);
    for map in [as_f16, as_f32] {
        let unet = comfyrs::models::Unet::from_weights(&map, UNET_PREFIX, DType::F32, &Device::Cpu)
            .unwrap();
        let want = unet
            .forward(&g["x"], &g["timesteps"], &g["context"], Some(&g["y"]))
            .unwrap();
        assert_eq!(max_diff(&out, &want), 0.0);
    }
}

#[test]
fn flux_output_matches_comfyui_for_each_weight_dtype() {
    let g = candle_core::safetensors::load(
        root().join("tests/data/weight_dtype/tiny_flux.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let default_out = &g["out.default"];
    for (name, kind) in [
        ("default", None),
        ("fp8_e4m3fn", Some(Fp8Kind::E4m3fn)),
        ("fp8_e5m2", Some(Fp8Kind::E5m2)),
    ] {
        let file = load_diffusion_model_with(
            &root().join("tests/data/flux/tiny_flux.safetensors"),
            &Device::Cpu,
            DType::F32,
            kind,
        )
        .unwrap();
        assert_eq!(file.family, comfyrs::models::Family::Flux);
        let out = file
            .model
            .forward(&ModelInputs {
                x: &g["x"],
                timesteps: &g["timesteps"],
                context: &g["context"],
                y: Some(&g["y"]),
                guidance: Some(&g["guidance"]),
                ref_latents: &[],
                ref_method: Default::default(),
                control: None,
                unet: Default::default(),
                skip_blocks: &[],
                skip_single_blocks: &[],
            })
            .unwrap();
        let want = &g[&format!("out.{name}")];
        let d = max_diff(&out, want);
        assert!(d < 2e-4, "{name}: max |Δ| {d} against ComfyUI");
        if kind.is_some() {
            let moved = max_diff(want, default_out);
            assert!(
                moved > 1e-2,
                "{name}: ComfyUI's fp8 output moved only {moved}"
            );
            let one_byte = match kind {
                Some(Fp8Kind::E4m3fn) => DType::F8E4M3,
                _ => DType::U8,
            };
            assert!(file.weights.values().all(|t| t.dtype() == one_byte));
        }
    }
}

#[test]
fn stochastic_rounding_matches_comfyui_for_both_formats() {
    use comfyrs::models::lora::fp8_round::{stochastic_round_tensor_as, string_to_seed};
    let g = candle_core::safetensors::load(
        root().join("tests/data/weight_dtype/stochastic_rounding.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let seed = string_to_seed("diffusion_model.input_blocks.1.0.in_layers.2.weight");
    let want_seed = g["seed"].to_vec1::<i64>().unwrap()[0];
    assert_eq!(seed as i64, want_seed);
    for (name, kind) in [("e4m3fn", Fp8Kind::E4m3fn), ("e5m2", Fp8Kind::E5m2)] {
        let got = stochastic_round_tensor_as(kind, &g["value"], seed).unwrap();
        // One byte per value: e4m3fn as F8E4M3, e5m2 as its U8 bits.
        assert_eq!(got.dtype().size_in_bytes(), 1, "{name}");
        let got: Vec<f32> = widen(&got, DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = g[&format!("sr.{name}")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            bad,
            0,
            "{name}: {bad} of {} values differ from ComfyUI's",
            want.len()
        );
    }
}

mod node {
    use super::*;
    use comfyrs::env::{Environment, Paths};
    use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
    use comfyrs::node::Registry;
    use comfyrs::prompt::prepare;
    use comfyrs::workflow::{parse_workflow, Overrides};
    use serde_json::{json, Value as Json};
    use std::path::Path;
    use std::sync::Arc;

    /// A models root with tiny_sdxl as a checkpoint and (the same file) as a diffusion model.
    fn setup() -> (tempfile::TempDir, Arc<Environment>) {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let name = Path::new(TINY_SDXL_PATH).file_name().unwrap();
        for d in ["checkpoints", "diffusion_models"] {
            std::fs::create_dir_all(models.join(d)).unwrap();
            std::fs::copy(root().join(TINY_SDXL_PATH), models.join(d).join(name)).unwrap();
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

    /// txt2img at 64² with the MODEL from UNETLoader (`weight_dtype`), CLIP/VAE from the
    /// checkpoint.
    fn txt2img(weight_dtype: &str) -> Json {
        json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}},
            "12": {"class_type": "UNETLoader", "inputs": {
                "unet_name": "tiny_sdxl.safetensors", "weight_dtype": weight_dtype}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "3": {"class_type": "KSampler", "inputs": {
                "seed": 42, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0, "model": ["12", 0], "positive": ["6", 0], "negative": ["7", 0],
                "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "wd", "images": ["8", 0]}}
        })
    }

    #[test]
    fn unet_loader_honours_weight_dtype() {
        let (_d, env) = setup();
        let default = pixels(&env, &run(&env, &txt2img("default")).unwrap());
        // The checkpoint's own MODEL gives the same picture as UNETLoader's default.
        let mut ck = txt2img("default");
        ck["3"]["inputs"]["model"] = json!(["4", 0]);
        assert_eq!(pixels(&env, &run(&env, &ck).unwrap()), default);
        let e4m3 = pixels(&env, &run(&env, &txt2img("fp8_e4m3fn")).unwrap());
        let fast = pixels(&env, &run(&env, &txt2img("fp8_e4m3fn_fast")).unwrap());
        let e5m2 = pixels(&env, &run(&env, &txt2img("fp8_e5m2")).unwrap());
        // On the CPU `_fast` computes exactly as fp8_e4m3fn (no fp8 matmul, as in ComfyUI).
        assert_eq!(e4m3, fast);
        // fp8 storage changes the picture, and the two formats differently (the cache keeps
        // each variant of the file apart).
        assert_ne!(e4m3, default);
        assert_ne!(e5m2, default);
        assert_ne!(e5m2, e4m3);
        let err = run(&env, &txt2img("fp8_e3m4")).unwrap_err();
        assert!(
            err.contains("weight_dtype") && err.contains("fp8_e3m4"),
            "{err}"
        );
    }
}
