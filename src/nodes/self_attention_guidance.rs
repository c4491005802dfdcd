//! SelfAttentionGuidance (`comfy_extras/nodes_sag.py`): a post-CFG patch
//! ([`PostCfg::Sag`]) that blurs the unconditional prediction where the UNet's middle-block
//! self-attention concentrates, denoises that again and moves the result away from it. Needs
//! a UNet (the attention it reads is the middle block's) and disables the cfg-1 shortcut.

use super::sd_types::SdModel;
use crate::models::diffusion::DiffusionNet;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::PostCfg;

struct SelfAttentionGuidance;
impl Node for SelfAttentionGuidance {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SelfAttentionGuidance")
            .display("Self-Attention Guidance")
            .category("_for_testing")
            .module("comfy_extras.nodes_sag")
            .v3()
            .experimental()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("scale")
                    .default(0.5)
                    .min(-2.0)
                    .max(5.0)
                    .step(0.01),
            )
            .input(
                InputSpec::float("blur_sigma")
                    .default(2.0)
                    .min(0.0)
                    .max(10.0)
                    .step(0.1),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut m = (*i.object::<SdModel>("model")?).clone();
        if !matches!(m.diffusion.base(), DiffusionNet::Unet(_)) {
            // ComfyUI's patch replaces a UNet middle-block attention that a DiT does not
            // have; sampling would then fail on the missing attention map.
            return Err(NodeError::input(
                "model",
                format!(
                    "SelfAttentionGuidance reads a UNet's middle-block self-attention; this {} \
                     model has none",
                    m.family.comfy_name()
                ),
            ));
        }
        m.cfg_patches.post_cfg.push(PostCfg::Sag {
            scale: i.float("scale")?,
            blur_sigma: i.float("blur_sigma")?,
        });
        Ok(NodeOutput::one(Value::object(m)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SelfAttentionGuidance)?;
    Ok(())
}
