//! Per-run changes to a workflow: `{"<node_id>": {"inputs": {...}}}` documents and `--set` args.
//!
//! Overrides are applied strictly before anything else: an unknown node id, or an input the node
//! neither has in the workflow nor declares in its schema, is an error naming it. Replacing a link
//! with a literal (or the reverse) is allowed; validation checks the result afterwards.

use super::parse::json_kind;
use super::Workflow;
use indexmap::IndexMap;
use serde_json::{json, Value as Json};

/// Node id -> input name -> new value.
pub type Overrides = IndexMap<String, IndexMap<String, Json>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OverrideError {
    #[error(
        "overrides must be an object of {{\"<node_id>\": {{\"inputs\": {{...}}}}}}, found {found}"
    )]
    NotAnObject { found: &'static str },
    #[error("override for node '{node_id}' must be {{\"inputs\": {{...}}}}, found {found}")]
    BadNodeEntry {
        node_id: String,
        found: &'static str,
    },
    #[error("override names node '{node_id}', which is not in the workflow (nodes: {known})")]
    UnknownNode { node_id: String, known: String },
    #[error("override for node '{node_id}' ({class_type}) sets input '{input}', which the node neither has nor declares (inputs: {allowed})")]
    UnknownInput {
        node_id: String,
        class_type: String,
        input: String,
        allowed: String,
    },
    #[error("--set {arg:?}: expected NODE_ID.INPUT=VALUE, e.g. --set 6.text=\"a cat\"")]
    BadSetArg { arg: String },
}

impl OverrideError {
    /// The error in ComfyUI's error JSON shape, naming the node and input in `extra_info`.
    pub fn to_comfy_json(&self) -> Json {
        let extra = match self {
            OverrideError::BadNodeEntry { node_id, .. }
            | OverrideError::UnknownNode { node_id, .. } => {
                json!({"node_id": node_id})
            }
            OverrideError::UnknownInput { node_id, input, .. } => {
                json!({"node_id": node_id, "input_name": input})
            }
            _ => json!({}),
        };
        json!({
            "error": {"type": "invalid_override", "message": "Invalid override",
                      "details": self.to_string(), "extra_info": extra},
            "node_errors": {}
        })
    }
}

/// Reads an overrides document (`{"6": {"inputs": {"text": "..."}}}`).
pub fn overrides_from_json(value: &Json) -> Result<Overrides, OverrideError> {
    let Json::Object(map) = value else {
        return Err(OverrideError::NotAnObject {
            found: json_kind(value),
        });
    };
    let mut out = Overrides::new();
    for (id, entry) in map {
        let inputs = match entry.get("inputs") {
            Some(Json::Object(inputs)) if entry.as_object().is_some_and(|o| o.len() == 1) => inputs,
            _ => {
                return Err(OverrideError::BadNodeEntry {
                    node_id: id.clone(),
                    found: json_kind(entry),
                })
            }
        };
        let slot = out.entry(id.clone()).or_default();
        for (k, v) in inputs {
            slot.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// Parses one `--set NODE.INPUT=VALUE` argument into `overrides`. VALUE is JSON when it parses
/// as JSON (`42`, `true`, `["4", 0]`), otherwise a plain string (`a cat`).
pub fn parse_set_arg(arg: &str, overrides: &mut Overrides) -> Result<(), OverrideError> {
    let bad = || OverrideError::BadSetArg {
        arg: arg.to_string(),
    };
    let (target, raw) = arg.split_once('=').ok_or_else(bad)?;
    // Node ids may contain dots only in expansion ids; inputs never do: split at the last dot.
    let (node, input) = target.rsplit_once('.').ok_or_else(bad)?;
    if node.is_empty() || input.is_empty() {
        return Err(bad());
    }
    let value = serde_json::from_str::<Json>(raw).unwrap_or_else(|_| Json::String(raw.to_string()));
    overrides
        .entry(node.to_string())
        .or_default()
        .insert(input.to_string(), value);
    Ok(())
}

/// Applies overrides to `workflow`. `declared_inputs(class_type)` lists the inputs a class
/// declares (None for an unknown class, in which case only inputs present in the workflow may be
/// set; validation then reports the unknown class).
pub fn apply_overrides<'a, F>(
    workflow: &mut Workflow,
    overrides: &Overrides,
    declared_inputs: F,
) -> Result<(), OverrideError>
where
    F: Fn(&str) -> Option<Vec<&'a str>>,
{
    for (node_id, inputs) in overrides {
        let Some(node) = workflow.nodes.get_mut(node_id) else {
            let known: Vec<&str> = workflow.nodes.keys().map(String::as_str).collect();
            return Err(OverrideError::UnknownNode {
                node_id: node_id.clone(),
                known: abbreviate(&known),
            });
        };
        let declared = declared_inputs(&node.class_type).unwrap_or_default();
        for (input, value) in inputs {
            let known = node.inputs.contains_key(input) || declared.iter().any(|d| d == input);
            if !known {
                let mut allowed: Vec<&str> = declared.clone();
                for k in node.inputs.keys() {
                    if !allowed.contains(&k.as_str()) {
                        allowed.push(k);
                    }
                }
                return Err(OverrideError::UnknownInput {
                    node_id: node_id.clone(),
                    class_type: node.class_type.clone(),
                    input: input.clone(),
                    allowed: allowed.join(", "),
                });
            }
            node.inputs.insert(input.clone(), value.clone());
        }
    }
    Ok(())
}

fn abbreviate(items: &[&str]) -> String {
    const SHOWN: usize = 20;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..SHOWN].join(", "), items.len())
    }
}
