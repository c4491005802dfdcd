//! The conversion itself, step for step as the frontend's `graphToPrompt` (1.27.10) does it:
//! instantiate each node from its schema (slots, widgets, saved widget values), let
//! PrimitiveNodes push their values into the widgets they feed, flatten subgraph instances
//! into `outer:inner` ids, then emit every node that is neither virtual, muted nor bypassed:
//! widget values first, then each connected input resolved through reroutes, bypassed nodes
//! (first input of a matching type) and subgraph boundaries. Links to nodes that were not
//! emitted are dropped at the end.

use super::extensions;
use super::graph::{UiGraph, UiInput, UiNode, UiWorkflow, SUBGRAPH_INPUT_ID};
use super::nodedef::{truthy, NodeDef, WidgetDef, WidgetKind};
use super::UiError;
use serde_json::{Map, Value as Json};
use std::collections::{HashMap, HashSet};

/// Node types the frontend itself defines as virtual (never sent to the server).
pub const VIRTUAL_TYPES: &[&str] = &["Reroute", "PrimitiveNode", "Note", "MarkdownNote"];

const MODE_NEVER: i64 = 2;
const MODE_BYPASS: i64 = 4;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Comfy,
    Reroute,
    Primitive,
    Note,
    Subgraph(String),
    /// A class with no schema, kept only because it is muted or bypassed.
    Placeholder,
}

/// A node as the frontend holds it after loading.
#[derive(Debug, Clone)]
struct NodeState {
    kind: Kind,
    class_type: String,
    title: String,
    mode: i64,
    inputs: Vec<UiInput>,
    /// (name, type, link ids)
    outputs: Vec<(String, String, Vec<i64>)>,
    widgets: Vec<(WidgetDef, Json)>,
}

impl NodeState {
    fn is_virtual(&self) -> bool {
        !matches!(self.kind, Kind::Comfy | Kind::Placeholder)
    }
    fn widget_value(&self, name: &str) -> Option<&Json> {
        self.widgets
            .iter()
            .find(|(w, _)| w.name == name)
            .map(|(_, v)| v)
    }
}

/// A node instance after flattening: its path of subgraph instance ids and its own id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Dto {
    path: Vec<i64>,
    node: i64,
}

impl Dto {
    fn id(&self) -> String {
        let mut parts: Vec<String> = self.path.iter().map(i64::to_string).collect();
        parts.push(self.node.to_string());
        parts.join(":")
    }
}

enum Resolved {
    Link(String, i64),
    Widget(Json),
}

/// Stable key of a graph: "" for the root, the subgraph id otherwise.
type GraphKey = String;

pub struct Converter<'a> {
    wf: &'a UiWorkflow,
    defs: &'a HashMap<String, NodeDef>,
    states: HashMap<(GraphKey, i64), NodeState>,
    pub warnings: Vec<String>,
}

/// The frontend's formatDate: `yyyy`, `yy`, and `d M h m s` (doubled: zero-padded).
fn format_date(fmt: &str, now: &chrono::DateTime<chrono::Local>) -> String {
    use chrono::{Datelike, Timelike};
    let re = regex::Regex::new(r"dd?|MM?|hh?|mm?|ss?|yyy?y?").expect("static regex");
    re.replace_all(fmt, |c: &regex::Captures| {
        let t = &c[0];
        match t {
            "yy" => format!("{:02}", now.year() % 100),
            "yyyy" => now.year().to_string(),
            _ => {
                let v = match &t[..1] {
                    "d" => now.day(),
                    "M" => now.month(),
                    "h" => now.hour(),
                    "m" => now.minute(),
                    "s" => now.second(),
                    _ => return t.to_string(),
                };
                format!("{v:0width$}", width = t.len())
            }
        }
    })
    .into_owned()
}

fn js_number_key(k: &str) -> Option<u32> {
    // An array-index key: canonical decimal below 2^32 - 1, enumerated first and ascending.
    let n: u32 = k.parse().ok()?;
    (n.to_string() == k && n != u32::MAX).then_some(n)
}

fn is_valid_connection(a: &str, b: &str) -> bool {
    let a = if a == "*" { "" } else { a };
    let b = if b == "*" { "" } else { b };
    if a.is_empty() || b.is_empty() || a == b {
        return true;
    }
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    if !a.contains(',') && !b.contains(',') {
        return a == b;
    }
    a.split(',')
        .any(|x| b.split(',').any(|y| is_valid_connection(x, y)))
}

/// The frontend's `processDynamicPrompt`: C-style comments removed, `{a|b|c}` replaced by a
/// random choice (recursively), `\{`, `\}`, `\|` unescaped.
pub fn process_dynamic_prompt(input: &str) -> String {
    fn strip_comments(s: &str) -> String {
        let re = regex::Regex::new(r"/\*[\s\S]*?\*/|//.*").expect("static regex");
        re.replace_all(s, "").into_owned()
    }
    fn run(input: &str) -> String {
        let chars: Vec<char> = strip_comments(input).chars().collect();
        let mut i = 0;
        let mut result = String::new();
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            if c == '\\' {
                result.push('\\');
                if let Some(&n) = chars.get(i) {
                    result.push(n);
                }
                i += 1;
            } else if c == '{' {
                let mut options = Vec::new();
                let mut choice = String::new();
                let mut depth = 0;
                while i < chars.len() {
                    let c = chars[i];
                    i += 1;
                    if c == '\\' {
                        choice.push('\\');
                        if let Some(&n) = chars.get(i) {
                            choice.push(n);
                        }
                        i += 1;
                        continue;
                    } else if c == '{' {
                        depth += 1;
                    } else if c == '}' {
                        if depth == 0 {
                            break;
                        }
                        depth -= 1;
                    } else if c == '|' && depth == 0 {
                        options.push(std::mem::take(&mut choice));
                        continue;
                    }
                    choice.push(c);
                }
                options.push(choice);
                let pick = rand::random_range(0..options.len());
                result.push_str(&run(&options[pick]));
            } else {
                result.push(c);
            }
        }
        result
    }
    let out = run(input);
    let unescape = regex::Regex::new(r"\\([{}|])").expect("static regex");
    unescape.replace_all(&out, "$1").into_owned()
}

impl<'a> Converter<'a> {
    pub fn new(wf: &'a UiWorkflow, defs: &'a HashMap<String, NodeDef>) -> Result<Self, UiError> {
        let mut c = Converter {
            wf,
            defs,
            states: HashMap::new(),
            warnings: Vec::new(),
        };
        // Subgraph definitions are configured before the root graph, as in LGraph.configure.
        let mut keys: Vec<&String> = wf.subgraphs.keys().collect();
        keys.sort();
        for key in keys {
            let g = &wf.subgraphs[key];
            for n in &g.nodes {
                let s = c.instantiate(n)?;
                c.states.insert((key.clone(), n.id), s);
            }
        }
        for n in &wf.root.nodes {
            let s = c.instantiate(n)?;
            c.states.insert((String::new(), n.id), s);
        }
        // Promoted widgets of subgraph instances read their inner widgets: after all nodes.
        let instance_keys: Vec<(GraphKey, i64)> = c
            .states
            .iter()
            .filter(|(_, s)| matches!(s.kind, Kind::Subgraph(_)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut done = HashSet::new();
        for k in instance_keys {
            c.promote_widgets(&k, &mut done, 0)?;
        }
        Ok(c)
    }

    fn graph(&self, key: &str) -> &'a UiGraph {
        if key.is_empty() {
            &self.wf.root
        } else {
            &self.wf.subgraphs[key]
        }
    }

    fn instantiate(&self, n: &UiNode) -> Result<NodeState, UiError> {
        let saved_outputs = |n: &UiNode| -> Vec<(String, String, Vec<i64>)> {
            n.outputs
                .iter()
                .map(|o| (o.name.clone(), o.ty.clone(), o.links.clone()))
                .collect()
        };
        let base = |kind: Kind| NodeState {
            kind,
            class_type: n.ty.clone(),
            title: n.title.clone().unwrap_or_else(|| n.ty.clone()),
            mode: n.mode,
            inputs: n.inputs.clone(),
            outputs: saved_outputs(n),
            widgets: Vec::new(),
        };
        if self.wf.subgraphs.contains_key(&n.ty) {
            let g = &self.wf.subgraphs[&n.ty];
            let mut s = base(Kind::Subgraph(n.ty.clone()));
            // The frontend's subgraph node class merges by name, as for any node: the
            // definition's input slots carrying the saved links, then unknown saved inputs.
            let mut inputs: Vec<UiInput> = g
                .io_inputs
                .iter()
                .map(|slot| match n.inputs.iter().find(|i| i.name == slot.name) {
                    Some(saved) => UiInput {
                        ty: slot.ty.clone(),
                        ..saved.clone()
                    },
                    None => UiInput {
                        name: slot.name.clone(),
                        ty: slot.ty.clone(),
                        link: None,
                        widget: None,
                    },
                })
                .collect();
            for saved in &n.inputs {
                if !g.io_inputs.iter().any(|slot| slot.name == saved.name) {
                    inputs.push(saved.clone());
                }
            }
            s.inputs = inputs;
            let mut outputs: Vec<(String, String, Vec<i64>)> = g
                .io_outputs
                .iter()
                .map(|slot| (slot.name.clone(), slot.ty.clone(), Vec::new()))
                .collect();
            for (i, saved) in n.outputs.iter().enumerate() {
                let o = (saved.name.clone(), saved.ty.clone(), saved.links.clone());
                match outputs.get_mut(i) {
                    Some(slot) => *slot = o,
                    None => outputs.push(o),
                }
            }
            s.outputs = outputs;
            if n.title.is_none() {
                s.title = if g.name.is_empty() {
                    n.ty.clone()
                } else {
                    g.name.clone()
                };
            }
            return Ok(s);
        }
        match n.ty.as_str() {
            "Reroute" => return Ok(base(Kind::Reroute)),
            "Note" | "MarkdownNote" => return Ok(base(Kind::Note)),
            "PrimitiveNode" => return Ok(base(Kind::Primitive)),
            _ => {}
        }
        let Some(def) = self.defs.get(&n.ty) else {
            return Ok(base(Kind::Placeholder));
        };
        // ComfyNode.configure: the schema's slots, carrying the saved links by input name,
        // then any saved inputs the schema lacks.
        let mut inputs = Vec::new();
        for (name, ty, is_widget) in &def.slots {
            let saved = n.inputs.iter().find(|i| i.name == *name);
            inputs.push(UiInput {
                name: name.clone(),
                ty: ty.clone(),
                link: saved.and_then(|s| s.link),
                widget: if *is_widget {
                    Some(name.clone())
                } else {
                    saved.and_then(|s| s.widget.clone())
                },
            });
        }
        for saved in &n.inputs {
            if !def.slots.iter().any(|(name, _, _)| *name == saved.name) {
                inputs.push(saved.clone());
            }
        }
        let mut outputs = Vec::new();
        let count = def.outputs.len().max(n.outputs.len());
        for i in 0..count {
            let saved = n.outputs.get(i);
            match def.outputs.get(i) {
                Some((name, ty)) => outputs.push((
                    name.clone(),
                    ty.clone(),
                    saved.map(|s| s.links.clone()).unwrap_or_default(),
                )),
                None => {
                    let s = saved.expect("i < max");
                    outputs.push((s.name.clone(), s.ty.clone(), s.links.clone()));
                }
            }
        }
        let mut widgets: Vec<(WidgetDef, Json)> = def
            .widgets
            .iter()
            .map(|w| (w.clone(), w.default.clone()))
            .collect();
        if let Some(Json::Array(values)) = &n.widgets_values {
            let values = def.migrate_widget_values(values.clone());
            let mut counted = widgets.iter_mut().filter(|(w, _)| w.counted);
            for v in values {
                match counted.next() {
                    Some(w) => w.1 = v,
                    None => break,
                }
            }
        }
        Ok(NodeState {
            kind: Kind::Comfy,
            class_type: def.class_type.clone(),
            title: n.title.clone().unwrap_or_else(|| {
                extensions::display_name(&def.class_type)
                    .map(str::to_string)
                    .unwrap_or_else(|| def.display_name.clone())
            }),
            mode: n.mode,
            inputs,
            outputs,
            widgets,
        })
    }

    /// SubgraphNode widgets: one copy of the inner widget each subgraph input feeds, in input
    /// order, then the instance's saved `widgets_values` by index.
    fn promote_widgets(
        &mut self,
        key: &(GraphKey, i64),
        done: &mut HashSet<(GraphKey, i64)>,
        depth: usize,
    ) -> Result<(), UiError> {
        if done.contains(key) {
            return Ok(());
        }
        if depth > 64 {
            return Err(UiError::Recursion {
                message: format!("subgraph instance {} nests itself", key.1),
            });
        }
        let Some(state) = self.states.get(key) else {
            return Ok(());
        };
        let Kind::Subgraph(sub_id) = state.kind.clone() else {
            return Ok(());
        };
        let sub = &self.wf.subgraphs[&sub_id];
        let inputs = state.inputs.clone();
        let mut promoted: Vec<(WidgetDef, Json)> = Vec::new();
        let mut input_widgets: Vec<Option<String>> =
            inputs.iter().map(|i| i.widget.clone()).collect();
        for (idx, input) in inputs.iter().enumerate() {
            let Some(slot) = sub.io_inputs.iter().find(|s| s.name == input.name) else {
                continue;
            };
            for link_id in &slot.link_ids {
                let Some(link) = sub.links.get(link_id) else {
                    continue;
                };
                let inner_key = (sub_id.clone(), link.target_id);
                // A nested instance must have its own promoted widgets first.
                self.promote_widgets(&inner_key, done, depth + 1)?;
                let Some(inner) = self.states.get(&inner_key) else {
                    continue;
                };
                let inner_input = inner
                    .inputs
                    .iter()
                    .find(|i| i.link == Some(link.id))
                    .or_else(|| inner.inputs.get(link.target_slot as usize));
                let Some(widget_name) = inner_input.and_then(|i| i.widget.clone()) else {
                    continue;
                };
                let Some((w, v)) = inner.widgets.iter().find(|(w, _)| w.name == widget_name) else {
                    continue;
                };
                let mut copy = w.clone();
                copy.name = input.name.clone();
                promoted.push((copy, v.clone()));
                input_widgets[idx] = Some(input.name.clone());
                break;
            }
        }
        let saved_values = self
            .graph(&key.0)
            .node(key.1)
            .and_then(|n| n.widgets_values.clone());
        if let Some(Json::Array(values)) = saved_values {
            for (i, v) in values.into_iter().enumerate() {
                if let Some(w) = promoted.get_mut(i) {
                    w.1 = v;
                }
            }
        }
        let state = self.states.get_mut(key).expect("checked");
        state.widgets = promoted;
        for (input, w) in state.inputs.iter_mut().zip(input_widgets) {
            input.widget = w;
        }
        done.insert(key.clone());
        Ok(())
    }

    /// LGraph.computeExecutionOrder of the root graph (Kahn's algorithm over saved links).
    fn execution_order(&self) -> Vec<i64> {
        let g = &self.wf.root;
        let mut order = Vec::new();
        let mut pending: Vec<i64> = Vec::new();
        let mut remaining: HashMap<i64, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::new();
        for n in &g.nodes {
            let s = &self.states[&(String::new(), n.id)];
            let num = s.inputs.iter().filter(|i| i.link.is_some()).count();
            pending.push(n.id);
            if num == 0 {
                queue.push_back(n.id);
            } else {
                remaining.insert(n.id, num);
            }
        }
        let mut visited_links = HashSet::new();
        while let Some(id) = queue.pop_front() {
            order.push(id);
            pending.retain(|p| *p != id);
            let s = &self.states[&(String::new(), id)];
            for (_, _, links) in &s.outputs {
                for link_id in links {
                    let Some(link) = g.links.get(link_id) else {
                        continue;
                    };
                    if visited_links.contains(link_id) {
                        continue;
                    }
                    visited_links.insert(*link_id);
                    if g.node(link.target_id).is_none() {
                        continue;
                    }
                    if let Some(r) = remaining.get_mut(&link.target_id) {
                        *r = r.saturating_sub(1);
                        if *r == 0 {
                            queue.push_back(link.target_id);
                        }
                    }
                }
            }
        }
        // What is left (cycles) follows, in the order of a JS object's integer keys.
        let mut rest: Vec<i64> = pending.into_iter().filter(|p| !order.contains(p)).collect();
        rest.sort_by_key(|id| (if *id >= 0 { 0 } else { 1 }, *id));
        order.extend(rest);
        order
    }

    fn state(&self, path: &[i64], node: i64) -> Result<&NodeState, UiError> {
        let key = self.graph_key(path)?;
        self.states.get(&(key, node)).ok_or_else(|| UiError::Link {
            node: Dto {
                path: path.to_vec(),
                node,
            }
            .id(),
            message: "no such node".into(),
        })
    }

    fn graph_key(&self, path: &[i64]) -> Result<GraphKey, UiError> {
        let mut key = String::new();
        for id in path {
            match self.states.get(&(key.clone(), *id)).map(|s| &s.kind) {
                Some(Kind::Subgraph(sub)) => key = sub.clone(),
                _ => {
                    return Err(UiError::Link {
                        node: id.to_string(),
                        message: "is not a subgraph instance".into(),
                    })
                }
            }
        }
        Ok(key)
    }

    /// All node instances, flattened, in the frontend's nodeDtoMap order.
    fn flatten(&self) -> Result<Vec<Dto>, UiError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for id in self.execution_order() {
            let dto = Dto {
                path: vec![],
                node: id,
            };
            self.push_flat(dto, &mut out, &mut seen, 0)?;
        }
        Ok(out)
    }

    fn push_flat(
        &self,
        dto: Dto,
        out: &mut Vec<Dto>,
        seen: &mut HashSet<Dto>,
        depth: usize,
    ) -> Result<(), UiError> {
        if depth > 64 {
            return Err(UiError::Recursion {
                message: format!("subgraph instance {} nests itself", dto.id()),
            });
        }
        let state = self.state(&dto.path, dto.node)?;
        if seen.insert(dto.clone()) {
            out.push(dto.clone());
        }
        if let Kind::Subgraph(sub) = &state.kind {
            let mut path = dto.path.clone();
            path.push(dto.node);
            for n in &self.wf.subgraphs[sub].nodes {
                self.push_flat(
                    Dto {
                        path: path.clone(),
                        node: n.id,
                    },
                    out,
                    seen,
                    depth + 1,
                )?;
            }
        }
        Ok(())
    }

    /// PrimitiveNode.applyToGraph: the primitive's value replaces the widget of every input
    /// it is linked to.
    fn apply_primitives(&mut self, flat: &[Dto]) -> Result<(), UiError> {
        for dto in flat {
            let key = self.graph_key(&dto.path)?;
            let state = self.state(&dto.path, dto.node)?;
            if state.kind != Kind::Primitive {
                continue;
            }
            let g = self.graph(&key);
            let links = state
                .outputs
                .first()
                .map(|o| o.2.clone())
                .unwrap_or_default();
            if links.is_empty() {
                continue;
            }
            let saved = g.node(dto.node).and_then(|n| n.widgets_values.clone());
            // Its widget exists only when the first link reaches a widget input.
            let first_target = g.links.get(&links[0]).and_then(|l| {
                let t = self.states.get(&(key.clone(), l.target_id))?;
                let input = t.inputs.iter().find(|i| i.link == Some(l.id))?;
                let name = input.widget.clone()?;
                t.widget_value(&name).cloned()
            });
            let Some(initial) = first_target else {
                continue;
            };
            let value = match &saved {
                Some(Json::Array(v)) if !v.is_empty() => v[0].clone(),
                _ => initial,
            };
            if state.kind.eq(&Kind::Primitive)
                && g.node(dto.node)
                    .and_then(|n| n.properties.get("Run widget replace on values"))
                    .is_some_and(truthy)
                && truthy(&value)
            {
                self.warnings.push(format!(
                    "PrimitiveNode {}: \"Run widget replace on values\" is not applied by comfyrs",
                    dto.id()
                ));
            }
            for link_id in links {
                let Some(l) = g.links.get(&link_id) else {
                    continue;
                };
                let tkey = (key.clone(), l.target_id);
                let Some(t) = self.states.get_mut(&tkey) else {
                    continue;
                };
                let Some(name) = t
                    .inputs
                    .iter()
                    .find(|i| i.link == Some(l.id))
                    .and_then(|i| i.widget.clone())
                else {
                    continue;
                };
                if let Some(w) = t.widgets.iter_mut().find(|(w, _)| w.name == name) {
                    w.1 = value.clone();
                }
            }
        }
        Ok(())
    }

    fn resolve_input(
        &self,
        dto: &Dto,
        slot: usize,
        visited: &mut HashSet<String>,
        ty: Option<&str>,
    ) -> Result<Option<Resolved>, UiError> {
        let key = self.graph_key(&dto.path)?;
        let unique = format!("{key}:{}[I]{slot}", dto.node);
        if !visited.insert(unique) {
            return Err(UiError::Recursion {
                message: format!(
                    "circular reference while resolving input {slot} of node {}",
                    dto.id()
                ),
            });
        }
        let state = self.state(&dto.path, dto.node)?;
        let Some(input) = state.inputs.get(slot) else {
            return Err(UiError::Link {
                node: dto.id(),
                message: format!("has no input slot {slot}"),
            });
        };
        let Some(link_id) = input.link else {
            return Ok(None);
        };
        let g = self.graph(&key);
        let Some(link) = g.links.get(&link_id) else {
            return Err(UiError::Link {
                node: dto.id(),
                message: format!(
                    "input '{}' names link {link_id}, which does not exist",
                    input.name
                ),
            });
        };
        if !dto.path.is_empty() && link.origin_id == SUBGRAPH_INPUT_ID {
            // Up and out of the subgraph, through the instance's input.
            let parent_path = &dto.path[..dto.path.len() - 1];
            let inst_id = *dto.path.last().expect("non-empty");
            let parent_key = self.graph_key(parent_path)?;
            let inst = self.state(parent_path, inst_id)?;
            let Some(inst_input) = inst.inputs.get(link.origin_slot as usize) else {
                return Err(UiError::Link {
                    node: dto.id(),
                    message: format!("subgraph input slot {} does not exist", link.origin_slot),
                });
            };
            let Some(outer_id) = inst_input.link else {
                let widget = inst_input
                    .widget
                    .as_ref()
                    .and_then(|name| inst.widget_value(name));
                return Ok(widget.map(|v| Resolved::Widget(v.clone())));
            };
            let Some(outer) = self.graph(&parent_key).links.get(&outer_id) else {
                return Err(UiError::Link {
                    node: Dto {
                        path: parent_path.to_vec(),
                        node: inst_id,
                    }
                    .id(),
                    message: format!(
                        "input '{}' names link {outer_id}, which does not exist",
                        inst_input.name
                    ),
                });
            };
            let inst_dto = Dto {
                path: parent_path.to_vec(),
                node: inst_id,
            };
            // The frontend renumbers target slots after loading (fixLinkInputSlots): the
            // slot is the input holding this link.
            let target = inst
                .inputs
                .iter()
                .position(|i| i.link == Some(outer_id))
                .unwrap_or(outer.target_slot as usize);
            return self.resolve_input(&inst_dto, target, visited, None);
        }
        let origin = Dto {
            path: dto.path.clone(),
            node: link.origin_id,
        };
        if !self.states.contains_key(&(key, link.origin_id)) {
            return Err(UiError::Link {
                node: dto.id(),
                message: format!(
                    "input '{}' is linked from node {}, which does not exist",
                    input.name, link.origin_id
                ),
            });
        }
        let ty = ty.map(str::to_string).unwrap_or_else(|| input.ty.clone());
        self.resolve_output(&origin, link.origin_slot, &ty, visited)
    }

    fn resolve_output(
        &self,
        dto: &Dto,
        slot: i64,
        ty: &str,
        visited: &mut HashSet<String>,
    ) -> Result<Option<Resolved>, UiError> {
        let key = self.graph_key(&dto.path)?;
        let unique = format!("{key}:{}[O]{slot}", dto.node);
        if !visited.insert(unique) {
            return Err(UiError::Recursion {
                message: format!(
                    "circular reference while resolving output {slot} of node {}",
                    dto.id()
                ),
            });
        }
        let state = self.state(&dto.path, dto.node)?;
        if state.mode == MODE_BYPASS {
            let Some(i) = self.bypass_slot(dto, state, slot, ty)? else {
                return Ok(None);
            };
            return self.resolve_input(dto, i, visited, None);
        }
        if let Kind::Subgraph(sub_id) = &state.kind {
            let sub = &self.wf.subgraphs[sub_id];
            let Some(out) = sub.io_outputs.get(slot as usize) else {
                return Err(UiError::Link {
                    node: dto.id(),
                    message: format!("subgraph has no output slot {slot}"),
                });
            };
            let Some(inner) = out.link_ids.first().and_then(|l| sub.links.get(l)) else {
                return Ok(None);
            };
            let mut path = dto.path.clone();
            path.push(dto.node);
            let inner_dto = Dto {
                path,
                node: inner.origin_id,
            };
            return self.resolve_output(&inner_dto, inner.origin_slot, ty, visited);
        }
        if state.is_virtual() {
            if slot >= 0 && (slot as usize) < state.inputs.len() {
                return self.resolve_input(dto, slot as usize, visited, Some(ty));
            }
            return Ok(None);
        }
        Ok(Some(Resolved::Link(dto.id(), slot)))
    }

    /// ExecutableNodeDTO#getBypassSlotIndex.
    fn bypass_slot(
        &self,
        dto: &Dto,
        state: &NodeState,
        slot: i64,
        ty: &str,
    ) -> Result<Option<usize>, UiError> {
        let inputs = &state.inputs;
        let Some((_, output_ty, _)) = state.outputs.get(slot as usize) else {
            return Err(UiError::Link {
                node: dto.id(),
                message: format!("bypassed node has no output slot {slot}"),
            });
        };
        let slot = slot as usize;
        if ty == "*" || ty.is_empty() {
            return Ok(Some(if inputs.len() > slot { slot } else { 0 }));
        }
        if let Some(opposite) = inputs.get(slot) {
            if is_valid_connection(&opposite.ty, output_ty) && is_valid_connection(&opposite.ty, ty)
            {
                return Ok(Some(slot));
            }
        }
        if let Some(i) = inputs.iter().position(|i| i.ty == ty) {
            return Ok(Some(i));
        }
        Ok(inputs
            .iter()
            .position(|i| is_valid_connection(&i.ty, output_ty) && is_valid_connection(&i.ty, ty)))
    }

    /// applyTextReplacements: `%Node.widget%` takes a widget value of the node whose
    /// "Node name for S&R" (else title) is `Node`; `%date:FORMAT%` the local date and time.
    fn text_replacements(&self, value: &str, warnings: &mut Vec<String>) -> String {
        let re = regex::Regex::new(r"%([^%]+)%").expect("static regex");
        let out = re
            .replace_all(value, |caps: &regex::Captures| {
                let text = &caps[1];
                let whole = caps[0].to_string();
                let split: Vec<&str> = text.split('.').collect();
                if split.len() != 2 {
                    if let Some(fmt) = split[0].strip_prefix("date:") {
                        return format_date(fmt, &chrono::Local::now());
                    }
                    return whole;
                }
                let mut graphs: Vec<(&str, &UiGraph)> = vec![("", &self.wf.root)];
                let mut keys: Vec<&String> = self.wf.subgraphs.keys().collect();
                keys.sort();
                graphs.extend(
                    keys.into_iter()
                        .map(|k| (k.as_str(), &self.wf.subgraphs[k])),
                );
                let all: Vec<(&UiNode, &NodeState)> = graphs
                    .iter()
                    .flat_map(|(k, g)| {
                        g.nodes
                            .iter()
                            .filter_map(|n| Some((n, self.states.get(&(k.to_string(), n.id))?)))
                    })
                    .collect();
                let by_sr = |n: &UiNode, s: &NodeState| {
                    let sr = n
                        .properties
                        .get("Node name for S&R")
                        .and_then(Json::as_str)
                        .map(str::to_string)
                        .or_else(|| {
                            (!extensions::SAVE_NODE_TYPES.contains(&s.class_type.as_str()))
                                .then(|| n.ty.clone())
                        });
                    sr.as_deref() == Some(split[0])
                };
                let found = all
                    .iter()
                    .find(|(n, s)| by_sr(n, s))
                    .or_else(|| all.iter().find(|(_, s)| s.title == split[0]));
                let Some((_, state)) = found else {
                    warnings.push(format!(
                        "filename_prefix: no node named {:?} for {whole}",
                        split[0]
                    ));
                    return whole;
                };
                let Some(v) = state.widget_value(split[1]) else {
                    return whole;
                };
                let text = match v {
                    Json::String(s) => s.clone(),
                    Json::Null => String::new(),
                    other => js_numbers(other.clone()).to_string(),
                };
                text.chars()
                    .map(|c| {
                        if "/?<>\\:*|\"".contains(c) || (c as u32) < 0x20 || c as u32 == 0x7f {
                            '_'
                        } else {
                            c
                        }
                    })
                    .collect()
            })
            .into_owned();
        out
    }

    /// Runs the conversion: the API-format prompt, keys in the order JavaScript gives them.
    pub fn convert(mut self) -> Result<(Json, Vec<String>), UiError> {
        let flat = self.flatten()?;
        self.apply_primitives(&flat)?;
        let mut entries: Vec<(String, Json)> = Vec::new();
        let mut notes = Vec::new();
        let annotation = regex::Regex::new(r"(?i)\[(input|output|temp)\]").expect("static regex");
        for dto in &flat {
            let state = self.state(&dto.path, dto.node)?;
            if state.is_virtual() || state.mode == MODE_NEVER || state.mode == MODE_BYPASS {
                continue;
            }
            let mut inputs = Map::new();
            for (w, value) in &state.widgets {
                if w.kind == WidgetKind::FrontendOnly || w.name.is_empty() {
                    continue;
                }
                let mut value = js_numbers(value.clone());
                if let Json::String(s) = &value {
                    if w.name == "filename_prefix"
                        && extensions::SAVE_NODE_TYPES.contains(&state.class_type.as_str())
                    {
                        value = Json::String(self.text_replacements(s, &mut notes));
                    } else if w.dynamic_prompts {
                        value = Json::String(process_dynamic_prompt(s));
                    } else if let Some(folder) = &w.annotate_folder {
                        let annotated = annotation.is_match(s);
                        if !annotated {
                            value = Json::String(format!("{s} [{folder}]"));
                        }
                    }
                }
                inputs.insert(w.name.clone(), wrap_array(value));
            }
            for (i, input) in state.inputs.iter().enumerate() {
                let mut visited = HashSet::new();
                match self.resolve_input(dto, i, &mut visited, None)? {
                    None => {}
                    Some(Resolved::Widget(v)) => {
                        inputs.insert(input.name.clone(), wrap_array(js_numbers(v)));
                    }
                    Some(Resolved::Link(id, slot)) => {
                        inputs.insert(input.name.clone(), serde_json::json!([id, slot]));
                    }
                }
            }
            let mut node = Map::new();
            node.insert("inputs".into(), Json::Object(inputs));
            node.insert("class_type".into(), Json::String(state.class_type.clone()));
            node.insert(
                "_meta".into(),
                serde_json::json!({"title": state.title.clone()}),
            );
            let id = dto.id();
            match entries.iter_mut().find(|(k, _)| *k == id) {
                Some(e) => e.1 = Json::Object(node),
                None => entries.push((id, Json::Object(node))),
            }
        }
        self.warnings.extend(notes);
        // Drop links to nodes that were not emitted (muted, bypassed without a match, ...).
        let ids: HashSet<String> = entries.iter().map(|(k, _)| k.clone()).collect();
        for (_, node) in entries.iter_mut() {
            if let Some(Json::Object(inputs)) = node.get_mut("inputs") {
                inputs.retain(|_, v| match v {
                    Json::Array(a) if a.len() == 2 => match &a[0] {
                        Json::String(s) => ids.contains(s),
                        other => ids.contains(&other.to_string()),
                    },
                    _ => true,
                });
            }
        }
        // JavaScript object order: array-index keys ascending, then the rest as inserted.
        let (mut numeric, other): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(k, _)| js_number_key(k).is_some());
        numeric.sort_by_key(|(k, _)| js_number_key(k));
        let mut out = Map::new();
        for (k, v) in numeric.into_iter().chain(other) {
            out.insert(k, v);
        }
        Ok((Json::Object(out), self.warnings))
    }
}

/// Numbers as JavaScript writes them: a whole float is an integer (`1.0` is `1`).
fn js_numbers(v: Json) -> Json {
    match v {
        Json::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                Json::from(f as i64)
            }
            _ => Json::Number(n),
        },
        Json::Array(a) => Json::Array(a.into_iter().map(js_numbers).collect()),
        Json::Object(o) => Json::Object(o.into_iter().map(|(k, v)| (k, js_numbers(v))).collect()),
        other => other,
    }
}

fn wrap_array(v: Json) -> Json {
    if v.is_array() {
        serde_json::json!({ "__value__": v })
    } else {
        v
    }
}
