//! What a job needs and what a node has, in the same terms, so a cluster store can match
//! them: node classes by name, model files as `folder/name`.
//!
//! A job's models are the literal inputs of its nodes that name a file in one of the model
//! folders of the submitting node (which validated the prompt against them); a worker
//! advertises every file of its model folders. The same model list is the job's affinity key:
//! a worker that ran it keeps those files loaded ([`WarmSet`]).

use crate::env::Environment;
use crate::node::Registry;
use crate::store::{Needs, NodeInfo};
use serde_json::Value as Json;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

/// The model folders loaders read (ComfyUI's folder names).
pub const MODEL_FOLDERS: &[&str] = &[
    "checkpoints",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "controlnet",
    "upscale_models",
    "model_patches",
    "gligen",
    "hypernetworks",
    "photomaker",
    "vae_approx",
];

/// Every model file of this node, as `folder/name`.
pub fn local_models(env: &Environment) -> Vec<String> {
    let mut out = BTreeSet::new();
    for folder in MODEL_FOLDERS {
        for name in env.paths.list_models(folder) {
            out.insert(format!("{folder}/{name}"));
        }
    }
    out.into_iter().collect()
}

/// The node classes this node can execute.
pub fn local_classes(registry: &Registry) -> Vec<String> {
    let mut v: Vec<String> = registry.names().map(str::to_string).collect();
    v.sort();
    v
}

/// What a validated API-format prompt needs: its class types, and each string input that
/// names a model file here (`folder/name`).
pub fn job_needs(prompt: &Json, env: &Environment) -> Needs {
    let mut classes = BTreeSet::new();
    let mut values = BTreeSet::new();
    if let Some(nodes) = prompt.as_object() {
        for node in nodes.values() {
            if let Some(c) = node["class_type"].as_str() {
                classes.insert(c.to_string());
            }
            if let Some(inputs) = node["inputs"].as_object() {
                for v in inputs.values() {
                    if let Some(s) = v.as_str() {
                        values.insert(s.to_string());
                    }
                }
            }
        }
    }
    let mut models = BTreeSet::new();
    if !values.is_empty() {
        for folder in MODEL_FOLDERS {
            for name in env.paths.list_models(folder) {
                if values.contains(&name) {
                    models.insert(format!("{folder}/{name}"));
                }
            }
        }
    }
    Needs {
        node_classes: classes.into_iter().collect(),
        models: models.into_iter().collect(),
    }
}

/// The model files a worker's loaders hold: those of its last few jobs (the loader caches keep
/// recently used models), newest first.
#[derive(Default)]
pub struct WarmSet {
    recent: Mutex<VecDeque<Vec<String>>>,
}

impl WarmSet {
    /// How many jobs' models count as warm.
    const DEPTH: usize = 2;

    pub fn ran(&self, models: Vec<String>) {
        if models.is_empty() {
            return;
        }
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|m| *m != models);
        r.push_front(models);
        r.truncate(Self::DEPTH);
    }

    pub fn clear(&self) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn models(&self) -> Vec<String> {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let set: BTreeSet<String> = r.iter().flatten().cloned().collect();
        set.into_iter().collect()
    }
}

/// This node's advertisement (the store fills id and heartbeat time).
pub fn node_info(
    role: &str,
    device: &str,
    registry: &Registry,
    models: Vec<String>,
    warm: Vec<String>,
    running: Option<String>,
) -> NodeInfo {
    NodeInfo {
        id: String::new(),
        role: role.to_string(),
        host: format!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            std::process::id()
        ),
        device: device.to_string(),
        node_classes: local_classes(registry),
        models,
        warm,
        running,
        heartbeat_at: 0,
    }
}
