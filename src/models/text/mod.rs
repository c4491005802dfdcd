//! Text encoders and their tokenizers: CLIP (ViT-L/14 and OpenCLIP bigG) and T5-XXL
//! (Flux, SD3), each with ComfyUI's tokenizer rules and `encode_token_weights`.

pub mod clip;
pub mod t5;
