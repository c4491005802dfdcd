//! ComfyUI's sampling numerics, model-free: noise, schedulers, model sampling and samplers.
//! See `/work/shared/spec/numerics.md` §0–§5.

pub mod rng;
pub mod brownian;
pub mod seed_sequence;
pub mod noise;
pub mod model_sampling;
pub mod schedulers;
pub mod samplers;
