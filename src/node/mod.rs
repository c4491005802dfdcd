//! The node API: what a node declares ([`NodeSchema`]), what it receives ([`Inputs`],
//! [`NodeContext`]) and what it returns ([`NodeOutput`] or [`NodeError`]). Built-in nodes and
//! custom node packs implement [`Node`] and register it in a [`Registry`].

mod context;
mod registry;
mod schema;
pub mod types;
mod value;

pub use context::{
    Inputs, LiteralInputs, NodeContext, NodeError, NodeOutput, PreviewFormat, PreviewImage,
    ProgressSink,
};
pub use registry::{NodeClass, Origin, PackRegistrar, RegisterFn, Registry, RegistryError};
pub use schema::{
    ChoicesFn, DynamicInputs, Hidden, InputSpec, InputType, NodeSchema, OutputSpec, Primitive,
    SchemaStyle, Section,
};
pub use value::{py_float_repr, Payload, PayloadAny, Value};

use crate::env::Environment;

/// A node's contribution to its cache signature beyond its inputs (ComfyUI's IS_CHANGED).
#[derive(Debug, Clone, PartialEq)]
pub enum Fingerprint {
    /// Outputs depend on the inputs alone.
    Stable,
    /// Outputs also depend on this token (e.g. a file's content hash).
    Token(String),
    /// Never reuse a cached output (ComfyUI's NaN).
    Always,
}

/// A node class. One instance serves every run; per-node-id state lives in
/// [`NodeContext::state`].
pub trait Node: Send + Sync + 'static {
    /// The declaration. Called once, at registration.
    fn schema(&self) -> NodeSchema;

    /// Runs the node once (per list element unless the schema says `input_is_list`).
    fn execute(&self, ctx: &mut NodeContext, inputs: &Inputs) -> Result<NodeOutput, NodeError>;

    /// ComfyUI's IS_CHANGED: called before execution with the literal inputs only (linked
    /// inputs are absent; they are built on first read).
    fn fingerprint(&self, _env: &Environment, _inputs: &LiteralInputs) -> Fingerprint {
        Fingerprint::Stable
    }

    /// Inputs whose literal values [`Node::validate_inputs`] checks instead of the generic
    /// min/max/choices checks (ComfyUI's VALIDATE_INPUTS parameters).
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &[]
    }

    /// ComfyUI's VALIDATE_INPUTS: called at validation with literal inputs only; `Err(reason)`
    /// becomes a `custom_validation_failed` error on each input named by
    /// [`Node::custom_validated_inputs`].
    fn validate_inputs(&self, _env: &Environment, _inputs: &Inputs) -> Result<(), String> {
        Ok(())
    }

    /// ComfyUI's `check_lazy_status`, for nodes with lazy inputs (see [`InputSpec::lazy`]):
    /// called before `execute` with every input available so far (a lazy input whose
    /// producer has not run is absent) and returns the names of the lazy inputs it needs.
    /// The executor runs their producers and asks again; the node executes once nothing
    /// more is needed. The default needs none: lazy inputs that never ran stay absent.
    fn check_lazy_status(
        &self,
        _ctx: &mut NodeContext,
        _inputs: &Inputs,
    ) -> Result<Vec<String>, NodeError> {
        Ok(Vec::new())
    }
}
