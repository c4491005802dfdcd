//! Stochastic exponential-integrator samplers on the half-log-SNR of
//! `comfy/k_diffusion/sampling.py`: `sample_er_sde` (ER-SDE-Solver-3, arXiv 2309.06169)
//! and `sample_seeds_2` / `sample_seeds_3` (SEEDS, arXiv 2305.14267). All three take the
//! sigmas after `offset_first_sigma_for_snr` (the model is called at the offset σ₀ too)
//! and ComfyUI's default noise sampler. Float32 op by op, as in [`super::k_diffusion`].

use super::k_diffusion::{lerp, HalfLogSnr};
use super::{Ctx, SamplingError};
use crate::sampling::torch_math::TorchScalar;

type R = Result<Vec<f32>, SamplingError>;

/// `x ** 0.3` of a float32 tensor (`pow` with the exponent as float32).
fn pow03(x: f32) -> f32 {
    (x as f64).powf(0.3f32 as f64) as f32
}

/// The default ER-SDE noise scaler `x · (exp(x^0.3) + 10)`.
fn er_noise_scaler(x: f32) -> f32 {
    x * (pow03(x).torch_exp() + 10.0)
}

/// The parameters SamplerER_SDE sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErSdeOptions {
    pub s_noise: f32,
    pub max_stage: usize,
    /// `None`: the default ER-SDE noise scaler; `Some(η)`: the reverse-time SDE scaler
    /// `x^(η+1)`.
    pub reverse_time_eta: Option<f32>,
}

impl Default for ErSdeOptions {
    fn default() -> Self {
        ErSdeOptions {
            s_noise: 1.0,
            max_stage: 3,
            reverse_time_eta: None,
        }
    }
}

/// `sample_er_sde`; `s` has had `offset_first_sigma_for_snr` applied.
pub(super) fn er_sde(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    snr: HalfLogSnr,
    o: &ErSdeOptions,
) -> R {
    let scaler = |v: f32| -> f32 {
        match o.reverse_time_eta {
            None => er_noise_scaler(v),
            Some(eta) => ((v as f64).powf((eta + 1.0) as f64)) as f32,
        }
    };
    const POINTS: f32 = 200.0;
    // er_lambda = exp(−λ) = σ / α
    let er: Vec<f32> = s.iter().map(|&v| (-snr.lambda(v)).torch_exp()).collect();
    let mut old_den: Option<Vec<f32>> = None;
    let mut old_dd: Option<Vec<f32>> = None;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let stage = o.max_stage.min(i + 1);
        if s[i + 1] == 0.0 {
            x = den.clone();
        } else {
            let (ls, lt) = (er[i], er[i + 1]);
            let alpha_s = s[i] / ls;
            let alpha_t = s[i + 1] / lt;
            let r_alpha = alpha_t / alpha_s;
            let r = scaler(lt) / scaler(ls);
            let (k1, k2) = (r_alpha * r, alpha_t * (1.0 - r));
            x = x.iter().zip(&den).map(|(a, p)| k1 * a + k2 * p).collect();
            if stage >= 2 {
                let od = old_den.as_ref().expect("stage 2 follows a step");
                let dt = lt - ls;
                let step = -dt / POINTS;
                let pos: Vec<f32> = (0..200).map(|k| lt + k as f32 * step).collect();
                let scaled: Vec<f32> = pos.iter().map(|&p| scaler(p)).collect();
                let sum: f64 = scaled.iter().map(|&v| (1.0 / v) as f64).sum();
                let s1 = sum as f32 * step;
                let denom = ls - er[i - 1];
                let dd: Vec<f32> = den.iter().zip(od).map(|(p, q)| (p - q) / denom).collect();
                let c = alpha_t * (dt + s1 * scaler(lt));
                x = x.iter().zip(&dd).map(|(a, d)| a + c * d).collect();
                if stage >= 3 {
                    let odd = old_dd.as_ref().expect("stage 3 follows stage 2");
                    let sum_u: f64 = pos
                        .iter()
                        .zip(&scaled)
                        .map(|(&p, &v)| ((p - ls) / v) as f64)
                        .sum();
                    let su = sum_u as f32 * step;
                    let denom = (ls - er[i - 2]) / 2.0;
                    let c = alpha_t * ((dt * dt) / 2.0 + su * scaler(lt));
                    x = x
                        .iter()
                        .zip(dd.iter().zip(odd))
                        .map(|(a, (d, q))| a + c * ((d - q) / denom))
                        .collect();
                }
                old_dd = Some(dd);
            }
            if o.s_noise > 0.0 {
                let n = ctx.noise(s[i], s[i + 1])?;
                let v = lt * lt - (ls * ls) * (r * r);
                let c = v.torch_sqrt();
                let c = if c.is_nan() { 0.0 } else { c };
                let sn = o.s_noise;
                x = x
                    .iter()
                    .zip(&n)
                    .map(|(a, e)| a + ((alpha_t * e) * sn) * c)
                    .collect();
            }
        }
        old_den = Some(den);
        ctx.end(i);
    }
    Ok(x)
}

/// `sqrt(−expm1(v))`, the SDE noise factor.
fn noise_factor(v: f32) -> f32 {
    (-v.torch_exp_m1()).torch_sqrt()
}

/// `ei_h_phi_2(h) = (expm1(h) − h) / h`.
fn phi2(h: f32) -> f32 {
    (h.torch_exp_m1() - h) / h
}

/// `sample_seeds_2` (η = 1, s_noise = 1, r = 1/2).
pub(super) fn seeds_2(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32], snr: HalfLogSnr) -> R {
    let (eta, s_noise, r) = (1.0f32, 1.0f32, 0.5f64);
    let fac = (1.0 / (2.0 * r)) as f32;
    let rf = r as f32;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den;
            ctx.end(i);
            continue;
        }
        let (ls, lt) = (snr.lambda(s[i]), snr.lambda(s[i + 1]));
        let h = lt - ls;
        let h_eta = h * (eta + 1.0);
        let ls1 = lerp(ls, lt, rf);
        let ss1 = snr.sigma(ls1);
        let alpha_s1 = ss1 * ls1.torch_exp();
        let alpha_t = s[i + 1] * lt.torch_exp();

        let a = ss1 / s[i] * ((-r as f32) * h * eta).torch_exp();
        let b = alpha_s1 * ((-r as f32) * h_eta).torch_exp_m1();
        let mut x2: Vec<f32> = x.iter().zip(&den).map(|(p, q)| a * p - b * q).collect();
        let n1 = ctx.noise(s[i], ss1)?;
        let k = noise_factor((-2.0 * r) as f32 * h * eta);
        let mut sde: Vec<f32> = n1.iter().map(|e| k * e).collect();
        x2 = x2
            .iter()
            .zip(&sde)
            .map(|(p, e)| p + (e * ss1) * s_noise)
            .collect();
        let den2 = ctx.model(&x2, ss1)?;

        let dd: Vec<f32> = den
            .iter()
            .zip(&den2)
            .map(|(p, q)| lerp(*p, *q, fac))
            .collect();
        let a = s[i + 1] / s[i] * (-h * eta).torch_exp();
        let b = alpha_t * (-h_eta).torch_exp_m1();
        x = x.iter().zip(&dd).map(|(p, q)| a * p - b * q).collect();
        let sf = (r - 1.0) as f32 * h * eta;
        let e = sf.torch_exp();
        let k = noise_factor(sf * 2.0);
        let n2 = ctx.noise(ss1, s[i + 1])?;
        sde = sde.iter().zip(&n2).map(|(v, n)| v * e + k * n).collect();
        let sn = s[i + 1];
        x = x
            .iter()
            .zip(&sde)
            .map(|(p, e)| p + (e * sn) * s_noise)
            .collect();
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_seeds_3` (η = 1, s_noise = 1, r₁ = 1/3, r₂ = 2/3).
pub(super) fn seeds_3(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32], snr: HalfLogSnr) -> R {
    let (eta, s_noise) = (1.0f32, 1.0f32);
    let (r1, r2) = (1.0f64 / 3.0, 2.0f64 / 3.0);
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den;
            ctx.end(i);
            continue;
        }
        let (ls, lt) = (snr.lambda(s[i]), snr.lambda(s[i + 1]));
        let h = lt - ls;
        let h_eta = h * (eta + 1.0);
        let ls1 = lerp(ls, lt, r1 as f32);
        let ls2 = lerp(ls, lt, r2 as f32);
        let (ss1, ss2) = (snr.sigma(ls1), snr.sigma(ls2));
        let alpha_s1 = ss1 * ls1.torch_exp();
        let alpha_s2 = ss2 * ls2.torch_exp();
        let alpha_t = s[i + 1] * lt.torch_exp();

        // Step 1
        let a = ss1 / s[i] * ((-r1) as f32 * h * eta).torch_exp();
        let b = alpha_s1 * ((-r1) as f32 * h_eta).torch_exp_m1();
        let mut x2: Vec<f32> = x.iter().zip(&den).map(|(p, q)| a * p - b * q).collect();
        let n1 = ctx.noise(s[i], ss1)?;
        let k = noise_factor((-2.0 * r1) as f32 * h * eta);
        let mut sde: Vec<f32> = n1.iter().map(|e| k * e).collect();
        x2 = x2
            .iter()
            .zip(&sde)
            .map(|(p, e)| p + (e * ss1) * s_noise)
            .collect();
        let den2 = ctx.model(&x2, ss1)?;

        // Step 2
        let a3_2 = (r2 / r1) as f32 * phi2((-r2) as f32 * h_eta);
        let a3_1 = ((-r2) as f32 * h_eta).torch_exp_m1() - a3_2;
        let a = ss2 / s[i] * ((-r2) as f32 * h * eta).torch_exp();
        let mut x3: Vec<f32> = x
            .iter()
            .zip(den.iter().zip(&den2))
            .map(|(p, (d1, d2))| a * p - alpha_s2 * (a3_1 * d1 + a3_2 * d2))
            .collect();
        let sf = (r1 - r2) as f32 * h * eta;
        let e = sf.torch_exp();
        let k = noise_factor(sf * 2.0);
        let n2 = ctx.noise(ss1, ss2)?;
        sde = sde.iter().zip(&n2).map(|(v, n)| v * e + k * n).collect();
        x3 = x3
            .iter()
            .zip(&sde)
            .map(|(p, e)| p + (e * ss2) * s_noise)
            .collect();
        let den3 = ctx.model(&x3, ss2)?;

        // Step 3
        let b3 = phi2(-h_eta) / r2 as f32;
        let b1 = (-h_eta).torch_exp_m1() - b3;
        let a = s[i + 1] / s[i] * (-h * eta).torch_exp();
        x = x
            .iter()
            .zip(den.iter().zip(&den3))
            .map(|(p, (d1, d3))| a * p - alpha_t * (b1 * d1 + b3 * d3))
            .collect();
        let sf = (r2 - 1.0) as f32 * h * eta;
        let e = sf.torch_exp();
        let k = noise_factor(sf * 2.0);
        let n3 = ctx.noise(ss2, s[i + 1])?;
        sde = sde.iter().zip(&n3).map(|(v, n)| v * e + k * n).collect();
        let sn = s[i + 1];
        x = x
            .iter()
            .zip(&sde)
            .map(|(p, e)| p + (e * sn) * s_noise)
            .collect();
        ctx.end(i);
    }
    Ok(x)
}
