//! Latent arithmetic and transforms (`comfy_extras/nodes_latent.py`, nodes.py): LatentAdd,
//! LatentSubtract, LatentMultiply, LatentInterpolate, LatentBatch, LatentBatchSeedBehavior,
//! LatentCrop, LatentFlip, LatentRotate, LatentConcat, LatentCut, and LatentCompositeMasked
//! (`nodes_mask.py`'s `composite` at multiplier 8, shared with ImageCompositeMasked); the
//! latent operations LatentOperationTonemapReinhard, LatentApplyOperation and
//! LatentApplyOperationCFG (a pre-CFG patch of the MODEL, `sampling::cfg_patches`). A second latent of another size is first resized
//! to the first (`reshape_latent_to`: bilinear with centre crop, then the batch repeated),
//! as ComfyUI does; tensors are float32 and each op rounds as torch's does.

use super::image_edit::{
    composite, flip_planes, flip_rows, rot90_planes, rotation_turns, FLIP_METHODS, ROTATIONS,
};
use super::sd_types::SdModel;
use crate::image_ops::{common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
use crate::node::types::{Latent, Mask};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::LatentOperation;
use candle_core::Tensor;

const MAX_RESOLUTION: i64 = 16384;

fn v3(class: &str, category: &str) -> NodeSchema {
    NodeSchema::new(class)
        .category(category)
        .module("comfy_extras.nodes_latent")
        .v3()
}

fn latent_in(name: &str) -> InputSpec {
    InputSpec::of(name, "LATENT")
}

fn planes_of(l: &Latent, input: &str) -> Result<Planes, NodeError> {
    if l.samples.rank() != 4 {
        return Err(NodeError::input(
            input,
            format!(
                "expected LATENT samples [B, C, H, W], got shape {:?}",
                l.samples.dims()
            ),
        ));
    }
    Ok(Planes::from_nchw(&l.samples)?)
}

fn with_planes(l: &Latent, p: &Planes) -> Result<NodeOutput, NodeError> {
    let mut out = l.clone();
    out.samples = p.to_nchw()?;
    Ok(NodeOutput::one(Value::object(out)))
}

/// `reshape_latent_to(target.shape, latent, repeat_batch)`.
fn reshape_to(target: &Planes, p: &Planes, repeat_batch: bool) -> Result<Planes, NodeError> {
    let mut p = p.clone();
    if (p.c, p.h, p.w) != (target.c, target.h, target.w) {
        p = common_upscale(
            &p,
            target.w,
            target.h,
            UpscaleMethod::Bilinear,
            Crop::Center,
            TorchLayout::ChannelsFirst,
        )
        .map_err(|e| NodeError::input("samples2", e))?;
    }
    if repeat_batch && p.n != target.n {
        if p.n == 0 {
            return Err(NodeError::input("samples2", "is an empty batch"));
        }
        let per = p.c * p.h * p.w;
        let data: Vec<f32> = (0..target.n)
            .flat_map(|b| p.data[(b % p.n) * per..(b % p.n + 1) * per].iter().copied())
            .collect();
        p = Planes::new(target.n, p.c, p.h, p.w, data);
    }
    Ok(p)
}

/// The element-wise op of LatentAdd / LatentSubtract; channel counts must match or be 1
/// (torch broadcasting).
fn elementwise(a: &Planes, b: &Planes, f: impl Fn(f32, f32) -> f32) -> Result<Planes, NodeError> {
    if !(b.c == a.c || b.c == 1) {
        return Err(NodeError::input(
            "samples2",
            format!("has {} channels; samples1 has {}", b.c, a.c),
        ));
    }
    let mut out = a.clone();
    for n in 0..a.n {
        for ch in 0..a.c {
            for y in 0..a.h {
                for x in 0..a.w {
                    let k = a.at(n, ch, y, x);
                    out.data[k] = f(a.data[k], b.data[b.at(n, ch.min(b.c - 1), y, x)]);
                }
            }
        }
    }
    Ok(out)
}

struct LatentAdd;
impl Node for LatentAdd {
    fn schema(&self) -> NodeSchema {
        v3("LatentAdd", "latent/advanced")
            .input(latent_in("samples1"))
            .input(latent_in("samples2"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l1 = i.object::<Latent>("samples1")?;
        let a = planes_of(&l1, "samples1")?;
        let b = reshape_to(
            &a,
            &planes_of(&*i.object::<Latent>("samples2")?, "samples2")?,
            true,
        )?;
        with_planes(&l1, &elementwise(&a, &b, |x, y| x + y)?)
    }
}

struct LatentSubtract;
impl Node for LatentSubtract {
    fn schema(&self) -> NodeSchema {
        v3("LatentSubtract", "latent/advanced")
            .input(latent_in("samples1"))
            .input(latent_in("samples2"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l1 = i.object::<Latent>("samples1")?;
        let a = planes_of(&l1, "samples1")?;
        let b = reshape_to(
            &a,
            &planes_of(&*i.object::<Latent>("samples2")?, "samples2")?,
            true,
        )?;
        with_planes(&l1, &elementwise(&a, &b, |x, y| x - y)?)
    }
}

struct LatentMultiply;
impl Node for LatentMultiply {
    fn schema(&self) -> NodeSchema {
        v3("LatentMultiply", "latent/advanced")
            .input(latent_in("samples"))
            .input(
                InputSpec::float("multiplier")
                    .default(1.0)
                    .min(-10.0)
                    .max(10.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let m = i.float("multiplier")? as f32;
        let mut p = planes_of(&l, "samples")?;
        p.data.iter_mut().for_each(|v| *v *= m);
        with_planes(&l, &p)
    }
}

/// `torch.linalg.vector_norm(s, dim=1)`: [B, H, W] (float32 sum of squares over channels).
fn channel_norm(p: &Planes) -> Vec<f32> {
    let mut out = vec![0f32; p.n * p.h * p.w];
    for n in 0..p.n {
        for y in 0..p.h {
            for x in 0..p.w {
                let mut acc = 0f32;
                for ch in 0..p.c {
                    let v = p.data[p.at(n, ch, y, x)];
                    acc += v * v;
                }
                out[(n * p.h + y) * p.w + x] = acc.sqrt();
            }
        }
    }
    out
}

/// `torch.nan_to_num` (nan → 0, ±inf → ±f32::MAX).
fn nan_to_num(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else if v.is_infinite() {
        if v > 0.0 {
            f32::MAX
        } else {
            f32::MIN
        }
    } else {
        v
    }
}

struct LatentInterpolate;
impl Node for LatentInterpolate {
    fn schema(&self) -> NodeSchema {
        v3("LatentInterpolate", "latent/advanced")
            .input(latent_in("samples1"))
            .input(latent_in("samples2"))
            .input(
                InputSpec::float("ratio")
                    .default(1.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l1 = i.object::<Latent>("samples1")?;
        let a = planes_of(&l1, "samples1")?;
        let b = reshape_to(
            &a,
            &planes_of(&*i.object::<Latent>("samples2")?, "samples2")?,
            true,
        )?;
        if b.c != a.c {
            return Err(NodeError::input(
                "samples2",
                format!("has {} channels; samples1 has {}", b.c, a.c),
            ));
        }
        // ComfyUI divides [B, C, H, W] by the [B, H, W] norms, which torch broadcasts as
        // [1, B, H, W]: the norm of sample `c` scales channel `c` when B == C, sample 0's
        // when B == 1; other batch sizes are an error there.
        if !(a.n == 1 || a.n == a.c) {
            return Err(NodeError::input(
                "samples1",
                format!(
                    "a batch of {} with {} channels: ComfyUI's LatentInterpolate broadcasts \
                     the [B, H, W] norms against the channels and only runs when the batch \
                     is 1 or equals the channel count",
                    a.n, a.c
                ),
            ));
        }
        let ratio = i.float("ratio")?;
        let (r, q) = (ratio as f32, (1.0 - ratio) as f32);
        let (m1, m2) = (channel_norm(&a), channel_norm(&b));
        let hw = a.h * a.w;
        // norm index for element (n, ch, y, x): broadcast [1, B, H, W]
        let ni = |ch: usize, y: usize, x: usize| -> usize {
            let bb = if a.n == 1 { 0 } else { ch };
            bb * hw + y * a.w + x
        };
        let mut t = a.clone();
        for n in 0..a.n {
            for ch in 0..a.c {
                for y in 0..a.h {
                    for x in 0..a.w {
                        let k = a.at(n, ch, y, x);
                        let s1 = nan_to_num(a.data[k] / m1[ni(ch, y, x)]);
                        let s2 = nan_to_num(b.data[k] / m2[ni(ch, y, x)]);
                        t.data[k] = s1 * r + s2 * q;
                    }
                }
            }
        }
        let mt = channel_norm(&t);
        let mut out = t.clone();
        for n in 0..a.n {
            for ch in 0..a.c {
                for y in 0..a.h {
                    for x in 0..a.w {
                        let k = a.at(n, ch, y, x);
                        let j = ni(ch, y, x);
                        let st = nan_to_num(t.data[k] / mt[j]);
                        out.data[k] = st * (m1[j] * r + m2[j] * q);
                    }
                }
            }
        }
        with_planes(&l1, &out)
    }
}

struct LatentBatch;
impl Node for LatentBatch {
    fn schema(&self) -> NodeSchema {
        v3("LatentBatch", "latent/batch")
            .input(latent_in("samples1"))
            .input(latent_in("samples2"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l1 = i.object::<Latent>("samples1")?;
        let l2 = i.object::<Latent>("samples2")?;
        let a = planes_of(&l1, "samples1")?;
        let b = reshape_to(&a, &planes_of(&l2, "samples2")?, false)?;
        if b.c != a.c {
            return Err(NodeError::input(
                "samples2",
                format!("has {} channels; samples1 has {}", b.c, a.c),
            ));
        }
        let mut data = a.data.clone();
        data.extend_from_slice(&b.data);
        let cat = Planes::new(a.n + b.n, a.c, a.h, a.w, data);
        let idx = |l: &Latent, n: usize| -> Vec<i64> {
            l.batch_index
                .clone()
                .unwrap_or_else(|| (0..n as i64).collect())
        };
        let mut out = (*l1).clone();
        out.samples = cat.to_nchw()?;
        let mut bi = idx(&l1, a.n);
        bi.extend(idx(&l2, b.n));
        out.batch_index = Some(bi);
        Ok(NodeOutput::one(Value::object(out)))
    }
}

struct LatentBatchSeedBehavior;
impl Node for LatentBatchSeedBehavior {
    fn schema(&self) -> NodeSchema {
        v3("LatentBatchSeedBehavior", "latent/advanced")
            .input(latent_in("samples"))
            .input(InputSpec::combo("seed_behavior", &["random", "fixed"]).default("fixed"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let mut out = (*l).clone();
        match i.string("seed_behavior")? {
            "random" => out.batch_index = None,
            "fixed" => {
                let first = l
                    .batch_index
                    .as_ref()
                    .and_then(|b| b.first().copied())
                    .unwrap_or(0);
                out.batch_index = Some(vec![first; l.samples.dim(0)?]);
            }
            other => {
                return Err(NodeError::input(
                    "seed_behavior",
                    format!("'{other}' is not one of random, fixed"),
                ))
            }
        }
        Ok(NodeOutput::one(Value::object(out)))
    }
}

/// Python's `range(*slice(start, stop).indices(len))` (step 1).
fn py_slice(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    let norm = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
    let (a, b) = (norm(start), norm(stop));
    a..b.max(a)
}

struct LatentCrop;
impl Node for LatentCrop {
    fn schema(&self) -> NodeSchema {
        let dim = |n: &str, d: i64, min: i64| {
            InputSpec::int(n)
                .default(d)
                .min(min)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("LatentCrop")
            .display("Crop Latent")
            .category("latent/transform")
            .input(latent_in("samples"))
            .input(dim("width", 512, 64))
            .input(dim("height", 512, 64))
            .input(dim("x", 0, 0))
            .input(dim("y", 0, 0))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let p = planes_of(&l, "samples")?;
        let mut x = i.int("x")? as i64 / 8;
        let mut y = i.int("y")? as i64 / 8;
        // "enforce minimum size of 64"
        if x > p.w as i64 - 8 {
            x = p.w as i64 - 8;
        }
        if y > p.h as i64 - 8 {
            y = p.h as i64 - 8;
        }
        let (nh, nw) = (i.int("height")? as i64 / 8, i.int("width")? as i64 / 8);
        let rows = py_slice(y, nh + y, p.h);
        let cols = py_slice(x, nw + x, p.w);
        let out = p.window(rows.start, cols.start, rows.len(), cols.len());
        with_planes(&l, &out)
    }
}

struct LatentFlip;
impl Node for LatentFlip {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentFlip")
            .display("Flip Latent")
            .category("latent/transform")
            .input(latent_in("samples"))
            .input(InputSpec::combo("flip_method", &FLIP_METHODS))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let rows = flip_rows(i)?;
        with_planes(&l, &flip_planes(&planes_of(&l, "samples")?, rows))
    }
}

struct LatentRotate;
impl Node for LatentRotate {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentRotate")
            .display("Rotate Latent")
            .category("latent/transform")
            .input(latent_in("samples"))
            .input(InputSpec::combo("rotation", &ROTATIONS))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let k = rotation_turns(i)?;
        with_planes(&l, &rot90_planes(&planes_of(&l, "samples")?, k))
    }
}

struct LatentCompositeMasked;
impl Node for LatentCompositeMasked {
    fn schema(&self) -> NodeSchema {
        let pos = |n: &str| {
            InputSpec::int(n)
                .default(0)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("LatentCompositeMasked")
            .category("latent")
            .module("comfy_extras.nodes_mask")
            .input(latent_in("destination"))
            .input(latent_in("source"))
            .input(pos("x"))
            .input(pos("y"))
            .input(InputSpec::boolean("resize_source").default(false))
            .input(InputSpec::of("mask", "MASK").optional())
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let dl = i.object::<Latent>("destination")?;
        let dest = planes_of(&dl, "destination")?;
        let source = planes_of(&*i.object::<Latent>("source")?, "source")?;
        let mask = match i.get("mask") {
            Some(_) => Some(Planes::from_mask(&i.object::<Mask>("mask")?.0)?),
            None => None,
        };
        let count = |n: &str| -> Result<usize, NodeError> {
            let v = i.int(n)?;
            usize::try_from(v).map_err(|_| NodeError::input(n, format!("{v} must not be negative")))
        };
        let out = composite(
            &dest,
            &source,
            (count("x")?, count("y")?),
            mask.as_ref(),
            8,
            i.boolean("resize_source")?
                .then_some(TorchLayout::ChannelsFirst),
        )?;
        with_planes(&dl, &out)
    }
}

/// LatentConcat / LatentCut's `dim`: "x" the last axis, "y" the one before, "t" the third
/// from last (the channels of a 4-d image latent).
fn axis_of(dim: &str, rank: usize, input: &str) -> Result<usize, NodeError> {
    let back = if dim.contains('x') {
        1
    } else if dim.contains('y') {
        2
    } else if dim.contains('t') {
        3
    } else {
        return Err(NodeError::input("dim", format!("{dim:?} is not x, y or t")));
    };
    rank.checked_sub(back)
        .ok_or_else(|| NodeError::input(input, format!("a {rank}-d latent has no {dim:?} axis")))
}

struct LatentConcat;
impl Node for LatentConcat {
    fn schema(&self) -> NodeSchema {
        v3("LatentConcat", "latent/advanced")
            .input(latent_in("samples1"))
            .input(latent_in("samples2"))
            .input(InputSpec::combo("dim", &["x", "-x", "y", "-y", "t", "-t"]))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l1 = i.object::<Latent>("samples1")?;
        let s1 = &l1.samples;
        let s2 = &i.object::<Latent>("samples2")?.samples;
        if s1.rank() != s2.rank() || s1.rank() == 0 {
            return Err(NodeError::input(
                "samples2",
                format!("has shape {:?}; samples1 has {:?}", s2.dims(), s1.dims()),
            ));
        }
        // comfy.utils.repeat_to_batch_size(s2, s1.shape[0])
        let b = s1.dim(0)?;
        let n2 = s2.dim(0)?;
        let s2 = if n2 == 0 {
            return Err(NodeError::input("samples2", "is an empty batch"));
        } else if n2 == b {
            s2.clone()
        } else {
            let reps = b.div_ceil(n2);
            Tensor::cat(&vec![s2; reps], 0)?.narrow(0, 0, b)?
        };
        let dim = i.string("dim")?;
        let axis = axis_of(dim, s1.rank(), "samples1")?;
        for (k, (a, c)) in s1.dims().iter().zip(s2.dims()).enumerate() {
            if k != axis && a != c {
                return Err(NodeError::input(
                    "samples2",
                    format!(
                        "has shape {:?}; to concatenate along {dim:?} it must match samples1's \
                         {:?} on every other axis",
                        s2.dims(),
                        s1.dims()
                    ),
                ));
            }
        }
        let s2 = s2.to_dtype(s1.dtype())?;
        let cat = if dim.starts_with('-') {
            Tensor::cat(&[&s2, s1], axis)?
        } else {
            Tensor::cat(&[s1, &s2], axis)?
        };
        let mut out = (*l1).clone();
        out.samples = cat;
        Ok(NodeOutput::one(Value::object(out)))
    }
}

struct LatentCut;
impl Node for LatentCut {
    fn schema(&self) -> NodeSchema {
        v3("LatentCut", "latent/advanced")
            .input(latent_in("samples"))
            .input(InputSpec::combo("dim", &["x", "y", "t"]))
            .input(
                InputSpec::int("index")
                    .default(0)
                    .min(-MAX_RESOLUTION)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .input(
                InputSpec::int("amount")
                    .default(1)
                    .min(1)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let s = &l.samples;
        let axis = axis_of(i.string("dim")?, s.rank(), "samples")?;
        let len = s.dim(axis)? as i128;
        let (index, amount) = (i.int("index")?, i.int("amount")?);
        if amount < 1 {
            return Err(NodeError::input("amount", format!("{amount} is below 1")));
        }
        let (start, n) = if index >= 0 {
            let index = index.min(len - 1);
            (index, (len - index).min(amount))
        } else {
            let index = index.max(-len);
            (len + index, (-index).min(amount))
        };
        if len == 0 || n <= 0 {
            return Err(NodeError::input(
                "samples",
                "has nothing to cut along that axis",
            ));
        }
        let mut out = (*l).clone();
        out.samples = s.narrow(axis, start as usize, n as usize)?;
        Ok(NodeOutput::one(Value::object(out)))
    }
}

/// LATENT_OPERATION: a latent operation node's function.
#[derive(Debug, Clone, Copy)]
pub struct LatentOperationPayload(pub LatentOperation);
impl crate::node::Payload for LatentOperationPayload {}

const OPERATIONS: &str = "latent/advanced/operations";

fn operation_in() -> InputSpec {
    InputSpec::of("operation", "LATENT_OPERATION")
}

struct LatentApplyOperation;
impl Node for LatentApplyOperation {
    fn schema(&self) -> NodeSchema {
        v3("LatentApplyOperation", OPERATIONS)
            .experimental()
            .input(latent_in("samples"))
            .input(operation_in())
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let op = i.object::<LatentOperationPayload>("operation")?;
        let mut out = (*l).clone();
        out.samples =
            op.0.apply(&l.samples.to_dtype(candle_core::DType::F32)?)
                .map_err(|e| NodeError::input("samples", e.to_string()))?;
        Ok(NodeOutput::one(Value::object(out)))
    }
}

struct LatentApplyOperationCfg;
impl Node for LatentApplyOperationCfg {
    fn schema(&self) -> NodeSchema {
        v3("LatentApplyOperationCFG", OPERATIONS)
            .experimental()
            .input(InputSpec::of("model", "MODEL"))
            .input(operation_in())
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut m = (*i.object::<SdModel>("model")?).clone();
        let op = i.object::<LatentOperationPayload>("operation")?;
        m.cfg_patches.pre_cfg.push(op.0.into());
        Ok(NodeOutput::one(Value::object(m)))
    }
}

struct LatentOperationTonemapReinhard;
impl Node for LatentOperationTonemapReinhard {
    fn schema(&self) -> NodeSchema {
        v3("LatentOperationTonemapReinhard", OPERATIONS)
            .experimental()
            .input(
                InputSpec::float("multiplier")
                    .default(1.0)
                    .min(0.0)
                    .max(100.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("LATENT_OPERATION"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let multiplier = i.float("multiplier")?;
        Ok(NodeOutput::one(Value::object(LatentOperationPayload(
            LatentOperation::TonemapReinhard { multiplier },
        ))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(LatentApplyOperation)?;
    r.register(LatentApplyOperationCfg)?;
    r.register(LatentOperationTonemapReinhard)?;
    r.register(LatentCompositeMasked)?;
    r.register(LatentConcat)?;
    r.register(LatentCut)?;
    r.register(LatentAdd)?;
    r.register(LatentSubtract)?;
    r.register(LatentMultiply)?;
    r.register(LatentInterpolate)?;
    r.register(LatentBatch)?;
    r.register(LatentBatchSeedBehavior)?;
    r.register(LatentCrop)?;
    r.register(LatentFlip)?;
    r.register(LatentRotate)?;
    Ok(())
}
