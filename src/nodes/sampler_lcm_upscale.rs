//! SamplerLCMUpscale (`comfy_extras/nodes_advanced_samplers.py`): the LCM sampler that
//! enlarges the latent over its first steps ([`LcmUpscale`], run by
//! `crate::sampling::samplers::k_diffusion::lcm_upscale`).

use super::sd_types::SamplerPayload;
use crate::image_ops::UpscaleMethod;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::samplers::{LcmUpscale, SamplerExtra, SamplerKind};

/// The node's combo order (not LatentUpscale's).
const METHODS: [&str; 5] = ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"];

struct SamplerLcmUpscale;
impl Node for SamplerLcmUpscale {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SamplerLCMUpscale")
            .category("sampling/custom_sampling/samplers")
            .module("comfy_extras.nodes_advanced_samplers")
            .v3()
            .input(
                InputSpec::float("scale_ratio")
                    .default(1.0)
                    .min(0.1)
                    .max(20.0)
                    .step(0.01),
            )
            .input(
                InputSpec::int("scale_steps")
                    .default(-1)
                    .min(-1)
                    .max(1000)
                    .step(1),
            )
            .input(InputSpec::combo("upscale_method", &METHODS))
            .output(OutputSpec::new("SAMPLER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let name = i.string("upscale_method")?;
        let method = UpscaleMethod::from_name(name)
            .filter(|_| METHODS.contains(&name))
            .ok_or_else(|| {
                NodeError::input(
                    "upscale_method",
                    format!("{name:?} is not one of {}", METHODS.join(", ")),
                )
            })?;
        let steps = i.int("scale_steps")?;
        let extra = SamplerExtra {
            lcm_upscale: Some(LcmUpscale {
                total_upscale: i.float("scale_ratio")?,
                // A negative count means "half the steps" (ComfyUI's None).
                upscale_steps: usize::try_from(steps).ok(),
                method,
            }),
            ..Default::default()
        };
        Ok(NodeOutput::one(Value::object(SamplerPayload(
            SamplerKind::Lcm,
            extra,
        ))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SamplerLcmUpscale)?;
    Ok(())
}
