//! MODEL patches of the UNet's internals (`comfy_extras/nodes_freelunch.py`'s FreeU and
//! FreeU_V2): each returns a copy of the model with a [`crate::sampling::unet_patches`] entry,
//! which the UNet applies on its skip connections at every evaluation.

use super::sd_types::SdModel;
use crate::models::diffusion::DiffusionNet;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::unet_patches::FreeU;

fn factor(name: &str, default: f64) -> InputSpec {
    InputSpec::float(name)
        .default(default)
        .min(0.0)
        .max(10.0)
        .step(0.01)
}

fn freeu_schema(class: &str, b1: f64, b2: f64) -> NodeSchema {
    NodeSchema::new(class)
        .category("model_patches/unet")
        .module("comfy_extras.nodes_freelunch")
        .input(InputSpec::of("model", "MODEL"))
        .input(factor("b1", b1))
        .input(factor("b2", b2))
        .input(factor("s1", 0.9))
        .input(factor("s2", 0.2))
        .output(OutputSpec::new("MODEL"))
}

fn freeu_execute(class: &str, i: &Inputs, v2: bool) -> Result<NodeOutput, NodeError> {
    let mut m = (*i.object::<SdModel>("model")?).clone();
    let model_channels = match m.diffusion.base() {
        DiffusionNet::Unet(u) => u.config().model_channels,
        _ => {
            return Err(NodeError::input(
                "model",
                format!(
                    "{class} patches a UNet's skip connections; this {} model has none",
                    m.family.comfy_name()
                ),
            ))
        }
    };
    m.unet_patches.output_block.push(FreeU {
        b1: i.float("b1")?,
        b2: i.float("b2")?,
        s1: i.float("s1")?,
        s2: i.float("s2")?,
        v2,
        model_channels,
    });
    Ok(NodeOutput::one(Value::object(m)))
}

struct FreeUNode;
impl Node for FreeUNode {
    fn schema(&self) -> NodeSchema {
        freeu_schema("FreeU", 1.1, 1.2)
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        freeu_execute("FreeU", i, false)
    }
}

struct FreeUV2Node;
impl Node for FreeUV2Node {
    fn schema(&self) -> NodeSchema {
        freeu_schema("FreeU_V2", 1.3, 1.4)
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        freeu_execute("FreeU_V2", i, true)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(FreeUNode)?;
    r.register(FreeUV2Node)?;
    Ok(())
}
