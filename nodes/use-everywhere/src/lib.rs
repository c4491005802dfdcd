//! `Anything Everywhere` of chrisgoringe's cg-use-everywhere, from its schema and observed
//! behaviour (none of the pack's code is used).
//!
//! The node is frontend-driven: the pack's JavaScript wraps the editor's `graphToPrompt` and,
//! while the API prompt is built, adds real links from the node's input source to every
//! matching unconnected input in the graph. The node itself stays in the prompt, but it has no
//! outputs and is not an output node, so ComfyUI never executes it (only outputs and what they
//! depend on run); comfyrs schedules it the same way. What the backend must provide is its
//! schema in `/object_info` (a V3 node: one optional `*` input, no outputs), or the editor
//! shows the node as missing and the prompt fails validation.

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "cg-use-everywhere";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(AnythingEverywhere)?;
    p.register(SeedEverywhere)?;
    Ok(())
}

/// `Seed Everywhere` (deprecated in the pack; its frontend replaces it): a seed widget whose
/// INT output the pack's JavaScript links to every unconnected seed input.
struct SeedEverywhere;
impl Node for SeedEverywhere {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Seed Everywhere")
            .v3()
            .display("Seed Everywhere")
            .category("everywhere/deprecated")
            .description("Deprecated - should automatically be replaced")
            .deprecated()
            .input(InputSpec::int("seed").default(0).min(0).max(u64::MAX))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("seed")?)))
    }
}

struct AnythingEverywhere;
impl Node for AnythingEverywhere {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Anything Everywhere")
            .v3()
            .display("Anything Everywhere")
            .category("everywhere")
            .input(InputSpec::of("anything", "*").always_options().optional())
    }
    /// Never called by a run (nothing consumes the node); returns nothing, like the original.
    fn execute(&self, _: &mut NodeContext, _: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(Vec::new()))
    }
}
