//! `nn.Linear` for the UNet: on the CPU in f32 one [`par_gemm`] against the weight read
//! transposed in place (no copy), with the bias written into the destination first.
//! Elsewhere it is candle_nn's Linear.

use super::cpu_gemm::{par_gemm, Dest, Operand};
use super::{cpu_f32, is_cpu_f32};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Linear {
    /// [out, in]
    weight: Tensor,
    /// [out]
    bias: Option<Tensor>,
    fallback: candle_nn::Linear,
}

/// A linear layer whose shape is read from `name.weight`; `name.bias` is used when present.
pub fn linear(vb: &VarBuilder, name: &str) -> Result<Linear> {
    let vb = vb.pp(name);
    let weight = vb.get_unchecked("weight")?;
    let out = weight.dim(0)?;
    let bias = if vb.contains_tensor("bias") {
        Some(vb.get(out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            fallback: candle_nn::Linear::new(weight.clone(), bias.clone()),
            weight,
            bias,
        }
    }

    fn forward_cpu_f32(&self, x: &Tensor) -> Result<Tensor> {
        let (out_f, in_f) = self.weight.dims2()?;
        let dims = x.dims().to_vec();
        if dims.last() != Some(&in_f) {
            candle_core::bail!("linear: input {dims:?} does not end in {in_f} features");
        }
        let rows = x.elem_count() / in_f.max(1);
        let x = x.contiguous()?;
        let weight = self.weight.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = weight.storage_and_layout();
        let input = cpu_f32(&xs, xl.start_offset(), rows * in_f)?;
        let w = cpu_f32(&ws, wl.start_offset(), out_f * in_f)?;
        let mut out = vec![0f32; rows * out_f];
        let bias_guard = self.bias.as_ref().map(|b| b.storage_and_layout());
        if let Some((bs, bl)) = &bias_guard {
            let bias = cpu_f32(bs, bl.start_offset(), out_f)?;
            for row in out.chunks_mut(out_f) {
                row.copy_from_slice(bias);
            }
        }
        // SAFETY: out is [rows, out_f]; input [rows, in_f] row-major; the weight [out_f, in_f]
        // read as its transpose [in_f, out_f] (row stride 1, column stride in_f).
        unsafe {
            par_gemm(
                rows,
                out_f,
                in_f,
                Dest {
                    ptr: out.as_mut_ptr(),
                    rs: out_f as isize,
                },
                bias_guard.is_some(),
                Operand {
                    ptr: input.as_ptr(),
                    rs: in_f as isize,
                    cs: 1,
                },
                Operand {
                    ptr: w.as_ptr(),
                    rs: 1,
                    cs: in_f as isize,
                },
                1.0,
            );
        }
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = out_f;
        Tensor::from_vec(out, shape, &Device::Cpu)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if is_cpu_f32(x)
            && is_cpu_f32(&self.weight)
            && self.bias.as_ref().is_none_or(is_cpu_f32)
            && x.rank() >= 1
        {
            self.forward_cpu_f32(x)
        } else {
            self.fallback.forward(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;

    #[test]
    fn matches_candle_linear() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 37, 24), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.2, (40, 24), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 40, &dev).unwrap();
        for bias in [Some(b), None] {
            let l = Linear::new(w.clone(), bias);
            let ours = l.forward(&x).unwrap();
            let theirs = l.fallback.forward(&x).unwrap();
            assert_eq!(ours.dims(), &[2, 37, 40]);
            let d = max_abs_diff(&ours, &theirs);
            assert!(d < 1e-5, "max |diff| {d}");
        }
    }
}
