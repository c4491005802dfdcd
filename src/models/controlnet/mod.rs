//! ControlNets for the LDM UNet families (SD1.x, SDXL), as ComfyUI 0.3.64 runs them
//! (`comfy/cldm/cldm.py`, `comfy/controlnet.py`).
//!
//! * [`network`]: the cldm `ControlNet`, the UNet's encoder half (time embedding, SDXL's
//!   `label_emb`, input blocks, middle block, built with the UNet's own blocks) plus the
//!   hint encoder and the 1×1 "zero convs" whose outputs are the residuals.
//! * [`load`]: the file layouts (LDM `control_model.*` or bare, diffusers `controlnet_*`)
//!   and "diff" ControlNets, which store the difference to a base UNet.
//! * [`apply`]: one applied ControlNet (hint image, strength, timestep range, the previous
//!   ControlNet of a chain) and ComfyUI's `get_control` for one batched model call.
//!
//! * [`sd3`]: the SD3 / SD3.5 ControlNets (diffusers SD3 and Stability's SD3.5 layouts),
//!   whose hint is a VAE-encoded latent and whose residuals go after MMDiT joint blocks.
//! * [`lora`]: Control-LoRAs, built from the sampled model's UNet plus the file's weights
//!   and low-rank deltas.
//! * [`t2i`]: T2I-Adapters (full and light, SD1.x and SDXL), whose features are computed
//!   once from the hint and added after UNet input blocks (and the SDXL middle block).
//!
//! [`ControlModel`] is any of them, as ComfyUI's `ControlNetLoader` returns it; the UNet
//! adds the [`ControlResiduals`] in `Unet::forward_with_control`, the MMDiT after its joint
//! blocks.

pub mod apply;
pub mod load;
pub mod lora;
pub mod network;
pub mod sd3;
pub mod t2i;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use apply::{ControlLink, ControlStep};
pub use load::{load_controlnet, load_controlnet_weights, ControlNetFile};
pub use lora::ControlLora;
pub use network::ControlNet;
pub use sd3::Sd3ControlNet;
pub use t2i::T2iAdapter;

use crate::models::checkpoint::{load_safetensors, WeightMap};
use crate::models::Result;

/// A control model of any kind `ControlNetLoader` loads.
#[derive(Debug, Clone)]
pub enum ControlModel {
    /// The cldm ControlNets of SD1.x / SDXL.
    Cldm(ControlNetFile),
    /// SD3 / SD3.5 ControlNets.
    Sd3(Sd3ControlNet),
    /// T2I-Adapters.
    T2i(T2iAdapter),
    /// Control-LoRAs (a cldm ControlNet built from the sampled model's UNet).
    Lora(ControlLora),
}

impl From<ControlNetFile> for ControlModel {
    fn from(f: ControlNetFile) -> Self {
        ControlModel::Cldm(f)
    }
}

impl ControlModel {
    /// A short name of the kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ControlModel::Cldm(_) => "an SD1.x/SDXL ControlNet",
            ControlModel::Sd3(n) => match n.kind() {
                sd3::Sd3Kind::Mmdit => "an SD3 ControlNet",
                sd3::Sd3Kind::Sd35 { .. } => "an SD3.5 ControlNet",
            },
            ControlModel::T2i(a) if a.is_xl() => "an SDXL T2I-Adapter",
            ControlModel::T2i(_) => "an SD1.x T2I-Adapter",
            ControlModel::Lora(_) => "a Control-LoRA",
        }
    }

    /// Whether the hint is encoded by a VAE (ComfyUI: the control has a `latent_format`).
    pub fn needs_vae(&self) -> bool {
        matches!(self, ControlModel::Sd3(_))
    }

    pub fn as_cldm(&self) -> Option<&ControlNetFile> {
        match self {
            ControlModel::Cldm(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_sd3(&self) -> Option<&Sd3ControlNet> {
        match self {
            ControlModel::Sd3(n) => Some(n),
            _ => None,
        }
    }
}

/// Loads any control model ComfyUI's `load_controlnet` reads that comfyrs runs: SD3 /
/// SD3.5 ControlNets, Control-LoRAs and T2I-Adapters by their keys, everything else through
/// [`load_controlnet`] (the cldm layouts, with its clear errors for the kinds comfyrs does
/// not run). `base`: the model
/// weights a diff ControlNet adds to (DiffControlNetLoader).
pub fn load_control_model(
    path: &Path,
    base: Option<&WeightMap>,
    dtype: DType,
    device: &Device,
) -> Result<ControlModel> {
    let is_st = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("sft"));
    if !is_st {
        // The cldm loader's error for pickled files.
        return Ok(ControlModel::Cldm(load_controlnet(
            path, base, dtype, device,
        )?));
    }
    let sd = load_safetensors(path, &Device::Cpu, dtype)?;
    let mut model = load_control_model_weights(sd, base, dtype, device)?;
    if let ControlModel::Cldm(f) = &mut model {
        f.global_average_pooling = load::is_shuffle_name(path);
    }
    Ok(model)
}

/// [`load_control_model`] on a state dict in memory (no file-name rules).
pub fn load_control_model_weights(
    sd: WeightMap,
    base: Option<&WeightMap>,
    dtype: DType,
    device: &Device,
) -> Result<ControlModel> {
    if sd3::detect(&sd).is_some() {
        return Ok(ControlModel::Sd3(Sd3ControlNet::from_weights(
            sd, dtype, device,
        )?));
    }
    if lora::is_control_lora(&sd) {
        return Ok(ControlModel::Lora(ControlLora::from_weights(
            sd, dtype, device,
        )?));
    }
    // ComfyUI tries the cldm layouts first and falls back to `load_t2i_adapter`.
    let cldm = [
        "control_model.zero_convs.0.0.weight",
        "zero_convs.0.0.weight",
        "controlnet_cond_embedding.conv_in.weight",
        "lora_controlnet",
        "after_proj_list.18.bias",
        "controlnet_blocks.0.weight",
        "controlnet_blocks.0.linear.weight",
    ];
    if t2i::is_t2i_adapter(&sd) && !cldm.iter().any(|k| sd.contains_key(*k)) {
        return Ok(ControlModel::T2i(T2iAdapter::from_weights(
            sd, dtype, device,
        )?));
    }
    Ok(ControlModel::Cldm(load_controlnet_weights(
        sd, base, dtype, device,
    )?))
}

/// The residuals a ControlNet hands the UNet (ComfyUI's `{'input', 'middle', 'output'}`
/// dict): `output` holds one per input block (zero conv i after input block i), `middle`
/// one for the middle block, `input` those T2I-Adapters add after input blocks. The UNet
/// consumes each list from its end; `None` entries are skipped.
#[derive(Debug, Clone, Default)]
pub struct ControlResiduals {
    pub input: Vec<Option<Tensor>>,
    pub middle: Vec<Option<Tensor>>,
    pub output: Vec<Option<Tensor>>,
}
