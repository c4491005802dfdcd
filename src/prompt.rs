//! The front half of the pipeline, shared by the CLI and the servers: workflow JSON plus
//! overrides -> a validated, runnable prompt, or one error in ComfyUI's JSON shape.

use crate::env::Environment;
use crate::graph::{validate, ValidPrompt, ValidationFailure};
use crate::node::Registry;
use crate::workflow::{apply_overrides, OverrideError, Overrides, Workflow, WorkflowError};
use serde_json::Value as Json;

/// Why a prompt cannot run. Each variant renders as ComfyUI's 400 body.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{0}")]
    Workflow(#[from] WorkflowError),
    #[error("{0}")]
    Override(#[from] OverrideError),
    #[error("{0}")]
    Invalid(ValidationFailure),
}

impl PromptError {
    /// `{"error": {...}, "node_errors": {...}}`.
    pub fn to_comfy_json(&self) -> Json {
        match self {
            PromptError::Workflow(e) => e.to_comfy_json(),
            PromptError::Override(e) => e.to_comfy_json(),
            PromptError::Invalid(f) => f.to_json(),
        }
    }
}

/// Applies `overrides` to `workflow` strictly: an input must be on the node already or be
/// one its class declares in `registry`.
pub fn apply_registry_overrides(
    workflow: &mut Workflow,
    overrides: &Overrides,
    registry: &Registry,
) -> Result<(), OverrideError> {
    apply_overrides(workflow, overrides, |class| {
        registry
            .schema(class)
            .map(|s| s.inputs.iter().map(|i| i.name.as_str()).collect())
    })
}

/// Applies `overrides` to `workflow` (strictly) and validates the result.
pub fn prepare(
    mut workflow: Workflow,
    overrides: &Overrides,
    registry: &Registry,
    env: &Environment,
    targets: Option<&[String]>,
) -> Result<ValidPrompt, PromptError> {
    apply_registry_overrides(&mut workflow, overrides, registry)?;
    validate(workflow, registry, env, targets).map_err(PromptError::Invalid)
}
