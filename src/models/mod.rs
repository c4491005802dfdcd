//! Stable Diffusion 1.x models, loaded from single-file (LDM/CompVis layout)
//! checkpoints and computed the way ComfyUI computes them (CPU f32 by default).
//!
//! * [`checkpoint`]: safetensors loading (memory-mapped), key normalisation,
//!   model detection, [`checkpoint::load_sd1_checkpoint`] and the standalone
//!   VAE loader [`checkpoint::load_vae`].
//! * [`clip`]: CLIP BPE tokenizer, ComfyUI prompt weighting / chunking /
//!   textual inversions, the CLIP text transformer and `encode_token_weights`.
//! * [`unet`]: the openaimodel UNet (LDM key names), config detected from keys.
//! * [`vae`]: the AutoencoderKL encoder/decoder, with ComfyUI's image
//!   conversions.
//! * [`lora`]: LoRA/LyCORIS files, ComfyUI's key map and patch math, lazily patched models.
//! * [`layers`]: small building blocks shared by the UNet and the VAE.
//! * [`fixture`]: the deterministic tiny random-weight SD1.5 checkpoint used by
//!   the tests (written by `src/bin/gen_fixtures.rs`).

pub mod activations;
pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod conv;
pub mod cpu_gemm;
pub mod fixture;
pub mod layers;
pub mod linear;
pub mod lora;
pub mod norm;
pub mod unet;
pub mod vae;
pub mod vecmath;

pub use checkpoint::{load_sd1_checkpoint, load_vae, Sd1Checkpoint, WeightMap};
pub use clip::{ClipTextEncoder, Tokenizer};
pub use unet::{Unet, UnetConfig};
pub use vae::{Vae, VaeConfig, SD1_LATENT_SCALE};

/// Errors of model loading and inference.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("missing tensor {0}")]
    MissingKey(String),
    #[error("not a supported checkpoint: {0}")]
    NotSupported(String),
    #[error("bad input: {0}")]
    BadInput(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
