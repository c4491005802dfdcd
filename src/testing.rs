//! Running one node outside the executor and the server: what a pack author's tests (and
//! comfyrs' own) use to call `execute()` on inputs and check the outputs.
//!
//! [`NodeHarness`] holds a [`Registry`] (the built-ins plus the packs under test), an
//! [`Environment`] and per-node state. [`NodeHarness::run`] calls a class's `execute` the way
//! the executor calls it for one node (one call; an `input_is_list` node gets its inputs as
//! lists), with no validation: inputs are given as already-converted [`Value`]s.

use crate::env::{Environment, Paths};
use crate::node::{
    Inputs, NodeContext, NodeError, NodeOutput, PreviewImage, ProgressSink, RegisterFn, Registry,
    RegistryError, Value,
};
use crate::workflow::{PromptRecord, Workflow};
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// Progress reports a node made, as `(value, max)`.
#[derive(Default)]
pub struct RecordedProgress(Mutex<Vec<(u64, u64)>>);

impl RecordedProgress {
    pub fn take(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ProgressSink for RecordedProgress {
    fn progress(&self, _node_id: &str, value: u64, max: u64, _preview: Option<PreviewImage>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((value, max));
    }
}

/// Runs nodes of a registry one call at a time.
pub struct NodeHarness {
    pub registry: Registry,
    pub env: Environment,
    pub progress: RecordedProgress,
    /// `extra_data.extra_pnginfo` handed to nodes (hidden input EXTRA_PNGINFO).
    pub extra_pnginfo: Option<Json>,
    prompt: PromptRecord,
    interrupt: AtomicBool,
    states: HashMap<String, Option<Box<dyn Any + Send>>>,
}

impl NodeHarness {
    /// The built-in nodes plus `packs`, loaded as the CLI loads them (a clash is an error).
    pub fn new(packs: &[RegisterFn]) -> Result<Self, RegistryError> {
        Ok(Self::with_registry(Registry::load(
            crate::nodes::register_builtin,
            packs,
        )?))
    }

    /// A harness over any registry, with default paths (models, input and output under the
    /// current directory).
    pub fn with_registry(registry: Registry) -> Self {
        NodeHarness {
            registry,
            env: Environment::new(Paths::under(std::path::Path::new("."))),
            progress: RecordedProgress::default(),
            extra_pnginfo: None,
            prompt: PromptRecord::new(Workflow::default()),
            interrupt: AtomicBool::new(false),
            states: HashMap::new(),
        }
    }

    /// The prompt nodes see as the hidden PROMPT (and whose input order they may read).
    pub fn set_prompt(&mut self, workflow: Workflow) {
        self.prompt = PromptRecord::new(workflow);
    }

    /// The class's `/object_info` entry.
    pub fn object_info(&self, class: &str) -> Option<Json> {
        self.registry
            .schema(class)
            .map(|s| s.object_info(&self.env))
    }

    /// Calls `class`'s `execute` once as node `"1"`.
    pub fn run<'a>(
        &mut self,
        class: &str,
        inputs: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Result<NodeOutput, NodeError> {
        self.run_as("1", class, inputs)
    }

    /// Calls `class`'s `execute` once as node `node_id` (per-node state is kept by id, as
    /// across runs of a server).
    pub fn run_as<'a>(
        &mut self,
        node_id: &str,
        class: &str,
        inputs: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Result<NodeOutput, NodeError> {
        let nc = self
            .registry
            .get(class)
            .ok_or_else(|| NodeError::msg(format!("node class '{class}' is not registered")))?
            .clone();
        let values: IndexMap<String, Value> = inputs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let state = self
            .states
            .entry(format!("{node_id}\u{0}{class}"))
            .or_default();
        let mut ctx = NodeContext::new(
            node_id,
            class,
            "test",
            &self.env,
            &self.prompt,
            self.extra_pnginfo.as_ref(),
            state,
            &self.interrupt,
            &self.progress,
        );
        let out = nc.node.execute(&mut ctx, &Inputs::new(values))?;
        if out.values.len() != nc.schema.outputs.len() {
            return Err(NodeError::msg(format!(
                "{class} returned {} value(s) but declares {} output(s)",
                out.values.len(),
                nc.schema.outputs.len()
            )));
        }
        Ok(out)
    }
}
