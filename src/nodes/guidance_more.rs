//! Mahiro (comfy_extras/nodes_mahiro.py, a post-CFG patch) and RenormCFG
//! (comfy_extras/nodes_lumina2.py, a CFG function): copies of the model carrying
//! [`crate::sampling::cfg_patches`] entries whose arithmetic is in
//! [`crate::sampling::guidance_fns`].

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

struct Mahiro;
impl Node for Mahiro {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Mahiro")
            .display("Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)")
            .category("_for_testing")
            .description(
                "Modify the guidance to scale more on the 'direction' of the positive prompt \
                 rather than the difference between the negative prompt.",
            )
            .module("comfy_extras.nodes_mahiro")
            .v3()
            .experimental()
            .input(InputSpec::of("model", "MODEL"))
            .output(OutputSpec::new("MODEL").named("patched_model"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        patched(i, |m| m.cfg_patches.post_cfg.push(PostCfg::Mahiro))
    }
}

struct RenormCfg;
impl Node for RenormCfg {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("RenormCFG")
            .category("advanced/model")
            .module("comfy_extras.nodes_lumina2")
            .v3()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("cfg_trunc")
                    .default(100)
                    .min(0.0)
                    .max(100.0)
                    .step(0.01),
            )
            .input(
                InputSpec::float("renorm_cfg")
                    .default(1.0)
                    .min(0.0)
                    .max(100.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (cfg_trunc, renorm_cfg) = (i.float("cfg_trunc")?, i.float("renorm_cfg")?);
        patched(i, |m| {
            m.cfg_patches.cfg_function = Some(CfgFunction::RenormCfg {
                cfg_trunc,
                renorm_cfg,
            })
        })
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(Mahiro)?;
    r.register(RenormCfg)?;
    Ok(())
}
