//! DPM-Solver (arXiv 2206.00927) as `comfy/k_diffusion/sampling.py`'s `DPMSolver` runs it:
//! `dpm_fast` (fixed steps, orders 3…3,2,1 over `t = −ln σ` from σ_max to σ_min) and
//! `dpm_adaptive` (embedded 2/3-order pairs with a PID step-size controller). Both take
//! σ_max = σ₀ and σ_min = the last non-zero sigma (ComfyUI's `ksampler` wrappers); the
//! model sees σ = exp(−t). Float32 op by op, as in [`super::k_diffusion`].

use super::k_diffusion::ancestral_step_eta;
use super::{Ctx, SamplingError};
use crate::sampling::model_sampling::linspace_f32;
use crate::sampling::torch_math::TorchScalar;

type R = Result<Vec<f32>, SamplingError>;

fn t_of(sigma: f32) -> f32 {
    -sigma.torch_ln()
}

fn sigma_of(t: f32) -> f32 {
    (-t).torch_exp()
}

/// One solve's cache of ε evaluations (`eps_cache`: "eps", "eps_r1", "eps_r2").
#[derive(Default)]
struct Cache {
    eps: Option<Vec<f32>>,
    eps_r1: Option<Vec<f32>>,
    eps_r2: Option<Vec<f32>>,
}

#[derive(Clone, Copy)]
enum Key {
    Eps,
    R1,
    R2,
}

/// `DPMSolver.eps`: ε = (x − D(x, σ(t))) / σ(t), cached by key.
fn eps(ctx: &mut Ctx, cache: &mut Cache, key: Key, x: &[f32], t: f32) -> R {
    let slot = match key {
        Key::Eps => &mut cache.eps,
        Key::R1 => &mut cache.eps_r1,
        Key::R2 => &mut cache.eps_r2,
    };
    if let Some(e) = slot {
        return Ok(e.clone());
    }
    let sig = sigma_of(t);
    let den = ctx.model(x, sig)?;
    let e: Vec<f32> = x.iter().zip(&den).map(|(a, d)| (a - d) / sig).collect();
    *slot = Some(e.clone());
    Ok(e)
}

fn step_1(ctx: &mut Ctx, c: &mut Cache, x: &[f32], t: f32, tn: f32) -> R {
    let h = tn - t;
    let e = eps(ctx, c, Key::Eps, x, t)?;
    let k = sigma_of(tn) * h.torch_exp_m1();
    Ok(x.iter().zip(&e).map(|(a, v)| a - k * v).collect())
}

fn step_2(ctx: &mut Ctx, c: &mut Cache, x: &[f32], t: f32, tn: f32, r1: f64) -> R {
    let h = tn - t;
    let e = eps(ctx, c, Key::Eps, x, t)?;
    let r1f = r1 as f32;
    let s1 = t + r1f * h;
    let k1 = sigma_of(s1) * (r1f * h).torch_exp_m1();
    let u1: Vec<f32> = x.iter().zip(&e).map(|(a, v)| a - k1 * v).collect();
    let e1 = eps(ctx, c, Key::R1, &u1, s1)?;
    let em = h.torch_exp_m1();
    let a = sigma_of(tn) * em;
    let b = sigma_of(tn) / (2.0 * r1) as f32 * em;
    Ok(x.iter()
        .zip(e.iter().zip(&e1))
        .map(|(v, (p, q))| (v - a * p) - b * (q - p))
        .collect())
}

fn step_3(ctx: &mut Ctx, c: &mut Cache, x: &[f32], t: f32, tn: f32) -> R {
    let (r1, r2) = (1.0f64 / 3.0, 2.0f64 / 3.0);
    let (r1f, r2f) = (r1 as f32, r2 as f32);
    let h = tn - t;
    let e = eps(ctx, c, Key::Eps, x, t)?;
    let s1 = t + r1f * h;
    let s2 = t + r2f * h;
    let k1 = sigma_of(s1) * (r1f * h).torch_exp_m1();
    let u1: Vec<f32> = x.iter().zip(&e).map(|(a, v)| a - k1 * v).collect();
    let e1 = eps(ctx, c, Key::R1, &u1, s1)?;
    let em2 = (r2f * h).torch_exp_m1();
    let a2 = sigma_of(s2) * em2;
    let b2 = sigma_of(s2) * (r2 / r1) as f32 * (em2 / (r2f * h) - 1.0);
    let u2: Vec<f32> = x
        .iter()
        .zip(e.iter().zip(&e1))
        .map(|(v, (p, q))| (v - a2 * p) - b2 * (q - p))
        .collect();
    let e2 = eps(ctx, c, Key::R2, &u2, s2)?;
    let em = h.torch_exp_m1();
    let a = sigma_of(tn) * em;
    let b = sigma_of(tn) / r2f * (em / h - 1.0);
    Ok(x.iter()
        .zip(e.iter().zip(&e2))
        .map(|(v, (p, q))| (v - a * p) - b * (q - p))
        .collect())
}

/// σ_min / σ_max of ComfyUI's dpm_fast / dpm_adaptive wrappers.
fn sigma_range(s: &[f32]) -> Result<(f32, f32), SamplingError> {
    let mut smin = s[s.len() - 1];
    if smin == 0.0 {
        smin = s[s.len() - 2];
    }
    let smax = s[0];
    if smin <= 0.0 || smax <= 0.0 {
        return Err(SamplingError::Invalid(
            "sigma_min and sigma_max must not be 0".into(),
        ));
    }
    Ok((smin, smax))
}

/// `sample_dpm_fast` with n = len(sigmas) − 1 model evaluations, η = 0.
pub(super) fn dpm_fast(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    let (smin, smax) = sigma_range(s)?;
    let nfe = s.len() - 1;
    let (t_start, t_end) = (t_of(smax), t_of(smin));
    let m = nfe / 3 + 1;
    let ts = linspace_f32(t_start as f64, t_end as f64, m + 1);
    let orders: Vec<usize> = if nfe.is_multiple_of(3) {
        let mut o = vec![3; m - 2];
        o.extend([2, 1]);
        o
    } else {
        let mut o = vec![3; m - 1];
        o.push(nfe % 3);
        o
    };
    for (i, &order) in orders.iter().enumerate() {
        ctx.begin(i)?;
        let mut cache = Cache::default();
        let (t, tn) = (ts[i], ts[i + 1]);
        x = match order {
            1 => step_1(ctx, &mut cache, &x, t, tn)?,
            2 => step_2(ctx, &mut cache, &x, t, tn, 0.5)?,
            _ => step_3(ctx, &mut cache, &x, t, tn)?,
        };
        ctx.end(i);
    }
    Ok(x)
}

/// The parameters of `sample_dpm_adaptive` (SamplerDPMAdaptative's inputs; KSampler uses
/// the defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveOptions {
    pub order: usize,
    pub rtol: f64,
    pub atol: f64,
    pub h_init: f64,
    pub pcoeff: f64,
    pub icoeff: f64,
    pub dcoeff: f64,
    pub accept_safety: f64,
    pub eta: f64,
    pub s_noise: f64,
}

impl Default for AdaptiveOptions {
    fn default() -> Self {
        AdaptiveOptions {
            order: 3,
            rtol: 0.05,
            atol: 0.0078,
            h_init: 0.05,
            pcoeff: 0.0,
            icoeff: 1.0,
            dcoeff: 0.0,
            accept_safety: 0.81,
            eta: 0.0,
            s_noise: 1.0,
        }
    }
}

/// `PIDStepSizeController` (Python floats).
struct Pid {
    h: f64,
    b1: f64,
    b2: f64,
    b3: f64,
    accept_safety: f64,
    errs: Vec<f64>,
}

impl Pid {
    fn propose_step(&mut self, error: f64) -> bool {
        let inv = 1.0 / (error + 1e-8);
        if self.errs.is_empty() {
            self.errs = vec![inv, inv, inv];
        }
        self.errs[0] = inv;
        let factor =
            self.errs[0].powf(self.b1) * self.errs[1].powf(self.b2) * self.errs[2].powf(self.b3);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            self.errs[2] = self.errs[1];
            self.errs[1] = self.errs[0];
        }
        self.h *= factor;
        accept
    }
}

/// `sample_dpm_adaptive`.
pub(super) fn dpm_adaptive(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32], o: &AdaptiveOptions) -> R {
    let (smin, smax) = sigma_range(s)?;
    if o.order != 2 && o.order != 3 {
        return Err(SamplingError::Invalid("order should be 2 or 3".into()));
    }
    let (t_start, t_end) = (t_of(smax), t_of(smin));
    let forward = t_end > t_start;
    if !forward && o.eta != 0.0 {
        return Err(SamplingError::Invalid(
            "eta must be 0 for reverse sampling".into(),
        ));
    }
    let h_init = o.h_init.abs() * if forward { 1.0 } else { -1.0 };
    let (atol, rtol) = (o.atol as f32, o.rtol as f32);
    let pid_order = if o.eta != 0.0 { 1.5 } else { o.order as f64 };
    let mut pid = Pid {
        h: h_init,
        b1: (o.pcoeff + o.icoeff + o.dcoeff) / pid_order,
        b2: -(o.pcoeff + 2.0 * o.dcoeff) / pid_order,
        b3: o.dcoeff / pid_order,
        accept_safety: o.accept_safety,
        errs: Vec::new(),
    };
    let mut sv = t_start;
    let mut x_prev = x.clone();
    let numel_sqrt = (x.len() as f64).sqrt() as f32;
    let mut steps = 0usize;
    let end_lo = t_end - 1e-5f32;
    let end_hi = t_end + 1e-5f32;
    while if forward { sv < end_lo } else { sv > end_hi } {
        ctx.begin(steps)?;
        let mut cache = Cache::default();
        let step = sv + pid.h as f32;
        let t = if forward {
            t_end.min(step)
        } else {
            t_end.max(step)
        };
        let (t_, su) = if o.eta != 0.0 {
            let (sd, _) = ancestral_step_eta(sigma_of(sv), sigma_of(t), o.eta as f32);
            let t_ = t_end.min(t_of(sd));
            let (a, b) = (sigma_of(t), sigma_of(t_));
            (t_, (a * a - b * b).torch_sqrt())
        } else {
            (t, 0.0)
        };
        let (x_low, x_high) = if o.order == 2 {
            let lo = step_1(ctx, &mut cache, &x, sv, t_)?;
            let hi = step_2(ctx, &mut cache, &x, sv, t_, 0.5)?;
            (lo, hi)
        } else {
            let lo = step_2(ctx, &mut cache, &x, sv, t_, 1.0 / 3.0)?;
            let hi = step_3(ctx, &mut cache, &x, sv, t_)?;
            (lo, hi)
        };
        let mut sq = 0f64;
        for ((l, hh), p) in x_low.iter().zip(&x_high).zip(&x_prev) {
            let delta = atol.max(rtol * l.abs().max(p.abs()));
            let q = (l - hh) / delta;
            sq += (q as f64) * (q as f64);
        }
        let error = sq.sqrt() as f32 / numel_sqrt;
        if pid.propose_step(error as f64) {
            x_prev = x_low;
            x = x_high;
            if o.eta != 0.0 {
                let n = ctx.noise(sigma_of(sv), sigma_of(t))?;
                let k = su * o.s_noise as f32;
                x = x.iter().zip(&n).map(|(a, e)| a + k * e).collect();
            }
            sv = t;
        }
        ctx.end(steps);
        steps += 1;
    }
    Ok(x)
}
