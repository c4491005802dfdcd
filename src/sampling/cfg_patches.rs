//! Model patches that change how the CFG result is formed (ComfyUI's
//! `model_options["sampler_cfg_function"]` and `["sampler_post_cfg_function"]`, set by
//! `set_model_sampler_cfg_function` / `set_model_sampler_post_cfg_function`):
//! RescaleCFG replaces the `uncond + (cond − uncond)·cfg` combine, CFGNorm and CFGZeroStar
//! correct the result afterwards. A MODEL carries its patches ([`CfgPatches`]); the CFG denoiser calls
//! [`CfgPatches::combine`] at every model evaluation, as `comfy.samplers.cfg_function` does.
//!
//! Float32 element-wise as torch evaluates the patch functions; the per-sample standard
//! deviations and channel norms are reductions whose order differs from torch's vectorised
//! ones in the last bits.

use crate::sampling::torch_math::TorchScalar;
use candle_core::{DType, Result, Tensor};

/// A `sampler_cfg_function` (only the last one set is used, as in ComfyUI).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CfgFunction {
    /// RescaleCFG (`comfy_extras/nodes_model_advanced.py`): CFG on the v-prediction
    /// outputs, rescaled to the conditional prediction's per-sample std, mixed by
    /// `multiplier`.
    RescaleCfg { multiplier: f64 },
}

/// A `sampler_post_cfg_function` (run in the order they were added).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PostCfg {
    /// CFGNorm (`comfy_extras/nodes_cfg.py`): scales the result per pixel so its channel
    /// norm does not exceed the conditional prediction's, times `strength`.
    CfgNorm { strength: f64 },
    /// CFGZeroStar (`comfy_extras/nodes_cfg.py`, CFG-Zero*): corrects the result with the
    /// per-sample optimal scale of the uncond (`optimized_scale`).
    CfgZeroStar,
}

/// The CFG patches of a MODEL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CfgPatches {
    pub cfg_function: Option<CfgFunction>,
    pub post_cfg: Vec<PostCfg>,
}

/// Flat float32 values of a tensor and its dims.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// torch.std (unbiased) over one sample's values, in f64 then rounded to f32.
fn std_unbiased(v: &[f32]) -> f32 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let ss: f64 = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum();
    (ss / (n - 1.0)).sqrt() as f32
}

impl CfgPatches {
    pub fn is_empty(&self) -> bool {
        self.cfg_function.is_none() && self.post_cfg.is_empty()
    }

    /// `cfg_function(model, cond_pred, uncond_pred, cond_scale, x, σ)` with these patches:
    /// the CFG combine (or the patched one), then every post-CFG function. `uncond` is
    /// zeros when the uncond pass was skipped (cfg 1 without a CFG++ sampler).
    pub fn combine(
        &self,
        cond: &Tensor,
        uncond: &Tensor,
        cfg: f64,
        x: &Tensor,
        sigma: f64,
    ) -> Result<Tensor> {
        let dims = cond.dims().to_vec();
        let mut out = match self.cfg_function {
            None => (uncond + ((cond - uncond)? * cfg)?)?,
            Some(CfgFunction::RescaleCfg { multiplier }) => {
                let v = rescale_cfg(
                    &flat(cond)?,
                    &flat(uncond)?,
                    cfg,
                    &flat(x)?,
                    sigma as f32,
                    multiplier,
                    dims[0],
                );
                Tensor::from_vec(v, dims.as_slice(), cond.device())?
            }
        };
        for p in &self.post_cfg {
            out = match *p {
                PostCfg::CfgNorm { strength } => {
                    let v = cfg_norm(&flat(cond)?, &flat(&out)?, &dims, strength);
                    Tensor::from_vec(v, dims.as_slice(), cond.device())?
                }
                PostCfg::CfgZeroStar => {
                    let v = cfg_zero_star(
                        &flat(cond)?,
                        &flat(uncond)?,
                        &flat(&out)?,
                        &flat(x)?,
                        cfg,
                        dims[0],
                    );
                    Tensor::from_vec(v, dims.as_slice(), cond.device())?
                }
            };
        }
        Ok(out)
    }
}

/// `x − rescale_cfg(args)` of RescaleCFG on flat `[B, …]` buffers (what `cfg_function`
/// returns with that `sampler_cfg_function`).
pub fn rescale_cfg(
    cond_pred: &[f32],
    uncond_pred: &[f32],
    cond_scale: f64,
    x_orig: &[f32],
    sigma: f32,
    multiplier: f64,
    batch: usize,
) -> Vec<f32> {
    let s2 = sigma * sigma + 1.0;
    let sq = (sigma * sigma + 1.0).torch_sqrt();
    let cs = cond_scale as f32;
    let (m, q) = (multiplier as f32, (1.0 - multiplier) as f32);
    let n = cond_pred.len();
    // args["cond"] = x − cond_pred, args["uncond"] = x − uncond_pred
    let mut xs = vec![0f32; n];
    let mut cv = vec![0f32; n];
    let mut xcfg = vec![0f32; n];
    for k in 0..n {
        let xo = x_orig[k];
        let x = xo / s2;
        let c_arg = xo - cond_pred[k];
        let u_arg = xo - uncond_pred[k];
        let c = ((x - (xo - c_arg)) * sq) / sigma;
        let u = ((x - (xo - u_arg)) * sq) / sigma;
        xs[k] = x;
        cv[k] = c;
        xcfg[k] = u + cs * (c - u);
    }
    let per = n / batch.max(1);
    let mut out = vec![0f32; n];
    for b in 0..batch {
        let r = b * per..(b + 1) * per;
        let ratio = std_unbiased(&cv[r.clone()]) / std_unbiased(&xcfg[r.clone()]);
        for k in r {
            let rescaled = xcfg[k] * ratio;
            let fin = m * rescaled + q * xcfg[k];
            let ret = x_orig[k] - (xs[k] - fin * sigma / sq);
            out[k] = x_orig[k] - ret;
        }
    }
    out
}

/// CFGNorm's post-CFG function on flat `[B, C, …]` buffers: `pred · clamp(‖cond‖ /
/// (‖pred‖ + 1e-8), 0, 1) · strength` with norms over the channels.
pub fn cfg_norm(cond: &[f32], pred: &[f32], dims: &[usize], strength: f64) -> Vec<f32> {
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let st = strength as f32;
    let mut out = vec![0f32; pred.len()];
    for n in 0..b {
        for p in 0..rest {
            let idx = |ch: usize| (n * c + ch) * rest + p;
            let (mut nc, mut np) = (0f32, 0f32);
            for ch in 0..c {
                nc += cond[idx(ch)] * cond[idx(ch)];
                np += pred[idx(ch)] * pred[idx(ch)];
            }
            let scale = (nc.sqrt() / (np.sqrt() + 1e-8)).clamp(0.0, 1.0);
            for ch in 0..c {
                out[idx(ch)] = pred[idx(ch)] * scale * st;
            }
        }
    }
    out
}

/// CFGZeroStar's post-CFG function on flat `[B, …]` buffers:
/// `out + u·(α − 1) + cfg·u·(1 − α)` with α = ⟨x − c, x − u⟩ / (‖x − u‖² + 1e-8) per sample.
pub fn cfg_zero_star(
    cond: &[f32],
    uncond: &[f32],
    out: &[f32],
    x: &[f32],
    cfg: f64,
    batch: usize,
) -> Vec<f32> {
    let per = out.len() / batch.max(1);
    let gs = cfg as f32;
    let mut res = vec![0f32; out.len()];
    for b in 0..batch {
        let r = b * per..(b + 1) * per;
        let (mut dot, mut sq) = (0f64, 0f64);
        for k in r.clone() {
            let p = x[k] - cond[k];
            let n = x[k] - uncond[k];
            dot += (p * n) as f64;
            sq += (n * n) as f64;
        }
        let alpha = dot as f32 / (sq as f32 + 1e-8);
        for k in r {
            let u = uncond[k];
            res[k] = (out[k] + u * (alpha - 1.0)) + (gs * u) * (1.0 - alpha);
        }
    }
    res
}
