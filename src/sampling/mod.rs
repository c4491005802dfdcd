//! ComfyUI's sampling numerics, model-free (`/work/shared/spec/numerics.md` §0–§5).
//!
//! * [`rng`] — re-export of [`crate::torch_rng`]: bit-exact `torch.manual_seed` + `torch.randn`
//!   on CPU, shared with the model layer (LoRA fp8 rounding draws from the same generator).
//! * [`seed_sequence`] — numpy `SeedSequence`, for the Brownian tree's per-node seeds.
//! * [`brownian`] — torchsde's Brownian tree (the SDE samplers' noise).
//! * [`noise`] — `prepare_noise`, the [`noise::NoiseSampler`] trait, the default and
//!   Brownian-tree noise samplers.
//! * [`model_sampling`] — ComfyUI's model samplings (discrete, flow, Flux, continuous) and
//!   prediction classes (EPS, V, EDM, CONST, …): sigma table, σ ↔ t, input/denoised/noise
//!   scaling.
//! * [`schedulers`] — every ComfyUI scheduler, KSampler's denoise / start / end handling;
//!   [`gits_levels`] holds GITSScheduler's noise-level tables.
//! * [`cfg_patches`] — model patches of the CFG combine (RescaleCFG, CFGNorm), DualCFGGuider's.
//! * [`pre_cfg`] — pre-CFG patches (LatentApplyOperationCFG, APG, FreSca, TCFG).
//! * [`sag`] — SelfAttentionGuidance's blur map.
//! * [`unet_patches`] — model patches of the UNet's skip connections (FreeU, FreeU_V2).
//! * [`samplers`] — the [`samplers::Denoiser`] trait, [`samplers::SamplerKind`],
//!   [`samplers::sample`], and the start/end-of-sampling helpers.
//! * [`conds`] — sampling-time conditioning: areas, masks, strengths, timestep ranges,
//!   the inpainting concat, and `calc_cond_batch`.
//! * [`differential_diffusion`] — DifferentialDiffusion's per-step threshold of the denoise
//!   mask.
//! * [`masks`] — mask/batch resizing as `comfy.utils` does it.
//! * [`torch_math`] — torch's float32 scalar sqrt / log / exp as the samplers see them.
//! * [`preview`] — latent previews (latent2rgb) while a sampler runs.

pub mod brownian;
pub mod cfg_patches;
pub mod conds;
pub mod differential_diffusion;
pub mod gits_levels;
pub mod guidance_fns;
pub mod masks;
pub mod model_sampling;
pub mod noise;
pub mod pre_cfg;
pub mod preview;
pub use crate::torch_rng as rng;
pub mod sag;
pub mod samplers;
pub mod schedulers;
pub mod seed_sequence;
pub mod torch_math;
pub mod unet_patches;
