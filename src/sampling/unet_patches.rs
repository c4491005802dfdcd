//! MODEL patches of the UNet's internals, kept as data on the MODEL (like
//! [`super::cfg_patches`]) and handed to the UNet as an
//! [`OutputBlockPatch`](crate::models::unet::OutputBlockPatch) /
//! [`InputBlockPatch`](crate::models::unet::InputBlockPatch): PatchModelAddDownscale's
//! resizes ([`Downscale`], [`OutputPatch::MatchSkip`]); FreeU and FreeU_V2
//! (`comfy_extras/nodes_freelunch.py`), which scale the backbone half of the hidden state and
//! damp the lowest frequencies of the skip connection on the blocks with 4× and 2× the
//! model's base channels.
//!
//! The Fourier filter scales a 2×2 block at the centre of the shifted spectrum, i.e. the
//! frequencies (0 or −1, 0 or −1): rather than a full FFT round trip, those four
//! coefficients are computed directly (in f64) and `(scale − 1)` times their inverse
//! transform's real part is added to the input. torch's complex64 FFT round trip rounds the
//! untouched frequencies too, so the two agree to float32 noise, not bit for bit.

use crate::image_ops::{common_upscale, py_round, Crop, Planes, TorchLayout, UpscaleMethod};
use crate::models::unet::{InputBlockPatch, OutputBlockPatch};
use crate::torch_rng::TorchGenerator;
use candle_core::{DType, Result, Tensor};
use std::sync::{Arc, Mutex};

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

/// PatchModelAddDownscale (`comfy_extras/nodes_model_downscale.py`, Kohya Deep Shrink): input
/// block `block`'s output is resized by `1/factor` with `method` while `sigma_end ≤ σ ≤
/// sigma_start`, before its skip is stored or (`after_skip`) after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Downscale {
    pub block: usize,
    pub factor: f64,
    pub sigma_start: f64,
    pub sigma_end: f64,
    pub after_skip: bool,
    pub method: UpscaleMethod,
}

/// One `output_block_patch`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputPatch {
    FreeU(FreeU),
    /// PatchModelAddDownscale's: an `h` whose height differs from the skip's is resized to
    /// the skip's size with this method.
    MatchSkip(UpscaleMethod),
}

impl From<FreeU> for OutputPatch {
    fn from(f: FreeU) -> Self {
        OutputPatch::FreeU(f)
    }
}

/// The UNet patches of a MODEL (applied in the order they were added).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnetPatches {
    pub output_block: Vec<OutputPatch>,
    pub input_block: Vec<Downscale>,
    /// HyperTile's query tiling (the last one set).
    pub hypertile: Option<HyperTile>,
}

impl UnetPatches {
    pub fn is_empty(&self) -> bool {
        self.output_block.is_empty() && self.input_block.is_empty() && self.hypertile.is_none()
    }
}

/// `comfy.utils.common_upscale(x, width, height, method, "disabled")` on a `[B, C, H, W]`
/// tensor (float32, back in its dtype).
fn resize(x: &Tensor, width: usize, height: usize, method: UpscaleMethod) -> Result<Tensor> {
    let p = Planes::from_nchw(&x.to_dtype(DType::F32)?)?;
    let out = common_upscale(
        &p,
        width,
        height,
        method,
        Crop::Disabled,
        TorchLayout::ChannelsFirst,
    )
    .map_err(|e| candle_core::Error::Msg(format!("PatchModelAddDownscale: {e}")))?;
    out.to_nchw()?.to_device(x.device())?.to_dtype(x.dtype())
}

impl OutputBlockPatch for UnetPatches {
    fn apply(&self, mut h: Tensor, mut hsp: Tensor) -> Result<(Tensor, Tensor)> {
        for p in &self.output_block {
            (h, hsp) = match p {
                OutputPatch::FreeU(f) => f.apply(h, hsp)?,
                OutputPatch::MatchSkip(method) => {
                    let (_, _, sh, sw) = hsp.dims4()?;
                    if h.dim(2)? != sh {
                        (resize(&h, sw, sh, *method)?, hsp)
                    } else {
                        (h, hsp)
                    }
                }
            };
        }
        Ok((h, hsp))
    }
}

impl InputBlockPatch for UnetPatches {
    fn apply(&self, mut h: Tensor, block: usize, after_skip: bool, sigma: f64) -> Result<Tensor> {
        // `transformer_options["sigmas"][0].item()`: the float32 σ.
        let s = sigma as f32 as f64;
        for d in &self.input_block {
            if d.after_skip != after_skip || d.block != block {
                continue;
            }
            if s <= d.sigma_start && s >= d.sigma_end {
                let (_, _, hh, ww) = h.dims4()?;
                let k = 1.0 / d.factor;
                let w = py_round(ww as f64 * k).max(0) as usize;
                let hn = py_round(hh as f64 * k).max(0) as usize;
                h = resize(&h, w, hn, d.method)?;
            }
        }
        Ok(h)
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

/// HyperTile (`comfy_extras/nodes_hypertile.py`): the self-attention queries of the
/// transformer blocks whose token count is the latent's area at depth 0..=`max_depth` are
/// split into tiles of about `latent_tile_size` (× 2^depth with `scale_depth`) tokens a side.
/// The tile counts come from `random_divisor`, which draws `torch.randint` from torch's global
/// generator whenever it has more than one choice ([`HyperTileRng`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HyperTile {
    pub latent_tile_size: usize,
    pub swap_size: usize,
    pub max_depth: usize,
    pub scale_depth: bool,
    pub rng: HyperTileRng,
}

/// torch's global generator as HyperTile draws from it: reset by the sampler at the start of
/// each run to where `prepare_noise(seed)` leaves it ([`HyperTileRng::reset`]). Shared by the
/// clones of one patched MODEL (equal when it is the same generator).
#[derive(Debug, Clone)]
pub struct HyperTileRng(pub Arc<Mutex<TorchGenerator>>);

impl Default for HyperTileRng {
    fn default() -> Self {
        HyperTileRng(Arc::new(Mutex::new(TorchGenerator::new(0))))
    }
}

impl PartialEq for HyperTileRng {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl HyperTileRng {
    /// `torch.manual_seed(seed)` followed by the initial noise `randn(shape)` of the
    /// sampling run (ComfyUI's `prepare_noise` without a batch index).
    pub fn reset(&self, seed: u64, noise_shape: &[usize]) {
        let mut g = TorchGenerator::new(seed);
        let _ = g.randn(noise_shape);
        if let Ok(mut slot) = self.0.lock() {
            *slot = g;
        }
    }

    /// `torch.randint(low=0, high, size=(1,))`: a 32-bit draw modulo `high`.
    fn randint(&self, high: usize) -> usize {
        match self.0.lock() {
            Ok(mut g) => (g.next_u32() as u64 % high.max(1) as u64) as usize,
            Err(_) => 0,
        }
    }
}

impl HyperTile {
    /// `random_divisor(value, min_value, max_options)`.
    fn random_divisor(&self, value: usize, min_value: usize) -> usize {
        let min_value = min_value.min(value).max(1);
        let ns: Vec<usize> = (min_value..=value)
            .filter(|i| value.is_multiple_of(*i))
            .take(self.swap_size)
            .map(|i| value / i)
            .collect();
        if ns.len() > 1 {
            // randint(low=0, high=len(ns) − 1): never the last option.
            ns[self.randint_index(ns.len() - 1)]
        } else {
            ns.first().copied().unwrap_or(1)
        }
    }

    fn randint_index(&self, high: usize) -> usize {
        self.rng.randint(high)
    }
}

impl crate::models::unet::Attn1Tiling for HyperTile {
    fn tiles(
        &self,
        tokens: usize,
        (lh, lw): (usize, usize),
    ) -> Option<(usize, usize, usize, usize)> {
        // apply_to = [(H / 2^i)·(W / 2^i)], compared as floats with the token count.
        let depth = (0..=self.max_depth).position(|i| {
            let d = (1u64 << i.min(62)) as f64;
            (lh as f64 / d) * (lw as f64 / d) == tokens as f64
        })?;
        let aspect = lw as f64 / lh as f64;
        let h = py_round((tokens as f64 * aspect).sqrt()).max(1) as usize;
        let w = py_round((tokens as f64 / aspect).sqrt()).max(1) as usize;
        let factor = if self.scale_depth {
            1usize << depth.min(62)
        } else {
            1
        };
        let nh = self.random_divisor(h, self.latent_tile_size.saturating_mul(factor));
        let nw = self.random_divisor(w, self.latent_tile_size.saturating_mul(factor));
        (nh * nw > 1).then_some((nh, nw, h, w))
    }
}
