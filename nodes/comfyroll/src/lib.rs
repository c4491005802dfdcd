//! Text nodes of Suzie1's ComfyUI_Comfyroll_CustomNodes, re-implemented from their schemas and
//! observed behaviour (none of the pack's code is used). Each returns its text plus the pack's
//! help URL (`show_help`), as the originals do.

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI_Comfyroll_CustomNodes";

const WIKI: &str = "https://github.com/Suzie1/ComfyUI_Comfyroll_CustomNodes/wiki/";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(PromptText)?;
    p.register(Text)?;
    Ok(())
}

struct PromptText;
impl Node for PromptText {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Prompt Text")
            .display("\u{2699}\u{fe0f} CR Prompt Text")
            .category("\u{1f9e9} Comfyroll Studio/\u{2728} Essential/\u{1f4e6} Core")
            .input(
                InputSpec::string("prompt")
                    .default("prompt")
                    .multiline(true),
            )
            .output(OutputSpec::new("STRING").named("prompt"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::String(i.string("prompt")?.into()),
            Value::String(format!("{WIKI}Core-Nodes#cr-prompt-text")),
        ]))
    }
}

struct Text;
impl Node for Text {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Text")
            .display("\u{1f524} CR Text")
            .category("\u{1f9e9} Comfyroll Studio/\u{1f6e0}\u{fe0f} Utils/\u{1f524} Text")
            .input(InputSpec::string("text").default("").multiline(true))
            .output(OutputSpec::new("*").named("text"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::String(i.string("text")?.into()),
            Value::String(format!("{WIKI}Other-Nodes#cr-text")),
        ]))
    }
}
