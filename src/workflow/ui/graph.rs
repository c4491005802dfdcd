//! Reading the UI-format JSON (LiteGraph serialisation, versions 0.4 and 1.x) into plain
//! structs: nodes with their slots and widget values, links by id, and subgraph definitions
//! from `definitions.subgraphs`. Nothing here knows node schemas; see `nodedef` and `convert`.

use super::UiError;
use serde_json::Value as Json;
use std::collections::HashMap;

/// The id of a subgraph's input node (links from it come from the subgraph node's inputs).
pub const SUBGRAPH_INPUT_ID: i64 = -10;

/// One input slot as saved: its link id, and the widget it stands for (a converted widget).
#[derive(Debug, Clone)]
pub struct UiInput {
    pub name: String,
    pub ty: String,
    pub link: Option<i64>,
    pub widget: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UiOutput {
    pub name: String,
    pub ty: String,
    pub links: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct UiNode {
    pub id: i64,
    pub ty: String,
    /// 0 always, 2 never (muted), 4 bypass.
    pub mode: i64,
    pub title: Option<String>,
    pub inputs: Vec<UiInput>,
    pub outputs: Vec<UiOutput>,
    /// A list in widget order; some packs save an object, which the frontend does not apply.
    pub widgets_values: Option<Json>,
    pub properties: serde_json::Map<String, Json>,
}

#[derive(Debug, Clone)]
pub struct UiLink {
    pub id: i64,
    pub origin_id: i64,
    pub origin_slot: i64,
    pub target_id: i64,
    pub target_slot: i64,
}

/// A subgraph's input or output slot: its name, type and the links inside that use it.
#[derive(Debug, Clone)]
pub struct IoSlot {
    pub name: String,
    pub ty: String,
    pub link_ids: Vec<i64>,
}

/// A graph: the root workflow or one subgraph definition.
#[derive(Debug, Clone, Default)]
pub struct UiGraph {
    pub nodes: Vec<UiNode>,
    pub links: HashMap<i64, UiLink>,
    /// Subgraph definitions only: the slots of the input and output nodes.
    pub io_inputs: Vec<IoSlot>,
    pub io_outputs: Vec<IoSlot>,
    pub name: String,
}

impl UiGraph {
    pub fn node(&self, id: i64) -> Option<&UiNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// The whole workflow: the root graph and the subgraph definitions by id.
#[derive(Debug, Clone, Default)]
pub struct UiWorkflow {
    pub root: UiGraph,
    pub subgraphs: HashMap<String, UiGraph>,
    /// Legacy group nodes (`extra.groupNodes`), which comfyrs does not expand.
    pub group_nodes: Vec<String>,
}

/// A JS-ish string of a slot type: strings as they are, lists joined by commas, numbers as text.
fn type_string(v: Option<&Json>) -> String {
    match v {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| match i {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Json::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn as_id(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_link(v: &Json, at: &str) -> Result<UiLink, UiError> {
    let bad = || {
        UiError::Malformed {
        at: at.to_string(),
        message: format!("a link must be [id, origin_id, origin_slot, target_id, target_slot, type] or an object with those fields, found {v}"),
    }
    };
    match v {
        Json::Array(a) if a.len() >= 5 => Ok(UiLink {
            id: as_id(&a[0]).ok_or_else(bad)?,
            origin_id: as_id(&a[1]).ok_or_else(bad)?,
            origin_slot: as_id(&a[2]).ok_or_else(bad)?,
            target_id: as_id(&a[3]).ok_or_else(bad)?,
            target_slot: as_id(&a[4]).ok_or_else(bad)?,
        }),
        Json::Object(o) => {
            let f = |k: &str| o.get(k).and_then(as_id).ok_or_else(bad);
            Ok(UiLink {
                id: f("id")?,
                origin_id: f("origin_id")?,
                origin_slot: f("origin_slot")?,
                target_id: f("target_id")?,
                target_slot: f("target_slot")?,
            })
        }
        _ => Err(bad()),
    }
}

fn parse_node(v: &Json, at: &str) -> Result<UiNode, UiError> {
    let Json::Object(o) = v else {
        return Err(UiError::Malformed {
            at: at.to_string(),
            message: format!("a node must be an object, found {v}"),
        });
    };
    let id = o
        .get("id")
        .and_then(as_id)
        .ok_or_else(|| UiError::Malformed {
            at: at.to_string(),
            message: "a node needs a numeric \"id\"".into(),
        })?;
    let at = format!("{at} (id {id})");
    let ty = match o.get("type") {
        // The frontend renames these on load (a merged node and two old typos).
        Some(Json::String(s)) if s == "T2IAdapterLoader" => "ControlNetLoader".to_string(),
        Some(Json::String(s)) if s == "ConditioningAverage " => "ConditioningAverage".to_string(),
        Some(Json::String(s)) if s == "SDV_img2vid_Conditioning" => {
            "SVD_img2vid_Conditioning".to_string()
        }
        Some(Json::String(s)) => s.clone(),
        _ => {
            return Err(UiError::Malformed {
                at,
                message: "a node needs a string \"type\"".into(),
            })
        }
    };
    let mut inputs = Vec::new();
    if let Some(Json::Array(list)) = o.get("inputs") {
        for i in list {
            inputs.push(UiInput {
                name: i
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
                ty: type_string(i.get("type")),
                link: i.get("link").and_then(as_id),
                widget: i
                    .get("widget")
                    .and_then(|w| w.get("name"))
                    .and_then(Json::as_str)
                    .map(str::to_string),
            });
        }
    }
    let mut outputs = Vec::new();
    if let Some(Json::Array(list)) = o.get("outputs") {
        for out in list {
            outputs.push(UiOutput {
                name: out
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
                ty: type_string(out.get("type")),
                links: match out.get("links") {
                    Some(Json::Array(l)) => l.iter().filter_map(as_id).collect(),
                    _ => Vec::new(),
                },
            });
        }
    }
    Ok(UiNode {
        id,
        ty,
        mode: o.get("mode").and_then(Json::as_i64).unwrap_or(0),
        title: o
            .get("title")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        inputs,
        outputs,
        widgets_values: o.get("widgets_values").cloned(),
        properties: match o.get("properties") {
            Some(Json::Object(p)) => p.clone(),
            _ => Default::default(),
        },
    })
}

fn parse_io(v: Option<&Json>) -> Vec<IoSlot> {
    let Some(Json::Array(list)) = v else {
        return Vec::new();
    };
    list.iter()
        .map(|s| IoSlot {
            name: s
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            ty: type_string(s.get("type")),
            link_ids: match s.get("linkIds") {
                Some(Json::Array(l)) => l.iter().filter_map(as_id).collect(),
                _ => Vec::new(),
            },
        })
        .collect()
}

fn parse_graph(v: &serde_json::Map<String, Json>, at: &str) -> Result<UiGraph, UiError> {
    let mut g = UiGraph {
        name: v
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string(),
        ..Default::default()
    };
    if let Some(Json::Array(nodes)) = v.get("nodes") {
        for (i, n) in nodes.iter().enumerate() {
            g.nodes.push(parse_node(n, &format!("{at}nodes[{i}]"))?);
        }
    }
    if let Some(Json::Array(links)) = v.get("links") {
        for (i, l) in links.iter().enumerate() {
            if l.is_null() {
                continue;
            }
            let link = parse_link(l, &format!("{at}links[{i}]"))?;
            g.links.insert(link.id, link);
        }
    }
    g.io_inputs = parse_io(v.get("inputs"));
    g.io_outputs = parse_io(v.get("outputs"));
    Ok(g)
}

/// Whether `value` is a UI-format workflow (a `nodes` list), not an API-format prompt.
pub fn is_ui_workflow(value: &Json) -> bool {
    matches!(value.get("nodes"), Some(Json::Array(_)))
        && value.get("class_type").is_none()
        && (value.get("links").is_some()
            || value.get("version").is_some()
            || value.get("last_node_id").is_some())
}

/// Parses a UI-format workflow.
pub fn parse_ui_workflow(value: &Json) -> Result<UiWorkflow, UiError> {
    let Json::Object(root) = value else {
        return Err(UiError::Malformed {
            at: "workflow".into(),
            message: "must be a JSON object".into(),
        });
    };
    let mut wf = UiWorkflow {
        root: parse_graph(root, "")?,
        ..Default::default()
    };
    if let Some(Json::Array(defs)) = value.pointer("/definitions/subgraphs") {
        for (i, d) in defs.iter().enumerate() {
            let Json::Object(d) = d else { continue };
            let id = d.get("id").and_then(Json::as_str).unwrap_or("").to_string();
            let graph = parse_graph(d, &format!("definitions.subgraphs[{i}]."))?;
            wf.subgraphs.insert(id, graph);
        }
    }
    if let Some(Json::Object(groups)) = value.pointer("/extra/groupNodes") {
        wf.group_nodes = groups.keys().cloned().collect();
    }
    Ok(wf)
}
