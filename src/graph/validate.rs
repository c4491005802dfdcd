//! Validation as ComfyUI does it (spec §2.3), with all errors found in one pass and without
//! recursion on graph depth.

use super::convert::{convert, py_list_repr, py_str};
use super::{ExecGraph, GraphInput, GraphNode, ValidPrompt};
use crate::env::Environment;
use crate::node::{InputSpec, InputType, Inputs, NodeClass, NodeSchema, Registry, Section, Value};
use crate::workflow::{InputRef, PromptRecord, Workflow};
use indexmap::{IndexMap, IndexSet};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{json, Map, Value as Json};
use std::borrow::Cow;

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
    workflow: Workflow,
    registry: &Registry,
    env: &Environment,
    targets: Option<&[String]>,
) -> Result<ValidPrompt, ValidationFailure> {
    // Step 1: every class must exist (the first unknown one rejects the prompt).
    // A class with dynamic inputs gets, for a node that uses some, its schema extended with
    // them (an owned copy); every other node borrows the registered class.
    let mut classes: Vec<Cow<NodeClass>> = Vec::with_capacity(workflow.nodes.len());
    let mut outputs: Vec<usize> = Vec::new();
    for (i, (id, node)) in workflow.nodes.iter().enumerate() {
        let Some(class) = registry.get(&node.class_type) else {
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
        if class.schema.output_node && targets.is_none_or(|t| t.iter().any(|x| x == id)) {
            outputs.push(i);
        }
        // As ComfyUI's get_input_data: an undeclared input reaches the node when it is a link,
        // or, for a flexible optional dict that answers to any name, whatever it holds; an
        // undeclared literal is otherwise dropped.
        let flexible = class
            .schema
            .dynamic_inputs
            .as_ref()
            .is_some_and(|d| d.listed_empty);
        let passed = node
            .inputs
            .iter()
            .filter(|(_, raw)| flexible || !matches!(InputRef::classify(raw), InputRef::Literal(_)))
            .map(|(name, _)| name.as_str());
        let class = match class.schema.for_inputs(passed) {
            None => Cow::Borrowed(class),
            Some(schema) => Cow::Owned(NodeClass {
                schema: std::sync::Arc::new(schema),
                ..class.clone()
            }),
        };
        classes.push(class);
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

    // Step 3, one walk from the outputs through declared inputs: each reached node's own
    // errors, converted inputs and dependencies. A link is resolved once, here. Node indexes
    // are workflow positions.
    let n = workflow.nodes.len();
    let id_of = |i: usize| node_id(&workflow, i);
    let mut reached = vec![false; n];
    let mut reached_count = 0;
    let mut own_errors: Vec<Vec<Json>> = vec![Vec::new(); n];
    let input_count = workflow.nodes.values().map(|node| node.inputs.len()).sum();
    let mut converted: FlatLists<ConvertedInput> = FlatLists::new(n, input_count);
    // Links whose source node exists, per node: the dependency edges (a link with a bad
    // output index still ties the two nodes for reporting and cycles).
    let mut deps: FlatLists<usize> = FlatLists::new(n, input_count);
    let mut stack: Vec<usize> = outputs.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut reached[i], true) {
            continue;
        }
        reached_count += 1;
        converted.open(i);
        deps.open(i);
        let node = &workflow.nodes[i];
        let class: &NodeClass = &classes[i];
        let schema = class.schema.as_ref();
        let custom: &[&str] = class.node.custom_validated_inputs();
        // Literal inputs for VALIDATE_INPUTS; only nodes that declare it need them.
        let mut literals = (!custom.is_empty()).then(Inputs::default);
        for (spec_index, spec) in schema.inputs.iter().enumerate() {
            let name = spec.name.as_str();
            // A linear scan: nodes have a handful of inputs, cheaper than hashing the name.
            let Some((json_pos, (_, raw))) = node
                .inputs
                .iter()
                .enumerate()
                .find(|(_, (k, _))| *k == name)
            else {
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
                    let linked = || json!([src, slot]);
                    let inner = |msg: String, ty: &str| {
                        err(
                            "exception_during_inner_validation",
                            "Exception when validating inner node".into(),
                            msg.clone(),
                            json!({"input_name": name, "input_config": config(),
                                   "exception_message": msg, "exception_type": ty,
                                   "traceback": [], "linked_node": linked()}),
                        )
                    };
                    let Some(j) = workflow.nodes.get_index_of(src) else {
                        own_errors[i].push(inner(
                            format!(
                                "input '{name}' links to node '{src}', which is not in the prompt"
                            ),
                            "KeyError",
                        ));
                        continue;
                    };
                    deps.push(j);
                    if !reached[j] {
                        stack.push(j);
                    }
                    let src_schema = classes[j].schema.as_ref();
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
                                   "received_type": out.ty, "linked_node": linked()}),
                        ));
                        continue;
                    }
                    converted.push(ConvertedInput {
                        spec_index,
                        json_pos,
                        value: Converted::Link { source: j, slot },
                    });
                }
                InputRef::Literal(v) => {
                    let conversion = match spec.ty.primitive() {
                        Some(kind) => convert(kind, v),
                        None => Err(format!(
                            "a {} input must be linked to a node output; a literal value cannot be converted",
                            type_name(&spec.ty)
                        )),
                    };
                    // NaN passes every min/max comparison and infinity every check
                    // without a bound; neither is a value any node can use.
                    let conversion = conversion.and_then(|value| match value {
                        Value::Float(f) if !f.is_finite() => Err(format!(
                            "{} is not a finite number",
                            Value::Float(f).to_py_str()
                        )),
                        value => Ok(value),
                    });
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
                    if let Value::String(text) = &value {
                        if text.len() > STRING_LITERAL_MAX_BYTES {
                            own_errors[i].push(err(
                                "value_too_long",
                                format!(
                                    "Value of {} bytes longer than the limit of {STRING_LITERAL_MAX_BYTES} bytes",
                                    text.len()
                                ),
                                name.into(),
                                json!({"input_name": name, "input_config": config(),
                                       "received_length": text.len()}),
                            ));
                            continue;
                        }
                    }
                    if !custom.contains(&name) {
                        if let Some(e) = check_range_and_choices(schema, spec, name, &value, v, env)
                        {
                            own_errors[i].push(e);
                            continue;
                        }
                    }
                    if let Some(literals) = literals.as_mut() {
                        literals.insert(name, value.clone());
                    }
                    converted.push(ConvertedInput {
                        spec_index,
                        json_pos,
                        value: Converted::Literal(value),
                    });
                }
            }
        }
        // VALIDATE_INPUTS, with literal inputs only.
        if let Some(literals) = &literals {
            if let Err(reason) = class.node.validate_inputs(env, literals) {
                for name in custom {
                    if node.inputs.contains_key(*name) || schema.input_spec(name).is_some() {
                        own_errors[i].push(err(
                            "custom_validation_failed",
                            "Custom validation failed for node".into(),
                            // ComfyUI: a bare False names only the input.
                            if reason.is_empty() {
                                name.to_string()
                            } else {
                                format!("{name} - {reason}")
                            },
                            json!({"input_name": name}),
                        ));
                    }
                }
            }
        }
    }

    // Validity: no own errors and every linked ancestor valid. Kahn order; nodes never
    // released are on or behind a cycle and stay invalid.
    let mut valid = vec![false; n];
    let mut indegree = vec![0usize; n];
    // Consumers of each node in one flat array (CSR): `consumers[start[j]..start[j + 1]]`.
    let mut start = vec![0usize; n + 1];
    for i in (0..n).filter(|&i| reached[i]) {
        indegree[i] = deps.of(i).len();
        for &j in deps.of(i) {
            start[j + 1] += 1;
        }
    }
    for j in 0..n {
        start[j + 1] += start[j];
    }
    let mut fill = start.clone();
    let mut consumers = vec![0usize; start[n]];
    for i in (0..n).filter(|&i| reached[i]) {
        for &j in deps.of(i) {
            consumers[fill[j]] = i;
            fill[j] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| reached[i] && indegree[i] == 0).collect();
    // Producers before consumers: the DAG's topological order, kept for planning.
    let mut release_order: Vec<usize> = Vec::with_capacity(reached_count);
    let mut all_deps_valid = vec![true; n];
    while let Some(i) = ready.pop() {
        release_order.push(i);
        valid[i] = own_errors[i].is_empty() && all_deps_valid[i];
        for &c in &consumers[start[i]..start[i + 1]] {
            if !valid[i] {
                all_deps_valid[c] = false;
            }
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    // Cycles (only when Kahn could not release everything): each node on one gets
    // ComfyUI's [L] dependency_cycle error.
    if release_order.len() < reached_count {
        report_cycles(&workflow, &reached, &deps, &mut own_errors);
    }

    // Steps 4-5: outputs that failed, and the errored nodes each depends on.
    let mut good: Vec<usize> = Vec::new();
    let mut node_errors: IndexMap<usize, (Vec<Json>, IndexSet<&str>)> = IndexMap::new();
    let mut failed_details: Vec<String> = Vec::new();
    let mut walk = AncestorWalk::new(n);
    for &o in &outputs {
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
        // Each node lists at most DEPENDENT_OUTPUTS_MAX failed outputs, so the body stays
        // linear in the prompt however many outputs share a broken ancestor.
        for k in walk.ancestors_of(o, &deps) {
            if !own_errors[k].is_empty() {
                let entry = node_errors
                    .entry(k)
                    .or_insert_with(|| (own_errors[k].clone(), IndexSet::new()));
                entry.1.insert(id_of(o));
            }
        }
    }
    node_errors.sort_keys();
    let node_errors_json: Map<String, Json> = node_errors
        .into_iter()
        .map(|(k, (errors, deps))| {
            (
                id_of(k).to_string(),
                json!({"errors": errors, "dependent_outputs": bounded(deps.into_iter(), DEPENDENT_OUTPUTS_MAX),
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

    // Everything the good outputs need (one walk from all of them); when every output is
    // good, that is everything reached.
    let needed_mark = if good.len() == outputs.len() {
        reached
    } else {
        let mut needed_mark = vec![false; n];
        let mut stack: Vec<usize> = good.clone();
        while let Some(k) = stack.pop() {
            if std::mem::replace(&mut needed_mark[k], true) {
                continue;
            }
            stack.extend(deps.of(k).iter().copied().filter(|&d| !needed_mark[d]));
        }
        needed_mark
    };
    let needed_count = needed_mark.iter().filter(|&&m| m).count();

    // The DAG of the needed nodes.
    let mut graph: DiGraph<GraphNode, usize> = DiGraph::with_capacity(needed_count, needed_count);
    let mut ix_of: Vec<NodeIndex> = vec![NodeIndex::end(); n];
    for k in (0..n).filter(|&k| needed_mark[k]) {
        ix_of[k] = graph.add_node(GraphNode {
            id: id_of(k).to_string(),
            class: classes[k].as_ref().clone(),
            inputs: Vec::new(),
        });
    }
    let mut rewrites: Vec<(usize, usize, Json)> = Vec::new();
    for k in (0..n).filter(|&k| needed_mark[k]) {
        let inputs = converted.of_mut(k);
        // Inputs in JSON order.
        inputs.sort_by_key(|c| c.json_pos);
        let inputs: Vec<(usize, GraphInput)> = inputs
            .iter_mut()
            .map(|c| {
                let taken = std::mem::replace(&mut c.value, Converted::Moved);
                let gi = match taken {
                    Converted::Link { source, slot } => {
                        graph.add_edge(ix_of[source], ix_of[k], slot);
                        GraphInput::Link {
                            source: ix_of[source],
                            slot,
                        }
                    }
                    Converted::Literal(v) => {
                        // The recorded prompt carries literals in converted form; most
                        // convert to themselves and are left as they are.
                        let raw = &workflow.nodes[k].inputs[c.json_pos];
                        if !v.json_form_is(raw) {
                            if let Some(json) = v.to_json() {
                                rewrites.push((k, c.json_pos, json));
                            }
                        }
                        GraphInput::Literal(v)
                    }
                    Converted::Moved => unreachable!("each converted input is taken once"),
                };
                (c.spec_index, gi)
            })
            .collect();
        graph[ix_of[k]].inputs = inputs;
    }
    let outputs_ix: Vec<NodeIndex> = good.iter().map(|&o| ix_of[o]).collect();
    let order: Vec<NodeIndex> = release_order
        .iter()
        .filter(|&&k| needed_mark[k])
        .map(|&k| ix_of[k])
        .collect();
    let output_ids: Vec<String> = good.iter().map(|&o| id_of(o).to_string()).collect();

    // The prompt as history and PNG metadata record it: every node, with the literals of
    // the nodes that run in converted form (written in place, as ComfyUI does).
    let mut workflow = workflow;
    for (k, pos, json) in rewrites {
        if let Some((_, node)) = workflow.nodes.get_index_mut(k) {
            if let Some((_, raw)) = node.inputs.get_index_mut(pos) {
                *raw = json;
            }
        }
    }

    Ok(ValidPrompt {
        outputs: output_ids,
        node_errors: Json::Object(node_errors_json),
        prompt: PromptRecord::new(workflow),
        graph: ExecGraph {
            graph,
            outputs: outputs_ix,
            order,
        },
    })
}

/// The id of the node at workflow position `i` (validation indexes nodes by position).
fn node_id(workflow: &Workflow, i: usize) -> &str {
    workflow
        .nodes
        .get_index(i)
        .expect("index in range")
        .0
        .as_str()
}

/// Adds ComfyUI's [L] `dependency_cycle` error to every reached node on a cycle.
fn report_cycles(
    workflow: &Workflow,
    reached: &[bool],
    deps: &FlatLists<usize>,
    own_errors: &mut [Vec<Json>],
) {
    let n = reached.len();
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let gix: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
    for i in (0..n).filter(|&i| reached[i]) {
        for &j in deps.of(i) {
            g.add_edge(gix[j], gix[i], ());
        }
    }
    let id_of = |i: usize| node_id(workflow, i);
    for scc in petgraph::algo::kosaraju_scc(&g) {
        let cyclic = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
        if !cyclic {
            continue;
        }
        let mut members: Vec<usize> = scc.iter().map(|ix| g[*ix]).collect();
        members.sort_unstable();
        let path = cycle_path(&members, deps);
        let step = |k: usize| format!("{} ({})", id_of(k), workflow.nodes[k].class_type);
        // Every member carries the message, so it is bounded in count and bytes (node ids
        // are the client's): a long cycle is shown by its first steps and its length
        // (ComfyUI lists it whole on every member, n² for n members).
        let shown = bounded(path.iter().map(|&k| step(k)), CYCLE_STEPS_SHOWN);
        let details = if shown.len() == path.len() {
            shown.join(" -> ")
        } else {
            format!(
                "{} -> ... ({} nodes in the cycle)",
                shown.join(" -> "),
                members.len()
            )
        };
        let cycle_ids = bounded(members.iter().map(|&k| id_of(k)), CYCLE_NODES_LISTED);
        for &k in &members {
            let mut extra = json!({"node_id": id_of(k), "cycle_nodes": cycle_ids});
            if cycle_ids.len() < members.len() {
                extra["cycle_size"] = json!(members.len());
            }
            own_errors[k].push(err(
                "dependency_cycle",
                "Dependency cycle detected".into(),
                details.clone(),
                extra,
            ));
        }
    }
}

/// The longest string literal an input takes (1 MiB). A prompt is copied into history,
/// every saved PNG and each WebSocket client's events, and a text encoder spends kilobytes
/// per character: no real input comes near this, and none may cost without bound.
pub const STRING_LITERAL_MAX_BYTES: usize = 1024 * 1024;

/// The most steps a cycle error's `details` shows, and the most ids its `cycle_nodes`
/// lists: each member of a cycle gets the error, so its size must not grow with the cycle.
pub const CYCLE_STEPS_SHOWN: usize = 8;
pub const CYCLE_NODES_LISTED: usize = 16;

/// The most bytes of client-chosen names one listing in an error carries.
pub const LISTING_BYTES_MAX: usize = 1024;

/// The leading `items` while there are at most `max` of them and they fit in
/// [`LISTING_BYTES_MAX`] bytes (at least one is always kept).
fn bounded<S: AsRef<str>>(items: impl Iterator<Item = S>, max: usize) -> Vec<S> {
    let mut bytes = 0;
    let mut out = Vec::new();
    for item in items.take(max) {
        bytes += item.as_ref().len();
        if bytes > LISTING_BYTES_MAX && !out.is_empty() {
            break;
        }
        out.push(item);
    }
    out
}

/// The declared type as ComfyUI names it in conversion errors (`INT`, `MODEL`, `COMBO`).
fn type_name(ty: &InputType) -> &str {
    match ty {
        InputType::Named(n) => n,
        InputType::Combo(_) | InputType::DynamicCombo(_) | InputType::MixedCombo(_) => "COMBO",
    }
}

#[derive(Debug, Clone)]
enum Converted {
    Link {
        source: usize,
        slot: usize,
    },
    Literal(Value),
    /// Already moved into the graph.
    Moved,
}

/// Per-node lists in one flat array, so validation allocates nothing per node. Nodes are
/// filled one at a time, in any order: `open(i)`, then `push`es for node `i`.
struct FlatLists<T> {
    items: Vec<T>,
    /// `items[start..end]` of each node (empty for nodes never opened).
    ranges: Vec<(usize, usize)>,
    open: usize,
}

impl<T> FlatLists<T> {
    fn new(nodes: usize, capacity: usize) -> Self {
        FlatLists {
            items: Vec::with_capacity(capacity),
            ranges: vec![(0, 0); nodes],
            open: 0,
        }
    }
    fn open(&mut self, node: usize) {
        self.open = node;
        self.ranges[node] = (self.items.len(), self.items.len());
    }
    fn push(&mut self, item: T) {
        self.items.push(item);
        self.ranges[self.open].1 += 1;
    }
    fn of(&self, node: usize) -> &[T] {
        let (start, end) = self.ranges[node];
        &self.items[start..end]
    }
    fn of_mut(&mut self, node: usize) -> &mut [T] {
        let (start, end) = self.ranges[node];
        &mut self.items[start..end]
    }
}

/// One validated input of a node, with its position in the node's JSON (graph inputs keep
/// the workflow's order).
#[derive(Debug, Clone)]
struct ConvertedInput {
    /// Index of the input's declaration in the class schema.
    spec_index: usize,
    json_pos: usize,
    value: Converted,
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
    let accepted = match value {
        Value::String(s) => spec.ty.has_choice(env, s),
        // A non-string literal can only match a mixed combo's non-string choices.
        other => other
            .to_json()
            .map_or(spec.ty.has_value(&Json::Null).map(|_| false), |j| {
                spec.ty.has_value(&j)
            }),
    };
    if accepted == Some(false) {
        let choices = spec.ty.choices(env).unwrap_or_default();
        {
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

/// The most failed outputs one node's `dependent_outputs` lists (ComfyUI lists them all;
/// without a bound, n outputs over a shared broken chain of n nodes make an n² body).
pub const DEPENDENT_OUTPUTS_MAX: usize = 64;

/// Walks from outputs to the nodes they depend on, visiting each node for at most
/// [`DEPENDENT_OUTPUTS_MAX`] outputs: O(max · (nodes + links)) in all, whatever the shape.
struct AncestorWalk {
    /// How many walks entered each node.
    visits: Vec<usize>,
    /// The walk that last entered each node (a `seen` set without clearing).
    last: Vec<usize>,
    generation: usize,
}

impl AncestorWalk {
    fn new(n: usize) -> Self {
        AncestorWalk {
            visits: vec![0; n],
            last: vec![usize::MAX; n],
            generation: 0,
        }
    }

    /// `o` and the nodes it depends on (explicit stack), less those already entered by
    /// [`DEPENDENT_OUTPUTS_MAX`] earlier walks: every walk that entered a node went on to
    /// all its ancestors, so those are full too and need no visit.
    fn ancestors_of(&mut self, o: usize, deps: &FlatLists<usize>) -> Vec<usize> {
        self.generation += 1;
        let g = self.generation;
        let mut out = Vec::new();
        let mut stack = vec![o];
        while let Some(k) = stack.pop() {
            if self.last[k] == g || self.visits[k] >= DEPENDENT_OUTPUTS_MAX {
                continue;
            }
            self.last[k] = g;
            self.visits[k] += 1;
            out.push(k);
            stack.extend(deps.of(k).iter().copied().filter(|&d| self.last[d] != g));
        }
        out
    }
}

/// One concrete cycle through the members of a strongly connected component, as node
/// indexes with the first repeated at the end (for `A -> B -> A` messages).
fn cycle_path(members: &[usize], deps: &FlatLists<usize>) -> Vec<usize> {
    let start = members[0];
    // Walk dependencies inside the component until a node repeats.
    let mut path = vec![start];
    let mut position: std::collections::HashMap<usize, usize> = [(start, 0)].into();
    let mut at = start;
    loop {
        let next = deps
            .of(at)
            .iter()
            .copied()
            .find(|d| members.binary_search(d).is_ok())
            .expect("every member of a cyclic component has a dependency inside it");
        if let Some(&p) = position.get(&next) {
            let mut cycle = path[p..].to_vec();
            cycle.push(next);
            // Reported in data-flow order (producer first).
            cycle.reverse();
            return cycle;
        }
        position.insert(next, path.len());
        path.push(next);
        at = next;
    }
}
