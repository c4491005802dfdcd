//! ComfyUI's API-format workflow ("workflow_api.json"): parsing and overrides.
//!
//! A workflow is an ordered map of node id -> `{class_type, inputs, _meta}`. Key order is kept
//! (it decides tie-breaks in execution order and is what clients see echoed back), and links are
//! recognised exactly as ComfyUI's validation does: any JSON list in an input position is an
//! attempted link, and only `["<id>", <index>]` is a well-formed one.

mod overrides;
mod parse;
pub mod source;
pub mod ui;

pub use overrides::{
    apply_overrides, overrides_from_json, parse_set_arg, OverrideError, Overrides,
};
pub use parse::{parse_workflow, workflow_from_json, WorkflowError};

use crate::hashing::FastIndexMap;
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::sync::OnceLock;

/// One node of an API-format workflow, as written by the user (before validation).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowNode {
    pub class_type: String,
    /// Inputs in JSON order: literals or links (`["<id>", <index>]`).
    pub inputs: IndexMap<String, Json>,
    /// Everything else on the node object (`_meta`, `is_changed`, ...), kept for round-tripping.
    pub extra: serde_json::Map<String, Json>,
}

/// A parsed workflow: node id -> node, in the order the JSON listed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workflow {
    pub nodes: FastIndexMap<String, WorkflowNode>,
}

/// How an input value is to be read, following ComfyUI's rules (spec §1.1).
#[derive(Debug, Clone, PartialEq)]
pub enum InputRef<'a> {
    /// A well-formed link: source node id and output index.
    Link { node: &'a str, slot: usize },
    /// A JSON list that is not a well-formed link (ComfyUI's `bad_linked_input`).
    BadLink,
    /// A literal value; `{"__value__": v}` is already unwrapped.
    Literal(&'a Json),
}

impl<'a> InputRef<'a> {
    pub fn classify(value: &'a Json) -> InputRef<'a> {
        match value {
            Json::Array(items) => {
                if items.len() != 2 {
                    return InputRef::BadLink;
                }
                match (&items[0], &items[1]) {
                    (Json::String(id), Json::Number(n)) => {
                        // ComfyUI accepts an int or a float index; a float is truncated.
                        let slot = n
                            .as_u64()
                            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64));
                        match slot {
                            Some(slot) => InputRef::Link {
                                node: id,
                                slot: slot as usize,
                            },
                            None => InputRef::BadLink,
                        }
                    }
                    _ => InputRef::BadLink,
                }
            }
            Json::Object(map) if map.len() == 1 && map.contains_key("__value__") => {
                InputRef::Literal(&map["__value__"])
            }
            other => InputRef::Literal(other),
        }
    }
}

impl Workflow {
    /// The workflow as API-format JSON again (used for the `prompt` PNG chunk and history).
    pub fn to_json(&self) -> Json {
        let mut out = serde_json::Map::with_capacity(self.nodes.len());
        for (id, node) in &self.nodes {
            let mut obj = serde_json::Map::new();
            let inputs: serde_json::Map<String, Json> = node
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            obj.insert("inputs".into(), Json::Object(inputs));
            obj.insert("class_type".into(), Json::String(node.class_type.clone()));
            for (k, v) in &node.extra {
                obj.insert(k.clone(), v.clone());
            }
            out.insert(id.clone(), Json::Object(obj));
        }
        Json::Object(out)
    }

    /// The UI title of a node (`_meta.title`), if the export carried one.
    pub fn title(&self, id: &str) -> Option<&str> {
        self.nodes
            .get(id)?
            .extra
            .get("_meta")?
            .get("title")?
            .as_str()
    }
}

/// A validated workflow with its literals converted in place (ComfyUI writes converted values
/// back into the prompt it records). Its JSON, what history and the `prompt` PNG chunk hold,
/// is built on first use: a run that records nothing never pays for it.
#[derive(Debug)]
pub struct PromptRecord {
    workflow: Workflow,
    json: OnceLock<Json>,
}

impl PromptRecord {
    pub fn new(workflow: Workflow) -> Self {
        PromptRecord {
            workflow,
            json: OnceLock::new(),
        }
    }

    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// The recorded prompt as API-format JSON (built once).
    pub fn json(&self) -> &Json {
        self.json.get_or_init(|| self.workflow.to_json())
    }

    /// The recorded prompt as API-format JSON, by value.
    pub fn into_json(self) -> Json {
        match self.json.into_inner() {
            Some(json) => json,
            None => self.workflow.to_json(),
        }
    }
}
