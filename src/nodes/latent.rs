//! Latent creation, batches and the inpainting mask: EmptyLatentImage, LatentFromBatch,
//! RepeatLatentBatch, SetLatentNoiseMask (nodes.py), EmptySD3LatentImage (nodes_sd3.py: the
//! 16-channel latent of SD3 and Flux). Resizing and compositing latents is in
//! `latent_transform`.

use crate::node::types::{Latent, Mask};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use candle_core::{DType, Device, Tensor};

const MAX_RESOLUTION: i64 = 16384;

/// A non-negative size input as usize.
fn dim(i: &Inputs, n: &str) -> Result<usize, NodeError> {
    let v = i.int(n)?;
    if v < 0 {
        return Err(NodeError::input(n, "must not be negative"));
    }
    Ok(v as usize)
}

struct EmptySd3LatentImage;
impl Node for EmptySd3LatentImage {
    fn schema(&self) -> NodeSchema {
        let size = |n: &str| {
            InputSpec::int(n)
                .default(1024)
                .min(16)
                .max(MAX_RESOLUTION)
                .step(16)
        };
        NodeSchema::new("EmptySD3LatentImage")
            .v3()
            .module("comfy_extras.nodes_sd3")
            .category("latent/sd3")
            .input(size("width"))
            .input(size("height"))
            .input(InputSpec::int("batch_size").default(1).min(1).max(4096))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (w, h, b) = (dim(i, "width")?, dim(i, "height")?, dim(i, "batch_size")?);
        let t = Tensor::zeros((b, 16, h / 8, w / 8), DType::F32, &Device::Cpu)?;
        Ok(NodeOutput::one(Value::object(Latent::new(t))))
    }
}

struct EmptyLatentImage;
impl Node for EmptyLatentImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptyLatentImage")
            .display("Empty Latent Image")
            .category("latent")
            .description("Create a new batch of empty latent images to be denoised via sampling.")
            .input(
                InputSpec::int("width")
                    .default(512)
                    .min(16)
                    .max(MAX_RESOLUTION)
                    .step(8)
                    .tooltip("The width of the latent images in pixels."),
            )
            .input(
                InputSpec::int("height")
                    .default(512)
                    .min(16)
                    .max(MAX_RESOLUTION)
                    .step(8)
                    .tooltip("The height of the latent images in pixels."),
            )
            .input(
                InputSpec::int("batch_size")
                    .default(1)
                    .min(1)
                    .max(4096)
                    .tooltip("The number of latent images in the batch."),
            )
            .output(OutputSpec::new("LATENT").tooltip("The empty latent image batch."))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (w, h, b) = (dim(i, "width")?, dim(i, "height")?, dim(i, "batch_size")?);
        let t = Tensor::zeros((b, 4, h / 8, w / 8), DType::F32, &Device::Cpu)?;
        Ok(NodeOutput::one(Value::object(Latent::new(t))))
    }
}

/// `tensor.repeat(n, 1, 1, ...)`: the whole batch tiled `n` times along dim 0.
fn tile_batch(t: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let mut reps = vec![1usize; t.rank()];
    reps[0] = n;
    t.repeat(reps)
}

/// LatentFromBatch: `length` samples starting at `batch_index`, both clamped into the batch
/// like ComfyUI. A noise mask of batch 1 is kept whole; a shorter mask batch is tiled to the
/// samples' batch before slicing. `batch_index` records which seeds the samples are.
pub fn latent_from_batch(
    latent: &Latent,
    batch_index: usize,
    length: usize,
) -> Result<Latent, NodeError> {
    let b = latent.samples.dim(0)?;
    if b == 0 {
        return Err(NodeError::input("samples", "the latent batch is empty"));
    }
    let start = batch_index.min(b - 1);
    let len = length.min(b - start);
    let samples = latent.samples.narrow(0, start, len)?.contiguous()?;
    let noise_mask = match &latent.noise_mask {
        None => None,
        Some(m) => {
            let mb = m.dim(0)?;
            if mb == 1 {
                Some(m.clone())
            } else {
                let m = if mb < b {
                    tile_batch(m, b.div_ceil(mb))?.narrow(0, 0, b)?
                } else {
                    m.clone()
                };
                let end = (start + len).min(m.dim(0)?);
                Some(m.narrow(0, start, end - start)?.contiguous()?)
            }
        }
    };
    let batch_index = match &latent.batch_index {
        None => (start..start + len).map(|v| v as i64).collect(),
        Some(ids) => {
            let end = (start + len).min(ids.len());
            ids.get(start..end).unwrap_or_default().to_vec()
        }
    };
    Ok(Latent {
        samples,
        noise_mask,
        batch_index: Some(batch_index),
    })
}

/// RepeatLatentBatch: the batch tiled `amount` times. A noise mask with a batch above 1 is tiled
/// too; `batch_index` continues past the original range so every copy gets new seeds.
pub fn repeat_latent_batch(latent: &Latent, amount: usize) -> Result<Latent, NodeError> {
    let samples = tile_batch(&latent.samples, amount)?;
    let noise_mask = match &latent.noise_mask {
        Some(m) if m.dim(0)? > 1 => Some(tile_batch(m, amount)?),
        other => other.clone(),
    };
    let batch_index = latent.batch_index.as_ref().map(|ids| {
        let (lo, hi) = (
            ids.iter().copied().min().unwrap_or(0),
            ids.iter().copied().max().unwrap_or(0),
        );
        let offset = hi - lo + 1;
        let mut out = ids.clone();
        for i in 1..amount as i64 {
            out.extend(ids.iter().map(|x| x + i * offset));
        }
        out
    });
    Ok(Latent {
        samples,
        noise_mask,
        batch_index,
    })
}

fn latent_input(i: &Inputs, name: &str) -> Result<std::sync::Arc<Latent>, NodeError> {
    let l = i.object::<Latent>(name)?;
    if l.samples.rank() == 0 {
        return Err(NodeError::input(name, "the latent has no batch dimension"));
    }
    Ok(l)
}

struct LatentFromBatch;
impl Node for LatentFromBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentFromBatch")
            .display("Latent From Batch")
            .category("latent/batch")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::int("batch_index").default(0).min(0).max(63))
            .input(InputSpec::int("length").default(1).min(1).max(64))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let latent = latent_input(i, "samples")?;
        let index = usize::try_from(i.int("batch_index")?)
            .map_err(|_| NodeError::input("batch_index", "must not be negative"))?;
        let length = usize::try_from(i.int("length")?)
            .ok()
            .filter(|&l| l >= 1)
            .ok_or_else(|| NodeError::input("length", "must be at least 1"))?;
        let out = latent_from_batch(&latent, index, length)?;
        Ok(NodeOutput::one(Value::object(out)))
    }
}

struct RepeatLatentBatch;
impl Node for RepeatLatentBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("RepeatLatentBatch")
            .display("Repeat Latent Batch")
            .category("latent/batch")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::int("amount").default(1).min(1).max(64))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let latent = latent_input(i, "samples")?;
        let amount = usize::try_from(i.int("amount")?)
            .ok()
            .filter(|&a| a >= 1)
            .ok_or_else(|| NodeError::input("amount", "must be at least 1"))?;
        Ok(NodeOutput::one(Value::object(repeat_latent_batch(
            &latent, amount,
        )?)))
    }
}

struct SetLatentNoiseMask;
impl Node for SetLatentNoiseMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SetLatentNoiseMask")
            .display("Set Latent Noise Mask")
            .category("latent/inpaint")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::of("mask", "MASK"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let latent = latent_input(i, "samples")?;
        let mask = i.object::<Mask>("mask")?;
        let dims = mask.0.dims();
        if dims.len() < 2 || mask.0.elem_count() == 0 {
            return Err(NodeError::input(
                "mask",
                format!("expected a MASK tensor [B, H, W], got shape {dims:?}"),
            ));
        }
        let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        // Stored as [B, 1, H, W]; the sampler resizes it to the latent.
        let noise_mask = mask.0.to_dtype(DType::F32)?.reshape(((), 1, h, w))?;
        let mut out = (*latent).clone();
        out.noise_mask = Some(noise_mask);
        Ok(NodeOutput::one(Value::object(out)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(EmptyLatentImage)?;
    r.register(EmptySd3LatentImage)?;
    r.register(LatentFromBatch)?;
    r.register(RepeatLatentBatch)?;
    r.register(SetLatentNoiseMask)?;
    Ok(())
}
