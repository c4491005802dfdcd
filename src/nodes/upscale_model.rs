//! UpscaleModelLoader and ImageUpscaleWithModel (comfy_extras/nodes_upscale_model.py):
//! load an ESRGAN / Real-ESRGAN Compact file from `upscale_models/` and run it over an
//! IMAGE with ComfyUI's tiling (512-pixel tiles overlapping by 32, the tile halved while the
//! device runs out of memory, down to 128), then clamp to [0, 1].

use std::sync::Arc;

use super::loaders::model_path;
use crate::models::upscale::tiling::{tiled_scale, tiled_scale_steps};
use crate::models::upscale::UpscaleModel;
use crate::models::ModelError;
use crate::node::types::Image;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Payload,
    Registry, RegistryError, Value,
};

const MODULE: &str = "comfy_extras.nodes_upscale_model";

/// The UPSCALE_MODEL payload.
pub struct UpscaleModelValue(pub Arc<UpscaleModel>);

impl std::fmt::Debug for UpscaleModelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<UPSCALE_MODEL {}>", self.0.describe())
    }
}

impl Payload for UpscaleModelValue {
    fn byte_size(&self) -> usize {
        self.0.bytes
    }
}

struct UpscaleModelLoader;
impl Node for UpscaleModelLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("UpscaleModelLoader")
            .display("Load Upscale Model")
            .category("loaders")
            .module(MODULE)
            .v3()
            .input(InputSpec::combo_fn("model_name", |env| {
                env.paths.list_models("upscale_models")
            }))
            .output(OutputSpec::new("UPSCALE_MODEL"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let name = i.string("model_name")?;
        let path = model_path(ctx.env, "upscale_models", name)?;
        ctx.check_interrupt()?;
        let model = UpscaleModel::load(&path, &ctx.env.compute.device).map_err(|e| {
            let (detail, exception_type) = match e {
                ModelError::NotSupported(m) => (m, "UnsupportedModelError"),
                other => (other.to_string(), "RuntimeError"),
            };
            NodeError::Failed {
                message: format!("UpscaleModelLoader: cannot load '{name}': {detail}"),
                exception_type: exception_type.into(),
            }
        })?;
        Ok(NodeOutput::one(Value::object(UpscaleModelValue(Arc::new(
            model,
        )))))
    }
}

/// Whether a device error is an out-of-memory one (CUDA's and Metal's messages say so).
fn is_oom(e: &candle_core::Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("out of memory") || m.contains("out_of_memory")
}

/// Why a tiled run stopped: the model's error, or the node's (interrupt).
enum TileError {
    Candle(candle_core::Error),
    Node(NodeError),
}

impl From<candle_core::Error> for TileError {
    fn from(e: candle_core::Error) -> Self {
        TileError::Candle(e)
    }
}

struct ImageUpscaleWithModel;
impl Node for ImageUpscaleWithModel {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageUpscaleWithModel")
            .display("Upscale Image (using Model)")
            .category("image/upscaling")
            .module(MODULE)
            .v3()
            .input(InputSpec::of("upscale_model", "UPSCALE_MODEL"))
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<UpscaleModelValue>("upscale_model")?;
        let model = &model.0;
        let image = i.object::<Image>("image")?;
        let fail = |e: candle_core::Error| {
            NodeError::msg(format!(
                "ImageUpscaleWithModel: {} failed: {e}",
                model.describe()
            ))
        };
        let (b, h, w, c) = image.0.dims4().map_err(fail)?;
        if c != model.in_channels {
            return Err(NodeError::input(
                "image",
                format!(
                    "ImageUpscaleWithModel: the image has {c} channels; {} takes {}",
                    model.describe(),
                    model.in_channels
                ),
            ));
        }
        if model.out_channels != 3 {
            return Err(NodeError::input(
                "upscale_model",
                format!(
                    "ImageUpscaleWithModel: {} returns {} channels; IMAGE outputs have 3",
                    model.describe(),
                    model.out_channels
                ),
            ));
        }
        let device = ctx.env.compute.device.clone();
        let in_img = image
            .0
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.permute((0, 3, 1, 2)))
            .and_then(|t| t.to_device(&device))
            .map_err(fail)?;
        let overlap = 32;
        let mut tile = 512;
        let out = loop {
            let steps = (b * tiled_scale_steps(w, h, tile, overlap)) as u64;
            let mut done = 0u64;
            let ctx_ref = &*ctx;
            let run = tiled_scale(&in_img, tile, overlap, model.scale, 3, |t| {
                ctx_ref.check_interrupt().map_err(TileError::Node)?;
                let y = model.call(t)?;
                done += 1;
                ctx_ref.progress(done, steps).map_err(TileError::Node)?;
                Ok::<_, TileError>(y)
            });
            match run {
                Ok(t) => break t,
                Err(TileError::Candle(e)) if is_oom(&e) && tile / 2 >= 128 => tile /= 2,
                Err(TileError::Candle(e)) => return Err(fail(e)),
                Err(TileError::Node(e)) => return Err(e),
            }
        };
        let out = out
            .clamp(0f32, 1f32)
            .and_then(|t| t.permute((0, 2, 3, 1)))
            .and_then(|t| t.contiguous())
            .map_err(fail)?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(UpscaleModelLoader)?;
    r.register(ImageUpscaleWithModel)?;
    Ok(())
}
