//! CLIPTextEncodeFlux (comfy_extras/nodes_flux.py): separate prompts for Flux's CLIP-L
//! (the pooled output) and T5-XXL (the conditioning), plus the distilled guidance the
//! model takes as an input (the `guidance` key FluxGuidance also sets).

use super::sd_types::{CondEntry, Conditioning, SdClip};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::conds::Guidance;

fn prompt(name: &str) -> InputSpec {
    InputSpec::string(name)
        .multiline(true)
        .opt("dynamicPrompts", true)
}

/// CLIPTextEncodeFlux's output: T5-XXL's encoding of `t5xxl`, CLIP-L's pooled output of
/// `clip_l`, and `guidance`.
pub fn encode_flux(
    clip: &SdClip,
    clip_l: &str,
    t5xxl: &str,
    guidance: f64,
) -> Result<Conditioning, NodeError> {
    let tokens = clip
        .encoder
        .tokenize_flux(clip_l, t5xxl)
        .map_err(|e| NodeError::input("clip", e.to_string()))?;
    let (cond, pooled) = clip
        .encoder
        .encode(&tokens, clip.clip_layer)
        .map_err(|e| NodeError::input("t5xxl", e.to_string()))?;
    let mut entry = CondEntry::new(cond, Some(pooled));
    entry.opts.guidance = Some(Guidance::Value(guidance));
    Ok(Conditioning(vec![entry]))
}

struct ClipTextEncodeFlux;
impl Node for ClipTextEncodeFlux {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncodeFlux")
            .v3()
            .module("comfy_extras.nodes_flux")
            .category("advanced/conditioning/flux")
            .input(InputSpec::of("clip", "CLIP"))
            .input(prompt("clip_l"))
            .input(prompt("t5xxl"))
            .input(
                InputSpec::float("guidance")
                    .default(3.5)
                    .min(0.0)
                    .max(100.0)
                    .step(0.1),
            )
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let c = encode_flux(
            &clip,
            i.string("clip_l")?,
            i.string("t5xxl")?,
            i.float("guidance")?,
        )?;
        Ok(NodeOutput::one(Value::object(c)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ClipTextEncodeFlux)?;
    Ok(())
}
