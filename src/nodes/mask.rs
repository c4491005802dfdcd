//! The mask nodes of comfy_extras/nodes_mask.py: MaskToImage, ImageToMask, SolidMask,
//! InvertMask, CropMask, GrowMask, FeatherMask, MaskComposite, ThresholdMask. (LoadImageMask is
//! in `image_io`.)

use crate::node::types::{Image, Mask};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use candle_core::{DType, Device, Tensor};

const MAX_RESOLUTION: i64 = 16384;
const MODULE: &str = "comfy_extras.nodes_mask";

/// A stack of 2-d masks: ComfyUI's `mask.reshape(-1, H, W)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskStack {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl MaskStack {
    fn from_tensor(t: &Tensor, input: &str) -> Result<Self, NodeError> {
        let dims = t.dims();
        if dims.len() < 2 {
            return Err(NodeError::input(
                input,
                format!("expected a MASK tensor [B, H, W], got shape {dims:?}"),
            ));
        }
        let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let n = data.len().checked_div(h * w).unwrap_or(0);
        Ok(MaskStack { n, h, w, data })
    }

    fn input(i: &Inputs, name: &str) -> Result<Self, NodeError> {
        MaskStack::from_tensor(&i.object::<Mask>(name)?.0, name)
    }

    pub fn to_tensor(&self) -> Result<Tensor, NodeError> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.n, self.h, self.w),
            &Device::Cpu,
        )?)
    }

    fn value(self) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::object(Mask(self.to_tensor()?))))
    }

    #[inline]
    fn at(&self, b: usize, y: usize, x: usize) -> usize {
        (b * self.h + y) * self.w + x
    }
}

fn mask_schema(name: &str) -> NodeSchema {
    NodeSchema::new(name).category("mask").module(MODULE)
}

fn position(name: &str) -> InputSpec {
    InputSpec::int(name)
        .default(0)
        .min(0)
        .max(MAX_RESOLUTION)
        .step(1)
}

fn extent(name: &str) -> InputSpec {
    InputSpec::int(name)
        .default(512)
        .min(1)
        .max(MAX_RESOLUTION)
        .step(1)
}

fn non_negative(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    usize::try_from(i.int(name)?).map_err(|_| NodeError::input(name, "must not be negative"))
}

struct MaskToImage;
impl Node for MaskToImage {
    fn schema(&self) -> NodeSchema {
        mask_schema("MaskToImage")
            .display("Convert Mask to Image")
            .input(InputSpec::of("mask", "MASK"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let m = MaskStack::input(i, "mask")?;
        // [N, H, W] -> [N, H, W, 1] -> the value in all three channels.
        let image = m
            .to_tensor()?
            .unsqueeze(3)?
            .broadcast_as((m.n, m.h, m.w, 3))?
            .contiguous()?;
        Ok(NodeOutput::one(Value::object(Image(image))))
    }
}

const CHANNELS: [&str; 4] = ["red", "green", "blue", "alpha"];

struct ImageToMask;
impl Node for ImageToMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("ImageToMask")
            .display("Convert Image to Mask")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo("channel", &CHANNELS))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let channel = i.string("channel")?;
        let idx = CHANNELS.iter().position(|c| *c == channel).ok_or_else(|| {
            NodeError::input("channel", format!("'{channel}' is not one of {CHANNELS:?}"))
        })?;
        let dims = image.0.dims();
        if dims.len() != 4 {
            return Err(NodeError::input(
                "image",
                format!("expected an IMAGE tensor [B, H, W, C], got shape {dims:?}"),
            ));
        }
        if idx >= dims[3] {
            return Err(NodeError::input(
                "channel",
                format!(
                    "'{channel}' needs an image with {} channels, this one has {}",
                    idx + 1,
                    dims[3]
                ),
            ));
        }
        let mask = image
            .0
            .to_dtype(DType::F32)?
            .narrow(3, idx, 1)?
            .squeeze(3)?
            .contiguous()?;
        Ok(NodeOutput::one(Value::object(Mask(mask))))
    }
}

struct SolidMask;
impl Node for SolidMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("SolidMask")
            .input(
                InputSpec::float("value")
                    .default(1.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .input(extent("width"))
            .input(extent("height"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let value = i.float("value")? as f32;
        let (w, h) = (non_negative(i, "width")?, non_negative(i, "height")?);
        MaskStack {
            n: 1,
            h,
            w,
            data: vec![value; w * h],
        }
        .value()
    }
}

struct InvertMask;
impl Node for InvertMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("InvertMask")
            .input(InputSpec::of("mask", "MASK"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mask = i.object::<Mask>("mask")?;
        // 1.0 - mask, keeping the input's shape.
        let out = mask.0.to_dtype(DType::F32)?.affine(-1.0, 1.0)?;
        Ok(NodeOutput::one(Value::object(Mask(out))))
    }
}

struct CropMask;
impl Node for CropMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("CropMask")
            .input(InputSpec::of("mask", "MASK"))
            .input(position("x"))
            .input(position("y"))
            .input(extent("width"))
            .input(extent("height"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let m = MaskStack::input(i, "mask")?;
        let (x, y) = (non_negative(i, "x")?, non_negative(i, "y")?);
        let (w, h) = (non_negative(i, "width")?, non_negative(i, "height")?);
        if x >= m.w {
            return Err(NodeError::input(
                "x",
                format!("{x} is outside the {} px wide mask", m.w),
            ));
        }
        if y >= m.h {
            return Err(NodeError::input(
                "y",
                format!("{y} is outside the {} px high mask", m.h),
            ));
        }
        let (w, h) = (w.min(m.w - x), h.min(m.h - y));
        let mut data = Vec::with_capacity(m.n * w * h);
        for b in 0..m.n {
            for r in y..y + h {
                let s = m.at(b, r, x);
                data.extend_from_slice(&m.data[s..s + w]);
            }
        }
        MaskStack { n: m.n, h, w, data }.value()
    }
}

/// One grey dilation (`grow`) or erosion step with a 3x3 footprint (the cross when
/// `tapered`), like `scipy.ndimage.grey_dilation/grey_erosion` in their default `reflect` mode,
/// which for a one-pixel reach repeats the edge pixel.
fn morph_step(m: &MaskStack, grow: bool, tapered: bool) -> Vec<f32> {
    let mut out = vec![0.0f32; m.data.len()];
    let (h, w) = (m.h as i64, m.w as i64);
    for b in 0..m.n {
        for y in 0..h {
            for x in 0..w {
                let mut acc = m.data[m.at(b, y as usize, x as usize)];
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        if tapered && dy != 0 && dx != 0 {
                            continue;
                        }
                        let (yy, xx) = ((y + dy).clamp(0, h - 1), (x + dx).clamp(0, w - 1));
                        let v = m.data[m.at(b, yy as usize, xx as usize)];
                        acc = if grow { acc.max(v) } else { acc.min(v) };
                    }
                }
                out[m.at(b, y as usize, x as usize)] = acc;
            }
        }
    }
    out
}

/// GrowMask: `|expand|` dilations (expand > 0) or erosions (expand < 0).
pub fn grow_mask(mut m: MaskStack, expand: i64, tapered: bool) -> MaskStack {
    if m.h == 0 || m.w == 0 {
        return m;
    }
    for _ in 0..expand.unsigned_abs() {
        m.data = morph_step(&m, expand > 0, tapered);
    }
    m
}

struct GrowMask;
impl Node for GrowMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("GrowMask")
            .input(InputSpec::of("mask", "MASK"))
            .input(
                InputSpec::int("expand")
                    .default(0)
                    .min(-MAX_RESOLUTION)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .input(InputSpec::boolean("tapered_corners").default(true))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let m = MaskStack::input(i, "mask")?;
        let expand = i64::try_from(i.int("expand")?)
            .map_err(|_| NodeError::input("expand", "out of range"))?;
        ctx.check_interrupt()?;
        grow_mask(m, expand, i.boolean("tapered_corners")?).value()
    }
}

/// FeatherMask: linear ramps on each side, with ComfyUI's indexing: the `right`/`bottom` ramps
/// address columns/rows `-x`, so their first step lands on column/row 0.
pub fn feather_mask(
    mut m: MaskStack,
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
) -> MaskStack {
    let (left, right) = (left.min(m.w), right.min(m.w));
    let (top, bottom) = (top.min(m.h), bottom.min(m.h));
    let from_end = |k: usize, len: usize| if k == 0 { 0 } else { len - k };
    let scale_col = |m: &mut MaskStack, col: usize, rate: f32| {
        for b in 0..m.n {
            for r in 0..m.h {
                let i = m.at(b, r, col);
                m.data[i] *= rate;
            }
        }
    };
    let scale_row = |m: &mut MaskStack, row: usize, rate: f32| {
        for b in 0..m.n {
            let s = m.at(b, row, 0);
            let w = m.w;
            m.data[s..s + w].iter_mut().for_each(|v| *v *= rate);
        }
    };
    for x in 0..left {
        scale_col(&mut m, x, ((x as f64 + 1.0) / left as f64) as f32);
    }
    for x in 0..right {
        let col = from_end(x, m.w);
        scale_col(&mut m, col, ((x as f64 + 1.0) / right as f64) as f32);
    }
    for y in 0..top {
        scale_row(&mut m, y, ((y as f64 + 1.0) / top as f64) as f32);
    }
    for y in 0..bottom {
        let row = from_end(y, m.h);
        scale_row(&mut m, row, ((y as f64 + 1.0) / bottom as f64) as f32);
    }
    m
}

struct FeatherMask;
impl Node for FeatherMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("FeatherMask")
            .input(InputSpec::of("mask", "MASK"))
            .input(position("left"))
            .input(position("top"))
            .input(position("right"))
            .input(position("bottom"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let m = MaskStack::input(i, "mask")?;
        feather_mask(
            m,
            non_negative(i, "left")?,
            non_negative(i, "top")?,
            non_negative(i, "right")?,
            non_negative(i, "bottom")?,
        )
        .value()
    }
}

/// MaskComposite's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskOp {
    Multiply,
    Add,
    Subtract,
    And,
    Or,
    Xor,
}

impl MaskOp {
    pub const NAMES: [&'static str; 6] = ["multiply", "add", "subtract", "and", "or", "xor"];
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "multiply" => MaskOp::Multiply,
            "add" => MaskOp::Add,
            "subtract" => MaskOp::Subtract,
            "and" => MaskOp::And,
            "or" => MaskOp::Or,
            "xor" => MaskOp::Xor,
            _ => return None,
        })
    }
    fn apply(self, d: f32, s: f32) -> f32 {
        // The logical operations round (half to even, like torch.round) and test for non-zero.
        let bit = |v: f32| v.round_ties_even() != 0.0;
        let flag = |v: bool| if v { 1.0 } else { 0.0 };
        match self {
            MaskOp::Multiply => d * s,
            MaskOp::Add => d + s,
            MaskOp::Subtract => d - s,
            MaskOp::And => flag(bit(d) & bit(s)),
            MaskOp::Or => flag(bit(d) | bit(s)),
            MaskOp::Xor => flag(bit(d) ^ bit(s)),
        }
    }
}

/// MaskComposite: combines `source` into `destination` at `(x, y)` (cut at the destination's
/// edges), then clamps the whole result to 0..1. A source batch of 1 applies to every
/// destination mask.
pub fn mask_composite(
    dest: &MaskStack,
    src: &MaskStack,
    x: usize,
    y: usize,
    op: MaskOp,
) -> Result<MaskStack, NodeError> {
    if x > dest.w {
        return Err(NodeError::input(
            "x",
            format!("{x} is beyond the destination's width of {}", dest.w),
        ));
    }
    if y > dest.h {
        return Err(NodeError::input(
            "y",
            format!("{y} is beyond the destination's height of {}", dest.h),
        ));
    }
    if !(src.n == dest.n || src.n == 1) {
        return Err(NodeError::input(
            "source",
            format!(
                "a batch of {} masks cannot be combined with {} destination masks (must match or be 1)",
                src.n, dest.n
            ),
        ));
    }
    let (vw, vh) = (src.w.min(dest.w - x), src.h.min(dest.h - y));
    let mut out = dest.clone();
    for b in 0..dest.n {
        let sb = b.min(src.n - 1);
        for r in 0..vh {
            for c in 0..vw {
                let di = out.at(b, y + r, x + c);
                out.data[di] = op.apply(out.data[di], src.data[src.at(sb, r, c)]);
            }
        }
    }
    out.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    Ok(out)
}

struct MaskComposite;
impl Node for MaskComposite {
    fn schema(&self) -> NodeSchema {
        mask_schema("MaskComposite")
            .input(InputSpec::of("destination", "MASK"))
            .input(InputSpec::of("source", "MASK"))
            .input(position("x"))
            .input(position("y"))
            .input(InputSpec::combo("operation", &MaskOp::NAMES))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let dest = MaskStack::input(i, "destination")?;
        let src = MaskStack::input(i, "source")?;
        let name = i.string("operation")?;
        let op = MaskOp::from_name(name).ok_or_else(|| {
            NodeError::input(
                "operation",
                format!("'{name}' is not one of {:?}", MaskOp::NAMES),
            )
        })?;
        let (x, y) = (non_negative(i, "x")?, non_negative(i, "y")?);
        mask_composite(&dest, &src, x, y, op)?.value()
    }
}

struct ThresholdMask;
impl Node for ThresholdMask {
    fn schema(&self) -> NodeSchema {
        mask_schema("ThresholdMask")
            .input(InputSpec::of("mask", "MASK"))
            .input(
                InputSpec::float("value")
                    .default(0.5)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mask = i.object::<Mask>("mask")?;
        // torch compares a float32 tensor with a Python float in float32.
        let value = i.float("value")? as f32;
        let out = mask
            .0
            .to_dtype(DType::F32)?
            .gt(value)?
            .to_dtype(DType::F32)?;
        Ok(NodeOutput::one(Value::object(Mask(out))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(MaskToImage)?;
    r.register(ImageToMask)?;
    r.register(SolidMask)?;
    r.register(InvertMask)?;
    r.register(CropMask)?;
    r.register(GrowMask)?;
    r.register(FeatherMask)?;
    r.register(MaskComposite)?;
    r.register(ThresholdMask)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(h: usize, w: usize, data: &[f32]) -> MaskStack {
        MaskStack {
            n: 1,
            h,
            w,
            data: data.to_vec(),
        }
    }

    #[test]
    fn grow_and_shrink_a_point() {
        let mut d = vec![0.0; 25];
        d[12] = 1.0;
        let cross = grow_mask(stack(5, 5, &d), 1, true);
        assert_eq!(cross.data.iter().filter(|&&v| v == 1.0).count(), 5);
        let square = grow_mask(stack(5, 5, &d), 1, false);
        assert_eq!(square.data.iter().filter(|&&v| v == 1.0).count(), 9);
        let gone = grow_mask(square, -1, false);
        assert_eq!(gone.data, d);
    }

    #[test]
    fn logical_ops_round_half_to_even() {
        assert_eq!(MaskOp::And.apply(0.5, 1.0), 0.0);
        assert_eq!(MaskOp::Or.apply(0.5, 0.51), 1.0);
        assert_eq!(MaskOp::Xor.apply(1.5, 0.0), 1.0); // 1.5 rounds to 2: non-zero
        assert_eq!(MaskOp::Xor.apply(1.5, 1.0), 0.0);
    }

    #[test]
    fn feather_right_starts_at_column_zero() {
        let m = feather_mask(stack(1, 4, &[1.0; 4]), 0, 0, 2, 0);
        // x = 0 scales column 0 by 1/2, x = 1 scales column 3 by 2/2.
        assert_eq!(m.data, vec![0.5, 1.0, 1.0, 1.0]);
    }
}
