//! UI-format workflows (what ComfyUI saves: `nodes`, `links`, `widgets_values`, groups,
//! subgraphs) converted to API format exactly as the frontend's "Export (API)" does, using
//! the node schemas of `/object_info`. The rules, each from frontend 1.27.10's own code:
//!
//! * widget values map onto the widgets the schema gives, in input order; the widgets the
//!   frontend adds (`control_after_generate`, combo filter lists, upload buttons) are skipped;
//! * converted widgets that are linked send the link; PrimitiveNodes push their value into
//!   the widgets they feed;
//! * Reroute, PrimitiveNode and notes are virtual and never sent; groups are layout only;
//! * muted nodes (mode 2) are dropped, with the links that pointed at them; bypassed nodes
//!   (mode 4) pass their first input of a matching type through;
//! * subgraph instances are flattened into ids `instance:inner` (nested: `a:b:c`).
//!
//! A node class the schemas lack is an error naming it (and the custom-node pack the
//! workflow says provides it), never a silently dropped node.

mod convert;
mod extensions;
mod graph;
mod nodedef;
mod packs;

pub use convert::{process_dynamic_prompt, VIRTUAL_TYPES};
pub use graph::{is_ui_workflow, parse_ui_workflow, UiWorkflow};
pub use nodedef::NodeDef;
pub use packs::known_pack;

use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// A node class the workflow needs and the registry lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingClass {
    pub class_type: String,
    /// The custom-node pack that provides it, when the workflow or our table says.
    pub pack: Option<String>,
    /// UI node ids (`subgraph-name/id` inside subgraphs) using it.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UiError {
    #[error("{at}: {message}")]
    Malformed { at: String, message: String },
    #[error("the workflow needs node classes comfyrs does not have: {}", describe_missing(.0))]
    MissingClasses(Vec<MissingClass>),
    #[error("node {node}: {message}")]
    Link { node: String, message: String },
    #[error("{message}")]
    Recursion { message: String },
}

fn describe_missing(m: &[MissingClass]) -> String {
    m.iter()
        .map(|c| match &c.pack {
            Some(p) => format!("{} (custom nodes: {p})", c.class_type),
            None => c.class_type.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl UiError {
    /// ComfyUI's error JSON shape, so clients show it like a validation error.
    pub fn to_comfy_json(&self) -> Json {
        let (kind, message, extra) = match self {
            UiError::MissingClasses(m) => (
                "missing_node_type",
                "The workflow uses node types comfyrs does not have".to_string(),
                json!({"missing": m.iter().map(|c| json!({
                    "class_type": c.class_type, "pack": c.pack, "nodes": c.nodes
                })).collect::<Vec<_>>()}),
            ),
            UiError::Link { node, .. } => (
                "invalid_workflow",
                "The UI workflow cannot be converted".to_string(),
                json!({"node_id": node}),
            ),
            _ => (
                "invalid_workflow",
                "The UI workflow cannot be converted".to_string(),
                json!({}),
            ),
        };
        json!({
            "error": {"type": kind, "message": message, "details": self.to_string(), "extra_info": extra},
            "node_errors": {}
        })
    }
}

/// The API-format prompt and anything the conversion could not reproduce exactly.
#[derive(Debug, Clone)]
pub struct UiConversion {
    pub prompt: Json,
    pub warnings: Vec<String>,
}

/// Every node class a UI workflow uses that `has_class` does not know, muted and bypassed
/// nodes excepted (they are never sent).
pub fn missing_classes(wf: &UiWorkflow, has_class: &dyn Fn(&str) -> bool) -> Vec<MissingClass> {
    let mut out: Vec<MissingClass> = Vec::new();
    let mut graphs: Vec<(&str, &graph::UiGraph)> = vec![("", &wf.root)];
    let mut ids: Vec<&String> = wf.subgraphs.keys().collect();
    ids.sort();
    for id in ids {
        graphs.push((id, &wf.subgraphs[id]));
    }
    for (gid, g) in graphs {
        for n in &g.nodes {
            if VIRTUAL_TYPES.contains(&n.ty.as_str())
                || wf.subgraphs.contains_key(&n.ty)
                || n.mode == 2
                || n.mode == 4
                || has_class(&n.ty)
            {
                continue;
            }
            let where_ = if gid.is_empty() {
                n.id.to_string()
            } else {
                let name = &wf.subgraphs[gid].name;
                format!("{}/{}", if name.is_empty() { gid } else { name }, n.id)
            };
            let pack = n
                .properties
                .get("cnr_id")
                .or_else(|| n.properties.get("aux_id"))
                .and_then(Json::as_str)
                .filter(|p| *p != "comfy-core")
                .map(str::to_string)
                .or_else(|| known_pack(&n.ty).map(str::to_string))
                .or_else(|| {
                    (n.ty.starts_with("workflow>") || n.ty.starts_with("workflow/"))
                        .then(|| "a legacy group node: ungroup it in the editor".to_string())
                });
            match out.iter_mut().find(|m| m.class_type == n.ty) {
                Some(m) => m.nodes.push(where_),
                None => out.push(MissingClass {
                    class_type: n.ty.clone(),
                    pack,
                    nodes: vec![where_],
                }),
            }
        }
    }
    out
}

/// Converts a UI-format workflow to API format. `object_info(class)` gives a class's
/// `/object_info` entry (None for a class the registry lacks).
pub fn convert_ui_workflow(
    value: &Json,
    object_info: &dyn Fn(&str) -> Option<Json>,
) -> Result<UiConversion, UiError> {
    let wf = parse_ui_workflow(value)?;
    let mut defs: HashMap<String, NodeDef> = HashMap::new();
    let mut all_types: Vec<&str> = wf.root.nodes.iter().map(|n| n.ty.as_str()).collect();
    for g in wf.subgraphs.values() {
        all_types.extend(g.nodes.iter().map(|n| n.ty.as_str()));
    }
    for ty in all_types {
        if defs.contains_key(ty) {
            continue;
        }
        if let Some(info) = object_info(ty) {
            defs.insert(ty.to_string(), NodeDef::from_object_info(&info));
        }
    }
    let missing = missing_classes(&wf, &|c| defs.contains_key(c));
    if !missing.is_empty() {
        return Err(UiError::MissingClasses(missing));
    }
    let converter = convert::Converter::new(&wf, &defs)?;
    let (prompt, warnings) = converter.convert()?;
    Ok(UiConversion { prompt, warnings })
}
