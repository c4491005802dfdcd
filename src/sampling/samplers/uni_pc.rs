//! UniPC (bh1 / bh2) as ComfyUI runs it (`comfy/extra_samplers/uni_pc.py`, numerics.md §3.16):
//! multistep, data prediction, order min(3, len-2), lower-order final steps; scalar
//! sqrt / log / exp are torch's ([`TorchScalar`]).

use super::{Ctx, SamplingError};
use crate::sampling::torch_math::TorchScalar;

type R = Result<Vec<f32>, SamplingError>;

fn log_mean_coeff(s: f32) -> f32 {
    0.5 * (1.0 / (s * s + 1.0)).torch_ln()
}
fn marginal_alpha(s: f32) -> f32 {
    log_mean_coeff(s).torch_exp()
}
fn marginal_std(s: f32) -> f32 {
    (1.0 - (2.0 * log_mean_coeff(s)).torch_exp()).torch_sqrt()
}
fn marginal_lambda(s: f32) -> f32 {
    let l = log_mean_coeff(s);
    l - 0.5 * (1.0 - (2.0 * l).torch_exp()).torch_ln()
}

/// Solve `a · x = b` (small n) by LU with partial pivoting in f32 (LAPACK `sgesv` order).
pub(super) fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for j in 0..n {
        let mut p = j;
        for i in j + 1..n {
            if a[i][j].abs() > a[p][j].abs() {
                p = i;
            }
        }
        a.swap(j, p);
        b.swap(j, p);
        let r = 1.0 / a[j][j];
        for i in j + 1..n {
            a[i][j] *= r;
            let l = a[i][j];
            let (top, bottom) = a.split_at_mut(i);
            for (aik, ajk) in bottom[0][j + 1..].iter_mut().zip(&top[j][j + 1..]) {
                *aik = (-l).mul_add(*ajk, *aik);
            }
            b[i] = (-l).mul_add(b[j], b[i]);
        }
    }
    let mut x = vec![0.0f32; n];
    for i in (0..n).rev() {
        let mut v = b[i];
        for k in i + 1..n {
            v = (-a[i][k]).mul_add(x[k], v);
        }
        x[i] = v / a[i][i];
    }
    x
}

/// `Σ_k rho_k · D1s_k` (torch.tensordot → a GEMV with fused multiply-adds).
fn dot(d1s: &[Vec<f32>], rho: &[f32], k: usize) -> f32 {
    let mut acc = d1s[0][k] * rho[0];
    for (d, r) in d1s.iter().zip(rho).skip(1) {
        acc = d[k].mul_add(*r, acc);
    }
    acc
}

struct State<'c, 'd, 'o, 'a> {
    ctx: &'c mut Ctx<'d, 'o, 'a>,
    bh2: bool,
}

impl State<'_, '_, '_, '_> {
    /// Data prediction x0 at VP state `x`, time `t` (= σ).
    fn model_fn(&mut self, x: &[f32], t: f32) -> R {
        let k = (t * t + 1.0).torch_sqrt();
        let input: Vec<f32> = x.iter().map(|v| v * k).collect();
        let den = self.ctx.model(&input, t)?;
        let (a, sd) = (marginal_alpha(t), marginal_std(t));
        Ok(input
            .iter()
            .zip(&den)
            .zip(x)
            .map(|((i, d), xv)| {
                let eps = (i - d) / t;
                (xv - sd * eps) / a
            })
            .collect())
    }

    fn update(
        &mut self,
        x: &[f32],
        models: &[Vec<f32>],
        ts: &[f32],
        t: f32,
        order: usize,
        use_corrector: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), SamplingError> {
        let np = ts.len();
        let t0 = ts[np - 1];
        let l0 = marginal_lambda(t0);
        let lt = marginal_lambda(t);
        let m0 = &models[models.len() - 1];
        let (s0, st) = (marginal_std(t0), marginal_std(t));
        let alpha_t = log_mean_coeff(t).torch_exp();
        let h = lt - l0;
        let mut rks = Vec::new();
        let mut d1s: Vec<Vec<f32>> = Vec::new();
        for i in 1..order {
            let ti = ts[np - 1 - i];
            let mi = &models[models.len() - 1 - i];
            let rk = (marginal_lambda(ti) - l0) / h;
            rks.push(rk);
            d1s.push(mi.iter().zip(m0).map(|(a, b)| (a - b) / rk).collect());
        }
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.torch_exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut fact: u64 = 1;
        let b_h = if self.bh2 { hh.torch_exp_m1() } else { hh };
        let mut r_mat: Vec<Vec<f32>> = Vec::new();
        let mut b = Vec::new();
        for i in 1..=order {
            r_mat.push(
                rks.iter()
                    .map(|&r| match i - 1 {
                        0 => 1.0,
                        1 => r,
                        2 => r * r,
                        p => r.powi(p as i32),
                    })
                    .collect(),
            );
            b.push(h_phi_k * fact as f32 / b_h);
            fact *= (i + 1) as u64;
            h_phi_k = h_phi_k / hh - (1.0 / fact as f64) as f32;
        }
        let rhos_p: Option<Vec<f32>> = if d1s.is_empty() {
            None
        } else if order == 2 {
            Some(vec![0.5])
        } else {
            let sub: Vec<Vec<f32>> = r_mat[..order - 1]
                .iter()
                .map(|r| r[..order - 1].to_vec())
                .collect();
            Some(solve(sub, b[..order - 1].to_vec()))
        };
        let ratio = st / s0;
        let c_m0 = alpha_t * h_phi_1;
        let x_t_: Vec<f32> = x
            .iter()
            .zip(m0)
            .map(|(a, m)| ratio * a - c_m0 * m)
            .collect();
        let cb = alpha_t * b_h;
        let x_t: Vec<f32> = match &rhos_p {
            Some(rp) => (0..x.len())
                .map(|k| x_t_[k] - cb * dot(&d1s, rp, k))
                .collect(),
            None => x_t_.iter().map(|v| v - cb * 0.0).collect(),
        };
        if !use_corrector {
            return Ok((x_t, None));
        }
        let rhos_c = if order == 1 {
            vec![0.5]
        } else {
            solve(r_mat, b)
        };
        let model_t = self.model_fn(&x_t, t)?;
        let last = rhos_c[rhos_c.len() - 1];
        let out = (0..x.len())
            .map(|k| {
                let corr = if d1s.is_empty() {
                    0.0
                } else {
                    dot(&d1s, &rhos_c[..rhos_c.len() - 1], k)
                };
                let d1t = model_t[k] - m0[k];
                x_t_[k] - cb * (corr + last * d1t)
            })
            .collect();
        Ok((out, Some(model_t)))
    }
}

pub(super) fn uni_pc(ctx: &mut Ctx, x: Vec<f32>, sigmas: &[f32], bh2: bool) -> R {
    let mut ts = sigmas.to_vec();
    let n = ts.len();
    if ts[n - 1] == 0.0 {
        ts[n - 1] = 0.001;
    }
    let steps = n - 1;
    let order = 3.min(n.saturating_sub(2));
    let k0 = (1.0 + ts[0] * ts[0]).torch_sqrt();
    let mut x: Vec<f32> = x.iter().map(|v| v / k0).collect();
    let mut st = State { ctx, bh2 };
    let mut models: Vec<Vec<f32>> = Vec::new();
    let mut tprev: Vec<f32> = Vec::new();
    if order == 0 {
        // A single step (two sigmas): ComfyUI's multistep loop asserts steps >= order.
        return Err(SamplingError::Candle(candle_core::Error::Msg(
            "uni_pc needs at least 2 steps".into(),
        )));
    }
    for step_index in 0..steps {
        st.ctx.begin(step_index)?;
        if step_index == 0 {
            models.push(st.model_fn(&x, ts[0])?);
            tprev.push(ts[0]);
        } else if step_index < order {
            let t = ts[step_index];
            let (nx, mx) = st.update(&x, &models, &tprev, t, step_index, true)?;
            x = nx;
            let mx = match mx {
                Some(m) => m,
                None => st.model_fn(&x, t)?,
            };
            models.push(mx);
            tprev.push(t);
        } else {
            let extra = usize::from(step_index == steps - 1);
            for (step, &t) in ts
                .iter()
                .enumerate()
                .take(step_index + extra + 1)
                .skip(step_index)
            {
                let step_order = order.min(steps + 1 - step);
                let use_corrector = step != steps;
                let (nx, mx) = st.update(&x, &models, &tprev, t, step_order, use_corrector)?;
                x = nx;
                for i in 0..order - 1 {
                    tprev[i] = tprev[i + 1];
                    models[i] = models[i + 1].clone();
                }
                tprev[order - 1] = t;
                if step < steps {
                    let m = match mx {
                        Some(m) => m,
                        None => st.model_fn(&x, t)?,
                    };
                    models[order - 1] = m;
                }
            }
        }
        st.ctx.end(step_index);
    }
    let a = marginal_alpha(ts[n - 1]);
    Ok(x.iter().map(|v| v / a).collect())
}
