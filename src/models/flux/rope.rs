//! Flux's positional pieces, with ComfyUI's numerics (`comfy/ldm/flux/{layers,math}.py`):
//!
//! * [`timestep_embedding`]: the sinusoid of `time_factor · t` (time_factor 1000) in f32,
//!   `cos ‖ sin`, used for the timestep and the distilled guidance.
//! * [`rope_table`]: `EmbedND` over (index, row, column) ids. ComfyUI builds the
//!   frequencies in **f64** (`linspace` of the exponents, `1/θ^s`, positions promoted to
//!   f64, cos/sin in f64) and only then rounds to f32; candle-transformers' Flux does it in
//!   f32, which differs in the last bits.
//! * [`apply_rope`]: `pe[..,0]·q[2j] + pe[..,1]·q[2j+1]` in f32, two products then a sum (no
//!   fused multiply-add), as torch evaluates it.

use candle_core::{DType, Device, Result, Tensor};

/// `timestep_embedding(t, dim)` (max_period 10000, time_factor 1000): `t` [N] → [N, dim].
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let t = (t.to_dtype(DType::F32)? * 1000.0)?;
    let half = dim / 2;
    // torch's values, to the ulp (see `sinusoid`).
    let freqs = crate::models::nn::sinusoid::timestep_frequencies(half);
    let n = t.dim(0)?;
    let tv = t.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(n * dim);
    for &tt in &tv {
        let args: Vec<f32> = freqs.iter().map(|&f| tt * f).collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (n, dim), t.device())
}

/// `EmbedND(ids)` for one sequence of ids [N, axes] (the same for every batch item): the
/// rotation of each (token, frequency) as `[cos, −sin, sin, cos]`, [N, head_dim/2, 4] as a
/// flat f32 vector (frequencies of the axes concatenated in order).
pub fn rope_table(ids: &[[f32; 3]], axes_dim: &[usize], theta: f64) -> Vec<f32> {
    let half: usize = axes_dim.iter().map(|d| d / 2).sum();
    let omegas: Vec<Vec<f64>> = axes_dim
        .iter()
        .map(|&d| {
            let scale = linspace_f64(0.0, (d as f64 - 2.0) / d as f64, d / 2);
            scale.iter().map(|s| 1.0 / theta.powf(*s)).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(ids.len() * half * 4);
    for id in ids {
        for (axis, om) in omegas.iter().enumerate() {
            let pos = id[axis] as f64;
            for w in om {
                let a = pos * w;
                let (s, c) = a.sin_cos();
                out.extend([c as f32, (-s) as f32, s as f32, c as f32]);
            }
        }
    }
    out
}

/// `torch.linspace(start, end, steps, dtype=float64)` as torch's CPU kernel evaluates it
/// (from the start for the first half, from the end for the second, fused multiply-add).
fn linspace_f64(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f64;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f64, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f64, end)
            }
        })
        .collect()
}

/// Rotates `x` [B, N, H, d] (any layout) by the table of [`rope_table`] for its N tokens.
pub fn apply_rope(x: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (b, n, h, d) = x.dims4()?;
    let x = x.to_dtype(DType::F32)?.reshape((b, n, h, d / 2, 2))?;
    let x0 = x.narrow(4, 0, 1)?;
    let x1 = x.narrow(4, 1, 1)?;
    // table [N, d/2, 4] → [1, N, 1, d/2, 1] per entry.
    let entry =
        |i: usize| -> Result<Tensor> { table.narrow(2, i, 1)?.reshape((1, n, 1, d / 2, 1)) };
    let (a, bb, c, dd) = (entry(0)?, entry(1)?, entry(2)?, entry(3)?);
    let o0 = (x0.broadcast_mul(&a)? + x1.broadcast_mul(&bb)?)?;
    let o1 = (x0.broadcast_mul(&c)? + x1.broadcast_mul(&dd)?)?;
    Tensor::cat(&[o0, o1], 4)?.reshape((b, n, h * d))
}

/// [`rope_table`] as a tensor [N, head_dim/2, 4] on `device`.
pub fn rope_tensor(
    ids: &[[f32; 3]],
    axes_dim: &[usize],
    theta: f64,
    device: &Device,
) -> Result<Tensor> {
    let half: usize = axes_dim.iter().map(|d| d / 2).sum();
    Tensor::from_vec(
        rope_table(ids, axes_dim, theta),
        (ids.len(), half, 4),
        device,
    )
}
