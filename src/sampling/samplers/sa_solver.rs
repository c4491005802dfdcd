//! SA-Solver, the stochastic Adams predictor-corrector (arXiv 2309.05019), as
//! `comfy/k_diffusion/sampling.py`'s `sample_sa_solver` and `comfy/k_diffusion/sa_solver.py`
//! compute it: b coefficients from the Lagrange basis over the half-log-SNRs of the last
//! few steps (a float32 Vandermonde solve), noise strength τ = η inside a σ interval.
//! Float32 op by op, as in [`super::k_diffusion`].

use super::k_diffusion::HalfLogSnr;
use super::uni_pc::solve;
use super::{Ctx, SamplingError};
use crate::sampling::torch_math::TorchScalar;

type R = Result<Vec<f32>, SamplingError>;

/// SamplerSASolver's parameters; KSampler's `sa_solver` / `sa_solver_pece` use the defaults
/// (τ = 1 for σ between `percent_to_sigma(0.2)` and `percent_to_sigma(0.8)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaSolverOptions {
    /// η, and the σ interval (start ≥ σ ≥ end) where τ = η; `None`: the model's
    /// `percent_to_sigma(0.2)` / `(0.8)` with η = 1.
    pub tau: Option<(f64, f64, f64)>,
    pub s_noise: f32,
    pub predictor_order: usize,
    pub corrector_order: usize,
    pub use_pece: bool,
    pub simple_order_2: bool,
}

impl Default for SaSolverOptions {
    fn default() -> Self {
        SaSolverOptions {
            tau: None,
            s_noise: 1.0,
            predictor_order: 3,
            corrector_order: 4,
            use_pece: false,
            simple_order_2: false,
        }
    }
}

/// `lgamma(p + 1)` as float32 (ln p!).
fn log_factorial(p: usize) -> f32 {
    (1..=p).map(|k| (k as f64).ln()).sum::<f64>() as f32
}

/// `compute_exponential_coeffs(s, t, order, τ)`.
fn exponential_coeffs(s: f32, t: f32, order: usize, tau: f64) -> Vec<f32> {
    let tau_mul = 1.0 + tau * tau;
    let h = t - s;
    let e = ((-tau_mul) as f32 * h).torch_exp();
    let powf = |b: f32, k: usize| (b as f64).powi(k as i32) as f32;
    let ptf: Vec<f32> = (0..order).map(|k| powf(t, k) - powf(s, k) * e).collect();
    let lf: Vec<f32> = (0..order).map(log_factorial).collect();
    let log_tau = tau_mul.ln() as f32;
    (0..order)
        .map(|i| {
            let mut acc = 0f32;
            for j in 0..=i {
                let depth = (i - j) as f32;
                let mut c = lf[i] - lf[j];
                if tau > 0.0 {
                    c -= depth * log_tau;
                }
                let sign = if (i - j) % 2 == 0 { 1.0 } else { -1.0 };
                acc += (c.torch_exp() * sign) * ptf[j];
            }
            acc
        })
        .collect()
}

/// `compute_stochastic_adams_b_coeffs`.
fn b_coeffs(
    sigma_next: f32,
    lambdas: &[f32],
    ls: f32,
    lt: f32,
    tau: f64,
    simple_order_2: bool,
    corrector: bool,
) -> Vec<f32> {
    let n = lambdas.len();
    let alpha_t = sigma_next * lt.torch_exp();
    if simple_order_2 && n == 2 {
        let tau_mul = 1.0 + tau * tau;
        let h = lt - ls;
        let em = -(-h * tau_mul as f32).torch_exp_m1();
        return if corrector {
            let b1 = alpha_t * ((0.5 * tau_mul) as f32 * h);
            vec![alpha_t * em - b1, b1]
        } else {
            let b2 = alpha_t * ((0.5 * tau_mul) as f32 * (h * h)) / (lambdas[n - 2] - ls);
            vec![b2, alpha_t * em - b2]
        };
    }
    let rhs = exponential_coeffs(ls, lt, n, tau);
    // vander(λ, n, increasing=True).T: row j holds λ_i^j (cumulative products).
    let mut vt = vec![vec![1.0f32; n]; n];
    for j in 1..n {
        for i in 0..n {
            vt[j][i] = vt[j - 1][i] * lambdas[i];
        }
    }
    solve(vt, rhs).into_iter().map(|v| alpha_t * v).collect()
}

/// `Σ_k preds_k · b_k` (torch.tensordot over the stacked predictions).
fn combine(preds: &[Vec<f32>], b: &[f32]) -> Vec<f32> {
    (0..preds[0].len())
        .map(|k| {
            let mut acc = preds[0][k] * b[0];
            for (p, c) in preds.iter().zip(b).skip(1) {
                acc = p[k].mul_add(*c, acc);
            }
            acc
        })
        .collect()
}

/// `sample_sa_solver` (`use_pece`: `sample_sa_solver_pece`); `s` has had
/// `offset_first_sigma_for_snr` applied.
pub(super) fn sa_solver(
    ctx: &mut Ctx,
    mut x: Vec<f32>,
    s: &[f32],
    snr: HalfLogSnr,
    o: &SaSolverOptions,
) -> R {
    let (eta, start, end) = match o.tau {
        Some(t) => t,
        None => {
            let ms = ctx.model_sampling().ok_or_else(|| {
                SamplingError::Invalid("sa_solver needs the model's sampling".into())
            })?;
            (1.0, ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))
        }
    };
    let tau_func = |sigma: f32| -> f64 {
        let sg = sigma as f64;
        if eta > 0.0 && start >= sg && sg >= end {
            eta
        } else {
            0.0
        }
    };
    let lambdas: Vec<f32> = s.iter().map(|&v| snr.lambda(v)).collect();
    let max_order = o.predictor_order.max(o.corrector_order);
    let n = s.len();
    let mut x_pred = x.clone();
    let mut h = 0f32;
    let mut tau_t = 0f64;
    let mut noise: Option<Vec<f32>> = None;
    let mut preds: Vec<Vec<f32>> = Vec::new();
    let lower_order_to_end = s[n - 1] == 0.0;
    for i in 0..n - 1 {
        ctx.begin(i)?;
        let mut den = ctx.model(&x_pred, s[i])?;
        preds.push(den.clone());
        if preds.len() > max_order {
            preds.remove(0);
        }
        let mut p_used = o.predictor_order.min(preds.len());
        let mut c_used = if i == 0 || (s[i + 1] == 0.0 && !o.use_pece) {
            0
        } else {
            o.corrector_order.min(preds.len())
        };
        if lower_order_to_end {
            p_used = p_used.min(n - 2 - i);
            c_used = c_used.min(n - 1 - i);
        }
        // Corrector
        if c_used == 0 {
            x = x_pred.clone();
        } else {
            let b = b_coeffs(
                s[i],
                &lambdas[i + 1 - c_used..i + 1],
                lambdas[i - 1],
                lambdas[i],
                tau_t,
                o.simple_order_2,
                true,
            );
            let res = combine(&preds[preds.len() - c_used..], &b);
            let k = s[i] / s[i - 1] * ((-(tau_t * tau_t)) as f32 * h).torch_exp();
            x = x.iter().zip(&res).map(|(a, r)| k * a + r).collect();
            if tau_t > 0.0 && o.s_noise > 0.0 {
                if let Some(nz) = &noise {
                    x = x.iter().zip(nz).map(|(a, e)| a + e).collect();
                }
            }
            if o.use_pece {
                den = ctx.model(&x, s[i])?;
                let last = preds.len() - 1;
                preds[last] = den.clone();
            }
        }
        // Predictor
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            tau_t = tau_func(s[i + 1]);
            let b = b_coeffs(
                s[i + 1],
                &lambdas[i + 1 - p_used..i + 1],
                lambdas[i],
                lambdas[i + 1],
                tau_t,
                o.simple_order_2,
                false,
            );
            let res = combine(&preds[preds.len() - p_used..], &b);
            h = lambdas[i + 1] - lambdas[i];
            let k = s[i + 1] / s[i] * ((-(tau_t * tau_t)) as f32 * h).torch_exp();
            x_pred = x.iter().zip(&res).map(|(a, r)| k * a + r).collect();
            if tau_t > 0.0 && o.s_noise > 0.0 {
                let nz = ctx.noise(s[i], s[i + 1])?;
                let c = (-((-2.0 * tau_t * tau_t) as f32 * h).torch_exp_m1()).torch_sqrt();
                let (sn, sig) = (o.s_noise, s[i + 1]);
                let nz: Vec<f32> = nz.iter().map(|e| ((e * sig) * c) * sn).collect();
                x_pred = x_pred.iter().zip(&nz).map(|(a, e)| a + e).collect();
                noise = Some(nz);
            }
        }
        ctx.end(i);
    }
    Ok(x)
}
