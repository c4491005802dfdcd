//! `mxSlider` of Smirnov75's ComfyUI-mxToolkit, re-implemented from its schema and observed
//! behaviour (the pack is GPL-3.0; none of its code is used). The slider itself is the pack's
//! frontend widget; the backend returns the integer or the float value.

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI-mxToolkit";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.pack(PACK).register(Slider)
}

const RANGE: i64 = 4294967296;

struct Slider;
impl Node for Slider {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("mxSlider")
            .display("Slider")
            .category("utils/mxToolkit")
            .input(InputSpec::int("Xi").default(20).min(-RANGE).max(RANGE))
            // The pack declares the float's default as the integer 20.
            .input(InputSpec::float("Xf").default(20).min(-RANGE).max(RANGE))
            .input(InputSpec::int("isfloatX").default(0).min(0).max(1))
            .output(OutputSpec::new("*").named("X"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let out = if i.int("isfloatX")? > 0 {
            Value::Float(i.float("Xf")?)
        } else {
            Value::Int(i.int("Xi")?)
        };
        Ok(NodeOutput::one(out))
    }
}
