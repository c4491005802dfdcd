//! From a workflow to something runnable: validation against the registry (ComfyUI's rules and
//! error JSON), the petgraph DAG of the nodes the outputs need, and the plan (signatures,
//! what is cached, execution order).
//!
//! Nothing here recurses on graph depth: every walk uses an explicit stack or a topological
//! order, so a 100,000-node chain is as fine as a 10-node one.

mod convert;
mod plan;
mod validate;

pub use plan::{plan, strong_links, Plan, Signature};
pub use validate::{validate, ValidationFailure};

use crate::node::{NodeClass, Value};
use crate::workflow::PromptRecord;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

/// One node of the validated graph, ready to run.
#[derive(Clone)]
pub struct GraphNode {
    pub id: String,
    pub class: NodeClass,
    /// Inputs in the workflow's JSON order (only those the class declares), each as the
    /// index of its declaration in the class schema: names are not copied per node.
    pub inputs: Vec<(usize, GraphInput)>,
}

impl GraphNode {
    pub fn class_type(&self) -> &str {
        &self.class.schema.name
    }

    /// The name of the input declared at `spec` in the class schema.
    pub fn input_name(&self, spec: usize) -> &str {
        &self.class.schema.inputs[spec].name
    }

    /// Inputs with their names, in JSON order.
    pub fn named_inputs(&self) -> impl Iterator<Item = (&str, &GraphInput)> {
        self.inputs
            .iter()
            .map(|(spec, input)| (self.input_name(*spec), input))
    }
}

/// A validated input: a link to another node's output, or a converted literal.
#[derive(Debug, Clone)]
pub enum GraphInput {
    Link { source: NodeIndex, slot: usize },
    Literal(Value),
}

/// The validated DAG (edges run producer -> consumer) of every node some output needs.
pub struct ExecGraph {
    pub graph: DiGraph<GraphNode, usize>,
    /// Output nodes to run, in workflow order.
    pub outputs: Vec<NodeIndex>,
    /// Every node, producers before consumers (validation's topological order).
    pub order: Vec<NodeIndex>,
}

impl ExecGraph {
    pub fn node(&self, ix: NodeIndex) -> &GraphNode {
        &self.graph[ix]
    }
    pub fn find(&self, id: &str) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|&ix| self.graph[ix].id == id)
    }
}

/// A prompt that passed validation.
pub struct ValidPrompt {
    pub graph: ExecGraph,
    /// Ids of the outputs that will run (workflow order).
    pub outputs: Vec<String>,
    /// Errors of outputs that were dropped while others stayed valid (ComfyUI returns these
    /// with a 200). `{}` when every output is valid.
    pub node_errors: Json,
    /// The prompt with literals converted as validation converted them (what history and PNG
    /// metadata record); its JSON is built on first use.
    pub prompt: PromptRecord,
}
