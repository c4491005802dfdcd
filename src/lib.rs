//! comfyrs: a ComfyUI-compatible workflow executor.
//!
//! Data flows one way: [`workflow`] (API-format JSON, overrides) -> [`graph`] (validation, the
//! DAG, the plan) -> [`exec`] (cache, scheduling, events) -> outputs. Nodes implement
//! [`node::Node`] and live in [`nodes`]; [`env`] says where files are.

pub mod env;
pub mod exec;
pub mod graph;
pub mod node;
pub mod nodes;
pub mod prompt;
pub mod queue;
pub mod server;
pub mod store;
pub mod workflow;
