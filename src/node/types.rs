//! The tensor-valued IO types, in ComfyUI's layouts: IMAGE `[B, H, W, C]` f32 in 0..1, MASK
//! `[B, H, W]`, LATENT `{samples [B, C, H/8, W/8], noise_mask?, batch_index?}`.

use super::Payload;
use candle_core::Tensor;

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// IMAGE: `[B, H, W, C]`, f32 in 0..1 (C = 3 for RGB).
#[derive(Debug, Clone)]
pub struct Image(pub Tensor);

impl Payload for Image {
    fn byte_size(&self) -> usize {
        tensor_bytes(&self.0)
    }
    fn describe(&self) -> String {
        format!("IMAGE tensor {:?}", self.0.dims())
    }
}

/// MASK: `[B, H, W]`, f32 in 0..1 (1 = masked).
#[derive(Debug, Clone)]
pub struct Mask(pub Tensor);

impl Payload for Mask {
    fn byte_size(&self) -> usize {
        tensor_bytes(&self.0)
    }
    fn describe(&self) -> String {
        format!("MASK tensor {:?}", self.0.dims())
    }
}

/// LATENT: the samples plus ComfyUI's optional noise mask and batch indexes.
#[derive(Debug, Clone)]
pub struct Latent {
    pub samples: Tensor,
    pub noise_mask: Option<Tensor>,
    /// Which seeds of a batch these samples are (LatentFromBatch keeps them), used when
    /// preparing noise.
    pub batch_index: Option<Vec<i64>>,
}

impl Latent {
    pub fn new(samples: Tensor) -> Self {
        Latent {
            samples,
            noise_mask: None,
            batch_index: None,
        }
    }
}

impl Payload for Latent {
    fn byte_size(&self) -> usize {
        tensor_bytes(&self.samples) + self.noise_mask.as_ref().map_or(0, tensor_bytes)
    }
    fn describe(&self) -> String {
        format!("LATENT samples {:?}", self.samples.dims())
    }
}
