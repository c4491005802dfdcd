//! `comfy/model_sampling.py`: how a model maps noise levels σ to its timestep input, which
//! sigma table the schedulers read, and how its output becomes a denoised prediction
//! (numerics.md §5.1–§5.4, model-families.md §2.1).
//!
//! ComfyUI composes a *sampling* class (the σ table and σ ↔ t maps) with a *prediction* class
//! (input / output scaling); [`ModelSampling`] holds one of each: a [`SamplingKind`] and a
//! [`Prediction`].
//!
//! | sampling kind | ComfyUI class | used by |
//! |---|---|---|
//! | [`SamplingKind::Discrete`] | ModelSamplingDiscrete | SD1.x, SD2.x, SDXL (EPS / V, zsnr) |
//! | [`SamplingKind::DiscreteDistilled`] | ModelSamplingDiscreteDistilled | ModelSamplingDiscrete node, `lcm` |
//! | [`SamplingKind::DiscreteFlow`] | ModelSamplingDiscreteFlow | SD3 (shift 3, ×1000), Flux-schnell (1, ×1), AuraFlow |
//! | [`SamplingKind::Flux`] | ModelSamplingFlux | Flux-dev (time shift μ) |
//! | [`SamplingKind::ContinuousEdm`] | ModelSamplingContinuousEDM | EDM / v-EDM SDXL variants |
//! | [`SamplingKind::ContinuousV`] | ModelSamplingContinuousV | continuous v-prediction |
//! | [`SamplingKind::CosmosRFlow`] | ModelSamplingCosmosRFlow | ModelSamplingContinuousEDM node, `cosmos_rflow` |
//!
//! Numerics follow torch op by op in float32 where ComfyUI uses tensors, and Python f64 where
//! it uses floats (`percent_to_sigma` of the flow and continuous kinds, the beta schedule). A
//! Python float meeting an f32 tensor is rounded to f32 first, and torch evaluates
//! `float / tensor` as `tensor.reciprocal() * float` (numerics.md §0); the code copies both.

use candle_core::{DType, Result, Tensor};

use super::torch_math;

/// The prediction (parameterisation) class of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// ε-prediction (`EPS`: SD1.x, SDXL).
    Eps,
    /// v-prediction (`V_PREDICTION`: SD2.x-768, some SDXL).
    VPrediction,
    /// `EDM` (Playground 2.5 style, σ_data = 0.5).
    Edm,
    /// `CONST`: rectified flow (SD3, Flux, AuraFlow).
    Const,
    /// `X0`: the model predicts x0 itself.
    X0,
    /// `IMG_TO_IMG`: x0 prediction with an unscaled input.
    ImgToImg,
    /// The ModelSamplingDiscrete node's `lcm` (latent consistency boundary condition).
    Lcm,
    /// `COSMOS_RFLOW`.
    CosmosRFlow,
}

impl Prediction {
    /// Whether ComfyUI's samplers treat this model as a flow model (`isinstance(ms, CONST)`).
    pub fn is_const(self) -> bool {
        self == Prediction::Const
    }

    /// ComfyUI's class name.
    pub fn comfy_name(self) -> &'static str {
        match self {
            Prediction::Eps => "EPS",
            Prediction::VPrediction => "V_PREDICTION",
            Prediction::Edm => "EDM",
            Prediction::Const => "CONST",
            Prediction::X0 => "X0",
            Prediction::ImgToImg => "IMG_TO_IMG",
            Prediction::Lcm => "LCM",
            Prediction::CosmosRFlow => "COSMOS_RFLOW",
        }
    }

    /// Subclasses of ComfyUI's `EPS` (input `x/√(σ²+σ_data²)`, noise `n·σ + z`).
    fn eps_family(self) -> bool {
        matches!(
            self,
            Prediction::Eps
                | Prediction::VPrediction
                | Prediction::Edm
                | Prediction::X0
                | Prediction::ImgToImg
                | Prediction::Lcm
        )
    }
}

/// The "linear" beta schedule of a discrete model (`linspace(√start, √end, timesteps)²`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaSchedule {
    pub linear_start: f64,
    pub linear_end: f64,
    pub timesteps: usize,
}

impl Default for BetaSchedule {
    /// ComfyUI's defaults, which SD1.x, SD2.x and SDXL all use: 0.00085..0.012, 1000 steps.
    fn default() -> Self {
        BetaSchedule {
            linear_start: 0.00085,
            linear_end: 0.012,
            timesteps: 1000,
        }
    }
}

/// The sampling class and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplingKind {
    /// ModelSamplingDiscrete: σ table from the betas, t = nearest table index.
    Discrete { betas: BetaSchedule, zsnr: bool },
    /// ModelSamplingDiscreteDistilled (LCM): every `skip_steps`-th σ of the discrete table.
    DiscreteDistilled {
        betas: BetaSchedule,
        zsnr: bool,
        skip_steps: usize,
    },
    /// ModelSamplingDiscreteFlow: σ(t) = time_snr_shift(shift, t / multiplier).
    DiscreteFlow { shift: f64, multiplier: f64 },
    /// ModelSamplingFlux: σ(t) = flux_time_shift(shift, 1, t), t = σ.
    Flux { shift: f64 },
    /// ModelSamplingContinuousEDM: log-linear table, t = ln(σ)/4.
    ContinuousEdm { sigma_min: f64, sigma_max: f64 },
    /// ModelSamplingContinuousV: the EDM table, t = atan(σ)·2/π.
    ContinuousV { sigma_min: f64, sigma_max: f64 },
    /// ModelSamplingCosmosRFlow: the EDM table, t = σ/(σ+1).
    CosmosRFlow { sigma_min: f64, sigma_max: f64 },
}

/// A model's sampling: sigma table, σ ↔ t maps and prediction scaling.
#[derive(Debug, Clone)]
pub struct ModelSampling {
    pub prediction: Prediction,
    pub kind: SamplingKind,
    /// σ_data of the prediction class (1.0; 0.5 for EDM).
    pub sigma_data: f64,
    /// float32 sigma table, ascending (what the schedulers index).
    pub sigmas: Vec<f32>,
    /// float32 log of each sigma (discrete and continuous kinds; empty for the flow kinds).
    pub log_sigmas: Vec<f32>,
}

/// torch-style `linspace` in f64: `step = (end − start)/(steps − 1)`; the first half is
/// `start + step·i`, the second `end − step·(steps−1−i)`, each a fused multiply-add as torch's
/// FMA-compiled CPU kernel evaluates it (checked against torch 2.8 on x86-64 for sizes up to
/// 10 000).
pub fn linspace_f64(start: f64, end: f64, steps: usize) -> Vec<f64> {
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

/// torch-style `linspace` with float32 output (start/end rounded to f32 first; FMA as in
/// [`linspace_f64`]).
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
                step.mul_add(i as f32, s)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, e)
            }
        })
        .collect()
}

/// `time_snr_shift(alpha, t)` on an f32 tensor value: `alpha·t / (1 + (alpha−1)·t)`.
fn time_snr_shift_f32(alpha: f64, t: f32) -> f32 {
    if alpha == 1.0 {
        return t;
    }
    (alpha as f32 * t) / (1.0 + ((alpha - 1.0) as f32) * t)
}

/// `time_snr_shift(alpha, t)` in Python floats.
fn time_snr_shift_f64(alpha: f64, t: f64) -> f64 {
    if alpha == 1.0 {
        return t;
    }
    alpha * t / (1.0 + (alpha - 1.0) * t)
}

/// `flux_time_shift(mu, 1.0, t)` on an f32 tensor value: `e^μ / (e^μ + (1/t − 1))`, with
/// `math.exp(μ)` in f64 and both divisions as torch's reciprocal-then-multiply.
fn flux_time_shift_f32(mu: f64, t: f32) -> f32 {
    let e = mu.exp() as f32;
    let x = (1.0 / t) * 1.0 - 1.0;
    (1.0 / (e + x)) * e
}

/// `flux_time_shift(mu, 1.0, t)` in Python floats.
fn flux_time_shift_f64(mu: f64, t: f64) -> f64 {
    let e = mu.exp();
    e / (e + (1.0 / t - 1.0))
}

/// The ModelSamplingFlux node's resolution rule, in Python floats:
/// `mm = (max_shift − base_shift)/(4096 − 256)`, `b = base_shift − mm·256`,
/// `shift = (width·height/(8·8·2·2))·mm + b` (1024² → 1.15, 128² → 0.46749999999999997).
pub fn flux_shift_for_resolution(max_shift: f64, base_shift: f64, width: i64, height: i64) -> f64 {
    let (x1, x2) = (256.0, 4096.0);
    let mm = (max_shift - base_shift) / (x2 - x1);
    let b = base_shift - mm * x1;
    ((width * height) as f64 / (8 * 8 * 2 * 2) as f64) * mm + b
}

impl ModelSampling {
    /// SD1.x (and SD2.x, SDXL): ModelSamplingDiscrete with the default betas.
    pub fn sd15(prediction: Prediction) -> Self {
        Self::discrete(prediction, 0.00085, 0.012, 1000, false)
    }

    /// SDXL base / refiner: the same scaled-linear table as SD1.x.
    pub fn sdxl(prediction: Prediction) -> Self {
        Self::sd15(prediction)
    }

    /// ModelSamplingDiscrete: "linear" betas (`linspace(√start, √end)²`), all in f64, with
    /// the optional zero-terminal-SNR rescale.
    pub fn discrete(
        prediction: Prediction,
        linear_start: f64,
        linear_end: f64,
        timesteps: usize,
        zsnr: bool,
    ) -> Self {
        let betas = BetaSchedule {
            linear_start,
            linear_end,
            timesteps,
        };
        let sig64 = discrete_sigmas_f64(betas, zsnr);
        ModelSampling {
            prediction,
            kind: SamplingKind::Discrete { betas, zsnr },
            sigma_data: 1.0,
            sigmas: sig64.iter().map(|&s| s as f32).collect(),
            log_sigmas: sig64.iter().map(|&s| s.ln() as f32).collect(),
        }
    }

    /// ModelSamplingDiscreteDistilled with the LCM prediction (the ModelSamplingDiscrete
    /// node's `lcm`): 50 of the discrete table's sigmas.
    pub fn discrete_lcm(betas: BetaSchedule, zsnr: bool) -> Self {
        const ORIGINAL_TIMESTEPS: usize = 50;
        let full = Self::discrete(
            Prediction::Lcm,
            betas.linear_start,
            betas.linear_end,
            betas.timesteps,
            zsnr,
        );
        let n = full.sigmas.len();
        let skip = n / ORIGINAL_TIMESTEPS;
        let mut sigmas = vec![0f32; ORIGINAL_TIMESTEPS];
        for x in 0..ORIGINAL_TIMESTEPS {
            sigmas[ORIGINAL_TIMESTEPS - 1 - x] = full.sigmas[n - 1 - x * skip];
        }
        // set_sigmas(f32 tensor): the log is torch's f32 log of the f32 values.
        let log_sigmas = sigmas.iter().map(|&s| torch_math::ln(s)).collect();
        ModelSampling {
            prediction: Prediction::Lcm,
            kind: SamplingKind::DiscreteDistilled {
                betas,
                zsnr,
                skip_steps: skip,
            },
            sigma_data: 1.0,
            sigmas,
            log_sigmas,
        }
    }

    /// ModelSamplingDiscreteFlow + CONST (1000-entry table σ(k/1000·multiplier)).
    pub fn discrete_flow(shift: f64, multiplier: f64) -> Self {
        const TIMESTEPS: usize = 1000;
        let m = multiplier as f32;
        let sigmas = (1..=TIMESTEPS)
            .map(|k| {
                let t = (k as f32 / TIMESTEPS as f32) * m;
                time_snr_shift_f32(shift, t / m)
            })
            .collect();
        ModelSampling {
            prediction: Prediction::Const,
            kind: SamplingKind::DiscreteFlow { shift, multiplier },
            sigma_data: 1.0,
            sigmas,
            log_sigmas: Vec::new(),
        }
    }

    /// SD3 / SD3.5 (ModelType FLOW, shift 3, multiplier 1000).
    pub fn sd3() -> Self {
        Self::discrete_flow(3.0, 1000.0)
    }

    /// Flux-schnell (ModelType FLOW, shift 1, multiplier 1).
    pub fn flux_schnell() -> Self {
        Self::discrete_flow(1.0, 1.0)
    }

    /// ModelSamplingFlux + CONST with time shift μ = `shift` (10 000-entry table σ(k/10000)).
    pub fn flux(shift: f64) -> Self {
        const TIMESTEPS: usize = 10_000;
        let sigmas = (1..=TIMESTEPS)
            .map(|k| flux_time_shift_f32(shift, k as f32 / TIMESTEPS as f32))
            .collect();
        ModelSampling {
            prediction: Prediction::Const,
            kind: SamplingKind::Flux { shift },
            sigma_data: 1.0,
            sigmas,
            log_sigmas: Vec::new(),
        }
    }

    /// Flux-dev's default (shift 1.15).
    pub fn flux_dev() -> Self {
        Self::flux(1.15)
    }

    /// The log-linear 1000-entry table of the continuous kinds: `linspace(ln σmin, ln σmax)`
    /// in f32, then torch's exp and log.
    fn continuous_table(sigma_min: f64, sigma_max: f64) -> (Vec<f32>, Vec<f32>) {
        let sigmas: Vec<f32> = linspace_f32(sigma_min.ln(), sigma_max.ln(), 1000)
            .into_iter()
            .map(torch_math::exp)
            .collect();
        let logs = sigmas.iter().map(|&s| torch_math::ln(s)).collect();
        (sigmas, logs)
    }

    /// ModelSamplingContinuousEDM with `prediction` (V, EDM or EPS in ComfyUI's node).
    pub fn continuous_edm(
        prediction: Prediction,
        sigma_min: f64,
        sigma_max: f64,
        sigma_data: f64,
    ) -> Self {
        let (sigmas, log_sigmas) = Self::continuous_table(sigma_min, sigma_max);
        ModelSampling {
            prediction,
            kind: SamplingKind::ContinuousEdm {
                sigma_min,
                sigma_max,
            },
            sigma_data,
            sigmas,
            log_sigmas,
        }
    }

    /// ModelSamplingContinuousV with `prediction` (V in ComfyUI's node).
    pub fn continuous_v(
        prediction: Prediction,
        sigma_min: f64,
        sigma_max: f64,
        sigma_data: f64,
    ) -> Self {
        let (sigmas, log_sigmas) = Self::continuous_table(sigma_min, sigma_max);
        ModelSampling {
            prediction,
            kind: SamplingKind::ContinuousV {
                sigma_min,
                sigma_max,
            },
            sigma_data,
            sigmas,
            log_sigmas,
        }
    }

    /// ModelSamplingCosmosRFlow + COSMOS_RFLOW.
    pub fn cosmos_rflow(sigma_min: f64, sigma_max: f64, sigma_data: f64) -> Self {
        let (sigmas, log_sigmas) = Self::continuous_table(sigma_min, sigma_max);
        ModelSampling {
            prediction: Prediction::CosmosRFlow,
            kind: SamplingKind::CosmosRFlow {
                sigma_min,
                sigma_max,
            },
            sigma_data,
            sigmas,
            log_sigmas,
        }
    }

    /// The same sampling with another prediction class and σ_data.
    pub fn with_prediction(mut self, prediction: Prediction, sigma_data: f64) -> Self {
        self.prediction = prediction;
        self.sigma_data = sigma_data;
        self
    }

    /// The beta schedule a discrete sampling was built from, if any.
    pub fn betas(&self) -> Option<BetaSchedule> {
        match &self.kind {
            SamplingKind::Discrete { betas, .. }
            | SamplingKind::DiscreteDistilled { betas, .. } => Some(*betas),
            _ => None,
        }
    }

    /// A one-line description (`ModelSamplingFlux(shift=1.15)+CONST`).
    pub fn describe(&self) -> String {
        let k = match &self.kind {
            SamplingKind::Discrete { zsnr, .. } => format!("ModelSamplingDiscrete(zsnr={zsnr})"),
            SamplingKind::DiscreteDistilled { .. } => "ModelSamplingDiscreteDistilled".into(),
            SamplingKind::DiscreteFlow { shift, multiplier } => {
                format!("ModelSamplingDiscreteFlow(shift={shift}, multiplier={multiplier})")
            }
            SamplingKind::Flux { shift } => format!("ModelSamplingFlux(shift={shift})"),
            SamplingKind::ContinuousEdm {
                sigma_min,
                sigma_max,
            } => format!("ModelSamplingContinuousEDM({sigma_min}..{sigma_max})"),
            SamplingKind::ContinuousV {
                sigma_min,
                sigma_max,
            } => format!("ModelSamplingContinuousV({sigma_min}..{sigma_max})"),
            SamplingKind::CosmosRFlow {
                sigma_min,
                sigma_max,
            } => format!("ModelSamplingCosmosRFlow({sigma_min}..{sigma_max})"),
        };
        format!("{k}+{}", self.prediction.comfy_name())
    }

    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    pub fn sigma_max(&self) -> f32 {
        *self.sigmas.last().expect("non-empty table")
    }

    /// Nearest table index in log space (first index wins ties).
    fn nearest_index(&self, sigma: f32) -> usize {
        let ls = torch_math::ln(sigma);
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

    /// Log-linear interpolation of the table at fractional index `t` (clamped).
    fn interpolate(&self, t: f32) -> f32 {
        let t = t.clamp(0.0, (self.sigmas.len() - 1) as f32);
        let lo = t.floor() as usize;
        let hi = t.ceil() as usize;
        let w = t - t.trunc();
        let ls = (1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi];
        torch_math::exp(ls)
    }

    /// σ → t, the model's timestep input (`model_sampling.timestep(σ)`); for the discrete
    /// kinds an integer-valued index.
    pub fn timestep(&self, sigma: f32) -> f32 {
        match &self.kind {
            SamplingKind::Discrete { .. } => self.nearest_index(sigma) as f32,
            SamplingKind::DiscreteDistilled { skip_steps, .. } => {
                (self.nearest_index(sigma) * skip_steps + (skip_steps - 1)) as f32
            }
            SamplingKind::DiscreteFlow { multiplier, .. } => sigma * *multiplier as f32,
            SamplingKind::Flux { .. } => sigma,
            SamplingKind::ContinuousEdm { .. } => 0.25 * torch_math::ln(sigma),
            SamplingKind::ContinuousV { .. } => {
                ((sigma as f64).atan() as f32 / std::f64::consts::PI as f32) * 2.0
            }
            SamplingKind::CosmosRFlow { .. } => sigma / (sigma + 1.0),
        }
    }

    /// t → σ (`model_sampling.sigma(t)`), in f32.
    pub fn sigma(&self, timestep: f32) -> f32 {
        match &self.kind {
            SamplingKind::Discrete { .. } => self.interpolate(timestep),
            SamplingKind::DiscreteDistilled { skip_steps, .. } => {
                let k = *skip_steps as f32;
                self.interpolate((timestep - (k - 1.0)) / k)
            }
            SamplingKind::DiscreteFlow { shift, multiplier } => {
                time_snr_shift_f32(*shift, timestep / *multiplier as f32)
            }
            SamplingKind::Flux { shift } => flux_time_shift_f32(*shift, timestep),
            SamplingKind::ContinuousEdm { .. } => torch_math::exp(timestep / 0.25),
            SamplingKind::ContinuousV { .. } => {
                let a = (timestep * std::f64::consts::PI as f32) / 2.0;
                (a as f64).tan() as f32
            }
            SamplingKind::CosmosRFlow { .. } => {
                let smax = self.sigma_max();
                if timestep >= smax / (smax + 1.0) {
                    smax
                } else {
                    timestep / (1.0 - timestep)
                }
            }
        }
    }

    /// `percent_to_sigma` (conditioning start/end percentages, the SDE samplers' first-sigma
    /// offset): a Python float.
    pub fn percent_to_sigma(&self, percent: f64) -> f64 {
        let flow = matches!(
            self.kind,
            SamplingKind::DiscreteFlow { .. } | SamplingKind::Flux { .. }
        );
        if percent <= 0.0 {
            return if flow { 1.0 } else { 999_999_999.9 };
        }
        if percent >= 1.0 {
            return 0.0;
        }
        let p = 1.0 - percent;
        match &self.kind {
            SamplingKind::Discrete { .. } | SamplingKind::DiscreteDistilled { .. } => {
                self.sigma((p * 999.0) as f32) as f64
            }
            SamplingKind::DiscreteFlow { shift, .. } => time_snr_shift_f64(*shift, p),
            SamplingKind::Flux { shift } => flux_time_shift_f64(*shift, p),
            SamplingKind::ContinuousEdm { .. }
            | SamplingKind::ContinuousV { .. }
            | SamplingKind::CosmosRFlow { .. } => {
                let lmin = (self.sigma_min() as f64).ln();
                (((self.sigma_max() as f64).ln() - lmin) * p + lmin).exp()
            }
        }
    }

    /// f32(σ_data²), as `sigma_data ** 2` meets a tensor.
    fn sd2(&self) -> f32 {
        (self.sigma_data * self.sigma_data) as f32
    }

    /// The model input (`calculate_input`).
    pub fn calculate_input(&self, sigma: f64, x: &Tensor) -> Result<Tensor> {
        let s = sigma as f32;
        match self.prediction {
            Prediction::Const | Prediction::ImgToImg => Ok(x.clone()),
            Prediction::CosmosRFlow => {
                let c = s / (s + 1.0);
                x.broadcast_mul(&scalar(1.0 - c, x)?)
            }
            _ => {
                let k = torch_math::sqrt(s * s + self.sd2());
                x.broadcast_div(&scalar(k, x)?)
            }
        }
    }

    /// The denoised x0 prediction from the raw model output (`calculate_denoised`).
    pub fn calculate_denoised(
        &self,
        sigma: f64,
        model_output: &Tensor,
        model_input: &Tensor,
    ) -> Result<Tensor> {
        let s = sigma as f32;
        let out = model_output;
        let x = model_input;
        match self.prediction {
            Prediction::Eps | Prediction::Const => {
                x.broadcast_sub(&out.broadcast_mul(&scalar(s, out)?)?)
            }
            Prediction::VPrediction | Prediction::Edm => {
                let sd = self.sigma_data as f32;
                let d = s * s + self.sd2();
                let a = x
                    .broadcast_mul(&scalar(self.sd2(), x)?)?
                    .broadcast_div(&scalar(d, x)?)?;
                let b = out
                    .broadcast_mul(&scalar(s, out)?)?
                    .broadcast_mul(&scalar(sd, out)?)?
                    .broadcast_div(&scalar(torch_math::sqrt(d), out)?)?;
                if self.prediction == Prediction::Edm {
                    a + b
                } else {
                    a - b
                }
            }
            Prediction::X0 | Prediction::ImgToImg => Ok(out.clone()),
            Prediction::Lcm => {
                let (c_skip, c_out) = self.lcm_coefficients(s);
                let x0 = x.broadcast_sub(&out.broadcast_mul(&scalar(s, out)?)?)?;
                x0.broadcast_mul(&scalar(c_out, &x0)?)?
                    .broadcast_add(&x.broadcast_mul(&scalar(c_skip, x)?)?)
            }
            Prediction::CosmosRFlow => {
                let c = s / (s + 1.0);
                x.broadcast_mul(&scalar(1.0 - c, x)?)?
                    .broadcast_sub(&out.broadcast_mul(&scalar(c, out)?)?)
            }
        }
    }

    /// LCM's boundary-condition scalings (c_skip, c_out) at σ (σ_data 0.5, timestep × 10).
    fn lcm_coefficients(&self, s: f32) -> (f32, f32) {
        let st = self.timestep(s) * 10.0;
        let c_skip = (1.0 / (st * st + 0.25)) * 0.25;
        let c_out = st / torch_math::sqrt(st * st + 0.25);
        (c_skip, c_out)
    }

    /// `noise_scaling`: the start of sampling (and masked denoising). EPS-like:
    /// `noise·√(1+σ²) + latent` at max denoise, else `noise·σ + latent`; CONST:
    /// `σ·noise + (1−σ)·latent` (max_denoise ignored).
    pub fn noise_scaling(
        &self,
        sigma: f64,
        noise: &Tensor,
        latent: &Tensor,
        max_denoise: bool,
    ) -> Result<Tensor> {
        let s = sigma as f32;
        match self.prediction {
            Prediction::Const => noise
                .broadcast_mul(&scalar(s, noise)?)?
                .broadcast_add(&latent.broadcast_mul(&scalar(1.0 - s, latent)?)?),
            Prediction::CosmosRFlow => noise
                .broadcast_mul(&scalar(s, noise)?)?
                .broadcast_add(latent),
            _ => {
                let k = if max_denoise {
                    torch_math::sqrt(1.0 + s * s)
                } else {
                    s
                };
                noise
                    .broadcast_mul(&scalar(k, noise)?)?
                    .broadcast_add(latent)
            }
        }
    }

    /// [`Self::noise_scaling`] (max_denoise off) for one float32 element, as the samplers
    /// that re-noise with it (lcm) see it.
    pub fn noise_scaling_f32(&self, sigma: f32, noise: f32, latent: f32) -> f32 {
        match self.prediction {
            Prediction::Const => sigma * noise + (1.0 - sigma) * latent,
            _ => noise * sigma + latent,
        }
    }

    /// `inverse_noise_scaling` (end of sampling): `x / (1−σ)` for CONST, else the identity.
    pub fn inverse_noise_scaling(&self, sigma: f64, latent: &Tensor) -> Result<Tensor> {
        match self.prediction {
            Prediction::Const => {
                let s = sigma as f32;
                latent.broadcast_div(&scalar(1.0 - s, latent)?)
            }
            _ => Ok(latent.clone()),
        }
    }

    /// Whether the prediction is one of ComfyUI's EPS subclasses.
    pub fn is_eps_like(&self) -> bool {
        self.prediction.eps_family()
    }
}

/// The f64 sigmas of the "linear" beta schedule (numerics.md §5.1), optionally zsnr-rescaled.
fn discrete_sigmas_f64(b: BetaSchedule, zsnr: bool) -> Vec<f64> {
    let betas: Vec<f64> = linspace_f64(b.linear_start.sqrt(), b.linear_end.sqrt(), b.timesteps)
        .into_iter()
        .map(|v| v * v)
        .collect();
    let mut acc = 1.0f64;
    let sig: Vec<f64> = betas
        .iter()
        .map(|beta| {
            acc *= 1.0 - beta;
            ((1.0 - acc) / acc).sqrt()
        })
        .collect();
    if zsnr {
        rescale_zero_terminal_snr(&sig)
    } else {
        sig
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
        assert_eq!(ms.timestep(ms.sigma_max()), 999.0);
        assert_eq!(ms.timestep(1.0), 354.0);
        assert_eq!(ms.timestep(ms.sigma_min()), 0.0);
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

    #[test]
    fn const_math() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::new(&[1.0f32, -2.0], &dev)?;
        let z = Tensor::new(&[0.5f32, 0.25], &dev)?;
        let ms = ModelSampling::flux_dev();
        assert!(ms.prediction.is_const());
        assert_eq!(
            ms.calculate_input(0.5, &x)?.to_vec1::<f32>()?,
            vec![1.0, -2.0]
        );
        let d = ms.calculate_denoised(0.5, &z, &x)?.to_vec1::<f32>()?;
        assert_eq!(d, vec![0.75, -2.125]);
        // max_denoise is ignored: σ·n + (1−σ)·z.
        let n = ms.noise_scaling(0.25, &x, &z, true)?.to_vec1::<f32>()?;
        assert_eq!(n, vec![0.25 + 0.375, -0.5 + 0.1875]);
        let inv = ms.inverse_noise_scaling(0.5, &x)?.to_vec1::<f32>()?;
        assert_eq!(inv, vec![2.0, -4.0]);
        assert_eq!(
            ms.inverse_noise_scaling(0.0, &x)?.to_vec1::<f32>()?,
            vec![1.0, -2.0]
        );
        Ok(())
    }
}
