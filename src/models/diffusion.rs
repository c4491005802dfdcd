//! The family-neutral diffusion network behind a MODEL: the LDM UNet (SD1.x, SDXL) or the
//! Flux transformer or SD3's MMDiT, with one input struct holding every model input ComfyUI's
//! `apply_model` passes (`c_crossattn`, `y`, `guidance`, `ref_latents`, ...). The sampler,
//! LoRA patching and the executor only see [`DiffusionNet`]; a new family adds a variant
//! here and its own module.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::checkpoint::WeightMap;
use super::controlnet::ControlResiduals;
use super::flux::{Flux, FluxInputs, RefLatentsMethod};
use super::mmdit::{Mmdit, MmditInputs};
use super::unet::Unet;
use super::{ModelError, Result};

/// Every input a diffusion network may take for one batch (those a network does not use
/// are ignored).
#[derive(Debug, Clone, Copy)]
pub struct ModelInputs<'a> {
    /// [B, C, h, w]: the (scaled) latent, with any concat channels appended.
    pub x: &'a Tensor,
    /// [B]: the model's timestep (`model_sampling.timestep(σ)`).
    pub timesteps: &'a Tensor,
    /// [B, T, D]: cross-attention / text tokens.
    pub context: &'a Tensor,
    /// [B, adm]: SDXL's ADM vector, Flux's pooled text.
    pub y: Option<&'a Tensor>,
    /// [B]: Flux's distilled guidance.
    pub guidance: Option<&'a Tensor>,
    /// Flux Kontext's reference latents (model space).
    pub ref_latents: &'a [Tensor],
    pub ref_method: RefLatentsMethod,
    /// ControlNet residuals for this batch (ComfyUI's `control`), added by the UNet or, for
    /// an SD3 ControlNet, by the MMDiT after its joint blocks.
    pub control: Option<&'a ControlResiduals>,
    /// Patches of a UNet's internals (FreeU, PAG); a Flux network has no such blocks and
    /// ignores them, as ComfyUI's does.
    pub unet: crate::models::unet::UnetOptions<'a>,
    /// DiT joint (double) blocks replaced by the identity (skip-layer guidance's
    /// `double_block` patches; MMDiT and Flux, a UNet has no such blocks).
    pub skip_blocks: &'a [usize],
    /// DiT single blocks replaced by the identity (`single_block` patches; Flux only:
    /// MMDiT has none and ignores them, as ComfyUI's does).
    pub skip_single_blocks: &'a [usize],
}

/// A diffusion network of any family comfyrs runs.
#[derive(Clone)]
pub enum DiffusionNet {
    Unet(Unet),
    /// Shared: the blocks are built once, a MODEL clone is a pointer copy.
    Flux(Arc<Flux>),
    /// SD3 / SD3.5's MMDiT, shared like Flux.
    Mmdit(Arc<Mmdit>),
}

impl std::fmt::Debug for DiffusionNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiffusionNet::Unet(u) => write!(f, "Unet({:?})", u.config()),
            DiffusionNet::Flux(x) => write!(f, "Flux({:?})", x.config()),
            DiffusionNet::Mmdit(m) => write!(f, "Mmdit({:?})", m.config()),
        }
    }
}

impl From<Unet> for DiffusionNet {
    fn from(u: Unet) -> Self {
        DiffusionNet::Unet(u)
    }
}

impl From<Flux> for DiffusionNet {
    fn from(f: Flux) -> Self {
        DiffusionNet::Flux(Arc::new(f))
    }
}

impl From<Mmdit> for DiffusionNet {
    fn from(m: Mmdit) -> Self {
        DiffusionNet::Mmdit(Arc::new(m))
    }
}

impl DiffusionNet {
    /// The network's prediction for one batch.
    pub fn forward(&self, i: &ModelInputs) -> Result<Tensor> {
        match self {
            DiffusionNet::Unet(u) => {
                u.forward_patched(i.x, i.timesteps, i.context, i.y, i.control, i.unet)
            }
            DiffusionNet::Flux(_) if i.control.is_some() => Err(ModelError::NotSupported(
                "ControlNet residuals for a Flux model: comfyrs runs the SD1.x/SDXL (cldm) \
                 ControlNets only, which do not fit Flux"
                    .into(),
            )),
            DiffusionNet::Flux(f) => f
                .forward_skipping(
                    &FluxInputs {
                        x: i.x,
                        timesteps: i.timesteps,
                        context: i.context,
                        y: i.y,
                        guidance: i.guidance,
                        ref_latents: i.ref_latents,
                        ref_method: i.ref_method,
                    },
                    i.skip_blocks,
                    i.skip_single_blocks,
                )
                .map_err(ModelError::from),
            DiffusionNet::Mmdit(_)
                if i.control
                    .is_some_and(|c| c.input.iter().chain(&c.middle).any(Option::is_some)) =>
            {
                Err(ModelError::NotSupported(
                    "ControlNet residuals for UNet blocks on an SD3 model: an SD1.x/SDXL \
                     ControlNet or T2I-Adapter does not fit SD3's MMDiT; use an SD3/SD3.5 \
                     ControlNet"
                        .into(),
                ))
            }
            DiffusionNet::Mmdit(m) => m
                .forward(&MmditInputs {
                    x: i.x,
                    timesteps: i.timesteps,
                    context: i.context,
                    y: i.y,
                    skip_blocks: i.skip_blocks,
                    control: i.control.map(|c| c.output.as_slice()),
                })
                .map_err(ModelError::from),
        }
    }

    /// The same architecture built over other weights (`prefix`: where the network's keys
    /// start), e.g. LoRA-patched ones.
    pub fn rebuild(&self, weights: &WeightMap, prefix: &str) -> Result<Self> {
        Ok(match self {
            DiffusionNet::Unet(u) => {
                DiffusionNet::Unet(Unet::from_weights(weights, prefix, u.dtype(), u.device())?)
            }
            DiffusionNet::Flux(f) => {
                let vb = crate::models::nn::weights_vb(weights.clone(), f.dtype(), f.device());
                // A Flux control LoRA widens img_in (more input channels, as ComfyUI's
                // concat_cond reads them from the weight).
                let mut config = f.config().clone();
                if let Some(w) = weights.get(&format!("{prefix}img_in.weight")) {
                    let p = config.patch_size * config.patch_size;
                    config.in_channels = w.dim(1)? / p;
                }
                DiffusionNet::Flux(Arc::new(Flux::new(
                    vb.pp(prefix.trim_end_matches('.')),
                    &config,
                )?))
            }
            DiffusionNet::Mmdit(m) => {
                let vb = crate::models::nn::weights_vb(weights.clone(), m.dtype(), m.device());
                DiffusionNet::Mmdit(Arc::new(Mmdit::new(
                    vb.pp(prefix.trim_end_matches('.')),
                    m.config(),
                )?))
            }
        })
    }

    /// Input channels the network takes (latent + any concat channels).
    pub fn in_channels(&self) -> usize {
        match self {
            DiffusionNet::Unet(u) => u.config().in_channels,
            DiffusionNet::Flux(f) => f.config().in_channels,
            DiffusionNet::Mmdit(m) => m.config().in_channels,
        }
    }

    /// Output (latent) channels.
    pub fn out_channels(&self) -> usize {
        match self {
            DiffusionNet::Unet(u) => u.config().out_channels,
            DiffusionNet::Flux(f) => f.config().out_channels,
            DiffusionNet::Mmdit(m) => m.config().out_channels,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            DiffusionNet::Unet(u) => u.dtype(),
            DiffusionNet::Flux(f) => f.dtype(),
            DiffusionNet::Mmdit(m) => m.dtype(),
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            DiffusionNet::Unet(u) => u.device(),
            DiffusionNet::Flux(f) => f.device(),
            DiffusionNet::Mmdit(m) => m.device(),
        }
    }

    pub fn as_unet(&self) -> Option<&Unet> {
        match self {
            DiffusionNet::Unet(u) => Some(u),
            _ => None,
        }
    }

    pub fn as_mmdit(&self) -> Option<&Mmdit> {
        match self {
            DiffusionNet::Mmdit(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_flux(&self) -> Option<&Flux> {
        match self {
            DiffusionNet::Flux(f) => Some(f),
            _ => None,
        }
    }
}
