//! The SD3 / SD3.5 nodes of comfy_extras/nodes_sd3.py that are not loaders or latents
//! (TripleCLIPLoader lives with the loaders, EmptySD3LatentImage with the latents,
//! ModelSamplingSD3 with the model-sampling nodes): CLIPTextEncodeSD3, separate prompts
//! for SD3's CLIP-L, CLIP-G and T5-XXL, and SkipLayerGuidanceSD3, a post-CFG patch that
//! evaluates the positive prompt again with some joint blocks skipped.

use super::sd_types::{CondEntry, Conditioning, SdClip, SdModel};
use crate::models::conditioner::Conditioner;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::PostCfg;

fn prompt(name: &str) -> InputSpec {
    InputSpec::string(name)
        .multiline(true)
        .opt("dynamicPrompts", true)
}

/// CLIPTextEncodeSD3's output: each prompt for its encoder (`empty_padding` "none": an
/// empty prompt gives its encoder no tokens; "empty_prompt": it is encoded as ""), CLIP-L
/// and CLIP-G padded to the same window count, encoded as SD3ClipModel does.
pub fn encode_sd3(
    clip: &SdClip,
    clip_l: &str,
    clip_g: &str,
    t5xxl: &str,
    empty_padding: &str,
) -> Result<Conditioning, NodeError> {
    let pad = match empty_padding {
        "none" => false,
        "empty_prompt" => true,
        other => {
            return Err(NodeError::input(
                "empty_padding",
                format!("{other:?} is not one of none, empty_prompt"),
            ))
        }
    };
    let Conditioner::Sd3(enc) = &clip.encoder else {
        return Err(NodeError::input(
            "clip",
            format!(
                "CLIPTextEncodeSD3 needs an SD3 CLIP (TripleCLIPLoader, DualCLIPLoader or \
                 CLIPLoader type sd3, or an SD3 checkpoint); this one is {}",
                clip.encoder.kind()
            ),
        ));
    };
    let tokens = enc.tokenize_sd3(clip_l, clip_g, t5xxl, pad);
    let (cond, pooled) = enc
        .encode(&tokens, clip.clip_layer)
        .map_err(|e| NodeError::input("clip", e.to_string()))?;
    Ok(Conditioning(vec![CondEntry::new(cond, Some(pooled))]))
}

struct ClipTextEncodeSd3;
impl Node for ClipTextEncodeSd3 {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncodeSD3")
            .v3()
            .module("comfy_extras.nodes_sd3")
            .category("advanced/conditioning")
            .input(InputSpec::of("clip", "CLIP"))
            .input(prompt("clip_l"))
            .input(prompt("clip_g"))
            .input(prompt("t5xxl"))
            .input(InputSpec::combo("empty_padding", &["none", "empty_prompt"]))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let clip = i.object::<SdClip>("clip")?;
        let c = encode_sd3(
            &clip,
            i.string("clip_l")?,
            i.string("clip_g")?,
            i.string("t5xxl")?,
            i.string("empty_padding")?,
        )?;
        Ok(NodeOutput::one(Value::object(c)))
    }
}

/// The layer numbers in `text` (`re.findall(r'\d+', layers)`); numbers too large for a
/// block index can never match a block and are dropped.
pub fn parse_layers(text: &str) -> Vec<usize> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .filter_map(|t| t.parse::<usize>().ok())
        .collect()
}

struct SkipLayerGuidanceSd3;
impl Node for SkipLayerGuidanceSd3 {
    fn schema(&self) -> NodeSchema {
        let percent = |name: &str, default: f64| {
            InputSpec::float(name)
                .default(default)
                .min(0.0)
                .max(1.0)
                .step(0.001)
        };
        NodeSchema::new("SkipLayerGuidanceSD3")
            .v3()
            .experimental()
            .module("comfy_extras.nodes_sd3")
            .category("advanced/guidance")
            .description(
                "Generic version of SkipLayerGuidance node that can be used on every DiT model.",
            )
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::string("layers")
                    .default("7, 8, 9")
                    .multiline(false),
            )
            .input(
                InputSpec::float("scale")
                    .default(3.0)
                    .min(0.0)
                    .max(10.0)
                    .step(0.1),
            )
            .input(percent("start_percent", 0.01))
            .input(percent("end_percent", 0.15))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let layers = parse_layers(i.string("layers")?);
        if layers.is_empty() {
            return Ok(NodeOutput::one(Value::object((*model).clone())));
        }
        let percent = |name: &str| -> Result<f64, NodeError> {
            let v = i.float(name)?;
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(NodeError::input(name, format!("{v} is outside 0..=1")))
            }
        };
        let mut m = (*model).clone();
        m.cfg_patches.post_cfg.push(PostCfg::SkipLayerGuidance {
            layers,
            single_layers: Vec::new(),
            scale: i.float("scale")?,
            sigma_start: m.sampling.percent_to_sigma(percent("start_percent")?),
            sigma_end: m.sampling.percent_to_sigma(percent("end_percent")?),
            rescaling_scale: 0.0,
        });
        Ok(NodeOutput::one(Value::object(m)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ClipTextEncodeSd3)?;
    r.register(SkipLayerGuidanceSd3)?;
    Ok(())
}
