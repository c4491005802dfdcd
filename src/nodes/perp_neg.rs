//! Perp-Neg (`comfy_extras/nodes_perpneg.py`): `PerpNeg`, the deprecated MODEL patch (a CFG
//! function that also evaluates an empty conditioning), and `PerpNegGuider`, the guider that
//! evaluates positive, negative and empty conditioning in one batch. Both combine with
//! [`crate::sampling::guidance_fns::perp_neg`]: the negative's direction from the empty
//! prediction loses its component along the positive's before it is subtracted.

use super::sampling::cfg_input;
use super::sd_types::{Conditioning, GuiderPayload, SdModel};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::CfgFunction;

fn neg_scale() -> InputSpec {
    InputSpec::float("neg_scale")
        .default(1.0)
        .min(0.0)
        .max(100.0)
        .step(0.01)
}

struct PerpNeg;
impl Node for PerpNeg {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PerpNeg")
            .display("Perp-Neg (DEPRECATED by PerpNegGuider)")
            .category("_for_testing")
            .module("comfy_extras.nodes_perpneg")
            .v3()
            .experimental()
            .deprecated()
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::of("empty_conditioning", "CONDITIONING"))
            .input(neg_scale())
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let empty = (*i.object::<Conditioning>("empty_conditioning")?).clone();
        if empty.0.is_empty() {
            return Err(NodeError::input(
                "empty_conditioning",
                "the conditioning has no entries; PerpNeg needs one to evaluate",
            ));
        }
        let mut m = (*i.object::<SdModel>("model")?).clone();
        m.cfg_patches.cfg_function = Some(CfgFunction::PerpNeg {
            neg_scale: i.float("neg_scale")?,
        });
        m.empty_conditioning = Some(empty);
        Ok(NodeOutput::one(Value::object(m)))
    }
}

struct PerpNegGuider;
impl Node for PerpNegGuider {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PerpNegGuider")
            .category("_for_testing")
            .module("comfy_extras.nodes_perpneg")
            .v3()
            .experimental()
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(InputSpec::of("empty_conditioning", "CONDITIONING"))
            .input(cfg_input())
            .input(neg_scale())
            .output(OutputSpec::new("GUIDER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::object(GuiderPayload {
            model: (*i.object::<SdModel>("model")?).clone(),
            positive: (*i.object::<Conditioning>("positive")?).clone(),
            negative: Some((*i.object::<Conditioning>("negative")?).clone()),
            cfg: i.float("cfg")?,
            dual: None,
            perp_neg: Some((
                (*i.object::<Conditioning>("empty_conditioning")?).clone(),
                i.float("neg_scale")?,
            )),
        })))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(PerpNeg)?;
    r.register(PerpNegGuider)?;
    Ok(())
}
