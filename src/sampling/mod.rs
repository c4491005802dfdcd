//! ComfyUI's sampling numerics, model-free: noise, schedulers, model sampling and samplers.
//! See `/work/shared/spec/numerics.md` §0–§5.

pub mod rng;
