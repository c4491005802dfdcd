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

/// Reads a LoRA safetensors file; floating tensors become f32, others keep their dtype.
/// A file that is not a LoRA is an error that says what it holds instead.
pub fn read_lora(path: &Path) -> Result<LoraFile> {
    let tensors = crate::models::checkpoint::load_safetensors(path, &Device::Cpu, DType::F32)?;
    let file = LoraFile { tensors };
    if !file.looks_like_lora() {
        return Err(ModelError::NotSupported(format!(
            "not a LoRA: no key ends in a LoRA/LyCORIS suffix (.lora_up/.lora_down, \
             .lora_A/.lora_B, .hada_w1_a, .lokr_w1, .diff, ...); {}",
            file.describe()
        )));
    }
    Ok(file)
}
