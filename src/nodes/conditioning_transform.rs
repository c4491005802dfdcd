//! The CONDITIONING transform nodes of nodes.py: ConditioningCombine, ConditioningConcat,
//! ConditioningAverage, ConditioningSetArea, ConditioningSetAreaPercentage,
//! ConditioningSetAreaStrength, ConditioningSetMask, ConditioningSetTimestepRange,
//! ConditioningZeroOut. Each node is a thin wrapper over a pub function on [`Conditioning`]
//! so the transforms are testable on their own; what the options mean while sampling is
//! `crate::sampling::conds`.

use super::sd_types::{CondEntry, Conditioning};
use crate::node::types::Mask;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::conds::CondArea;
use candle_core::{DType, Tensor};

const MAX_RESOLUTION: i64 = 16384;

/// ConditioningCombine: the two lists one after the other.
pub fn combine(a: &Conditioning, b: &Conditioning) -> Conditioning {
    Conditioning(a.0.iter().chain(b.0.iter()).cloned().collect())
}

fn first_from<'a>(from: &'a Conditioning, input: &str) -> Result<&'a CondEntry, NodeError> {
    from.0
        .first()
        .ok_or_else(|| NodeError::input(input, "the conditioning is empty (it needs one entry)"))
}

/// ConditioningConcat: each `to` entry's tokens followed by the first `from` entry's.
pub fn concat(to: &Conditioning, from: &Conditioning) -> Result<Conditioning, NodeError> {
    let f = first_from(from, "conditioning_from")?;
    let mut out = Vec::with_capacity(to.0.len());
    for e in &to.0 {
        let (td, fd) = (e.cond.dims(), f.cond.dims());
        if td.len() != 3 || fd.len() != 3 || td[0] != fd[0] || td[2] != fd[2] {
            return Err(NodeError::input(
                "conditioning_from",
                format!("cannot concatenate a {fd:?} conditioning to a {td:?} one (batch and width must match)"),
            ));
        }
        let mut n = e.clone();
        n.cond = Tensor::cat(&[&e.cond, &f.cond], 1)?;
        out.push(n);
    }
    Ok(Conditioning(out))
}

/// ConditioningAverage: `to·s + from·(1−s)` per `to` entry, `from` (its first entry) cut or
/// zero-padded to the `to` entry's token count; pooled outputs blended the same way.
pub fn average(
    to: &Conditioning,
    from: &Conditioning,
    strength: f64,
) -> Result<Conditioning, NodeError> {
    let f = first_from(from, "conditioning_from")?;
    let from_cond = f.cond.to_dtype(DType::F32)?;
    let (_, fl, fw) = from_cond.dims3()?;
    let s_to = strength as f32 as f64;
    let s_from = (1.0 - strength) as f32 as f64;
    let mut out = Vec::with_capacity(to.0.len());
    for e in &to.0 {
        let t1 = e.cond.to_dtype(DType::F32)?;
        let (b, tl, tw) = t1.dims3()?;
        if tw != fw {
            return Err(NodeError::input(
                "conditioning_from",
                format!("width {fw} does not match conditioning_to's {tw}"),
            ));
        }
        let mut t0 = from_cond.narrow(1, 0, fl.min(tl))?;
        if fl < tl {
            let pad = Tensor::zeros((t0.dim(0)?, tl - fl, tw), DType::F32, t0.device())?;
            t0 = Tensor::cat(&[&t0, &pad], 1)?;
        }
        if t0.dim(0)? != b {
            t0 = t0.broadcast_as((b, tl, tw))?.contiguous()?;
        }
        let mut n = e.clone();
        n.cond = ((&t1 * s_to)? + (&t0 * s_from)?)?;
        let pooled_to = e.pooled.as_ref().or(f.pooled.as_ref());
        n.pooled = match (&f.pooled, pooled_to) {
            (Some(pf), Some(pt)) => Some(((pt * s_to)? + (pf * s_from)?)?),
            (Some(pf), None) => Some(pf.clone()),
            (None, _) => e.pooled.clone(),
        };
        out.push(n);
    }
    Ok(Conditioning(out))
}

fn map_opts(c: &Conditioning, f: impl Fn(&mut CondEntry)) -> Conditioning {
    Conditioning(
        c.0.iter()
            .map(|e| {
                let mut n = e.clone();
                f(&mut n);
                n
            })
            .collect(),
    )
}

/// ConditioningSetArea: area (h/8, w/8, y/8, x/8) in latent units, strength, and
/// `set_area_to_bounds` off.
pub fn set_area(
    c: &Conditioning,
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    strength: f64,
) -> Conditioning {
    map_opts(c, |e| {
        e.opts.area = Some(CondArea::Latent {
            h: height / 8,
            w: width / 8,
            y: y / 8,
            x: x / 8,
        });
        e.opts.strength = Some(strength);
        e.opts.set_area_to_bounds = Some(false);
    })
}

/// ConditioningSetAreaPercentage: the area as fractions of the latent, resolved when
/// sampling starts.
pub fn set_area_percentage(
    c: &Conditioning,
    width: f64,
    height: f64,
    x: f64,
    y: f64,
    strength: f64,
) -> Conditioning {
    map_opts(c, |e| {
        e.opts.area = Some(CondArea::Percentage {
            h: height,
            w: width,
            y,
            x,
        });
        e.opts.strength = Some(strength);
        e.opts.set_area_to_bounds = Some(false);
    })
}

/// ConditioningSetAreaStrength.
pub fn set_strength(c: &Conditioning, strength: f64) -> Conditioning {
    map_opts(c, |e| e.opts.strength = Some(strength))
}

/// ConditioningSetMask: the mask ([B, H, W]), its strength, and whether the area becomes
/// the mask's bounding box ("mask bounds").
pub fn set_mask(
    c: &Conditioning,
    mask: &Tensor,
    strength: f64,
    mask_bounds: bool,
) -> Result<Conditioning, NodeError> {
    let mask = match mask.rank() {
        2 => mask.unsqueeze(0)?,
        3 => mask.clone(),
        r => {
            return Err(NodeError::input(
                "mask",
                format!("a MASK must be [B, H, W], got {r} dimensions"),
            ))
        }
    };
    Ok(map_opts(c, |e| {
        e.opts.mask = Some(mask.clone());
        e.opts.set_area_to_bounds = Some(mask_bounds);
        e.opts.mask_strength = Some(strength);
    }))
}

/// ConditioningSetTimestepRange: use the entries only between `start` and `end` (fractions
/// of the schedule).
pub fn set_timestep_range(c: &Conditioning, start: f64, end: f64) -> Conditioning {
    map_opts(c, |e| {
        e.opts.start_percent = Some(start);
        e.opts.end_percent = Some(end);
    })
}

/// ConditioningZeroOut: zeros of the same shapes (tokens and pooled output).
pub fn zero_out(c: &Conditioning) -> Result<Conditioning, NodeError> {
    let mut out = Vec::with_capacity(c.0.len());
    for e in &c.0 {
        let mut n = e.clone();
        n.cond = e.cond.zeros_like()?;
        n.pooled = match &e.pooled {
            Some(p) => Some(p.zeros_like()?),
            None => None,
        };
        out.push(n);
    }
    Ok(Conditioning(out))
}

fn cond_in(name: &str) -> InputSpec {
    InputSpec::of(name, "CONDITIONING")
}

fn out(c: Conditioning) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::one(Value::object(c)))
}

fn strength_input(name: &str) -> InputSpec {
    InputSpec::float(name)
        .default(1.0)
        .min(0.0)
        .max(10.0)
        .step(0.01)
}

fn pixels(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = i.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} must not be negative")))
}

struct ConditioningCombine;
impl Node for ConditioningCombine {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningCombine")
            .display("Conditioning (Combine)")
            .category("conditioning")
            .input(cond_in("conditioning_1"))
            .input(cond_in("conditioning_2"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let a = i.object::<Conditioning>("conditioning_1")?;
        let b = i.object::<Conditioning>("conditioning_2")?;
        out(combine(&a, &b))
    }
}

struct ConditioningAverage;
impl Node for ConditioningAverage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningAverage")
            .category("conditioning")
            .input(cond_in("conditioning_to"))
            .input(cond_in("conditioning_from"))
            .input(
                InputSpec::float("conditioning_to_strength")
                    .default(1.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let to = i.object::<Conditioning>("conditioning_to")?;
        let from = i.object::<Conditioning>("conditioning_from")?;
        out(average(&to, &from, i.float("conditioning_to_strength")?)?)
    }
}

struct ConditioningConcat;
impl Node for ConditioningConcat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningConcat")
            .display("Conditioning (Concat)")
            .category("conditioning")
            .input(cond_in("conditioning_to"))
            .input(cond_in("conditioning_from"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let to = i.object::<Conditioning>("conditioning_to")?;
        let from = i.object::<Conditioning>("conditioning_from")?;
        out(concat(&to, &from)?)
    }
}

struct ConditioningSetArea;
impl Node for ConditioningSetArea {
    fn schema(&self) -> NodeSchema {
        let dim = |n: &str, default: i64, min: i64| {
            InputSpec::int(n)
                .default(default)
                .min(min)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("ConditioningSetArea")
            .display("Conditioning (Set Area)")
            .category("conditioning")
            .input(cond_in("conditioning"))
            .input(dim("width", 64, 64))
            .input(dim("height", 64, 64))
            .input(dim("x", 0, 0))
            .input(dim("y", 0, 0))
            .input(strength_input("strength"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        out(set_area(
            &c,
            pixels(i, "width")?,
            pixels(i, "height")?,
            pixels(i, "x")?,
            pixels(i, "y")?,
            i.float("strength")?,
        ))
    }
}

struct ConditioningSetAreaPercentage;
impl Node for ConditioningSetAreaPercentage {
    fn schema(&self) -> NodeSchema {
        // nodes.py writes these bounds as Python ints (`"min": 0`), which /object_info keeps.
        let frac = |n: &str, default: serde_json::Value| {
            InputSpec::float(n)
                .default(default)
                .min(0)
                .max(1.0)
                .step(0.01)
        };
        NodeSchema::new("ConditioningSetAreaPercentage")
            .display("Conditioning (Set Area with Percentage)")
            .category("conditioning")
            .input(cond_in("conditioning"))
            .input(frac("width", 1.0.into()))
            .input(frac("height", 1.0.into()))
            .input(frac("x", 0.into()))
            .input(frac("y", 0.into()))
            .input(strength_input("strength"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        out(set_area_percentage(
            &c,
            i.float("width")?,
            i.float("height")?,
            i.float("x")?,
            i.float("y")?,
            i.float("strength")?,
        ))
    }
}

struct ConditioningSetAreaStrength;
impl Node for ConditioningSetAreaStrength {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningSetAreaStrength")
            .category("conditioning")
            .input(cond_in("conditioning"))
            .input(strength_input("strength"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        out(set_strength(&c, i.float("strength")?))
    }
}

struct ConditioningSetMask;
impl Node for ConditioningSetMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningSetMask")
            .display("Conditioning (Set Mask)")
            .category("conditioning")
            .input(cond_in("conditioning"))
            .input(InputSpec::of("mask", "MASK"))
            .input(strength_input("strength"))
            .input(InputSpec::combo(
                "set_cond_area",
                &["default", "mask bounds"],
            ))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        let mask = i.object::<Mask>("mask")?;
        let bounds = i.string("set_cond_area")? != "default";
        out(set_mask(&c, &mask.0, i.float("strength")?, bounds)?)
    }
}

struct ConditioningZeroOut;
impl Node for ConditioningZeroOut {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningZeroOut")
            .category("advanced/conditioning")
            .input(cond_in("conditioning"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        out(zero_out(&c)?)
    }
}

struct ConditioningSetTimestepRange;
impl Node for ConditioningSetTimestepRange {
    fn schema(&self) -> NodeSchema {
        let frac = |n: &str, default: f64| {
            InputSpec::float(n)
                .default(default)
                .min(0.0)
                .max(1.0)
                .step(0.001)
        };
        NodeSchema::new("ConditioningSetTimestepRange")
            .category("advanced/conditioning")
            .input(cond_in("conditioning"))
            .input(frac("start", 0.0))
            .input(frac("end", 1.0))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        out(set_timestep_range(&c, i.float("start")?, i.float("end")?))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ConditioningCombine)?;
    r.register(ConditioningAverage)?;
    r.register(ConditioningConcat)?;
    r.register(ConditioningSetArea)?;
    r.register(ConditioningSetAreaPercentage)?;
    r.register(ConditioningSetAreaStrength)?;
    r.register(ConditioningSetMask)?;
    r.register(ConditioningZeroOut)?;
    r.register(ConditioningSetTimestepRange)?;
    Ok(())
}
