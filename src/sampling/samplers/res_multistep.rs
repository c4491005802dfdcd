//! `res_multistep` (RES second-order multistep, arXiv 2308.02157) with its ancestral and
//! CFG++ forms, and `sample_gradient_estimation` (with CFG++), from
//! `comfy/k_diffusion/sampling.py`. Float32 op by op, as in [`super::k_diffusion`].

use super::k_diffusion::{ancestral_step_eta, axpy, to_d};
use super::{Ctx, SamplingError};
use crate::sampling::torch_math::TorchScalar;

type R = Result<Vec<f32>, SamplingError>;

/// The model call of a sampler that may be CFG++: (denoised, uncond when `cfg_pp`).
fn call(
    ctx: &mut Ctx,
    x: &[f32],
    sigma: f32,
    cfg_pp: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>), SamplingError> {
    if cfg_pp {
        let (d, u) = ctx.model_uncond(x, sigma)?;
        Ok((d, Some(u)))
    } else {
        Ok((ctx.model(x, sigma)?, None))
    }
}

/// `torch.nan_to_num(v, nan=0.0)` of a float32 scalar (±inf become ±f32::MAX).
fn nan_to_num(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else if v == f32::INFINITY {
        f32::MAX
    } else if v == f32::NEG_INFINITY {
        f32::MIN
    } else {
        v
    }
}

/// `res_multistep(…, eta, cfg_pp)` with s_noise = 1. The noise sampler is drawn after
/// every step with σ_{i+1} > 0, even at η = 0 (where it is scaled by 0), as ComfyUI does.
pub(super) fn res_multistep(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    eta: f32,
    cfg_pp: bool,
) -> R {
    let sigma_fn = |t: f32| (-t).torch_exp();
    let t_fn = |sig: f32| -sig.torch_ln();
    let phi1_fn = |t: f32| t.torch_exp_m1() / t;
    let phi2_fn = |t: f32| (phi1_fn(t) - 1.0) / t;
    let mut old_sigma_down = f32::NAN;
    let mut old_den: Option<Vec<f32>> = None;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (den, unc) = call(ctx, &x, s[i], cfg_pp)?;
        let (down, up) = ancestral_step_eta(s[i], s[i + 1], eta);
        match (&old_den, down == 0.0) {
            (Some(od), false) => {
                let (t, t_old, t_next, t_prev) =
                    (t_fn(s[i]), t_fn(old_sigma_down), t_fn(down), t_fn(s[i - 1]));
                let h = t_next - t;
                let c2 = (t_prev - t_old) / h;
                let (phi1, phi2) = (phi1_fn(-h), phi2_fn(-h));
                let b1 = nan_to_num(phi1 - phi2 / c2);
                let b2 = nan_to_num(phi2 / c2);
                let e = sigma_fn(h);
                match &unc {
                    Some(u) => {
                        x = x
                            .iter()
                            .zip(den.iter().zip(u))
                            .map(|(a, (p, q))| a + (p - q))
                            .collect();
                        x = x
                            .iter()
                            .zip(u.iter().zip(od))
                            .map(|(a, (q, o))| e * a + h * (b1 * q + b2 * o))
                            .collect();
                    }
                    None => {
                        x = x
                            .iter()
                            .zip(den.iter().zip(od))
                            .map(|(a, (p, o))| e * a + h * (b1 * p + b2 * o))
                            .collect();
                    }
                }
            }
            _ => match &unc {
                Some(u) => {
                    let d = to_d(&x, s[i], u);
                    x = den.iter().zip(&d).map(|(p, q)| p + q * down).collect();
                }
                None => {
                    let d = to_d(&x, s[i], &den);
                    x = axpy(&x, &d, down - s[i]);
                }
            },
        }
        if s[i + 1] > 0.0 {
            let n = ctx.noise(s[i], s[i + 1])?;
            x = x.iter().zip(&n).map(|(a, e)| a + (e * 1.0) * up).collect();
        }
        old_den = Some(unc.unwrap_or(den));
        old_sigma_down = down;
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_gradient_estimation` (γ = 2), CFG++ or not.
pub(super) fn gradient_estimation(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32], cfg_pp: bool) -> R {
    const GE_GAMMA: f32 = 2.0;
    let mut old_d: Option<Vec<f32>> = None;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (den, unc) = call(ctx, &x, s[i], cfg_pp)?;
        let d = to_d(&x, s[i], unc.as_ref().unwrap_or(&den));
        let dt = s[i + 1] - s[i];
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            x = if cfg_pp {
                den.iter().zip(&d).map(|(p, q)| p + q * s[i + 1]).collect()
            } else {
                axpy(&x, &d, dt)
            };
            if let (true, Some(od)) = (i >= 1, &old_d) {
                let dbar: Vec<f32> = d
                    .iter()
                    .zip(od)
                    .map(|(a, b)| (GE_GAMMA - 1.0) * (a - b))
                    .collect();
                x = axpy(&x, &dbar, dt);
            }
        }
        old_d = Some(d);
        ctx.end(i);
    }
    Ok(x)
}
