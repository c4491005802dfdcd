//! Models loaded from separate files, as ComfyUI's `UNETLoader`, `CLIPLoader` and
//! `DualCLIPLoader` load them (`comfy/sd.py`: `load_diffusion_model_state_dict`,
//! `load_text_encoder_state_dicts`, `detect_te_model`).
//!
//! Weights are renamed to the same keys a checkpoint's parts get ([`UNET_PREFIX`] for the
//! UNet, `clip_l.`/`clip_g.` for text encoders), so LoRA key maps and patching treat a
//! model the same wherever it came from.

use std::path::Path;

use candle_core::{DType, Device};

use super::checkpoint::{
    describe_prefixes, flux_from_weights, load_safetensors, load_safetensors_mapped,
    mmdit_from_weights, store_as_f16, unet_prefix, unet_prefix_of, Prediction, TextEncoders,
    WeightMap, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX,
};
use super::diffusion::DiffusionNet;
use super::family::Family;
use super::fp8::{store_as, Fp8Kind};
use super::text::clip::{open_clip, ClipRole, ClipTextEncoder};
use super::text::t5::{T5Encoder, FLUX_MIN_LENGTH, SD3_MIN_LENGTH, T5XXL_PREFIX};
use super::unet::{Unet, UnetConfig, UNET_PREFIX};
use super::{ModelError, Result};
use std::sync::Arc;

/// A diffusion model file (UNETLoader).
#[derive(Clone)]
pub struct DiffusionModelFile {
    pub family: Family,
    /// The network (UNet or Flux transformer).
    pub model: DiffusionNet,
    /// The network's weights under [`UNET_PREFIX`].
    pub weights: Arc<WeightMap>,
    pub prediction: Prediction,
}

impl DiffusionModelFile {
    /// The bytes its weights hold in memory ([`weight_bytes`]).
    pub fn weight_bytes(&self) -> usize {
        weight_bytes(&self.weights)
    }
}

/// Loads a bare diffusion model (`diffusion_models/`), or the diffusion model of a
/// checkpoint file: an LDM UNet (SD1.x, SDXL) or a Flux transformer (bare BFL keys, as
/// `flux1-dev.safetensors` ships, or under `model.diffusion_model.`).
pub fn load_diffusion_model(
    path: &Path,
    device: &Device,
    dtype: DType,
) -> Result<DiffusionModelFile> {
    load_diffusion_model_with(path, device, dtype, None)
}

/// [`load_diffusion_model`] with `UNETLoader`'s `weight_dtype`: `Some(kind)` stores every
/// floating weight of the diffusion model as fp8 `kind` (ComfyUI builds the network with
/// `dtype=fp8` and copies the file's values in, so biases and norms are fp8 too; scaled fp8's
/// `scale_weight`/`scale_input` scalars keep theirs), computed in `dtype` by widening per
/// operation as ComfyUI's `manual_cast` ops do.
pub fn load_diffusion_model_with(
    path: &Path,
    device: &Device,
    dtype: DType,
    weight_dtype: Option<Fp8Kind>,
) -> Result<DiffusionModelFile> {
    let raw = match weight_dtype {
        None => load_safetensors(path, device, dtype)?,
        Some(kind) => {
            // Each tensor of the diffusion model goes to fp8 as it is read.
            let names = safetensors_names(path)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let strip = unet_prefix_of(&names).unwrap_or("");
            load_safetensors_mapped(path, device, &|_| dtype, &|name, t| match name
                .strip_prefix(strip)
            {
                Some(rest) if t.dtype().is_float() && !is_fp8_scale_key(rest) => {
                    store_as(kind, &t).map_err(Into::into)
                }
                _ => Ok(t),
            })?
        }
    };
    let undetected = |why: String| {
        ModelError::NotSupported(format!(
            "ERROR: Could not detect model type of: {}\n{why}",
            path.display()
        ))
    };
    // Checkpoint files work too: keep only their diffusion model (ComfyUI's prefix rule).
    let strip = unet_prefix(&raw).unwrap_or("");
    let mut weights = WeightMap::new();
    let prediction = if raw.contains_key("v_pred") {
        Prediction::V
    } else {
        Prediction::Eps
    };
    for (k, v) in raw.iter() {
        if let Some(rest) = k.strip_prefix(strip) {
            weights.insert(format!("{UNET_PREFIX}{rest}"), v.clone());
        }
    }
    super::checkpoint::round_flux_params_if_kept_fp8(&mut weights, UNET_PREFIX, device)?;
    let flux = flux_from_weights(&weights, UNET_PREFIX, dtype, device).map_err(|e| match e {
        ModelError::NotSupported(m) if m.starts_with("ERROR: Could not detect") => undetected(
            m.split_once('\n')
                .map_or(m.clone(), |(_, why)| why.to_string()),
        ),
        e => e,
    })?;
    if let Some((family, model)) = flux {
        return Ok(DiffusionModelFile {
            family,
            model,
            weights: Arc::new(weights),
            prediction,
        });
    }
    super::mmdit::round_scaled_fp8_biases(&mut weights, UNET_PREFIX)?;
    let mmdit = mmdit_from_weights(&weights, UNET_PREFIX, dtype, device).map_err(|e| match e {
        ModelError::NotSupported(m) if m.starts_with("ERROR: Could not detect") => undetected(
            m.split_once('\n')
                .map_or(m.clone(), |(_, why)| why.to_string()),
        ),
        e => e,
    })?;
    if let Some((family, model)) = mmdit {
        return Ok(DiffusionModelFile {
            family,
            model,
            weights: Arc::new(weights),
            prediction,
        });
    }
    if !weights.contains_key(&format!("{UNET_PREFIX}input_blocks.0.0.weight")) {
        let hint = if raw.keys().any(|k| k.starts_with("transformer_blocks.")) {
            "diffusers-format transformers (transformer_blocks.*) are not supported; use \
             ComfyUI's single-file layout"
                .into()
        } else if raw.keys().any(|k| k.starts_with("down_blocks.")) {
            "diffusers-format UNets (down_blocks.*) are not supported; use the LDM layout".into()
        } else {
            format!(
                "no LDM UNet keys (input_blocks.0.0.weight), no Flux keys \
                 (double_blocks.0.img_attn.norm.key_norm.scale, img_in.weight) and no MMDiT \
                 keys (joint_blocks.0.context_block.attn.qkv.weight); {}",
                describe_prefixes(&raw)
            )
        };
        return Err(undetected(hint));
    }
    let cfg = UnetConfig::detect(&weights, UNET_PREFIX)?;
    let family = Family::detect(&cfg).ok_or_else(|| {
        undetected(format!(
            "the UNet (model_channels {}, context {:?}, ADM {:?}, transformer depths {:?}) \
             matches no family comfyrs runs (SD1.x, SDXL, SDXL refiner)",
            cfg.model_channels, cfg.context_dim, cfg.adm_in_channels, cfg.transformer_depth
        ))
    })?;
    let unet = Unet::from_weights(&weights, UNET_PREFIX, dtype, device)?;
    Ok(DiffusionModelFile {
        family,
        model: DiffusionNet::Unet(unet),
        weights: Arc::new(weights),
        prediction,
    })
}

/// The tensor names of a safetensors file (its header only).
fn safetensors_names(path: &Path) -> Result<Vec<String>> {
    // SAFETY: mapped read-only for the header; nothing is read after the map is dropped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
        ModelError::NotSupported(format!("{}: not a safetensors file ({e})", path.display()))
    })?;
    Ok(st.tensors().into_iter().map(|(n, _)| n).collect())
}

/// The bytes a diffusion model's weights hold in memory (element count × stored dtype size
/// over its weight map): what `weight_dtype` changes.
pub fn weight_bytes(weights: &WeightMap) -> usize {
    weights
        .values()
        .map(|t| t.elem_count() * t.dtype().size_in_bytes())
        .sum()
}

/// What a text-encoder file holds (ComfyUI's `TEModel`, for the kinds comfyrs tells apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoderKind {
    ClipL,
    ClipG,
    ClipH,
    T5Xxl,
    Other,
}

impl TextEncoderKind {
    pub fn name(self) -> &'static str {
        match self {
            TextEncoderKind::ClipL => "CLIP-L",
            TextEncoderKind::ClipG => "CLIP-G",
            TextEncoderKind::ClipH => "CLIP-H",
            TextEncoderKind::T5Xxl => "T5-XXL",
            TextEncoderKind::Other => "an unknown text encoder",
        }
    }
}

/// `detect_te_model` on HF CLIP names (after OpenCLIP conversion) and T5 names.
/// Reduced-width test models are recognised by structure, a superset of ComfyUI's rule,
/// which only knows the real depths: a CLIP without layer 30 or 22 and of width ≠ 768
/// counts as CLIP-G when it carries a `text_projection`; a gated-feed-forward T5
/// (`wi_0`/`wi_1`, T5 v1.1) counts as T5-XXL unless it is T5-XL's 2048 wide (ComfyUI
/// needs block 23 and width 4096, and calls a shallower file T5-base).
pub fn detect_text_encoder(w: &WeightMap) -> TextEncoderKind {
    let has = |k: &str| w.contains_key(k);
    if has("text_model.encoder.layers.30.mlp.fc1.weight") {
        return TextEncoderKind::ClipG;
    }
    if has("text_model.encoder.layers.22.mlp.fc1.weight") {
        return TextEncoderKind::ClipH;
    }
    if let Some(t) = w.get("text_model.embeddings.token_embedding.weight") {
        let width = t.dims().get(1).copied().unwrap_or(0);
        if width != 768 && has("text_projection.weight") {
            return TextEncoderKind::ClipG;
        }
    }
    if has("text_model.encoder.layers.0.mlp.fc1.weight") {
        return TextEncoderKind::ClipL;
    }
    let in_features = |k: &str| w.get(k).and_then(|t| t.dims().get(1).copied());
    if let Some(width) = in_features("encoder.block.23.layer.1.DenseReluDense.wi_1.weight")
        .or_else(|| in_features("encoder.block.0.layer.1.DenseReluDense.wi_1.weight"))
    {
        if width != 2048 {
            return TextEncoderKind::T5Xxl;
        }
    }
    TextEncoderKind::Other
}

/// Keys of ComfyUI's scaled-fp8 layout that are not weights: the per-layer f32 scales
/// (`*.scale_weight`, `*.scale_input`) and the `scaled_fp8` marker. They keep their dtype.
pub fn is_fp8_scale_key(key: &str) -> bool {
    key.ends_with("scale_weight") || key.ends_with("scale_input") || key.ends_with("scaled_fp8")
}

/// A T5 file's scaled-fp8 marker (ComfyUI's `t5_xxl_detect`: `scaled_fp8` at the file's
/// root; its dtype names the fp8 format, e4m3fn for every file published so far).
pub fn t5_is_scaled_fp8(w: &WeightMap) -> bool {
    w.contains_key("scaled_fp8")
}

/// Reads one text-encoder file: OpenCLIP towers are converted to HF names, an old
/// `text_projection` matrix (CLIPSave) is transposed into a Linear weight, and a
/// `text_encoders.clip_l.…`/`clip_g.transformer.…` style prefix is dropped.
pub fn read_text_encoder_file(path: &Path, device: &Device, dtype: DType) -> Result<WeightMap> {
    let mut w = load_safetensors(path, device, dtype)?;
    if open_clip::is_open_clip(&w, "") {
        open_clip::convert_open_clip(&mut w, "", "")?;
    } else if let Some(p) = w.remove("text_projection") {
        w.insert("text_projection.weight".into(), p.t()?.contiguous()?);
    }
    // T5 files saved from a model's state dict (Flux/SD3 checkpoints' parts) keep its prefix.
    for prefix in [
        "text_encoders.t5xxl.transformer.",
        "t5xxl.transformer.",
        "transformer.",
    ] {
        if w.contains_key(&format!("{prefix}encoder.final_layer_norm.weight")) {
            w = w
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v)))
                .collect();
            return Ok(w);
        }
    }
    // Files saved from a model's state dict keep its prefix.
    for prefix in [
        "cond_stage_model.transformer.",
        "text_encoders.clip_l.transformer.",
        "text_encoders.clip_g.transformer.",
        "clip_l.transformer.",
        "clip_g.transformer.",
        "transformer.",
    ] {
        if w.contains_key(&format!(
            "{prefix}text_model.embeddings.token_embedding.weight"
        )) {
            w = w
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v)))
                .collect();
            break;
        }
    }
    Ok(w)
}

/// The text encoders of a CLIPLoader/DualCLIPLoader, with the weights they were built from.
#[derive(Clone)]
pub struct TextEncoderFiles {
    pub text: TextEncoders,
    /// Every member's weights under its `clip_l.`/`clip_g.` prefix.
    pub weights: Arc<WeightMap>,
}

/// Flux's text encoders (ComfyUI's `FluxClipModel`) over a weight map with CLIP-L under
/// `clip_l.transformer.text_model.` and T5-XXL under [`T5XXL_PREFIX`] (ComfyUI's model keys:
/// DualCLIPLoader's files moved there, or a Flux checkpoint's `text_encoders.*` keys with
/// `text_encoders.` stripped). CLIP-L computes in `dtype`, T5 in f32; the weights are used
/// as stored (the loader applies the storage rule: fp16 for wider files, narrower kept, and
/// scaled-fp8 scales left f32, see [`is_fp8_scale_key`]).
pub fn flux_text_encoders(
    weights: &WeightMap,
    dtype: DType,
    device: &Device,
    embedding_directories: Vec<std::path::PathBuf>,
) -> Result<TextEncoders> {
    let l = ClipTextEncoder::from_weights(
        weights,
        SDXL_CLIP_L_PREFIX,
        ClipRole::SD1,
        dtype,
        device,
        embedding_directories.clone(),
    )?;
    let t5 = T5Encoder::from_weights(
        weights,
        T5XXL_PREFIX,
        FLUX_MIN_LENGTH,
        device,
        embedding_directories,
    )?;
    Ok(TextEncoders::Flux { l, t5 })
}

/// SD3's text encoders (ComfyUI's `SD3ClipModel`) over a weight map with ComfyUI's model
/// keys: each of CLIP-L (`clip_l.transformer.text_model.`), CLIP-G
/// (`clip_g.transformer.text_model.`) and T5-XXL ([`T5XXL_PREFIX`]) that is present, found
/// by its final norm as `SD3.clip_target` does. CLIPs compute in `dtype`, T5 in f32, over
/// the weights as stored (see [`flux_text_encoders`]).
pub fn sd3_text_encoders(
    weights: &WeightMap,
    dtype: DType,
    device: &Device,
    embedding_directories: Vec<std::path::PathBuf>,
) -> Result<TextEncoders> {
    let has = |k: String| weights.contains_key(&k);
    let clip = |prefix: &str, role: ClipRole| -> Result<Option<ClipTextEncoder>> {
        if !has(format!("{prefix}final_layer_norm.weight")) {
            return Ok(None);
        }
        ClipTextEncoder::from_weights(
            weights,
            prefix,
            role,
            dtype,
            device,
            embedding_directories.clone(),
        )
        .map(Some)
    };
    let l = clip(SDXL_CLIP_L_PREFIX, ClipRole::SDXL_L)?;
    let g = clip(SDXL_CLIP_G_PREFIX, ClipRole::SDXL_G)?;
    let t5 = if has(format!("{T5XXL_PREFIX}encoder.final_layer_norm.weight")) {
        Some(T5Encoder::from_weights(
            weights,
            T5XXL_PREFIX,
            SD3_MIN_LENGTH,
            device,
            embedding_directories,
        )?)
    } else {
        None
    };
    Ok(TextEncoders::Sd3 { l, g, t5 })
}

/// An error about the file at `path`, naming it.
fn in_file(path: &Path, e: ModelError) -> ModelError {
    match e {
        ModelError::NotSupported(m) => ModelError::NotSupported(format!("{}: {m}", path.display())),
        ModelError::MissingKey(k) => ModelError::NotSupported(format!(
            "{}: missing tensor {}",
            path.display(),
            k.strip_prefix(T5XXL_PREFIX)
                .or_else(|| k.strip_prefix("clip_l.transformer."))
                .unwrap_or(&k)
        )),
        e => e,
    }
}

fn move_under(into: &mut WeightMap, w: WeightMap, root: &str) {
    for (k, v) in w {
        into.insert(format!("{root}{k}"), v);
    }
}

/// ComfyUI's `load_text_encoder_state_dicts` for the combinations comfyrs runs:
/// one CLIP-L (`stable_diffusion`: SD1's encoder), one CLIP-G (`stable_diffusion`: the
/// SDXL refiner's), or CLIP-L + CLIP-G (`sdxl`). `clip_type` is the loader's `type` input;
/// any other combination is an error naming what is missing. `clip_fp16_round`: round the
/// weights through fp16 when computing in f32, as ComfyUI's CPU default (fp16 text-encoder
/// storage) does and [`super::checkpoint::LoadOptions::clip_fp16_round`] does for checkpoints.
pub fn load_text_encoders(
    paths: &[&Path],
    clip_type: &str,
    device: &Device,
    dtype: DType,
    clip_fp16_round: bool,
    embedding_directories: Vec<std::path::PathBuf>,
) -> Result<TextEncoderFiles> {
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let mut w = read_text_encoder_file(p, device, dtype)?;
        if clip_fp16_round && dtype == DType::F32 {
            // Scaled fp8's scales stay f32 in ComfyUI (they are not text-encoder weights).
            store_as_f16(&mut w, |k| !is_fp8_scale_key(k))?;
        }
        let kind = detect_text_encoder(&w);
        files.push((p, w, kind));
    }
    let kinds: Vec<&str> = files.iter().map(|f| f.2.name()).collect();
    let unsupported = |what: String| ModelError::NotSupported(what);
    let supported_types: &[&str] = match files.len() {
        1 => &["stable_diffusion", "sd3"],
        2 => &["sdxl", "flux", "sd3"],
        3 => &["sd3"],
        _ => &[],
    };
    if !supported_types.contains(&clip_type) {
        return Err(unsupported(format!(
            "text encoder type '{clip_type}' with {} is not supported by comfyrs yet (it runs \
             type stable_diffusion with one CLIP-L or CLIP-G file, type sdxl with a CLIP-L \
             and a CLIP-G file, type flux with a CLIP-L and a T5-XXL file, and type sd3 with \
             one, two or three of CLIP-L, CLIP-G and T5-XXL)",
            kinds.join(" + ")
        )));
    }
    let mut weights = WeightMap::new();
    let build = |weights: &WeightMap, prefix: &str, role: ClipRole| {
        ClipTextEncoder::from_weights(
            weights,
            prefix,
            role,
            dtype,
            device,
            embedding_directories.clone(),
        )
    };
    let text = match (files.as_mut_slice(), clip_type) {
        ([(_, w, kind)], "stable_diffusion") => match kind {
            TextEncoderKind::ClipL => {
                move_under(&mut weights, std::mem::take(w), "clip_l.transformer.");
                TextEncoders::Sd1(build(&weights, SDXL_CLIP_L_PREFIX, ClipRole::SD1)?)
            }
            TextEncoderKind::ClipG => {
                move_under(&mut weights, std::mem::take(w), "clip_g.transformer.");
                TextEncoders::SdxlRefiner(build(&weights, SDXL_CLIP_G_PREFIX, ClipRole::SDXL_G)?)
            }
            k => {
                return Err(unsupported(format!(
                    "{} text encoders are not supported by comfyrs yet",
                    k.name()
                )))
            }
        },
        ([a, b], "sdxl") => {
            let (l, g) = match (a.2, b.2) {
                (TextEncoderKind::ClipL, TextEncoderKind::ClipG) => (a, b),
                (TextEncoderKind::ClipG, TextEncoderKind::ClipL) => (b, a),
                _ => {
                    return Err(unsupported(format!(
                        "type sdxl takes one CLIP-L and one CLIP-G file; these are {}",
                        kinds.join(" and ")
                    )))
                }
            };
            move_under(
                &mut weights,
                std::mem::take(&mut l.1),
                "clip_l.transformer.",
            );
            move_under(
                &mut weights,
                std::mem::take(&mut g.1),
                "clip_g.transformer.",
            );
            TextEncoders::Sdxl {
                l: build(&weights, SDXL_CLIP_L_PREFIX, ClipRole::SDXL_L)?,
                g: build(&weights, SDXL_CLIP_G_PREFIX, ClipRole::SDXL_G)?,
            }
        }
        ([a, b], "flux") => {
            let (l, t5) = match (a.2, b.2) {
                (TextEncoderKind::ClipL, TextEncoderKind::T5Xxl) => (a, b),
                (TextEncoderKind::T5Xxl, TextEncoderKind::ClipL) => (b, a),
                _ => {
                    return Err(unsupported(format!(
                        "type flux takes one CLIP-L and one T5-XXL file; these are {}",
                        kinds.join(" and ")
                    )))
                }
            };
            move_under(
                &mut weights,
                std::mem::take(&mut l.1),
                "clip_l.transformer.",
            );
            move_under(&mut weights, std::mem::take(&mut t5.1), T5XXL_PREFIX);
            let (l_path, t5_path) = (l.0, t5.0);
            flux_text_encoders(&weights, dtype, device, embedding_directories.clone()).map_err(
                |e| {
                    let clip_side = match &e {
                        ModelError::MissingKey(k) => k.starts_with("clip_l."),
                        ModelError::NotSupported(m) => !m.contains("T5"),
                        _ => false,
                    };
                    in_file(if clip_side { l_path } else { t5_path }, e)
                },
            )?
        }
        (files, "sd3") => {
            // SD3ClipModel: each file goes to the member of its kind (load_sd routes by keys).
            let mut seen: Vec<TextEncoderKind> = Vec::new();
            for (path, w, kind) in files.iter_mut() {
                let root = match kind {
                    TextEncoderKind::ClipL => "clip_l.transformer.",
                    TextEncoderKind::ClipG => "clip_g.transformer.",
                    TextEncoderKind::T5Xxl => T5XXL_PREFIX,
                    k => {
                        return Err(in_file(
                            path,
                            unsupported(format!(
                                "type sd3 takes CLIP-L, CLIP-G and T5-XXL files; this one is {}",
                                k.name()
                            )),
                        ))
                    }
                };
                if seen.contains(kind) {
                    return Err(unsupported(format!(
                        "type sd3 takes at most one file of each kind (CLIP-L, CLIP-G, \
                         T5-XXL); these are {}",
                        kinds.join(" and ")
                    )));
                }
                seen.push(*kind);
                move_under(&mut weights, std::mem::take(w), root);
            }
            let paths: Vec<(&Path, TextEncoderKind)> =
                files.iter().map(|(p, _, k)| (**p, *k)).collect();
            sd3_text_encoders(&weights, dtype, device, embedding_directories.clone()).map_err(
                |e| {
                    let which = match &e {
                        ModelError::MissingKey(k) if k.starts_with("clip_l.") => {
                            TextEncoderKind::ClipL
                        }
                        ModelError::MissingKey(k) if k.starts_with("clip_g.") => {
                            TextEncoderKind::ClipG
                        }
                        _ => TextEncoderKind::T5Xxl,
                    };
                    match paths.iter().find(|(_, k)| *k == which) {
                        Some((p, _)) => in_file(p, e),
                        None => e,
                    }
                },
            )?
        }
        _ => unreachable!("the type was checked against the file count above"),
    };
    Ok(TextEncoderFiles {
        text,
        weights: Arc::new(weights),
    })
}
