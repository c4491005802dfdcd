//! Nodes between an image's colours or alpha channel and a MASK:
//! `comfy_extras/nodes_compositing.py`'s SplitImageWithAlpha and JoinImageWithAlpha (a MASK is
//! `1 − alpha`), and `nodes_mask.py`'s ImageColorToMask.

use crate::image_ops::{interpolate, Interp, Planes, TorchLayout};
use crate::node::types::{Image, Mask};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

fn image_planes(i: &Inputs, name: &str) -> Result<Planes, NodeError> {
    let image = i.object::<Image>(name)?;
    if image.0.rank() != 4 {
        return Err(NodeError::input(
            name,
            format!(
                "expected an IMAGE tensor [B, H, W, C], got shape {:?}",
                image.0.dims()
            ),
        ));
    }
    Ok(Planes::from_nhwc(&image.0)?)
}

fn compositing(class: &str, display: &str) -> NodeSchema {
    NodeSchema::new(class)
        .display(display)
        .category("mask/compositing")
        .module("comfy_extras.nodes_compositing")
        .v3()
}

/// SplitImageWithAlpha: the first three channels, and `1 − alpha` (zeros without an alpha
/// channel).
pub fn split_alpha(img: &Planes) -> (Planes, Planes) {
    let c = img.c.min(3);
    let plane = img.h * img.w;
    let mut rgb = Planes::zeros(img.n, c, img.h, img.w);
    let mut mask = Planes::zeros(img.n, 1, img.h, img.w);
    for b in 0..img.n {
        for ch in 0..c {
            let o = rgb.at(b, ch, 0, 0);
            rgb.data[o..o + plane].copy_from_slice(img.plane(b, ch));
        }
        let o = mask.at(b, 0, 0, 0);
        if img.c > 3 {
            for (m, a) in mask.data[o..o + plane].iter_mut().zip(img.plane(b, 3)) {
                *m = 1.0 - a;
            }
        }
    }
    (rgb, mask)
}

/// JoinImageWithAlpha: the first three channels plus `1 − mask` resized bilinearly to the
/// image, for `min(images, masks)` images.
pub fn join_alpha(img: &Planes, mask: &Planes) -> Planes {
    let mask = interpolate(
        mask,
        img.h,
        img.w,
        Interp::Bilinear,
        TorchLayout::ChannelsFirst,
    );
    let n = img.n.min(mask.n);
    let c = img.c.min(3);
    let plane = img.h * img.w;
    let mut out = Planes::zeros(n, c + 1, img.h, img.w);
    for b in 0..n {
        for ch in 0..c {
            let o = out.at(b, ch, 0, 0);
            out.data[o..o + plane].copy_from_slice(img.plane(b, ch));
        }
        let o = out.at(b, c, 0, 0);
        for (d, m) in out.data[o..o + plane].iter_mut().zip(mask.plane(b, 0)) {
            *d = 1.0 - m;
        }
    }
    out
}

/// ImageColorToMask: 1 where the pixel's 8-bit RGB (`round(clamp(v, 0, 1)·255)`, ties to
/// even) packed as `0xRRGGBB` equals `color`.
pub fn color_to_mask(img: &Planes, color: i128) -> Result<Planes, String> {
    if img.c < 3 {
        return Err(format!(
            "has {} channels; the colour match needs 3 (RGB)",
            img.c
        ));
    }
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as i128;
    let mut mask = Planes::zeros(img.n, 1, img.h, img.w);
    let plane = img.h * img.w;
    for b in 0..img.n {
        let (r, g, bl) = (img.plane(b, 0), img.plane(b, 1), img.plane(b, 2));
        let o = mask.at(b, 0, 0, 0);
        for (k, m) in mask.data[o..o + plane].iter_mut().enumerate() {
            let packed = (q(r[k]) << 16) + (q(g[k]) << 8) + q(bl[k]);
            *m = if packed == color { 1.0 } else { 0.0 };
        }
    }
    Ok(mask)
}

struct SplitImageWithAlpha;
impl Node for SplitImageWithAlpha {
    fn schema(&self) -> NodeSchema {
        compositing("SplitImageWithAlpha", "Split Image with Alpha")
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (rgb, mask) = split_alpha(&image_planes(i, "image")?);
        Ok(NodeOutput::values(vec![
            Value::object(Image(rgb.to_nhwc()?)),
            Value::object(Mask(mask.to_mask()?)),
        ]))
    }
}

struct JoinImageWithAlpha;
impl Node for JoinImageWithAlpha {
    fn schema(&self) -> NodeSchema {
        compositing("JoinImageWithAlpha", "Join Image with Alpha")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::of("alpha", "MASK"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let img = image_planes(i, "image")?;
        let mask = Planes::from_mask(&i.object::<Mask>("alpha")?.0)
            .map_err(|e| NodeError::input("alpha", e.to_string()))?;
        if img.n == 0 || mask.n == 0 || img.h == 0 || img.w == 0 || mask.h == 0 || mask.w == 0 {
            return Err(NodeError::input(
                if img.n == 0 || img.h == 0 || img.w == 0 {
                    "image"
                } else {
                    "alpha"
                },
                "is empty",
            ));
        }
        Ok(NodeOutput::one(Value::object(Image(
            join_alpha(&img, &mask).to_nhwc()?,
        ))))
    }
}

struct ImageColorToMask;
impl Node for ImageColorToMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageColorToMask")
            .category("mask")
            .module("comfy_extras.nodes_mask")
            .input(InputSpec::of("image", "IMAGE"))
            .input(
                InputSpec::int("color")
                    .default(0)
                    .min(0)
                    .max(0xFFFFFF)
                    .step(1)
                    .opt("display", "color"),
            )
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mask = color_to_mask(&image_planes(i, "image")?, i.int("color")?)
            .map_err(|e| NodeError::input("image", e))?;
        Ok(NodeOutput::one(Value::object(Mask(mask.to_mask()?))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SplitImageWithAlpha)?;
    r.register(JoinImageWithAlpha)?;
    r.register(ImageColorToMask)?;
    Ok(())
}
