//! `sampler_pre_cfg_function`s: model patches that rewrite the conditional and
//! unconditional predictions before the CFG combine (ComfyUI's `sampling_function` runs them
//! on `conds_out` right after `calc_cond_batch`):
//!
//! * LatentApplyOperationCFG (`comfy_extras/nodes_latent.py`): `op(cond − uncond) + uncond`;
//! * APG, Adaptive Projected Guidance (`comfy_extras/nodes_apg.py`): the guidance
//!   `cond − uncond`, averaged over the steps with `momentum`, its norm capped at
//!   `norm_threshold`, its component parallel to the conditional prediction scaled by `eta`;
//!   the new cond is chosen so that the CFG combine gives `uncond + cfg·guidance' + (cond −
//!   uncond)`;
//! * FreSca (`comfy_extras/nodes_fresca.py`): the guidance's spatial spectrum scaled by
//!   `scale_low` inside a centre block of half-width `freq_cutoff` and `scale_high` outside;
//! * TCFG, tangential damping (`comfy_extras/nodes_tcfg.py`): the unconditional score
//!   `x − uncond` projected on the first right-singular vector of the [uncond score; cond
//!   score] matrix.
//!
//! All on flat float32 buffers of `[B, …]` tensors. Element-wise steps are float32 as torch
//! evaluates them; norms, dot products and the spectral/singular-vector parts are computed in
//! float64 and rounded once, so results match ComfyUI to float32 rounding, not bit for bit.

use std::sync::{Arc, Mutex};

use super::cfg_patches::LatentOperation;
use candle_core::{DType, Result, Tensor};

/// APG's state across model evaluations: the running average of the guidance and the
/// previous σ (ComfyUI keeps them in the patch's closure, so they persist across sampling
/// runs of the same patched model; the average restarts when σ goes up).
#[derive(Debug, Default)]
pub struct ApgMemory {
    running_avg: Option<Vec<f32>>,
    prev_sigma: Option<f32>,
}

/// A shared [`ApgMemory`]: MODEL clones made from one APG node output share it, as the
/// closure is shared in ComfyUI. Equal when it is the same memory.
#[derive(Debug, Clone, Default)]
pub struct ApgState(pub Arc<Mutex<ApgMemory>>);

impl PartialEq for ApgState {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One `sampler_pre_cfg_function` (run in the order added).
#[derive(Debug, Clone, PartialEq)]
pub enum PreCfg {
    /// LatentApplyOperationCFG.
    Operation(LatentOperation),
    /// APG.
    Apg {
        eta: f64,
        norm_threshold: f64,
        momentum: f64,
        state: ApgState,
    },
    /// FreSca.
    FreSca {
        scale_low: f64,
        scale_high: f64,
        freq_cutoff: usize,
    },
    /// TCFG.
    Tcfg,
}

impl From<LatentOperation> for PreCfg {
    fn from(op: LatentOperation) -> Self {
        PreCfg::Operation(op)
    }
}

/// What a pre-CFG function sees besides the predictions (`args` of ComfyUI's call).
#[derive(Debug, Clone, Copy)]
pub struct PreCfgArgs<'a> {
    /// The model input `x`.
    pub x: &'a Tensor,
    /// σ of this evaluation.
    pub sigma: f64,
    /// `cond_scale`.
    pub cfg: f64,
    /// `None in args["conds"][:2]`: the uncond (or cond) was not evaluated (the cfg-1
    /// optimisation); `uncond` is then zeros.
    pub skipped: bool,
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

fn back(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.dims(), like.device())
}

impl PreCfg {
    /// The function on (cond, uncond): the new (cond, uncond).
    pub fn apply(
        &self,
        cond: &Tensor,
        uncond: &Tensor,
        a: &PreCfgArgs<'_>,
    ) -> Result<(Tensor, Tensor)> {
        match self {
            PreCfg::Operation(op) => {
                let c = (op.apply(&(cond - uncond)?)? + uncond)?;
                Ok((c, uncond.clone()))
            }
            PreCfg::Apg {
                eta,
                norm_threshold,
                momentum,
                state,
            } => {
                let mut mem = state
                    .0
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("APG: a run panicked".into()))?;
                let c = apg(
                    &flat(cond)?,
                    &flat(uncond)?,
                    cond.dims(),
                    a.sigma as f32,
                    a.cfg,
                    *eta,
                    *norm_threshold,
                    *momentum,
                    &mut mem,
                );
                Ok((back(c, cond)?, uncond.clone()))
            }
            PreCfg::FreSca {
                scale_low,
                scale_high,
                freq_cutoff,
            } => {
                if a.skipped {
                    return Ok((cond.clone(), uncond.clone()));
                }
                let (c, u) = (flat(cond)?, flat(uncond)?);
                let g: Vec<f32> = c.iter().zip(&u).map(|(c, u)| c - u).collect();
                let f = fresca_filter(&g, cond.dims(), *scale_low, *scale_high, *freq_cutoff)?;
                let out = f.iter().zip(&u).map(|(f, u)| f + u).collect();
                Ok((back(out, cond)?, uncond.clone()))
            }
            PreCfg::Tcfg => {
                if a.skipped {
                    return Ok((cond.clone(), uncond.clone()));
                }
                let u = tcfg_uncond(&flat(cond)?, &flat(uncond)?, &flat(a.x)?, cond.dim(0)?);
                Ok((cond.clone(), back(u, uncond)?))
            }
        }
    }
}

/// Σ over f32 values in f64, rounded to f32 (a torch reduction up to its summation order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum::<f64>() as f32
}

/// APG's pre-CFG function: returns the modified cond. The norms and the projection are over
/// the last three dimensions (`dim=[-1, -2, -3]`), per leading index.
#[allow(clippy::too_many_arguments)]
pub fn apg(
    cond: &[f32],
    uncond: &[f32],
    dims: &[usize],
    sigma: f32,
    cond_scale: f64,
    eta: f64,
    norm_threshold: f64,
    momentum: f64,
    mem: &mut ApgMemory,
) -> Vec<f32> {
    if mem.prev_sigma.is_some_and(|p| sigma > p) {
        mem.running_avg = None;
    }
    mem.prev_sigma = Some(sigma);
    let mut guidance: Vec<f32> = cond.iter().zip(uncond).map(|(c, u)| c - u).collect();
    if momentum != 0.0 {
        let m = momentum as f32;
        let avg = match mem.running_avg.take() {
            // `momentum * running_avg + guidance`
            Some(r) if r.len() == guidance.len() => {
                r.iter().zip(&guidance).map(|(r, g)| m * r + g).collect()
            }
            // The first step (or a latent of another size, where torch would raise).
            _ => guidance.clone(),
        };
        guidance = avg.clone();
        mem.running_avg = Some(avg);
    }
    let inner: usize = dims.iter().rev().take(3).product::<usize>().max(1);
    let nt = norm_threshold as f32;
    let e = eta as f32;
    let cs = cond_scale as f32;
    let mut out = vec![0f32; cond.len()];
    for start in (0..cond.len()).step_by(inner) {
        let r = start..(start + inner).min(cond.len());
        let g = &mut guidance[r.clone()];
        if norm_threshold > 0.0 {
            let norm = dot(g, g).sqrt();
            // torch.minimum(ones, norm_threshold / norm) (NaN propagates)
            let q = nt / norm;
            let scale = if q.is_nan() { q } else { q.min(1.0) };
            for v in g.iter_mut() {
                *v *= scale;
            }
        }
        // F.normalize(cond): cond / max(‖cond‖, 1e-12)
        let c = &cond[r.clone()];
        let cn = dot(c, c).sqrt().max(1e-12);
        let v1: Vec<f32> = c.iter().map(|x| x / cn).collect();
        let proj = dot(g, &v1);
        for (j, i) in r.enumerate() {
            let par = proj * v1[j];
            let orth = g[j] - par;
            let modified = orth + e * par;
            out[i] = (uncond[i] + modified) + (cond[i] - uncond[i]) / cs;
        }
    }
    out
}

/// FreSca's `Fourier_filter` on flat `[…, H, W]` data: `Re(ifft2(mask · fft2(x)))` with the
/// mask `scale_low` on the shifted spectrum's centre block `[H/2 − f, H/2 + f) × [W/2 − f',
/// W/2 + f')` (`f = min(freq_cutoff, H/2)`) and `scale_high` elsewhere. As the mask is
/// separable, this is `scale_high·x + (scale_low − scale_high)·Re(P_H x P_Wᵀ)` with `P` the
/// (complex) projection on the low frequencies of each axis, computed in float64.
pub fn fresca_filter(
    x: &[f32],
    dims: &[usize],
    scale_low: f64,
    scale_high: f64,
    freq_cutoff: usize,
) -> Result<Vec<f32>> {
    if dims.len() < 2 {
        candle_core::bail!("FreSca filters a [..., H, W] tensor, got {dims:?}");
    }
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let plane = h * w;
    if plane == 0 {
        return Ok(x.to_vec());
    }
    let ph = low_projection(h, freq_cutoff);
    let pw = low_projection(w, freq_cutoff);
    let (sl, sh) = (scale_low as f32, scale_high as f32);
    let mut out = vec![0f32; x.len()];
    let mut tmp = vec![(0f64, 0f64); plane];
    for (src, dst) in x.chunks(plane).zip(out.chunks_mut(plane)) {
        // Along W: tmp[y][b] = Σ_x P_W[b][x]·src[y][x]
        for y in 0..h {
            for b in 0..w {
                let (mut re, mut im) = (0f64, 0f64);
                for xx in 0..w {
                    let (pr, pi) = pw[b * w + xx];
                    let v = src[y * w + xx] as f64;
                    re += pr * v;
                    im += pi * v;
                }
                tmp[y * w + b] = (re, im);
            }
        }
        // Along H, real part only: Σ_y P_H[a][y]·tmp[y][b]
        for a in 0..h {
            for b in 0..w {
                let mut re = 0f64;
                for y in 0..h {
                    let (pr, pi) = ph[a * h + y];
                    let (tr, ti) = tmp[y * w + b];
                    re += pr * tr - pi * ti;
                }
                let i = a * w + b;
                // x_freq·mask with mask = scale_high + (scale_low − scale_high)·[low]:
                // torch computes the whole product in complex64; the sum here is in f64.
                let v = sh as f64 * src[i] as f64 + (sl as f64 - sh as f64) * re;
                dst[i] = v as f32;
            }
        }
    }
    Ok(out)
}

/// The projection on one axis's low frequencies as an `n × n` complex matrix:
/// `P[a][b] = (1/n)·Σ_{k ∈ L} e^{2πi·k(a − b)/n}`, `L = {−f, …, f − 1} mod n` with
/// `f = min(cutoff, n/2)` (the shifted indices `[n/2 − f, n/2 + f)`).
fn low_projection(n: usize, cutoff: usize) -> Vec<(f64, f64)> {
    let f = cutoff.min(n / 2) as i64;
    let n_i = n as i64;
    let freqs: Vec<i64> = (-f..f).map(|k| k.rem_euclid(n_i)).collect();
    let mut p = vec![(0f64, 0f64); n * n];
    for a in 0..n {
        for b in 0..n {
            let d = a as i64 - b as i64;
            let (mut re, mut im) = (0f64, 0f64);
            for &k in &freqs {
                let ang = std::f64::consts::TAU * ((k * d).rem_euclid(n_i)) as f64 / n as f64;
                re += ang.cos();
                im += ang.sin();
            }
            p[a * n + b] = (re / n as f64, im / n as f64);
        }
    }
    p
}

/// TCFG: the damped unconditional prediction `x − (u·v₁)v₁` per sample, `u = x − uncond`,
/// `v₁` the first right-singular vector of `[u; x − cond]` (the top eigenvector of the 2×2
/// Gram matrix, mapped back; its sign does not matter).
pub fn tcfg_uncond(cond: &[f32], uncond: &[f32], x: &[f32], batch: usize) -> Vec<f32> {
    let per = cond.len() / batch.max(1);
    let mut out = vec![0f32; cond.len()];
    for s in 0..batch {
        let r = s * per..(s + 1) * per;
        let c: Vec<f64> = r.clone().map(|i| (x[i] - cond[i]) as f64).collect();
        let u: Vec<f64> = r.clone().map(|i| (x[i] - uncond[i]) as f64).collect();
        let d = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let (uu, uc, cc) = (d(&u, &u), d(&u, &c), d(&c, &c));
        // Largest eigenvalue of [[uu, uc], [uc, cc]] and its eigenvector (w0, w1).
        let tr = uu + cc;
        let det_half = ((uu - cc) / 2.0).hypot(uc);
        let lambda = tr / 2.0 + det_half;
        let (w0, w1) = if uc != 0.0 {
            (uc, lambda - uu)
        } else if uu >= cc {
            (1.0, 0.0)
        } else {
            (0.0, 1.0)
        };
        let wn = w0.hypot(w1);
        let sigma1 = lambda.max(0.0).sqrt();
        let mut td = vec![0f64; per];
        if sigma1 > 0.0 && wn > 0.0 {
            let (w0, w1) = (w0 / wn, w1 / wn);
            // v₁ = (w0·u + w1·c)/σ₁ ; (u·v₁)v₁ = (w0·uu + w1·uc)/σ₁² · (w0·u + w1·c)
            let k = (w0 * uu + w1 * uc) / (sigma1 * sigma1);
            for j in 0..per {
                td[j] = k * (w0 * u[j] + w1 * c[j]);
            }
        }
        for (j, i) in r.enumerate() {
            // uncond_td in float32, then `x − uncond_td`.
            out[i] = x[i] - td[j] as f32;
        }
    }
    out
}
