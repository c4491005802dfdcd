//! Literal nodes of giriss's comfy-image-saver, re-implemented from their schemas and observed
//! behaviour (none of the pack's code is used).

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "comfy-image-saver";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(StringLiteral)?;
    p.register(IntLiteral)?;
    p.register(CfgLiteral)?;
    p.register(SeedGenerator)?;
    Ok(())
}

struct StringLiteral;
impl Node for StringLiteral {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("String Literal")
            .category("ImageSaverTools/utils")
            .input(InputSpec::string("string").default("").multiline(true))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::String(i.string("string")?.into())))
    }
}

struct IntLiteral;
impl Node for IntLiteral {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Int Literal")
            .category("ImageSaverTools/utils")
            .input(InputSpec::int("int").default(0).min(0).max(1000000))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("int")?)))
    }
}

struct CfgLiteral;
impl Node for CfgLiteral {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Cfg Literal")
            .category("ImageSaverTools/utils")
            .input(InputSpec::float("float").default(8.0).min(0.0).max(100.0))
            .output(OutputSpec::new("FLOAT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Float(i.float("float")?)))
    }
}

struct SeedGenerator;
impl Node for SeedGenerator {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Seed Generator")
            .category("ImageSaverTools/utils")
            .input(InputSpec::int("seed").default(0).min(0).max(u64::MAX))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("seed")?)))
    }
}
