//! Single-step and SDE samplers of `comfy/k_diffusion/sampling.py` (numerics.md §3.1–§3.14),
//! op by op in float32. Scalars are PyTorch 0-d float32 tensors; Python floats are rounded
//! to f32 where they meet a tensor; sqrt / log / exp of scalars are torch's ([`TorchScalar`]).

use super::{Ctx, SamplingError};
use crate::sampling::torch_math::{self, TorchScalar};

type R = Result<Vec<f32>, SamplingError>;

// ---- element-wise helpers (each op rounds to f32, like an eager torch op) ----
pub(super) fn scale(a: &[f32], s: f32) -> Vec<f32> {
    a.iter().map(|x| x * s).collect()
}
pub(super) fn div_s(a: &[f32], s: f32) -> Vec<f32> {
    a.iter().map(|x| x / s).collect()
}
/// `(x - denoised) / σ`
pub(super) fn to_d(x: &[f32], sigma: f32, den: &[f32]) -> Vec<f32> {
    x.iter().zip(den).map(|(a, b)| (a - b) / sigma).collect()
}
/// `x + d * dt`
pub(super) fn axpy(x: &[f32], d: &[f32], dt: f32) -> Vec<f32> {
    x.iter().zip(d).map(|(a, b)| a + b * dt).collect()
}
/// `a * x - b * y`
fn lin2(a: f32, x: &[f32], b: f32, y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(p, q)| a * p - b * q).collect()
}

/// `x + noise * s_noise * σ_up` with s_noise = 1 (the multiply is kept: torch does it).
fn add_noise(x: &[f32], noise: &[f32], up: f32) -> Vec<f32> {
    x.iter()
        .zip(noise)
        .map(|(a, e)| a + (e * 1.0) * up)
        .collect()
}

/// `get_ancestral_step(σ_from, σ_to, η)` → (σ_down, σ_up); η = 0 gives (σ_to, 0).
pub(super) fn ancestral_step_eta(from: f32, to: f32, eta: f32) -> (f32, f32) {
    if eta == 0.0 {
        return (to, 0.0);
    }
    let inner = (to * to) * (from * from - to * to) / (from * from);
    let up_c = eta * inner.torch_sqrt();
    let up = if up_c < to { up_c } else { to };
    let down = (to * to - up * up).torch_sqrt();
    (down, up)
}

/// `torch.lerp(a, b, w)` of float32 scalars (weight as float32).
pub(super) fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// `get_ancestral_step(σ_from, σ_to, η = 1)` → (σ_down, σ_up).
pub(super) fn ancestral_step(from: f32, to: f32) -> (f32, f32) {
    let inner = (to * to) * (from * from - to * to) / (from * from);
    let up_c = inner.torch_sqrt();
    let up = if up_c < to { up_c } else { to };
    let down = (to * to - up * up).torch_sqrt();
    (down, up)
}

/// `torch.lerp(a, b, 0.5)` (the `|w| >= 0.5` form).
fn lerp_half(a: f32, b: f32) -> f32 {
    b - (b - a) * 0.5
}

/// ComfyUI's `sigma_to_half_log_snr` / `half_log_snr_to_sigma`: `λ = −logit σ` and
/// `σ = sigmoid(−λ)` for CONST (flow) models, `λ = −ln σ` and `σ = exp(−λ)` otherwise.
#[derive(Debug, Clone, Copy)]
pub(super) struct HalfLogSnr {
    pub(super) is_const: bool,
}

impl HalfLogSnr {
    pub(super) fn lambda(self, sigma: f32) -> f32 {
        if self.is_const {
            -torch_math::logit(sigma)
        } else {
            -sigma.torch_ln()
        }
    }
    pub(super) fn sigma(self, lambda: f32) -> f32 {
        if self.is_const {
            torch_math::sigmoid(-lambda)
        } else {
            (-lambda).torch_exp()
        }
    }
}

/// The RF ancestral step of a CONST model: (σ_down, α_{i+1}/α_down, renoise).
fn rf_step(from: f32, to: f32, eta: f32) -> (f32, f32, f32) {
    let ratio = 1.0 + (to / from - 1.0) * eta;
    let down = to * ratio;
    let a_next = 1.0 - to;
    let a_down = 1.0 - down;
    let renoise = (to * to - ((down * down) * (a_next * a_next)) / (a_down * a_down)).torch_sqrt();
    (down, a_next / a_down, renoise)
}

/// `r·x + (1 − r)·D`
fn blend(r: f32, x: &[f32], den: &[f32]) -> Vec<f32> {
    let q = 1.0 - r;
    x.iter().zip(den).map(|(a, b)| r * a + q * b).collect()
}

/// `k·x + ε·s_noise·renoise`
fn renoise(k: f32, x: &[f32], noise: &[f32], s_noise: f32, c: f32) -> Vec<f32> {
    x.iter()
        .zip(noise)
        .map(|(a, e)| k * a + (e * s_noise) * c)
        .collect()
}

pub(super) fn euler(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let d = to_d(&x, s[i], &den);
        x = axpy(&x, &d, s[i + 1] - s[i]);
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_euler_ancestral` (η, s_noise from SamplerEulerAncestral; 1, 1 by default).
pub(super) fn euler_ancestral(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    eta: f64,
    s_noise: f32,
) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (down, up) = ancestral_step_eta(s[i], s[i + 1], eta as f32);
        if down == 0.0 {
            x = den;
        } else {
            let d = to_d(&x, s[i], &den);
            let dt = down - s[i];
            let n = ctx.noise(s[i], s[i + 1])?;
            x = x
                .iter()
                .zip(&d)
                .zip(&n)
                .map(|((a, b), e)| (a + b * dt) + (e * s_noise) * up)
                .collect();
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_euler_ancestral_RF` (CONST models).
pub(super) fn euler_ancestral_rf(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    eta: f64,
    s_noise: f32,
) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            let (down, k, c) = rf_step(s[i], s[i + 1], eta as f32);
            x = blend(down / s[i], &x, &den);
            if eta > 0.0 {
                let n = ctx.noise(s[i], s[i + 1])?;
                x = renoise(k, &x, &n, s_noise, c);
            }
        }
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn heun(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let d = to_d(&x, s[i], &den);
        let dt = s[i + 1] - s[i];
        if s[i + 1] == 0.0 {
            x = axpy(&x, &d, dt);
        } else {
            let x2 = axpy(&x, &d, dt);
            let den2 = ctx.model(&x2, s[i + 1])?;
            let d2 = to_d(&x2, s[i + 1], &den2);
            let dp: Vec<f32> = d.iter().zip(&d2).map(|(a, b)| (a + b) / 2.0).collect();
            x = axpy(&x, &dp, dt);
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_heunpp2` (s_churn = 0): Euler on the last step, Heun with weights
/// `σ_{i+1} / 2σ_0` on the one before, Heun++ (three evaluations) elsewhere.
pub(super) fn heunpp2(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    let s_end = s[s.len() - 1];
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        // sigma_hat = sigmas[i] * (gamma + 1) with gamma = 0
        let sh = s[i] * 1.0;
        let den = ctx.model(&x, sh)?;
        let d = to_d(&x, sh, &den);
        let dt = s[i + 1] - sh;
        if s[i + 1] == s_end {
            x = axpy(&x, &d, dt);
        } else if s[i + 2] == s_end {
            let x2 = axpy(&x, &d, dt);
            let den2 = ctx.model(&x2, s[i + 1])?;
            let d2 = to_d(&x2, s[i + 1], &den2);
            let w = 2.0 * s[0];
            let w2 = s[i + 1] / w;
            let w1 = 1.0 - w2;
            let dp: Vec<f32> = d.iter().zip(&d2).map(|(a, b)| a * w1 + b * w2).collect();
            x = axpy(&x, &dp, dt);
        } else {
            let x2 = axpy(&x, &d, dt);
            let den2 = ctx.model(&x2, s[i + 1])?;
            let d2 = to_d(&x2, s[i + 1], &den2);
            let dt2 = s[i + 2] - s[i + 1];
            let x3 = axpy(&x2, &d2, dt2);
            let den3 = ctx.model(&x3, s[i + 2])?;
            let d3 = to_d(&x3, s[i + 2], &den3);
            let w = 3.0 * s[0];
            let w2 = s[i + 1] / w;
            let w3 = s[i + 2] / w;
            let w1 = 1.0 - w2 - w3;
            let dp: Vec<f32> = d
                .iter()
                .zip(&d2)
                .zip(&d3)
                .map(|((a, b), c)| (w1 * a + w2 * b) + w3 * c)
                .collect();
            x = axpy(&x, &dp, dt);
        }
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn dpm_2(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let d = to_d(&x, s[i], &den);
        if s[i + 1] == 0.0 {
            x = axpy(&x, &d, s[i + 1] - s[i]);
        } else {
            let mid = lerp_half(s[i].torch_ln(), s[i + 1].torch_ln()).torch_exp();
            let x2 = axpy(&x, &d, mid - s[i]);
            let den2 = ctx.model(&x2, mid)?;
            let d2 = to_d(&x2, mid, &den2);
            x = axpy(&x, &d2, s[i + 1] - s[i]);
        }
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn dpm_2_ancestral(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (down, up) = ancestral_step(s[i], s[i + 1]);
        let d = to_d(&x, s[i], &den);
        if down == 0.0 {
            x = axpy(&x, &d, down - s[i]);
        } else {
            let mid = lerp_half(s[i].torch_ln(), down.torch_ln()).torch_exp();
            let x2 = axpy(&x, &d, mid - s[i]);
            let den2 = ctx.model(&x2, mid)?;
            let d2 = to_d(&x2, mid, &den2);
            x = axpy(&x, &d2, down - s[i]);
            let n = ctx.noise(s[i], s[i + 1])?;
            x = add_noise(&x, &n, up);
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpm_2_ancestral_RF` (CONST models).
pub(super) fn dpm_2_ancestral_rf(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (down, k, c) = rf_step(s[i], s[i + 1], 1.0);
        let d = to_d(&x, s[i], &den);
        if down == 0.0 {
            x = axpy(&x, &d, down - s[i]);
        } else {
            let mid = lerp_half(s[i].torch_ln(), down.torch_ln()).torch_exp();
            let x2 = axpy(&x, &d, mid - s[i]);
            let den2 = ctx.model(&x2, mid)?;
            let d2 = to_d(&x2, mid, &den2);
            x = axpy(&x, &d2, down - s[i]);
            let n = ctx.noise(s[i], s[i + 1])?;
            x = renoise(k, &x, &n, 1.0, c);
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpmpp_2s_ancestral_RF` (CONST models).
pub(super) fn dpmpp_2s_ancestral_rf(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    eta: f64,
    s_noise: f32,
) -> R {
    let sigma_fn = |l: f32| 1.0 / (l.torch_exp() + 1.0);
    let lambda_fn = |sig: f32| ((1.0 - sig) / sig).torch_ln();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (down, k, c) = rf_step(s[i], s[i + 1], eta as f32);
        if s[i + 1] == 0.0 {
            let d = to_d(&x, s[i], &den);
            x = axpy(&x, &d, down - s[i]);
        } else {
            // `sigma_s / sigmas[i]`: with the Python float 0.9999 this is torch's
            // reciprocal-then-multiply.
            let (sigma_s, ratio_s) = if s[i] == 1.0 {
                (0.9999f32, (1.0 / s[i]) * 0.9999f32)
            } else {
                let (ti, td) = (lambda_fn(s[i]), lambda_fn(down));
                let h = td - ti;
                let ss = sigma_fn(ti + 0.5 * h);
                (ss, ss / s[i])
            };
            let u = blend(ratio_s, &x, &den);
            let den2 = ctx.model(&u, sigma_s)?;
            x = blend(down / s[i], &x, &den2);
        }
        if s[i + 1] > 0.0 && eta > 0.0 {
            let n = ctx.noise(s[i], s[i + 1])?;
            x = renoise(k, &x, &n, s_noise, c);
        }
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn dpmpp_2s_ancestral(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    eta: f64,
    s_noise: f32,
) -> R {
    let t_fn = |sig: f32| -sig.torch_ln();
    let sigma_fn = |t: f32| (-t).torch_exp();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (down, up) = ancestral_step_eta(s[i], s[i + 1], eta as f32);
        if down == 0.0 {
            let d = to_d(&x, s[i], &den);
            x = axpy(&x, &d, down - s[i]);
        } else {
            let (t, tn) = (t_fn(s[i]), t_fn(down));
            let h = tn - t;
            let sm = t + 0.5 * h;
            let x2 = lin2(
                sigma_fn(sm) / sigma_fn(t),
                &x,
                (-h * 0.5).torch_exp_m1(),
                &den,
            );
            let den2 = ctx.model(&x2, sigma_fn(sm))?;
            x = lin2(sigma_fn(tn) / sigma_fn(t), &x, (-h).torch_exp_m1(), &den2);
        }
        if s[i + 1] > 0.0 {
            let n = ctx.noise(s[i], s[i + 1])?;
            x = x
                .iter()
                .zip(&n)
                .map(|(a, e)| a + (e * s_noise) * up)
                .collect();
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpmpp_sde`; `s` has had `offset_first_sigma_for_snr` applied.
/// The stochastic-sampler options of SamplerDPMPP_* nodes (η, s_noise; dpmpp_sde's r).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sde {
    pub(super) eta: f64,
    pub(super) s_noise: f32,
    pub(super) r: f64,
}

impl Sde {
    fn noisy(self) -> bool {
        self.eta > 0.0 && self.s_noise > 0.0
    }
}

pub(super) fn dpmpp_sde(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32], snr: HalfLogSnr, o: Sde) -> R {
    let (eta, sn) = (o.eta as f32, o.s_noise);
    let rf = o.r as f32;
    let fac = 1.0 / (2.0 * o.r);
    let (c_den, c_den2) = ((1.0 - fac) as f32, fac as f32);
    let lambda_fn = |sig: f32| snr.lambda(sig);
    let sigma_fn = |l: f32| snr.sigma(l);
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            let (ls, lt) = (lambda_fn(s[i]), lambda_fn(s[i + 1]));
            let h = lt - ls;
            let ls1 = ls + rf * h;
            let s1 = sigma_fn(ls1);
            let alpha_s = s[i] * ls.torch_exp();
            let alpha_s1 = s1 * ls1.torch_exp();
            let alpha_t = s[i + 1] * lt.torch_exp();

            let (sd, su) = ancestral_step_eta((-ls).torch_exp(), (-ls1).torch_exp(), eta);
            let h_ = -sd.torch_ln() - ls;
            let x2 = lin2(
                (alpha_s1 / alpha_s) * (-h_).torch_exp(),
                &x,
                alpha_s1 * (-h_).torch_exp_m1(),
                &den,
            );
            let x2: Vec<f32> = if o.noisy() {
                let n = ctx.noise(s[i], s1)?;
                x2.iter()
                    .zip(&n)
                    .map(|(a, e)| a + ((alpha_s1 * e) * sn) * su)
                    .collect()
            } else {
                x2
            };
            let den2 = ctx.model(&x2, s1)?;

            let (sd, su) = ancestral_step_eta((-ls).torch_exp(), (-lt).torch_exp(), eta);
            let h_ = -sd.torch_ln() - ls;
            let dd: Vec<f32> = den
                .iter()
                .zip(&den2)
                .map(|(a, b)| c_den * a + c_den2 * b)
                .collect();
            let xn = lin2(
                (alpha_t / alpha_s) * (-h_).torch_exp(),
                &x,
                alpha_t * (-h_).torch_exp_m1(),
                &dd,
            );
            x = if o.noisy() {
                let n = ctx.noise(s[i], s[i + 1])?;
                xn.iter()
                    .zip(&n)
                    .map(|(a, e)| a + ((alpha_t * e) * sn) * su)
                    .collect()
            } else {
                xn
            };
        }
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn dpmpp_2m(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    let t_fn = |sig: f32| -sig.torch_ln();
    let sigma_fn = |t: f32| (-t).torch_exp();
    let mut old: Option<Vec<f32>> = None;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (t, tn) = (t_fn(s[i]), t_fn(s[i + 1]));
        let h = tn - t;
        let ratio = sigma_fn(tn) / sigma_fn(t);
        match &old {
            Some(od) if s[i + 1] != 0.0 => {
                let h_last = t - t_fn(s[i - 1]);
                let r = h_last / h;
                let c2 = 1.0 / (2.0 * r);
                let c1 = 1.0 + c2;
                let dd: Vec<f32> = den.iter().zip(od).map(|(a, b)| c1 * a - c2 * b).collect();
                x = lin2(ratio, &x, (-h).torch_exp_m1(), &dd);
            }
            _ => x = lin2(ratio, &x, (-h).torch_exp_m1(), &den),
        }
        old = Some(den);
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpmpp_2m_sde` (midpoint, or heun); `s` has had `offset_first_sigma_for_snr`
/// applied.
pub(super) fn dpmpp_2m_sde(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    heun: bool,
    snr: HalfLogSnr,
    o: Sde,
) -> R {
    let eta = o.eta as f32;
    let eta1 = (o.eta + 1.0) as f32;
    let lambda_fn = |sig: f32| snr.lambda(sig);
    let mut old: Option<Vec<f32>> = None;
    let mut h = f32::NAN;
    let mut h_last = f32::NAN;
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den.clone();
        } else {
            let (ls, lt) = (lambda_fn(s[i]), lambda_fn(s[i + 1]));
            h = lt - ls;
            let h_eta = h * eta1;
            let alpha_t = s[i + 1] * lt.torch_exp();
            let nem = -(-h_eta).torch_exp_m1();
            let a = s[i + 1] / s[i] * (-h * eta).torch_exp();
            let b = alpha_t * nem;
            x = x.iter().zip(&den).map(|(p, q)| a * p + b * q).collect();
            if let Some(od) = &old {
                let r = h_last / h;
                let c = if heun {
                    alpha_t * (nem / (-h_eta) + 1.0) * (1.0 / r)
                } else {
                    0.5 * alpha_t * nem * (1.0 / r)
                };
                x = x
                    .iter()
                    .zip(den.iter().zip(od))
                    .map(|(p, (d, o))| p + c * (d - o))
                    .collect();
            }
            if o.noisy() {
                let n = ctx.noise(s[i], s[i + 1])?;
                let k = (-(-2.0 * h * eta).torch_exp_m1()).torch_sqrt();
                let (sn, s_noise) = (s[i + 1], o.s_noise);
                x = x
                    .iter()
                    .zip(&n)
                    .map(|(p, e)| p + ((e * sn) * k) * s_noise)
                    .collect();
            }
        }
        old = Some(den);
        h_last = h;
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_dpmpp_3m_sde`; `s` has had `offset_first_sigma_for_snr` applied.
pub(super) fn dpmpp_3m_sde(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    snr: HalfLogSnr,
    o: Sde,
) -> R {
    let eta = o.eta as f32;
    let eta1 = (o.eta + 1.0) as f32;
    let lambda_fn = |sig: f32| snr.lambda(sig);
    let (mut d1, mut d2): (Option<Vec<f32>>, Option<Vec<f32>>) = (None, None);
    let (mut h, mut h1, mut h2): (Option<f32>, Option<f32>, Option<f32>) = (None, None, None);
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        if s[i + 1] == 0.0 {
            x = den.clone();
        } else {
            let (ls, lt) = (lambda_fn(s[i]), lambda_fn(s[i + 1]));
            let hh = lt - ls;
            h = Some(hh);
            let h_eta = hh * eta1;
            let alpha_t = s[i + 1] * lt.torch_exp();
            let a = s[i + 1] / s[i] * (-hh * eta).torch_exp();
            let b = alpha_t * -(-h_eta).torch_exp_m1();
            x = x.iter().zip(&den).map(|(p, q)| a * p + b * q).collect();
            if let (Some(hv2), Some(hv1), Some(dn1), Some(dn2)) = (h2, h1, &d1, &d2) {
                let r0 = hv1 / hh;
                let r1 = hv2 / hh;
                let phi2 = (-h_eta).torch_exp_m1() / h_eta + 1.0;
                let phi3 = phi2 / h_eta - 0.5;
                let (c2, c3) = (alpha_t * phi2, alpha_t * phi3);
                let rs = r0 + r1;
                x = x
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let d10 = (den[k] - dn1[k]) / r0;
                        let d11 = (dn1[k] - dn2[k]) / r1;
                        let dd1 = d10 + (d10 - d11) * r0 / rs;
                        let dd2 = (d10 - d11) / rs;
                        (p + c2 * dd1) - c3 * dd2
                    })
                    .collect();
            } else if let (Some(hv1), Some(dn1)) = (h1, &d1) {
                let r = hv1 / hh;
                let phi2 = (-h_eta).torch_exp_m1() / h_eta + 1.0;
                let c2 = alpha_t * phi2;
                x = x
                    .iter()
                    .zip(den.iter().zip(dn1))
                    .map(|(p, (d, o))| p + c2 * ((d - o) / r))
                    .collect();
            }
            if o.noisy() {
                let n = ctx.noise(s[i], s[i + 1])?;
                let k = (-(-2.0 * hh * eta).torch_exp_m1()).torch_sqrt();
                let (sn, s_noise) = (s[i + 1], o.s_noise);
                x = x
                    .iter()
                    .zip(&n)
                    .map(|(p, e)| p + ((e * sn) * k) * s_noise)
                    .collect();
            }
        }
        d2 = d1.take();
        d1 = Some(den);
        h2 = h1;
        h1 = h;
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn ddpm(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        let (sg, sp) = (s[i], s[i + 1]);
        let xin = div_s(&x, (1.0 + sg * sg).torch_sqrt());
        let eps: Vec<f32> = x.iter().zip(&den).map(|(a, b)| (a - b) / sg).collect();
        let ac = 1.0 / (sg * sg + 1.0);
        let acp = 1.0 / (sp * sp + 1.0);
        let alpha = ac / acp;
        let k = (1.0 / alpha).torch_sqrt();
        let q = (1.0 - ac).torch_sqrt();
        let mut mu: Vec<f32> = xin
            .iter()
            .zip(&eps)
            .map(|(a, e)| k * (a - ((1.0 - alpha) * e) / q))
            .collect();
        if sp > 0.0 {
            let c = ((1.0 - alpha) * (1.0 - acp) / (1.0 - ac)).torch_sqrt();
            let n = ctx.noise(sg, sp)?;
            mu = mu.iter().zip(&n).map(|(m, e)| m + c * e).collect();
        }
        x = mu;
        if sp != 0.0 {
            x = scale(&x, (1.0 + sp * sp).torch_sqrt());
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_lcm`: re-noises with the model's own `noise_scaling(σ_{i+1}, ε, x)`.
pub(super) fn lcm(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        x = den;
        if s[i + 1] > 0.0 {
            let n = ctx.noise(s[i], s[i + 1])?;
            let sn = s[i + 1];
            x = match ctx.model_sampling() {
                Some(ms) => n
                    .iter()
                    .zip(&x)
                    .map(|(e, a)| ms.noise_scaling_f32(sn, *e, *a))
                    .collect(),
                None => n.iter().zip(&x).map(|(e, a)| e * sn + a).collect(),
            };
        }
        ctx.end(i);
    }
    Ok(x)
}

/// `sample_lcm_upscale` (SamplerLCMUpscale, `comfy_extras/nodes_advanced_samplers.py`): LCM
/// whose latent is resized after each of the first steps to `orig · linspace(1, total,
/// steps + 1)[i + 1]` (Python-rounded sides) and re-noised with `σ_{i+1}·randn_like(x)` drawn
/// from torch's global generator. That generator is where `prepare_noise(seed)` left it (the
/// initial noise for the unbatched latent): comfyrs draws from `manual_seed(seed)` past that
/// noise. (With a latent `batch_index` or DisableNoise ComfyUI's global generator is in
/// another state; comfyrs still starts after the unbatched noise of `seed`.)
pub(super) fn lcm_upscale(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    up: &super::LcmUpscale,
    seed: u64,
) -> R {
    use crate::image_ops::{common_upscale, py_round, Crop, Planes, TorchLayout};
    let n_sig = s.len();
    let steps = match up.upscale_steps {
        None => (n_sig / 2 + 1).max(2),
        Some(k) => (k + 1).min(n_sig + 1),
    };
    // np.linspace(1.0, total, steps)[1:]
    let upscales: Vec<f64> = {
        let (start, stop) = (1.0f64, up.total_upscale);
        let div = steps.saturating_sub(1);
        let mut v: Vec<f64> = (0..steps)
            .map(|i| {
                if div == 0 {
                    start
                } else {
                    i as f64 * ((stop - start) / div as f64) + start
                }
            })
            .collect();
        if steps > 1 {
            v[steps - 1] = stop;
        }
        v.into_iter().skip(1).collect()
    };
    let orig = ctx.shape.clone();
    if orig.len() != 4 {
        return Err(SamplingError::Invalid(format!(
            "SamplerLCMUpscale resizes [B, C, H, W] latents, got {orig:?}"
        )));
    }
    let mut gen = crate::torch_rng::TorchGenerator::new(seed);
    let _ = gen.randn(&orig);
    for i in 0..n_sig - 1 {
        ctx.begin(i)?;
        x = ctx.model(&x, s[i])?;
        if let Some(&f) = upscales.get(i) {
            let w = py_round(orig[3] as f64 * f);
            let h = py_round(orig[2] as f64 * f);
            let cur = &ctx.shape;
            let planes = Planes::new(cur[0], cur[1], cur[2], cur[3], std::mem::take(&mut x));
            let (w, h) = (w.max(0) as usize, h.max(0) as usize);
            let out = common_upscale(
                &planes,
                w,
                h,
                up.method,
                Crop::Disabled,
                TorchLayout::ChannelsFirst,
            )
            .map_err(|e| SamplingError::Invalid(format!("SamplerLCMUpscale: the latent {e}")))?;
            ctx.shape = vec![out.n, out.c, out.h, out.w];
            x = out.data;
        }
        if s[i + 1] > 0.0 {
            let sn = s[i + 1];
            let noise = gen.randn(&ctx.shape);
            for (v, e) in x.iter_mut().zip(noise) {
                *v += sn * e;
            }
        }
        ctx.end(i);
    }
    Ok(x)
}
