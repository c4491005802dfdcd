//! Backend nodes of pythongosssss's ComfyUI-Custom-Scripts, re-implemented from their schemas
//! and observed behaviour (none of the pack's code is used).

mod expr;

use comfyrs::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Registry, RegistryError, Value,
};
use serde_json::{json, Map};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI-Custom-Scripts";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(ShowText)?;
    p.register(StringFunction)?;
    p.register(expr::MathExpression)?;
    p.register(ReroutePrimitive)?;
    Ok(())
}

struct ShowText;
impl Node for ShowText {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ShowText|pysssss")
            .display("Show Text \u{1f40d}")
            .category("utils")
            .input(InputSpec::string("text").opt("forceInput", true))
            .hidden(Hidden::UniqueId)
            .hidden(Hidden::ExtraPngInfo)
            .input_is_list()
            .output(OutputSpec::new("STRING").list())
            .output_node()
    }
    /// Shows every text of the (list) input and passes the list on.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let texts: Vec<Value> = match i.require("text")? {
            Value::List(items) => items.clone(),
            v => vec![v.clone()],
        };
        let mut shown = Vec::new();
        for t in &texts {
            match t {
                Value::String(s) => shown.push(json!(s)),
                other => {
                    return Err(NodeError::input(
                        "text",
                        format!("expected STRING, got {}", other.kind()),
                    ))
                }
            }
        }
        let mut ui = Map::new();
        ui.insert("text".into(), json!(shown));
        Ok(NodeOutput::one(Value::List(texts)).with_ui(ui))
    }
}

fn text_in(name: &str) -> InputSpec {
    InputSpec::string(name)
        .multiline(true)
        .opt("dynamicPrompts", false)
        .optional()
}

struct StringFunction;
impl Node for StringFunction {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringFunction|pysssss")
            .display("String Function \u{1f40d}")
            .category("utils")
            .input(InputSpec::combo("action", &["append", "replace"]).always_options())
            .input(InputSpec::combo("tidy_tags", &["yes", "no"]).always_options())
            .input(text_in("text_a"))
            .input(text_in("text_b"))
            .input(text_in("text_c"))
            .output(OutputSpec::new("STRING"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let opt = |n: &str| -> Result<&str, NodeError> {
            match i.get(n) {
                None => Ok(""),
                Some(_) => i.string(n),
            }
        };
        let (a, b, c) = (opt("text_a")?, opt("text_b")?, opt("text_c")?);
        let tidy = i.string("tidy_tags")? == "yes";
        let mut out = if i.string("action")? == "append" {
            let parts: Vec<&str> = [a, b, c].into_iter().filter(|s| !s.is_empty()).collect();
            parts.join(if tidy { ", " } else { "" })
        } else if b.len() >= 2 && b.starts_with('/') && b.ends_with('/') {
            let re = regex::Regex::new(&b[1..b.len() - 1]).map_err(|e| {
                NodeError::input("text_b", format!("invalid regular expression: {e}"))
            })?;
            re.replace_all(a, comfyrs_pyexpr::re_replacement(c).as_str())
                .into_owned()
        } else if b.is_empty() {
            // Python's str.replace with an empty pattern inserts at every position.
            let mut s = String::from(c);
            for ch in a.chars() {
                s.push(ch);
                s.push_str(c);
            }
            s
        } else {
            a.replace(b, c)
        };
        if tidy {
            out = regex::Regex::new(r"\s{2,}")
                .expect("valid")
                .replace_all(&out, " ")
                .into_owned();
            out = out.replace(" ,", ",");
            out = regex::Regex::new(",{2,}")
                .expect("valid")
                .replace_all(&out, ",")
                .into_owned();
            out = out.trim().to_string();
        }
        let mut ui = Map::new();
        ui.insert("text".into(), json!([out]));
        Ok(NodeOutput::one(Value::String(out)).with_ui(ui))
    }
}

/// `ReroutePrimitive|pysssss`: passes its value through (the pack's frontend uses it to
/// reroute widget values; the class is hidden from the node menu).
struct ReroutePrimitive;
impl Node for ReroutePrimitive {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ReroutePrimitive|pysssss")
            .display("Reroute Primitive \u{1f40d}")
            .category("__hidden__")
            .input(InputSpec::of("value", "*"))
            .output(OutputSpec::new("*"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(i.require("value")?.clone()))
    }
}
