//! LoRA on SD3/SD3.5 (MMDiT) against ComfyUI's own functions (goldens from
//! `scripts/goldens/gen_sd3_lora_goldens.py`, data in tests/data/sd3_lora): the key map of
//! the tiny SD3.5-medium MMDiT (`model_lora_keys_unet`'s SD3 branch with
//! `mmdit_to_diffusers`), and the patched weights of LoRAs in every key form ComfyUI maps for
//! SD3 (diffusers/ai-toolkit `transformer.*` with split q/k/v and the swapped
//! `norm_out`/last `norm1_context`, PEFT `base_model.model.*`, kohya `lora_unet_*`,
//! OneTrainer `lora_transformer_*`, LyCORIS `lycoris_*` with LoHa, ComfyUI native with
//! `.diff`/`.diff_b`).

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions, WeightMap};
use comfyrs::models::fixture as fx;
use comfyrs::models::lora::patched::{patch_weights_stored, PatchedStorage};
use comfyrs::models::lora::{load_lora, read_lora, KeyMap, PatchEntry};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data/sd3_lora").join(name)
}

fn base() -> &'static WeightMap {
    static W: OnceLock<WeightMap> = OnceLock::new();
    W.get_or_init(|| {
        let ck = load_checkpoint_with(
            root().join(fx::TINY_SD35_CKPT_PATH),
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

const FORMATS: [&str; 5] = ["diffusers", "peft", "kohya", "onetrainer", "native"];

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
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

#[test]
fn key_map_matches_comfyui_model_lora_keys_unet() {
    let comfy: HashMap<String, Json> =
        serde_json::from_str(&std::fs::read_to_string(data("key_map.json")).unwrap()).unwrap();
    let map = KeyMap::for_weights(base(), true, false).unwrap();
    // ComfyUI also maps diffusers names whose weight this model lacks (attn2 of block 1);
    // it drops their patches later, comfyrs leaves them out of the map.
    let present: HashMap<&String, &Json> = comfy
        .iter()
        .filter(|(_, v)| base().contains_key(&ours(v[0].as_str().unwrap())))
        .collect();
    assert!(
        present.len() < comfy.len(),
        "the fixture has no MMDiT-X-less block"
    );
    let mut missing = Vec::new();
    for (k, v) in &present {
        let Some(t) = map.target(k) else {
            missing.push(k.to_string());
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
    // Spot checks of the forms the module docs promise.
    let sliced = map
        .target("transformer.transformer_blocks.0.attn2.to_v")
        .unwrap();
    assert_eq!(
        (sliced.key.as_str(), sliced.slice),
        (
            "model.diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight",
            Some((0, 256, 128))
        )
    );
    assert!(
        map.target("lycoris_transformer_blocks_1_norm1_context_linear")
            .unwrap()
            .swap_halves
    );
    assert!(present.len() > 250, "{}", present.len());
}

#[test]
fn patched_weights_match_comfyui() {
    for format in FORMATS {
        let file = read_lora(&data(&format!("lora_{format}.safetensors"))).unwrap();
        let map = KeyMap::for_weights(base(), true, false).unwrap();
        let loaded = load_lora(&file, &map, base()).unwrap();
        assert!(
            loaded.shape_mismatches.is_empty() && loaded.unmatched.is_empty(),
            "{format}: {:?} {:?}",
            loaded.shape_mismatches,
            loaded.unmatched
        );
        let entry = PatchEntry::lora(Arc::new(loaded), format.into(), 0.8);
        let out = patch_weights_stored(
            base(),
            &[entry],
            "model.diffusion_model.",
            PatchedStorage::Dtype(DType::F32),
        )
        .unwrap();
        let mut keys: Vec<String> = out.keys().cloned().collect();
        keys.sort();
        let want: Vec<String> = meta()["patched"][format]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| ours(k.as_str().unwrap()))
            .collect();
        assert_eq!(keys, want, "{format}");
        for (k, got) in &out {
            let golden = &goldens()[&format!("{format}.{}", k.strip_prefix("model.").unwrap())];
            let d = max_abs(got, golden);
            assert!(d < 2e-6, "{format} {k}: max |Δ| {d}");
            let moved = max_abs(got, &base()[k].to_dtype(DType::F32).unwrap());
            assert!(moved > 1e-4, "{format} {k} did not change");
        }
    }
}
