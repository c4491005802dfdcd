//! Validation as ComfyUI does it (spec §2.3), with all errors found in one pass and without
//! recursion on graph depth.

use super::convert::{convert, py_list_repr, py_str};
use super::{ExecGraph, GraphInput, GraphNode, ValidPrompt};
use crate::env::Environment;
use crate::node::{InputSpec, InputType, Inputs, NodeSchema, Registry, Section, Value};
use crate::workflow::{InputRef, Workflow};
use indexmap::{IndexMap, IndexSet};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;

/// A rejected prompt: ComfyUI's 400 body.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationFailure {
    /// `{"error": {"type", "message", "details", "extra_info"}, "node_errors": {node_id:
    /// {"errors", "dependent_outputs", "class_type"}}}`, boxed so `Result`s stay small.
    body: Box<Json>,
}

impl ValidationFailure {
    fn new(error: Json, node_errors: Json) -> Self {
        ValidationFailure {
            body: Box::new(json!({"error": error, "node_errors": node_errors})),
        }
    }
    fn top(kind: &str, message: &str, details: &str, extra: Json) -> Self {
        Self::new(
            json!({"type": kind, "message": message, "details": details, "extra_info": extra}),
            json!({}),
        )
    }
    /// ComfyUI's 400 body.
    pub fn to_json(&self) -> Json {
        (*self.body).clone()
    }
    /// The top-level error object.
    pub fn error(&self) -> &Json {
        &self.body["error"]
    }
    /// The per-node errors.
    pub fn node_errors(&self) -> &Json {
        &self.body["node_errors"]
    }
    /// The error `type` of the top-level error.
    pub fn kind(&self) -> &str {
        self.error()["type"].as_str().unwrap_or("")
    }
}

impl std::fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            self.error()["message"].as_str().unwrap_or("invalid prompt")
        )?;
        let details = self.error()["details"].as_str().unwrap_or("");
        if !details.is_empty() {
            write!(f, ": {details}")?;
        }
        if let Some(nodes) = self.node_errors().as_object() {
            for (id, entry) in nodes {
                let class = entry["class_type"].as_str().unwrap_or("?");
                for e in entry["errors"].as_array().into_iter().flatten() {
                    write!(
                        f,
                        "\n  node {id} ({class}): {}: {}",
                        e["message"].as_str().unwrap_or(""),
                        e["details"].as_str().unwrap_or("")
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn err(kind: &str, message: String, details: String, extra: Json) -> Json {
    json!({"type": kind, "message": message, "details": details, "extra_info": extra})
}

/// Validates `workflow` against `registry`. `targets` restricts which output nodes run
/// (ComfyUI's `partial_execution_targets`).
pub fn validate(
    workflow: &Workflow,
    registry: &Registry,
    env: &Environment,
    targets: Option<&[String]>,
) -> Result<ValidPrompt, ValidationFailure> {
    // Step 1: every class must exist (the first unknown one rejects the prompt).
    let mut outputs: Vec<&str> = Vec::new();
    for (id, node) in &workflow.nodes {
        let Some(schema) = registry.schema(&node.class_type) else {
            return Err(ValidationFailure::top(
                "invalid_prompt",
                &format!(
                    "Cannot execute because node {} does not exist.",
                    node.class_type
                ),
                &format!("Node ID '#{id}'"),
                json!({}),
            ));
        };
        if schema.output_node && targets.is_none_or(|t| t.iter().any(|x| x == id)) {
            outputs.push(id);
        }
    }
    // Step 2: something must be an output.
    if outputs.is_empty() {
        return Err(ValidationFailure::top(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
            json!({}),
        ));
    }

    // Every node the outputs reach, through links whose source exists.
    let ids: Vec<&str> = workflow.nodes.keys().map(String::as_str).collect();
    let pos: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut reached = vec![false; ids.len()];
    let mut stack: Vec<usize> = outputs.iter().map(|o| pos[o]).collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut reached[i], true) {
            continue;
        }
        let node = &workflow.nodes[i];
        for v in node.inputs.values() {
            if let InputRef::Link { node: src, .. } = InputRef::classify(v) {
                if let Some(&j) = pos.get(src) {
                    if !reached[j] {
                        stack.push(j);
                    }
                }
            }
        }
    }

    // Step 3: each reached node's own errors, and its converted inputs.
    let mut own_errors: Vec<Vec<Json>> = vec![Vec::new(); ids.len()];
    let mut converted: Vec<Vec<(String, Converted)>> = vec![Vec::new(); ids.len()];
    // Links whose source node exists, per node: the dependency edges (a link with a bad
    // output index still ties the two nodes for reporting and cycles).
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    for i in (0..ids.len()).filter(|&i| reached[i]) {
        let node = &workflow.nodes[i];
        let class = registry
            .get(&node.class_type)
            .expect("step 1 checked classes");
        let schema = class.schema.as_ref();
        let custom: &[&str] = class.node.custom_validated_inputs();
        let mut literals = Inputs::default();
        for spec in &schema.inputs {
            let name = spec.name.as_str();
            let Some(raw) = node.inputs.get(name) else {
                if spec.section == Section::Required {
                    own_errors[i].push(err(
                        "required_input_missing",
                        "Required input is missing".into(),
                        name.into(),
                        json!({"input_name": name}),
                    ));
                }
                continue;
            };
            let config = || schema.input_config(spec, env);
            match InputRef::classify(raw) {
                InputRef::BadLink => own_errors[i].push(err(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]".into(),
                    name.into(),
                    json!({"input_name": name, "input_config": config(), "received_value": raw}),
                )),
                InputRef::Link { node: src, slot } => {
                    let linked = json!([src, slot]);
                    let inner = |msg: String, ty: &str| {
                        err(
                            "exception_during_inner_validation",
                            "Exception when validating inner node".into(),
                            msg.clone(),
                            json!({"input_name": name, "input_config": config(),
                                   "exception_message": msg, "exception_type": ty,
                                   "traceback": [], "linked_node": linked}),
                        )
                    };
                    let Some(&j) = pos.get(src) else {
                        own_errors[i].push(inner(
                            format!(
                                "input '{name}' links to node '{src}', which is not in the prompt"
                            ),
                            "KeyError",
                        ));
                        continue;
                    };
                    deps[i].push(j);
                    let src_schema = registry
                        .schema(&workflow.nodes[j].class_type)
                        .expect("checked");
                    let Some(out) = src_schema.outputs.get(slot) else {
                        own_errors[i].push(inner(
                            format!(
                                "input '{name}' links to output {slot} of node '{src}' ({}), which has {} output(s)",
                                src_schema.name,
                                src_schema.outputs.len()
                            ),
                            "IndexError",
                        ));
                        continue;
                    };
                    if !types_match(&out.ty, spec) {
                        let declared = match &spec.ty {
                            InputType::Named(n) => n.clone(),
                            other => py_list_repr(&other.choices(env).unwrap_or_default()),
                        };
                        own_errors[i].push(err(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes".into(),
                            format!(
                                "{name}, received_type({}) mismatch input_type({declared})",
                                out.ty
                            ),
                            json!({"input_name": name, "input_config": config(),
                                   "received_type": out.ty, "linked_node": linked}),
                        ));
                        continue;
                    }
                    converted[i].push((name.into(), Converted::Link { source: j, slot }));
                }
                InputRef::Literal(v) => {
                    let conversion = match spec.ty.primitive() {
                        Some(kind) => convert(kind, v),
                        None => Err(format!(
                            "a {} input must be linked to a node output; a literal value cannot be converted",
                            type_name(&spec.ty)
                        )),
                    };
                    let value = match conversion {
                        Ok(value) => value,
                        Err(msg) => {
                            own_errors[i].push(err(
                                "invalid_input_type",
                                format!(
                                    "Failed to convert an input value to a {} value",
                                    type_name(&spec.ty)
                                ),
                                format!("{name}, {}, {msg}", py_str(v)),
                                json!({"input_name": name, "input_config": config(),
                                       "received_value": v, "exception_message": msg}),
                            ));
                            continue;
                        }
                    };
                    if !custom.contains(&name) {
                        if let Some(e) = check_range_and_choices(schema, spec, name, &value, v, env)
                        {
                            own_errors[i].push(e);
                            continue;
                        }
                    }
                    literals.insert(name, value.clone());
                    converted[i].push((name.into(), Converted::Literal(value)));
                }
            }
        }
        // VALIDATE_INPUTS, with literal inputs only.
        if !custom.is_empty() {
            if let Err(reason) = class.node.validate_inputs(env, &literals) {
                for name in custom {
                    if node.inputs.contains_key(*name) || schema.input_spec(name).is_some() {
                        own_errors[i].push(err(
                            "custom_validation_failed",
                            "Custom validation failed for node".into(),
                            format!("{name} - {reason}"),
                            json!({"input_name": name}),
                        ));
                    }
                }
            }
        }
    }

    // Cycles among reached nodes: each node on one gets ComfyUI's [L] dependency_cycle error.
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let gix: Vec<NodeIndex> = (0..ids.len()).map(|i| g.add_node(i)).collect();
    for i in (0..ids.len()).filter(|&i| reached[i]) {
        for &j in &deps[i] {
            g.add_edge(gix[j], gix[i], ());
        }
    }
    for scc in petgraph::algo::kosaraju_scc(&g) {
        let cyclic = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
        if !cyclic {
            continue;
        }
        let mut members: Vec<usize> = scc.iter().map(|ix| g[*ix]).collect();
        members.sort_unstable();
        let path = cycle_path(&members, &deps);
        let details = path
            .iter()
            .map(|&k| format!("{} ({})", ids[k], workflow.nodes[k].class_type))
            .collect::<Vec<_>>()
            .join(" -> ");
        let cycle_ids: Vec<&str> = members.iter().map(|&k| ids[k]).collect();
        for &k in &members {
            own_errors[k].push(err(
                "dependency_cycle",
                "Dependency cycle detected".into(),
                details.clone(),
                json!({"node_id": ids[k], "cycle_nodes": cycle_ids}),
            ));
        }
    }

    // Validity: no own errors and every linked ancestor valid. Kahn order; nodes never
    // released (on or behind a cycle) stay invalid.
    let mut valid = vec![false; ids.len()];
    let mut indegree = vec![0usize; ids.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    for i in (0..ids.len()).filter(|&i| reached[i]) {
        for &j in &deps[i] {
            indegree[i] += 1;
            consumers[j].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..ids.len())
        .filter(|&i| reached[i] && indegree[i] == 0)
        .collect();
    let mut all_deps_valid = vec![true; ids.len()];
    while let Some(i) = ready.pop() {
        valid[i] = own_errors[i].is_empty() && all_deps_valid[i];
        for &c in &consumers[i] {
            if !valid[i] {
                all_deps_valid[c] = false;
            }
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }

    // Steps 4-5: outputs that failed, and the errored nodes each depends on.
    let mut good: Vec<usize> = Vec::new();
    let mut node_errors: IndexMap<usize, (Vec<Json>, IndexSet<&str>)> = IndexMap::new();
    let mut failed_details: Vec<String> = Vec::new();
    for out in &outputs {
        let o = pos[out];
        if valid[o] {
            good.push(o);
            continue;
        }
        for e in &own_errors[o] {
            failed_details.push(format!(
                "{}: {}",
                e["message"].as_str().unwrap_or(""),
                e["details"].as_str().unwrap_or("")
            ));
        }
        for k in ancestors_of(o, &deps) {
            if !own_errors[k].is_empty() {
                let entry = node_errors
                    .entry(k)
                    .or_insert_with(|| (own_errors[k].clone(), IndexSet::new()));
                entry.1.insert(out);
            }
        }
    }
    node_errors.sort_keys();
    let node_errors_json: Map<String, Json> = node_errors
        .into_iter()
        .map(|(k, (errors, deps))| {
            (
                ids[k].to_string(),
                json!({"errors": errors, "dependent_outputs": deps.into_iter().collect::<Vec<_>>(),
                       "class_type": workflow.nodes[k].class_type}),
            )
        })
        .collect();
    if good.is_empty() {
        return Err(ValidationFailure::new(
            json!({"type": "prompt_outputs_failed_validation",
                   "message": "Prompt outputs failed validation",
                   "details": failed_details.join("\n"), "extra_info": {}}),
            Json::Object(node_errors_json),
        ));
    }

    // The DAG of everything the good outputs need.
    let mut needed: Vec<usize> = Vec::new();
    let mut seen = vec![false; ids.len()];
    for &o in &good {
        for k in ancestors_of(o, &deps) {
            if !std::mem::replace(&mut seen[k], true) {
                needed.push(k);
            }
        }
    }
    needed.sort_unstable();
    let mut graph: DiGraph<GraphNode, usize> = DiGraph::with_capacity(needed.len(), needed.len());
    let mut ix_of: HashMap<usize, NodeIndex> = HashMap::with_capacity(needed.len());
    for &k in &needed {
        let node = &workflow.nodes[k];
        let class = registry.get(&node.class_type).expect("checked").clone();
        let ix = graph.add_node(GraphNode {
            id: ids[k].to_string(),
            class,
            inputs: Vec::new(),
        });
        ix_of.insert(k, ix);
    }
    for &k in &needed {
        // Inputs in JSON order.
        let order = &workflow.nodes[k].inputs;
        let mut inputs: Vec<(String, GraphInput)> = std::mem::take(&mut converted[k])
            .into_iter()
            .map(|(name, c)| {
                let gi = match c {
                    Converted::Link { source, slot } => GraphInput::Link {
                        source: ix_of[&source],
                        slot,
                    },
                    Converted::Literal(v) => GraphInput::Literal(v),
                };
                (name, gi)
            })
            .collect();
        inputs.sort_by_key(|(name, _)| order.get_index_of(name).unwrap_or(usize::MAX));
        for (_, gi) in &inputs {
            if let GraphInput::Link { source, slot } = gi {
                graph.add_edge(*source, ix_of[&k], *slot);
            }
        }
        graph[ix_of[&k]].inputs = inputs;
    }
    let outputs_ix: Vec<NodeIndex> = good.iter().map(|o| ix_of[o]).collect();

    Ok(ValidPrompt {
        outputs: good.iter().map(|&o| ids[o].to_string()).collect(),
        node_errors: Json::Object(node_errors_json),
        prompt: converted_prompt(workflow, &graph),
        graph: ExecGraph {
            graph,
            outputs: outputs_ix,
        },
    })
}

/// The declared type as ComfyUI names it in conversion errors (`INT`, `MODEL`, `COMBO`).
fn type_name(ty: &InputType) -> &str {
    match ty {
        InputType::Named(n) => n,
        InputType::Combo(_) | InputType::DynamicCombo(_) => "COMBO",
    }
}

#[derive(Debug, Clone)]
enum Converted {
    Link { source: usize, slot: usize },
    Literal(Value),
}

/// Output type `received` may feed input `spec`: equal names, overlapping comma lists, or `*`.
fn types_match(received: &str, spec: &InputSpec) -> bool {
    let declared = match &spec.ty {
        InputType::Named(n) => n.as_str(),
        // A combo input only accepts a wildcard output.
        _ => return received == "*",
    };
    if received == declared || received == "*" || declared == "*" {
        return true;
    }
    let split = |s: &str| -> Vec<String> { s.split(',').map(|t| t.trim().to_string()).collect() };
    let a = split(received);
    split(declared).iter().any(|t| a.contains(t))
}

fn check_range_and_choices(
    schema: &NodeSchema,
    spec: &InputSpec,
    name: &str,
    value: &Value,
    raw: &Json,
    env: &Environment,
) -> Option<Json> {
    let shown = |v: &Value| match v {
        Value::Int(i) => i.to_string(),
        other => other.to_py_str(),
    };
    let as_json = |v: &Value| v.to_json().unwrap_or(Json::Null);
    let cmp_value = match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    if let Some(x) = cmp_value {
        // Exact for INTs beyond 2^53 (seeds): compare as integers when both are integers.
        let below = |bound: &Json| match (value, bound.as_i64(), bound.as_u64()) {
            (Value::Int(i), Some(b), _) => *i < b as i128,
            (Value::Int(i), None, Some(b)) => *i < b as i128,
            _ => bound.as_f64().is_some_and(|b| x < b),
        };
        let above = |bound: &Json| match (value, bound.as_i64(), bound.as_u64()) {
            (Value::Int(i), Some(b), _) => *i > b as i128,
            (Value::Int(i), None, Some(b)) => *i > b as i128,
            _ => bound.as_f64().is_some_and(|b| x > b),
        };
        if let Some(min) = spec.options.get("min") {
            if below(min) {
                return Some(err(
                    "value_smaller_than_min",
                    format!("Value {} smaller than min of {}", shown(value), py_str(min)),
                    name.into(),
                    json!({"input_name": name, "input_config": schema.input_config(spec, env),
                           "received_value": as_json(value)}),
                ));
            }
        }
        if let Some(max) = spec.options.get("max") {
            if above(max) {
                return Some(err(
                    "value_bigger_than_max",
                    format!("Value {} bigger than max of {}", shown(value), py_str(max)),
                    name.into(),
                    json!({"input_name": name, "input_config": schema.input_config(spec, env),
                           "received_value": as_json(value)}),
                ));
            }
        }
    }
    if let Some(choices) = spec.ty.choices(env) {
        let ok = matches!(value, Value::String(s) if choices.iter().any(|c| c == s));
        if !ok {
            let (list_info, config) = if choices.len() > 20 {
                (format!("(list of length {})", choices.len()), Json::Null)
            } else {
                (py_list_repr(&choices), schema.input_config(spec, env))
            };
            let shown_value = match raw {
                Json::String(s) => format!("'{s}'"),
                other => format!("'{}'", py_str(other)),
            };
            return Some(err(
                "value_not_in_list",
                "Value not in list".into(),
                format!("{name}: {shown_value} not in {list_info}"),
                json!({"input_name": name, "input_config": config, "received_value": raw}),
            ));
        }
    }
    None
}

/// `o` and every node it depends on, through resolved links (explicit stack).
fn ancestors_of(o: usize, deps: &[Vec<usize>]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![o];
    while let Some(k) = stack.pop() {
        if !seen.insert(k) {
            continue;
        }
        out.push(k);
        stack.extend(deps[k].iter().copied().filter(|d| !seen.contains(d)));
    }
    out
}

/// One concrete cycle through the members of a strongly connected component, as node
/// indexes with the first repeated at the end (for `A -> B -> A` messages).
fn cycle_path(members: &[usize], deps: &[Vec<usize>]) -> Vec<usize> {
    let start = members[0];
    // Walk dependencies inside the component until a node repeats.
    let mut path = vec![start];
    let mut at = start;
    loop {
        let next = deps[at]
            .iter()
            .copied()
            .find(|d| members.binary_search(d).is_ok())
            .expect("every member of a cyclic component has a dependency inside it");
        if let Some(p) = path.iter().position(|&x| x == next) {
            let mut cycle = path[p..].to_vec();
            cycle.push(next);
            // Reported in data-flow order (producer first).
            cycle.reverse();
            return cycle;
        }
        path.push(next);
        at = next;
    }
}

/// The prompt JSON with validated literals written back in converted form.
fn converted_prompt(workflow: &Workflow, graph: &DiGraph<GraphNode, usize>) -> Json {
    let mut prompt = workflow.to_json();
    for ix in graph.node_indices() {
        let node = &graph[ix];
        for (name, input) in &node.inputs {
            if let GraphInput::Literal(v) = input {
                if let Some(j) = v.to_json() {
                    prompt[&node.id]["inputs"][name] = j;
                }
            }
        }
    }
    prompt
}
