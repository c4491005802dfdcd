//! CLIPTextEncode and CLIPSetLastLayer (nodes.py).

use super::sd_types::{CondEntry, Conditioning, SdClip};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

struct ClipTextEncode;
impl Node for ClipTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncode")
            .display("CLIP Text Encode (Prompt)")
            .category("conditioning")
            .description(
                "Encodes a text prompt using a CLIP model into an embedding that can be used to \
                 guide the diffusion model towards generating specific images.",
            )
            .input(
                InputSpec::string("text")
                    .multiline(true)
                    .opt("dynamicPrompts", true)
                    .tooltip("The text to be encoded."),
            )
            .input(
                InputSpec::of("clip", "CLIP").tooltip("The CLIP model used for encoding the text."),
            )
            .output(OutputSpec::new("CONDITIONING").tooltip(
                "A conditioning containing the embedded text used to guide the diffusion model.",
            ))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let text = i.string("text")?;
        let tokens = clip.encoder.tokenize(text);
        let (cond, pooled) = clip
            .encoder
            .encode(&tokens, clip.clip_layer)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(NodeOutput::one(Value::object(Conditioning(vec![
            CondEntry::new(cond, Some(pooled)),
        ]))))
    }
}

struct ClipSetLastLayer;
impl Node for ClipSetLastLayer {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPSetLastLayer")
            .display("CLIP Set Last Layer")
            .category("conditioning")
            .input(InputSpec::of("clip", "CLIP"))
            .input(
                InputSpec::int("stop_at_clip_layer")
                    .default(-1)
                    .min(-24)
                    .max(-1)
                    .step(1),
            )
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let layer = i.int("stop_at_clip_layer")?;
        let mut out = (*clip).clone();
        out.clip_layer = Some(layer.clamp(-24, -1) as i32);
        Ok(NodeOutput::one(Value::object(out)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ClipTextEncode)?;
    r.register(ClipSetLastLayer)?;
    Ok(())
}
