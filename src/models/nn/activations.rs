//! GELU (erf form) and GEGLU, the feed-forward gate of the UNet's transformer blocks:
//! `a · gelu(gate)` where `[a, gate]` are the two halves of the last dimension.
//!
//! On the CPU in f32 it is one parallel, vectorised pass reading both halves in place
//! ([`geglu_row`]); with candle ops it is two narrow views, a strided GELU and a strided
//! product.

use super::vecmath::geglu_row;
use super::{cpu_f32, is_cpu_f32};
use candle_core::{Device, Result, Tensor, D};
use rayon::prelude::*;

/// `gelu(x)` with erf, as torch's `F.gelu` computes it on the CPU (the same vectorised
/// erf as [`geglu`]; multiplying by an exact 1.0 gate leaves the values unchanged).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !is_cpu_f32(x) {
        return x.gelu_erf();
    }
    const CHUNK: usize = 4096;
    let ones = [1f32; CHUNK];
    let x = x.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let input = cpu_f32(&xs, xl.start_offset(), x.elem_count())?;
    let mut out = vec![0f32; input.len()];
    out.par_chunks_mut(CHUNK)
        .zip(input.par_chunks(CHUNK))
        .for_each(|(o, g)| geglu_row(o, &ones[..g.len()], g));
    drop(xs);
    Tensor::from_vec(out, x.dims(), &Device::Cpu)
}

/// `h[..., :half] · gelu_erf(h[..., half:])`.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(h) {
        geglu_cpu_f32(h)
    } else {
        let half = h.dim(D::Minus1)? / 2;
        h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?
    }
}

fn geglu_cpu_f32(h: &Tensor) -> Result<Tensor> {
    let mut dims = h.dims().to_vec();
    let width = *dims.last().unwrap_or(&0);
    if !width.is_multiple_of(2) {
        candle_core::bail!("geglu: the last dimension ({width}) must be even");
    }
    let half = width / 2;
    let h = h.contiguous()?;
    let (hs, hl) = h.storage_and_layout();
    let input = cpu_f32(&hs, hl.start_offset(), h.elem_count())?;
    let mut out = vec![0f32; input.len() / 2];
    if half > 0 {
        out.par_chunks_mut(half)
            .zip(input.par_chunks(width))
            .for_each(|(o, row)| {
                let (a, gate) = row.split_at(half);
                geglu_row(o, a, gate);
            });
    }
    *dims.last_mut().expect("rank >= 1") = half;
    drop(hs);
    Tensor::from_vec(out, dims, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_ops() {
        let h = Tensor::randn(0f32, 2.0, (2, 9, 14), &Device::Cpu).unwrap();
        let ours = geglu(&h).unwrap();
        let half = 7;
        let theirs = (h.narrow(D::Minus1, 0, half).unwrap()
            * h.narrow(D::Minus1, half, half).unwrap().gelu_erf().unwrap())
        .unwrap();
        assert_eq!(ours.dims(), &[2, 9, 7]);
        let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = theirs.flatten_all().unwrap().to_vec1().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}
