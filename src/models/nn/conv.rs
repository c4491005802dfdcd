//! 2-d convolution for the UNet and the VAE.
//!
//! On the CPU in f32 it is im2col plus one gemm per image and row band (split across threads
//! by [`par_gemm`]), with the bias written into the destination first so the gemm
//! accumulates onto it. candle 0.11's CPU conv2d
//! re-flattens the weights on every call, transposes the input to NHWC with scalar loops and
//! runs many small gemms; this is most of the difference between the two on SD1.x.
//! Elsewhere (CUDA, half precision) it is candle's conv2d. The weight stays in its stored
//! dtype and is widened to the input's per call (ComfyUI's `manual_cast`).

use super::cpu_gemm::{gemm_block, num_threads, par_gemm, Dest, Operand};
use super::panels::{min_panel, with_panel_buffer, with_rows, PanelPlan, Rows, PANEL_FLOATS};
use super::{cpu_f32, is_cpu_f32, stored, widen};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Bytes of im2col buffer per row band: bounds memory on large images (a VAE decode at
/// 1024x1024 would otherwise need gigabytes of columns) while keeping gemms wide.
const COLUMN_BUDGET_BYTES: usize = 32 << 20;

/// `nn.Conv2d` with square kernels, zero padding and no dilation or groups (all SD1.x uses).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// [c_out, c_in, k, k], as stored.
    weight: Tensor,
    /// [c_out]
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

/// A conv2d whose shape is read from the weights (`weight` [out, in, k, k], `bias` [out]).
pub fn conv(vb: &VarBuilder, name: &str, stride: usize, padding: usize) -> Result<Conv2d> {
    let vb = vb.pp(name);
    let weight = stored(&vb, "weight")?;
    let (c_out, _, k, k2) = weight.dims4()?;
    if k != k2 {
        candle_core::bail!("{name}.weight: only square kernels are supported, got {k}x{k2}");
    }
    let bias = if vb.contains_tensor("bias") {
        Some(vb.get(c_out, "bias")?)
    } else {
        None
    };
    Ok(Conv2d {
        weight,
        bias,
        stride,
        padding,
    })
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Conv2d {
            weight,
            bias,
            stride,
            padding,
        }
    }

    /// candle's conv2d, bias broadcast over [B, C, H, W].
    fn forward_candle(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&widen(b, x.dtype())?.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }

    fn forward_cpu_f32(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let (b, c_in, h, w) = x.dims4()?;
        let (c_out, wc_in, k, _) = weight.dims4()?;
        if wc_in != c_in {
            candle_core::bail!("conv2d: input has {c_in} channels, the weights expect {wc_in}");
        }
        let (s, p) = (self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("conv2d: a {h}x{w} input is smaller than the {k}x{k} kernel");
        }
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let x = x.contiguous()?;
        let weight = weight.contiguous()?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.contiguous()?),
            None => None,
        };
        let (xs, xl) = x.storage_and_layout();
        let input = cpu_f32(&xs, xl.start_offset(), b * c_in * h * w)?;
        let bias_guard = bias.as_ref().map(|t| t.storage_and_layout());
        let bias = match &bias_guard {
            Some((bs, bl)) => Some(cpu_f32(bs, bl.start_offset(), c_out)?),
            None => None,
        };
        let g = Shape2d {
            b,
            c_in,
            h,
            w,
            c_out,
            k,
            stride: s,
            padding: p,
            oh,
            ow,
        };
        let Some(out) = with_rows(&weight, |kernel| {
            // Convolutions take 4x the linear layers' panels: each panel gemm packs the
            // whole column matrix again, which is large beside a conv's kernel
            // (`panel_bench`: 1280-channel 3x3 convs ran slower in 1 Mi panels than widened
            // whole, and faster in 4 Mi ones).
            let panel = 4 * PANEL_FLOATS.load(std::sync::atomic::Ordering::Relaxed);
            conv2d_f32(input, kernel, bias, COLUMN_BUDGET_BYTES, panel, g)
        }) else {
            candle_core::bail!("conv2d: weight of dtype {:?} on the CPU", weight.dtype());
        };
        Tensor::from_vec(out, (b, c_out, oh, ow), &Device::Cpu)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if is_cpu_f32(x) && with_rows(&self.weight, |_| ()).is_some() {
            // The stored weight goes to the CPU kernel as it is, widened panel by panel.
            return self.forward_cpu_f32(x, &self.weight);
        }
        let weight = widen(&self.weight, x.dtype())?;
        if is_cpu_f32(x) {
            self.forward_cpu_f32(x, &weight)
        } else {
            self.forward_candle(x, &weight)
        }
    }
}

#[derive(Clone, Copy)]
struct Shape2d {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

/// NCHW conv2d: `out[b] = kernel [c_out, c_in·k·k] @ im2col(input[b]) + bias`.
fn conv2d_f32(
    input: &[f32],
    kernel: Rows<'_>,
    bias: Option<&[f32]>,
    column_budget_bytes: usize,
    panel_floats: usize,
    g: Shape2d,
) -> Vec<f32> {
    let kk = g.c_in * g.k * g.k;
    let n = g.oh * g.ow;
    let mut out = vec![0f32; g.b * g.c_out * n];
    // The bias goes in first; the gemm then accumulates onto it.
    if let Some(bias) = bias {
        out.par_chunks_mut(n)
            .enumerate()
            .for_each(|(row, dst)| dst.fill(bias[row % g.c_out]));
    }
    let plan = ImagePlan {
        kernel,
        panel_floats,
        read_dst: bias.is_some(),
        pointwise: g.k == 1 && g.stride == 1 && g.padding == 0,
        // Output rows per band, so that one band's columns fit the budget.
        rows_per_band: (column_budget_bytes / (kk * g.ow * 4).max(1)).clamp(1, g.oh),
        g,
    };
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * n);
    if g.b >= num_threads() {
        // A whole image per task: no hand-offs inside a conv (cfg batches are 2 images).
        out.par_chunks_mut(out_len)
            .zip(input.par_chunks(in_len))
            .for_each_init(Vec::new, |cols, (dst, x)| plan.run(x, dst, cols, false));
    } else {
        let mut cols = Vec::new();
        for (dst, x) in out.chunks_mut(out_len).zip(input.chunks(in_len)) {
            plan.run(x, dst, &mut cols, true);
        }
    }
    out
}

/// How to convolve one image.
struct ImagePlan<'a> {
    /// [c_out, c_in·k·k] as stored: read in place when f32, else widened a panel of rows at
    /// a time (`panels`).
    kernel: Rows<'a>,
    panel_floats: usize,
    read_dst: bool,
    pointwise: bool,
    rows_per_band: usize,
    g: Shape2d,
}

impl ImagePlan<'_> {
    /// Convolves image `x` [c_in, h, w] into `dst` [c_out, oh·ow], band by band; `threaded`
    /// spreads each band's im2col and gemm over the thread pool.
    fn run(&self, x: &[f32], dst: &mut [f32], cols: &mut Vec<f32>, threaded: bool) {
        let g = self.g;
        let kk = g.c_in * g.k * g.k;
        let n = g.oh * g.ow;
        let mut y0 = 0;
        while y0 < g.oh {
            let y1 = if self.pointwise {
                g.oh
            } else {
                (y0 + self.rows_per_band).min(g.oh)
            };
            let band = (y1 - y0) * g.ow;
            // For a pointwise conv the input already is the column matrix.
            let rhs: &[f32] = if self.pointwise {
                x
            } else {
                cols.resize(kk * band, 0.0);
                im2col(x, &mut cols[..kk * band], g, y0, y1, threaded);
                &cols[..kk * band]
            };
            let d = Dest {
                // SAFETY (offset): the band's columns y0·ow..y0·ow+band are inside every row.
                ptr: unsafe { dst.as_mut_ptr().add(y0 * g.ow) },
                rs: n as isize,
            };
            let rhs = Operand {
                ptr: rhs.as_ptr(),
                rs: band as isize,
                cs: 1,
            };
            // SAFETY: dst holds c_out rows of n floats; the kernel is [c_out, kk] row-major
            // (whole or a panel of rows r0..r1 into dst's rows r0..r1), rhs [kk, band];
            // nothing else touches this image's dst.
            let read_dst = self.read_dst;
            let rows_gemm = |r0: usize, r1: usize, lhs: *const f32| unsafe {
                let lhs = Operand {
                    ptr: lhs,
                    rs: kk as isize,
                    cs: 1,
                };
                let d = d.offset(r0 * n);
                if threaded && r0 == 0 && r1 == g.c_out {
                    par_gemm(r1 - r0, band, kk, d, read_dst, lhs, rhs, 1.0);
                } else {
                    gemm_block(r1 - r0, band, kk, d, read_dst, lhs, rhs, 1.0);
                }
            };
            match self.kernel {
                Rows::F32(kernel) => rows_gemm(0, g.c_out, kernel.as_ptr()),
                kernel => {
                    // One image per thread: as few panels as the budget allows; else the
                    // panels are what the threads share.
                    let threads = if threaded { num_threads() } else { 1 };
                    let plan =
                        PanelPlan::new(g.c_out, kk, self.panel_floats, min_panel(band), threads);
                    let panel = |i: usize| {
                        let std::ops::Range { start: r0, end: r1 } = plan.bounds(i);
                        if r0 < r1 {
                            with_panel_buffer((r1 - r0) * kk, |wbuf| {
                                kernel.widen(r0 * kk..r1 * kk, wbuf);
                                rows_gemm(r0, r1, wbuf.as_ptr());
                            });
                        }
                    };
                    if threaded {
                        (0..plan.count).into_par_iter().for_each(panel);
                    } else {
                        (0..plan.count).for_each(panel);
                    }
                }
            }
            y0 = y1;
        }
    }
}

/// Columns of output rows `y0..y1` of one image: row `(c·k + i)·k + j` (PyTorch's weight
/// order) holds `x[c, y·s + i − p, x·s + j − p]`, zero outside the image.
fn im2col(x: &[f32], cols: &mut [f32], g: Shape2d, y0: usize, y1: usize, threaded: bool) {
    let band = (y1 - y0) * g.ow;
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let channel = |(c, rows): (usize, &mut [f32])| {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..k {
            for j in 0..k {
                let row = &mut rows[(i * k + j) * band..(i * k + j + 1) * band];
                for (r, oy) in (y0..y1).enumerate() {
                    let dst = &mut row[r * g.ow..(r + 1) * g.ow];
                    let iy = (oy * s + i) as isize - p;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let jx = j as isize - p;
                    if s == 1 {
                        // Output x reads input x + j − p: one shifted copy, zero edges.
                        let lo = (-jx).clamp(0, g.ow as isize) as usize;
                        let hi = (g.w as isize - jx).clamp(lo as isize, g.ow as isize) as usize;
                        dst[..lo].fill(0.0);
                        dst[lo..hi].copy_from_slice(
                            &src[(lo as isize + jx) as usize..(hi as isize + jx) as usize],
                        );
                        dst[hi..].fill(0.0);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * s) as isize + jx;
                            *d = if ix >= 0 && ix < g.w as isize {
                                src[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    };
    if threaded {
        cols.par_chunks_mut(k * k * band)
            .enumerate()
            .for_each(channel);
    } else {
        cols.chunks_mut(k * k * band).enumerate().for_each(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;

    fn check(
        b: usize,
        c_in: usize,
        c_out: usize,
        hw: (usize, usize),
        k: usize,
        s: usize,
        p: usize,
    ) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, c_in, hw.0, hw.1), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (c_out, c_in, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
        for bias in [Some(bias), None] {
            let conv = Conv2d::new(w.clone(), bias, s, p);
            let ours = conv.forward_cpu_f32(&x, &conv.weight).unwrap();
            let theirs = conv.forward_candle(&x, &conv.weight).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let diff = max_abs_diff(&ours, &theirs);
            assert!(
                diff < 1e-4,
                "b{b} c{c_in}->{c_out} {hw:?} k{k} s{s} p{p}: max |diff| {diff}"
            );
        }
    }

    #[test]
    fn matches_candle_conv2d() {
        check(2, 3, 5, (7, 9), 3, 1, 1);
        check(1, 4, 6, (8, 8), 3, 2, 1);
        check(2, 4, 6, (9, 7), 3, 2, 0);
        check(2, 5, 3, (6, 5), 1, 1, 0);
        check(1, 2, 3, (4, 4), 3, 1, 0);
        check(1, 3, 2, (1, 1), 3, 1, 1);
    }

    #[test]
    fn bands_cover_every_row() {
        // A budget below one row's columns: one output row per band.
        let g = Shape2d {
            b: 2,
            c_in: 3,
            h: 11,
            w: 6,
            c_out: 4,
            k: 3,
            stride: 1,
            padding: 1,
            oh: 11,
            ow: 6,
        };
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11, 6), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (4, 3, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let banded = conv2d_f32(&flat(&x), Rows::F32(&flat(&w)), Some(&flat(&bias)), 1, 1, g);
        let conv = Conv2d::new(w.clone(), Some(bias), 1, 1);
        let reference = flat(&conv.forward_candle(&x, &w).unwrap());
        assert_eq!(banded.len(), reference.len());
        for (a, b) in banded.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// A stored f16/bf16/fp8 kernel widened panel by panel gives exactly the numbers of the
    /// kernel widened whole first, for one image (panels across threads) and two (one image
    /// per thread), with ragged panels, several bands and the pointwise path.
    #[test]
    fn stored_kernels_in_panels_are_bit_identical_to_widening_first() {
        let dev = Device::Cpu;
        for (b, c_in, c_out, k, s, p) in [
            (1, 7, 37, 3, 1, 1),
            (2, 5, 40, 3, 2, 1),
            (2, 9, 33, 1, 1, 0),
        ] {
            let (h, w) = (13, 11);
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = Shape2d {
                b,
                c_in,
                h,
                w,
                c_out,
                k,
                stride: s,
                padding: p,
                oh,
                ow,
            };
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let x = flat(&Tensor::randn(0f32, 1.0, (b, c_in, h, w), &dev).unwrap());
            let bias = flat(&Tensor::randn(0f32, 1.0, c_out, &dev).unwrap());
            let w32 = Tensor::randn(0f32, 0.3, (c_out, c_in, k, k), &dev).unwrap();
            for dt in [DType::F16, DType::BF16, DType::F8E4M3, DType::U8] {
                let stored = if dt == DType::U8 {
                    crate::models::fp8::store_as(crate::models::fp8::Fp8Kind::E5m2, &w32).unwrap()
                } else {
                    w32.to_dtype(dt).unwrap()
                };
                assert_eq!(stored.dtype(), dt);
                let wide = flat(&widen(&stored, DType::F32).unwrap());
                for bias in [Some(&bias[..]), None] {
                    // Bands of 4 output rows.
                    let budget = 4 * c_in * k * k * ow * 4;
                    let want = conv2d_f32(&x, Rows::F32(&wide), bias, budget, 1 << 20, g);
                    for panel_floats in [1, 16 * c_in * k * k + 3, 1 << 20] {
                        let got = with_rows(&stored, |r| {
                            conv2d_f32(&x, r, bias, budget, panel_floats, g)
                        })
                        .unwrap();
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{dt:?} b{b} {c_in}->{c_out} k{k} s{s}: {panel_floats}"
                        );
                    }
                }
            }
        }
    }
}
