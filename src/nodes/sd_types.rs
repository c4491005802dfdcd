//! Payload types of the diffusion nodes (MODEL, CLIP, VAE, CONDITIONING, SAMPLER, SIGMAS,
//! NOISE, GUIDER) and the loaded-checkpoint cache shared across runs. The payloads are
//! family-neutral: a MODEL carries its [`Family`] (latent format, extra model inputs), a
//! CLIP its family's set of text encoders ([`Conditioner`]).

use crate::compute::Compute;
use crate::models::checkpoint::Prediction as CkptPrediction;
use crate::models::checkpoint::{load_checkpoint_with, LoadOptions};
use crate::models::component_files::{
    load_diffusion_model_with, load_text_encoders, DiffusionModelFile, TextEncoderFiles,
};
use crate::models::conditioner::Conditioner;
use crate::models::diffusion::DiffusionNet;
use crate::models::fp8::Fp8Kind;
use crate::models::lora::{PatchedClip, PatchedModel};
use crate::models::{Checkpoint, Family, LatentFormat, TextEncoders, Vae};
use crate::node::{NodeError, Payload};
use crate::sampling::conds::CondOptions;
use crate::sampling::model_sampling::{ModelSampling, Prediction};
use crate::sampling::samplers::{SamplerExtra, SamplerKind};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// MODEL: the diffusion network of any family (UNet, Flux; base weights + LoRA patch list,
/// patched on first use), its model sampling (sigma table and prediction kind) and its
/// family.
#[derive(Clone)]
pub struct SdModel {
    pub diffusion: PatchedModel,
    pub sampling: Arc<ModelSampling>,
    pub family: Family,
    /// Patches of the CFG combine (RescaleCFG, CFGNorm); empty by default.
    pub cfg_patches: crate::sampling::cfg_patches::CfgPatches,
    /// Patches of the UNet's skip connections (FreeU); empty by default.
    pub unet_patches: crate::sampling::unet_patches::UnetPatches,
    /// The denoise-mask function of masked denoising (DifferentialDiffusion); None by default.
    pub denoise_mask_fn: Option<crate::sampling::differential_diffusion::DifferentialDiffusion>,
    /// PerpNeg's empty conditioning (read when `cfg_patches.cfg_function` is PerpNeg).
    pub empty_conditioning: Option<Conditioning>,
}

impl SdModel {
    /// The family's latent format (process_in/out, channels, preview factors).
    pub fn latent_format(&self) -> LatentFormat {
        self.family.latent_format()
    }
}

impl std::fmt::Debug for SdModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<MODEL {} {:?}>",
            self.family.comfy_name(),
            self.sampling.prediction
        )
    }
}

impl Payload for SdModel {
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// CLIP: the family's text encoders (each base weights + LoRA patch list, patched on first
/// use) and the layer CLIPSetLastLayer stops at (None: the family's default layer).
#[derive(Clone)]
pub struct SdClip {
    pub encoder: Conditioner,
    pub clip_layer: Option<i32>,
}

impl std::fmt::Debug for SdClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<CLIP {}, layer {:?}>",
            self.encoder.kind(),
            self.clip_layer
        )
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
                    + o.reference_latents.iter().map(tensor_bytes).sum::<usize>()
            })
            .sum()
    }
    fn describe(&self) -> String {
        let shapes: Vec<_> = self.0.iter().map(|e| e.cond.dims().to_vec()).collect();
        format!("CONDITIONING {shapes:?}")
    }
}

/// SAMPLER: the sampler and its extra options (KSamplerSelect: the defaults; the
/// custom-sampling sampler nodes set them).
#[derive(Debug, Clone, Copy)]
pub struct SamplerPayload(pub SamplerKind, pub SamplerExtra);
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

/// GUIDER: the model and its conditioning (CFGGuider / BasicGuider / DualCFGGuider).
#[derive(Debug, Clone)]
pub struct GuiderPayload {
    pub model: SdModel,
    pub positive: Conditioning,
    /// None for BasicGuider (positive only).
    pub negative: Option<Conditioning>,
    pub cfg: f64,
    /// DualCFGGuider: its cond2 and weights (`positive` is cond1, `cfg` is `cfg_conds`).
    pub dual: Option<(Conditioning, crate::sampling::cfg_patches::DualCfg)>,
    /// PerpNegGuider: its empty conditioning and `neg_scale`.
    pub perp_neg: Option<(Conditioning, f64)>,
}
impl Payload for GuiderPayload {}

/// The CLIP payload of a family's text encoders, built over `weights`.
pub fn clip_payload(text: &TextEncoders, weights: &Arc<crate::models::WeightMap>) -> SdClip {
    // LoRA-patched CLIP weights stay f32, like ComfyUI with `--fp32-text-enc` (the parity
    // reference setup); ComfyUI's CPU default would round them to fp16.
    let patched = |enc: &crate::models::ClipTextEncoder| {
        PatchedClip::new(enc.clone(), weights.clone(), false)
    };
    let encoder = match text {
        TextEncoders::Sd1(l) => Conditioner::Sd1 { l: patched(l) },
        TextEncoders::Sdxl { l, g } => Conditioner::Sdxl {
            l: patched(l),
            g: patched(g),
        },
        TextEncoders::SdxlRefiner(g) => Conditioner::SdxlRefiner { g: patched(g) },
        TextEncoders::Flux { l, t5 } => Conditioner::Flux {
            clip_l: patched(l),
            t5xxl: t5.clone(),
        },
        TextEncoders::Sd3 { l, g, t5 } => {
            Conditioner::Sd3(crate::models::conditioner::sd3::Sd3Encoders::new(
                l.as_ref().map(patched),
                g.as_ref().map(patched),
                t5.clone(),
            ))
        }
    };
    SdClip {
        encoder,
        clip_layer: None,
    }
}

/// The default model sampling of a family's model config (`model_base.model_sampling` with
/// the config's `sampling_settings`).
pub fn family_sampling(family: Family, prediction: CkptPrediction) -> ModelSampling {
    let pred = match prediction {
        CkptPrediction::Eps => Prediction::Eps,
        CkptPrediction::V => Prediction::VPrediction,
    };
    match family {
        // SD1.x and SDXL share ComfyUI's default discrete schedule (scaled-linear betas
        // 0.00085..0.012 over 1000 steps).
        Family::Sd15 | Family::Sdxl | Family::SdxlRefiner => ModelSampling::sd15(pred),
        // ModelType FLUX: ModelSamplingFlux, shift 1.15 (its default; Flux's
        // sampling_settings are empty).
        Family::Flux => ModelSampling::flux_dev(),
        // ModelType FLOW, shift 1, multiplier 1.
        Family::FluxSchnell => ModelSampling::flux_schnell(),
        // ModelType FLOW with SD3's sampling_settings: shift 3, multiplier 1000.
        Family::Sd3 => ModelSampling::sd3(),
    }
}

/// The MODEL payload of a diffusion network and its weights.
pub fn model_payload(
    net: impl Into<DiffusionNet>,
    weights: &Arc<crate::models::WeightMap>,
    family: Family,
    prediction: CkptPrediction,
) -> SdModel {
    SdModel {
        diffusion: PatchedModel::new(net, weights.clone()),
        sampling: Arc::new(family_sampling(family, prediction)),
        family,
        cfg_patches: Default::default(),
        unet_patches: Default::default(),
        denoise_mask_fn: None,
        empty_conditioning: None,
    }
}

/// A loaded checkpoint split into ComfyUI's three outputs.
pub fn split_checkpoint(ck: &Checkpoint) -> (SdModel, SdClip, SdVae) {
    (
        model_payload(ck.model.clone(), &ck.weights, ck.family, ck.prediction),
        clip_payload(&ck.text, &ck.weights),
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
    checkpoints: Mutex<HashMap<PathBuf, (Stamp, Checkpoint)>>,
    #[allow(clippy::type_complexity)]
    diffusion_models: Mutex<HashMap<(PathBuf, Option<Fp8Kind>), (Stamp, DiffusionModelFile)>>,
    #[allow(clippy::type_complexity)]
    text_encoders: Mutex<HashMap<(Vec<PathBuf>, String), (Vec<Stamp>, TextEncoderFiles)>>,
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
    pub fn checkpoint(&self, path: &Path, compute: &Compute) -> Result<Checkpoint, NodeError> {
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
        let ck = load_checkpoint_with(path, &compute.device, compute.dtype, &options)
            .map_err(|e| NodeError::msg(format!("ERROR: could not load checkpoint: {e}")))?;
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(path.to_path_buf(), (st, ck.clone()));
        Ok(ck)
    }

    /// The diffusion model file at `path` (UNETLoader), computed in `compute.dtype`, its
    /// weights stored as fp8 `weight_dtype` when given (UNETLoader's `weight_dtype`).
    pub fn diffusion_model(
        &self,
        path: &Path,
        compute: &Compute,
        weight_dtype: Option<Fp8Kind>,
    ) -> Result<DiffusionModelFile, NodeError> {
        let st = stamp(path);
        let key = (path.to_path_buf(), weight_dtype);
        let mut map = self
            .diffusion_models
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((s, m)) = map.get(&key) {
            if *s == st {
                return Ok(m.clone());
            }
        }
        let m = load_diffusion_model_with(path, &compute.device, compute.dtype, weight_dtype)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(key, (st, m.clone()));
        Ok(m)
    }

    /// The text encoders in `paths` loaded as `clip_type` (CLIPLoader, DualCLIPLoader).
    pub fn text_encoders(
        &self,
        paths: &[PathBuf],
        clip_type: &str,
        compute: &Compute,
        embedding_directories: Vec<PathBuf>,
    ) -> Result<TextEncoderFiles, NodeError> {
        let st: Vec<Stamp> = paths.iter().map(|p| stamp(p)).collect();
        let key = (paths.to_vec(), clip_type.to_string());
        let mut map = self.text_encoders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, t)) = map.get(&key) {
            if *s == st {
                return Ok(t.clone());
            }
        }
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let t = load_text_encoders(
            &refs,
            clip_type,
            &compute.device,
            compute.dtype,
            LoadOptions::default().clip_fp16_round,
            embedding_directories,
        )
        .map_err(|e| NodeError::msg(e.to_string()))?;
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(key, (st, t.clone()));
        Ok(t)
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
