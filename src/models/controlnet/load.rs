//! ControlNet files as ComfyUI's `load_controlnet_state_dict` reads them:
//!
//! * LDM layout (lllyasviel's 1.0/1.1 files and their fp16 repacks): `control_model.*`
//!   keys, or the same without the prefix. The UNet config is read from the keys, so any
//!   width loads (ComfyUI: `model_config_from_unet(..., use_base_if_no_match=True)`).
//! * "diff" ControlNets: LDM layout with a `difference` key; the base model's UNet weight
//!   is added to every ControlNet weight that has one (in the ControlNet file's dtype, as
//!   ComfyUI's in-place `+=` does). Only DiffControlNetLoader passes a base model.
//! * diffusers layout (`controlnet_cond_embedding.conv_in.weight`): renamed to the LDM
//!   names (ComfyUI's `unet_to_diffusers` + the ControlNet-specific keys), so the SD1.5,
//!   SDXL and the SDXL "mid"/"small" presets load alike; [`ControlNetFile::preset`] names
//!   the preset of ComfyUI's list a file matches.
//!
//! Everything else ComfyUI's loader recognises (T2I-Adapters, Control-LoRA, union SDXL
//! ControlNets, the Flux/HunyuanDiT/Qwen ControlNets) is a clear "not supported" error
//! naming the kind; SD3/SD3.5 ControlNets load through [`super::load_control_model`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::network::ControlNet;
use crate::models::checkpoint::{load_safetensors, WeightMap};
use crate::models::lora::key_map::{ATTENTION, BASIC, RESNET, TRANSFORMER_BLOCK};
use crate::models::unet::UNET_PREFIX;
use crate::models::{ModelError, Result};

/// Which layout the file used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlNetLayout {
    /// `control_model.*` (the `.pth` layout).
    LdmPrefixed,
    /// LDM names without a prefix.
    Ldm,
    Diffusers,
}

/// A loaded ControlNet file.
#[derive(Debug, Clone)]
pub struct ControlNetFile {
    pub net: ControlNet,
    pub layout: ControlNetLayout,
    /// A diff ControlNet (`difference` key) that was added to a base model.
    pub diff_applied: bool,
    /// ComfyUI's `global_average_pooling` (files named `*_shuffle[_fp16]`): each residual
    /// is replaced by its spatial mean.
    pub global_average_pooling: bool,
}

impl ControlNetFile {
    /// The name of the `model_detection` preset of ComfyUI's list the network matches
    /// ("SD15", "SDXL", "SDXL_mid_cnet", "SDXL_small_cnet"), if any.
    pub fn preset(&self) -> Option<&'static str> {
        let c = self.net.config();
        let same =
            |mc: usize, depth: &[usize], mid: usize, ctx: Option<usize>, adm: Option<usize>| {
                c.model_channels == mc
                    && c.transformer_depth == depth
                    && c.transformer_depth_middle == mid
                    && (ctx.is_none() || c.context_dim == ctx)
                    && c.adm_in_channels == adm
            };
        if same(320, &[1, 1, 1, 1, 1, 1, 0, 0], 1, Some(768), None) {
            Some("SD15")
        } else if same(320, &[0, 0, 2, 2, 10, 10], 10, Some(2048), Some(2816)) {
            Some("SDXL")
        } else if same(320, &[0, 0, 0, 0, 1, 1], 1, Some(2048), Some(2816)) {
            Some("SDXL_mid_cnet")
        } else if same(320, &[0, 0, 0, 0, 0, 0], 0, None, Some(2816)) {
            Some("SDXL_small_cnet")
        } else {
            None
        }
    }
}

/// The kinds of control files ComfyUI loads through the same node that comfyrs does not run,
/// recognised by their marker keys.
fn unsupported_kind(sd: &WeightMap) -> Option<&'static str> {
    let has = |k: &str| sd.contains_key(k);
    if has("after_proj_list.18.bias") {
        return Some("a HunyuanDiT ControlNet");
    }
    if has("lora_controlnet") {
        return Some("a Control-LoRA");
    }
    if has("controlnet_cond_embedding.conv_in.weight") && has("control_add_embedding.linear_1.bias")
    {
        return Some("a union SDXL ControlNet (ControlNet++ / ProMax)");
    }
    if has("controlnet_blocks.0.weight") || has("controlnet_blocks.0.linear.weight") {
        if has("transformer_blocks.0.img_mlp.net.0.proj.weight") {
            return Some("a Qwen-Image ControlNet");
        }
        if has("pos_embed_input.proj.weight")
            && !has("double_blocks.0.img_attn.norm.key_norm.scale")
        {
            return Some("an SD3/SD3.5 ControlNet (loaded by load_control_model)");
        }
        return Some("a Flux ControlNet");
    }
    None
}

/// T2I-Adapter and Stable Cascade control files (ComfyUI's `load_t2i_adapter` markers).
fn is_t2i_adapter(sd: &WeightMap) -> bool {
    [
        "adapter.body.0.resnets.0.block1.weight",
        "body.0.in_conv.weight",
        "conv_in.weight",
        "backbone.0.0.weight",
        "backbone.10.blocks.0.weight",
    ]
    .iter()
    .any(|k| sd.contains_key(*k))
}

/// Loads the ControlNet at `path` (safetensors). `base`: the model whose UNet weights (under
/// `model.diffusion_model.`) a diff ControlNet is added to. `name` decides
/// `global_average_pooling` like ComfyUI (file stem ending in `_shuffle`/`_shuffle_fp16`).
pub fn load_controlnet(
    path: &Path,
    base: Option<&WeightMap>,
    dtype: DType,
    device: &Device,
) -> Result<ControlNetFile> {
    let is_st = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("sft"));
    if !is_st {
        return Err(ModelError::NotSupported(format!(
            "{}: comfyrs reads ControlNets from .safetensors files only (pickled .pth/.ckpt \
             files can run code when loaded); convert it to safetensors",
            path.display()
        )));
    }
    // Stored dtype kept (f16 stays f16, widened per operation), on the CPU for the renames
    // and the diff arithmetic; the network is built on `device`.
    let sd = load_safetensors(path, &Device::Cpu, dtype)?;
    let mut file = load_controlnet_weights(sd, base, dtype, device)?;
    file.global_average_pooling = is_shuffle_name(path);
    Ok(file)
}

/// ComfyUI's `global_average_pooling` rule: the file stem ends in `_shuffle` or
/// `_shuffle_fp16`.
pub fn is_shuffle_name(path: &Path) -> bool {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    stem.ends_with("_shuffle") || stem.ends_with("_shuffle_fp16")
}

/// [`load_controlnet`] on a state dict already in memory.
pub fn load_controlnet_weights(
    mut sd: WeightMap,
    base: Option<&WeightMap>,
    dtype: DType,
    device: &Device,
) -> Result<ControlNetFile> {
    if let Some(kind) = unsupported_kind(&sd) {
        return Err(ModelError::NotSupported(format!(
            "this file is {kind}; comfyrs runs the SD1.x/SDXL (cldm) and SD3/SD3.5 \
             ControlNets"
        )));
    }
    let mut layout = None;
    if sd.contains_key("controlnet_cond_embedding.conv_in.weight") {
        sd = diffusers_to_ldm(sd);
        layout = Some(ControlNetLayout::Diffusers);
    }
    let prefix = if sd.contains_key("control_model.zero_convs.0.0.weight") {
        layout.get_or_insert(ControlNetLayout::LdmPrefixed);
        "control_model."
    } else if sd.contains_key("zero_convs.0.0.weight") {
        layout.get_or_insert(ControlNetLayout::Ldm);
        ""
    } else if is_t2i_adapter(&sd) {
        return Err(ModelError::NotSupported(
            "this file is a T2I-Adapter or a Stable Cascade ControlNet: T2I-Adapters load \
             through load_control_model (ControlNetLoader); Stable Cascade ControlNets are not \
             supported"
                .into(),
        ));
    } else {
        return Err(ModelError::NotSupported(
            "could not detect the control model type: no `control_model.zero_convs.0.0.weight`, \
             `zero_convs.0.0.weight` or diffusers `controlnet_cond_embedding` key"
                .into(),
        ));
    };
    let layout = layout.expect("set above");
    let mut diff_applied = false;
    if layout == ControlNetLayout::LdmPrefixed && sd.contains_key("difference") {
        match base {
            Some(base) => {
                add_base_weights(&mut sd, base)?;
                diff_applied = true;
            }
            None => tracing::warn!(
                "WARNING: Loaded a diff controlnet without a model. It will very likely not work."
            ),
        }
    }
    let net = ControlNet::from_weights(&sd, prefix, dtype, device)?;
    Ok(ControlNetFile {
        net,
        layout,
        diff_applied,
        global_average_pooling: false,
    })
}

/// Diff ControlNets: `control_model.X += diffusion_model.X` for every X the UNet has, in
/// the ControlNet tensor's dtype.
fn add_base_weights(sd: &mut WeightMap, base: &WeightMap) -> Result<()> {
    let keys: Vec<String> = sd.keys().cloned().collect();
    for k in keys {
        let Some(rest) = k.strip_prefix("control_model.") else {
            continue;
        };
        let Some(b) = base.get(&format!("{UNET_PREFIX}{rest}")) else {
            continue;
        };
        let c = &sd[&k];
        if c.dims() != b.dims() {
            return Err(ModelError::BadInput(format!(
                "diff ControlNet weight {k} is {:?} but the model's is {:?}: the ControlNet \
                 belongs to another model family",
                c.dims(),
                b.dims()
            )));
        }
        // `widen`: a base stored as fp8 e5m2 holds U8 bits (`fp8::store_as`).
        let sum = (c + crate::models::nn::widen(&b.to_device(c.device())?, c.dtype())?)?;
        sd.insert(k, sum);
    }
    Ok(())
}

/// How many `{prefix}{i}.` indices the keys have (ComfyUI's `count_blocks`).
fn count(keys: &[&str], prefix: &str) -> usize {
    let mut n = 0;
    while keys.iter().any(|k| k.starts_with(&format!("{prefix}{n}."))) {
        n += 1;
    }
    n
}

/// diffusers ControlNet names → LDM names (ComfyUI's `unet_to_diffusers` for the encoder
/// half, plus `controlnet_down_blocks.N → zero_convs.N.0`, `controlnet_mid_block →
/// middle_block_out.0` and `controlnet_cond_embedding.{conv_in, blocks.i, conv_out} →
/// input_hint_block.{0, 2(i+1), last}`). Keys that map to nothing are dropped (ComfyUI
/// logs them as leftovers).
fn diffusers_to_ldm(sd: WeightMap) -> WeightMap {
    let keys: Vec<&str> = sd.keys().map(|k| k.as_str()).collect();
    let mut modules: Vec<(String, String)> = Vec::new();
    let transformer = |m: &mut Vec<(String, String)>, d: &str, l: &str, depth: usize| {
        for a in ATTENTION {
            m.push((format!("{d}.{a}"), format!("{l}.{a}")));
        }
        for t in 0..depth {
            for b in TRANSFORMER_BLOCK {
                m.push((
                    format!("{d}.transformer_blocks.{t}.{b}"),
                    format!("{l}.transformer_blocks.{t}.{b}"),
                ));
            }
        }
    };
    let resnet = |m: &mut Vec<(String, String)>, d: &str, l: &str| {
        for (ldm, diff) in RESNET {
            m.push((format!("{d}.{diff}"), format!("{l}.{ldm}")));
        }
    };
    let mut n = 1;
    for x in 0..count(&keys, "down_blocks.") {
        let res = count(&keys, &format!("down_blocks.{x}.resnets."));
        for i in 0..res {
            resnet(
                &mut modules,
                &format!("down_blocks.{x}.resnets.{i}"),
                &format!("input_blocks.{n}.0"),
            );
            let d = format!("down_blocks.{x}.attentions.{i}");
            let depth = count(&keys, &format!("{d}.transformer_blocks."));
            if depth > 0 {
                transformer(&mut modules, &d, &format!("input_blocks.{n}.1"), depth);
            }
            n += 1;
        }
        let down = format!("down_blocks.{x}.downsamplers.0.conv");
        if sd.contains_key(&format!("{down}.weight")) {
            modules.push((down, format!("input_blocks.{n}.0.op")));
            n += 1;
        }
    }
    let mid_depth = count(&keys, "mid_block.attentions.0.transformer_blocks.");
    transformer(
        &mut modules,
        "mid_block.attentions.0",
        "middle_block.1",
        mid_depth,
    );
    for (i, m) in [(0, 0), (1, 2)] {
        resnet(
            &mut modules,
            &format!("mid_block.resnets.{i}"),
            &format!("middle_block.{m}"),
        );
    }
    for (d, l) in BASIC {
        modules.push((d.to_string(), l.to_string()));
    }
    modules.push(("controlnet_mid_block".into(), "middle_block_out.0".into()));
    for i in 0..count(&keys, "controlnet_down_blocks.") {
        modules.push((
            format!("controlnet_down_blocks.{i}"),
            format!("zero_convs.{i}.0"),
        ));
    }
    let blocks = count(&keys, "controlnet_cond_embedding.blocks.");
    modules.push((
        "controlnet_cond_embedding.conv_in".into(),
        "input_hint_block.0".into(),
    ));
    for i in 0..blocks {
        modules.push((
            format!("controlnet_cond_embedding.blocks.{i}"),
            format!("input_hint_block.{}", 2 * (i + 1)),
        ));
    }
    modules.push((
        "controlnet_cond_embedding.conv_out".into(),
        format!("input_hint_block.{}", 2 * (blocks + 1)),
    ));
    let mut sd = sd;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (d, l) in modules {
        for s in ["weight", "bias"] {
            if let Some(t) = sd.remove(&format!("{d}.{s}")) {
                out.insert(format!("{l}.{s}"), t);
            }
        }
    }
    if !sd.is_empty() {
        let mut left: Vec<&String> = sd.keys().collect();
        left.sort();
        tracing::warn!("leftover keys: {left:?}");
    }
    out
}
