//! Planning a run: each node's cache signature, which nodes must execute, and in what order
//! ties are broken. Producers reached only through lazy inputs are not planned: the executor
//! schedules them when the node asks for them.
//!
//! Signature = hash(class, fingerprint (IS_CHANGED), node id if the node is not idempotent or
//! asks for its UNIQUE_ID, each input in declaration order: its declaration's index, then the
//! literal, or the producer's signature and output index). The class name fixes what each
//! declaration index means, so equal signatures mean equal outputs, whatever the node ids and
//! whatever order the JSON listed the inputs in.

use super::{ExecGraph, GraphInput, GraphNode};
use crate::env::Environment;
use crate::node::{Fingerprint, Hidden, Inputs, LiteralInputs, Value};
use petgraph::graph::NodeIndex;
use petgraph::Direction;

/// A node's cache key.
pub type Signature = [u8; 32];

/// What a run will do.
pub struct Plan {
    /// Signature of every node, by `NodeIndex::index()`.
    pub signatures: Vec<Signature>,
    /// Nodes that execute (or, for cached output nodes, replay their UI), by index.
    pub scheduled: Vec<bool>,
    /// Tie-break rank among ready nodes: lower runs first (ComfyUI's heuristic: output nodes,
    /// then nodes feeding an output, then nodes two steps away, then the rest).
    pub rank: Vec<(u8, usize)>,
}

impl Plan {
    pub fn scheduled_nodes(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.scheduled
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| NodeIndex::new(i))
    }
}

/// Plans `graph`. `is_cached(sig)` says whether the output cache holds a signature.
pub fn plan(graph: &ExecGraph, env: &Environment, is_cached: impl Fn(&Signature) -> bool) -> Plan {
    let g = &graph.graph;
    let n = g.node_count();
    let order = &graph.order;
    let mut signatures = vec![[0u8; 32]; n];
    let (mut buf, mut by_decl) = (Vec::with_capacity(256), Vec::new());
    for &ix in order {
        signatures[ix.index()] = signature_of(graph, ix, &signatures, env, &mut buf, &mut by_decl);
    }

    // Walk up from the outputs; cached nodes end the walk (their producers are not needed).
    let mut scheduled = vec![false; n];
    let mut discovery = vec![usize::MAX; n];
    let mut counter = 0;
    let mut is_output = vec![false; n];
    for o in &graph.outputs {
        is_output[o.index()] = true;
    }
    let mut stack: Vec<NodeIndex> = graph.outputs.iter().rev().copied().collect();
    while let Some(ix) = stack.pop() {
        if scheduled[ix.index()] {
            continue;
        }
        let is_output = is_output[ix.index()];
        if !is_output && is_cached(&signatures[ix.index()]) {
            continue;
        }
        scheduled[ix.index()] = true;
        discovery[ix.index()] = counter;
        counter += 1;
        if is_output && is_cached(&signatures[ix.index()]) {
            continue;
        }
        for (source, _) in strong_links(&g[ix]).rev() {
            if !scheduled[source.index()] {
                stack.push(source);
            }
        }
    }

    // Distance (in links, capped at 3) to the nearest output node downstream.
    let mut dist = vec![3u8; n];
    for &ix in order.iter().rev() {
        if g[ix].class.schema.output_node {
            dist[ix.index()] = 0;
            continue;
        }
        let d = g
            .neighbors_directed(ix, Direction::Outgoing)
            .map(|c| dist[c.index()].saturating_add(1))
            .min()
            .unwrap_or(3)
            .min(3);
        dist[ix.index()] = d;
    }
    let rank = (0..n).map(|i| (dist[i], discovery[i])).collect();
    Plan {
        signatures,
        scheduled,
        rank,
    }
}

/// A node's links that must run before it does: every link except those into lazy inputs
/// (their producers run only when the node asks for them, ComfyUI's `check_lazy_status`).
pub fn strong_links(node: &GraphNode) -> impl DoubleEndedIterator<Item = (NodeIndex, usize)> + '_ {
    node.inputs.iter().filter_map(|(decl, input)| match input {
        GraphInput::Link { source, slot } if !node.class.schema.inputs[*decl].is_lazy() => {
            Some((*source, *slot))
        }
        _ => None,
    })
}

/// Hashes one node's identity into `buf` and returns the digest: one BLAKE3 call per node
/// instead of a streaming update per field. `buf` and `by_decl` are scratch space reused
/// across nodes.
fn signature_of(
    graph: &ExecGraph,
    ix: NodeIndex,
    signatures: &[Signature],
    env: &Environment,
    buf: &mut Vec<u8>,
    by_decl: &mut Vec<(usize, usize)>,
) -> Signature {
    let node = &graph.graph[ix];
    let schema = &node.class.schema;
    buf.clear();
    buf.extend_from_slice(schema.name.as_bytes());
    buf.push(0);

    // IS_CHANGED, with literal inputs only (built only if the node reads them).
    let build = || {
        let mut literals = Inputs::default();
        for (name, input) in node.named_inputs() {
            if let GraphInput::Literal(v) = input {
                literals.insert(name, v.clone());
            }
        }
        literals
    };
    match node
        .class
        .node
        .fingerprint(env, &LiteralInputs::new(&build))
    {
        Fingerprint::Stable => buf.push(b'S'),
        Fingerprint::Token(t) => {
            buf.extend_from_slice(b"token");
            buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
            buf.extend_from_slice(t.as_bytes());
        }
        // Never equal to anything: a fresh random salt.
        Fingerprint::Always => {
            buf.extend_from_slice(b"always");
            buf.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
    }
    if schema.not_idempotent || schema.hidden.contains(&Hidden::UniqueId) {
        buf.extend_from_slice(b"id");
        buf.extend_from_slice(node.id.as_bytes());
        buf.push(0);
    }
    // Inputs in declaration order, so the JSON order of inputs does not matter.
    by_decl.clear();
    by_decl.extend(
        node.inputs
            .iter()
            .enumerate()
            .map(|(i, (decl, _))| (*decl, i)),
    );
    by_decl.sort_unstable();
    for &(decl, i) in by_decl.iter() {
        buf.extend_from_slice(&(decl as u32).to_le_bytes());
        match &node.inputs[i].1 {
            GraphInput::Link { source, slot } => {
                buf.push(b'L');
                buf.extend_from_slice(&signatures[source.index()]);
                buf.extend_from_slice(&(*slot as u32).to_le_bytes());
            }
            GraphInput::Literal(v) => {
                buf.push(b'V');
                hash_value(buf, v);
            }
        }
    }
    *blake3::hash(buf).as_bytes()
}

/// Appends an unambiguous encoding of a literal to the signature bytes.
fn hash_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) => {
            h.push(b'i');
            h.extend_from_slice(&i.to_le_bytes());
        }
        // A FLOAT literal equal to an integer hashes like Python's equal-comparing int would
        // not: ComfyUI converts first, so FLOAT inputs always hold floats here.
        Value::Float(f) => {
            h.push(b'f');
            h.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::String(s) => {
            h.push(b's');
            h.extend_from_slice(&(s.len() as u64).to_le_bytes());
            h.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => {
            h.push(if *b { b'T' } else { b'F' });
        }
        Value::Json(j) => {
            let s = j.to_string();
            h.push(b'j');
            h.extend_from_slice(&(s.len() as u64).to_le_bytes());
            h.extend_from_slice(s.as_bytes());
        }
        Value::List(items) => {
            h.push(b'[');
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(h, item);
            }
        }
        // Literals are never objects; if one ever is, it must not share an entry.
        Value::Object(_) => {
            h.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Paths;
    use crate::graph::validate;
    use crate::node::Registry;
    use crate::workflow::parse_workflow;

    /// The signature of every node, keyed by node id.
    fn signatures(text: &str) -> std::collections::HashMap<String, Signature> {
        let registry = Registry::with_builtin_nodes();
        let env = Environment::new(Paths::under(
            &std::env::temp_dir().join("comfyrs-plan-test"),
        ));
        let valid = validate(parse_workflow(text).unwrap(), &registry, &env, None).unwrap();
        let p = plan(&valid.graph, &env, |_| false);
        let g = &valid.graph.graph;
        g.node_indices()
            .map(|ix| (g[ix].id.clone(), p.signatures[ix.index()]))
            .collect()
    }

    #[test]
    fn signatures_ignore_ids_and_input_order_but_not_values() {
        let a = signatures(
            r#"{"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
                "2": {"class_type": "StringConcatenate",
                      "inputs": {"string_a": ["1", 0], "string_b": "y", "delimiter": "-"}},
                "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}"#,
        );
        let reordered = signatures(
            r#"{"a": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
                "b": {"class_type": "StringConcatenate",
                      "inputs": {"delimiter": "-", "string_b": "y", "string_a": ["a", 0]}},
                "c": {"class_type": "PreviewAny", "inputs": {"source": ["b", 0]}}}"#,
        );
        assert_eq!(a["1"], reordered["a"]);
        assert_eq!(a["2"], reordered["b"]);
        // The same strings in swapped inputs are different work.
        let swapped = signatures(
            r#"{"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
                "2": {"class_type": "StringConcatenate",
                      "inputs": {"string_a": ["1", 0], "string_b": "-", "delimiter": "y"}},
                "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}"#,
        );
        assert_eq!(a["1"], swapped["1"]);
        assert_ne!(a["2"], swapped["2"]);
        assert_ne!(
            a["3"], swapped["3"],
            "a changed producer changes its consumers"
        );
    }
}
