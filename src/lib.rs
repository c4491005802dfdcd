//! comfyrs: a ComfyUI-compatible workflow executor.
//!
//! Data flows one way: [`workflow`] (API-format JSON, overrides) -> [`graph`] (validation, the
//! DAG, the plan) -> [`exec`] (cache, scheduling, events) -> outputs. Nodes implement
//! [`node::Node`] and live in [`nodes`]; [`env`] says where files are. [`models`] holds the
//! candle networks and [`sampling`] ComfyUI's noise, schedulers and samplers. [`server`]
//! translates HTTP requests into jobs on the one [`queue`], recorded in the [`store`]; [`cli`] is
//! the command line (`comfyrs::cli::main_with(&[packs])`). The last four are the `server`
//! feature (on by default); node packs depend on comfyrs without it.

#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod cluster;
pub mod compute;
pub mod coverage;
pub mod env;
pub mod exec;
pub mod extra_model_paths;
pub mod graph;
pub mod hashing;
pub mod image_ops;
pub mod models;
pub mod node;
pub mod nodes;
#[cfg(feature = "server")]
pub mod objects;
pub mod parity;
pub mod prompt;
#[cfg(feature = "server")]
pub mod queue;
#[cfg(feature = "server")]
pub mod remote;
pub mod sampling;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
pub mod testing;
pub mod torch_rng;
pub mod workflow;
