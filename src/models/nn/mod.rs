//! Layers shared by every family (the LDM UNet, the VAE, text encoders, DiTs), named like
//! their PyTorch modules, with the f32 CPU fast paths (`cpu_gemm`, `vecmath`) behind them.

pub mod activations;
pub mod attention;
pub mod conv;
pub mod cpu_gemm;
pub mod linear;
pub mod norm;
pub mod vecmath;

use candle_core::{CpuStorage, Result, Storage, Tensor};
use candle_nn::VarBuilder;
pub use conv::{conv, Conv2d};
pub use linear::{linear, Linear};
pub use norm::{group_norm, GroupNorm};

/// Does `vb` hold a tensor called `name`?
pub fn has(vb: &VarBuilder, name: &str) -> bool {
    vb.contains_tensor(name)
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(x)
}

/// Whether `t` can take the CPU kernels' fast path: an f32 tensor on the CPU.
pub(crate) fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// Largest |a − b| over two tensors of the same shape (for the kernels' tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("same-shape f32 tensors")
}

/// The f32 slice of a CPU storage, `len` elements from `offset` (for the CPU kernels).
pub(crate) fn cpu_f32(storage: &Storage, offset: usize, len: usize) -> Result<&[f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(v)) => v.get(offset..offset + len).ok_or_else(|| {
            candle_core::Error::Msg("tensor storage is shorter than its layout".into())
        }),
        _ => candle_core::bail!("expected an f32 CPU tensor"),
    }
}
