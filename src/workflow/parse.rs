//! Reading API-format JSON into a [`Workflow`].

use super::{Workflow, WorkflowNode};
use crate::hashing::FastIndexMap;
use indexmap::IndexMap;
use serde_json::{json, Value as Json};

/// A workflow that cannot be read. Every variant names where the problem is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the workflow must be a JSON object mapping node ids to nodes, found {found}")]
    NotAnObject { found: &'static str },
    #[error(
        "node '{node_id}' must be a JSON object with \"class_type\" and \"inputs\", found {found}"
    )]
    NodeNotAnObject {
        node_id: String,
        found: &'static str,
    },
    #[error("node '{node_id}' has no \"class_type\" property")]
    MissingClassType { node_id: String },
    #[error("node '{node_id}': \"class_type\" must be a string, found {found}")]
    ClassTypeNotString {
        node_id: String,
        found: &'static str,
    },
    #[error("node '{node_id}': \"inputs\" must be an object mapping input names to values, found {found}")]
    InputsNotAnObject {
        node_id: String,
        found: &'static str,
    },
    #[error("node '{node_id}' input '{input}': malformed link {value}: a link is [\"<node id>\", <output index>] with the id as a string and the index a non-negative integer")]
    MalformedLink {
        node_id: String,
        input: String,
        value: String,
    },
}

impl WorkflowError {
    /// ComfyUI's error JSON for this error (`{"error": {...}, "node_errors": {}}`), so clients
    /// that show ComfyUI's errors show ours. A node without `class_type` uses ComfyUI's exact
    /// `invalid_prompt` text; the other cases are ones ComfyUI reports as a bare exception.
    pub fn to_comfy_json(&self) -> Json {
        let (kind, message, details, extra) = match self {
            WorkflowError::MissingClassType { node_id } => (
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.".to_string(),
                format!("Node ID '#{node_id}'"),
                json!({}),
            ),
            WorkflowError::InvalidJson { line, column, .. } => (
                "invalid_json",
                "The workflow is not valid JSON".to_string(),
                self.to_string(),
                json!({"line": line, "column": column}),
            ),
            WorkflowError::NodeNotAnObject { node_id, .. }
            | WorkflowError::ClassTypeNotString { node_id, .. }
            | WorkflowError::InputsNotAnObject { node_id, .. } => (
                "invalid_prompt",
                "Cannot execute because a node is malformed.".to_string(),
                self.to_string(),
                json!({"node_id": node_id}),
            ),
            WorkflowError::MalformedLink { node_id, input, .. } => (
                "invalid_prompt",
                "Cannot execute because a link is malformed.".to_string(),
                self.to_string(),
                json!({"node_id": node_id, "input_name": input}),
            ),
            WorkflowError::NotAnObject { .. } => (
                "invalid_prompt",
                "Cannot execute because the prompt is not an object.".to_string(),
                self.to_string(),
                json!({}),
            ),
        };
        json!({
            "error": {"type": kind, "message": message, "details": details, "extra_info": extra},
            "node_errors": {}
        })
    }
}

pub(crate) fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// Parses API-format JSON text: the bare node map, or the `{"prompt": {...}}` wrapper that
/// POST /prompt bodies and some exports use.
pub fn parse_workflow(text: &str) -> Result<Workflow, WorkflowError> {
    let value: Json = serde_json::from_str(text).map_err(|e| WorkflowError::InvalidJson {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    workflow_from_json(value)
}

/// Builds a [`Workflow`] from already-parsed JSON (the HTTP server's path).
pub fn workflow_from_json(value: Json) -> Result<Workflow, WorkflowError> {
    let map = match value {
        Json::Object(mut map) => {
            // The wrapper form: {"prompt": {...}, ...other request fields}.
            let wrapped = matches!(map.get("prompt"), Some(Json::Object(p))
                if p.values().all(|n| n.is_object()) && !map.contains_key("class_type"));
            if wrapped {
                match map.swap_remove("prompt") {
                    Some(Json::Object(p)) => p,
                    _ => unreachable!("checked above"),
                }
            } else {
                map
            }
        }
        other => {
            return Err(WorkflowError::NotAnObject {
                found: json_kind(&other),
            })
        }
    };
    let mut nodes = FastIndexMap::with_capacity_and_hasher(map.len(), Default::default());
    for (id, node) in map {
        let Json::Object(mut obj) = node else {
            return Err(WorkflowError::NodeNotAnObject {
                found: json_kind(&node),
                node_id: id,
            });
        };
        let class_type = match obj.swap_remove("class_type") {
            None => return Err(WorkflowError::MissingClassType { node_id: id }),
            Some(Json::String(s)) => s,
            Some(other) => {
                return Err(WorkflowError::ClassTypeNotString {
                    found: json_kind(&other),
                    node_id: id,
                })
            }
        };
        let inputs = match obj.swap_remove("inputs") {
            None => IndexMap::new(),
            Some(Json::Object(inputs)) => inputs.into_iter().collect::<IndexMap<_, _>>(),
            Some(other) => {
                return Err(WorkflowError::InputsNotAnObject {
                    found: json_kind(&other),
                    node_id: id,
                })
            }
        };
        check_links(&id, &inputs)?;
        nodes.insert(
            id,
            WorkflowNode {
                class_type,
                inputs,
                extra: obj,
            },
        );
    }
    Ok(Workflow { nodes })
}

/// A 2-element list is meant as a link; it must be `["<id>", <non-negative int>]`.
/// Lists of other lengths are left for validation, which reports them as ComfyUI does
/// (`bad_linked_input`).
fn check_links(node_id: &str, inputs: &IndexMap<String, Json>) -> Result<(), WorkflowError> {
    for (name, value) in inputs {
        if let Json::Array(items) = value {
            if items.len() == 2 {
                let ok_id = items[0].is_string();
                let ok_idx = items[1]
                    .as_f64()
                    .is_some_and(|f| f >= 0.0 && f.fract() == 0.0);
                if !(ok_id && ok_idx) {
                    return Err(WorkflowError::MalformedLink {
                        node_id: node_id.to_string(),
                        input: name.clone(),
                        value: value.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}
