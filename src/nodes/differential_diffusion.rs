//! DifferentialDiffusion (`comfy_extras/nodes_differential_diffusion.py`): returns the MODEL
//! with a denoise-mask function ([`crate::sampling::differential_diffusion`]) that every
//! masked-denoising sampler path applies at each model call, for any family.

use super::sd_types::SdModel;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::differential_diffusion::DifferentialDiffusion;

struct DifferentialDiffusionNode;
impl Node for DifferentialDiffusionNode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DifferentialDiffusion")
            .display("Differential Diffusion")
            .category("_for_testing")
            .module("comfy_extras.nodes_differential_diffusion")
            .v3()
            .experimental()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("strength")
                    .default(1.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01)
                    .optional(),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut m = (*i.object::<SdModel>("model")?).clone();
        let strength = match i.get("strength") {
            None => 1.0,
            Some(_) => i.float("strength")?,
        };
        if !strength.is_finite() {
            return Err(NodeError::input(
                "strength",
                format!("{strength} is not a finite number (allowed: 0 to 1)"),
            ));
        }
        m.denoise_mask_fn = Some(DifferentialDiffusion { strength });
        Ok(NodeOutput::one(Value::object(m)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(DifferentialDiffusionNode)
}
