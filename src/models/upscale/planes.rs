//! The CPU f32 engine behind the upscale networks: feature maps held as zero-bordered
//! channel planes, and 3×3 / padding-1 convolutions computed on them without im2col.
//!
//! Why: an RRDBNet is ~350 3×3 convs with 32-64 output channels over 64-192 concatenated
//! input channels on large tiles. Through candle tensors each conv pays an im2col copy nine
//! times the size of its input, each dense block re-concatenates its growing input, and the
//! LeakyReLU and residual adds are separate passes over memory; that made a 4× upscale ~7×
//! slower than ComfyUI (BENCHMARKS.md). Here:
//!
//! - A [`Planes`] buffer stores `c` planes of `(h+2)·(w+2)` floats, the image inside a
//!   one-pixel border of zeros. Seen flat, the input a 3×3 tap `(i, j)` reads for output
//!   position `q` is `q + (i−1)·(w+2) + (j−1)`: each tap is one plain matrix product
//!   `out[c_out, q] += W_tap[c_out, c_in] · in[c_in, q + offset]` over a contiguous range of
//!   `q`, read in place (the border supplies the zero padding). Positions that fall on the
//!   border columns get garbage and are zeroed afterwards, so the border stays zero.
//! - The range of `q` is cut into chunks small enough that a chunk's output stays in the L2
//!   cache across its nine taps; chunks are spread over the thread pool, each running
//!   single-threaded gemms ([`gemm_block`], the project's AVX-512/AVX2 gemm), then adding
//!   the LeakyReLU in the same cache-hot pass.
//! - A dense block keeps `x, x1..x4` as consecutive planes of one buffer, so "concatenate"
//!   is just reading more planes.
//!
//! Sums run in another order than torch's (per tap, then over taps), which moves results
//! by float rounding only (tests/upscale_models.rs holds them to 2e-6 of spandrel's).

use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

use crate::models::nn::cpu_gemm::{gemm_block, Dest, Operand};

/// Output positions per task: the output chunk (≤ 64 channels × 1024 floats = 256 KiB) and
/// the input rows its taps read stay in the 2 MiB L2 across the nine taps.
const CHUNK: usize = 1024;

/// `c` feature planes of an `h × w` image, each stored with a one-pixel zero border.
pub struct Planes {
    data: Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
}

impl Planes {
    /// All zeros.
    pub fn zeros(c: usize, h: usize, w: usize) -> Self {
        Planes {
            data: vec![0f32; c * (h + 2) * (w + 2)],
            c,
            h,
            w,
        }
    }

    /// From an NCHW f32 tensor of batch 1.
    pub fn from_tensor(x: &Tensor) -> Result<Self> {
        let (b, c, h, w) = x.dims4()?;
        if b != 1 {
            bail!("Planes::from_tensor: batch {b}, expected 1");
        }
        let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut p = Planes::zeros(c, h, w);
        for ch in 0..c {
            for y in 0..h {
                let src = &v[(ch * h + y) * w..][..w];
                let at = p.index(ch, y, 0);
                p.data[at..at + w].copy_from_slice(src);
            }
        }
        Ok(p)
    }

    /// Channels `0..c` as an NCHW tensor [1, c, h, w].
    pub fn to_tensor(&self, c: usize) -> Result<Tensor> {
        let (h, w) = (self.h, self.w);
        let mut v = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            for y in 0..h {
                let at = self.index(ch, y, 0);
                v.extend_from_slice(&self.data[at..at + w]);
            }
        }
        Tensor::from_vec(v, (1, c, h, w), &candle_core::Device::Cpu)
    }

    pub fn channels(&self) -> usize {
        self.c
    }

    pub fn h(&self) -> usize {
        self.h
    }

    pub fn w(&self) -> usize {
        self.w
    }

    fn stride(&self) -> usize {
        self.w + 2
    }

    fn plane(&self) -> usize {
        (self.h + 2) * (self.w + 2)
    }

    /// Flat index of pixel (y, x) of channel `ch` (image coordinates, border excluded).
    fn index(&self, ch: usize, y: usize, x: usize) -> usize {
        ch * self.plane() + (y + 1) * self.stride() + x + 1
    }

    /// Channels `0..c` of `self`, as a buffer of `c` planes.
    pub fn head(&self, c: usize) -> Planes {
        Planes {
            data: self.data[..c * self.plane()].to_vec(),
            c,
            h: self.h,
            w: self.w,
        }
    }

    /// Nearest-neighbour ×2 of channels `0..c` (`F.interpolate(scale_factor=2)`).
    pub fn upsample2(&self, c: usize) -> Planes {
        let mut out = Planes::zeros(c, self.h * 2, self.w * 2);
        let (h, w) = (self.h, self.w);
        let plane = out.plane();
        out.data
            .par_chunks_mut(plane)
            .enumerate()
            .take(c)
            .for_each(|(ch, dst)| {
                let ostride = 2 * w + 2;
                for y in 0..h {
                    let src = &self.data[self.index(ch, y, 0)..][..w];
                    for r in 0..2 {
                        let row = &mut dst[(2 * y + r + 1) * ostride + 1..][..2 * w];
                        for (pair, &v) in row.chunks_exact_mut(2).zip(src) {
                            pair[0] = v;
                            pair[1] = v;
                        }
                    }
                }
            });
        out
    }

    /// `self[0..c] = self[0..c]·a + other[0..c]` (torch's `x * a + y`: a product, then a
    /// sum, each rounded). Borders stay zero.
    pub fn scale_add(&mut self, a: f32, other: &Planes, c: usize) {
        let n = c * self.plane();
        self.data[..n]
            .par_chunks_mut(1 << 16)
            .zip(other.data[..n].par_chunks(1 << 16))
            .for_each(|(d, s)| {
                for (d, s) in d.iter_mut().zip(s) {
                    *d = *d * a + *s;
                }
            });
    }

    /// [`Self::scale_add`], then copies the result into `other` as well.
    pub fn scale_add_into_both(&mut self, a: f32, other: &mut Planes, c: usize) {
        let n = c * self.plane();
        self.data[..n]
            .par_chunks_mut(1 << 16)
            .zip(other.data[..n].par_chunks_mut(1 << 16))
            .for_each(|(d, s)| {
                for (d, s) in d.iter_mut().zip(s.iter_mut()) {
                    *d = *d * a + *s;
                    *s = *d;
                }
            });
    }

    /// `self[0..c] += other[0..c]`.
    pub fn add(&mut self, other: &Planes, c: usize) {
        self.scale_add(1.0, other, c);
    }
}

/// A 3×3 convolution with padding 1, stride 1 and a bias (every conv of RRDBNet and
/// SRVGGNetCompact), weights repacked per tap.
pub struct Conv3x3 {
    /// [9][c_out][c_in]: tap `t = 3i + j`.
    taps: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
}

/// What to apply to each output value in the pass that finishes a chunk.
#[derive(Clone, Copy)]
pub enum Activation {
    None,
    /// `x > 0 ? x : slope·x` (LeakyReLU).
    Leaky(f32),
    /// Per-channel slopes (PReLU), one per output channel.
    PRelu,
}

impl Conv3x3 {
    /// From torch's `weight` [c_out, c_in, 3, 3] and `bias` [c_out] (any float dtype).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if (kh, kw) != (3, 3) {
            bail!("Conv3x3: a {kh}x{kw} kernel");
        }
        let w = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut taps = vec![0f32; 9 * c_out * c_in];
        for o in 0..c_out {
            for i in 0..c_in {
                for t in 0..9 {
                    taps[(t * c_out + o) * c_in + i] = w[(o * c_in + i) * 9 + t];
                }
            }
        }
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0f32; c_out],
        };
        if bias.len() != c_out {
            bail!("Conv3x3: {} biases for {c_out} outputs", bias.len());
        }
        Ok(Conv3x3 {
            taps,
            bias,
            c_in,
            c_out,
        })
    }

    pub fn c_in(&self) -> usize {
        self.c_in
    }

    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Reads planes `0..c_in` of `buf` and writes the output into planes
    /// `out_at..out_at + c_out` of the same buffer (a dense block's growing concatenation).
    pub fn forward_within(&self, buf: &mut Planes, out_at: usize, act: Activation) -> Result<()> {
        if out_at < self.c_in || out_at + self.c_out > buf.c {
            bail!(
                "Conv3x3: output planes {out_at}..{} overlap the {} inputs or pass the {} planes",
                out_at + self.c_out,
                self.c_in,
                buf.c
            );
        }
        let geometry = (buf.h, buf.w);
        let ptr = buf.data.as_mut_ptr();
        // SAFETY: the input planes 0..c_in and output planes out_at.. are disjoint parts of
        // one live allocation with the geometry given.
        unsafe { self.run(ptr, ptr.add(out_at * buf.plane()), geometry, act, &[]) };
        Ok(())
    }

    /// Reads planes `0..c_in` of `src` into planes `0..c_out` of `dst` (same size).
    pub fn forward_into(
        &self,
        src: &Planes,
        dst: &mut Planes,
        act: Activation,
        slopes: &[f32],
    ) -> Result<()> {
        if src.c < self.c_in || dst.c < self.c_out || (src.h, src.w) != (dst.h, dst.w) {
            bail!(
                "Conv3x3 {}→{}: {} input planes of {}x{}, {} output planes of {}x{}",
                self.c_in,
                self.c_out,
                src.c,
                src.h,
                src.w,
                dst.c,
                dst.h,
                dst.w
            );
        }
        if matches!(act, Activation::PRelu) && slopes.len() != self.c_out {
            bail!(
                "Conv3x3: {} PReLU slopes for {} outputs",
                slopes.len(),
                self.c_out
            );
        }
        // SAFETY: two distinct buffers (one borrowed shared, one exclusive) of the geometry.
        unsafe {
            self.run(
                src.data.as_ptr(),
                dst.data.as_mut_ptr(),
                (src.h, src.w),
                act,
                slopes,
            )
        };
        Ok(())
    }

    /// The convolution proper. `src` points at plane 0 of the input, `dst` at the first
    /// output plane; both buffers use the plane size of an `h × w` image.
    ///
    /// # Safety
    /// `src` must address `c_in` planes and `dst` `c_out` planes of that size, not
    /// overlapping, and nothing else may access the output planes meanwhile.
    unsafe fn run(
        &self,
        src: *const f32,
        dst: *mut f32,
        (h, w): (usize, usize),
        act: Activation,
        slopes: &[f32],
    ) {
        let stride = w + 2;
        let plane = (h + 2) * stride;
        // Output positions from pixel (0, 0) to pixel (h−1, w−1), border columns between.
        let (q0, q1) = (stride + 1, h * stride + w + 1);
        let chunks = (q1 - q0).div_ceil(CHUNK);
        let (src, dst) = (
            Operand {
                ptr: src,
                rs: plane as isize,
                cs: 1,
            },
            Dest {
                ptr: dst,
                rs: plane as isize,
            },
        );
        (0..chunks).into_par_iter().for_each(|ci| {
            let (src, dst) = (src, dst);
            let a = q0 + ci * CHUNK;
            let n = CHUNK.min(q1 - a);
            // SAFETY (all offsets): q ± (stride + 1) stays inside a plane for q in q0..q1,
            // and each task writes only positions a..a+n of the output planes.
            unsafe {
                let out = dst.offset(a);
                for (o, &b) in self.bias.iter().enumerate() {
                    std::slice::from_raw_parts_mut(out.ptr.add(o * plane), n).fill(b);
                }
                for t in 0..9 {
                    let (i, j) = (t / 3, t % 3);
                    let offset = (a + i * stride + j) as isize - (stride + 1) as isize;
                    let rhs = Operand {
                        ptr: src.ptr.offset(offset),
                        ..src
                    };
                    let lhs = Operand {
                        ptr: self.taps.as_ptr().add(t * self.c_out * self.c_in),
                        rs: self.c_in as isize,
                        cs: 1,
                    };
                    gemm_block(self.c_out, n, self.c_in, out, true, lhs, rhs, 1.0);
                }
                let slope = |o: usize| match act {
                    Activation::None => None,
                    Activation::Leaky(s) => Some(s),
                    Activation::PRelu => slopes.get(o).copied(),
                };
                for o in 0..self.c_out {
                    let row = std::slice::from_raw_parts_mut(out.ptr.add(o * plane), n);
                    if let Some(s) = slope(o) {
                        leaky(row, s);
                    }
                    // Zero what landed on the border columns (x = −1 and x = w).
                    let mut q = a;
                    while q < a + n {
                        let x = q % stride;
                        if x == 0 || x == stride - 1 {
                            row[q - a] = 0.0;
                            q += 1;
                        } else {
                            // Skip to the next border column.
                            q += stride - 1 - x;
                        }
                    }
                }
            }
        });
    }
}

/// `v > 0 ? v : slope·v` in place (torch's LeakyReLU and PReLU).
fn leaky(row: &mut [f32], slope: f32) {
    for v in row {
        if *v <= 0.0 {
            *v *= slope;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn conv_matches_candle_on_odd_sizes_and_chunk_edges() {
        let dev = Device::Cpu;
        // 37x29 with 1085 output positions: two chunks, the second short; 1x1 and 2x3
        // images leave almost nothing but border.
        for (c_in, c_out, h, w) in [(5, 7, 37, 29), (3, 4, 1, 1), (2, 3, 2, 3), (8, 32, 40, 33)] {
            let x = Tensor::randn(0f32, 1.0, (1, c_in, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.3, (c_out, c_in, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
            let reference = x
                .conv2d(&wt, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap();
            let conv = Conv3x3::new(&wt, Some(&b)).unwrap();
            let src = Planes::from_tensor(&x).unwrap();
            let mut dst = Planes::zeros(c_out, h, w);
            conv.forward_into(&src, &mut dst, Activation::None, &[])
                .unwrap();
            let got = dst.to_tensor(c_out).unwrap();
            assert!(max_diff(&got, &reference) < 1e-4, "{c_in}->{c_out} {h}x{w}");
            // The border stays zero.
            let stride = w + 2;
            for ch in 0..c_out {
                let p = &dst.data[ch * dst.plane()..(ch + 1) * dst.plane()];
                for (q, v) in p.iter().enumerate() {
                    let (y, x) = (q / stride, q % stride);
                    if y == 0 || y == h + 1 || x == 0 || x == w + 1 {
                        assert_eq!(*v, 0.0, "border at ({y}, {x})");
                    }
                }
            }
            // The same conv writing into later planes of its input's buffer, LeakyReLU'd.
            let mut buf = Planes::zeros(c_in + c_out, h, w);
            buf.data[..src.data.len()].copy_from_slice(&src.data);
            conv.forward_within(&mut buf, c_in, Activation::Leaky(0.2))
                .unwrap();
            let lrelu = reference.maximum(&(&reference * 0.2).unwrap()).unwrap();
            let got = buf
                .to_tensor(c_in + c_out)
                .unwrap()
                .narrow(1, c_in, c_out)
                .unwrap();
            assert!(max_diff(&got, &lrelu) < 1e-4);
        }
    }

    #[test]
    fn overlapping_planes_are_refused() {
        let conv = Conv3x3::new(
            &Tensor::zeros((4, 4, 3, 3), DType::F32, &Device::Cpu).unwrap(),
            None,
        )
        .unwrap();
        let mut buf = Planes::zeros(8, 4, 4);
        assert!(conv.forward_within(&mut buf, 2, Activation::None).is_err());
        assert!(conv.forward_within(&mut buf, 6, Activation::None).is_err());
        assert!(conv.forward_within(&mut buf, 4, Activation::None).is_ok());
    }

    #[test]
    fn upsample_matches_candle() {
        let x = Tensor::randn(0f32, 1.0, (1, 3, 5, 4), &Device::Cpu).unwrap();
        let got = Planes::from_tensor(&x)
            .unwrap()
            .upsample2(3)
            .to_tensor(3)
            .unwrap();
        let want = x.upsample_nearest2d(10, 8).unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);
    }
}
