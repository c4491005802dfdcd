//! "Epsilon Scaling" (comfy_extras/nodes_eps.py, exposure-bias correction of arXiv
//! 2308.15321, uniform schedule): a post-CFG patch dividing the predicted noise by
//! `scaling_factor` at every step ([`PostCfg::EpsilonScaling`]).

use super::sd_types::SdModel;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::PostCfg;

struct EpsilonScaling;
impl Node for EpsilonScaling {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Epsilon Scaling")
            .category("model_patches/unet")
            .module("comfy_extras.nodes_eps")
            .v3()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("scaling_factor")
                    .default(1.005)
                    .min(0.5)
                    .max(1.5)
                    .step(0.001)
                    .opt("display", "number"),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut factor = i.float("scaling_factor")?;
        if factor == 0.0 {
            // As ComfyUI: no division by zero.
            factor = 1e-9;
        }
        let mut m = (*i.object::<SdModel>("model")?).clone();
        m.cfg_patches
            .post_cfg
            .push(PostCfg::EpsilonScaling { factor });
        Ok(NodeOutput::one(Value::object(m)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(EpsilonScaling)?;
    Ok(())
}
