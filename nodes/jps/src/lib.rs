//! `Text Concatenate (JPS)` of JPS-GER's ComfyUI_JPS-Nodes, re-implemented from its schema and
//! observed behaviour (none of the pack's code is used).

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI_JPS-Nodes";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(TextConcatenate)?;
    p.register(TextPrompt)?;
    p.register(IntegerSwitch)?;
    Ok(())
}

struct TextPrompt;
impl Node for TextPrompt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Text Prompt (JPS)")
            .category("JPS Nodes/Text")
            .input(
                InputSpec::string("text")
                    .multiline(true)
                    .opt("placeholder", "Prompt Text"),
            )
            .output(OutputSpec::new("STRING").named("text"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::String(i.string("text")?.into())))
    }
}

const TEXTS: [&str; 5] = ["text1", "text2", "text3", "text4", "text5"];

struct TextConcatenate;
impl Node for TextConcatenate {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new("Text Concatenate (JPS)")
            .category("JPS Nodes/Text")
            .input(InputSpec::combo("delimiter", &["none", "space", "comma"]));
        for t in TEXTS {
            s = s.input(InputSpec::string(t).opt("forceInput", true).optional());
        }
        s.output(OutputSpec::new("STRING").named("text"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let delim = match i.string("delimiter")? {
            "space" => " ",
            "comma" => ", ",
            _ => "",
        };
        // Absent and empty texts are skipped; the rest are joined by the delimiter.
        let mut parts = Vec::new();
        for t in TEXTS {
            if i.get(t).is_some() {
                let s = i.string(t)?;
                if !s.is_empty() {
                    parts.push(s);
                }
            }
        }
        Ok(NodeOutput::one(Value::String(parts.join(delim))))
    }
}

const INTS: [&str; 5] = ["int_1", "int_2", "int_3", "int_4", "int_5"];

/// `Integer Switch (JPS)`: `int_N` for select N in 2..=5, otherwise `int_1`; an unconnected
/// choice gives None (a JSON null), as in the pack.
struct IntegerSwitch;
impl Node for IntegerSwitch {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new("Integer Switch (JPS)")
            .category("JPS Nodes/Switches")
            .input(InputSpec::int("select").always_options());
        for n in INTS {
            s = s.input(InputSpec::int(n).always_options().optional());
        }
        s.output(OutputSpec::new("INT").named("int_out"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let k = i.int("select")?;
        let name = if (2..=5).contains(&k) {
            INTS[k as usize - 1]
        } else {
            INTS[0]
        };
        let v = i
            .get(name)
            .cloned()
            .unwrap_or(Value::Json(serde_json::Value::Null));
        Ok(NodeOutput::one(v))
    }
}
