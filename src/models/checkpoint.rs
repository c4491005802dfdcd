//! Single-file checkpoints: memory-mapped safetensors loading, key
//! normalisation, SD1.x detection, and the standalone VAE loader.
//!
//! Layout (numerics spec §6.1): `model.diffusion_model.*` (UNet),
//! `first_stage_model.*` (VAE), `cond_stage_model.transformer.text_model.*`
//! (CLIP-L; old files lack `text_model.`, which is inserted here).
//!
//! Dtypes: floating tensors are converted to the compute dtype (the VAE's may
//! differ, [`LoadOptions::vae_dtype`]) on the CPU, then moved to the device.
//! For f32 compute, CLIP weights are first rounded to fp16, like ComfyUI's
//! default `text_encoder_dtype()` (fp16 storage, f32 compute via manual_cast) —
//! see [`LoadOptions::clip_fp16_round`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::models::clip::{ClipTextEncoder, SD1_CLIP_PREFIX};
use crate::models::unet::{Unet, UnetConfig, UNET_PREFIX};
use crate::models::vae::Vae;
use crate::models::{ModelError, Result};

/// A state dict: tensor name → tensor.
pub type WeightMap = HashMap<String, Tensor>;

/// State-dict prefix of the VAE in a single-file checkpoint.
pub const VAE_PREFIX: &str = "first_stage_model.";

/// What the model predicts (decided by marker keys, like ComfyUI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Eps,
    V,
}

/// Options of [`load_sd1_checkpoint_with`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Round CLIP weights through fp16 when the text encoder computes in f32
    /// (ComfyUI's CPU default: fp16 storage, f32 compute; `--fp32-text-enc` turns
    /// it off). Default true. Other dtypes are stored as they compute.
    pub clip_fp16_round: bool,
    /// Directories searched for `embedding:NAME` textual inversions.
    pub embedding_directories: Vec<PathBuf>,
    /// Dtype of the VAE when it differs from the UNet/CLIP dtype (ComfyUI's separate VAE
    /// dtype); None: the same dtype.
    pub vae_dtype: Option<DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clip_fp16_round: true,
            embedding_directories: Vec::new(),
            vae_dtype: None,
        }
    }
}

/// A loaded SD1.x checkpoint. Every part is cheap to clone.
#[derive(Clone)]
pub struct Sd1Checkpoint {
    /// All tensors by (normalised) state-dict key, on `device` in the compute
    /// dtype (the VAE's in its own dtype; CLIP weights already fp16-rounded).
    /// Build patched models from it with `Unet::from_weights(map, UNET_PREFIX, …)`
    /// etc.
    pub weights: Arc<WeightMap>,
    pub unet: Unet,
    pub clip: ClipTextEncoder,
    pub vae: Vae,
    pub prediction: Prediction,
    pub dtype: DType,
    pub device: Device,
}

/// Reads every tensor of a safetensors file through a memory map.
/// Floating tensors are converted to `dtype`; integer tensors keep theirs.
pub fn load_safetensors(path: &Path, device: &Device, dtype: DType) -> Result<WeightMap> {
    load_safetensors_as(path, device, &|_| dtype)
}

/// [`load_safetensors`] with a dtype per tensor name (`dtype_of`), so each model
/// of a checkpoint is converted once, on the CPU, straight from the file's dtype
/// before it is moved to `device`.
pub fn load_safetensors_as(
    path: &Path,
    device: &Device,
    dtype_of: &dyn Fn(&str) -> DType,
) -> Result<WeightMap> {
    // SAFETY: the file is mapped read-only and must not be modified while
    // loading; every tensor is copied out of the map before it is dropped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
        ModelError::NotSupported(format!("{}: not a safetensors file ({e})", path.display()))
    })?;
    let mut out = HashMap::new();
    for (name, _) in st.tensors() {
        let t = st.load(&name, &Device::Cpu)?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype_of(&name))?
        } else {
            t
        };
        out.insert(name, t.to_device(device)?);
    }
    Ok(out)
}

/// Renames CLIP keys of old files (`cond_stage_model.transformer.X` without
/// `text_model.`) to `cond_stage_model.transformer.text_model.X`.
pub fn normalize_keys(weights: WeightMap) -> WeightMap {
    let old = "cond_stage_model.transformer.";
    weights
        .into_iter()
        .map(|(k, v)| {
            if let Some(rest) = k.strip_prefix(old) {
                if !rest.starts_with("text_model.") {
                    return (format!("{SD1_CLIP_PREFIX}{rest}"), v);
                }
            }
            (k, v)
        })
        .collect()
}

/// "N tensors with prefixes a.* (k), b.* (m)" for error messages.
pub fn describe_prefixes(weights: &WeightMap) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for k in weights.keys() {
        let p = match k.find('.') {
            Some(i) => format!("{}.*", &k[..i]),
            None => k.clone(),
        };
        *counts.entry(p).or_default() += 1;
    }
    let mut parts: Vec<(String, usize)> = counts.into_iter().collect();
    parts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = parts
        .iter()
        .take(8)
        .map(|(p, n)| format!("{p} ({n})"))
        .collect();
    let more = if parts.len() > 8 {
        format!(", … {} more", parts.len() - 8)
    } else {
        String::new()
    };
    format!(
        "found {} tensors with prefixes {}{more}",
        weights.len(),
        shown.join(", ")
    )
}

/// ComfyUI's UNet prefix choice: the candidate with most keys (> 5 needed).
pub fn unet_prefix(weights: &WeightMap) -> Option<&'static str> {
    ["model.diffusion_model.", "model.model.", "net."]
        .into_iter()
        .map(|p| (p, weights.keys().filter(|k| k.starts_with(p)).count()))
        .filter(|(_, n)| *n > 5)
        .max_by_key(|(_, n)| *n)
        .map(|(p, _)| p)
}

/// Checks that `weights` is an SD1.x single-file checkpoint; returns the UNet
/// config. The error says what was found instead.
pub fn detect_sd1(weights: &WeightMap) -> Result<UnetConfig> {
    match unet_prefix(weights) {
        Some(UNET_PREFIX) => {}
        Some(p) => {
            return Err(ModelError::NotSupported(format!(
                "UNet keys use the prefix {p}* (not an LDM SD1.x checkpoint); {}",
                describe_prefixes(weights)
            )))
        }
        None => {
            return Err(ModelError::NotSupported(format!(
                "no model.diffusion_model.* keys; {}",
                describe_prefixes(weights)
            )))
        }
    }
    if !weights.contains_key(&format!("{UNET_PREFIX}input_blocks.0.0.weight")) {
        return Err(ModelError::NotSupported(format!(
            "no {UNET_PREFIX}input_blocks.0.0.weight (not an LDM UNet); {}",
            describe_prefixes(weights)
        )));
    }
    let cfg = UnetConfig::detect(weights, UNET_PREFIX)?;
    if cfg.adm_in_channels.is_some() || cfg.use_linear_in_transformer {
        return Err(ModelError::NotSupported(format!(
            "UNet looks like SDXL/SD2 (adm_in_channels {:?}, linear transformer projections {}), \
             not SD1.x",
            cfg.adm_in_channels, cfg.use_linear_in_transformer
        )));
    }
    if weights
        .keys()
        .any(|k| k.starts_with("conditioner.embedders."))
    {
        return Err(ModelError::NotSupported(
            "has conditioner.embedders.* (SDXL text encoders), not SD1.x".into(),
        ));
    }
    for (what, key) in [
        (
            "text encoder",
            format!("{SD1_CLIP_PREFIX}embeddings.token_embedding.weight"),
        ),
        ("VAE", format!("{VAE_PREFIX}decoder.conv_in.weight")),
    ] {
        if !weights.contains_key(&key) {
            return Err(ModelError::NotSupported(format!(
                "no {what} in the checkpoint (missing {key}); {}",
                describe_prefixes(weights)
            )));
        }
    }
    Ok(cfg)
}

/// Loads an SD1.x single-file checkpoint (CheckpointLoaderSimple) with the
/// default [`LoadOptions`].
pub fn load_sd1_checkpoint(
    path: impl AsRef<Path>,
    device: &Device,
    dtype: DType,
) -> Result<Sd1Checkpoint> {
    load_sd1_checkpoint_with(path, device, dtype, &LoadOptions::default())
}

/// [`load_sd1_checkpoint`] with options.
pub fn load_sd1_checkpoint_with(
    path: impl AsRef<Path>,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Sd1Checkpoint> {
    let path = path.as_ref();
    let vae_dtype = options.vae_dtype.unwrap_or(dtype);
    let weights = load_safetensors_as(path, device, &|name| {
        if name.starts_with(VAE_PREFIX) {
            vae_dtype
        } else {
            dtype
        }
    })?;
    sd1_from_weights(weights, device, dtype, options).map_err(|e| match e {
        ModelError::NotSupported(m) => ModelError::NotSupported(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// Builds an [`Sd1Checkpoint`] from an in-memory state dict (LDM keys).
pub fn sd1_from_weights(
    weights: WeightMap,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Sd1Checkpoint> {
    let mut weights = normalize_keys(weights);
    detect_sd1(&weights)?;
    if options.clip_fp16_round && dtype == DType::F32 {
        for (k, v) in weights.iter_mut() {
            if k.starts_with("cond_stage_model.") && v.dtype().is_float() {
                *v = v.to_dtype(DType::F16)?.to_dtype(dtype)?;
            }
        }
    }
    let prediction = if weights.contains_key("v_pred") {
        Prediction::V
    } else {
        Prediction::Eps
    };
    let unet = Unet::from_weights(&weights, UNET_PREFIX, dtype, device)?;
    let clip = ClipTextEncoder::from_weights(
        &weights,
        SD1_CLIP_PREFIX,
        dtype,
        device,
        options.embedding_directories.clone(),
    )?;
    let vae_dtype = options.vae_dtype.unwrap_or(dtype);
    let vae = Vae::from_weights(&weights, VAE_PREFIX, vae_dtype, device)?;
    Ok(Sd1Checkpoint {
        weights: Arc::new(weights),
        unet,
        clip,
        vae,
        prediction,
        dtype,
        device: device.clone(),
    })
}

/// Loads a standalone VAE file (ComfyUI's VAELoader): plain
/// `encoder.*`/`decoder.*` keys, or the same under `first_stage_model.`.
pub fn load_vae(path: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Vae> {
    let path = path.as_ref();
    let weights = load_safetensors(path, device, dtype)?;
    vae_from_weights(&weights)
        .map_err(|e| match e {
            ModelError::NotSupported(m) => {
                ModelError::NotSupported(format!("{}: {m}", path.display()))
            }
            e => e,
        })
        .and_then(|prefix| Vae::from_weights(&weights, prefix, dtype, device))
}

/// The key prefix of the VAE inside `weights`.
pub fn vae_from_weights(weights: &WeightMap) -> Result<&'static str> {
    for p in ["", VAE_PREFIX] {
        if weights.contains_key(&format!("{p}decoder.conv_in.weight"))
            && weights.contains_key(&format!("{p}encoder.conv_in.weight"))
        {
            return Ok(p);
        }
    }
    if weights.contains_key("decoder.up_blocks.0.resnets.0.norm1.weight") {
        return Err(ModelError::NotSupported(
            "diffusers-format VAE (decoder.up_blocks.*) is not supported; use the LDM layout"
                .into(),
        ));
    }
    Err(ModelError::NotSupported(format!(
        "no encoder.conv_in/decoder.conv_in keys (not a VAE); {}",
        describe_prefixes(weights)
    )))
}
