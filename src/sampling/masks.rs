//! Mask and batch resizing as ComfyUI does it before and during sampling
//! (`comfy/utils.py`: `reshape_mask`, `repeat_to_batch_size`, `resize_to_batch_size`,
//! `common_upscale` with bilinear + center crop). The resampling itself is
//! [`crate::image_ops`]'s, the same torch-exact bilinear the image and latent nodes use.

use crate::image_ops::{bilinear_nchw, common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
use candle_core::{DType, Result, Tensor};

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

/// `common_upscale(x, w, h, "bilinear", "center")` of a channels-first `[N, C, H, W]` tensor:
/// center-crop to the target aspect ratio, then bilinear.
pub fn upscale_bilinear_center(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let src = Planes::from_nchw(x)?;
    common_upscale(
        &src,
        w,
        h,
        UpscaleMethod::Bilinear,
        Crop::Center,
        TorchLayout::ChannelsFirst,
    )
    .map_err(candle_core::Error::msg)?
    .to_nchw()
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
    let m = bilinear_nchw(&m, shape[2], shape[3])?;
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
