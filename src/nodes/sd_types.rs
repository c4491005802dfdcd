//! Payload types of the SD1.x nodes (MODEL, CLIP, VAE, CONDITIONING, SAMPLER, SIGMAS, NOISE,
//! GUIDER) and the loaded-checkpoint cache shared across runs.

use crate::compute::Compute;
use crate::models::checkpoint::Prediction as CkptPrediction;
use crate::models::checkpoint::{load_sd1_checkpoint_with, LoadOptions};
use crate::models::lora::{PatchedClip, PatchedUnet};
use crate::models::{Sd1Checkpoint, Vae};
use crate::node::{NodeError, Payload};
use crate::sampling::conds::CondOptions;
use crate::sampling::model_sampling::{ModelSampling, Prediction};
use crate::sampling::samplers::SamplerKind;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// MODEL: the diffusion UNet (base weights + LoRA patch list, patched on first use) plus its
/// model sampling (EPS / v-prediction sigma table).
#[derive(Clone)]
pub struct SdModel {
    pub unet: PatchedUnet,
    pub sampling: Arc<ModelSampling>,
}

impl std::fmt::Debug for SdModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<MODEL SD1.x {:?}>", self.sampling.prediction)
    }
}

impl Payload for SdModel {
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// CLIP: the text encoder (base weights + LoRA patch list, patched on first use) and the layer
/// CLIPSetLastLayer stops at (-1 = last).
#[derive(Clone)]
pub struct SdClip {
    pub encoder: PatchedClip,
    pub clip_skip: i32,
}

impl std::fmt::Debug for SdClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<CLIP SD1.x, last layer {}>", self.clip_skip)
    }
}

impl Payload for SdClip {}

/// VAE: the AutoencoderKL.
#[derive(Clone)]
pub struct SdVae(pub Vae);

impl std::fmt::Debug for SdVae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<VAE>")
    }
}

impl Payload for SdVae {}

/// One entry of a CONDITIONING list: `[cond [1, T, C], {"pooled_output": pooled, ...}]`;
/// `opts` holds the other dict keys that change sampling (area, mask, strength, timestep
/// range, inpaint concat; see `crate::sampling::conds`).
#[derive(Debug, Clone)]
pub struct CondEntry {
    pub cond: Tensor,
    pub pooled: Option<Tensor>,
    pub opts: CondOptions,
}

impl CondEntry {
    /// A plain entry (no area, mask, ...).
    pub fn new(cond: Tensor, pooled: Option<Tensor>) -> Self {
        CondEntry {
            cond,
            pooled,
            opts: CondOptions::default(),
        }
    }
}

/// CONDITIONING: a list of entries (ConditioningCombine concatenates lists).
#[derive(Debug, Clone)]
pub struct Conditioning(pub Vec<CondEntry>);

impl Payload for Conditioning {
    fn byte_size(&self) -> usize {
        self.0
            .iter()
            .map(|e| {
                let o = &e.opts;
                tensor_bytes(&e.cond)
                    + [&e.pooled, &o.mask, &o.concat_latent_image, &o.concat_mask]
                        .iter()
                        .map(|t| t.as_ref().map_or(0, tensor_bytes))
                        .sum::<usize>()
            })
            .sum()
    }
    fn describe(&self) -> String {
        let shapes: Vec<_> = self.0.iter().map(|e| e.cond.dims().to_vec()).collect();
        format!("CONDITIONING {shapes:?}")
    }
}

/// SAMPLER (KSamplerSelect).
#[derive(Debug, Clone, Copy)]
pub struct SamplerPayload(pub SamplerKind);
impl Payload for SamplerPayload {}

/// SIGMAS: a 1-d float32 schedule.
#[derive(Debug, Clone)]
pub struct Sigmas(pub Vec<f32>);
impl Payload for Sigmas {
    fn describe(&self) -> String {
        format!("SIGMAS {:?}", self.0)
    }
}

/// NOISE: RandomNoise (a seed) or DisableNoise (zeros).
#[derive(Debug, Clone, Copy)]
pub enum NoisePayload {
    Random(u64),
    Disabled,
}
impl Payload for NoisePayload {}

/// GUIDER: the model and its conditioning (CFGGuider / BasicGuider).
#[derive(Debug, Clone)]
pub struct GuiderPayload {
    pub model: SdModel,
    pub positive: Conditioning,
    /// None for BasicGuider (positive only).
    pub negative: Option<Conditioning>,
    pub cfg: f64,
}
impl Payload for GuiderPayload {}

/// A loaded checkpoint split into ComfyUI's three outputs.
pub fn split_checkpoint(ck: &Sd1Checkpoint) -> (SdModel, SdClip, SdVae) {
    let pred = match ck.prediction {
        CkptPrediction::Eps => Prediction::Eps,
        CkptPrediction::V => Prediction::VPrediction,
    };
    (
        SdModel {
            unet: PatchedUnet::new(ck.unet.clone(), ck.weights.clone()),
            sampling: Arc::new(ModelSampling::sd15(pred)),
        },
        SdClip {
            // LoRA-patched CLIP weights stay f32, like ComfyUI with `--fp32-text-enc` (the
            // parity reference setup); ComfyUI's CPU default would round them to fp16.
            encoder: PatchedClip::new(ck.clip.clone(), ck.weights.clone(), false),
            clip_skip: -1,
        },
        SdVae(ck.vae.clone()),
    )
}

pub(crate) type Stamp = (Option<SystemTime>, u64);

pub(crate) fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok();
    (
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.map_or(0, |m| m.len()),
    )
}

/// Loaded checkpoints and VAEs by file (and its modification time and size), shared through
/// `env.resources` so a re-run does not re-read the file. Cleared by `/free`.
#[derive(Default)]
pub struct ModelCache {
    checkpoints: Mutex<HashMap<PathBuf, (Stamp, Sd1Checkpoint)>>,
    vaes: Mutex<HashMap<PathBuf, (Stamp, Vae)>>,
    loads: std::sync::atomic::AtomicUsize,
}

impl ModelCache {
    /// How many files were actually read (for tests).
    pub fn loads(&self) -> usize {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The checkpoint at `path`, loaded to `compute`'s device and dtypes (the UNet and CLIP in
    /// `compute.dtype`, the VAE in `compute.vae_dtype`).
    pub fn checkpoint(&self, path: &Path, compute: &Compute) -> Result<Sd1Checkpoint, NodeError> {
        let st = stamp(path);
        let mut map = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, ck)) = map.get(path) {
            if *s == st {
                return Ok(ck.clone());
            }
        }
        let options = LoadOptions {
            vae_dtype: Some(compute.vae_dtype),
            ..LoadOptions::default()
        };
        let ck = load_sd1_checkpoint_with(path, &compute.device, compute.dtype, &options)
            .map_err(|e| NodeError::msg(format!("ERROR: could not load checkpoint: {e}")))?;
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(path.to_path_buf(), (st, ck.clone()));
        Ok(ck)
    }

    /// The standalone VAE at `path`, loaded to `compute`'s device in `compute.vae_dtype`.
    pub fn vae(&self, path: &Path, compute: &Compute) -> Result<Vae, NodeError> {
        let st = stamp(path);
        let mut map = self.vaes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, v)) = map.get(path) {
            if *s == st {
                return Ok(v.clone());
            }
        }
        let v = crate::models::load_vae(path, &compute.device, compute.vae_dtype)
            .map_err(|e| NodeError::msg(format!("ERROR: could not load VAE: {e}")))?;
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(path.to_path_buf(), (st, v.clone()));
        Ok(v)
    }
}
