//! Backend nodes of rgthree's rgthree-comfy, re-implemented from their schemas and observed
//! behaviour (none of the pack's code is used). The pack's many frontend-only (virtual) nodes
//! (Fast Groups Bypasser/Muter, Label, Bookmark, Reroute, ...) never reach the backend: the
//! editor drops virtual nodes before it sends the API prompt, so they need only the pack's
//! JavaScript served to the browser, not a class here.

use comfyrs::node::{
    py_float_repr, Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema,
    OutputSpec, Registry, RegistryError, Value,
};
use serde_json::{json, Map, Value as Json};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "rgthree-comfy";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(Seed)?;
    p.register(DisplayAny)?;
    p.register(AnySwitch)?;
    Ok(())
}

/// The seed range the pack allows (2^50).
const SEED_MAX: i64 = 1125899906842624;

struct Seed;
impl Node for Seed {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Seed (rgthree)")
            .category("rgthree")
            .input(
                InputSpec::int("seed")
                    .default(0)
                    .min(-SEED_MAX)
                    .max(SEED_MAX),
            )
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .hidden(Hidden::UniqueId)
            .output(OutputSpec::new("INT").named("SEED"))
    }
    /// The seed as given. The editor replaces the special values -1 (random), -2 (increment)
    /// and -3 (decrement) before queueing; one that still arrives (an API client) becomes a
    /// new random seed in 1..=2^50, as the pack does, and is never cached.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let seed = i.int("seed")?;
        let seed = if (-3..=-1).contains(&seed) {
            warn_special_seed(seed);
            rand::random_range(1..=SEED_MAX) as i128
        } else {
            seed
        };
        Ok(NodeOutput::one(Value::Int(seed)))
    }
    fn fingerprint(
        &self,
        _: &comfyrs::env::Environment,
        i: &comfyrs::node::LiteralInputs,
    ) -> comfyrs::node::Fingerprint {
        match i.int("seed") {
            Ok(s) if (-3..=-1).contains(&s) => comfyrs::node::Fingerprint::Always,
            _ => comfyrs::node::Fingerprint::Stable,
        }
    }
}

fn warn_special_seed(seed: i128) {
    eprintln!(
        "[rgthree] Seed (rgthree): got \"{seed}\" as the seed (the editor replaces it before queueing); using a new random seed"
    );
}

/// Python's `json.dumps` with its default separators (`", "`, `": "`) and ASCII escapes.
fn py_json(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f.is_finite() {
                    py_float_repr(f)
                } else if f.is_nan() {
                    "NaN".into()
                } else if f > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                }
            }
            _ => n.to_string(),
        },
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
                        for u in c.encode_utf16(&mut buf) {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Json::Array(a) => format!("[{}]", a.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        Json::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_json(&Json::String(k.clone())), py_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A value as JSON, for `json.dumps` (lists of primitives; `None` for payloads).
fn to_json(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Int(i) => int_json(*i),
        Value::Float(f) => json!(f),
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::Json(j) => j.clone(),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        Value::Object(_) => return None,
    })
}

fn int_json(i: i128) -> Json {
    match (i64::try_from(i), u64::try_from(i)) {
        (Ok(v), _) => json!(v),
        (_, Ok(v)) => json!(v),
        _ => json!(i as f64),
    }
}

/// The text Display Any shows for a value: strings as they are, numbers and booleans as
/// Python's `str()`, anything else as `json.dumps`; a payload (tensor, model) that JSON cannot
/// hold is described instead (the pack shows Python's `str()` of the object there).
pub fn display_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => py_float_repr(*f),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Object(p) => p.describe(),
        other => match to_json(other) {
            Some(j) => py_json(&j),
            None => format!("{other:?}"),
        },
    }
}

struct DisplayAny;
impl Node for DisplayAny {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Display Any (rgthree)")
            .category("rgthree")
            .input(InputSpec::of("source", "*").always_options())
            .hidden(Hidden::UniqueId)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let text = match i.get("source") {
            None => "None".to_string(),
            Some(v) => display_text(v),
        };
        let mut ui = Map::new();
        ui.insert("text".into(), json!([text]));
        Ok(NodeOutput::ui(ui))
    }
}

/// `Any Switch (rgthree)`: the first connected `any_NN` input (in the prompt's input order)
/// whose value is not None. Its inputs are dynamic: the pack's frontend adds `any_01`,
/// `any_02`, ... as links are made, and `/object_info` lists none.
struct AnySwitch;
impl Node for AnySwitch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Any Switch (rgthree)")
            .category("rgthree")
            .flexible_optional_inputs("any_", "*")
            .output(OutputSpec::new("*").named("*"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let chosen = i
            .iter()
            .find(|(k, v)| k.starts_with("any_") && !matches!(v, Value::Json(Json::Null)))
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Json(Json::Null));
        Ok(NodeOutput::one(chosen))
    }
}
