//! Utility nodes: PreviewAny (comfy_extras/nodes_preview_any.py) shows any value as text.

use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry,
    RegistryError, Value,
};
use serde_json::{json, Map, Value as Json};

/// Python's `json.dumps` (default separators `, ` and `: `, ASCII-escaped).
pub fn py_json_dumps(v: &Json) -> String {
    match v {
        Json::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(py_json_dumps)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Json::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    py_json_dumps(&Json::String(k.clone())),
                    py_json_dumps(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Json::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut buf = [0u16; 2];
                        for unit in c.encode_utf16(&mut buf) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Json::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => crate::node::py_float_repr(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

struct PreviewAny;
impl Node for PreviewAny {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PreviewAny")
            .display("Preview Any")
            .category("utils")
            .module("comfy_extras.nodes_preview_any")
            .input(InputSpec::of("source", "*").always_options())
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let text = match i.get("source") {
            None => "None".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Int(_) | Value::Float(_) | Value::Bool(_))) => v.to_py_str(),
            Some(Value::Json(Json::Null)) => "None".to_string(),
            Some(v) => match v.to_json() {
                Some(j) => py_json_dumps(&j),
                None => v.to_py_str(),
            },
        };
        let mut ui = Map::new();
        ui.insert("text".into(), json!([text]));
        Ok(NodeOutput::ui(ui))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(PreviewAny)
}
