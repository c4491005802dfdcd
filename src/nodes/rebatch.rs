//! RebatchLatents and RebatchImages (comfy_extras/nodes_rebatch.py): regroup a list of
//! batches into batches of `batch_size`, as a list output. Latents keep their seeds' batch
//! indices (given ones, else their running position in the list) and noise masks (all-ones
//! for a latent without one, dropped again for an output batch whose mask is all ones);
//! latents of another size start a new batch.

use crate::node::types::{Image, Latent};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use candle_core::{DType, Tensor};
use std::sync::Arc;

fn schema(class: &str, display: &str, category: &str, input: &str, ty: &str) -> NodeSchema {
    NodeSchema::new(class)
        .display(display)
        .category(category)
        .module("comfy_extras.nodes_rebatch")
        .v3()
        .input_is_list()
        .input(InputSpec::of(input, ty))
        .input(InputSpec::int("batch_size").default(1).min(1).max(4096))
        .output(OutputSpec::new(ty).list())
}

fn list<'a>(i: &'a Inputs, name: &str) -> Result<&'a [Value], NodeError> {
    match i.require(name)? {
        Value::List(v) => Ok(v),
        other => Err(NodeError::input(
            name,
            format!("expected a list, got {}", other.kind()),
        )),
    }
}

fn batch_size(i: &Inputs) -> Result<usize, NodeError> {
    let v = match list(i, "batch_size")?.first() {
        Some(Value::Int(v)) => *v,
        _ => return Err(NodeError::input("batch_size", "expected an INT")),
    };
    usize::try_from(v)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| NodeError::input("batch_size", format!("must be >= 1, got {v}")))
}

fn err(e: candle_core::Error) -> NodeError {
    NodeError::msg(e.to_string())
}

/// A run of latents of one size: samples, their masks, their seeds' batch indices.
struct Group {
    samples: Tensor,
    masks: Tensor,
    indices: Vec<i64>,
}

impl Group {
    fn len(&self) -> usize {
        self.samples.dim(0).unwrap_or(0)
    }

    /// Items `from..from+len` (the mask and index lists cut at the same places, as Python
    /// slices: clipped to their own lengths).
    fn slice(&self, from: usize, len: usize) -> Result<Group, NodeError> {
        let cut = |t: &Tensor| -> Result<Tensor, NodeError> {
            let n = t.dim(0).map_err(err)?;
            let s = from.min(n);
            t.narrow(0, s, len.min(n - s)).map_err(err)
        };
        let s = from.min(self.indices.len());
        Ok(Group {
            samples: cut(&self.samples)?,
            masks: cut(&self.masks)?,
            indices: self.indices[s..(from + len).min(self.indices.len())].to_vec(),
        })
    }

    fn into_latent(self) -> Result<Latent, NodeError> {
        let masks = self.masks.to_dtype(DType::F64).map_err(err)?;
        let mean = masks.mean_all().and_then(|m| m.to_scalar::<f64>());
        let all_ones = mean.map_err(err)? == 1.0;
        Ok(Latent {
            samples: self.samples,
            noise_mask: (!all_ones).then_some(self.masks),
            batch_index: Some(self.indices),
        })
    }
}

/// `get_batch`: a latent's samples, mask (all ones at 8x the latent size when it has none;
/// repeated over the batch when it has fewer) and batch indices.
fn group_of(l: &Latent, offset: usize) -> Result<Group, NodeError> {
    let s = &l.samples;
    if s.rank() != 4 {
        return Err(NodeError::input(
            "latents",
            format!("expected [B, C, H, W] latents, got shape {:?}", s.dims()),
        ));
    }
    let (b, _, h, w) = s.dims4().map_err(err)?;
    let mut mask = match &l.noise_mask {
        Some(m) => {
            let d = m.dims();
            if d.len() < 2 {
                return Err(NodeError::input(
                    "latents",
                    "a noise mask must be [B, 1, H, W]",
                ));
            }
            m.reshape(((), 1, d[d.len() - 2], d[d.len() - 1]))
                .and_then(|m| m.to_dtype(DType::F32))
                .map_err(err)?
        }
        None => Tensor::ones((b, 1, h * 8, w * 8), DType::F32, s.device()).map_err(err)?,
    };
    let mb = mask.dim(0).map_err(err)?;
    if mb < b {
        let reps = (b - 1) / mb + 1;
        mask = mask
            .repeat((reps, 1, 1, 1))
            .and_then(|m| m.narrow(0, 0, b))
            .map_err(err)?;
    }
    let indices = match &l.batch_index {
        Some(v) => v.clone(),
        None => (0..b).map(|x| (x + offset) as i64).collect(),
    };
    Ok(Group {
        samples: s.to_dtype(DType::F32).map_err(err)?,
        masks: mask,
        indices,
    })
}

fn cat(a: Group, b: Group) -> Result<Group, NodeError> {
    let masks = Tensor::cat(&[&a.masks, &b.masks], 0).map_err(|_| {
        NodeError::input(
            "latents",
            format!(
                "noise masks of one batch must have one size, got {:?} and {:?}",
                a.masks.dims(),
                b.masks.dims()
            ),
        )
    })?;
    let samples = Tensor::cat(&[&a.samples, &b.samples], 0).map_err(|_| {
        NodeError::input(
            "latents",
            format!(
                "latents of one size must have one channel count, got {:?} and {:?}",
                a.samples.dims(),
                b.samples.dims()
            ),
        )
    })?;
    let mut indices = a.indices;
    indices.extend(b.indices);
    Ok(Group {
        samples,
        masks,
        indices,
    })
}

/// LatentRebatch.execute.
pub fn rebatch_latents(latents: &[Arc<Latent>], bs: usize) -> Result<Vec<Latent>, NodeError> {
    let mut out = Vec::new();
    let mut current: Option<Group> = None;
    let mut processed = 0;
    for l in latents {
        let next = group_of(l, processed)?;
        processed += next.indices.len();
        current = Some(match current.take() {
            None => next,
            Some(cur) => {
                let (a, b) = (cur.samples.dims(), next.samples.dims());
                if a[2..] != b[2..] {
                    out.push(cur.slice(0, bs)?);
                    next
                } else {
                    cat(cur, next)?
                }
            }
        });
        if let Some(cur) = current.take() {
            if cur.len() > bs {
                let num = cur.len() / bs;
                for k in 0..num {
                    out.push(cur.slice(k * bs, bs)?);
                }
                let rest = cur.len() - num * bs;
                current = (rest > 0).then(|| cur.slice(num * bs, rest)).transpose()?;
            } else {
                current = Some(cur);
            }
        }
    }
    if let Some(cur) = current {
        out.push(cur.slice(0, bs)?);
    }
    out.into_iter().map(Group::into_latent).collect()
}

struct RebatchLatents;
impl Node for RebatchLatents {
    fn schema(&self) -> NodeSchema {
        schema(
            "RebatchLatents",
            "Rebatch Latents",
            "latent/batch",
            "latents",
            "LATENT",
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let bs = batch_size(i)?;
        let latents = list(i, "latents")?
            .iter()
            .map(|v| {
                v.downcast::<Latent>()
                    .ok_or_else(|| NodeError::input("latents", "expected LATENT"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = rebatch_latents(&latents, bs)?;
        Ok(NodeOutput::one(Value::List(
            out.into_iter().map(Value::object).collect(),
        )))
    }
}

struct RebatchImages;
impl Node for RebatchImages {
    fn schema(&self) -> NodeSchema {
        schema(
            "RebatchImages",
            "Rebatch Images",
            "image/batch",
            "images",
            "IMAGE",
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let bs = batch_size(i)?;
        let mut frames = Vec::new();
        for v in list(i, "images")? {
            let img = v
                .downcast::<Image>()
                .ok_or_else(|| NodeError::input("images", "expected IMAGE"))?;
            let n = img.0.dim(0).map_err(err)?;
            for k in 0..n {
                frames.push(img.0.narrow(0, k, 1).map_err(err)?);
            }
        }
        let mut out = Vec::new();
        for chunk in frames.chunks(bs) {
            let t = Tensor::cat(chunk, 0).map_err(|_| {
                NodeError::input(
                    "images",
                    format!(
                        "images batched together must have one size, got {:?}",
                        chunk.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>()
                    ),
                )
            })?;
            out.push(Value::object(Image(t)));
        }
        Ok(NodeOutput::one(Value::List(out)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(RebatchLatents)?;
    r.register(RebatchImages)?;
    Ok(())
}
