//! LatentOperationSharpen (comfy_extras/nodes_latent.py): a LATENT_OPERATION sharpening the
//! direction of each pixel's channel vector like ImageSharpen, its length kept
//! ([`LatentOperation::Sharpen`]); applied by LatentApplyOperation or, per step, by
//! LatentApplyOperationCFG.

use super::latent_ops::LatentOperationPayload;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::LatentOperation;

struct LatentOperationSharpen;
impl Node for LatentOperationSharpen {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentOperationSharpen")
            .category("latent/advanced/operations")
            .module("comfy_extras.nodes_latent")
            .v3()
            .experimental()
            .input(
                InputSpec::int("sharpen_radius")
                    .default(9)
                    .min(1)
                    .max(31)
                    .step(1),
            )
            .input(
                InputSpec::float("sigma")
                    .default(1.0)
                    .min(0.1)
                    .max(10.0)
                    .step(0.1),
            )
            .input(
                InputSpec::float("alpha")
                    .default(0.1)
                    .min(0.0)
                    .max(5.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("LATENT_OPERATION"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let r = i.int("sharpen_radius")?;
        let radius = usize::try_from(r)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| NodeError::input("sharpen_radius", format!("must be >= 1, got {r}")))?;
        let (sigma, alpha) = (i.float("sigma")?, i.float("alpha")?);
        Ok(NodeOutput::one(Value::object(LatentOperationPayload(
            LatentOperation::Sharpen {
                radius,
                sigma,
                alpha,
            },
        ))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(LatentOperationSharpen)?;
    Ok(())
}
