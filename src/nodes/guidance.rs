//! Guidance patches of a MODEL (`comfy_extras/nodes_model_advanced.py`'s RescaleCFG,
//! `comfy_extras/nodes_cfg.py`'s CFGNorm and CFGZeroStar): each returns a copy of the model
//! with a [`crate::sampling::cfg_patches`] entry, which every sampler's CFG applies.

use super::sd_types::SdModel;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::{CfgFunction, PostCfg};

fn patched(i: &Inputs, f: impl FnOnce(&mut SdModel)) -> Result<NodeOutput, NodeError> {
    let mut m = (*i.object::<SdModel>("model")?).clone();
    f(&mut m);
    Ok(NodeOutput::one(Value::object(m)))
}

struct RescaleCfg;
impl Node for RescaleCfg {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("RescaleCFG")
            .category("advanced/model")
            .module("comfy_extras.nodes_model_advanced")
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("multiplier")
                    .default(0.7)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let multiplier = i.float("multiplier")?;
        patched(i, |m| {
            m.cfg_patches.cfg_function = Some(CfgFunction::RescaleCfg { multiplier })
        })
    }
}

fn guidance_v3(class: &str) -> NodeSchema {
    NodeSchema::new(class)
        .category("advanced/guidance")
        .module("comfy_extras.nodes_cfg")
        .v3()
        .input(InputSpec::of("model", "MODEL"))
}

struct CfgNorm;
impl Node for CfgNorm {
    fn schema(&self) -> NodeSchema {
        guidance_v3("CFGNorm")
            .experimental()
            .input(
                InputSpec::float("strength")
                    .default(1.0)
                    .min(0.0)
                    .max(100.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("MODEL").named("patched_model"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let strength = i.float("strength")?;
        patched(i, |m| {
            m.cfg_patches.post_cfg.push(PostCfg::CfgNorm { strength })
        })
    }
}

struct CfgZeroStar;
impl Node for CfgZeroStar {
    fn schema(&self) -> NodeSchema {
        guidance_v3("CFGZeroStar").output(OutputSpec::new("MODEL").named("patched_model"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        patched(i, |m| m.cfg_patches.post_cfg.push(PostCfg::CfgZeroStar))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(RescaleCfg)?;
    r.register(CfgNorm)?;
    r.register(CfgZeroStar)?;
    Ok(())
}
