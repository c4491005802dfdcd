//! Diffusion models, loaded from ComfyUI's file layouts and computed the way ComfyUI
//! computes them (CPU f32 by default). One module per concern, families beside the
//! shared layers:
//!
//! * [`family`]: the families comfyrs runs (SD1.x, SDXL, SDXL refiner), their detection
//!   from a UNet config and their extra model inputs (SDXL's ADM vector).
//! * [`checkpoint`]: safetensors loading (memory-mapped), key normalisation, single-file
//!   checkpoints of every family ([`checkpoint::load_checkpoint_with`]) and the
//!   standalone VAE loader [`checkpoint::load_vae`].
//! * [`latent_format`]: per-family latent channels, scale/shift and preview factors.
//! * [`text`]: text encoders: CLIP (ViT-L and OpenCLIP bigG) with ComfyUI's tokenizer,
//!   prompt weighting and `encode_token_weights`.
//! * [`unet`]: the openaimodel UNet (LDM key names; SD1.x and SDXL), config detected from
//!   keys, and SDXL's ADM vector ([`unet::adm`]).
//! * [`flux`]: the Flux.1 transformer (dev, schnell, Fill/Canny/Depth/Kontext inputs).
//! * [`mmdit`]: the SD3 / SD3.5 transformer (MMDiT, MMDiT-X, RMS QK-norm).
//! * [`diffusion`]: the family-neutral network a MODEL holds ([`diffusion::DiffusionNet`]).
//! * [`vae`]: the AutoencoderKL encoder/decoder, with ComfyUI's image conversions.
//! * [`lora`]: LoRA/LyCORIS files, ComfyUI's key map and patch math, lazily patched models.
//! * [`nn`]: layers shared by every network, with the f32 CPU kernels behind them.
//! * [`fp8`]: bit-exact fp8 (e4m3fn, e5m2) decode and encode, as torch converts.
//! * [`upscale`]: image upscale models (ESRGAN/RRDBNet, Real-ESRGAN Compact) and ComfyUI's
//!   tiled inference.
//! * [`fixture`]: the deterministic tiny random-weight checkpoints used by the tests
//!   (written by `cli/src/bin/gen_fixtures.rs`, `cargo run --bin gen_fixtures`).

pub mod checkpoint;
pub mod component_files;
pub mod conditioner;
pub mod controlnet;
pub mod diffusion;
pub mod family;
pub mod fixture;
pub mod flux;
pub mod fp8;
pub mod latent_format;
pub mod lora;
pub mod mmdit;
pub mod nn;
pub mod text;
pub mod unet;
pub mod upscale;
pub mod vae;

pub use checkpoint::{
    load_checkpoint_with, load_sd1_checkpoint, load_vae, Checkpoint, Sd1Checkpoint, TextEncoders,
    WeightMap,
};
pub use family::Family;
pub use latent_format::LatentFormat;
pub use text::clip::{ClipTextEncoder, Tokenizer};
pub use unet::{Unet, UnetConfig};
pub use vae::{Vae, VaeConfig};

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
