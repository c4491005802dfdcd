//! Reading a LoRA file and telling which formats its keys use.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::models::checkpoint::describe_prefixes;
use crate::models::{ModelError, Result};

/// A LoRA file's tensors (floats as f32, like ComfyUI's f32 intermediate math).
pub struct LoraFile {
    pub tensors: HashMap<String, Tensor>,
}

/// Key endings that belong to an adapter ComfyUI loads, with the format they show.
const SUFFIXES: &[(&str, &str)] = &[
    (".lora_up.weight", "kohya LoRA/LoCon"),
    (".lora_down.weight", "kohya LoRA/LoCon"),
    (".lora_mid.weight", "LoCon (Tucker mid)"),
    ("_lora.up.weight", "diffusers (attn processor)"),
    (".lora.up.weight", "diffusers"),
    (".lora_B.weight", "PEFT/diffusers (lora_A/lora_B)"),
    (".lora_A.weight", "PEFT/diffusers (lora_A/lora_B)"),
    (".lora_B", "lora_A/lora_B (no .weight)"),
    (
        ".lora_linear_layer.up.weight",
        "transformers lora_linear_layer",
    ),
    (".lora_B.default.weight", "PEFT default adapter"),
    (".hada_w1_a", "LyCORIS LoHa"),
    (".lokr_w1", "LyCORIS LoKr"),
    (".lokr_w1_a", "LyCORIS LoKr"),
    (".lokr_w2", "LyCORIS LoKr"),
    (".lokr_w2_a", "LyCORIS LoKr"),
    (".dora_scale", "DoRA"),
    (".diff", "full-weight diff"),
    (".diff_b", "full-weight diff"),
    (".w_norm", "norm diff"),
    (".set_weight", "weight replacement"),
];

impl LoraFile {
    /// The formats the keys show, e.g. `["DoRA", "kohya LoRA/LoCon"]` (sorted, unique).
    pub fn formats(&self) -> Vec<&'static str> {
        let mut out = BTreeSet::new();
        for k in self.tensors.keys() {
            if let Some((_, f)) = SUFFIXES.iter().find(|(s, _)| k.ends_with(s)) {
                out.insert(*f);
            }
        }
        out.into_iter().collect()
    }

    /// Does any key look like an adapter tensor ComfyUI would load?
    pub fn looks_like_lora(&self) -> bool {
        !self.formats().is_empty()
    }

    /// "N tensors with prefixes ..." for error messages.
    pub fn describe(&self) -> String {
        describe_prefixes(&self.tensors)
    }
}

/// Whether a file's keys are XLabs' Flux LoRA layout (`double_blocks.N.processor.qkv_lora1.
/// down.weight`, `single_blocks.N.processor.proj_lora.up.weight`, ...).
pub fn is_xlabs(tensors: &HashMap<String, Tensor>) -> bool {
    tensors.keys().any(|k| {
        (k.starts_with("double_blocks.") || k.starts_with("single_blocks."))
            && (k.contains(".processor.qkv_lora") || k.contains(".processor.proj_lora"))
    })
}

/// XLabs' Flux LoRA layout renamed to ComfyUI-native keys, as `comfy/lora_convert.py`
/// `convert_uso_lora` renames it: `qkv_lora1`/`qkv_lora2` → `img_attn.qkv`/`txt_attn.qkv`,
/// `proj_lora1`/`proj_lora2` → `img_attn.proj`/`txt_attn.proj`, the single blocks'
/// `qkv_lora` → `linear1_qkv` (the first 3·hidden rows of `linear1`) and `proj_lora` →
/// `linear2`, `down`/`up` → `lora_down`/`lora_up`, all under `diffusion_model.`. ComfyUI
/// 0.3.64 applies it only to files that also have blocks 37 and 18 (USO LoRAs) and reports
/// a plain XLabs file's keys as not loaded; comfyrs applies it to every XLabs-layout file.
/// Other files are returned unchanged.
pub fn convert_xlabs(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    if !is_xlabs(&tensors) {
        return tensors;
    }
    tensors
        .into_iter()
        .map(|(k, v)| {
            let mut k = k
                .replace(".down.weight", ".lora_down.weight")
                .replace(".up.weight", ".lora_up.weight");
            for (from, to) in [
                (".qkv_lora2.", ".txt_attn.qkv."),
                (".qkv_lora1.", ".img_attn.qkv."),
                (".proj_lora1.", ".img_attn.proj."),
                (".proj_lora2.", ".txt_attn.proj."),
                (".qkv_lora.", ".linear1_qkv."),
                (".proj_lora.", ".linear2."),
                (".processor.", "."),
            ] {
                k = k.replace(from, to);
            }
            (format!("diffusion_model.{k}"), v)
        })
        .collect()
}

/// `convert_lora_bfl_control` (comfy/lora_convert.py): BFL's Flux control LoRAs (FLUX.1
/// Canny/Depth LoRA) in ComfyUI's native names: `diffusion_model.` before every key,
/// `.lora_B.bias` as `.diff_b`, the QK-norm scales as `.set_weight`, and `img_in` zero-padded
/// to the LoRA's width (`reshape_weight` = [lora_B rows, lora_A columns]) so the model takes
/// the control image's latent as extra input channels.
fn convert_bfl_control(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let rows = tensors.get("img_in.lora_B.weight").map(|t| t.dim(0));
    let cols = tensors["img_in.lora_A.weight"].dim(1)?;
    let Some(rows) = rows else {
        return Err(ModelError::BadInput(
            "a BFL control LoRA with img_in.lora_A.weight but no img_in.lora_B.weight".into(),
        ));
    };
    let mut out: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(".lora_B.bias", ".diff_b")
                .replace("_norm.scale", "_norm.scale.set_weight");
            (format!("diffusion_model.{k}"), v)
        })
        .collect();
    out.insert(
        "diffusion_model.img_in.reshape_weight".into(),
        Tensor::new(&[rows? as i64, cols as i64], &Device::Cpu)?,
    );
    Ok(out)
}

/// Reads a LoRA safetensors file (XLabs' Flux layout renamed, [`convert_xlabs`]); floating tensors become f32, others keep their dtype.
/// A file that is not a LoRA is an error that says what it holds instead.
pub fn read_lora(path: &Path) -> Result<LoraFile> {
    let tensors = crate::models::checkpoint::load_safetensors(path, &Device::Cpu, DType::F32)?;
    if tensors.contains_key("img_in.lora_A.weight")
        && tensors.contains_key("single_blocks.0.norm.key_norm.scale")
    {
        return Ok(LoraFile {
            tensors: convert_bfl_control(tensors)?,
        });
    }
    let file = LoraFile {
        tensors: convert_xlabs(tensors),
    };
    if !file.looks_like_lora() {
        return Err(ModelError::NotSupported(format!(
            "not a LoRA: no key ends in a LoRA/LyCORIS suffix (.lora_up/.lora_down, \
             .lora_A/.lora_B, .hada_w1_a, .lokr_w1, .diff, ...); {}",
            file.describe()
        )));
    }
    Ok(file)
}
