//! Inpainting nodes of nodes.py: VAEEncodeForInpaint and InpaintModelConditioning
//! (SetLatentNoiseMask lives with the latent nodes). Masked denoising itself happens in every sampler path
//! (`nodes::sampling`, KSamplerX0Inpaint); the inpaint concat of 9-channel UNets in
//! `crate::sampling::conds`.

use super::sd_types::{Conditioning, SdVae};
use crate::image_ops::bilinear_nchw;
use crate::node::types::{Image, Latent, Mask};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::masks::round_half_even;
use candle_core::{DType, Device, Tensor};

/// The mask as [B, 1, H, W] at the image's pixel size (`interpolate(mode="bilinear")`).
fn mask_to_pixels(mask: &Tensor, h: usize, w: usize) -> Result<Tensor, NodeError> {
    let dims = mask.dims();
    if dims.len() < 2 {
        return Err(NodeError::input(
            "mask",
            format!("a MASK needs 2 or 3 dimensions, got {dims:?}"),
        ));
    }
    let (mh, mw) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let m = mask.to_dtype(DType::F32)?.reshape(((), 1, mh, mw))?;
    Ok(bilinear_nchw(&m, h, w)?)
}

/// Crops pixels [B, H, W, C] and mask [B, 1, H, W] to multiples of `f`, centered like
/// ComfyUI (offset `(dim % f) / 2`).
fn crop_to_multiple(
    pixels: &Tensor,
    mask: &Tensor,
    f: usize,
) -> Result<(Tensor, Tensor), NodeError> {
    let (_, h, w, _) = pixels.dims4()?;
    let (nh, nw) = (h / f * f, w / f * f);
    if nh == 0 || nw == 0 {
        return Err(NodeError::input(
            "pixels",
            format!("the image is {w}x{h} px; it must be at least {f}x{f}"),
        ));
    }
    if (nh, nw) == (h, w) {
        return Ok((pixels.clone(), mask.clone()));
    }
    let (oy, ox) = ((h % f) / 2, (w % f) / 2);
    Ok((
        pixels.narrow(1, oy, nh)?.narrow(2, ox, nw)?,
        mask.narrow(2, oy, nh)?.narrow(3, ox, nw)?,
    ))
}

/// The pixels and mask VAEEncodeForInpaint / InpaintModelConditioning encode: the mask
/// resized to the image ([B, 1, H, W]), both center-cropped to multiples of `multiple`,
/// masked pixels set to 0.5 grey. Returns (pixels, mask).
pub fn masked_pixels(
    pixels: &Tensor,
    mask: &Tensor,
    multiple: usize,
) -> Result<(Tensor, Tensor), NodeError> {
    let (_, h, w, _) = pixels.dims4()?;
    let mask = mask_to_pixels(mask, h, w)?;
    let (px, mask) = crop_to_multiple(pixels, &mask, multiple)?;
    let px = neutralize_masked(&px, &mask)?;
    Ok((px, mask))
}

/// Masked pixels of the first 3 channels set to 0.5 grey: `(p − 0.5)·(1 − round(mask)) + 0.5`
/// in float32, as ComfyUI's in-place loop computes it.
fn neutralize_masked(pixels: &Tensor, mask: &Tensor) -> Result<Tensor, NodeError> {
    let (b, h, w, c) = pixels.dims4()?;
    let px = pixels
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let keep: Vec<f32> = round_half_even(mask)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| 1.0 - v)
        .collect();
    let mb = keep.len() / (h * w);
    let mut out = px;
    for bi in 0..b {
        let kb = &keep[(bi % mb.max(1)) * h * w..][..h * w];
        for (p, &k) in kb.iter().enumerate() {
            for ch in 0..c.min(3) {
                let v = &mut out[(bi * h * w + p) * c + ch];
                *v = ((*v - 0.5) * k) + 0.5;
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, h, w, c), &Device::Cpu)?)
}

/// VAEEncodeForInpaint's noise mask: `round(mask)` grown by a `g`×`g` box (conv2d with a
/// ones kernel, padding `ceil((g−1)/2)`, clamped to 0..1), cut to the image, rounded.
pub fn grow_mask(mask: &Tensor, g: usize) -> Result<Tensor, NodeError> {
    let (b, _, h, w) = mask.dims4()?;
    if g == 0 {
        return Ok(round_half_even(mask)?);
    }
    let m = round_half_even(mask)?.flatten_all()?.to_vec1::<f32>()?;
    let pad = (g - 1).div_ceil(2) as isize;
    let mut out = vec![0f32; b * h * w];
    for bi in 0..b {
        let plane = &m[bi * h * w..(bi + 1) * h * w];
        for oy in 0..h {
            for ox in 0..w {
                let mut s = 0f32;
                for ky in 0..g as isize {
                    let y = oy as isize - pad + ky;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    for kx in 0..g as isize {
                        let x = ox as isize - pad + kx;
                        if x >= 0 && x < w as isize {
                            s += plane[y as usize * w + x as usize];
                        }
                    }
                }
                out[(bi * h + oy) * w + ox] = s.clamp(0.0, 1.0).round_ties_even();
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, 1, h, w), &Device::Cpu)?)
}

struct VaeEncodeForInpaint;
impl Node for VaeEncodeForInpaint {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncodeForInpaint")
            .display("VAE Encode (for Inpainting)")
            .category("latent/inpaint")
            .input(InputSpec::of("pixels", "IMAGE"))
            .input(InputSpec::of("vae", "VAE"))
            .input(InputSpec::of("mask", "MASK"))
            .input(
                InputSpec::int("grow_mask_by")
                    .default(6)
                    .min(0)
                    .max(64)
                    .step(1),
            )
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let vae = i.object::<SdVae>("vae")?;
        let pixels = i.object::<Image>("pixels")?;
        let mask = i.object::<Mask>("mask")?;
        let grow = i.int("grow_mask_by")?;
        let grow = usize::try_from(grow)
            .map_err(|_| NodeError::input("grow_mask_by", format!("{grow} must be 0..64")))?;
        let (px, mask) = masked_pixels(&pixels.0, &mask.0, vae.0.config().downscale())?;
        let noise_mask = grow_mask(&mask, grow)?;
        ctx.check_interrupt()?;
        let z = vae
            .0
            .encode(&px)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        let mut latent = Latent::new(z);
        latent.noise_mask = Some(noise_mask);
        Ok(NodeOutput::one(Value::object(latent)))
    }
}

struct InpaintModelConditioning;
impl Node for InpaintModelConditioning {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("InpaintModelConditioning")
            .category("conditioning/inpaint")
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(InputSpec::of("vae", "VAE"))
            .input(InputSpec::of("pixels", "IMAGE"))
            .input(InputSpec::of("mask", "MASK"))
            .input(InputSpec::boolean("noise_mask").default(true).tooltip(
                "Add a noise mask to the latent so sampling will only happen within the mask. \
                 Might improve results or completely break things depending on the model.",
            ))
            .output(OutputSpec::new("CONDITIONING").named("positive"))
            .output(OutputSpec::new("CONDITIONING").named("negative"))
            .output(OutputSpec::new("LATENT").named("latent"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let positive = i.object::<Conditioning>("positive")?;
        let negative = i.object::<Conditioning>("negative")?;
        let vae = i.object::<SdVae>("vae")?;
        let pixels = i.object::<Image>("pixels")?;
        let mask = i.object::<Mask>("mask")?;
        let (px, mask) = masked_pixels(&pixels.0, &mask.0, 8)?;
        ctx.check_interrupt()?;
        let encode = |t: &Tensor| vae.0.encode(t).map_err(|e| NodeError::msg(e.to_string()));
        let concat_latent = encode(&px)?;
        ctx.check_interrupt()?;
        let orig_latent = encode(&pixels.0)?;
        let mut latent = Latent::new(orig_latent);
        if i.boolean("noise_mask")? {
            latent.noise_mask = Some(mask.clone());
        }
        let with_concat = |c: &Conditioning| {
            let mut c = c.clone();
            for e in &mut c.0 {
                e.opts.concat_latent_image = Some(concat_latent.clone());
                e.opts.concat_mask = Some(mask.clone());
            }
            Value::object(c)
        };
        Ok(NodeOutput::values(vec![
            with_concat(&positive),
            with_concat(&negative),
            Value::object(latent),
        ]))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(VaeEncodeForInpaint)?;
    r.register(InpaintModelConditioning)?;
    Ok(())
}
