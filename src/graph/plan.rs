//! Planning a run: each node's cache signature, which nodes must execute, and in what order
//! ties are broken.
//!
//! Signature = hash(class, fingerprint (IS_CHANGED), node id if the node is not idempotent or
//! asks for its UNIQUE_ID, each input by sorted name: the literal, or the producer's signature
//! and output index). Equal signatures mean equal outputs, whatever the node ids.

use super::{ExecGraph, GraphInput};
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
    let order = petgraph::algo::toposort(g, None).expect("validation rejected cycles");
    let mut signatures = vec![[0u8; 32]; n];
    let mut buf = Vec::with_capacity(256);
    for &ix in &order {
        signatures[ix.index()] = signature_of(graph, ix, &signatures, env, &mut buf);
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
        for (_, input) in g[ix].inputs.iter().rev() {
            if let GraphInput::Link { source, .. } = input {
                if !scheduled[source.index()] {
                    stack.push(*source);
                }
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

/// Hashes one node's identity into `buf` (reused across nodes) and returns the digest: one
/// BLAKE3 call per node instead of a streaming update per field.
fn signature_of(
    graph: &ExecGraph,
    ix: NodeIndex,
    signatures: &[Signature],
    env: &Environment,
    buf: &mut Vec<u8>,
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
        Fingerprint::Stable => buf.extend_from_slice(b"stable"),
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
    // Inputs by name, so the JSON order of inputs does not matter.
    let mut order: Vec<usize> = (0..node.inputs.len()).collect();
    let name_of = |i: usize| node.input_name(node.inputs[i].0);
    order.sort_unstable_by(|&a, &b| name_of(a).cmp(name_of(b)));
    for i in order {
        let (name, input) = (name_of(i), &node.inputs[i].1);
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        match input {
            GraphInput::Link { source, slot } => {
                buf.push(b'L');
                buf.extend_from_slice(&signatures[source.index()]);
                buf.extend_from_slice(&(*slot as u64).to_le_bytes());
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
