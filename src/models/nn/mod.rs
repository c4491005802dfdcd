//! Layers shared by every family (the LDM UNet, the VAE, text encoders, DiTs), named like
//! their PyTorch modules, with the f32 CPU fast paths (`cpu_gemm`, `vecmath`) behind them.

pub mod activations;
pub mod attention;
pub mod conv;
pub mod cpu_gemm;
pub mod linear;
pub mod norm;
pub mod panels;
pub mod sinusoid;
pub mod vecmath;

use std::collections::HashMap;

use candle_core::{CpuStorage, DType, Device, Result, Shape, Storage, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
pub use conv::{conv, Conv2d};
pub use linear::{linear, Linear};
pub use norm::{group_norm, GroupNorm};

/// A VarBuilder over a state dict whose tensors keep the dtype they are stored in (the
/// file's f16/bf16/fp8, see `checkpoint::load_safetensors_as`). `vb.get*` widen to the
/// requested dtype as usual, which suits small tensors (biases, norms, embeddings); the
/// layers that hold the bulk of a model's bytes (Linear, Conv2d) read theirs with
/// [`stored`] and widen per operation, like ComfyUI's `manual_cast` ops, so a model
/// costs its file's size in memory rather than its f32 size. (fp8/f16/bf16 → f32 is exact,
/// so widening per operation or at load gives the same numbers.)
pub fn weights_vb(
    weights: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(StoredWeights(weights)), dtype, device.clone())
}

/// candle's VarBuilder only asks for tensors in a given dtype; [`StoredWeights`] reads a
/// request for this one as "as stored". No weight is ever requested as (or stored in) this
/// MX scale format, and candle converts nothing to it, so other backends fail the request.
const AS_STORED: DType = DType::F8E8M0;

/// The backend of [`weights_vb`].
struct StoredWeights(HashMap<String, Tensor>);

impl SimpleBackend for StoredWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.0.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        // Converted on the tensor's own device first (fp8 casts exist on the CPU; fp8
        // e5m2's U8 bits go through their decode table).
        let t = if dtype == AS_STORED || t.dtype() == dtype {
            t.clone()
        } else {
            widen(t, dtype)?
        };
        t.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// `name` under `vb` in the dtype it is stored in (see [`weights_vb`]); from any other
/// VarBuilder, in the builder's dtype.
pub fn stored(vb: &VarBuilder, name: &str) -> Result<Tensor> {
    match vb.get_unchecked_dtype(name, AS_STORED) {
        Ok(t) if t.dtype() != AS_STORED => Ok(t),
        // Not a `weights_vb` backend: it failed to convert to the marker dtype (or the
        // tensor is missing, which the plain request reports).
        _ => vb.get_unchecked(name),
    }
}

/// `w` as `dtype` for one operation (a no-op when it already is). A U8 weight is fp8 e5m2
/// (candle has no e5m2 dtype: `fp8::store_as` keeps its bits as U8) and is decoded exactly.
///
/// f16/bf16/fp8 → f32 on the CPU is split over the thread pool in blocks converted by `half`'s
/// slice conversion (F16C where the CPU has it) or the fp8 decode table: candle's `to_dtype`
/// converts one value at a time on one thread (2.9 ns per f16 value here, ~7 s of every SDXL
/// UNet call). Both are exact, so the numbers are the same. (The CPU layers avoid even this
/// whole copy: see [`panels`].)
pub fn widen(w: &Tensor, dtype: DType) -> Result<Tensor> {
    if w.dtype() == dtype {
        return Ok(w.clone());
    }
    if w.dtype() == DType::U8 {
        let f = if w.device().is_cpu() {
            widen_cpu_f32(&w.contiguous()?).unwrap_or_else(|| {
                candle_core::bail!("fp8 e5m2 weight on the CPU is not a contiguous U8 tensor")
            })
        } else {
            // The decode table on the tensor's device, indexed by the codes.
            let table = Tensor::new(
                &crate::models::fp8::table(crate::models::fp8::Fp8Kind::E5m2)[..],
                w.device(),
            )?;
            table.index_select(&w.flatten_all()?, 0)?.reshape(w.shape())
        }?;
        return f.to_dtype(dtype);
    }
    if dtype == DType::F32 {
        if let Some(out) = widen_cpu_f32(w) {
            return out;
        }
    }
    w.to_dtype(dtype)
}

/// `w` widened to f32 on every thread, when it is a contiguous CPU tensor of a stored dtype.
fn widen_cpu_f32(w: &Tensor) -> Option<Result<Tensor>> {
    /// Values per task: large enough to amortise the hand-off, small enough to balance.
    const BLOCK: usize = 1 << 16;
    use rayon::prelude::*;
    let out = panels::with_rows(w, |rows| {
        let mut out = vec![0f32; w.elem_count()];
        out.par_chunks_mut(BLOCK).enumerate().for_each(|(i, d)| {
            let a = i * BLOCK;
            rows.widen(a..a + d.len(), d)
        });
        out
    })?;
    Some(Tensor::from_vec(out, w.shape(), &Device::Cpu))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_widening_is_candles_conversion() {
        let dev = Device::Cpu;
        // Over several blocks, read from an offset into the storage, plus NaN/inf/subnormals.
        let n = (1 << 17) + 1234;
        let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - 70000.0) * 0.37).collect();
        v[5] = f32::NAN;
        v[6] = f32::INFINITY;
        v[7] = 1e-7;
        let src = Tensor::from_vec(v, n, &dev).unwrap();
        for dt in [DType::F16, DType::BF16, DType::F8E4M3] {
            let t = src.to_dtype(dt).unwrap().narrow(0, 3, n - 3).unwrap();
            let ours = widen(&t, DType::F32).unwrap().to_vec1::<f32>().unwrap();
            let theirs = t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{dt:?}: {a} vs {b}"
                );
            }
        }
        // fp8 e5m2 is held as U8 bits: every code decodes to its table value.
        let codes: Vec<u8> = (0..=255u8).cycle().take(n).collect();
        let t = Tensor::from_vec(codes.clone(), n, &dev)
            .unwrap()
            .narrow(0, 3, n - 3)
            .unwrap();
        let ours = widen(&t, DType::F32).unwrap().to_vec1::<f32>().unwrap();
        let table = crate::models::fp8::table(crate::models::fp8::Fp8Kind::E5m2);
        for (a, &c) in ours.iter().zip(&codes[3..]) {
            let b = table[c as usize];
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{c}"
            );
        }
    }
}
