//! ComfyUI's LoRA key map (numerics spec §7.1): LoRA key prefix → model weight key
//! (`model_lora_keys_unet` + `model_lora_keys_clip`), for the LDM UNet families, Flux and SD3.
//!
//! Flux (`model_lora_keys_unet`'s Flux branch with `comfy/utils.py` `flux_to_diffusers`):
//! besides the generic `lora_unet_*` / `diffusion_model.*` names (kohya, ComfyUI native), the
//! diffusers/PEFT names under `transformer.` (also `lycoris_*`, `lora_transformer_*`). Split
//! projections target a slice of a fused weight ([`Target::slice`]): `attn.to_q/k/v` the
//! thirds of `img_attn.qkv`, `attn.add_{q,k,v}_proj` those of `txt_attn.qkv`, and in single
//! blocks `to_q/k/v` + `proj_mlp` the rows of `linear1`; `*.linear1_qkv` names the first
//! 3·hidden rows of `linear1`. `norm_out.linear` patches `final_layer.adaLN_modulation.1`
//! with its two halves swapped (diffusers orders scale/shift the other way round).
//!
//! SD3/SD3.5 (the SD3 branch with `mmdit_to_diffusers`): `transformer.`, `base_model.model.`,
//! `lora_transformer_*` and `lycoris_*` names of diffusers' SD3 transformer, q/k/v as thirds
//! of the fused `qkv` weights, `norm_out.linear` and the last block's `norm1_context.linear`
//! swapped ([`mmdit_to_diffusers`]).
//!
//! Targets are keys of our checkpoint weight map (`model.diffusion_model.*`; SD1's CLIP-L
//! at `cond_stage_model.transformer.text_model.*`, SDXL's at `clip_l.transformer.*` and its
//! bigG at `clip_g.transformer.*`); ComfyUI's own state-dict names (`diffusion_model.*`,
//! `clip_l.transformer.*`) appear in the generic forms. kohya names SDXL's encoders
//! `lora_te1_` (CLIP-L) and `lora_te2_` (bigG), diffusers `text_encoder` and
//! `text_encoder_2`; a refiner's lone bigG answers to the single-encoder names.

use std::collections::HashMap;

use crate::models::checkpoint::{WeightMap, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX};
use crate::models::flux;
use crate::models::text::clip::SD1_CLIP_PREFIX;
use crate::models::unet::{UnetConfig, UNET_PREFIX};
use crate::models::Result;

/// CLIP modules kohya/diffusers LoRAs name, with their kohya spelling.
const CLIP_MODULES: &[(&str, &str)] = &[
    ("mlp.fc1", "mlp_fc1"),
    ("mlp.fc2", "mlp_fc2"),
    ("self_attn.k_proj", "self_attn_k_proj"),
    ("self_attn.q_proj", "self_attn_q_proj"),
    ("self_attn.v_proj", "self_attn_v_proj"),
    ("self_attn.out_proj", "self_attn_out_proj"),
];

/// Resnet module renames (LDM → diffusers).
pub(crate) const RESNET: &[(&str, &str)] = &[
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
    ("in_layers.0", "norm1"),
    ("out_layers.0", "norm2"),
];

/// SpatialTransformer modules (same name in both layouts).
pub(crate) const ATTENTION: &[&str] = &["proj_in", "proj_out", "norm"];

/// BasicTransformerBlock modules (same name in both layouts).
pub(crate) const TRANSFORMER_BLOCK: &[&str] = &[
    "norm1",
    "norm2",
    "norm3",
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
];

/// Top-level modules (diffusers, LDM).
pub(crate) const BASIC: &[(&str, &str)] = &[
    ("conv_in", "input_blocks.0.0"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("class_embedding.linear_1", "label_emb.0.0"),
    ("class_embedding.linear_2", "label_emb.0.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
];

/// Where a LoRA key's delta goes: a model weight, or a slice of it (ComfyUI's
/// `(key, (dim, offset, size))` targets), or the weight with the delta's halves swapped
/// (`(key, None, swap_scale_shift)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: String,
    /// (dim, offset, size) of the slice the delta replaces.
    pub slice: Option<(usize, usize, usize)>,
    /// Swap the two halves of the delta along dim 0 before adding it.
    pub swap_halves: bool,
}

impl Target {
    /// The whole weight `key`.
    pub fn whole(key: impl Into<String>) -> Self {
        Target {
            key: key.into(),
            slice: None,
            swap_halves: false,
        }
    }

    /// Rows `offset..offset + size` of `key`.
    pub fn rows(key: impl Into<String>, offset: usize, size: usize) -> Self {
        Target {
            key: key.into(),
            slice: Some((0, offset, size)),
            swap_halves: false,
        }
    }

    /// The shape the delta must have for a weight of `shape`.
    pub fn delta_shape(&self, shape: &[usize]) -> Vec<usize> {
        let mut s = shape.to_vec();
        if let Some((dim, _, size)) = self.slice {
            if dim < s.len() {
                s[dim] = size;
            }
        }
        s
    }
}

/// LoRA key prefix → target, in ComfyUI's insertion order (it decides which patch wins when
/// two prefixes of one file name the same weight).
#[derive(Debug, Default, Clone)]
pub struct KeyMap {
    entries: Vec<(String, Target)>,
    index: HashMap<String, usize>,
}

impl KeyMap {
    /// Python dict assignment: a known key keeps its place and takes the new target.
    fn insert(&mut self, key: String, target: String) {
        self.insert_target(key, Target::whole(target));
    }

    fn insert_target(&mut self, key: String, target: Target) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = target,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, target));
            }
        }
    }

    /// The weight key a LoRA key patches (whole or a slice of it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.target(key).map(|t| t.key.as_str())
    }

    /// The full target of a LoRA key.
    pub fn target(&self, key: &str) -> Option<&Target> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// (LoRA key, target) pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key map for a checkpoint's weights (SD1.x, SDXL base or refiner): UNet keys
    /// (`model_lora_keys_unet`) and, when `clip` is set, text-encoder keys
    /// (`model_lora_keys_clip`), in that order.
    pub fn for_weights(weights: &WeightMap, unet: bool, clip: bool) -> Result<KeyMap> {
        let mut map = KeyMap::default();
        let mut keys: Vec<&String> = weights.keys().collect();
        // ComfyUI walks the model's state dict in module order; any stable order gives the
        // same map because every generated key is distinct.
        keys.sort();
        if unet {
            for k in &keys {
                let Some(rest) = k.strip_prefix(UNET_PREFIX) else {
                    continue;
                };
                match rest.strip_suffix(".weight") {
                    Some(m) => {
                        map.insert(format!("lora_unet_{}", m.replace('.', "_")), k.to_string());
                        map.insert(format!("diffusion_model.{m}"), k.to_string());
                    }
                    None => map.insert(format!("diffusion_model.{rest}"), k.to_string()),
                }
            }
            if flux::Config::is_flux(|k| weights.contains_key(k), UNET_PREFIX) {
                map.add_flux(weights, &keys)?;
            } else if weights.contains_key(&format!("{UNET_PREFIX}{MMDIT_MARKER}")) {
                map.add_mmdit(weights)?;
            } else {
                map.add_unet_diffusers(weights)?;
            }
        }
        if clip {
            // SD1's CLIP-L lives under cond_stage_model.; ComfyUI calls it clip_l.
            let roots = [
                ("cond_stage_model.transformer.", "clip_l.transformer."),
                ("clip_l.transformer.", "clip_l.transformer."),
                ("clip_g.transformer.", "clip_g.transformer."),
            ];
            for k in &keys {
                for (ours, comfy) in roots {
                    if let Some(rest) = k.strip_prefix(ours).and_then(|r| r.strip_suffix(".weight"))
                    {
                        map.insert(format!("text_encoders.{comfy}{rest}"), k.to_string());
                    }
                }
            }
            let l_prefix = if weights.keys().any(|k| k.starts_with(SD1_CLIP_PREFIX)) {
                SD1_CLIP_PREFIX
            } else {
                SDXL_CLIP_L_PREFIX
            };
            let mut clip_l_present = false;
            for b in 0..32 {
                for (module, kohya) in CLIP_MODULES {
                    let target = format!("{l_prefix}encoder.layers.{b}.{module}.weight");
                    if weights.contains_key(&target) {
                        clip_l_present = true;
                        for key in [
                            format!("lora_te_text_model_encoder_layers_{b}_{kohya}"),
                            format!("lora_te1_text_model_encoder_layers_{b}_{kohya}"),
                            format!("text_encoder.text_model.encoder.layers.{b}.{module}"),
                        ] {
                            map.insert(key, target.clone());
                        }
                    }
                    let target = format!("{SDXL_CLIP_G_PREFIX}encoder.layers.{b}.{module}.weight");
                    if weights.contains_key(&target) {
                        let keys = if clip_l_present {
                            vec![
                                format!("lora_te2_text_model_encoder_layers_{b}_{kohya}"),
                                format!("text_encoder_2.text_model.encoder.layers.{b}.{module}"),
                            ]
                        } else {
                            vec![
                                format!("lora_te_text_model_encoder_layers_{b}_{kohya}"),
                                format!("text_encoder.text_model.encoder.layers.{b}.{module}"),
                                format!("lora_prior_te_text_model_encoder_layers_{b}_{kohya}"),
                            ]
                        };
                        for key in keys {
                            map.insert(key, target.clone());
                        }
                    }
                }
            }
            let g_proj = "clip_g.transformer.text_projection.weight";
            if weights.contains_key(g_proj) {
                map.insert("lora_prior_te_text_projection".into(), g_proj.into());
                map.insert("lora_te2_text_projection".into(), g_proj.into());
            }
            let l_proj = "clip_l.transformer.text_projection.weight";
            if weights.contains_key(l_proj) {
                map.insert("lora_te1_text_projection".into(), l_proj.into());
            }
        }
        Ok(map)
    }

    /// `unet_to_diffusers` names of an LDM UNet (kohya `lora_unet_*` in diffusers naming,
    /// LyCORIS, diffusers attention processors).
    fn add_unet_diffusers(&mut self, weights: &WeightMap) -> Result<()> {
        let cfg = UnetConfig::detect(weights, UNET_PREFIX)?;
        for (diffusers, ldm) in unet_to_diffusers(weights, &cfg) {
            let target = format!("{UNET_PREFIX}{ldm}.weight");
            if !weights.contains_key(&target) {
                continue;
            }
            let under = diffusers.replace('.', "_");
            self.insert(format!("lora_unet_{under}"), target.clone());
            self.insert(format!("lycoris_{under}"), target.clone());
            for p in ["", "unet."] {
                let mut key = format!("{p}{}", diffusers.replace(".to_", ".processor.to_"));
                if key.ends_with(".to_out.0") {
                    key.truncate(key.len() - 2);
                }
                self.insert(key, target.clone());
            }
        }
        Ok(())
    }

    /// Flux's diffusers names (module docs) and the `linear1_qkv` slices; `sorted` are the
    /// weight map's keys in a stable order.
    fn add_flux(&mut self, weights: &WeightMap, sorted: &[&String]) -> Result<()> {
        let cfg = flux::Config::detect(
            |k| weights.get(k).map(|t| t.dims().to_vec()),
            &mut weights.keys().map(|k| k.as_str()),
            UNET_PREFIX,
        )
        .map_err(crate::models::ModelError::NotSupported)?;
        for (diffusers, target) in
            flux_to_diffusers(cfg.depth, cfg.depth_single_blocks, cfg.hidden_size)
        {
            let Some(module) = diffusers.strip_suffix(".weight") else {
                continue;
            };
            let under = module.replace('.', "_");
            self.insert_target(format!("transformer.{module}"), target.clone());
            self.insert_target(format!("lycoris_{under}"), target.clone());
            self.insert_target(format!("lora_transformer_{under}"), target);
        }
        let qkv = 3 * cfg.hidden_size;
        for k in sorted {
            if let Some(stem) = k.strip_suffix(".linear1.weight") {
                let comfy = stem.strip_prefix("model.").unwrap_or(stem);
                self.insert_target(
                    format!("{comfy}.linear1_qkv"),
                    Target::rows(k.to_string(), 0, qkv),
                );
            }
        }
        Ok(())
    }
}

/// A weight only MMDiT (SD3, SD3.5) checkpoints have (ComfyUI's `detect_unet_config` test).
const MMDIT_MARKER: &str = "joint_blocks.0.context_block.attn.qkv.weight";

impl KeyMap {
    /// SD3/SD3.5 (`model_lora_keys_unet`'s SD3 branch): every weight of
    /// [`mmdit_to_diffusers`] under `transformer.` (diffusers, ai-toolkit), `base_model.model.`
    /// (PEFT), `lora_transformer_` (OneTrainer) and `lycoris_` (SimpleTuner), in that order
    /// per weight. Targets the model lacks (MMDiT-X `attn2` on plain blocks, QK norms on
    /// SD3 medium) are left out: ComfyUI maps them and then drops the patches.
    fn add_mmdit(&mut self, weights: &WeightMap) -> Result<()> {
        let cfg = crate::models::mmdit::Config::detect(
            |k| weights.get(k).map(|t| t.dims().to_vec()),
            &mut weights.keys().map(|k| k.as_str()),
            UNET_PREFIX,
        )
        .map_err(crate::models::ModelError::NotSupported)?;
        for (diffusers, target) in mmdit_to_diffusers(cfg.depth) {
            let Some(module) = diffusers.strip_suffix(".weight") else {
                continue;
            };
            if !weights.contains_key(&target.key) {
                continue;
            }
            let under = module.replace('.', "_");
            self.insert_target(format!("transformer.{module}"), target.clone());
            self.insert_target(format!("base_model.model.{module}"), target.clone());
            self.insert_target(format!("lora_transformer_{under}"), target.clone());
            self.insert_target(format!("lycoris_{under}"), target);
        }
        Ok(())
    }
}

/// ComfyUI's `mmdit_to_diffusers` (comfy/utils.py) for an MMDiT of `depth` joint blocks
/// (hidden 64·depth), with our weight keys as targets: (diffusers key, target) in its
/// order. The diffusers q/k/v projections are thirds of the fused `qkv`
/// (`attn.to_*` of `x_block.attn`, `attn.add_*_proj` of `context_block.attn`, `attn2.to_*`
/// of MMDiT-X's `x_block.attn2`); `norm_out.linear` and the last block's
/// `norm1_context.linear` (diffusers' AdaLayerNormContinuous) have scale and shift the
/// other way round.
pub fn mmdit_to_diffusers(depth: usize) -> Vec<(String, Target)> {
    let mut out: Vec<(String, Target)> = Vec::new();
    let p = UNET_PREFIX;
    let hidden = 64 * depth;
    for i in 0..depth {
        let from = format!("transformer_blocks.{i}");
        let to = format!("{p}joint_blocks.{i}");
        for end in ["weight", "bias"] {
            for (attn, block, names) in [
                ("attn", "x_block.attn", ["to_q", "to_k", "to_v"]),
                (
                    "attn",
                    "context_block.attn",
                    ["add_q_proj", "add_k_proj", "add_v_proj"],
                ),
                ("attn2", "x_block.attn2", ["to_q", "to_k", "to_v"]),
            ] {
                let qkv = format!("{to}.{block}.qkv.{end}");
                for (j, n) in names.iter().enumerate() {
                    out.push((
                        format!("{from}.{attn}.{n}.{end}"),
                        Target::rows(qkv.clone(), j * hidden, hidden),
                    ));
                }
            }
        }
        for (ours, d) in MMDIT_MAP_BLOCK {
            out.push((format!("{from}.{d}"), Target::whole(format!("{to}.{ours}"))));
        }
    }
    let swapped = |key: String| Target {
        key,
        slice: None,
        swap_halves: true,
    };
    for (ours, d) in MMDIT_MAP_BASIC {
        out.push((d.to_string(), Target::whole(format!("{p}{ours}"))));
    }
    let last = depth.saturating_sub(1);
    for end in ["bias", "weight"] {
        out.push((
            format!("norm_out.linear.{end}"),
            swapped(format!("{p}final_layer.adaLN_modulation.1.{end}")),
        ));
        // Replaces the block entry of the same name (a dict assignment in ComfyUI).
        let d = format!("transformer_blocks.{last}.norm1_context.linear.{end}");
        let t = swapped(format!(
            "{p}joint_blocks.{last}.context_block.adaLN_modulation.1.{end}"
        ));
        match out.iter_mut().find(|(k, _)| *k == d) {
            Some(e) => e.1 = t,
            None => out.push((d, t)),
        }
    }
    out
}

/// comfy/utils.py `MMDIT_MAP_BLOCK`: (joint block weight, diffusers transformer block weight).
const MMDIT_MAP_BLOCK: &[(&str, &str)] = &[
    (
        "context_block.adaLN_modulation.1.bias",
        "norm1_context.linear.bias",
    ),
    (
        "context_block.adaLN_modulation.1.weight",
        "norm1_context.linear.weight",
    ),
    ("context_block.attn.proj.bias", "attn.to_add_out.bias"),
    ("context_block.attn.proj.weight", "attn.to_add_out.weight"),
    ("context_block.mlp.fc1.bias", "ff_context.net.0.proj.bias"),
    (
        "context_block.mlp.fc1.weight",
        "ff_context.net.0.proj.weight",
    ),
    ("context_block.mlp.fc2.bias", "ff_context.net.2.bias"),
    ("context_block.mlp.fc2.weight", "ff_context.net.2.weight"),
    ("context_block.attn.ln_q.weight", "attn.norm_added_q.weight"),
    ("context_block.attn.ln_k.weight", "attn.norm_added_k.weight"),
    ("x_block.adaLN_modulation.1.bias", "norm1.linear.bias"),
    ("x_block.adaLN_modulation.1.weight", "norm1.linear.weight"),
    ("x_block.attn.proj.bias", "attn.to_out.0.bias"),
    ("x_block.attn.proj.weight", "attn.to_out.0.weight"),
    ("x_block.attn.ln_q.weight", "attn.norm_q.weight"),
    ("x_block.attn.ln_k.weight", "attn.norm_k.weight"),
    ("x_block.attn2.proj.bias", "attn2.to_out.0.bias"),
    ("x_block.attn2.proj.weight", "attn2.to_out.0.weight"),
    ("x_block.attn2.ln_q.weight", "attn2.norm_q.weight"),
    ("x_block.attn2.ln_k.weight", "attn2.norm_k.weight"),
    ("x_block.mlp.fc1.bias", "ff.net.0.proj.bias"),
    ("x_block.mlp.fc1.weight", "ff.net.0.proj.weight"),
    ("x_block.mlp.fc2.bias", "ff.net.2.bias"),
    ("x_block.mlp.fc2.weight", "ff.net.2.weight"),
];

/// comfy/utils.py `MMDIT_MAP_BASIC` without the two swapped `final_layer.adaLN_modulation`
/// entries ([`mmdit_to_diffusers`] adds those).
const MMDIT_MAP_BASIC: &[(&str, &str)] = &[
    ("context_embedder.bias", "context_embedder.bias"),
    ("context_embedder.weight", "context_embedder.weight"),
    (
        "t_embedder.mlp.0.bias",
        "time_text_embed.timestep_embedder.linear_1.bias",
    ),
    (
        "t_embedder.mlp.0.weight",
        "time_text_embed.timestep_embedder.linear_1.weight",
    ),
    (
        "t_embedder.mlp.2.bias",
        "time_text_embed.timestep_embedder.linear_2.bias",
    ),
    (
        "t_embedder.mlp.2.weight",
        "time_text_embed.timestep_embedder.linear_2.weight",
    ),
    ("x_embedder.proj.bias", "pos_embed.proj.bias"),
    ("x_embedder.proj.weight", "pos_embed.proj.weight"),
    (
        "y_embedder.mlp.0.bias",
        "time_text_embed.text_embedder.linear_1.bias",
    ),
    (
        "y_embedder.mlp.0.weight",
        "time_text_embed.text_embedder.linear_1.weight",
    ),
    (
        "y_embedder.mlp.2.bias",
        "time_text_embed.text_embedder.linear_2.bias",
    ),
    (
        "y_embedder.mlp.2.weight",
        "time_text_embed.text_embedder.linear_2.weight",
    ),
    ("pos_embed", "pos_embed.pos_embed"),
    ("final_layer.linear.bias", "proj_out.bias"),
    ("final_layer.linear.weight", "proj_out.weight"),
];

/// ComfyUI's `flux_to_diffusers` with our weight keys as targets: (diffusers key, target)
/// in its order (MAP_BASIC, a Python set there, last in a fixed order here).
pub fn flux_to_diffusers(double: usize, single: usize, hidden: usize) -> Vec<(String, Target)> {
    let mut out = Vec::new();
    let p = UNET_PREFIX;
    for i in 0..double {
        let from = format!("transformer_blocks.{i}");
        let to = format!("{p}double_blocks.{i}");
        for end in ["weight", "bias"] {
            for (side, names) in [
                ("img", ["to_q", "to_k", "to_v"]),
                ("txt", ["add_q_proj", "add_k_proj", "add_v_proj"]),
            ] {
                let qkv = format!("{to}.{side}_attn.qkv.{end}");
                for (j, n) in names.iter().enumerate() {
                    out.push((
                        format!("{from}.attn.{n}.{end}"),
                        Target::rows(qkv.clone(), j * hidden, hidden),
                    ));
                }
            }
        }
        for (d, b) in [
            ("attn.to_out.0.weight", "img_attn.proj.weight"),
            ("attn.to_out.0.bias", "img_attn.proj.bias"),
            ("norm1.linear.weight", "img_mod.lin.weight"),
            ("norm1.linear.bias", "img_mod.lin.bias"),
            ("norm1_context.linear.weight", "txt_mod.lin.weight"),
            ("norm1_context.linear.bias", "txt_mod.lin.bias"),
            ("attn.to_add_out.weight", "txt_attn.proj.weight"),
            ("attn.to_add_out.bias", "txt_attn.proj.bias"),
            ("ff.net.0.proj.weight", "img_mlp.0.weight"),
            ("ff.net.0.proj.bias", "img_mlp.0.bias"),
            ("ff.net.2.weight", "img_mlp.2.weight"),
            ("ff.net.2.bias", "img_mlp.2.bias"),
            ("ff_context.net.0.proj.weight", "txt_mlp.0.weight"),
            ("ff_context.net.0.proj.bias", "txt_mlp.0.bias"),
            ("ff_context.net.2.weight", "txt_mlp.2.weight"),
            ("ff_context.net.2.bias", "txt_mlp.2.bias"),
            ("attn.norm_q.weight", "img_attn.norm.query_norm.scale"),
            ("attn.norm_k.weight", "img_attn.norm.key_norm.scale"),
            ("attn.norm_added_q.weight", "txt_attn.norm.query_norm.scale"),
            ("attn.norm_added_k.weight", "txt_attn.norm.key_norm.scale"),
        ] {
            out.push((format!("{from}.{d}"), Target::whole(format!("{to}.{b}"))));
        }
    }
    for i in 0..single {
        let from = format!("single_transformer_blocks.{i}");
        let to = format!("{p}single_blocks.{i}");
        for end in ["weight", "bias"] {
            let lin = format!("{to}.linear1.{end}");
            for (j, n) in ["to_q", "to_k", "to_v"].iter().enumerate() {
                out.push((
                    format!("{from}.attn.{n}.{end}"),
                    Target::rows(lin.clone(), j * hidden, hidden),
                ));
            }
            out.push((
                format!("{from}.proj_mlp.{end}"),
                Target::rows(lin.clone(), 3 * hidden, 4 * hidden),
            ));
        }
        for (d, b) in [
            ("norm.linear.weight", "modulation.lin.weight"),
            ("norm.linear.bias", "modulation.lin.bias"),
            ("proj_out.weight", "linear2.weight"),
            ("proj_out.bias", "linear2.bias"),
            ("attn.norm_q.weight", "norm.query_norm.scale"),
            ("attn.norm_k.weight", "norm.key_norm.scale"),
        ] {
            out.push((format!("{from}.{d}"), Target::whole(format!("{to}.{b}"))));
        }
    }
    for (ours, d) in [
        ("final_layer.linear.bias", "proj_out.bias"),
        ("final_layer.linear.weight", "proj_out.weight"),
        ("img_in.bias", "x_embedder.bias"),
        ("img_in.weight", "x_embedder.weight"),
        (
            "time_in.in_layer.bias",
            "time_text_embed.timestep_embedder.linear_1.bias",
        ),
        (
            "time_in.in_layer.weight",
            "time_text_embed.timestep_embedder.linear_1.weight",
        ),
        (
            "time_in.out_layer.bias",
            "time_text_embed.timestep_embedder.linear_2.bias",
        ),
        (
            "time_in.out_layer.weight",
            "time_text_embed.timestep_embedder.linear_2.weight",
        ),
        ("txt_in.bias", "context_embedder.bias"),
        ("txt_in.weight", "context_embedder.weight"),
        (
            "vector_in.in_layer.bias",
            "time_text_embed.text_embedder.linear_1.bias",
        ),
        (
            "vector_in.in_layer.weight",
            "time_text_embed.text_embedder.linear_1.weight",
        ),
        (
            "vector_in.out_layer.bias",
            "time_text_embed.text_embedder.linear_2.bias",
        ),
        (
            "vector_in.out_layer.weight",
            "time_text_embed.text_embedder.linear_2.weight",
        ),
        (
            "guidance_in.in_layer.bias",
            "time_text_embed.guidance_embedder.linear_1.bias",
        ),
        (
            "guidance_in.in_layer.weight",
            "time_text_embed.guidance_embedder.linear_1.weight",
        ),
        (
            "guidance_in.out_layer.bias",
            "time_text_embed.guidance_embedder.linear_2.bias",
        ),
        (
            "guidance_in.out_layer.weight",
            "time_text_embed.guidance_embedder.linear_2.weight",
        ),
        ("pos_embed_input.bias", "controlnet_x_embedder.bias"),
        ("pos_embed_input.weight", "controlnet_x_embedder.weight"),
    ] {
        out.push((d.to_string(), Target::whole(format!("{p}{ours}"))));
    }
    for end in ["bias", "weight"] {
        out.push((
            format!("norm_out.linear.{end}"),
            Target {
                key: format!("{p}final_layer.adaLN_modulation.1.{end}"),
                slice: None,
                swap_halves: true,
            },
        ));
    }
    out
}

/// ComfyUI's `unet_to_diffusers` restricted to weights: (diffusers module, LDM module) pairs.
/// Block structure (attention present, transformer depth) is read from the weights.
pub fn unet_to_diffusers(weights: &WeightMap, cfg: &UnetConfig) -> Vec<(String, String)> {
    let has = |m: &str| weights.contains_key(&format!("{UNET_PREFIX}{m}"));
    let depth = |block: &str| {
        let mut t = 0;
        while has(&format!("{block}.transformer_blocks.{t}.attn1.to_q.weight")) {
            t += 1;
        }
        t
    };
    let mut out = Vec::new();
    let attention = |out: &mut Vec<(String, String)>, d: &str, l: &str, n: usize| {
        for a in ATTENTION {
            out.push((format!("{d}.{a}"), format!("{l}.{a}")));
        }
        for t in 0..n {
            for b in TRANSFORMER_BLOCK {
                out.push((
                    format!("{d}.transformer_blocks.{t}.{b}"),
                    format!("{l}.transformer_blocks.{t}.{b}"),
                ));
            }
        }
    };
    let resnet = |out: &mut Vec<(String, String)>, d: &str, l: &str| {
        for (ldm, diff) in RESNET {
            out.push((format!("{d}.{diff}"), format!("{l}.{ldm}")));
        }
    };
    let blocks = cfg.channel_mult.len();
    for x in 0..blocks {
        let res = cfg.num_res_blocks[x];
        let mut n = 1 + (res + 1) * x;
        for i in 0..res {
            resnet(
                &mut out,
                &format!("down_blocks.{x}.resnets.{i}"),
                &format!("input_blocks.{n}.0"),
            );
            let l = format!("input_blocks.{n}.1");
            let t = depth(&l);
            if t > 0 {
                attention(&mut out, &format!("down_blocks.{x}.attentions.{i}"), &l, t);
            }
            n += 1;
        }
        out.push((
            format!("down_blocks.{x}.downsamplers.0.conv"),
            format!("input_blocks.{n}.0.op"),
        ));
    }
    attention(
        &mut out,
        "mid_block.attentions.0",
        "middle_block.1",
        depth("middle_block.1"),
    );
    for (i, n) in [(0, 0), (1, 2)] {
        resnet(
            &mut out,
            &format!("mid_block.resnets.{i}"),
            &format!("middle_block.{n}"),
        );
    }
    let rev: Vec<usize> = cfg.num_res_blocks.iter().rev().copied().collect();
    for (x, &res) in rev.iter().enumerate() {
        let l = res + 1;
        for i in 0..l {
            let n = l * x + i;
            resnet(
                &mut out,
                &format!("up_blocks.{x}.resnets.{i}"),
                &format!("output_blocks.{n}.0"),
            );
            let mut c = 1;
            let lb = format!("output_blocks.{n}.1");
            let t = depth(&lb);
            if t > 0 {
                c += 1;
                attention(&mut out, &format!("up_blocks.{x}.attentions.{i}"), &lb, t);
            }
            if i == l - 1 {
                out.push((
                    format!("up_blocks.{x}.upsamplers.0.conv"),
                    format!("output_blocks.{n}.{c}.conv"),
                ));
            }
        }
    }
    for (d, l) in BASIC {
        out.push((d.to_string(), l.to_string()));
    }
    out
}
