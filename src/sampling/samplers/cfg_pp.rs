//! The CFG++ samplers of `comfy/k_diffusion/sampling.py` (`sample_euler_cfg_pp`,
//! `sample_euler_ancestral_cfg_pp`, `sample_dpmpp_2s_ancestral_cfg_pp`,
//! `sample_dpmpp_2m_cfg_pp`, and `sample_euler_pp` of `nodes_advanced_samplers.py`): they step with the *unconditional* prediction and re-add the
//! guided one, so each model call also returns the uncond ([`Ctx::model_uncond`]).
//! Float32 op by op, as in [`super::k_diffusion`].

use super::k_diffusion::{ancestral_step_eta, to_d, HalfLogSnr};
use super::{Ctx, SamplingError};
use crate::sampling::torch_math::TorchScalar;

type R = Result<Vec<f32>, SamplingError>;

/// `sample_euler_ancestral_cfg_pp` (η = 0, s_noise = 0 is `sample_euler_cfg_pp`). The
/// half-log-SNR is the model's (`−logit σ` for CONST models).
pub(super) fn euler_ancestral_cfg_pp(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    eta: f32,
    s_noise: f32,
    snr: HalfLogSnr,
) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (den, unc) = ctx.model_uncond(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            let alpha_s = s[i] * snr.lambda(s[i]).torch_exp();
            let alpha_t = s[i + 1] * snr.lambda(s[i + 1]).torch_exp();
            let d: Vec<f32> = x
                .iter()
                .zip(&unc)
                .map(|(a, u)| (a - alpha_s * u) / s[i])
                .collect();
            let (down, up) = ancestral_step_eta(s[i] / alpha_s, s[i + 1] / alpha_t, eta);
            let down = alpha_t * down;
            x = den
                .iter()
                .zip(&d)
                .map(|(p, q)| alpha_t * p + down * q)
                .collect();
            if eta > 0.0 && s_noise > 0.0 {
                let n = ctx.noise(s[i], s[i + 1])?;
                x = x
                    .iter()
                    .zip(&n)
                    .map(|(a, e)| a + ((alpha_t * e) * s_noise) * up)
                    .collect();
            }
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpmpp_2s_ancestral_cfg_pp` (η = 1, s_noise = 1). The second model call replaces
/// the captured uncond before the final update, as ComfyUI's `temp[0]` does.
pub(super) fn dpmpp_2s_ancestral_cfg_pp(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    let t_fn = |sig: f32| -sig.torch_ln();
    let sigma_fn = |t: f32| (-t).torch_exp();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (den, unc) = ctx.model_uncond(&x, s[i])?;
        let (down, up) = ancestral_step_eta(s[i], s[i + 1], 1.0);
        if down == 0.0 {
            let d = to_d(&x, s[i], &unc);
            x = den.iter().zip(&d).map(|(p, q)| p + q * down).collect();
        } else {
            let (t, tn) = (t_fn(s[i]), t_fn(down));
            let h = tn - t;
            let sm = t + 0.5 * h;
            let k = sigma_fn(sm) / sigma_fn(t);
            let c = (-h * 0.5).torch_exp_m1();
            let x2: Vec<f32> = x
                .iter()
                .zip(den.iter().zip(&unc))
                .map(|(a, (p, u))| k * (a + (p - u)) - c * p)
                .collect();
            let (den2, unc2) = ctx.model_uncond(&x2, sigma_fn(sm))?;
            let k = sigma_fn(tn) / sigma_fn(t);
            let c = (-h).torch_exp_m1();
            x = x
                .iter()
                .zip(den.iter().zip(&unc2))
                .zip(&den2)
                .map(|((a, (p, u)), p2)| k * (a + (p - u)) - c * p2)
                .collect();
        }
        if s[i + 1] > 0.0 {
            let n = ctx.noise(s[i], s[i + 1])?;
            x = x.iter().zip(&n).map(|(a, e)| a + (e * 1.0) * up).collect();
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpmpp_2m_cfg_pp`.
pub(super) fn dpmpp_2m_cfg_pp(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    let t_fn = |sig: f32| -sig.torch_ln();
    let mut old: Option<Vec<f32>> = None;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (den, unc) = ctx.model_uncond(&x, s[i])?;
        let (t, tn) = (t_fn(s[i]), t_fn(s[i + 1]));
        let h = tn - t;
        let e = (-h).torch_exp();
        let ne = -e;
        let mix: Vec<f32> = match &old {
            Some(od) if s[i + 1] != 0.0 => {
                let h_last = t - t_fn(s[i - 1]);
                let r = h_last / h;
                let c = (-h).torch_exp_m1() * (1.0 / (2.0 * r));
                unc.iter()
                    .zip(den.iter().zip(od))
                    .map(|(u, (p, o))| ne * u - c * (p - o))
                    .collect()
            }
            _ => unc.iter().map(|u| ne * u).collect(),
        };
        x = den
            .iter()
            .zip(&mix)
            .zip(&x)
            .map(|((p, m), a)| (p + m) + e * a)
            .collect();
        old = Some(unc);
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_euler_pp` (SamplerEulerCFG++ "alternative", `comfy_extras/nodes_advanced_samplers.py`):
/// an Euler step along `(x − D + D_uncond − D) / σ`.
pub(super) fn euler_pp(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (den, unc) = ctx.model_uncond(&x, s[i])?;
        let dt = s[i + 1] - s[i];
        x = x
            .iter()
            .zip(den.iter().zip(&unc))
            .map(|(a, (p, u))| a + ((((a - p) + u) - p) / s[i]) * dt)
            .collect();
        ctx.end(i);
    }
    Ok(x)
}
