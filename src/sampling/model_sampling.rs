//! `comfy/model_sampling.py`: ModelSamplingDiscrete with EPS / V_PREDICTION
//! (numerics.md §5.1, §5.2).

use candle_core::{DType, Result, Tensor};

/// Prediction parameterisation of a discrete-time model (σ_data = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// ε-prediction (SD1.x, SDXL).
    Eps,
    /// v-prediction (SD2.x-768, some SDXL).
    VPrediction,
}

/// torch-style `linspace` in f64 (the f64 CPU kernel: first half from the start, second
/// half from the end).
pub fn linspace_f64(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f64;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (steps - 1 - i) as f64
            }
        })
        .collect()
}

/// torch-style `linspace` with float32 output (start/end rounded to f32 first).
pub fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                s + step * i as f32
            } else {
                e - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

/// ModelSamplingDiscrete: the 1000-entry sigma table and the σ ↔ t maps.
#[derive(Debug, Clone)]
pub struct ModelSampling {
    pub prediction: Prediction,
    /// float32 sigma table, ascending (index = timestep).
    pub sigmas: Vec<f32>,
    /// float32 of the f64 log of each sigma.
    pub log_sigmas: Vec<f32>,
}

impl ModelSampling {
    /// SD1.x/SDXL default: scaled-linear betas 0.00085..0.012, 1000 steps.
    pub fn sd15(prediction: Prediction) -> Self {
        Self::discrete(prediction, 0.00085, 0.012, 1000, false)
    }

    /// "linear" beta schedule (`linspace(√start, √end)²`), all in f64, optional zsnr rescale.
    pub fn discrete(
        prediction: Prediction,
        linear_start: f64,
        linear_end: f64,
        timesteps: usize,
        zsnr: bool,
    ) -> Self {
        let betas: Vec<f64> = linspace_f64(linear_start.sqrt(), linear_end.sqrt(), timesteps)
            .into_iter()
            .map(|b| b * b)
            .collect();
        let mut acc = 1.0f64;
        let mut sig64: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                ((1.0 - acc) / acc).sqrt()
            })
            .collect();
        if zsnr {
            sig64 = rescale_zero_terminal_snr(&sig64);
        }
        ModelSampling {
            prediction,
            sigmas: sig64.iter().map(|&s| s as f32).collect(),
            log_sigmas: sig64.iter().map(|&s| s.ln() as f32).collect(),
        }
    }

    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    pub fn sigma_max(&self) -> f32 {
        *self.sigmas.last().expect("non-empty table")
    }

    /// σ → t: the nearest table index in log space (first index wins ties).
    pub fn timestep(&self, sigma: f32) -> usize {
        let ls = sigma.ln();
        let mut best = 0;
        let mut best_d = f32::INFINITY;
        for (k, &l) in self.log_sigmas.iter().enumerate() {
            let d = (ls - l).abs();
            if d < best_d {
                best_d = d;
                best = k;
            }
        }
        best
    }

    /// t → σ: log-linear interpolation of the table, in f32.
    pub fn sigma(&self, timestep: f32) -> f32 {
        let t = timestep.clamp(0.0, (self.sigmas.len() - 1) as f32);
        let lo = t.floor() as usize;
        let hi = t.ceil() as usize;
        let w = t - t.trunc();
        let ls = (1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi];
        ls.exp()
    }

    /// `percent_to_sigma` (used for conditioning start/end percentages).
    pub fn percent_to_sigma(&self, percent: f64) -> f64 {
        if percent <= 0.0 {
            return 999_999_999.9;
        }
        if percent >= 1.0 {
            return 0.0;
        }
        self.sigma(((1.0 - percent) * 999.0) as f32) as f64
    }

    /// The model input: `x / sqrt(σ² + 1)`.
    pub fn calculate_input(&self, sigma: f64, x: &Tensor) -> Result<Tensor> {
        let s = sigma as f32;
        let k = (s * s + 1.0).sqrt();
        x.broadcast_div(&scalar(k, x)?)
    }

    /// The denoised x0 prediction from the raw model output.
    pub fn calculate_denoised(
        &self,
        sigma: f64,
        model_output: &Tensor,
        model_input: &Tensor,
    ) -> Result<Tensor> {
        let s = sigma as f32;
        match self.prediction {
            Prediction::Eps => {
                model_input.broadcast_sub(&model_output.broadcast_mul(&scalar(s, model_output)?)?)
            }
            Prediction::VPrediction => {
                let d = s * s + 1.0;
                let a = model_input.broadcast_div(&scalar(d, model_input)?)?;
                let b = model_output
                    .broadcast_mul(&scalar(s, model_output)?)?
                    .broadcast_div(&scalar(d.sqrt(), model_output)?)?;
                a - b
            }
        }
    }

    /// `noise_scaling` (§2.2): `noise·sqrt(1+σ²) + latent` at max denoise, else `noise·σ + latent`.
    pub fn noise_scaling(
        &self,
        sigma: f64,
        noise: &Tensor,
        latent: &Tensor,
        max_denoise: bool,
    ) -> Result<Tensor> {
        let s = sigma as f32;
        let k = if max_denoise { (1.0 + s * s).sqrt() } else { s };
        noise
            .broadcast_mul(&scalar(k, noise)?)?
            .broadcast_add(latent)
    }

    /// `inverse_noise_scaling`: the identity for EPS and V.
    pub fn inverse_noise_scaling(&self, _sigma: f64, latent: &Tensor) -> Result<Tensor> {
        Ok(latent.clone())
    }
}

/// A 0-d f32 tensor on `like`'s device.
pub(crate) fn scalar(v: f32, like: &Tensor) -> Result<Tensor> {
    Tensor::new(v, like.device())?.to_dtype(DType::F32)
}

fn rescale_zero_terminal_snr(sigmas: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = sigmas
        .iter()
        .map(|&x| (1.0 / (x * x + 1.0)).sqrt())
        .collect();
    let s0 = s[0];
    let st = *s.last().expect("non-empty");
    for v in s.iter_mut() {
        *v -= st;
    }
    let k = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v *= k;
    }
    let n = s.len();
    let mut ab: Vec<f64> = s.iter().map(|&v| v * v).collect();
    ab[n - 1] = 4.897_345_189_085_343_5e-8;
    ab.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_table() {
        let ms = ModelSampling::sd15(Prediction::Eps);
        assert_eq!(ms.sigma_min() as f64, 0.029167158529162407);
        assert_eq!(ms.sigma_max() as f64, 14.614641189575195);
        assert_eq!(ms.timestep(ms.sigma_max()), 999);
        assert_eq!(ms.timestep(1.0), 354);
        assert_eq!(ms.timestep(ms.sigma_min()), 0);
        assert_eq!(ms.sigma(500.5), "1.62098324".parse::<f32>().unwrap());
        assert_eq!(ms.percent_to_sigma(0.0), 999_999_999.9);
        assert_eq!(ms.percent_to_sigma(1.0), 0.0);
        assert_eq!(ms.percent_to_sigma(0.5) as f32, ms.sigma(499.5));
    }

    #[test]
    fn eps_and_v_math() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::new(&[1.0f32, -2.0, 3.0], &dev)?;
        let out = Tensor::new(&[0.5f32, 0.25, -1.0], &dev)?;
        let ms = ModelSampling::sd15(Prediction::Eps);
        let d = ms.calculate_denoised(2.0, &out, &x)?.to_vec1::<f32>()?;
        assert_eq!(d, vec![0.0, -2.5, 5.0]);
        let xin = ms.calculate_input(2.0, &x)?.to_vec1::<f32>()?;
        assert_eq!(xin[0], 1.0 / 5f32.sqrt());
        let v = ModelSampling::sd15(Prediction::VPrediction);
        let d = v.calculate_denoised(2.0, &out, &x)?.to_vec1::<f32>()?;
        assert_eq!(d[0], 1.0 / 5.0 - (0.5 * 2.0) / 5f32.sqrt());
        let n = ms.noise_scaling(2.0, &x, &out, true)?.to_vec1::<f32>()?;
        assert_eq!(n[0], 1.0 * 5f32.sqrt() + 0.5);
        let n = ms.noise_scaling(2.0, &x, &out, false)?.to_vec1::<f32>()?;
        assert_eq!(n[1], -4.0 + 0.25);
        Ok(())
    }
}
