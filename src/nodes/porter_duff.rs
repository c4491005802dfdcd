//! PorterDuffImageComposite (comfy_extras/nodes_compositing.py): the 18 Porter-Duff operators
//! on images with MASK alphas (a mask is `1 − alpha`), on alpha-premultiplied colour, in
//! float32 operation for operation as ComfyUI's `porter_duff_composite` (so bit-exact). The
//! destination fixes the size: its alpha and the source (image, then alpha) are resized to it
//! bicubically with a center crop when they differ.

use crate::image_ops::{common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
use crate::node::types::{Image, Mask};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The operators, in ComfyUI's enum order (the combo's order).
pub const MODES: [&str; 18] = [
    "ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN",
    "MULTIPLY", "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR",
];

/// One pixel channel: premultiplied source `s` with alpha `sa`, destination `d` with `da`;
/// returns (premultiplied colour, alpha).
fn op(mode: &str, s: f32, sa: f32, d: f32, da: f32) -> (f32, f32) {
    let union = || sa + da - sa * da;
    match mode {
        "ADD" => ((s + d).clamp(0.0, 1.0), (sa + da).clamp(0.0, 1.0)),
        "CLEAR" => (0.0, 0.0),
        "DARKEN" => ((1.0 - da) * s + (1.0 - sa) * d + s.min(d), union()),
        "DST" => (d, da),
        "DST_ATOP" => (sa * d + (1.0 - da) * s, sa),
        "DST_IN" => (d * sa, sa * da),
        "DST_OUT" => ((1.0 - sa) * d, (1.0 - sa) * da),
        "DST_OVER" => (d + (1.0 - da) * s, da + (1.0 - da) * sa),
        "LIGHTEN" => ((1.0 - da) * s + (1.0 - sa) * d + s.max(d), union()),
        "MULTIPLY" => (s * d, sa * da),
        "OVERLAY" => {
            let c = if 2.0 * d < da {
                2.0 * s * d
            } else {
                sa * da - 2.0 * (da - s) * (sa - d)
            };
            (c, union())
        }
        "SCREEN" => (s + d - s * d, union()),
        "SRC" => (s, sa),
        "SRC_ATOP" => (da * s + (1.0 - sa) * d, da),
        "SRC_IN" => (s * da, sa * da),
        "SRC_OUT" => ((1.0 - da) * s, (1.0 - da) * sa),
        "SRC_OVER" => (s + (1.0 - sa) * d, sa + (1.0 - sa) * da),
        // XOR (the combo admits nothing else)
        _ => (
            (1.0 - da) * s + (1.0 - sa) * d,
            (1.0 - da) * sa + (1.0 - sa) * da,
        ),
    }
}

/// `porter_duff_composite` on one item: `src`/`dst` are [1, C, H, W], the masks [1, 1, H, W]
/// of the same size. Returns the image and the output mask.
pub fn composite(
    src: &Planes,
    src_mask: &Planes,
    dst: &Planes,
    dst_mask: &Planes,
    mode: &str,
) -> (Planes, Planes) {
    let plane = dst.h * dst.w;
    let mut image = Planes::zeros(1, dst.c, dst.h, dst.w);
    let mut mask = Planes::zeros(1, 1, dst.h, dst.w);
    for p in 0..plane {
        let sa = 1.0 - src_mask.data[p];
        let da = 1.0 - dst_mask.data[p];
        let mut out_alpha = 0.0;
        for c in 0..dst.c {
            let s = src.data[c * plane + p] * sa;
            let d = dst.data[c * plane + p] * da;
            let (colour, alpha) = op(mode, s, sa, d, da);
            out_alpha = alpha;
            let v = if alpha > 1e-5f32 { colour / alpha } else { 0.0 };
            image.data[c * plane + p] = v.clamp(0.0, 1.0);
        }
        if dst.c == 0 {
            out_alpha = op(mode, 0.0, sa, 0.0, da).1;
        }
        mask.data[p] = 1.0 - out_alpha;
    }
    (image, mask)
}

fn item(p: &Planes, b: usize) -> Planes {
    let len = p.c * p.h * p.w;
    Planes::new(1, p.c, p.h, p.w, p.data[b * len..(b + 1) * len].to_vec())
}

fn resize(p: Planes, h: usize, w: usize, input: &str) -> Result<Planes, NodeError> {
    if (p.h, p.w) == (h, w) {
        return Ok(p);
    }
    common_upscale(
        &p,
        w,
        h,
        UpscaleMethod::Bicubic,
        Crop::Center,
        TorchLayout::ChannelsLast,
    )
    .map_err(|e| NodeError::input(input, e))
}

fn mask_planes(i: &Inputs, name: &str) -> Result<Planes, NodeError> {
    let m = &i.object::<Mask>(name)?.0;
    let m = match m.rank() {
        2 => m.unsqueeze(0).map_err(|e| NodeError::msg(e.to_string()))?,
        3 => m.clone(),
        _ => {
            return Err(NodeError::input(
                name,
                format!("expected a MASK [B, H, W], got shape {:?}", m.dims()),
            ))
        }
    };
    Planes::from_mask(&m).map_err(|e| NodeError::msg(e.to_string()))
}

struct PorterDuffImageComposite;
impl Node for PorterDuffImageComposite {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PorterDuffImageComposite")
            .display("Porter-Duff Image Composite")
            .category("mask/compositing")
            .module("comfy_extras.nodes_compositing")
            .v3()
            .input(InputSpec::of("source", "IMAGE"))
            .input(InputSpec::of("source_alpha", "MASK"))
            .input(InputSpec::of("destination", "IMAGE"))
            .input(InputSpec::of("destination_alpha", "MASK"))
            .input(InputSpec::combo("mode", &MODES).default("DST"))
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let e = |e: candle_core::Error| NodeError::msg(e.to_string());
        let src = Planes::from_nhwc(&i.object::<Image>("source")?.0).map_err(e)?;
        let dst = Planes::from_nhwc(&i.object::<Image>("destination")?.0).map_err(e)?;
        let src_mask = mask_planes(i, "source_alpha")?;
        let dst_mask = mask_planes(i, "destination_alpha")?;
        let mode = i.string("mode")?;
        if !MODES.contains(&mode) {
            return Err(NodeError::input(
                "mode",
                format!("'{mode}' is not one of {}", MODES.join(", ")),
            ));
        }
        if src.c != dst.c {
            return Err(NodeError::input(
                "source",
                format!(
                    "source and destination must have the same channel count, got {} and {}",
                    src.c, dst.c
                ),
            ));
        }
        let n = src.n.min(dst.n).min(src_mask.n).min(dst_mask.n);
        let (mut images, mut masks) = (Vec::new(), Vec::new());
        for b in 0..n {
            let d = item(&dst, b);
            let da = resize(item(&dst_mask, b), d.h, d.w, "destination_alpha")?;
            let s = resize(item(&src, b), d.h, d.w, "source")?;
            let sa = resize(item(&src_mask, b), da.h, da.w, "source_alpha")?;
            let (img, mask) = composite(&s, &sa, &d, &da, mode);
            images.extend(img.data);
            masks.extend(mask.data);
        }
        let image = Planes::new(n, dst.c, dst.h, dst.w, images)
            .to_nhwc()
            .map_err(e)?;
        let mask = Planes::new(n, 1, dst.h, dst.w, masks)
            .to_mask()
            .map_err(e)?;
        Ok(NodeOutput::values(vec![
            Value::object(Image(image)),
            Value::object(Mask(mask)),
        ]))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(PorterDuffImageComposite)?;
    Ok(())
}
