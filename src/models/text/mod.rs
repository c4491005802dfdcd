//! Text encoders and their tokenizers: CLIP (ViT-L/14 and OpenCLIP bigG) today; T5 joins
//! with the families that use it.

pub mod clip;
