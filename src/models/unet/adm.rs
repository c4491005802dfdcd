//! SDXL's ADM vector `y` (ComfyUI's `model_base.SDXL.encode_adm` and
//! `SDXLRefiner.encode_adm`): the pooled CLIP-G output followed by 256-wide timestep
//! embeddings of the image's size conditioning.
//!
//! * base: `[pooled, E(height), E(width), E(crop_h), E(crop_w), E(target_h), E(target_w)]`
//!   = 1280 + 6·256 = 2816;
//! * refiner: `[pooled, E(height), E(width), E(crop_h), E(crop_w), E(aesthetic_score)]`
//!   = 1280 + 5·256 = 2560.
//!
//! `E(v)` is `timestep_embedding(Tensor([v]), 256)` (cos half first), computed in f32.

use candle_core::{DType, Device, Result, Tensor};

use super::timestep_embedding;

/// Width of one size embedding.
pub const SIZE_EMBED_DIM: usize = 256;

/// The size conditioning of one cond, in pixels (already defaulted by the caller:
/// `encode_model_conds` uses the latent size × 8 for width/height, 0 for crops, and the
/// width/height for the targets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeConds {
    pub width: f64,
    pub height: f64,
    pub crop_w: f64,
    pub crop_h: f64,
    pub target_width: f64,
    pub target_height: f64,
}

fn embed_values(pooled: &Tensor, values: &[f64]) -> Result<Tensor> {
    let pooled = pooled.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let pooled = if pooled.rank() == 1 {
        pooled.unsqueeze(0)?
    } else {
        pooled
    };
    let n = pooled.dim(0)?;
    // torch.Tensor([v]) is float32: the Python value is rounded to f32 first.
    let vals: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    let emb = timestep_embedding(&vals, SIZE_EMBED_DIM, &Device::Cpu)?;
    let flat = emb.flatten_all()?.unsqueeze(0)?.repeat((n, 1))?;
    Tensor::cat(&[&pooled, &flat], 1)
}

/// The SDXL base model's `y` [N, pooled + 1536].
pub fn sdxl_adm(pooled: &Tensor, s: &SizeConds) -> Result<Tensor> {
    embed_values(
        pooled,
        &[
            s.height,
            s.width,
            s.crop_h,
            s.crop_w,
            s.target_height,
            s.target_width,
        ],
    )
}

/// The SDXL refiner's `y` [N, pooled + 1280].
pub fn sdxl_refiner_adm(pooled: &Tensor, s: &SizeConds, aesthetic_score: f64) -> Result<Tensor> {
    embed_values(
        pooled,
        &[s.height, s.width, s.crop_h, s.crop_w, aesthetic_score],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_and_refiner_vectors_have_comfyui_widths() {
        let pooled = Tensor::ones((1, 1280), DType::F32, &Device::Cpu).unwrap();
        let s = SizeConds {
            width: 1024.0,
            height: 768.0,
            crop_w: 0.0,
            crop_h: 0.0,
            target_width: 1024.0,
            target_height: 768.0,
        };
        let y = sdxl_adm(&pooled, &s).unwrap();
        assert_eq!(y.dims(), [1, 2816]);
        let r = sdxl_refiner_adm(&pooled, &s, 6.0).unwrap();
        assert_eq!(r.dims(), [1, 2560]);
        // The first size embedding is E(height): cos(768·1) at index 1280.
        let v: Vec<f32> = y.get(0).unwrap().to_vec1().unwrap();
        assert_eq!(v[1280], 768f32.cos());
        assert_eq!(v[1280 + 128], 768f32.sin());
        // crop_h = 0: cos 0 = 1, sin 0 = 0.
        assert_eq!(v[1280 + 512], 1.0);
        assert_eq!(v[1280 + 512 + 128], 0.0);
    }
}
