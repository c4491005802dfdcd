//! comfyrs: a ComfyUI-compatible workflow executor.
pub mod models;
