//! Differential diffusion (`comfy_extras/nodes_differential_diffusion.py`): a MODEL patch
//! that turns a soft denoise mask into a per-step binary one, so a mask value `m` decides at
//! which point of the schedule its pixel starts being denoised (grey areas change less than
//! white ones). It applies wherever masked denoising happens (`KSamplerX0Inpaint`), for every
//! model family.
//!
//! At the model call for σ, with the run's sigmas `σ_0 … σ_n`:
//! `σ_to = max(σ_min, σ_n)`, threshold `(t(σ) − t(σ_to)) / (t(σ_0) − t(σ_to))` with `t` the
//! model sampling's `timestep`, the binary mask `m ≥ threshold`; for a strength in (0, 1) the
//! result is `strength·binary + (1 − strength)·m` (a strength of exactly 0 or ≥ 1 gives the
//! binary mask, as ComfyUI's `if strength and strength < 1` does). Everything in f32 like
//! torch.

use super::model_sampling::ModelSampling;
use candle_core::{DType, Result, Tensor};

/// The patch DifferentialDiffusion puts on a MODEL (`denoise_mask_function`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DifferentialDiffusion {
    pub strength: f64,
}

impl DifferentialDiffusion {
    /// The threshold at model sigma `sigma` for a run over `sigmas` (non-empty).
    pub fn threshold(ms: &ModelSampling, sigmas: &[f32], sigma: f32) -> f32 {
        let mut sigma_to = ms.sigma_min();
        let last = *sigmas.last().expect("a sampling run has sigmas");
        if last > sigma_to {
            sigma_to = last;
        }
        let ts_from = ms.timestep(sigmas[0]);
        let ts_to = ms.timestep(sigma_to);
        let current = ms.timestep(sigma);
        (current - ts_to) / (ts_from - ts_to)
    }

    /// The mask the sampler uses at `sigma` instead of `mask` (any shape, values 0..1).
    pub fn apply(
        &self,
        ms: &ModelSampling,
        sigmas: &[f32],
        sigma: f32,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let th = Self::threshold(ms, sigmas, sigma);
        let m = mask.to_dtype(DType::F32)?;
        let values = m.flatten_all()?.to_vec1::<f32>()?;
        let blend = self.strength != 0.0 && self.strength < 1.0;
        let (s, rest) = (self.strength as f32, (1.0 - self.strength) as f32);
        let out: Vec<f32> = values
            .into_iter()
            .map(|v| {
                let b = if v >= th { 1.0f32 } else { 0.0 };
                if blend {
                    s * b + rest * v
                } else {
                    b
                }
            })
            .collect();
        Tensor::from_vec(out, m.dims(), m.device())
    }
}
