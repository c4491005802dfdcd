//! Resizing and combining latents: LatentUpscale, LatentUpscaleBy, LatentComposite and
//! LatentBlend (nodes.py). The resampling itself is [`crate::image_ops`].

use super::image_transform::{crop_mode, upscale_method};
use crate::image_ops::{common_upscale, py_round, Crop, Planes, TorchLayout, UpscaleMethod};
use crate::node::types::Latent;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use std::sync::Arc;

const MAX_RESOLUTION: i64 = 16384;

/// A LATENT input whose samples are `[B, C, H, W]` as planes.
fn latent_planes(i: &Inputs, name: &str) -> Result<(Arc<Latent>, Planes), NodeError> {
    let latent = i.object::<Latent>(name)?;
    if latent.samples.rank() != 4 {
        return Err(NodeError::input(
            name,
            format!(
                "expected latent samples [B, C, H, W], got shape {:?}",
                latent.samples.dims()
            ),
        ));
    }
    let planes = Planes::from_nchw(&latent.samples)?;
    Ok((latent, planes))
}

/// The latent with new samples; `noise_mask` and `batch_index` carry over (ComfyUI copies the
/// dict).
fn with_samples(latent: &Latent, samples: &Planes) -> Result<Latent, NodeError> {
    let mut out = latent.clone();
    out.samples = samples.to_nchw()?;
    Ok(out)
}

fn int_input(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    usize::try_from(i.int(name)?).map_err(|_| NodeError::input(name, "must not be negative"))
}

/// LatentUpscale's target in pixels: 0 x 0 keeps the latent, one side 0 keeps the aspect ratio,
/// and each side is at least 64 px. `None` means "pass through".
pub fn latent_upscale_target(
    width: usize,
    height: usize,
    latent_w: usize,
    latent_h: usize,
) -> Option<(usize, usize)> {
    if width == 0 && height == 0 {
        return None;
    }
    let (lw, lh) = (latent_w as f64, latent_h as f64);
    Some(if width == 0 {
        let height = height.max(64);
        let width = (py_round(lw * height as f64 / lh).max(64)) as usize;
        (width, height)
    } else if height == 0 {
        let width = width.max(64);
        let height = (py_round(lh * width as f64 / lw).max(64)) as usize;
        (width, height)
    } else {
        (width.max(64), height.max(64))
    })
}

struct LatentUpscale;
impl Node for LatentUpscale {
    fn schema(&self) -> NodeSchema {
        let dim = |n: &str| {
            InputSpec::int(n)
                .default(512)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("LatentUpscale")
            .display("Upscale Latent")
            .category("latent")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::combo(
                "upscale_method",
                &UpscaleMethod::LATENT_NAMES,
            ))
            .input(dim("width"))
            .input(dim("height"))
            .input(InputSpec::combo("crop", &Crop::NAMES))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let method = upscale_method(i, &UpscaleMethod::LATENT_NAMES)?;
        let crop = crop_mode(i)?;
        let (width, height) = (int_input(i, "width")?, int_input(i, "height")?);
        let (latent, planes) = latent_planes(i, "samples")?;
        let Some((w, h)) = latent_upscale_target(width, height, planes.w, planes.h) else {
            return Ok(NodeOutput::one(i.require("samples")?.clone()));
        };
        let out = common_upscale(
            &planes,
            w / 8,
            h / 8,
            method,
            crop,
            TorchLayout::ChannelsFirst,
        )
        .map_err(|e| NodeError::input("samples", e))?;
        Ok(NodeOutput::one(Value::object(with_samples(&latent, &out)?)))
    }
}

struct LatentUpscaleBy;
impl Node for LatentUpscaleBy {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentUpscaleBy")
            .display("Upscale Latent By")
            .category("latent")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::combo(
                "upscale_method",
                &UpscaleMethod::LATENT_NAMES,
            ))
            .input(
                InputSpec::float("scale_by")
                    .default(1.5)
                    .min(0.01)
                    .max(8.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let method = upscale_method(i, &UpscaleMethod::LATENT_NAMES)?;
        let scale_by = i.float("scale_by")?;
        let (latent, planes) = latent_planes(i, "samples")?;
        let w = py_round(planes.w as f64 * scale_by);
        let h = py_round(planes.h as f64 * scale_by);
        if w < 1 || h < 1 {
            return Err(NodeError::input(
                "scale_by",
                format!(
                    "{scale_by} turns the {}x{} latent into {w}x{h}; both sides must be at least 1",
                    planes.w, planes.h
                ),
            ));
        }
        let out = common_upscale(
            &planes,
            w as usize,
            h as usize,
            method,
            Crop::Disabled,
            TorchLayout::ChannelsFirst,
        )
        .map_err(|e| NodeError::input("samples", e))?;
        Ok(NodeOutput::one(Value::object(with_samples(&latent, &out)?)))
    }
}

/// Python's `range(*slice(start, stop).indices(len))` for a step of 1: negative bounds count
/// from the end, everything is clamped to `0..len`.
fn py_slice(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    let norm = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
    let (a, b) = (norm(start), norm(stop));
    a..b.max(a)
}

/// LatentComposite: pastes `from` into `to` with its top-left corner at latent cell `(x, y)`
/// (pixels / 8), cut at `to`'s edges. With `feather` cells, the pasted block fades in linearly
/// over that many rows/columns on every side that does not touch `to`'s border, with ComfyUI's
/// exact mask (including how it indexes past a block thinner than the feather).
pub fn latent_composite(
    to: &Planes,
    from: &Planes,
    x: usize,
    y: usize,
    feather: usize,
) -> Result<Planes, NodeError> {
    if x > to.w {
        return Err(NodeError::input(
            "x",
            format!(
                "{} px lies beyond samples_to's width of {} px",
                x * 8,
                to.w * 8
            ),
        ));
    }
    if y > to.h {
        return Err(NodeError::input(
            "y",
            format!(
                "{} px lies beyond samples_to's height of {} px",
                y * 8,
                to.h * 8
            ),
        ));
    }
    if !(from.n == to.n || from.n == 1) || !(from.c == to.c || from.c == 1) {
        return Err(NodeError::input(
            "samples_from",
            format!(
                "batch {} x {} channels does not fit samples_to's batch {} x {} channels (each must match or be 1)",
                from.n, from.c, to.n, to.c
            ),
        ));
    }
    let hh = from.h.min(to.h - y);
    let ww = from.w.min(to.w - x);
    // The feather mask over the pasted block (the same for every sample and channel).
    let mut mask = vec![1.0f32; hh * ww];
    for t in 0..feather as i64 {
        let f = ((1.0 / feather as f64) * (t + 1) as f64) as f32;
        let rows = |r: std::ops::Range<usize>, mask: &mut [f32]| {
            for row in r {
                mask[row * ww..(row + 1) * ww]
                    .iter_mut()
                    .for_each(|m| *m *= f);
            }
        };
        if y != 0 {
            rows(py_slice(t, t + 1, hh), &mut mask);
        }
        if y + hh < to.h {
            rows(py_slice(hh as i64 - 1 - t, hh as i64 - t, hh), &mut mask);
        }
        let cols = |c: std::ops::Range<usize>, mask: &mut [f32]| {
            for row in 0..hh {
                for col in c.clone() {
                    mask[row * ww + col] *= f;
                }
            }
        };
        if x != 0 {
            cols(py_slice(t, t + 1, ww), &mut mask);
        }
        if x + ww < to.w {
            cols(py_slice(ww as i64 - 1 - t, ww as i64 - t, ww), &mut mask);
        }
    }
    let mut out = to.clone();
    for b in 0..to.n {
        for ch in 0..to.c {
            let (fb, fc) = (b.min(from.n - 1), ch.min(from.c - 1));
            for r in 0..hh {
                for col in 0..ww {
                    let src = from.data[from.at(fb, fc, r, col)];
                    let di = out.at(b, ch, y + r, x + col);
                    out.data[di] = if feather == 0 {
                        src
                    } else {
                        let m = mask[r * ww + col];
                        src * m + out.data[di] * (1.0 - m)
                    };
                }
            }
        }
    }
    Ok(out)
}

struct LatentComposite;
impl Node for LatentComposite {
    fn schema(&self) -> NodeSchema {
        let pos = |n: &str| {
            InputSpec::int(n)
                .default(0)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("LatentComposite")
            .display("Latent Composite")
            .category("latent")
            .input(InputSpec::of("samples_to", "LATENT"))
            .input(InputSpec::of("samples_from", "LATENT"))
            .input(pos("x"))
            .input(pos("y"))
            .input(pos("feather"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (to_latent, to) = latent_planes(i, "samples_to")?;
        let (_, from) = latent_planes(i, "samples_from")?;
        let (x, y, feather) = (
            int_input(i, "x")? / 8,
            int_input(i, "y")? / 8,
            int_input(i, "feather")? / 8,
        );
        let out = latent_composite(&to, &from, x, y, feather)?;
        Ok(NodeOutput::one(Value::object(with_samples(
            &to_latent, &out,
        )?)))
    }
}

/// LatentBlend: `samples1 * f + samples2 * (1 - f)`; `samples2` of another size is first
/// resized to `samples1` (bicubic, centre crop). Batch and channel counts broadcast like torch.
pub fn latent_blend(a: &Planes, b: &Planes, factor: f64) -> Result<Planes, NodeError> {
    let resized;
    let b = if (a.n, a.c, a.h, a.w) != (b.n, b.c, b.h, b.w) {
        resized = common_upscale(
            b,
            a.w,
            a.h,
            UpscaleMethod::Bicubic,
            Crop::Center,
            TorchLayout::ChannelsFirst,
        )
        .map_err(|e| NodeError::input("samples2", e))?;
        &resized
    } else {
        b
    };
    let fits = |p: usize, q: usize| p == q || p == 1 || q == 1;
    if !fits(a.n, b.n) || !fits(a.c, b.c) {
        return Err(NodeError::input(
            "samples2",
            format!(
                "batch {} x {} channels cannot be blended with samples1's batch {} x {} channels (each must match or be 1)",
                b.n, b.c, a.n, a.c
            ),
        ));
    }
    let (fa, fb) = (factor as f32, (1.0 - factor) as f32);
    let (n, c) = (a.n.max(b.n), a.c.max(b.c));
    let mut out = Planes::zeros(n, c, a.h, a.w);
    for bi in 0..n {
        for ch in 0..c {
            let pa = a.plane(bi.min(a.n - 1), ch.min(a.c - 1));
            let pb = b.plane(bi.min(b.n - 1), ch.min(b.c - 1));
            let o = out.at(bi, ch, 0, 0);
            for (k, dst) in out.data[o..o + a.h * a.w].iter_mut().enumerate() {
                *dst = pa[k] * fa + pb[k] * fb;
            }
        }
    }
    Ok(out)
}

struct LatentBlend;
impl Node for LatentBlend {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentBlend")
            .display("Latent Blend")
            .category("_for_testing")
            .input(InputSpec::of("samples1", "LATENT"))
            .input(InputSpec::of("samples2", "LATENT"))
            .input(
                InputSpec::float("blend_factor")
                    .default(0.5)
                    .min(0)
                    .max(1)
                    .step(0.01),
            )
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (first, a) = latent_planes(i, "samples1")?;
        let (_, b) = latent_planes(i, "samples2")?;
        let out = latent_blend(&a, &b, i.float("blend_factor")?)?;
        Ok(NodeOutput::one(Value::object(with_samples(&first, &out)?)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(LatentUpscale)?;
    r.register(LatentUpscaleBy)?;
    r.register(LatentComposite)?;
    r.register(LatentBlend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_slices() {
        assert_eq!(py_slice(0, 1, 4), 0..1);
        assert_eq!(py_slice(-1, 0, 4), 3..3); // empty
        assert_eq!(py_slice(-2, -1, 4), 2..3);
        assert_eq!(py_slice(5, 6, 4), 4..4);
        assert_eq!(py_slice(-9, -8, 4), 0..0);
    }

    #[test]
    fn upscale_targets() {
        assert_eq!(latent_upscale_target(0, 0, 8, 8), None);
        assert_eq!(latent_upscale_target(16, 8, 8, 8), Some((64, 64)));
        // 80 px high on a 7x5 latent keeps the aspect: round(7 * 80 / 5) = 112.
        assert_eq!(latent_upscale_target(0, 80, 7, 5), Some((112, 80)));
        assert_eq!(latent_upscale_target(120, 0, 7, 5), Some((120, 86)));
    }
}
