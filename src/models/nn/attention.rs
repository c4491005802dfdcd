//! Softmax attention over [B, N, H·d] tensors: `softmax(scale · q kᵀ) v` per head.
//!
//! On the CPU in f32 the heads are read in place through strides (no split or transpose
//! copies), each (image, head) pair is one task on the thread pool with single-threaded
//! gemms, and query rows go in blocks so the score matrix stays small at any resolution.
//! ComfyUI's CPU path (sub-quadratic attention) also chunks, with the scale applied inside
//! the product (`baddbmm(alpha=scale)`), as here. Elsewhere it is candle's ops.

use super::cpu_gemm::{gemm_block, Dest, Operand};
use super::vecmath::softmax_in_place;
use super::{cpu_f32, is_cpu_f32};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// Score-matrix bytes per task (query rows × keys × 4).
const SCORE_BLOCK_BYTES: usize = 8 << 20;

/// Attention of `q` [B, N, H·d] over `k`, `v` [B, M, H·d] with `heads` heads.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    if is_cpu_f32(q) && is_cpu_f32(k) && is_cpu_f32(v) {
        attention_cpu_f32(q, k, v, heads, SCORE_BLOCK_BYTES)
    } else {
        attention_candle(q, k, v, heads)
    }
}

fn attention_cpu_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    score_block_bytes: usize,
) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let (kb, m, k_inner) = k.dims3()?;
    if kb != b || k_inner != inner || v.dims3()? != (b, m, inner) || inner % heads != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let d = inner / heads;
    let scale = (d as f64).powf(-0.5) as f32;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let qd = cpu_f32(&qs, ql.start_offset(), b * n * inner)?;
    let kd = cpu_f32(&ks, kl.start_offset(), b * m * inner)?;
    let vd = cpu_f32(&vs, vl.start_offset(), b * m * inner)?;
    let mut out = vec![0f32; b * n * inner];
    let out_ptr = Dest {
        ptr: out.as_mut_ptr(),
        rs: inner as isize,
    };
    let rows_per_block = (score_block_bytes / (4 * m.max(1))).clamp(1, n.max(1));
    (0..b * heads).into_par_iter().for_each(|pair| {
        let (bi, h) = (pair / heads, pair % heads);
        let mut scores = vec![0f32; rows_per_block * m];
        let mut r0 = 0;
        while r0 < n {
            let rows = rows_per_block.min(n - r0);
            let s = &mut scores[..rows * m];
            // SAFETY: q/k/v hold [b, n|m, inner] row-major; head h is the d columns from
            // h·d. Each pair writes only its own rows × head columns of `out`.
            unsafe {
                gemm_block(
                    rows,
                    m,
                    d,
                    Dest {
                        ptr: s.as_mut_ptr(),
                        rs: m as isize,
                    },
                    false,
                    Operand {
                        ptr: qd.as_ptr().add((bi * n + r0) * inner + h * d),
                        rs: inner as isize,
                        cs: 1,
                    },
                    Operand {
                        ptr: kd.as_ptr().add(bi * m * inner + h * d),
                        rs: 1,
                        cs: inner as isize,
                    },
                    scale,
                );
            }
            for row in s.chunks_mut(m) {
                softmax_in_place(row);
            }
            unsafe {
                gemm_block(
                    rows,
                    d,
                    m,
                    out_ptr.offset((bi * n + r0) * inner + h * d),
                    false,
                    Operand {
                        ptr: s.as_ptr(),
                        rs: m as isize,
                        cs: 1,
                    },
                    Operand {
                        ptr: vd.as_ptr().add(bi * m * inner + h * d),
                        rs: inner as isize,
                        cs: 1,
                    },
                    1.0,
                );
            }
            r0 += rows;
        }
    });
    drop((qs, ks, vs));
    Tensor::from_vec(out, (b, n, inner), &Device::Cpu)
}

/// The same computation with candle ops (GPU, half precision).
fn attention_candle(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    let d = inner / heads;
    let split = |x: &Tensor, len: usize| -> Result<Tensor> {
        x.reshape((b, len, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, len, d))
    };
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let kt = k.t()?.contiguous()?;
    let scale = (d as f64).powf(-0.5);
    // Bound the score matrix to ~128M elements per piece.
    let per = (n * m).max(1);
    let group = ((1usize << 27) / per).clamp(1, b * heads);
    let mut outs = Vec::new();
    let mut s = 0;
    while s < b * heads {
        let len = group.min(b * heads - s);
        let qs = q.narrow(0, s, len)?;
        let sim = (qs.matmul(&kt.narrow(0, s, len)?)? * scale)?;
        let p = candle_nn::ops::softmax_last_dim(&sim)?;
        outs.push(p.matmul(&v.narrow(0, s, len)?)?);
        s += len;
    }
    let o = if outs.len() == 1 {
        outs.pop().expect("one piece")
    } else {
        Tensor::cat(&outs, 0)?
    };
    o.reshape((b, heads, n, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, n, inner))
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;

    #[test]
    fn matches_the_candle_ops() {
        let dev = Device::Cpu;
        for (b, n, m, heads, d) in [(2, 33, 33, 4, 8), (1, 20, 7, 2, 5), (2, 5, 77, 1, 16)] {
            let q = Tensor::randn(0f32, 1.0, (b, n, heads * d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, m, heads * d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, m, heads * d), &dev).unwrap();
            let theirs = attention_candle(&q, &k, &v, heads).unwrap();
            // Whole score matrices, and blocks of 3 query rows.
            for block in [SCORE_BLOCK_BYTES, 3 * 4 * m] {
                let ours = attention_cpu_f32(&q, &k, &v, heads, block).unwrap();
                let diff = max_abs_diff(&ours, &theirs);
                assert!(diff < 1e-5, "b{b} n{n} m{m} h{heads} d{d}: {diff}");
            }
        }
    }
}
