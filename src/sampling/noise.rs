//! ComfyUI's noise plumbing (numerics.md §2): initial noise (`prepare_noise`),
//! the default ancestral noise sampler and the Brownian-tree noise sampler.

use candle_core::{Device, Result, Tensor};

use super::brownian::BrownianTree;
use super::torch_math;
use crate::torch_rng::TorchGenerator;

/// `comfy.sample.prepare_noise(latent, seed, noise_inds)` (§2.1): CPU float32 noise of
/// `shape` ([B, C, H, W] or any rank with the batch first).
///
/// Without `batch_index` one `randn(shape)` covers the whole batch. With it, per-sample
/// tensors `randn([1, ...])` are drawn from one generator for indices `0..=max` and row `k`
/// of the result is the draw for `batch_index[k]` (duplicates allowed).
pub fn prepare_noise(shape: &[usize], seed: u64, batch_index: Option<&[i64]>) -> Result<Tensor> {
    let mut gen = TorchGenerator::new(seed);
    let Some(inds) = batch_index else {
        return Tensor::from_vec(gen.randn(shape), shape, &Device::Cpu);
    };
    if inds.is_empty() {
        candle_core::bail!("prepare_noise: empty batch_index");
    }
    if let Some(&neg) = inds.iter().find(|&&i| i < 0) {
        candle_core::bail!("prepare_noise: negative batch_index {neg}");
    }
    let mut one = shape.to_vec();
    if one.is_empty() {
        candle_core::bail!("prepare_noise: shape must have a batch dimension");
    }
    one[0] = 1;
    let max = *inds.iter().max().expect("non-empty") as usize;
    let draws: Vec<Vec<f32>> = (0..=max).map(|_| gen.randn(&one)).collect();
    let mut data = Vec::with_capacity(inds.len() * draws[0].len());
    for &i in inds {
        data.extend_from_slice(&draws[i as usize]);
    }
    let mut out_shape = shape.to_vec();
    out_shape[0] = inds.len();
    Tensor::from_vec(data, out_shape, &Device::Cpu)
}

/// A source of per-step noise for stochastic samplers: `noise_sampler(sigma, sigma_next)`.
pub trait NoiseSampler {
    /// Noise for the step from `sigma` to `sigma_next` (both the f64 values of float32 sigmas).
    fn sample(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor>;
}

/// ComfyUI's `default_noise_sampler` on CPU (§2.3): a fresh generator seeded with the
/// KSampler seed; every call is the next `randn(x.shape)` of that stream.
#[derive(Debug, Clone)]
pub struct DefaultNoiseSampler {
    gen: TorchGenerator,
    shape: Vec<usize>,
    device: Device,
}

impl DefaultNoiseSampler {
    pub fn new(shape: &[usize], seed: u64, device: &Device) -> Self {
        DefaultNoiseSampler {
            gen: TorchGenerator::new(seed),
            shape: shape.to_vec(),
            device: device.clone(),
        }
    }

    /// The next draw as a flat f32 vector.
    pub fn next_vec(&mut self) -> Vec<f32> {
        self.gen.randn(&self.shape)
    }
}

impl NoiseSampler for DefaultNoiseSampler {
    fn sample(&mut self, _sigma: f64, _sigma_next: f64) -> Result<Tensor> {
        let v = self.next_vec();
        Tensor::from_vec(v, self.shape.as_slice(), &self.device)
    }
}

/// ComfyUI's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed, cpu=True)` (§2.4):
/// `tree(σ, σ_next) / sqrt(|σ_next - σ|)`, one tree for the whole batch.
#[derive(Debug)]
pub struct BrownianTreeNoiseSampler {
    tree: BrownianTree,
    shape: Vec<usize>,
    device: Device,
    sign: f32,
}

impl BrownianTreeNoiseSampler {
    /// `sigma_min`/`sigma_max` are the smallest positive and the largest sigma of the
    /// schedule (float32 values); `seed` is the full KSampler seed (the tree entropy).
    pub fn new(
        shape: &[usize],
        sigma_min: f64,
        sigma_max: f64,
        seed: u64,
        device: &Device,
    ) -> Self {
        let (t0, t1, sign) = if sigma_min < sigma_max {
            (sigma_min, sigma_max, 1.0)
        } else {
            (sigma_max, sigma_min, -1.0)
        };
        let numel = shape.iter().product();
        BrownianTreeNoiseSampler {
            tree: BrownianTree::new(t0, t1, numel, seed as u128),
            shape: shape.to_vec(),
            device: device.clone(),
            sign,
        }
    }

    /// The noise as a flat f32 vector.
    pub fn next_vec(&mut self, sigma: f64, sigma_next: f64) -> Vec<f32> {
        let (a, b) = (sigma as f32, sigma_next as f32);
        let (lo, hi, sign) = if a < b {
            (a, b, 1.0f32)
        } else {
            (b, a, -1.0f32)
        };
        let s = self.sign * sign;
        let denom = torch_math::sqrt((b - a).abs());
        self.tree
            .increment(lo as f64, hi as f64)
            .into_iter()
            .map(|w| (w * s) / denom)
            .collect()
    }
}

impl NoiseSampler for BrownianTreeNoiseSampler {
    fn sample(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        let v = self.next_vec(sigma, sigma_next);
        Tensor::from_vec(v, self.shape.as_slice(), &self.device)
    }
}
