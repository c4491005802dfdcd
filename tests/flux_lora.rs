//! LoRA on Flux against ComfyUI's own functions (goldens from
//! `scripts/goldens/gen_flux_lora_goldens.py`, data in tests/data/flux_lora): the key map of
//! the tiny Flux (`model_lora_keys_unet` with `flux_to_diffusers`), the patched weights of
//! LoRAs in every key format (kohya, ComfyUI native, diffusers/PEFT as ai-toolkit saves them,
//! OneTrainer/LyCORIS, XLabs) on the f32 model and on the fp8-weight model (ComfyUI's seeded
//! stochastic rounding back to fp8), and the rounding itself with two seeds; then LoraLoader
//! and LoraLoaderModelOnly on a Flux MODEL in a graph.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions, WeightMap};
use comfyrs::models::fixture as fx;
use comfyrs::models::lora::fp8_round::{stochastic_round_e4m3fn, string_to_seed};
use comfyrs::models::lora::patched::{patch_weights_stored, PatchedStorage};
use comfyrs::models::lora::{load_lora, read_lora, KeyMap, PatchEntry};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data/flux_lora").join(name)
}

fn base() -> &'static WeightMap {
    static W: OnceLock<WeightMap> = OnceLock::new();
    W.get_or_init(|| {
        let ck = load_checkpoint_with(
            root().join(fx::TINY_FLUX_DEV_FP8_PATH),
            &Device::Cpu,
            DType::F32,
            &LoadOptions::default(),
        )
        .unwrap();
        (*ck.weights).clone()
    })
}

fn goldens() -> &'static HashMap<String, Tensor> {
    static G: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    G.get_or_init(|| {
        candle_core::safetensors::load(data("goldens.safetensors"), &Device::Cpu).unwrap()
    })
}

fn meta() -> Json {
    serde_json::from_str(&std::fs::read_to_string(data("goldens.json")).unwrap()).unwrap()
}

/// ComfyUI's key `diffusion_model.X` is our `model.diffusion_model.X`.
fn ours(comfy: &str) -> String {
    format!("model.{comfy}")
}

const FORMATS: [&str; 5] = ["kohya", "native", "diffusers", "misc", "xlabs"];

#[test]
fn key_map_matches_comfyui_model_lora_keys_unet() {
    let comfy: HashMap<String, Json> =
        serde_json::from_str(&std::fs::read_to_string(data("key_map.json")).unwrap()).unwrap();
    let map = KeyMap::for_weights(base(), true, false).unwrap();
    let mut missing = Vec::new();
    for (k, v) in &comfy {
        let Some(t) = map.target(k) else {
            missing.push(k.clone());
            continue;
        };
        assert_eq!(t.key, ours(v[0].as_str().unwrap()), "{k}");
        let slice = v[1].as_array().map(|a| {
            let n: Vec<usize> = a.iter().map(|x| x.as_u64().unwrap() as usize).collect();
            (n[0], n[1], n[2])
        });
        assert_eq!(t.slice, slice, "{k}");
        assert_eq!(
            t.swap_halves,
            v[2].as_str() == Some("swap_scale_shift"),
            "{k}"
        );
    }
    assert!(missing.is_empty(), "not in our map: {missing:?}");
    let extra: Vec<&str> = map
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !comfy.contains_key(*k))
        .collect();
    assert!(extra.is_empty(), "not in ComfyUI's map: {extra:?}");
    assert!(comfy.len() > 150, "{}", comfy.len());
}

fn patched(format: &str, storage: PatchedStorage, strength: f64) -> WeightMap {
    let file = read_lora(&data(&format!("lora_{format}.safetensors"))).unwrap();
    let map = KeyMap::for_weights(base(), true, false).unwrap();
    let loaded = load_lora(&file, &map, base()).unwrap();
    assert!(
        loaded.shape_mismatches.is_empty(),
        "{:?}",
        loaded.shape_mismatches
    );
    let entry = PatchEntry::lora(Arc::new(loaded), format.into(), strength);
    patch_weights_stored(base(), &[entry], "model.diffusion_model.", storage).unwrap()
}

fn expected_keys(format: &str) -> Vec<String> {
    meta()["patched"][format]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| ours(k.as_str().unwrap()))
        .collect()
}

#[test]
fn patched_weights_match_comfyui_on_the_f32_model() {
    for format in FORMATS {
        let out = patched(format, PatchedStorage::Dtype(DType::F32), 0.7);
        let mut keys: Vec<String> = out.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, expected_keys(format), "{format}");
        for (k, got) in &out {
            let want = &goldens()[&format!("f32.{format}.{}", k.strip_prefix("model.").unwrap())];
            assert_eq!(got.dtype(), DType::F32);
            let d = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 2e-6, "{format} {k}: max |Δ| {d}");
            let unchanged = (got - base()[k].to_dtype(DType::F32).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(unchanged > 1e-4, "{format} {k} did not change");
        }
    }
}

fn bytes(t: &Tensor) -> Vec<u8> {
    match t.dtype() {
        DType::U8 => t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
        // fp8 → f32 → fp8 is exact.
        DType::F8E4M3 => t
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(comfyrs::models::fp8::encode_e4m3fn)
            .collect(),
        d => panic!("{d:?}"),
    }
}

#[test]
fn fp8_weights_are_stochastically_rounded_as_comfyui_does() {
    let (mut total, mut differ) = (0usize, 0usize);
    for format in FORMATS {
        let out = patched(format, PatchedStorage::KeepFp8(DType::F32), 1.0);
        assert_eq!(out.len(), expected_keys(format).len(), "{format}");
        for (k, got) in &out {
            assert_eq!(got.dtype(), DType::F8E4M3, "{k}");
            let want =
                bytes(&goldens()[&format!("fp8.{format}.{}", k.strip_prefix("model.").unwrap())]);
            let got = bytes(got);
            total += got.len();
            differ += got.iter().zip(&want).filter(|(a, b)| a != b).count();
        }
    }
    // Our f32 sums can differ from torch's in the last bit (another summation order), which
    // moves a value across an fp16 rounding boundary now and then; everything else is exact.
    eprintln!("{differ} of {total} fp8 values differ from ComfyUI's");
    assert!(total > 50_000, "{total}");
    assert!(
        differ * 1000 < total,
        "{differ} of {total} fp8 values differ"
    );
}

#[test]
fn stochastic_rounding_matches_comfyui_for_two_seeds() {
    let m = meta();
    let input: Vec<f32> = goldens()["round.input"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        m["seeds"]["A"].as_u64().unwrap() as u32,
        string_to_seed("diffusion_model.double_blocks.0.img_attn.qkv.weight")
    );
    for name in ["A", "B"] {
        let seed = m["seeds"][name].as_u64().unwrap() as u32;
        let want = bytes(&goldens()[&format!("round.seed{name}")]);
        let got = stochastic_round_e4m3fn(&input, seed);
        let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
        assert!(
            differ.is_empty(),
            "seed {name}: {} differ, first at {:?}",
            differ.len(),
            differ.first().map(|&i| (input[i], got[i], want[i]))
        );
    }
}

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (sub, src) in [
        ("checkpoints", root().join(fx::TINY_FLUX_DEV_FP8_PATH)),
        ("loras", data("lora_kohya.safetensors")),
        ("loras", data("lora_diffusers.safetensors")),
        ("loras", data("lora_xlabs.safetensors")),
        (
            "loras",
            root().join("fixtures/models/checkpoints/tiny_sd15.safetensors"),
        ),
    ] {
        std::fs::create_dir_all(models.join(sub)).unwrap();
        std::fs::copy(&src, models.join(sub).join(src.file_name().unwrap())).unwrap();
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

/// flux_dev_checkpoint_example's shape at 64×48, 2 steps; `lora` inserts a LoRA loader
/// node "50" between the checkpoint and its users.
fn graph(lora: Option<Json>) -> Json {
    let mut g = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_flux_dev_fp8.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 3, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0, "model": ["4", 0], "positive": ["26", 0], "negative": ["26", 0],
            "latent_image": ["27", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "fl", "images": ["8", 0]}}
    });
    if let Some(node) = lora {
        let two = node["class_type"] == "LoraLoader";
        g["50"] = node;
        g["3"]["inputs"]["model"] = json!(["50", 0]);
        if two {
            g["6"]["inputs"]["clip"] = json!(["50", 1]);
        }
    }
    g
}

fn lora_node(name: &str, s_model: f64, s_clip: Option<f64>) -> Json {
    match s_clip {
        Some(c) => json!({"class_type": "LoraLoader", "inputs": {
            "model": ["4", 0], "clip": ["4", 1], "lora_name": name,
            "strength_model": s_model, "strength_clip": c}}),
        None => json!({"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["4", 0], "lora_name": name, "strength_model": s_model}}),
    }
}

#[test]
fn lora_loaders_patch_a_flux_model_and_its_clip() {
    let (_d, env) = setup();
    let base = pixels(&env, &run(&env, &graph(None)).unwrap());
    let mut seen = vec![base.clone()];
    for name in [
        "lora_kohya.safetensors",
        "lora_diffusers.safetensors",
        "lora_xlabs.safetensors",
    ] {
        let px = pixels(
            &env,
            &run(&env, &graph(Some(lora_node(name, 1.0, None)))).unwrap(),
        );
        assert!(!seen.contains(&px), "{name} changed nothing");
        seen.push(px);
        // Strength 0 is the unpatched model.
        let zero = pixels(
            &env,
            &run(&env, &graph(Some(lora_node(name, 0.0, None)))).unwrap(),
        );
        assert_eq!(zero, base, "{name} at strength 0");
    }
    // The kohya file's CLIP-L key patches the text encoder: the CLIP strength matters.
    let a = pixels(
        &env,
        &run(
            &env,
            &graph(Some(lora_node("lora_kohya.safetensors", 1.0, Some(0.0)))),
        )
        .unwrap(),
    );
    let b = pixels(
        &env,
        &run(
            &env,
            &graph(Some(lora_node("lora_kohya.safetensors", 1.0, Some(3.0)))),
        )
        .unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(
        a, seen[1],
        "LoraLoader at CLIP strength 0 = LoraLoaderModelOnly"
    );
}

#[test]
fn an_sd_file_as_a_flux_lora_is_an_error_on_lora_name() {
    let (_d, env) = setup();
    let err = run(
        &env,
        &graph(Some(lora_node("tiny_sd15.safetensors", 1.0, None))),
    )
    .unwrap_err();
    assert!(err.contains("lora_name"), "{err}");
    assert!(err.contains("not a LoRA"), "{err}");
}

#[test]
fn a_bfl_control_lora_is_converted_as_comfyui_does() {
    // `convert_lora_bfl_control`: `diffusion_model.` keys, `.lora_B.bias` → `.diff_b`, norm
    // scales → `.set_weight`, and img_in's `reshape_weight` [lora_B rows, lora_A columns].
    // (Applying one is checked against ComfyUI in tests/flux_variants.rs.)
    let dir = tempfile::tempdir().unwrap();
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    let t: HashMap<String, Tensor> = [
        ("img_in.lora_A.weight".to_string(), z(&[4, 128])),
        ("img_in.lora_B.weight".to_string(), z(&[64, 4])),
        ("img_in.lora_B.bias".to_string(), z(&[64])),
        ("single_blocks.0.norm.key_norm.scale".to_string(), z(&[16])),
    ]
    .into();
    let p = dir.path().join("canny_lora.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let file = read_lora(&p).unwrap();
    let mut keys: Vec<&str> = file.tensors.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "diffusion_model.img_in.diff_b",
            "diffusion_model.img_in.lora_A.weight",
            "diffusion_model.img_in.lora_B.weight",
            "diffusion_model.img_in.reshape_weight",
            "diffusion_model.single_blocks.0.norm.key_norm.scale.set_weight",
        ]
    );
    let r = file.tensors["diffusion_model.img_in.reshape_weight"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(r, [64.0, 128.0]);
}
