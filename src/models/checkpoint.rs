//! Single-file checkpoints: memory-mapped safetensors loading, key
//! normalisation, family detection ([`Family::detect`]), and the standalone VAE loader.
//!
//! Layout (numerics spec §6.1): `model.diffusion_model.*` (UNet),
//! `first_stage_model.*` (VAE), and the text encoders: SD1's
//! `cond_stage_model.transformer.text_model.*` (CLIP-L; old files lack `text_model.`,
//! which is inserted here); SDXL's `conditioner.embedders.{0,1}.*`, renamed to
//! ComfyUI's `clip_l.`/`clip_g.` keys with OpenCLIP converted to HF names. Flux
//! all-in-one files (`flux1-dev-fp8.safetensors`, ComfyUI's `Flux` model config) keep the
//! transformer under `model.diffusion_model.`, the text encoders under `text_encoders.`
//! (`clip_l.transformer.*`, `t5xxl.transformer.*`, stripped to ComfyUI's model keys) and
//! the VAE under `vae.` (moved to [`VAE_PREFIX`]).
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

use crate::models::diffusion::DiffusionNet;
use crate::models::family::Family;
use crate::models::flux;
use crate::models::mmdit;
use crate::models::text::clip::{open_clip, ClipRole, ClipTextEncoder, SD1_CLIP_PREFIX};
use crate::models::text::t5::T5XXL_PREFIX;
use crate::models::unet::{Unet, UnetConfig, UNET_PREFIX};
use crate::models::vae::Vae;
use crate::models::{ModelError, Result};

/// A state dict: tensor name → tensor.
pub type WeightMap = HashMap<String, Tensor>;

/// State-dict prefix of the VAE in a single-file checkpoint.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// State-dict prefix of the VAE in a Flux all-in-one checkpoint (ComfyUI's
/// `Flux.vae_key_prefix`); renamed to [`VAE_PREFIX`] on load.
pub const FLUX_VAE_PREFIX: &str = "vae.";
/// State-dict prefix of the text encoders in a Flux all-in-one checkpoint (ComfyUI's
/// `Flux.text_encoder_key_prefix`); stripped on load, like `process_clip_state_dict`.
pub const FLUX_TEXT_PREFIX: &str = "text_encoders.";

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

/// Reads every tensor of a safetensors file through a memory map, each kept in
/// [`storage_dtype`] of its file dtype and `dtype` (the compute dtype); integer tensors
/// keep theirs.
pub fn load_safetensors(path: &Path, device: &Device, dtype: DType) -> Result<WeightMap> {
    load_safetensors_as(path, device, &|_| dtype)
}

/// The dtype a weight is kept in memory for compute dtype `compute`: the file's own when it
/// is no wider (the layers widen per operation, see `nn::weights_vb`; exact, so the numbers
/// are those of an f32 copy), else `compute`. An f16 checkpoint computed in f32 thus costs
/// its file size, and an fp8 one a quarter of its f32 size.
pub fn storage_dtype(file: DType, compute: DType) -> DType {
    if file.is_float() && file.size_in_bytes() <= compute.size_in_bytes() {
        file
    } else {
        compute
    }
}

/// [`load_safetensors`] with a compute dtype per tensor name (`dtype_of`), so each model
/// of a checkpoint gets its own storage rule, applied on the CPU straight from the file's
/// dtype before the tensor is moved to `device`.
pub fn load_safetensors_as(
    path: &Path,
    device: &Device,
    dtype_of: &dyn Fn(&str) -> DType,
) -> Result<WeightMap> {
    load_safetensors_mapped(path, device, dtype_of, &|_, t| Ok(t))
}

/// [`load_safetensors_as`] with `map` applied to each tensor as it is read (on the CPU,
/// before it moves to `device`), so a transform that shrinks the weights (UNETLoader's fp8
/// `weight_dtype`) never holds the whole file in its wider dtype: a bf16 Flux (23.8 GB)
/// loads as fp8 in about 12 GB.
pub fn load_safetensors_mapped(
    path: &Path,
    device: &Device,
    dtype_of: &dyn Fn(&str) -> DType,
    map: &dyn Fn(&str, Tensor) -> Result<Tensor>,
) -> Result<WeightMap> {
    // SAFETY: the file is mapped read-only and must not be modified while
    // loading; every tensor is copied out of the map before it is dropped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
        ModelError::NotSupported(format!("{}: not a safetensors file ({e})", path.display()))
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let compute = dtype_of(&name);
        // fp8 tensors are read from their bytes (candle's reader has no F8_E5M2): e4m3fn
        // into candle's F8E4M3, e5m2 (the top byte of an f16) exactly into f16. Matched by
        // the format's dtype name: candle's view comes from its own safetensors version.
        let fp8 = super::fp8::Fp8Kind::from_safetensors_dtype(&format!("{:?}", view.dtype()));
        let t = match fp8 {
            Some(super::fp8::Fp8Kind::E4m3fn) => {
                Tensor::from_raw_buffer(view.data(), DType::F8E4M3, view.shape(), &Device::Cpu)?
            }
            Some(kind) => {
                let data = super::fp8::decode_slice(kind, view.data());
                Tensor::from_vec(data, view.shape(), &Device::Cpu)?.to_dtype(DType::F16)?
            }
            None => st.load(&name, &Device::Cpu)?,
        };
        let t = if t.dtype().is_float() {
            let keep = storage_dtype(t.dtype(), compute);
            if keep == t.dtype() {
                t
            } else {
                t.to_dtype(keep)?
            }
        } else {
            t
        };
        let t = map(&name, t)?;
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
    unet_prefix_of(&weights.keys().map(String::as_str).collect::<Vec<_>>())
}

/// [`unet_prefix`] over a list of key names.
pub fn unet_prefix_of(keys: &[&str]) -> Option<&'static str> {
    ["model.diffusion_model.", "model.model.", "net."]
        .into_iter()
        .map(|p| (p, keys.iter().filter(|k| k.starts_with(p)).count()))
        .filter(|(_, n)| *n > 5)
        .max_by_key(|(_, n)| *n)
        .map(|(p, _)| p)
}

/// The text encoders a checkpoint carries, in its family's roles.
#[derive(Clone)]
pub enum TextEncoders {
    /// SD1.x: CLIP-L under [`SD1_CLIP_PREFIX`].
    Sd1(ClipTextEncoder),
    /// SDXL base: CLIP-L under [`SDXL_CLIP_L_PREFIX`] and OpenCLIP bigG under
    /// [`SDXL_CLIP_G_PREFIX`].
    Sdxl {
        l: ClipTextEncoder,
        g: ClipTextEncoder,
    },
    /// SDXL refiner: bigG only.
    SdxlRefiner(ClipTextEncoder),
    /// Flux: CLIP-L (its unprojected pooled output) under [`SDXL_CLIP_L_PREFIX`] and
    /// T5-XXL (the conditioning) under [`crate::models::text::t5::T5XXL_PREFIX`].
    Flux {
        l: ClipTextEncoder,
        t5: crate::models::text::t5::T5Encoder,
    },
    /// SD3/SD3.5: any of CLIP-L (under [`SDXL_CLIP_L_PREFIX`]), CLIP-G (under
    /// [`SDXL_CLIP_G_PREFIX`]) and T5-XXL (under [`T5XXL_PREFIX`]); none for a checkpoint
    /// without text encoders (ComfyUI's CLIP output is then None).
    Sd3 {
        l: Option<ClipTextEncoder>,
        g: Option<ClipTextEncoder>,
        t5: Option<crate::models::text::t5::T5Encoder>,
    },
}

impl TextEncoders {
    /// Every CLIP encoder of the set (CLIP-L before CLIP-G; Flux's T5 is not a CLIP).
    pub fn members(&self) -> Vec<&ClipTextEncoder> {
        match self {
            TextEncoders::Sd1(l) => vec![l],
            TextEncoders::Sdxl { l, g } => vec![l, g],
            TextEncoders::SdxlRefiner(g) => vec![g],
            TextEncoders::Flux { l, .. } => vec![l],
            TextEncoders::Sd3 { l, g, .. } => l.iter().chain(g.iter()).collect(),
        }
    }
}

/// State-dict prefix SDXL's CLIP-L is renamed to (ComfyUI's `clip_l.` model keys).
pub const SDXL_CLIP_L_PREFIX: &str = "clip_l.transformer.text_model.";
/// State-dict prefix SDXL's bigG is renamed to (ComfyUI's `clip_g.` model keys).
pub const SDXL_CLIP_G_PREFIX: &str = "clip_g.transformer.text_model.";

/// A loaded single-file checkpoint of any supported family. Every part is cheap to clone.
#[derive(Clone)]
pub struct Checkpoint {
    pub family: Family,
    /// All tensors by (normalised) state-dict key: the diffusion network under
    /// [`UNET_PREFIX`], the text encoders under their family's prefixes, the VAE under
    /// [`VAE_PREFIX`].
    pub weights: Arc<WeightMap>,
    /// The diffusion network: an LDM UNet or a Flux transformer.
    pub model: DiffusionNet,
    pub text: TextEncoders,
    pub vae: Vae,
    pub prediction: Prediction,
    pub dtype: DType,
    pub device: Device,
}

/// Moves SDXL's `conditioner.embedders.*` text encoders to ComfyUI's model keys
/// (`SDXL.process_clip_state_dict` / `SDXLRefiner.process_clip_state_dict`): the base's
/// CLIP-L (`embedders.0.transformer.`) to `clip_l.transformer.` and its OpenCLIP bigG
/// (`embedders.1.model.`) to `clip_g.transformer.`; the refiner's bigG
/// (`embedders.0.model.`) to `clip_g.transformer.`.
pub fn normalize_sdxl_text_keys(weights: &mut WeightMap) -> Result<()> {
    let renames: Vec<(String, String)> = weights
        .keys()
        .filter_map(|k| {
            k.strip_prefix("conditioner.embedders.0.transformer.")
                .map(|rest| (k.clone(), format!("clip_l.transformer.{rest}")))
        })
        .collect();
    for (from, to) in renames {
        let t = weights.remove(&from).expect("listed above");
        weights.insert(to, t);
    }
    for from in [
        "conditioner.embedders.1.model.",
        "conditioner.embedders.0.model.",
    ] {
        if open_clip::is_open_clip(weights, from) {
            open_clip::convert_open_clip(weights, from, "clip_g.transformer.")?;
        }
    }
    Ok(())
}

/// "ERROR: Could not detect model type of: PATH" (ComfyUI's message) with what was found.
fn undetected(path: &Path, why: String) -> ModelError {
    ModelError::NotSupported(format!(
        "ERROR: Could not detect model type of: {}\n{why}",
        path.display()
    ))
}

/// Loads a single-file checkpoint (CheckpointLoaderSimple) of any supported family.
pub fn load_checkpoint_with(
    path: impl AsRef<Path>,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Checkpoint> {
    let path = path.as_ref();
    let vae_dtype = options.vae_dtype.unwrap_or(dtype);
    let weights = load_safetensors_as(path, device, &|name| {
        if name.starts_with(VAE_PREFIX) || name.starts_with(FLUX_VAE_PREFIX) {
            vae_dtype
        } else {
            dtype
        }
    })?;
    checkpoint_from_weights(weights, device, dtype, options).map_err(|e| match e {
        ModelError::NotSupported(m) if m.starts_with("ERROR: Could not detect") => undetected(
            path,
            m.split_once('\n')
                .map_or(String::new(), |x| x.1.to_string()),
        ),
        ModelError::NotSupported(m) => ModelError::NotSupported(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// Builds a [`Checkpoint`] from an in-memory state dict (LDM keys).
pub fn checkpoint_from_weights(
    weights: WeightMap,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Checkpoint> {
    let mut weights = normalize_keys(weights);
    normalize_sdxl_text_keys(&mut weights)?;
    match unet_prefix(&weights) {
        Some(UNET_PREFIX) => {}
        Some(p) => {
            return Err(ModelError::NotSupported(format!(
                "UNet keys use the prefix {p}* (not an LDM UNet checkpoint); {}",
                describe_prefixes(&weights)
            )))
        }
        None => {
            return Err(ModelError::NotSupported(format!(
                "no model.diffusion_model.* keys; {}",
                describe_prefixes(&weights)
            )))
        }
    }
    if flux::Config::is_flux(|k| weights.contains_key(k), UNET_PREFIX) {
        return flux_checkpoint(weights, device, dtype, options);
    }
    if mmdit::Config::is_mmdit(|k| weights.contains_key(k), UNET_PREFIX) {
        return sd3_checkpoint(weights, device, dtype, options);
    }
    if !weights.contains_key(&format!("{UNET_PREFIX}input_blocks.0.0.weight")) {
        return Err(ModelError::NotSupported(format!(
            "no {UNET_PREFIX}input_blocks.0.0.weight (not an LDM UNet nor a Flux transformer); {}",
            describe_prefixes(&weights)
        )));
    }
    let cfg = UnetConfig::detect(&weights, UNET_PREFIX)?;
    let family = Family::detect(&cfg).ok_or_else(|| {
        ModelError::NotSupported(format!(
            "ERROR: Could not detect model type\nthe UNet (model_channels {}, context {:?}, \
             ADM {:?}, linear projections {}, transformer depths {:?}) matches no family \
             comfyrs runs (SD1.x, SDXL, SDXL refiner)",
            cfg.model_channels,
            cfg.context_dim,
            cfg.adm_in_channels,
            cfg.use_linear_in_transformer,
            cfg.transformer_depth
        ))
    })?;
    let text_prefixes: &[(&str, &str)] = match family {
        Family::Sd15 => &[("text encoder", SD1_CLIP_PREFIX)],
        Family::Sdxl => &[
            ("CLIP-L text encoder", SDXL_CLIP_L_PREFIX),
            ("CLIP-G text encoder", SDXL_CLIP_G_PREFIX),
        ],
        Family::SdxlRefiner => &[("CLIP-G text encoder", SDXL_CLIP_G_PREFIX)],
        Family::Flux | Family::FluxSchnell | Family::Sd3 => {
            unreachable!("DiTs are detected by their keys above")
        }
    };
    for (what, prefix) in text_prefixes
        .iter()
        .map(|(w, p)| (*w, format!("{p}embeddings.token_embedding.weight")))
        .chain(std::iter::once((
            "VAE",
            format!("{VAE_PREFIX}decoder.conv_in.weight"),
        )))
    {
        if !weights.contains_key(&prefix) {
            return Err(ModelError::NotSupported(format!(
                "{} checkpoint without a {what} (missing {prefix}); {}",
                family.comfy_name(),
                describe_prefixes(&weights)
            )));
        }
    }
    if options.clip_fp16_round && dtype == DType::F32 {
        store_as_f16(&mut weights, |k| {
            ["cond_stage_model.", "clip_l.", "clip_g."]
                .iter()
                .any(|p| k.starts_with(p))
        })?;
    }
    let prediction = if weights.contains_key("v_pred") {
        Prediction::V
    } else {
        Prediction::Eps
    };
    let unet = Unet::from_weights(&weights, UNET_PREFIX, dtype, device)?;
    let dirs = &options.embedding_directories;
    let clip = |prefix: &str, role: ClipRole| {
        ClipTextEncoder::from_weights(&weights, prefix, role, dtype, device, dirs.clone())
    };
    let text = match family {
        Family::Sd15 => TextEncoders::Sd1(clip(SD1_CLIP_PREFIX, ClipRole::SD1)?),
        Family::Sdxl => TextEncoders::Sdxl {
            l: clip(SDXL_CLIP_L_PREFIX, ClipRole::SDXL_L)?,
            g: clip(SDXL_CLIP_G_PREFIX, ClipRole::SDXL_G)?,
        },
        Family::SdxlRefiner => {
            TextEncoders::SdxlRefiner(clip(SDXL_CLIP_G_PREFIX, ClipRole::SDXL_G)?)
        }
        Family::Flux | Family::FluxSchnell | Family::Sd3 => {
            unreachable!("DiTs are detected by their keys above")
        }
    };
    let vae_dtype = options.vae_dtype.unwrap_or(dtype);
    let vae = Vae::from_weights(&weights, VAE_PREFIX, vae_dtype, device)?;
    Ok(Checkpoint {
        family,
        weights: Arc::new(weights),
        model: DiffusionNet::Unet(unet),
        text,
        vae,
        prediction,
        dtype,
        device: device.clone(),
    })
}

/// The Flux transformer under `prefix` of `weights`: its family (dev with `guidance_in`,
/// else schnell) and the network computing in `dtype` over the stored weights. `Ok(None)`
/// when the keys are not a Flux transformer's; an error when they are an incomplete one.
/// ComfyUI's rule for an fp8 Flux file it keeps in fp8 (see
/// [`flux::round_wide_params_to_fp8`]): when the transformer's tensors under `prefix` are
/// mostly fp8 e4m3fn and `unet_dtype` keeps them so (`comfy_keeps_fp8`: on the CPU, the model
/// at 2 bytes per parameter does not fit 0.88 × RAM less the inference reserve; on CUDA
/// always, as for an fp8-capable GPU), its wider tensors are rounded to fp8 as ComfyUI's
/// fp8 parameters hold them. Other Flux files are left alone.
pub fn round_flux_params_if_kept_fp8(
    weights: &mut WeightMap,
    prefix: &str,
    device: &Device,
) -> Result<()> {
    use crate::models::lora::fp8_round::{comfy_keeps_fp8, total_ram};
    if !flux::Config::is_flux(|k| weights.contains_key(k), prefix)
        || !flux::mostly_fp8(weights, prefix)
    {
        return Ok(());
    }
    let params: usize = weights
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, t)| t.elem_count())
        .sum();
    let cuda = device.is_cuda();
    let total = if cuda {
        0
    } else {
        total_ram().unwrap_or(u64::MAX)
    };
    if comfy_keeps_fp8(params, total, cuda) {
        let n = flux::round_wide_params_to_fp8(weights, prefix)?;
        tracing::info!("Flux weights kept in fp8 as ComfyUI keeps them: {n} wider tensors rounded to fp8 e4m3fn");
    }
    Ok(())
}

pub fn flux_from_weights(
    weights: &WeightMap,
    prefix: &str,
    dtype: DType,
    device: &Device,
) -> Result<Option<(Family, DiffusionNet)>> {
    if !flux::Config::is_flux(|k| weights.contains_key(k), prefix) {
        return Ok(None);
    }
    let cfg = flux::Config::detect(
        |k| weights.get(k).map(|t| t.dims().to_vec()),
        &mut weights.keys().map(|k| k.as_str()),
        prefix,
    )
    .map_err(|e| {
        ModelError::NotSupported(format!(
            "ERROR: Could not detect model type\nan incomplete Flux transformer: {e}"
        ))
    })?;
    let family = Family::detect_flux(&cfg);
    let vb = crate::models::nn::weights_vb(weights.clone(), dtype, device);
    let net = flux::Flux::new(vb.pp(prefix.trim_end_matches('.')), &cfg)?;
    Ok(Some((family, DiffusionNet::from(net))))
}

/// A Flux all-in-one checkpoint (ComfyUI's `Flux`/`FluxSchnell` model configs): the
/// transformer under [`UNET_PREFIX`], CLIP-L and T5-XXL under [`FLUX_TEXT_PREFIX`] (moved
/// to ComfyUI's model keys `clip_l.transformer.` / [`T5XXL_PREFIX`]), the VAE under
/// [`FLUX_VAE_PREFIX`] (moved to [`VAE_PREFIX`]). Weights stay in their stored dtype (an fp8
/// transformer and T5 stay fp8); text-encoder weights wider than f16 are kept as f16 for
/// f32 compute, as DualCLIPLoader keeps them ([`LoadOptions::clip_fp16_round`]), so a
/// checkpoint and the split files holding the same tensors give the same model.
fn flux_checkpoint(
    weights: WeightMap,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Checkpoint> {
    let mut weights: WeightMap = weights
        .into_iter()
        .map(|(k, v)| {
            if let Some(rest) = k.strip_prefix(FLUX_TEXT_PREFIX) {
                (rest.to_string(), v)
            } else if let Some(rest) = k.strip_prefix(FLUX_VAE_PREFIX) {
                (format!("{VAE_PREFIX}{rest}"), v)
            } else {
                (k, v)
            }
        })
        .collect();
    round_flux_params_if_kept_fp8(&mut weights, UNET_PREFIX, device)?;
    let (family, model) = flux_from_weights(&weights, UNET_PREFIX, dtype, device)?
        .expect("the caller checked the Flux keys");
    for (what, key) in [
        (
            "CLIP-L text encoder",
            format!("{FLUX_TEXT_PREFIX}{SDXL_CLIP_L_PREFIX}embeddings.token_embedding.weight"),
        ),
        (
            "T5-XXL text encoder",
            format!("{FLUX_TEXT_PREFIX}{T5XXL_PREFIX}encoder.final_layer_norm.weight"),
        ),
        ("VAE", format!("{FLUX_VAE_PREFIX}decoder.conv_in.weight")),
    ] {
        let stored = key
            .strip_prefix(FLUX_TEXT_PREFIX)
            .map(str::to_string)
            .or_else(|| {
                key.strip_prefix(FLUX_VAE_PREFIX)
                    .map(|r| format!("{VAE_PREFIX}{r}"))
            })
            .expect("prefixed above");
        if !weights.contains_key(&stored) {
            return Err(ModelError::NotSupported(format!(
                "{} checkpoint without a {what} (missing {key}); {}",
                family.comfy_name(),
                describe_prefixes(&weights)
            )));
        }
    }
    if options.clip_fp16_round && dtype == DType::F32 {
        store_as_f16(&mut weights, |k| {
            (k.starts_with("clip_l.") || k.starts_with(T5XXL_PREFIX))
                && !crate::models::component_files::is_fp8_scale_key(k)
        })?;
    }
    let text = crate::models::component_files::flux_text_encoders(
        &weights,
        dtype,
        device,
        options.embedding_directories.clone(),
    )?;
    let vae_dtype = options.vae_dtype.unwrap_or(dtype);
    let vae = Vae::from_weights(&weights, VAE_PREFIX, vae_dtype, device)?;
    Ok(Checkpoint {
        family,
        weights: Arc::new(weights),
        model,
        text,
        vae,
        prediction: Prediction::Eps,
        dtype,
        device: device.clone(),
    })
}

/// The MMDiT under `prefix` of `weights` (SD3, SD3.5 medium/large): the family and the
/// network computing in `dtype` over the stored weights. `Ok(None)` when the keys are not an
/// MMDiT's; an error when they are one comfyrs cannot build (ComfyUI's `SD3` config needs
/// 16 input channels).
pub fn mmdit_from_weights(
    weights: &WeightMap,
    prefix: &str,
    dtype: DType,
    device: &Device,
) -> Result<Option<(Family, DiffusionNet)>> {
    if !mmdit::Config::is_mmdit(|k| weights.contains_key(k), prefix) {
        return Ok(None);
    }
    let undetected = |why: String| {
        ModelError::NotSupported(format!("ERROR: Could not detect model type\n{why}"))
    };
    let cfg = mmdit::Config::detect(
        |k| weights.get(k).map(|t| t.dims().to_vec()),
        &mut weights.keys().map(|k| k.as_str()),
        prefix,
    )
    .map_err(|e| undetected(format!("an MMDiT (SD3) comfyrs cannot build: {e}")))?;
    if cfg.in_channels != 16 {
        return Err(undetected(format!(
            "an MMDiT with {} input channels: comfyrs runs the SD3 family (16 channels)",
            cfg.in_channels
        )));
    }
    let vb = crate::models::nn::weights_vb(weights.clone(), dtype, device);
    let net = mmdit::Mmdit::new(vb.pp(prefix.trim_end_matches('.')), &cfg)?;
    Ok(Some((Family::Sd3, DiffusionNet::from(net))))
}

/// An SD3/SD3.5 single-file checkpoint (ComfyUI's `SD3` model config): the MMDiT under
/// [`UNET_PREFIX`], the VAE under [`VAE_PREFIX`], and any of CLIP-L, CLIP-G and T5-XXL under
/// `text_encoders.{clip_l,clip_g,t5xxl}.transformer.` (moved to ComfyUI's model keys), or
/// none (`sd3.5_large.safetensors` ships without them). Weights keep their stored dtype
/// (scaled fp8 included); text-encoder weights wider than f16 are kept as f16 for f32
/// compute, like the split files.
fn sd3_checkpoint(
    weights: WeightMap,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Checkpoint> {
    let mut weights: WeightMap = weights
        .into_iter()
        .map(|(k, v)| match k.strip_prefix(FLUX_TEXT_PREFIX) {
            Some(rest) => (rest.to_string(), v),
            None => (k, v),
        })
        .collect();
    mmdit::round_scaled_fp8_biases(&mut weights, UNET_PREFIX)?;
    let (family, model) = mmdit_from_weights(&weights, UNET_PREFIX, dtype, device)?
        .expect("the caller checked the MMDiT keys");
    let vae_key = format!("{VAE_PREFIX}decoder.conv_in.weight");
    if !weights.contains_key(&vae_key) {
        return Err(ModelError::NotSupported(format!(
            "SD3 checkpoint without a VAE (missing {vae_key}); {}",
            describe_prefixes(&weights)
        )));
    }
    if options.clip_fp16_round && dtype == DType::F32 {
        store_as_f16(&mut weights, |k| {
            (k.starts_with("clip_l.") || k.starts_with("clip_g.") || k.starts_with(T5XXL_PREFIX))
                && !crate::models::component_files::is_fp8_scale_key(k)
        })?;
    }
    let text = crate::models::component_files::sd3_text_encoders(
        &weights,
        dtype,
        device,
        options.embedding_directories.clone(),
    )?;
    let vae_dtype = options.vae_dtype.unwrap_or(dtype);
    let vae = Vae::from_weights(&weights, VAE_PREFIX, vae_dtype, device)?;
    Ok(Checkpoint {
        family,
        weights: Arc::new(weights),
        model,
        text,
        vae,
        prediction: Prediction::Eps,
        dtype,
        device: device.clone(),
    })
}

/// Keeps the floating tensors whose key `select` accepts, when wider than f16, as f16:
/// ComfyUI's fp16 text-encoder storage on the CPU (computed in f32; narrower files, e.g.
/// bf16 or fp8, keep their own dtype, as `pick_weight_dtype` does).
pub fn store_as_f16(weights: &mut WeightMap, select: impl Fn(&str) -> bool) -> Result<()> {
    for (k, v) in weights.iter_mut() {
        if select(k) && v.dtype().is_float() && v.dtype().size_in_bytes() > 2 {
            *v = v.to_dtype(DType::F16)?;
        }
    }
    Ok(())
}

/// The SD1.x view of a checkpoint; an error for other families.
fn into_sd1(ck: Checkpoint) -> Result<Sd1Checkpoint> {
    match ck.text {
        TextEncoders::Sd1(clip) => Ok(Sd1Checkpoint {
            unet: ck
                .model
                .as_unet()
                .cloned()
                .expect("an SD1.x checkpoint has a UNet"),
            weights: ck.weights,
            clip,
            vae: ck.vae,
            prediction: ck.prediction,
            dtype: ck.dtype,
            device: ck.device,
        }),
        _ => Err(ModelError::NotSupported(format!(
            "a {} checkpoint, not SD1.x",
            ck.family.comfy_name()
        ))),
    }
}

/// Loads an SD1.x single-file checkpoint with the default [`LoadOptions`].
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
    load_checkpoint_with(path, device, dtype, options)
        .and_then(into_sd1)
        .map_err(|e| match e {
            ModelError::NotSupported(m) if !m.contains(&*path.to_string_lossy()) => {
                ModelError::NotSupported(format!("{}: {m}", path.display()))
            }
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
    checkpoint_from_weights(weights, device, dtype, options).and_then(into_sd1)
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
