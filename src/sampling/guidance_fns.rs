//! The arithmetic of more guidance patches, on flat `[B, C, …]` float32 buffers, for
//! [`super::cfg_patches`] to call: Mahiro's post-CFG function (`comfy_extras/nodes_mahiro.py`),
//! RenormCFG's CFG function (`comfy_extras/nodes_lumina2.py`) and LatentOperationSharpen
//! (`comfy_extras/nodes_latent.py`). Element-wise steps follow
//! torch's float32 operations; the reductions (norms, cosine similarity, mean) sum in float64,
//! so results agree with ComfyUI to float32 rounding rather than bit for bit.

/// Mahiro: `leap = cond·cfg`, `merge = (leap + denoised)/2`, the cosine similarity over the
/// channels of the signed square roots of `uncond·cfg` and `merge`, averaged over batch and
/// pixels into `sim`; returns `(s·denoised + (4 − s)·leap)/4` with `s = 2(sim + 1)`.
pub fn mahiro(
    cond: &[f32],
    uncond: &[f32],
    denoised: &[f32],
    cfg: f64,
    dims: &[usize],
) -> Vec<f32> {
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let scale = cfg as f32;
    let signed_sqrt = |v: f32| {
        v.abs().sqrt()
            * if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            }
    };
    let leap: Vec<f32> = cond.iter().map(|v| v * scale).collect();
    let normu: Vec<f32> = uncond.iter().map(|v| signed_sqrt(v * scale)).collect();
    let normm: Vec<f32> = leap
        .iter()
        .zip(denoised)
        .map(|(l, d)| signed_sqrt((l + d) / 2.0))
        .collect();
    // F.cosine_similarity(dim=1, eps=1e-8): Σ (x/max(‖x‖, eps))·(y/max(‖y‖, eps)).
    let mut total = 0f64;
    for n in 0..b {
        for p in 0..rest {
            let idx = |ch: usize| (n * c + ch) * rest + p;
            let (mut xx, mut yy, mut xy) = (0f64, 0f64, 0f64);
            for ch in 0..c {
                let (x, y) = (normu[idx(ch)] as f64, normm[idx(ch)] as f64);
                xx += x * x;
                yy += y * y;
                xy += x * y;
            }
            total += xy / (xx.sqrt().max(1e-8) * yy.sqrt().max(1e-8));
        }
    }
    let sim = (total / (b * rest).max(1) as f64) as f32;
    let simsc = 2.0 * (sim + 1.0);
    denoised
        .iter()
        .zip(&leap)
        .map(|(d, l)| (simsc * d + (4.0 - simsc) * l) / 4.0)
        .collect()
}

/// RenormCFG's combine (what it makes `cfg_function` return): for `sigma < cfg_trunc`,
/// `uncond + cfg·(cond − uncond)` over the first `in_channels` channels, scaled down per
/// sample to at most `renorm_cfg` times the conditional prediction's norm when `renorm_cfg >
/// 0`; otherwise the conditional prediction. Channels past `in_channels` are the conditional
/// prediction's. (ComfyUI compares the norms as one boolean, which only works for a batch of
/// one; here each sample is compared on its own.) As through `cfg_function`, the result is
/// `x − (x − combined)`.
#[allow(clippy::too_many_arguments)]
pub fn renorm_cfg(
    cond: &[f32],
    uncond: &[f32],
    x: &[f32],
    cfg: f64,
    sigma: f64,
    cfg_trunc: f64,
    renorm: f64,
    in_channels: usize,
    dims: &[usize],
) -> Vec<f32> {
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let mut out = cond.to_vec();
    let through_x = |out: Vec<f32>| out.iter().zip(x).map(|(r, x)| x - (x - r)).collect();
    // `timestep[0] < cfg_trunc`: a float32 against a Python float.
    if (sigma as f32 as f64) >= cfg_trunc {
        return through_x(out);
    }
    let eps_ch = in_channels.min(c);
    let scale = cfg as f32;
    for n in 0..b {
        let r = n * c * rest..(n * c + eps_ch) * rest;
        for k in r.clone() {
            out[k] = uncond[k] + scale * (cond[k] - uncond[k]);
        }
        if renorm > 0.0 {
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() as f32;
            let max_new = norm(&cond[r.clone()]) * renorm as f32;
            let new = norm(&out[r.clone()]);
            if new >= max_new {
                let f = max_new / new;
                for v in &mut out[r] {
                    *v *= f;
                }
            }
        }
    }
    through_x(out)
}

/// LatentOperationSharpen on `[B, C, H, W]`: each pixel's channel vector divided by its
/// length (+1e-6), sharpened per channel with ImageSharpen's kernel over the reflected
/// neighbourhood (no clamp), and scaled back by the length.
pub fn latent_sharpen(
    latent: &candle_core::Tensor,
    radius: usize,
    sigma: f64,
    alpha: f64,
) -> candle_core::Result<candle_core::Tensor> {
    use crate::image_ops::{convolve_reflect, sharpen_kernel, Planes};
    let p = Planes::from_nchw(&latent.to_dtype(candle_core::DType::F32)?)?;
    let plane = p.h * p.w;
    let mut lum = vec![0f32; p.n * plane];
    for b in 0..p.n {
        for k in 0..plane {
            let sq: f64 = (0..p.c)
                .map(|c| (p.data[(b * p.c + c) * plane + k] as f64).powi(2))
                .sum();
            lum[b * plane + k] = sq.sqrt() as f32 + 1e-6;
        }
    }
    let mut normalized = p.clone();
    for (i, v) in normalized.data.iter_mut().enumerate() {
        let (b, k) = (i / (p.c * plane), i % plane);
        *v /= lum[b * plane + k];
    }
    let kernel = sharpen_kernel(radius, sigma, alpha);
    let mut out = convolve_reflect(&normalized, &kernel, radius)
        .map_err(|e| candle_core::Error::Msg(format!("LatentOperationSharpen: the latent {e}")))?;
    for (i, v) in out.data.iter_mut().enumerate() {
        let (b, k) = (i / (p.c * plane), i % plane);
        *v *= lum[b * plane + k];
    }
    out.to_nchw()
}

/// `perp_neg` of `comfy_extras/nodes_perpneg.py` on flat buffers: with `pos = p − e`,
/// `neg = n − e` (e the empty conditioning's prediction), `e + cfg·(pos − neg_scale·(neg −
/// (⟨neg, pos⟩/‖pos‖²)·pos))`; the dot product and norm are over the whole tensor (every
/// batch entry together), as ComfyUI computes them.
pub fn perp_neg(pos: &[f32], neg: &[f32], empty: &[f32], neg_scale: f64, cfg: f64) -> Vec<f32> {
    let p: Vec<f32> = pos.iter().zip(empty).map(|(a, e)| a - e).collect();
    let n: Vec<f32> = neg.iter().zip(empty).map(|(a, e)| a - e).collect();
    let dot = p.iter().zip(&n).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32;
    // torch.norm(pos) ** 2: the norm rounds to float32, then squares in float32.
    let norm = (p.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt()) as f32;
    let k = dot / (norm * norm);
    let (ns, cs) = (neg_scale as f32, cfg as f32);
    p.iter()
        .zip(&n)
        .zip(empty)
        .map(|((p, n), e)| {
            let perp = n - k * p;
            e + cs * (p - perp * ns)
        })
        .collect()
}
