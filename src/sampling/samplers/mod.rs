//! ComfyUI's samplers (`comfy/k_diffusion/sampling.py`, `comfy/extra_samplers/uni_pc.py`;
//! numerics.md §3) and the start/end of sampling (§2.2).
//!
//! Update rules are evaluated op by op in float32 with PyTorch's eager rounding (§0),
//! on flat `Vec<f32>` buffers; the denoiser is called with candle tensors.
//!
//! Samplers branch on the model sampling as ComfyUI's do ([`SampleOptions::model_sampling`]):
//! for CONST (flow) models `euler_ancestral`, `dpm_2_ancestral` and `dpmpp_2s_ancestral` run
//! their `_RF` variants, the SDE samplers use `λ = −logit σ` and move a first sigma ≥ 1 to
//! `percent_to_sigma(1e-4)` (`offset_first_sigma_for_snr`), and `lcm` re-noises with the
//! model's `noise_scaling`.

mod cfg_pp;
mod dpm_solver;
mod k_diffusion;
mod multistep;
mod res_multistep;
mod sa_solver;
mod seeds;
mod uni_pc;

use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use super::model_sampling::ModelSampling;
use super::noise::{BrownianTreeNoiseSampler, DefaultNoiseSampler, NoiseSampler};

pub use dpm_solver::AdaptiveOptions;
pub use sa_solver::SaSolverOptions;
pub use seeds::ErSdeOptions;

/// A sampler's extra options: what ComfyUI's custom-sampling sampler nodes pass to
/// `comfy.samplers.ksampler(name, extra_options)`. [`Default`] is ComfyUI's defaults, what
/// KSampler runs. Each field is read only by the samplers that take it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerExtra {
    /// η of the ancestral / SDE samplers (euler_ancestral(_cfg_pp), dpmpp_2s_ancestral,
    /// dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde).
    pub eta: f64,
    /// s_noise of the same samplers.
    pub s_noise: f32,
    /// dpmpp_sde's `r`.
    pub r: f64,
    /// dpmpp_2m_sde's `solver_type`: `Some(true)` heun, `Some(false)` midpoint, `None` the
    /// sampler name's own.
    pub heun: Option<bool>,
    /// lms's `order`.
    pub lms_order: usize,
    /// SamplerEulerCFG++ "alternative": `euler_cfg_pp` runs `sample_euler_pp` of
    /// `comfy_extras/nodes_advanced_samplers.py` instead.
    pub euler_pp_alternative: bool,
    pub dpm_adaptive: AdaptiveOptions,
    pub er_sde: ErSdeOptions,
    pub sa_solver: SaSolverOptions,
    /// SamplerLCMUpscale: `lcm` runs `sample_lcm_upscale` of
    /// `comfy_extras/nodes_advanced_samplers.py` instead.
    pub lcm_upscale: Option<LcmUpscale>,
}

/// SamplerLCMUpscale's options: the latent grows to `total_upscale` times its size over the
/// first `upscale_steps` steps (None: half the sigmas, at least 1), resized with `method`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LcmUpscale {
    pub total_upscale: f64,
    pub upscale_steps: Option<usize>,
    pub method: crate::image_ops::UpscaleMethod,
}

impl Default for SamplerExtra {
    fn default() -> Self {
        SamplerExtra {
            eta: 1.0,
            s_noise: 1.0,
            r: 0.5,
            heun: None,
            lms_order: 4,
            euler_pp_alternative: false,
            dpm_adaptive: AdaptiveOptions::default(),
            er_sde: ErSdeOptions::default(),
            sa_solver: SaSolverOptions::default(),
            lcm_upscale: None,
        }
    }
}

/// The x0 prediction of the (CFG-combined) model: ComfyUI's `model(x, σ·ones(B))`.
pub trait Denoiser {
    /// Denoised prediction for `x` at noise level `sigma` (the same for every batch element;
    /// the f64 value of a float32 sigma).
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor>;

    /// The CFG++ samplers' model call: (denoised, the unconditional prediction), what
    /// ComfyUI's samplers read through a `sampler_post_cfg_function` with the cfg-1
    /// optimization disabled (the uncond is evaluated even at cfg 1; without a negative
    /// it is zeros). A denoiser without a separate unconditional prediction cannot run them.
    fn denoise_with_uncond(
        &mut self,
        _x: &Tensor,
        _sigma: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        candle_core::bail!("this model has no unconditional prediction for a CFG++ sampler")
    }
}

impl<F: FnMut(&Tensor, f64) -> candle_core::Result<Tensor>> Denoiser for F {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        self(x, sigma)
    }
}

/// Errors of [`sample`].
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// The cancellation check returned true.
    #[error("sampling interrupted")]
    Interrupted,
    /// The sampler name is known to ComfyUI but not implemented here.
    #[error("sampler {0} is not supported")]
    Unsupported(&'static str),
    /// The sampler cannot run on these sigmas / this model (ComfyUI raises a ValueError).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Which noise sampler a stochastic sampler draws from.
pub enum NoiseChoice<'a> {
    /// What ComfyUI uses for that sampler: the default CPU generator stream for ancestral
    /// samplers, ddpm and lcm; the CPU Brownian tree for the SDE samplers.
    Auto,
    /// Always the default sampler (§2.3).
    Default,
    /// Always a Brownian tree (§2.4) over the schedule's range.
    BrownianTree,
    /// A caller-provided sampler.
    Custom(Box<dyn NoiseSampler + 'a>),
}

/// See [`SampleOptions::callback`].
pub type StepCallback<'a> = Box<dyn FnMut(usize, usize, Option<&Tensor>) + 'a>;

/// Options of one sampling run.
pub struct SampleOptions<'a> {
    /// The KSampler seed (`extra_args["seed"]`).
    pub seed: u64,
    pub noise: NoiseChoice<'a>,
    /// Called after each step with (steps done, total steps, the step's first denoised
    /// prediction when `keep_denoised`: x0 [B, C, H, W] in the sampler's latent space, what
    /// ComfyUI's latent previews are drawn from).
    pub callback: Option<StepCallback<'a>>,
    /// Hand each step's denoised prediction to `callback` (previews on).
    pub keep_denoised: bool,
    /// Checked before every step; `true` aborts with [`SamplingError::Interrupted`].
    pub cancel: Option<Box<dyn Fn() -> bool + 'a>>,
    /// The model's sampling (ComfyUI's `model_sampling` object the samplers inspect). `None`
    /// behaves as a non-CONST (EPS / v-prediction) model.
    pub model_sampling: Option<&'a ModelSampling>,
    /// The sampler's extra options (a custom-sampling sampler node's inputs).
    pub extra: SamplerExtra,
}

impl<'a> SampleOptions<'a> {
    pub fn new(seed: u64) -> Self {
        SampleOptions {
            seed,
            noise: NoiseChoice::Auto,
            callback: None,
            keep_denoised: false,
            cancel: None,
            model_sampling: None,
            extra: SamplerExtra::default(),
        }
    }

    /// The same options for a model with `ms` as its model sampling.
    pub fn with_model_sampling(mut self, ms: &'a ModelSampling) -> Self {
        self.model_sampling = Some(ms);
        self
    }
}

macro_rules! sampler_kinds {
    ($( $v:ident => $n:literal ),* $(,)?) => {
        /// ComfyUI's sampler names (`SAMPLER_NAMES`, in order).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SamplerKind { $( $v ),* }
        impl SamplerKind {
            pub const NAMES: &'static [&'static str] = &[ $( $n ),* ];
            pub const ALL: &'static [SamplerKind] = &[ $( SamplerKind::$v ),* ];
            pub fn name(self) -> &'static str {
                match self { $( SamplerKind::$v => $n ),* }
            }
        }
    };
}

sampler_kinds! {
    Euler => "euler", EulerCfgPp => "euler_cfg_pp", EulerAncestral => "euler_ancestral",
    EulerAncestralCfgPp => "euler_ancestral_cfg_pp", Heun => "heun", Heunpp2 => "heunpp2",
    Dpm2 => "dpm_2", Dpm2Ancestral => "dpm_2_ancestral", Lms => "lms", DpmFast => "dpm_fast",
    DpmAdaptive => "dpm_adaptive", Dpmpp2sAncestral => "dpmpp_2s_ancestral",
    Dpmpp2sAncestralCfgPp => "dpmpp_2s_ancestral_cfg_pp", DpmppSde => "dpmpp_sde",
    DpmppSdeGpu => "dpmpp_sde_gpu", Dpmpp2m => "dpmpp_2m", Dpmpp2mCfgPp => "dpmpp_2m_cfg_pp",
    Dpmpp2mSde => "dpmpp_2m_sde", Dpmpp2mSdeGpu => "dpmpp_2m_sde_gpu",
    Dpmpp2mSdeHeun => "dpmpp_2m_sde_heun", Dpmpp2mSdeHeunGpu => "dpmpp_2m_sde_heun_gpu",
    Dpmpp3mSde => "dpmpp_3m_sde", Dpmpp3mSdeGpu => "dpmpp_3m_sde_gpu", Ddpm => "ddpm", Lcm => "lcm",
    Ipndm => "ipndm", IpndmV => "ipndm_v", Deis => "deis", ResMultistep => "res_multistep",
    ResMultistepCfgPp => "res_multistep_cfg_pp", ResMultistepAncestral => "res_multistep_ancestral",
    ResMultistepAncestralCfgPp => "res_multistep_ancestral_cfg_pp",
    GradientEstimation => "gradient_estimation", GradientEstimationCfgPp => "gradient_estimation_cfg_pp",
    ErSde => "er_sde", Seeds2 => "seeds_2", Seeds3 => "seeds_3", SaSolver => "sa_solver",
    SaSolverPece => "sa_solver_pece", Ddim => "ddim", UniPc => "uni_pc", UniPcBh2 => "uni_pc_bh2",
}

impl SamplerKind {
    /// Whether [`sample`] implements this sampler (every ComfyUI sampler name).
    pub fn is_supported(self) -> bool {
        true
    }

    /// The CFG++ samplers, which need the unconditional prediction
    /// ([`Denoiser::denoise_with_uncond`]).
    pub fn is_cfg_pp(self) -> bool {
        use SamplerKind::*;
        matches!(
            self,
            EulerCfgPp
                | EulerAncestralCfgPp
                | Dpmpp2sAncestralCfgPp
                | Dpmpp2mCfgPp
                | ResMultistepCfgPp
                | ResMultistepAncestralCfgPp
                | GradientEstimationCfgPp
        )
    }

    /// Whether KSampler computes `steps + 1` sigmas and drops the penultimate one.
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(
            self,
            SamplerKind::Dpm2
                | SamplerKind::Dpm2Ancestral
                | SamplerKind::UniPc
                | SamplerKind::UniPcBh2
        )
    }

    fn uses_brownian_tree(self) -> bool {
        use SamplerKind::*;
        matches!(
            self,
            DpmppSde
                | DpmppSdeGpu
                | Dpmpp2mSde
                | Dpmpp2mSdeGpu
                | Dpmpp2mSdeHeun
                | Dpmpp2mSdeHeunGpu
                | Dpmpp3mSde
                | Dpmpp3mSdeGpu
        )
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .position(|&n| n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| format!("unknown sampler {s:?}"))
    }
}

/// Shared state of one run: the denoiser adapter, noise and progress plumbing.
pub(crate) struct Ctx<'d, 'o, 'a> {
    den: &'d mut dyn Denoiser,
    shape: Vec<usize>,
    device: Device,
    opts: &'o mut SampleOptions<'a>,
    noise: Option<Box<dyn NoiseSampler + 'a>>,
    total: usize,
    /// The current step's first denoised prediction, kept only with `keep_denoised`.
    step_denoised: Option<Tensor>,
}

impl Ctx<'_, '_, '_> {
    /// The model sampling the caller gave, if any.
    pub(crate) fn model_sampling(&self) -> Option<&ModelSampling> {
        self.opts.model_sampling
    }

    /// `model(x, σ)` on a flat buffer.
    pub(crate) fn model(&mut self, x: &[f32], sigma: f32) -> Result<Vec<f32>, SamplingError> {
        let t = Tensor::from_slice(x, self.shape.as_slice(), &self.device)?;
        let out = self.den.denoise(&t, sigma as f64)?;
        if self.opts.keep_denoised && self.step_denoised.is_none() {
            self.step_denoised = Some(out.clone());
        }
        Ok(out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The CFG++ model call: (denoised, uncond denoised) on flat buffers.
    pub(crate) fn model_uncond(
        &mut self,
        x: &[f32],
        sigma: f32,
    ) -> Result<(Vec<f32>, Vec<f32>), SamplingError> {
        let t = Tensor::from_slice(x, self.shape.as_slice(), &self.device)?;
        let (out, uncond) = self.den.denoise_with_uncond(&t, sigma as f64)?;
        if self.opts.keep_denoised && self.step_denoised.is_none() {
            self.step_denoised = Some(out.clone());
        }
        let flat = |t: Tensor| -> Result<Vec<f32>, SamplingError> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        Ok((flat(out)?, flat(uncond)?))
    }

    /// `noise_sampler(σ, σ_next)` on a flat buffer.
    pub(crate) fn noise(&mut self, sigma: f32, sigma_next: f32) -> Result<Vec<f32>, SamplingError> {
        let ns = self
            .noise
            .as_mut()
            .expect("noise sampler set up for stochastic samplers");
        let t = ns.sample(sigma as f64, sigma_next as f64)?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Cancellation check before step `i`.
    pub(crate) fn begin(&mut self, _i: usize) -> Result<(), SamplingError> {
        self.step_denoised = None;
        if let Some(c) = &self.opts.cancel {
            if c() {
                return Err(SamplingError::Interrupted);
            }
        }
        Ok(())
    }

    /// Progress after step `i` (clamped to the total: dpm_adaptive takes as many steps as
    /// its error control needs).
    pub(crate) fn end(&mut self, i: usize) {
        let total = self.total;
        let i = i.min(total.saturating_sub(1));
        let x0 = self.step_denoised.take();
        if let Some(cb) = &mut self.opts.callback {
            cb(i + 1, total, x0.as_ref());
        }
    }
}

/// Run sampler `kind` from the already noised `x` over `sigmas` (ComfyUI's
/// `sampler_function(model, x, sigmas, extra_args={"seed": seed})`).
pub fn sample(
    kind: SamplerKind,
    denoiser: &mut dyn Denoiser,
    x: &Tensor,
    sigmas: &[f32],
    opts: &mut SampleOptions<'_>,
) -> Result<Tensor, SamplingError> {
    let shape = x.dims().to_vec();
    let device = x.device().clone();
    let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if sigmas.len() <= 1 {
        return Ok(x.clone());
    }
    let choice = std::mem::replace(&mut opts.noise, NoiseChoice::Auto);
    let opts_model_sampling = opts.model_sampling;
    let seed = opts.seed;
    let extra = opts.extra;
    let make_brownian = || -> Box<dyn NoiseSampler> {
        let smin = sigmas
            .iter()
            .copied()
            .filter(|&s| s > 0.0)
            .fold(f32::INFINITY, f32::min);
        let smax = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Box::new(BrownianTreeNoiseSampler::new(
            &shape,
            smin as f64,
            smax as f64,
            seed,
            &Device::Cpu,
        ))
    };
    let noise: Option<Box<dyn NoiseSampler + '_>> = match choice {
        NoiseChoice::Custom(b) => Some(b),
        NoiseChoice::BrownianTree => Some(make_brownian()),
        NoiseChoice::Default => Some(Box::new(DefaultNoiseSampler::new(
            &shape,
            seed,
            &Device::Cpu,
        ))),
        NoiseChoice::Auto if kind.uses_brownian_tree() => Some(make_brownian()),
        NoiseChoice::Auto => Some(Box::new(DefaultNoiseSampler::new(
            &shape,
            seed,
            &Device::Cpu,
        ))),
    };
    let mut ctx = Ctx {
        den: denoiser,
        shape: shape.clone(),
        device: device.clone(),
        opts,
        noise,
        total: sigmas.len() - 1,
        step_denoised: None,
    };
    let s = sigmas;
    let ms = ctx.model_sampling();
    let ms_for_end = opts_model_sampling;
    let is_const = ms.is_some_and(|m| m.prediction.is_const());
    let snr = k_diffusion::HalfLogSnr { is_const };
    // The SDE samplers' sigmas after `offset_first_sigma_for_snr` (the Brownian tree above
    // was built from the sigmas before it, as in ComfyUI).
    let s_snr = offset_first_sigma_for_snr(s, ms);
    let s_snr = s_snr.as_slice();
    let sde = k_diffusion::Sde {
        eta: extra.eta,
        s_noise: extra.s_noise,
        r: extra.r,
    };
    let (eta, s_noise) = (extra.eta, extra.s_noise);
    use SamplerKind::*;
    let out = match kind {
        Euler | Ddim => k_diffusion::euler(&mut ctx, xv, s)?,
        EulerAncestral if is_const => {
            k_diffusion::euler_ancestral_rf(&mut ctx, xv, s, eta, s_noise)?
        }
        EulerAncestral => k_diffusion::euler_ancestral(&mut ctx, xv, s, eta, s_noise)?,
        Heun => k_diffusion::heun(&mut ctx, xv, s)?,
        Dpm2 => k_diffusion::dpm_2(&mut ctx, xv, s)?,
        Dpm2Ancestral if is_const => k_diffusion::dpm_2_ancestral_rf(&mut ctx, xv, s)?,
        Dpm2Ancestral => k_diffusion::dpm_2_ancestral(&mut ctx, xv, s)?,
        Lms => multistep::lms(&mut ctx, xv, s, extra.lms_order)?,
        Dpmpp2sAncestral if is_const => {
            k_diffusion::dpmpp_2s_ancestral_rf(&mut ctx, xv, s, eta, s_noise)?
        }
        Dpmpp2sAncestral => k_diffusion::dpmpp_2s_ancestral(&mut ctx, xv, s, eta, s_noise)?,
        DpmppSde | DpmppSdeGpu => k_diffusion::dpmpp_sde(&mut ctx, xv, s_snr, snr, sde)?,
        Dpmpp2m => k_diffusion::dpmpp_2m(&mut ctx, xv, s)?,
        Dpmpp2mSde | Dpmpp2mSdeGpu => {
            let heun = extra.heun.unwrap_or(false);
            k_diffusion::dpmpp_2m_sde(&mut ctx, xv, s_snr, heun, snr, sde)?
        }
        Dpmpp2mSdeHeun | Dpmpp2mSdeHeunGpu => {
            let heun = extra.heun.unwrap_or(true);
            k_diffusion::dpmpp_2m_sde(&mut ctx, xv, s_snr, heun, snr, sde)?
        }
        Dpmpp3mSde | Dpmpp3mSdeGpu => k_diffusion::dpmpp_3m_sde(&mut ctx, xv, s_snr, snr, sde)?,
        Ddpm => k_diffusion::ddpm(&mut ctx, xv, s)?,
        Lcm => match &extra.lcm_upscale {
            Some(up) => k_diffusion::lcm_upscale(&mut ctx, xv, s, up, seed)?,
            None => k_diffusion::lcm(&mut ctx, xv, s)?,
        },
        Ipndm => multistep::ipndm(&mut ctx, xv, s)?,
        IpndmV => multistep::ipndm_v(&mut ctx, xv, s)?,
        Deis => multistep::deis(&mut ctx, xv, s)?,
        UniPc => uni_pc::uni_pc(&mut ctx, xv, s, false)?,
        UniPcBh2 => uni_pc::uni_pc(&mut ctx, xv, s, true)?,
        Heunpp2 => k_diffusion::heunpp2(&mut ctx, xv, s)?,
        EulerCfgPp if extra.euler_pp_alternative => cfg_pp::euler_pp(&mut ctx, xv, s)?,
        EulerCfgPp => cfg_pp::euler_ancestral_cfg_pp(&mut ctx, xv, s, 0.0, 0.0, snr)?,
        EulerAncestralCfgPp => {
            cfg_pp::euler_ancestral_cfg_pp(&mut ctx, xv, s, eta as f32, s_noise, snr)?
        }
        Dpmpp2sAncestralCfgPp => cfg_pp::dpmpp_2s_ancestral_cfg_pp(&mut ctx, xv, s)?,
        Dpmpp2mCfgPp => cfg_pp::dpmpp_2m_cfg_pp(&mut ctx, xv, s)?,
        DpmFast => dpm_solver::dpm_fast(&mut ctx, xv, s)?,
        DpmAdaptive => dpm_solver::dpm_adaptive(&mut ctx, xv, s, &extra.dpm_adaptive)?,
        ResMultistep => res_multistep::res_multistep(&mut ctx, xv, s, 0.0, false)?,
        ResMultistepCfgPp => res_multistep::res_multistep(&mut ctx, xv, s, 0.0, true)?,
        ResMultistepAncestral => res_multistep::res_multistep(&mut ctx, xv, s, 1.0, false)?,
        ResMultistepAncestralCfgPp => res_multistep::res_multistep(&mut ctx, xv, s, 1.0, true)?,
        GradientEstimation => res_multistep::gradient_estimation(&mut ctx, xv, s, false)?,
        GradientEstimationCfgPp => res_multistep::gradient_estimation(&mut ctx, xv, s, true)?,
        ErSde => seeds::er_sde(&mut ctx, xv, s_snr, snr, &extra.er_sde)?,
        Seeds2 => seeds::seeds_2(&mut ctx, xv, s_snr, snr)?,
        Seeds3 => seeds::seeds_3(&mut ctx, xv, s_snr, snr)?,
        SaSolver => sa_solver::sa_solver(&mut ctx, xv, s_snr, snr, &extra.sa_solver)?,
        SaSolverPece => {
            let o = SaSolverOptions {
                use_pece: true,
                ..extra.sa_solver
            };
            sa_solver::sa_solver(&mut ctx, xv, s_snr, snr, &o)?
        }
    };
    // (LCM upscale changes the latent's size as it goes.)
    let out = Tensor::from_vec(out, ctx.shape.clone(), &device)?;
    // ComfyUI's UniPC writes 0.001 over the last sigma *of the caller's tensor*
    // (`timesteps = sigmas[:]`), so KSAMPLER's end-of-sampling `inverse_noise_scaling`
    // sees σ = 0.001: x / 0.999 for CONST models. Our caller's list still ends in 0 (its
    // inverse scaling then divides by 1), so that step is applied here.
    if matches!(kind, UniPc | UniPcBh2) && s.last() == Some(&0.0) {
        if let Some(ms) = ms_for_end {
            return Ok(ms.inverse_noise_scaling(0.001f32 as f64, &out)?);
        }
    }
    Ok(out)
}

/// `offset_first_sigma_for_snr`: for a CONST model, a first sigma ≥ 1 (whose logit SNR is
/// infinite) becomes `percent_to_sigma(1e-4)`, rounded to f32 as it is stored in the tensor.
pub fn offset_first_sigma_for_snr(sigmas: &[f32], ms: Option<&ModelSampling>) -> Vec<f32> {
    let mut s = sigmas.to_vec();
    if let Some(ms) = ms {
        if s.len() > 1 && ms.prediction.is_const() && s[0] >= 1.0 {
            s[0] = ms.percent_to_sigma(1e-4) as f32;
        }
    }
    s
}

/// `max_denoise` (§2.2): σ0 is (close to) the model's σ_max or above it.
pub fn max_denoise(ms: &ModelSampling, sigmas: &[f32]) -> bool {
    let Some(&s0) = sigmas.first() else {
        return false;
    };
    let (m, s) = (ms.sigma_max() as f64, s0 as f64);
    (m - s).abs() <= 1e-5 * m.abs().max(s.abs()) || s > m
}

/// Start of sampling (§2.2 step 3): the initial x from noise and the (model-space) latent.
pub fn initial_latent(
    ms: &ModelSampling,
    sigmas: &[f32],
    noise: &Tensor,
    latent: &Tensor,
) -> candle_core::Result<Tensor> {
    let s0 = sigmas.first().copied().unwrap_or(0.0);
    ms.noise_scaling(s0 as f64, noise, latent, max_denoise(ms, sigmas))
}

/// End of sampling (§2.2 step 5): `inverse_noise_scaling(σ_last, x)`.
pub fn finish_latent(
    ms: &ModelSampling,
    sigmas: &[f32],
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    let sl = sigmas.last().copied().unwrap_or(0.0);
    ms.inverse_noise_scaling(sl as f64, x)
}

/// For sampler "ddim" ComfyUI replaces the inpainting noise with
/// `randn(shape, generator=manual_seed(seed + 1))` (§2.2).
pub fn inpaint_noise(
    kind: SamplerKind,
    shape: &[usize],
    seed: u64,
    noise: &Tensor,
) -> candle_core::Result<Tensor> {
    if kind == SamplerKind::Ddim {
        let v = crate::torch_rng::torch_randn(seed.wrapping_add(1), shape);
        Tensor::from_vec(v, shape, noise.device())
    } else {
        Ok(noise.clone())
    }
}
