//! CLIPTextEncodeSDXL and CLIPTextEncodeSDXLRefiner (comfy_extras/nodes_clip_sdxl.py): SDXL
//! prompts with the size and aesthetic conditioning the UNet's ADM vector is built from.

use super::sd_types::{CondEntry, Conditioning, SdClip};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

const MAX_RESOLUTION: i64 = 16384;

fn size(name: &str, default: i64) -> InputSpec {
    InputSpec::int(name)
        .default(default)
        .min(0)
        .max(MAX_RESOLUTION)
}

fn prompt(name: &str) -> InputSpec {
    InputSpec::string(name)
        .multiline(true)
        .opt("dynamicPrompts", true)
}

fn model_error(e: crate::models::ModelError) -> NodeError {
    NodeError::msg(e.to_string())
}

struct ClipTextEncodeSdxl;
impl Node for ClipTextEncodeSdxl {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncodeSDXL")
            .category("advanced/conditioning")
            .input(InputSpec::of("clip", "CLIP"))
            .input(size("width", 1024))
            .input(size("height", 1024))
            .input(size("crop_w", 0))
            .input(size("crop_h", 0))
            .input(size("target_width", 1024))
            .input(size("target_height", 1024))
            .input(prompt("text_g"))
            .input(prompt("text_l"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let tokens = clip
            .encoder
            .tokenize_sdxl(i.string("text_g")?, i.string("text_l")?)
            .map_err(|e| NodeError::input("clip", e.to_string()))?;
        let (cond, pooled) = clip
            .encoder
            .encode(&tokens, clip.clip_layer)
            .map_err(model_error)?;
        let mut entry = CondEntry::new(cond, Some(pooled));
        let o = &mut entry.opts;
        o.width = Some(i.int("width")? as f64);
        o.height = Some(i.int("height")? as f64);
        o.crop_w = Some(i.int("crop_w")? as f64);
        o.crop_h = Some(i.int("crop_h")? as f64);
        o.target_width = Some(i.int("target_width")? as f64);
        o.target_height = Some(i.int("target_height")? as f64);
        Ok(NodeOutput::one(Value::object(Conditioning(vec![entry]))))
    }
}

struct ClipTextEncodeSdxlRefiner;
impl Node for ClipTextEncodeSdxlRefiner {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncodeSDXLRefiner")
            .category("advanced/conditioning")
            .input(
                InputSpec::float("ascore")
                    .default(6.0)
                    .min(0.0)
                    .max(1000.0)
                    .step(0.01),
            )
            .input(size("width", 1024))
            .input(size("height", 1024))
            .input(prompt("text"))
            .input(InputSpec::of("clip", "CLIP"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let tokens = clip.encoder.tokenize(i.string("text")?);
        let (cond, pooled) = clip
            .encoder
            .encode(&tokens, clip.clip_layer)
            .map_err(model_error)?;
        let mut entry = CondEntry::new(cond, Some(pooled));
        entry.opts.aesthetic_score = Some(i.float("ascore")?);
        entry.opts.width = Some(i.int("width")? as f64);
        entry.opts.height = Some(i.int("height")? as f64);
        Ok(NodeOutput::one(Value::object(Conditioning(vec![entry]))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ClipTextEncodeSdxlRefiner)?;
    r.register(ClipTextEncodeSdxl)?;
    Ok(())
}
