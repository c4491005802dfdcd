//! What a node sees while it runs, and what it gives back.

use super::Value;
use crate::env::Environment;
use crate::workflow::PromptRecord;
use indexmap::IndexMap;
use serde_json::{Map, Value as Json};
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A node's failure. `Interrupted` ends the run as `execution_interrupted`; anything else as
/// `execution_error` carrying this message and type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeError {
    #[error("interrupted")]
    Interrupted,
    #[error("{message}")]
    Failed {
        message: String,
        /// Shown as `exception_type` (ComfyUI reports the Python exception class).
        exception_type: String,
    },
}

impl NodeError {
    pub fn msg(message: impl Into<String>) -> Self {
        NodeError::Failed {
            message: message.into(),
            exception_type: "RuntimeError".into(),
        }
    }
    /// A bad input value (ComfyUI nodes raise ValueError for these).
    pub fn input(input: &str, problem: impl std::fmt::Display) -> Self {
        NodeError::Failed {
            message: format!("input '{input}': {problem}"),
            exception_type: "ValueError".into(),
        }
    }
}

impl From<anyhow::Error> for NodeError {
    fn from(e: anyhow::Error) -> Self {
        NodeError::msg(format!("{e:#}"))
    }
}

impl From<candle_core::Error> for NodeError {
    fn from(e: candle_core::Error) -> Self {
        NodeError::msg(e.to_string())
    }
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        NodeError::Failed {
            message: e.to_string(),
            exception_type: "OSError".into(),
        }
    }
}

/// What one call of a node returns: a value per declared output, and optionally a UI dict
/// (`{"images": [...]}`, `{"text": [...]}`) shown by clients and recorded in history.
#[derive(Debug, Clone, Default)]
pub struct NodeOutput {
    pub values: Vec<Value>,
    pub ui: Option<Map<String, Json>>,
}

impl NodeOutput {
    pub fn values(values: Vec<Value>) -> Self {
        NodeOutput { values, ui: None }
    }
    pub fn one(value: Value) -> Self {
        NodeOutput::values(vec![value])
    }
    pub fn ui(ui: Map<String, Json>) -> Self {
        NodeOutput {
            values: Vec::new(),
            ui: Some(ui),
        }
    }
    pub fn with_ui(mut self, ui: Map<String, Json>) -> Self {
        self.ui = Some(ui);
        self
    }
}

/// A node's literal inputs, built only when first read: the planner hands these to
/// [`super::Node::fingerprint`] for every node, and most nodes never look (ComfyUI only calls
/// IS_CHANGED on classes that define it).
pub struct LiteralInputs<'a> {
    build: &'a dyn Fn() -> Inputs,
    built: std::cell::OnceCell<Inputs>,
}

impl<'a> LiteralInputs<'a> {
    pub fn new(build: &'a dyn Fn() -> Inputs) -> Self {
        LiteralInputs {
            build,
            built: std::cell::OnceCell::new(),
        }
    }
}

impl LiteralInputs<'static> {
    /// Literal inputs that are already built (for callers outside the planner, e.g. tests).
    pub fn ready(inputs: Inputs) -> Self {
        let built = std::cell::OnceCell::new();
        let _ = built.set(inputs);
        LiteralInputs {
            build: &Inputs::default,
            built,
        }
    }
}

impl std::ops::Deref for LiteralInputs<'_> {
    type Target = Inputs;
    fn deref(&self) -> &Inputs {
        self.built.get_or_init(|| (self.build)())
    }
}

/// The inputs of one call, by name. Accessors return errors that name the input.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    values: IndexMap<String, Value>,
}

impl Inputs {
    pub fn new(values: IndexMap<String, Value>) -> Self {
        Inputs { values }
    }
    pub fn insert(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.values.iter()
    }
    pub fn require(&self, name: &str) -> Result<&Value, NodeError> {
        self.values
            .get(name)
            .ok_or_else(|| NodeError::input(name, "missing"))
    }
    pub fn int(&self, name: &str) -> Result<i128, NodeError> {
        match self.require(name)? {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i128),
            other => Err(NodeError::input(
                name,
                format!("expected INT, got {}", other.kind()),
            )),
        }
    }
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.require(name)? {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(NodeError::input(
                name,
                format!("expected FLOAT, got {}", other.kind()),
            )),
        }
    }
    pub fn string(&self, name: &str) -> Result<&str, NodeError> {
        match self.require(name)? {
            Value::String(s) => Ok(s),
            other => Err(NodeError::input(
                name,
                format!("expected STRING, got {}", other.kind()),
            )),
        }
    }
    pub fn boolean(&self, name: &str) -> Result<bool, NodeError> {
        match self.require(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(NodeError::input(
                name,
                format!("expected BOOLEAN, got {}", other.kind()),
            )),
        }
    }
    /// A payload of type `T` (MODEL, LATENT, ...).
    pub fn object<T: super::Payload>(&self, name: &str) -> Result<Arc<T>, NodeError> {
        let v = self.require(name)?;
        v.downcast::<T>().ok_or_else(|| {
            NodeError::input(
                name,
                format!(
                    "expected {}, got {}",
                    std::any::type_name::<T>()
                        .rsplit("::")
                        .next()
                        .unwrap_or("?"),
                    v.kind()
                ),
            )
        })
    }
}

/// An encoded image for the clients watching a run (ComfyUI's preview tuple): a latent
/// preview (JPEG) or an image a node sends instead of saving it (SaveImageWebsocket, PNG).
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewImage {
    pub format: PreviewFormat,
    pub bytes: std::sync::Arc<[u8]>,
}

/// The image formats of a preview, with ComfyUI's codes in the `PREVIEW_IMAGE` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewFormat {
    Jpeg,
    Png,
}

impl PreviewFormat {
    /// The frame's format field (`server.py` send_image: JPEG 1, PNG 2).
    pub fn code(self) -> u32 {
        match self {
            PreviewFormat::Jpeg => 1,
            PreviewFormat::Png => 2,
        }
    }
    /// The metadata's `image_type`.
    pub fn mime(self) -> &'static str {
        match self {
            PreviewFormat::Jpeg => "image/jpeg",
            PreviewFormat::Png => "image/png",
        }
    }
}

impl PreviewImage {
    pub fn jpeg(bytes: Vec<u8>) -> Self {
        PreviewImage {
            format: PreviewFormat::Jpeg,
            bytes: bytes.into(),
        }
    }
    pub fn png(bytes: Vec<u8>) -> Self {
        PreviewImage {
            format: PreviewFormat::Png,
            bytes: bytes.into(),
        }
    }
}

/// Receives progress reports of a running node (the executor forwards them as `progress`),
/// optionally with an image of the work so far.
pub trait ProgressSink: Send + Sync {
    fn progress(&self, node_id: &str, value: u64, max: u64, preview: Option<PreviewImage>);
    /// A message for the frontend (ComfyUI's `send_sync` from node code). Dropped by sinks
    /// with no clients.
    fn message(&self, _node_id: &str, _event: &str, _data: Json, _broadcast: bool) {}
}

/// The running node's view of the run.
pub struct NodeContext<'a> {
    pub node_id: &'a str,
    pub class_type: &'a str,
    pub prompt_id: &'a str,
    pub env: &'a Environment,
    /// The whole prompt (hidden input PROMPT), as embedded in saved PNGs: `prompt.json()`.
    pub prompt: &'a PromptRecord,
    /// `extra_data.extra_pnginfo` (hidden input EXTRA_PNGINFO).
    pub extra_pnginfo: Option<&'a Json>,
    /// State kept per (node id, class) across runs, like ComfyUI's node instances.
    pub state: &'a mut Option<Box<dyn Any + Send>>,
    pub(crate) interrupt: &'a AtomicBool,
    pub(crate) progress: &'a dyn ProgressSink,
}

impl<'a> NodeContext<'a> {
    /// A context for calling a node outside comfyrs' executor (a pack's tests, a host that
    /// runs nodes itself); [`crate::testing::NodeHarness`] is the ready-made one. `interrupt`
    /// is polled by [`NodeContext::check_interrupt`]; `progress` receives progress reports.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: &'a str,
        class_type: &'a str,
        prompt_id: &'a str,
        env: &'a Environment,
        prompt: &'a PromptRecord,
        extra_pnginfo: Option<&'a Json>,
        state: &'a mut Option<Box<dyn Any + Send>>,
        interrupt: &'a AtomicBool,
        progress: &'a dyn ProgressSink,
    ) -> Self {
        NodeContext {
            node_id,
            class_type,
            prompt_id,
            env,
            prompt,
            extra_pnginfo,
            state,
            interrupt,
            progress,
        }
    }
}

impl NodeContext<'_> {
    /// Returns `Err(Interrupted)` once the run has been asked to stop. Long-running nodes call
    /// this between steps.
    pub fn check_interrupt(&self) -> Result<(), NodeError> {
        if self.interrupt.load(Ordering::Relaxed) {
            Err(NodeError::Interrupted)
        } else {
            Ok(())
        }
    }
    /// Reports progress (`value` of `max`) and checks for an interrupt, as ComfyUI's progress
    /// bar hook does.
    pub fn progress(&self, value: u64, max: u64) -> Result<(), NodeError> {
        self.progress_with_preview(value, max, None)
    }

    /// Sends `{"type": event, "data": data}` to the frontend, as node code calling ComfyUI's
    /// `PromptServer.instance.send_sync(event, data, sid)` does: to the prompt's client, or
    /// to every client when `broadcast` (no sid).
    pub fn send_message(&self, event: &str, data: Json, broadcast: bool) {
        self.progress.message(self.node_id, event, data, broadcast);
    }

    /// [`progress`](Self::progress) with an image for the clients watching the run, as
    /// ComfyUI's progress bar carries one. Nodes draw latent previews only when
    /// `env.previews` is enabled.
    pub fn progress_with_preview(
        &self,
        value: u64,
        max: u64,
        preview: Option<PreviewImage>,
    ) -> Result<(), NodeError> {
        self.progress.progress(self.node_id, value, max, preview);
        self.check_interrupt()
    }
}
