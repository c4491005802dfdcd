//! `nn.Linear`: the weight kept in its stored dtype (f16, bf16, fp8, f32) and widened to
//! the input's dtype per call, like ComfyUI's `manual_cast` ops; ComfyUI's scaled-fp8
//! layers (`scale_weight`) scale the smaller operand, as `scaled_fp8_op` does. On the CPU
//! in f32 one [`par_gemm`] against the weight read transposed in place (no copy), with the
//! bias written into the destination first. Elsewhere it is candle_nn's Linear.

use super::cpu_gemm::{par_gemm, Dest, Operand};
use super::panels::{linear_panels, with_rows, Rows};
use super::{cpu_f32, is_cpu_f32, stored, widen};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Linear {
    /// [out, in], as stored.
    weight: Tensor,
    /// [out]
    bias: Option<Tensor>,
    /// Scaled fp8's `scale_weight` (a one-element f32 tensor): the true weight is
    /// `weight · scale`.
    scale: Option<Tensor>,
}

/// A linear layer whose shape is read from `name.weight`; `name.bias` and scaled fp8's
/// `name.scale_weight` are used when present.
pub fn linear(vb: &VarBuilder, name: &str) -> Result<Linear> {
    let vb = vb.pp(name);
    let weight = stored(&vb, "weight")?;
    let out = weight.dim(0)?;
    let bias = if vb.contains_tensor("bias") {
        Some(vb.get(out, "bias")?)
    } else {
        None
    };
    let scale = if vb.contains_tensor("scale_weight") {
        Some(
            vb.get_unchecked_dtype("scale_weight", candle_core::DType::F32)?
                .flatten_all()?,
        )
    } else {
        None
    };
    Ok(Linear {
        weight,
        bias,
        scale,
    })
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            scale: None,
        }
    }

    /// The weight as stored ([out, in]).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x · Wᵀ + b` with `weight` already in `x`'s dtype.
    fn forward_with(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let bias = match &self.bias {
            Some(b) => Some(widen(b, x.dtype())?),
            None => None,
        };
        if is_cpu_f32(x) && x.rank() >= 1 {
            Self::forward_cpu_f32(x, weight, bias.as_ref())
        } else {
            candle_nn::Linear::new(weight.clone(), bias).forward(x)
        }
    }

    /// On the CPU in f32: the bias written into the destination, then `x · Wᵀ` accumulated
    /// onto it, with an f32 weight read in place by one [`par_gemm`], and a stored f16/bf16/fp8
    /// weight widened panel by panel ([`linear_panels`]) instead of as a whole.
    fn forward_cpu_f32(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (out_f, in_f) = weight.dims2()?;
        let dims = x.dims().to_vec();
        if dims.last() != Some(&in_f) {
            candle_core::bail!("linear: input {dims:?} does not end in {in_f} features");
        }
        let rows = x.elem_count() / in_f.max(1);
        let x = x.contiguous()?;
        let weight = weight.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let input = cpu_f32(&xs, xl.start_offset(), rows * in_f)?;
        let mut out = vec![0f32; rows * out_f];
        let bias = match bias {
            Some(b) => Some(widen(b, DType::F32)?.contiguous()?),
            None => None,
        };
        let bias_guard = bias.as_ref().map(|b| b.storage_and_layout());
        if let Some((bs, bl)) = &bias_guard {
            let bias = cpu_f32(bs, bl.start_offset(), out_f)?;
            for row in out.chunks_mut(out_f) {
                row.copy_from_slice(bias);
            }
        }
        let dst = Dest {
            ptr: out.as_mut_ptr(),
            rs: out_f as isize,
        };
        let lhs = Operand {
            ptr: input.as_ptr(),
            rs: in_f as isize,
            cs: 1,
        };
        let read_dst = bias_guard.is_some();
        let done = with_rows(&weight, |w| match w {
            // SAFETY: out is [rows, out_f]; input [rows, in_f] row-major; the weight
            // [out_f, in_f] read as its transpose [in_f, out_f] (row stride 1, column
            // stride in_f), in place or panel by panel.
            Rows::F32(w) => unsafe {
                par_gemm(
                    rows,
                    out_f,
                    in_f,
                    dst,
                    read_dst,
                    lhs,
                    Operand {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: in_f as isize,
                    },
                    1.0,
                )
            },
            w => unsafe { linear_panels(rows, out_f, in_f, dst, read_dst, lhs, w) },
        });
        if done.is_none() {
            candle_core::bail!("linear: weight of dtype {:?} on the CPU", weight.dtype());
        }
        drop(bias_guard);
        drop(xs);
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = out_f;
        Tensor::from_vec(out, shape, &Device::Cpu)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.scale.is_none()
            && is_cpu_f32(x)
            && x.rank() >= 1
            && with_rows(&self.weight, |_| ()).is_some()
        {
            // The stored weight goes to the CPU kernel as it is.
            return Self::forward_cpu_f32(x, &self.weight, self.bias.as_ref());
        }
        let w = widen(&self.weight, x.dtype())?;
        match &self.scale {
            None => self.forward_with(x, &w),
            Some(scale) => {
                let scale = scale.to_dtype(x.dtype())?;
                // scaled_fp8_op: the multiply goes on the smaller operand.
                if w.elem_count() < x.elem_count() {
                    self.forward_with(x, &w.broadcast_mul(&scale)?)
                } else {
                    self.forward_with(&x.broadcast_mul(&scale)?, &w)
                }
            }
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
            let l = Linear::new(w.clone(), bias.clone());
            let ours = l.forward(&x).unwrap();
            let theirs = candle_nn::Linear::new(w.clone(), bias).forward(&x).unwrap();
            assert_eq!(ours.dims(), &[2, 37, 40]);
            let d = max_abs_diff(&ours, &theirs);
            assert!(d < 1e-5, "max |diff| {d}");
        }
    }

    fn vb_of(pairs: &[(&str, Tensor)]) -> VarBuilder<'static> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        super::super::weights_vb(map, candle_core::DType::F32, &Device::Cpu)
    }

    #[test]
    fn keeps_the_stored_dtype_and_widens_exactly() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 16), &dev).unwrap();
        let w16 = Tensor::randn(0f32, 0.2, (8, 16), &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F16)
            .unwrap();
        let b = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        let l = linear(
            &vb_of(&[("l.weight", w16.clone()), ("l.bias", b.clone())]),
            "l",
        )
        .unwrap();
        assert_eq!(l.weight().dtype(), candle_core::DType::F16);
        let w32 = w16.to_dtype(candle_core::DType::F32).unwrap();
        let eager = Linear::new(w32, Some(b)).forward(&x).unwrap();
        assert_eq!(max_abs_diff(&l.forward(&x).unwrap(), &eager), 0.0);
        // A plain VarBuilder gives the builder's dtype.
        let map = [("l.weight".to_string(), w16)].into_iter().collect();
        let plain = VarBuilder::from_tensors(map, candle_core::DType::F32, &dev);
        assert_eq!(
            linear(&plain, "l").unwrap().weight().dtype(),
            candle_core::DType::F32
        );
    }

    /// ComfyUI's scaled fp8 Linear: `linear(x, w·s)` when the weight has fewer elements
    /// than the input, else `linear(x·s, w)`.
    #[test]
    fn scaled_fp8_scales_the_smaller_operand() {
        let dev = Device::Cpu;
        let w8 = Tensor::randn(0f32, 0.5, (4, 6), &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F8E4M3)
            .unwrap();
        let s = Tensor::new(&[0.37f32], &dev).unwrap();
        let l = linear(
            &vb_of(&[("l.weight", w8.clone()), ("l.scale_weight", s)]),
            "l",
        )
        .unwrap();
        assert_eq!(l.weight().dtype(), candle_core::DType::F8E4M3);
        let w = w8.to_dtype(candle_core::DType::F32).unwrap();
        let scaled_w = Linear::new((&w * 0.37f64).unwrap(), None);
        let plain_w = Linear::new(w, None);
        // 1 row of 6 < 24 weights: the input is scaled.
        let small = Tensor::randn(0f32, 1.0, (1, 6), &dev).unwrap();
        let want = plain_w.forward(&(&small * 0.37f64).unwrap()).unwrap();
        assert_eq!(max_abs_diff(&l.forward(&small).unwrap(), &want), 0.0);
        // 10 rows = 60 > 24: the weight is scaled.
        let big = Tensor::randn(0f32, 1.0, (10, 6), &dev).unwrap();
        let want = scaled_w.forward(&big).unwrap();
        assert_eq!(max_abs_diff(&l.forward(&big).unwrap(), &want), 0.0);
    }
}
