//! MODEL patches of the UNet's internals, kept as data on the MODEL (like
//! [`super::cfg_patches`]) and handed to the UNet as an
//! [`OutputBlockPatch`](crate::models::unet::OutputBlockPatch): FreeU and FreeU_V2
//! (`comfy_extras/nodes_freelunch.py`), which scale the backbone half of the hidden state and
//! damp the lowest frequencies of the skip connection on the blocks with 4× and 2× the
//! model's base channels.
//!
//! The Fourier filter scales a 2×2 block at the centre of the shifted spectrum, i.e. the
//! frequencies (0 or −1, 0 or −1): rather than a full FFT round trip, those four
//! coefficients are computed directly (in f64) and `(scale − 1)` times their inverse
//! transform's real part is added to the input. torch's complex64 FFT round trip rounds the
//! untouched frequencies too, so the two agree to float32 noise, not bit for bit.

use crate::models::unet::OutputBlockPatch;
use candle_core::{DType, Result, Tensor};

/// FreeU (`v2: false`) or FreeU_V2 (`v2: true`) with the UNet's `model_channels`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreeU {
    pub b1: f64,
    pub b2: f64,
    pub s1: f64,
    pub s2: f64,
    pub v2: bool,
    pub model_channels: usize,
}

/// The UNet patches of a MODEL (applied in the order they were added).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnetPatches {
    pub output_block: Vec<FreeU>,
}

impl UnetPatches {
    pub fn is_empty(&self) -> bool {
        self.output_block.is_empty()
    }
}

impl OutputBlockPatch for UnetPatches {
    fn apply(&self, mut h: Tensor, mut hsp: Tensor) -> Result<(Tensor, Tensor)> {
        for p in &self.output_block {
            (h, hsp) = p.apply(h, hsp)?;
        }
        Ok((h, hsp))
    }
}

impl OutputBlockPatch for FreeU {
    fn apply(&self, h: Tensor, hsp: Tensor) -> Result<(Tensor, Tensor)> {
        let c = h.dim(1)?;
        let (b, s) = if c == self.model_channels * 4 {
            (self.b1, self.s1)
        } else if c == self.model_channels * 2 {
            (self.b2, self.s2)
        } else {
            return Ok((h, hsp));
        };
        let h = if self.v2 {
            freeu_v2_backbone(&h, b)?
        } else {
            scale_first_half(&h, |_, _| b as f32)?
        };
        Ok((h, fourier_filter(&hsp, s)?))
    }
}

/// `h[:, :C//2] *= factor(batch, pixel)`, in float32.
fn scale_first_half(h: &Tensor, factor: impl Fn(usize, usize) -> f32) -> Result<Tensor> {
    let dtype = h.dtype();
    let (n, c, hh, ww) = h.dims4()?;
    let mut v = h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let plane = hh * ww;
    for bi in 0..n {
        for ch in 0..c / 2 {
            let o = (bi * c + ch) * plane;
            for (k, x) in v[o..o + plane].iter_mut().enumerate() {
                *x *= factor(bi, k);
            }
        }
    }
    Tensor::from_vec(v, (n, c, hh, ww), h.device())?.to_dtype(dtype)
}

/// FreeU_V2's backbone factor `(b − 1)·m + 1`, `m` the channel mean min-max normalised per
/// sample.
fn freeu_v2_backbone(h: &Tensor, b: f64) -> Result<Tensor> {
    let (n, c, hh, ww) = h.dims4()?;
    let plane = hh * ww;
    let v = h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut norm = vec![0f32; n * plane];
    for bi in 0..n {
        let mean: Vec<f32> = (0..plane)
            .map(|k| {
                let s: f64 = (0..c).map(|ch| v[(bi * c + ch) * plane + k] as f64).sum();
                (s / c as f64) as f32
            })
            .collect();
        let max = mean.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = mean.iter().copied().fold(f32::INFINITY, f32::min);
        for (k, m) in mean.iter().enumerate() {
            norm[bi * plane + k] = (m - min) / (max - min);
        }
    }
    let bm1 = (b - 1.0) as f32;
    scale_first_half(h, |bi, k| bm1 * norm[bi * plane + k] + 1.0)
}

/// The indices of the shifted spectrum's centre block `[H//2 − 1, H//2 + 1)` as
/// frequencies: 0 and −1 (just 0 when the axis has one entry, as Python's slice gives).
fn centre_freqs(n: usize) -> Vec<usize> {
    if n == 1 {
        vec![0]
    } else {
        vec![0, n - 1]
    }
}

/// `Fourier_filter(x, threshold=1, scale)` of nodes_freelunch.py.
pub fn fourier_filter(x: &Tensor, scale: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let (n, c, hh, ww) = x.dims4()?;
    let mut v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let k = scale - 1.0;
    if k == 0.0 {
        return Ok(x.clone());
    }
    let (fu, fv) = (centre_freqs(hh), centre_freqs(ww));
    let tau = std::f64::consts::TAU;
    let plane = hh * ww;
    let area = plane as f64;
    // e^{-2πi·u·y/H} tables for the chosen frequencies.
    let phase = |f: usize, len: usize, i: usize| {
        let a = tau * ((f * i) % len) as f64 / len as f64;
        (a.cos(), a.sin())
    };
    for p in 0..n * c {
        let data = &mut v[p * plane..(p + 1) * plane];
        // X[u, v] = Σ x·e^{-2πi(uy/H + vx/W)}
        let mut coeffs = Vec::new();
        for &u in &fu {
            for &w in &fv {
                let (mut re, mut im) = (0f64, 0f64);
                for y in 0..hh {
                    let (cy, sy) = phase(u, hh, y);
                    for x in 0..ww {
                        let (cx, sx) = phase(w, ww, x);
                        // e^{-i(a+b)} = cos(a+b) − i·sin(a+b)
                        let (ca, sa) = (cy * cx - sy * sx, sy * cx + cy * sx);
                        let val = data[y * ww + x] as f64;
                        re += val * ca;
                        im -= val * sa;
                    }
                }
                coeffs.push((u, w, re, im));
            }
        }
        for y in 0..hh {
            for x in 0..ww {
                // Re(Σ X[u,v]·e^{+2πi(uy/H + vx/W)}) / (HW)
                let mut add = 0f64;
                for &(u, w, re, im) in &coeffs {
                    let (cy, sy) = phase(u, hh, y);
                    let (cx, sx) = phase(w, ww, x);
                    let (ca, sa) = (cy * cx - sy * sx, sy * cx + cy * sx);
                    add += re * ca - im * sa;
                }
                let i = y * ww + x;
                data[i] = (data[i] as f64 + k * add / area) as f32;
            }
        }
    }
    Tensor::from_vec(v, (n, c, hh, ww), x.device())?.to_dtype(dtype)
}
