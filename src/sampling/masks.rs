//! Mask and batch resizing as ComfyUI does it before and during sampling
//! (`comfy/utils.py`: `reshape_mask`, `repeat_to_batch_size`, `resize_to_batch_size`,
//! `common_upscale` with bilinear + center crop; PyTorch `interpolate(mode="bilinear")`).

use candle_core::{DType, Device, Result, Tensor};

/// PyTorch `interpolate(x, size=(h, w), mode="bilinear", align_corners=False)` (no
/// antialias) of a [N, C, H, W] tensor, on the CPU in f32.
pub fn bilinear(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, c, ih, iw) = x.dims4()?;
    if (ih, iw) == (h, w) {
        return x.to_dtype(DType::F32);
    }
    if ih == 0 || iw == 0 {
        candle_core::bail!("cannot resize an empty {ih}x{iw} mask to {h}x{w}");
    }
    let src = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    // area_pixel_compute_source_index: src = scale·(dst + 0.5) − 0.5, clamped at 0.
    let coords = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (s as usize).min(inp - 1);
                let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (coords(h, ih), coords(w, iw));
    let mut out = Vec::with_capacity(n * c * h * w);
    for plane in src.chunks(ih * iw) {
        for &(y0, y1, ly) in &ys {
            for &(x0, x1, lx) in &xs {
                let (hy0, hy1) = (1.0 - ly, ly);
                let (wx0, wx1) = (1.0 - lx, lx);
                let top = wx0 * plane[y0 * iw + x0] + wx1 * plane[y0 * iw + x1];
                let bot = wx0 * plane[y1 * iw + x0] + wx1 * plane[y1 * iw + x1];
                out.push(hy0 * top + hy1 * bot);
            }
        }
    }
    Tensor::from_vec(out, (n, c, h, w), &Device::Cpu)
}

/// `repeat_to_batch_size`: cut a longer batch, tile a shorter one and cut.
pub fn repeat_to_batch_size(t: &Tensor, batch: usize) -> Result<Tensor> {
    let b = t.dim(0)?;
    if b == batch {
        Ok(t.clone())
    } else if b > batch {
        t.narrow(0, 0, batch)
    } else {
        let mut reps = vec![1usize; t.rank()];
        reps[0] = batch.div_ceil(b.max(1));
        t.repeat(reps.as_slice())?.narrow(0, 0, batch)
    }
}

/// `resize_to_batch_size`: pick evenly spaced samples when the batch sizes differ.
pub fn resize_to_batch_size(t: &Tensor, batch: usize) -> Result<Tensor> {
    let b = t.dim(0)?;
    if b == batch {
        return Ok(t.clone());
    }
    if batch <= 1 {
        return t.narrow(0, 0, batch.min(b));
    }
    let idx: Vec<usize> = if batch < b {
        let scale = (b - 1) as f64 / (batch - 1) as f64;
        (0..batch)
            .map(|i| (((i as f64) * scale).round() as usize).min(b - 1))
            .collect()
    } else {
        let scale = b as f64 / batch as f64;
        (0..batch)
            .map(|i| ((((i as f64) + 0.5) * scale).floor() as usize).min(b - 1))
            .collect()
    };
    let rows: Vec<Tensor> = idx
        .iter()
        .map(|&i| t.narrow(0, i, 1))
        .collect::<Result<_>>()?;
    Tensor::cat(&rows, 0)
}

/// `common_upscale(x, w, h, "bilinear", "center")`: center-crop to the target aspect
/// ratio, then bilinear.
pub fn upscale_bilinear_center(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, oh, ow) = x.dims4()?;
    let old_aspect = ow as f64 / oh as f64;
    let new_aspect = w as f64 / h as f64;
    let (mut cx, mut cy) = (0usize, 0usize);
    if old_aspect > new_aspect {
        cx = ((ow as f64 - ow as f64 * (new_aspect / old_aspect)) / 2.0).round() as usize;
    } else if old_aspect < new_aspect {
        cy = ((oh as f64 - oh as f64 * (old_aspect / new_aspect)) / 2.0).round() as usize;
    }
    let cropped = x.narrow(2, cy, oh - 2 * cy)?.narrow(3, cx, ow - 2 * cx)?;
    bilinear(&cropped, h, w)
}

/// `comfy.utils.reshape_mask(mask, shape)` for a 4-d latent shape: the mask as
/// [N, 1, H, W], bilinear to the latent's size, repeated over channels and the batch.
pub fn reshape_mask(mask: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let dims = mask.dims();
    if dims.len() < 2 || shape.len() != 4 {
        candle_core::bail!("a noise mask needs at least 2 dimensions, got {dims:?}");
    }
    let (mh, mw) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let m = mask.to_dtype(DType::F32)?.reshape(((), 1, mh, mw))?;
    let m = bilinear(&m, shape[2], shape[3])?;
    let m = m.repeat((1, shape[1], 1, 1))?;
    repeat_to_batch_size(&m, shape[0])
}

/// `torch.round`: half to even, element-wise.
pub fn round_half_even(t: &Tensor) -> Result<Tensor> {
    let v: Vec<f32> = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f32::round_ties_even)
        .collect();
    Tensor::from_vec(v, t.dims(), t.device())
}
