//! ComfyUI's LoRA key map for the LDM UNet families (numerics spec §7.1): LoRA key prefix →
//! model weight key (`model_lora_keys_unet` + `model_lora_keys_clip`).
//!
//! Targets are keys of our checkpoint weight map (`model.diffusion_model.*`; SD1's CLIP-L
//! at `cond_stage_model.transformer.text_model.*`, SDXL's at `clip_l.transformer.*` and its
//! bigG at `clip_g.transformer.*`); ComfyUI's own state-dict names (`diffusion_model.*`,
//! `clip_l.transformer.*`) appear in the generic forms. kohya names SDXL's encoders
//! `lora_te1_` (CLIP-L) and `lora_te2_` (bigG), diffusers `text_encoder` and
//! `text_encoder_2`; a refiner's lone bigG answers to the single-encoder names.

use std::collections::HashMap;

use crate::models::checkpoint::{WeightMap, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX};
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

/// LoRA key prefix → target weight key, in ComfyUI's insertion order (it decides which patch
/// wins when two prefixes of one file name the same weight).
#[derive(Debug, Default, Clone)]
pub struct KeyMap {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl KeyMap {
    /// Python dict assignment: a known key keeps its place and takes the new target.
    fn insert(&mut self, key: String, target: String) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = target,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, target));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.entries[i].1.as_str())
    }

    /// (LoRA key, target) pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t.as_str()))
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
            let cfg = UnetConfig::detect(weights, UNET_PREFIX)?;
            for (diffusers, ldm) in unet_to_diffusers(weights, &cfg) {
                let target = format!("{UNET_PREFIX}{ldm}.weight");
                if !weights.contains_key(&target) {
                    continue;
                }
                let under = diffusers.replace('.', "_");
                map.insert(format!("lora_unet_{under}"), target.clone());
                map.insert(format!("lycoris_{under}"), target.clone());
                for p in ["", "unet."] {
                    let mut key = format!("{p}{}", diffusers.replace(".to_", ".processor.to_"));
                    if key.ends_with(".to_out.0") {
                        key.truncate(key.len() - 2);
                    }
                    map.insert(key, target.clone());
                }
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
