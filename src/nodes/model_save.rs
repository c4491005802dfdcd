//! The savers of `comfy_extras/nodes_model_merging.py`: CheckpointSave, CLIPSave, VAESave and
//! ModelSave. Each writes a safetensors file under the output folder (`checkpoints/`,
//! `clip/`, `vae/`, `diffusion_models/` by default) with ComfyUI's filename counter, the
//! tensors named as ComfyUI's `state_dict_for_saving` names them for the model's family
//! (`model.diffusion_model.*`, the text encoders under `cond_stage_model.*` /
//! `conditioner.embedders.*` (SDXL's CLIP-G back in open_clip layout) / `text_encoders.*`,
//! the VAE under `first_stage_model.*` / `vae.*`), in the dtypes ComfyUI holds them in
//! (diffusion model and VAE in the compute dtype, text encoders in their fp16 storage,
//! `logit_scale` f32), with LoRA and merge patches applied, and ComfyUI's metadata
//! (`modelspec.*`, the prompt and extra_pnginfo as JSON).
//!
//! Differences, documented: where ComfyUI writes a text encoder's `text_projection.weight`
//! that the loaded file lacked it writes uninitialised memory; comfyrs writes the identity.
//! `modelspec.predict_key` follows the MODEL's model sampling (ComfyUI reads the base
//! model's type, which a ModelSampling* node does not change). Text encoders with T5-XXL
//! (Flux, SD3 with T5) are not saved yet: a clear error.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value as Json;

use super::image_io::get_save_image_path;
use super::sd_types::{SdClip, SdModel, SdVae};
use super::utils::py_json_dumps;
use crate::models::lora::patched::{patch_weights_stored, PatchedStorage};
use crate::models::lora::PatchedClip;
use crate::models::unet::UNET_PREFIX;
use crate::models::Family;
use crate::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry,
    RegistryError,
};
use crate::sampling::model_sampling::{Prediction, SamplingKind};

/// A state dict to write (key → tensor in the dtype it is written in).
pub type StateDict = BTreeMap<String, Tensor>;

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::msg(e.to_string())
}

/// The diffusion model's weights as ComfyUI's `diffusion_model.state_dict()` after
/// patching, keyed without `model.diffusion_model.`, in the compute dtype.
pub fn unet_state_dict(m: &SdModel) -> Result<StateDict, NodeError> {
    let d = &m.diffusion;
    let compute = d.dtype();
    let base = d.base_weights();
    let patched = patch_weights_stored(
        base,
        d.patches(),
        UNET_PREFIX,
        PatchedStorage::Dtype(compute),
    )
    .map_err(err)?;
    let mut out = StateDict::new();
    for (k, t) in base.iter() {
        let Some(rest) = k.strip_prefix(UNET_PREFIX) else {
            continue;
        };
        let t = patched.get(k).unwrap_or(t);
        out.insert(rest.to_string(), to_float(t, compute)?);
    }
    Ok(out)
}

/// Floating tensors in `dtype` (fp8 and others converted); integer tensors as they are.
fn to_float(t: &Tensor, dtype: DType) -> Result<Tensor, NodeError> {
    if t.dtype().is_float() && t.dtype() != dtype {
        t.to_dtype(dtype).map_err(err)
    } else {
        Ok(t.clone())
    }
}

/// One CLIP member as ComfyUI holds it (`clip_{role}.transformer.text_model.*`,
/// `clip_{role}.transformer.text_projection.weight`, `clip_{role}.logit_scale`), patched,
/// each weight in its stored dtype.
fn clip_member_state_dict(
    role: &str,
    c: &PatchedClip,
    out: &mut StateDict,
) -> Result<(), NodeError> {
    let prefix = c.base().weights_prefix.to_string();
    let root = prefix
        .strip_suffix("text_model.")
        .unwrap_or(&prefix)
        .to_string();
    let base = c.base_weights();
    let patched = patch_weights_stored(base, c.patches(), &root, PatchedStorage::Dtype(DType::F32))
        .map_err(err)?;
    let name = |rest: &str| format!("clip_{role}.transformer.{rest}");
    let mut embed_dtype = DType::F16;
    let mut width = None;
    for (k, t) in base.iter() {
        let Some(rest) = k.strip_prefix(root.as_str()) else {
            continue;
        };
        if !(rest.starts_with("text_model.") || rest == "text_projection.weight")
            || rest.ends_with(".position_ids")
        {
            continue;
        }
        if rest == "text_model.embeddings.token_embedding.weight" {
            embed_dtype = t.dtype();
            width = Some(t.dim(1).map_err(err)?);
        }
        let w = match patched.get(k) {
            Some(p) => to_float(p, t.dtype())?,
            None => t.clone(),
        };
        out.insert(name(rest), w);
    }
    if let (std::collections::btree_map::Entry::Vacant(slot), Some(n)) =
        (out.entry(name("text_projection.weight")), width)
    {
        slot.insert(Tensor::eye(n, embed_dtype, &Device::Cpu).map_err(err)?);
    }
    // The logit scale: the file's (under the member's root or its parent), else ComfyUI's
    // initial 4.6055, as an f32 scalar.
    let parent = root.strip_suffix("transformer.").unwrap_or(&root);
    let scale = [format!("{root}logit_scale"), format!("{parent}logit_scale")]
        .iter()
        .find_map(|k| base.get(k).cloned());
    let scale = match scale {
        Some(t) => t.to_dtype(DType::F32).map_err(err)?,
        None => Tensor::new(4.6055f32, &Device::Cpu).map_err(err)?,
    };
    out.insert(format!("clip_{role}.logit_scale"), scale);
    Ok(())
}

/// ComfyUI's `clip.get_sd()`: every CLIP member under `clip_l.` / `clip_g.`.
pub fn clip_state_dict(clip: &SdClip, node: &str) -> Result<StateDict, NodeError> {
    if clip.encoder.has_t5() {
        return Err(NodeError::input(
            "clip",
            format!(
                "{node}: saving a CLIP with a T5-XXL text encoder ({}) is not supported yet; \
                 CLIP-L / CLIP-G encoders can be saved",
                clip.encoder.kind()
            ),
        ));
    }
    let mut out = StateDict::new();
    for (role, c) in clip.encoder.members_by_role() {
        clip_member_state_dict(role, c, &mut out)?;
    }
    Ok(out)
}

/// ComfyUI's `vae.get_sd()`: the VAE's own keys, in its compute dtype.
pub fn vae_state_dict(vae: &SdVae) -> Result<StateDict, NodeError> {
    let dtype = vae.0.dtype();
    vae.0
        .state_dict()
        .iter()
        .map(|(k, t)| Ok((k.clone(), to_float(t, dtype)?)))
        .collect()
}

/// `state_dict_prefix_replace`: each (from, to) in order renames the keys starting with
/// `from`.
fn prefix_replace(sd: StateDict, replace: &[(&str, &str)]) -> StateDict {
    let mut sd = sd;
    for (from, to) in replace {
        let keys: Vec<String> = sd.keys().filter(|k| k.starts_with(from)).cloned().collect();
        for k in keys {
            if let Some(t) = sd.remove(&k) {
                sd.insert(format!("{to}{}", &k[from.len()..]), t);
            }
        }
    }
    sd
}

/// diffusers_convert's `convert_text_enc_state_dict_v20` for the keys under `prefix`: HF
/// CLIP names back to open_clip's (q/k/v concatenated into `in_proj_*`, the projection
/// transposed to `text_projection`).
fn to_open_clip(sd: &StateDict, prefix: &str) -> Result<StateDict, NodeError> {
    // (open_clip, HF) in ComfyUI's order: a key's first matching HF piece at each position
    // is replaced.
    const PAIRS: [(&str, &str); 9] = [
        ("resblocks.", "text_model.encoder.layers."),
        ("ln_1", "layer_norm1"),
        ("ln_2", "layer_norm2"),
        (".c_fc.", ".fc1."),
        (".c_proj.", ".fc2."),
        (".attn", ".self_attn"),
        ("ln_final.", "transformer.text_model.final_layer_norm."),
        (
            "token_embedding.weight",
            "transformer.text_model.embeddings.token_embedding.weight",
        ),
        (
            "positional_embedding",
            "transformer.text_model.embeddings.position_embedding.weight",
        ),
    ];
    let relabel = |k: &str| -> String {
        let mut out = String::with_capacity(k.len());
        let mut i = 0;
        'scan: while i < k.len() {
            for (oc, hf) in PAIRS {
                if k[i..].starts_with(hf) {
                    out.push_str(oc);
                    i += hf.len();
                    continue 'scan;
                }
            }
            let ch = k[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    };
    let mut out = StateDict::new();
    let mut qkv_w: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
    let mut qkv_b: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
    for (k, v) in sd {
        if !k.starts_with(prefix) {
            continue;
        }
        let mut captured = false;
        for (i, c) in ["q", "k", "v"].iter().enumerate() {
            for (suffix, map) in [("weight", &mut qkv_w), ("bias", &mut qkv_b)] {
                let end = format!(".self_attn.{c}_proj.{suffix}");
                if let Some(pre) = k.strip_suffix(end.as_str()) {
                    let pre = format!("{pre}.self_attn");
                    map.entry(pre).or_default()[i] = Some(v.clone());
                    captured = true;
                }
            }
        }
        if captured {
            continue;
        }
        let proj = "transformer.text_projection.weight";
        if let Some(pre) = k.strip_suffix(proj) {
            out.insert(
                format!("{pre}text_projection"),
                v.t().and_then(|t| t.contiguous()).map_err(err)?,
            );
        } else {
            out.insert(relabel(k), v.clone());
        }
    }
    for (suffix, map) in [("in_proj_weight", qkv_w), ("in_proj_bias", qkv_b)] {
        for (pre, parts) in map {
            let parts: Option<Vec<Tensor>> = parts.into_iter().collect();
            let parts = parts.ok_or_else(|| {
                NodeError::msg(format!(
                    "CORRUPTED MODEL: one of the q-k-v values for the text encoder was missing ({pre})"
                ))
            })?;
            let cat = Tensor::cat(&parts, 0).map_err(err)?;
            out.insert(format!("{}.{suffix}", relabel(&pre)), cat);
        }
    }
    Ok(out)
}

/// `process_clip_state_dict_for_saving` of the model's family.
fn clip_for_saving(family: Family, sd: StateDict) -> Result<StateDict, NodeError> {
    Ok(match family {
        Family::Sd15 => {
            let mut sd = sd;
            sd.remove("clip_l.transformer.text_projection.weight");
            sd.remove("clip_l.logit_scale");
            prefix_replace(sd, &[("clip_l.", "cond_stage_model.")])
        }
        Family::Sdxl => {
            let mut g = to_open_clip(&sd, "clip_g")?;
            for (k, v) in &sd {
                if k.starts_with("clip_l") {
                    g.insert(k.clone(), v.clone());
                }
            }
            let ids: Vec<i64> = (0..77).collect();
            g.insert(
                "clip_l.transformer.text_model.embeddings.position_ids".into(),
                Tensor::from_vec(ids, (1, 77), &Device::Cpu).map_err(err)?,
            );
            g.remove("clip_l.transformer.text_projection.weight");
            g.remove("clip_l.logit_scale");
            prefix_replace(
                g,
                &[
                    ("clip_g", "conditioner.embedders.1.model"),
                    ("clip_l", "conditioner.embedders.0"),
                ],
            )
        }
        Family::SdxlRefiner => {
            let mut g = to_open_clip(&sd, "clip_g")?;
            g.remove("clip_g.transformer.text_model.embeddings.position_ids");
            prefix_replace(g, &[("clip_g", "conditioner.embedders.0.model")])
        }
        // BASE's rule with text_encoder_key_prefix "text_encoders.".
        Family::Flux | Family::FluxSchnell | Family::Sd3 => {
            prefix_replace(sd, &[("", "text_encoders.")])
        }
    })
}

/// The VAE key prefix of the model's family (`vae_key_prefix`).
fn vae_prefix(family: Family) -> &'static str {
    match family {
        Family::Flux | Family::FluxSchnell => "vae.",
        _ => "first_stage_model.",
    }
}

/// The file's safetensors dtype and little-endian bytes of a tensor.
fn tensor_bytes(t: &Tensor) -> Result<(Dtype, Vec<u8>), NodeError> {
    let flat = t.flatten_all().map_err(err)?;
    Ok(match t.dtype() {
        DType::F32 => (
            Dtype::F32,
            flat.to_vec1::<f32>()
                .map_err(err)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            Dtype::F16,
            flat.to_vec1::<half::f16>()
                .map_err(err)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            Dtype::BF16,
            flat.to_vec1::<half::bf16>()
                .map_err(err)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            Dtype::I64,
            flat.to_vec1::<i64>()
                .map_err(err)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            Dtype::F64,
            flat.to_vec1::<f64>()
                .map_err(err)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        // fp8 weights (UNETLoader's weight_dtype) are written as fp8, as torch saves them:
        // e5m2 is held as its U8 bits, e4m3fn re-encoded exactly from its f32 values.
        DType::U8 => (Dtype::F8_E5M2, flat.to_vec1::<u8>().map_err(err)?),
        DType::F8E4M3 => {
            use crate::models::fp8::{encode, Fp8Kind};
            let values = flat.to_dtype(DType::F32).map_err(err)?;
            (
                Dtype::F8_E4M3,
                values
                    .to_vec1::<f32>()
                    .map_err(err)?
                    .into_iter()
                    .map(|v| encode(Fp8Kind::E4m3fn, v))
                    .collect(),
            )
        }
        other => {
            let t = flat.to_dtype(DType::F32).map_err(err)?;
            let _ = other;
            (
                Dtype::F32,
                t.to_vec1::<f32>()
                    .map_err(err)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            )
        }
    })
}

/// Writes `sd` as a safetensors file with `metadata` (ComfyUI's `save_torch_file`).
pub fn write_safetensors(
    path: &std::path::Path,
    sd: &StateDict,
    metadata: HashMap<String, String>,
) -> Result<(), NodeError> {
    let mut data = Vec::with_capacity(sd.len());
    for (k, t) in sd {
        let (dtype, bytes) = tensor_bytes(t)?;
        data.push((k.clone(), dtype, t.dims().to_vec(), bytes));
    }
    let views = data
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize_to_file(views, meta, path).map_err(err)
}

/// `prompt` and every `extra_pnginfo` entry as JSON strings (ComfyUI's metadata unless
/// `--disable-metadata`).
fn prompt_metadata(ctx: &NodeContext, metadata: &mut HashMap<String, String>) {
    let prompt = ctx.prompt.json();
    metadata.insert(
        "prompt".into(),
        if prompt.is_null() {
            String::new()
        } else {
            py_json_dumps(prompt)
        },
    );
    if let Some(Json::Object(m)) = ctx.extra_pnginfo {
        for (k, v) in m {
            metadata.insert(k.clone(), py_json_dumps(v));
        }
    }
}

/// nodes_model_merging's `save_checkpoint`: the MODEL (with the CLIP and VAE for
/// CheckpointSave) into `{prefix}_{counter:05}_.safetensors`.
fn save_checkpoint(
    ctx: &NodeContext,
    node: &str,
    model: &SdModel,
    clip: Option<&SdClip>,
    vae: Option<&SdVae>,
    filename_prefix: &str,
) -> Result<(), NodeError> {
    // State dicts first: a model that cannot be saved leaves no file and no counter gap.
    let mut sd = StateDict::new();
    if let Some(c) = clip {
        sd.extend(clip_for_saving(model.family, clip_state_dict(c, node)?)?);
    }
    if let Some(v) = vae {
        sd.extend(prefix_replace(
            vae_state_dict(v)?,
            &[("", vae_prefix(model.family))],
        ));
    }
    let unet = prefix_replace(unet_state_dict(model)?, &[("", "model.diffusion_model.")]);
    sd.extend(unet);

    let sp = get_save_image_path(filename_prefix, &ctx.env.paths.output, 0, 0)?;
    let mut metadata = HashMap::new();
    let arch = match model.family {
        Family::Sdxl => Some("stable-diffusion-xl-v1-base"),
        Family::SdxlRefiner => Some("stable-diffusion-xl-v1-refiner"),
        Family::Sd3 => Some("stable-diffusion-v3-medium"),
        _ => None,
    };
    if let Some(a) = arch {
        metadata.insert("modelspec.architecture".into(), a.into());
        metadata.insert("modelspec.sai_model_spec".into(), "1.0.0".into());
        metadata.insert("modelspec.implementation".into(), "sgm".into());
        metadata.insert(
            "modelspec.title".into(),
            format!("{} {}", sp.filename, sp.counter),
        );
    }
    let ms = &model.sampling;
    let empty = || Tensor::zeros(0, DType::F32, &Device::Cpu).map_err(err);
    if let (
        SamplingKind::ContinuousEdm {
            sigma_min,
            sigma_max,
        },
        Prediction::VPrediction,
    ) = (&ms.kind, ms.prediction)
    {
        sd.insert(
            "edm_vpred.sigma_max".into(),
            Tensor::new(*sigma_max as f32, &Device::Cpu).map_err(err)?,
        );
        sd.insert(
            "edm_vpred.sigma_min".into(),
            Tensor::new(*sigma_min as f32, &Device::Cpu).map_err(err)?,
        );
    }
    match ms.prediction {
        Prediction::Eps => {
            metadata.insert("modelspec.predict_key".into(), "epsilon".into());
        }
        Prediction::VPrediction => {
            metadata.insert("modelspec.predict_key".into(), "v".into());
            sd.insert("v_pred".into(), empty()?);
            let zsnr = matches!(
                ms.kind,
                SamplingKind::Discrete { zsnr: true, .. }
                    | SamplingKind::DiscreteDistilled { zsnr: true, .. }
            );
            if zsnr {
                sd.insert("ztsnr".into(), empty()?);
            }
        }
        _ => {}
    }
    prompt_metadata(ctx, &mut metadata);
    let file = format!("{}_{:05}_.safetensors", sp.filename, sp.counter);
    write_safetensors(&sp.full_output_folder.join(file), &sd, metadata)
}

fn module(s: NodeSchema) -> NodeSchema {
    s.module("comfy_extras.nodes_model_merging")
        .category("advanced/model_merging")
        .hidden(Hidden::Prompt)
        .hidden(Hidden::ExtraPngInfo)
        .output_node()
}

fn nothing() -> NodeOutput {
    NodeOutput::values(Vec::new())
}

struct CheckpointSave;
impl Node for CheckpointSave {
    fn schema(&self) -> NodeSchema {
        module(
            NodeSchema::new("CheckpointSave")
                .display("Save Checkpoint")
                .input(InputSpec::of("model", "MODEL"))
                .input(InputSpec::of("clip", "CLIP"))
                .input(InputSpec::of("vae", "VAE"))
                .input(InputSpec::string("filename_prefix").default("checkpoints/ComfyUI")),
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let clip = i.object::<SdClip>("clip")?;
        let vae = i.object::<SdVae>("vae")?;
        save_checkpoint(
            ctx,
            "CheckpointSave",
            &model,
            Some(&clip),
            Some(&vae),
            i.string("filename_prefix")?,
        )?;
        Ok(nothing())
    }
}

struct ModelSave;
impl Node for ModelSave {
    fn schema(&self) -> NodeSchema {
        module(
            NodeSchema::new("ModelSave")
                .input(InputSpec::of("model", "MODEL"))
                .input(InputSpec::string("filename_prefix").default("diffusion_models/ComfyUI")),
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        save_checkpoint(
            ctx,
            "ModelSave",
            &model,
            None,
            None,
            i.string("filename_prefix")?,
        )?;
        Ok(nothing())
    }
}

struct VaeSave;
impl Node for VaeSave {
    fn schema(&self) -> NodeSchema {
        module(
            NodeSchema::new("VAESave")
                .input(InputSpec::of("vae", "VAE"))
                .input(InputSpec::string("filename_prefix").default("vae/ComfyUI_vae")),
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let vae = i.object::<SdVae>("vae")?;
        let sd = vae_state_dict(&vae)?;
        let sp = get_save_image_path(i.string("filename_prefix")?, &ctx.env.paths.output, 0, 0)?;
        let mut metadata = HashMap::new();
        prompt_metadata(ctx, &mut metadata);
        let file = format!("{}_{:05}_.safetensors", sp.filename, sp.counter);
        write_safetensors(&sp.full_output_folder.join(file), &sd, metadata)?;
        Ok(nothing())
    }
}

struct ClipSave;
impl Node for ClipSave {
    fn schema(&self) -> NodeSchema {
        module(
            NodeSchema::new("CLIPSave")
                .input(InputSpec::of("clip", "CLIP"))
                .input(InputSpec::string("filename_prefix").default("clip/ComfyUI")),
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let prefix = i.string("filename_prefix")?;
        let mut sd = clip_state_dict(&clip, "CLIPSave")?;
        let mut metadata = HashMap::new();
        metadata.insert("format".to_string(), "pt".to_string());
        prompt_metadata(ctx, &mut metadata);
        // One file per encoder, in ComfyUI's prefix order (T5 and the others never occur
        // here: such CLIPs are refused above).
        for member in ["clip_l.", "clip_g.", ""] {
            let keys: Vec<String> = sd
                .keys()
                .filter(|k| k.starts_with(member))
                .cloned()
                .collect();
            if keys.is_empty() {
                continue;
            }
            let mut part = StateDict::new();
            for k in keys {
                if let Some(t) = sd.remove(&k) {
                    part.insert(k, t);
                }
            }
            let p = member.trim_end_matches('.');
            let (file_prefix, mut replace) = if p.is_empty() {
                (prefix.to_string(), vec![])
            } else {
                (format!("{prefix}_{p}"), vec![(member, "")])
            };
            replace.push(("transformer.", ""));
            let sp = get_save_image_path(&file_prefix, &ctx.env.paths.output, 0, 0)?;
            let part = prefix_replace(part, &replace);
            let file = format!("{}_{:05}_.safetensors", sp.filename, sp.counter);
            write_safetensors(&sp.full_output_folder.join(file), &part, metadata.clone())?;
        }
        Ok(nothing())
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(CheckpointSave)?;
    r.register(ClipSave)?;
    r.register(VaeSave)?;
    r.register(ModelSave)?;
    Ok(())
}
