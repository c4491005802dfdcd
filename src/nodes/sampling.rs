//! KSampler, KSamplerAdvanced and the custom-sampling family (nodes.py,
//! comfy_extras/nodes_custom_sampler.py), on the sampling numerics of `crate::sampling`.

use super::sd_types::{
    CondEntry, Conditioning, GuiderPayload, NoisePayload, SamplerPayload, SdModel, Sigmas,
};
use crate::models::vae::{sd1_process_in, sd1_process_out};
use crate::node::types::Latent;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::noise::prepare_noise;
use crate::sampling::samplers::{
    finish_latent, initial_latent, inpaint_noise, sample, Denoiser, SampleOptions, SamplerKind,
    SamplingError,
};
use crate::sampling::schedulers::{
    calculate_sigmas, ksampler_sigmas, select_steps, Scheduler, StepSelection,
};
use candle_core::{DType, Device, Tensor};
use std::cell::{Cell, RefCell};

const SEED_MAX: u64 = u64::MAX;

fn sampler_names() -> Vec<String> {
    SamplerKind::NAMES.iter().map(|s| s.to_string()).collect()
}

fn scheduler_names() -> Vec<String> {
    Scheduler::NAMES.iter().map(|s| s.to_string()).collect()
}

fn seed_of(i: &Inputs, name: &str) -> Result<u64, NodeError> {
    let v = i.int(name)?;
    u64::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is not a 64-bit seed")))
}

fn cfg_input() -> InputSpec {
    InputSpec::float("cfg")
        .default(8.0)
        .min(0.0)
        .max(100.0)
        .step(0.1)
        .opt("round", 0.01)
}

fn seed_input(name: &str) -> InputSpec {
    InputSpec::int(name)
        .default(0)
        .min(0)
        .max(SEED_MAX)
        .opt("control_after_generate", true)
}

// ---- the CFG denoiser ----

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

/// ComfyUI's `sampling_function` + `calc_cond_batch` for plain (area-less) conds, wrapped
/// with the model's `apply_model` (EPS / v-prediction) and the inpainting blend of
/// `KSamplerX0Inpaint`.
struct CfgDenoiser<'a> {
    model: &'a SdModel,
    positive: &'a [CondEntry],
    /// None: no uncond (BasicGuider).
    negative: Option<&'a [CondEntry]>,
    cfg: f64,
    /// (mask [B, C, h, w], noise, model-space latent) for masked denoising.
    inpaint: Option<(Tensor, Tensor, Tensor)>,
    last_denoised: Option<Tensor>,
}

impl CfgDenoiser<'_> {
    /// `apply_model(x, σ, context)` for a batch `x` [n, ...] and context [n, T, C].
    fn apply_model(&self, x: &Tensor, sigma: f64, context: &Tensor) -> candle_core::Result<Tensor> {
        let ms = &self.model.sampling;
        let n = x.dim(0)?;
        let xc = ms.calculate_input(sigma, x)?;
        let t = ms.timestep(sigma as f32) as f32;
        let ts = Tensor::from_vec(vec![t; n], n, x.device())?;
        let out = self
            .model
            .unet
            .forward(&xc, &ts, context)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .to_dtype(DType::F32)?;
        ms.calculate_denoised(sigma, &out, x)
    }

    /// A cond's context repeated over the batch of `x`.
    fn context(entry: &CondEntry, b: usize) -> candle_core::Result<Tensor> {
        let c = entry.cond.to_dtype(DType::F32)?;
        if c.dim(0)? == b {
            Ok(c)
        } else {
            c.repeat((b / c.dim(0)?.max(1), 1, 1))
        }
    }

    /// The average prediction of a list of conds (mult 1 each).
    fn calc_list(
        &self,
        x: &Tensor,
        sigma: f64,
        conds: &[CondEntry],
    ) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let mut sum: Option<Tensor> = None;
        for e in conds {
            let p = self.apply_model(x, sigma, &Self::context(e, b)?)?;
            sum = Some(match sum {
                None => p,
                Some(s) => (s + p)?,
            });
        }
        let n = conds.len().max(1) as f64;
        let s = sum.ok_or_else(|| candle_core::Error::Msg("empty conditioning".into()))?;
        if n == 1.0 {
            Ok(s)
        } else {
            s / n
        }
    }

    /// (cond, uncond) predictions; one batched call `[uncond, cond]` when both are single
    /// entries whose token lengths concatenate (equal, or LCM within 4x of the shorter).
    fn cond_uncond(
        &self,
        x: &Tensor,
        sigma: f64,
        neg: &[CondEntry],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if let ([p], [n]) = (self.positive, neg) {
            let (tp, tn) = (p.cond.dim(1)?, n.cond.dim(1)?);
            let l = lcm(tp, tn);
            if l <= 4 * tp.min(tn) {
                let b = x.dim(0)?;
                let rep = |e: &CondEntry, t: usize| -> candle_core::Result<Tensor> {
                    let c = Self::context(e, b)?;
                    if t == l {
                        Ok(c)
                    } else {
                        c.repeat((1, l / t, 1))
                    }
                };
                let ctx = Tensor::cat(&[rep(n, tn)?, rep(p, tp)?], 0)?;
                let xx = Tensor::cat(&[x, x], 0)?;
                let out = self.apply_model(&xx, sigma, &ctx)?;
                return Ok((out.narrow(0, b, b)?, out.narrow(0, 0, b)?));
            }
        }
        Ok((
            self.calc_list(x, sigma, self.positive)?,
            self.calc_list(x, sigma, neg)?,
        ))
    }

    fn guided(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let skip_uncond = (self.cfg - 1.0).abs() <= 1e-9 * self.cfg.abs().max(1.0);
        match self.negative {
            Some(neg) if !skip_uncond => {
                let (cond, uncond) = self.cond_uncond(x, sigma, neg)?;
                uncond.clone() + ((cond - uncond)? * self.cfg)?
            }
            _ => {
                let cond = self.calc_list(x, sigma, self.positive)?;
                if skip_uncond {
                    Ok(cond)
                } else {
                    // No uncond (BasicGuider with cfg != 1 cannot happen; keep ComfyUI's
                    // `0 + (cond - 0)·cfg`).
                    cond * self.cfg
                }
            }
        }
    }
}

impl Denoiser for CfgDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let out = match &self.inpaint {
            None => self.guided(x, sigma)?,
            Some((m, noise, latent)) => {
                let inv = m.affine(-1.0, 1.0)?;
                let noised = self
                    .model
                    .sampling
                    .noise_scaling(sigma, noise, latent, false)?;
                let xi = ((x * m)? + (noised * &inv)?)?;
                let out = self.guided(&xi, sigma)?;
                ((out * m)? + (latent * &inv)?)?
            }
        };
        self.last_denoised = Some(out.clone());
        Ok(out)
    }
}

/// PyTorch `interpolate(mode="bilinear", align_corners=False)` of [N, 1, H, W] to (h, w).
fn bilinear(mask: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let (n, _, ih, iw) = mask.dims4()?;
    if (ih, iw) == (h, w) {
        return Ok(mask.clone());
    }
    let src = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let coords = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (coords(h, ih), coords(w, iw));
    let mut out = Vec::with_capacity(n * h * w);
    for b in 0..n {
        let p = &src[b * ih * iw..(b + 1) * ih * iw];
        for &(y0, y1, ly) in &ys {
            for &(x0, x1, lx) in &xs {
                let top = p[y0 * iw + x0] * (1.0 - lx) + p[y0 * iw + x1] * lx;
                let bot = p[y1 * iw + x0] * (1.0 - lx) + p[y1 * iw + x1] * lx;
                out.push(top * (1.0 - ly) + bot * ly);
            }
        }
    }
    Tensor::from_vec(out, (n, 1, h, w), &Device::Cpu)
}

/// `comfy.utils.reshape_mask(mask, shape)` for 4-d latents.
fn prepare_mask(mask: &Tensor, shape: &[usize]) -> candle_core::Result<Tensor> {
    let dims = mask.dims();
    let (mh, mw) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let m = mask.to_dtype(DType::F32)?.reshape(((), 1, mh, mw))?;
    let m = bilinear(&m, shape[2], shape[3])?;
    let m = m.repeat((1, shape[1], 1, 1))?;
    let mb = m.dim(0)?;
    let b = shape[0];
    if mb == b {
        Ok(m)
    } else {
        // repeat_to_batch_size: tile then cut (or cut when longer).
        let reps = b.div_ceil(mb);
        m.repeat((reps, 1, 1, 1))?.narrow(0, 0, b)
    }
}

/// One sampling run (ComfyUI's `CFGGuider.sample` with a KSAMPLER): returns the output latent
/// and the last denoised prediction, both as unscaled latents.
#[allow(clippy::too_many_arguments)]
fn run_sampler(
    ctx: &NodeContext,
    model: &SdModel,
    positive: &Conditioning,
    negative: Option<&Conditioning>,
    cfg: f64,
    kind: SamplerKind,
    sigmas: &[f32],
    latent: &Latent,
    noise: &Tensor,
    seed: u64,
) -> Result<(Tensor, Tensor), NodeError> {
    let samples = latent.samples.to_dtype(DType::F32)?;
    if sigmas.is_empty() {
        return Ok((samples.clone(), samples));
    }
    if positive.0.is_empty() || negative.is_some_and(|n| n.0.is_empty()) {
        return Err(NodeError::msg("empty CONDITIONING"));
    }
    let ms = &model.sampling;
    let nonzero = samples.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0;
    let latent_in = if nonzero {
        sd1_process_in(&samples)?
    } else {
        samples.clone()
    };
    let inpaint = match &latent.noise_mask {
        Some(m) => {
            let mask = prepare_mask(m, samples.dims())?;
            let n = inpaint_noise(kind, samples.dims(), seed, noise)?;
            Some((mask, n, latent_in.clone()))
        }
        None => None,
    };
    let x = initial_latent(ms, sigmas, noise, &latent_in)?;
    let mut den = CfgDenoiser {
        model,
        positive: &positive.0,
        negative: negative.map(|n| n.0.as_slice()),
        cfg,
        inpaint,
        last_denoised: None,
    };
    let stopped = Cell::new(false);
    let err: RefCell<Option<NodeError>> = RefCell::new(None);
    let mut opts = SampleOptions::new(seed);
    opts.callback = Some(Box::new(|done, total| {
        if let Err(e) = ctx.progress(done as u64, total as u64) {
            stopped.set(true);
            *err.borrow_mut() = Some(e);
        }
    }));
    opts.cancel = Some(Box::new(|| stopped.get() || ctx.check_interrupt().is_err()));
    let result = sample(kind, &mut den, &x, sigmas, &mut opts);
    drop(opts);
    let out = match result {
        Ok(t) => t,
        Err(SamplingError::Interrupted) => return Err(NodeError::Interrupted),
        Err(e) => return Err(NodeError::msg(e.to_string())),
    };
    if let Some(e) = err.into_inner() {
        return Err(e);
    }
    let out = finish_latent(ms, sigmas, &out)?;
    let out = sd1_process_out(&out)?;
    let denoised = match den.last_denoised {
        Some(d) => sd1_process_out(&d)?,
        None => out.clone(),
    };
    Ok((out, denoised))
}

fn with_samples(latent: &Latent, samples: Tensor) -> Latent {
    let mut out = latent.clone();
    out.samples = samples;
    out
}

/// `common_ksampler` (nodes.py).
#[allow(clippy::too_many_arguments)]
fn common_ksampler(
    ctx: &NodeContext,
    i: &Inputs,
    seed: u64,
    denoise: f64,
    disable_noise: bool,
    start_step: Option<usize>,
    last_step: Option<usize>,
    force_full_denoise: bool,
) -> Result<NodeOutput, NodeError> {
    let model = i.object::<SdModel>("model")?;
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let latent = i.object::<Latent>("latent_image")?;
    let steps = i.int("steps")?.max(0) as usize;
    let cfg = i.float("cfg")?;
    // KSampler falls back to the first sampler for an unknown name.
    let kind: SamplerKind = i
        .string("sampler_name")?
        .parse()
        .unwrap_or(SamplerKind::ALL[0]);
    let scheduler: Scheduler = i
        .string("scheduler")?
        .parse()
        .map_err(|e: String| NodeError::input("scheduler", e))?;
    let shape = latent.samples.dims().to_vec();
    let noise = if disable_noise {
        Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)?
    } else {
        prepare_noise(&shape, seed, latent.batch_index.as_deref())?
    };
    let full = ksampler_sigmas(
        &model.sampling,
        scheduler,
        kind.name(),
        steps,
        Some(denoise),
    );
    let sigmas = match select_steps(&full, start_step, last_step, force_full_denoise) {
        StepSelection::Sigmas(s) => s,
        StepSelection::ReturnLatent => {
            return Ok(NodeOutput::one(Value::object((*latent).clone())));
        }
    };
    let (out, _) = run_sampler(
        ctx,
        &model,
        &positive,
        Some(&negative),
        cfg,
        kind,
        &sigmas,
        &latent,
        &noise,
        seed,
    )?;
    Ok(NodeOutput::one(Value::object(with_samples(&latent, out))))
}

struct KSampler;
impl Node for KSampler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSampler")
            .display("KSampler")
            .category("sampling")
            .description(
                "Uses the provided model, positive and negative conditioning to denoise the latent image.",
            )
            .input(InputSpec::of("model", "MODEL").tooltip("The model used for denoising the input latent."))
            .input(seed_input("seed").tooltip("The random seed used for creating the noise."))
            .input(
                InputSpec::int("steps")
                    .default(20)
                    .min(1)
                    .max(10000)
                    .tooltip("The number of steps used in the denoising process."),
            )
            .input(cfg_input().tooltip(
                "The Classifier-Free Guidance scale balances creativity and adherence to the \
                 prompt. Higher values result in images more closely matching the prompt however \
                 too high values will negatively impact quality.",
            ))
            .input(InputSpec::combo("sampler_name", &sampler_names()).tooltip(
                "The algorithm used when sampling, this can affect the quality, speed, and style \
                 of the generated output.",
            ))
            .input(InputSpec::combo("scheduler", &scheduler_names()).tooltip(
                "The scheduler controls how noise is gradually removed to form the image.",
            ))
            .input(InputSpec::of("positive", "CONDITIONING").tooltip(
                "The conditioning describing the attributes you want to include in the image.",
            ))
            .input(InputSpec::of("negative", "CONDITIONING").tooltip(
                "The conditioning describing the attributes you want to exclude from the image.",
            ))
            .input(InputSpec::of("latent_image", "LATENT").tooltip("The latent image to denoise."))
            .input(
                InputSpec::float("denoise")
                    .default(1.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01)
                    .tooltip(
                        "The amount of denoising applied, lower values will maintain the \
                         structure of the initial image allowing for image to image sampling.",
                    ),
            )
            .output(OutputSpec::new("LATENT").tooltip("The denoised latent."))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let seed = seed_of(i, "seed")?;
        let denoise = i.float("denoise")?;
        common_ksampler(ctx, i, seed, denoise, false, None, None, false)
    }
}

struct KSamplerAdvanced;
impl Node for KSamplerAdvanced {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerAdvanced")
            .display("KSampler (Advanced)")
            .category("sampling")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::combo("add_noise", &["enable", "disable"]))
            .input(seed_input("noise_seed"))
            .input(InputSpec::int("steps").default(20).min(1).max(10000))
            .input(cfg_input())
            .input(InputSpec::combo("sampler_name", &sampler_names()))
            .input(InputSpec::combo("scheduler", &scheduler_names()))
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(InputSpec::of("latent_image", "LATENT"))
            .input(InputSpec::int("start_at_step").default(0).min(0).max(10000))
            .input(
                InputSpec::int("end_at_step")
                    .default(10000)
                    .min(0)
                    .max(10000),
            )
            .input(InputSpec::combo(
                "return_with_leftover_noise",
                &["disable", "enable"],
            ))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let seed = seed_of(i, "noise_seed")?;
        let force_full = i.string("return_with_leftover_noise")? != "enable";
        let disable_noise = i.string("add_noise")? == "disable";
        let start = i.int("start_at_step")?.max(0) as usize;
        let end = i.int("end_at_step")?.max(0) as usize;
        common_ksampler(
            ctx,
            i,
            seed,
            1.0,
            disable_noise,
            Some(start),
            Some(end),
            force_full,
        )
    }
}

// ---- custom sampling ----

fn custom(class: &str, category: &str) -> NodeSchema {
    NodeSchema::new(class)
        .category(category)
        .module("comfy_extras.nodes_custom_sampler")
}

struct KSamplerSelect;
impl Node for KSamplerSelect {
    fn schema(&self) -> NodeSchema {
        custom("KSamplerSelect", "sampling/custom_sampling/samplers")
            .input(InputSpec::combo("sampler_name", &sampler_names()))
            .output(OutputSpec::new("SAMPLER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let kind: SamplerKind = i
            .string("sampler_name")?
            .parse()
            .map_err(|e: String| NodeError::input("sampler_name", e))?;
        Ok(NodeOutput::one(Value::object(SamplerPayload(kind))))
    }
}

struct BasicScheduler;
impl Node for BasicScheduler {
    fn schema(&self) -> NodeSchema {
        custom("BasicScheduler", "sampling/custom_sampling/schedulers")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::combo("scheduler", &scheduler_names()))
            .input(InputSpec::int("steps").default(20).min(1).max(10000))
            .input(
                InputSpec::float("denoise")
                    .default(1.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let scheduler: Scheduler = i
            .string("scheduler")?
            .parse()
            .map_err(|e: String| NodeError::input("scheduler", e))?;
        let steps = i.int("steps")?.max(0) as usize;
        let denoise = i.float("denoise")?;
        let mut total = steps;
        if denoise < 1.0 {
            if denoise <= 0.0 {
                return Ok(NodeOutput::one(Value::object(Sigmas(Vec::new()))));
            }
            total = (steps as f64 / denoise) as usize;
        }
        let s = calculate_sigmas(&model.sampling, scheduler, total);
        let keep = (steps + 1).min(s.len());
        Ok(NodeOutput::one(Value::object(Sigmas(
            s[s.len() - keep..].to_vec(),
        ))))
    }
}

struct RandomNoise;
impl Node for RandomNoise {
    fn schema(&self) -> NodeSchema {
        custom("RandomNoise", "sampling/custom_sampling/noise")
            .input(seed_input("noise_seed"))
            .output(OutputSpec::new("NOISE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::object(NoisePayload::Random(
            seed_of(i, "noise_seed")?,
        ))))
    }
}

struct DisableNoise;
impl Node for DisableNoise {
    fn schema(&self) -> NodeSchema {
        custom("DisableNoise", "sampling/custom_sampling/noise").output(OutputSpec::new("NOISE"))
    }
    fn execute(&self, _: &mut NodeContext, _: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::object(NoisePayload::Disabled)))
    }
}

struct CfgGuider;
impl Node for CfgGuider {
    fn schema(&self) -> NodeSchema {
        custom("CFGGuider", "sampling/custom_sampling/guiders")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(cfg_input())
            .output(OutputSpec::new("GUIDER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::object(GuiderPayload {
            model: (*i.object::<SdModel>("model")?).clone(),
            positive: (*i.object::<Conditioning>("positive")?).clone(),
            negative: Some((*i.object::<Conditioning>("negative")?).clone()),
            cfg: i.float("cfg")?,
        })))
    }
}

struct BasicGuider;
impl Node for BasicGuider {
    fn schema(&self) -> NodeSchema {
        custom("BasicGuider", "sampling/custom_sampling/guiders")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::of("conditioning", "CONDITIONING"))
            .output(OutputSpec::new("GUIDER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::object(GuiderPayload {
            model: (*i.object::<SdModel>("model")?).clone(),
            positive: (*i.object::<Conditioning>("conditioning")?).clone(),
            negative: None,
            cfg: 1.0,
        })))
    }
}

fn custom_outputs(s: NodeSchema) -> NodeSchema {
    s.output(OutputSpec::new("LATENT").named("output"))
        .output(OutputSpec::new("LATENT").named("denoised_output"))
}

/// `sample_custom` + the two outputs of SamplerCustom(Advanced).
fn custom_sample(
    ctx: &NodeContext,
    guider: &GuiderPayload,
    noise: NoisePayload,
    seed: u64,
    kind: SamplerKind,
    sigmas: &[f32],
    latent: &Latent,
) -> Result<NodeOutput, NodeError> {
    let shape = latent.samples.dims().to_vec();
    let noise_t = match noise {
        NoisePayload::Random(s) => prepare_noise(&shape, s, latent.batch_index.as_deref())?,
        NoisePayload::Disabled => Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)?,
    };
    let (out, denoised) = run_sampler(
        ctx,
        &guider.model,
        &guider.positive,
        guider.negative.as_ref(),
        guider.cfg,
        kind,
        sigmas,
        latent,
        &noise_t,
        seed,
    )?;
    Ok(NodeOutput::values(vec![
        Value::object(with_samples(latent, out)),
        Value::object(with_samples(latent, denoised)),
    ]))
}

struct SamplerCustom;
impl Node for SamplerCustom {
    fn schema(&self) -> NodeSchema {
        custom_outputs(
            custom("SamplerCustom", "sampling/custom_sampling")
                .input(InputSpec::of("model", "MODEL"))
                .input(InputSpec::boolean("add_noise").default(true))
                .input(seed_input("noise_seed"))
                .input(cfg_input())
                .input(InputSpec::of("positive", "CONDITIONING"))
                .input(InputSpec::of("negative", "CONDITIONING"))
                .input(InputSpec::of("sampler", "SAMPLER"))
                .input(InputSpec::of("sigmas", "SIGMAS"))
                .input(InputSpec::of("latent_image", "LATENT")),
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let guider = GuiderPayload {
            model: (*i.object::<SdModel>("model")?).clone(),
            positive: (*i.object::<Conditioning>("positive")?).clone(),
            negative: Some((*i.object::<Conditioning>("negative")?).clone()),
            cfg: i.float("cfg")?,
        };
        let seed = seed_of(i, "noise_seed")?;
        let noise = if i.boolean("add_noise")? {
            NoisePayload::Random(seed)
        } else {
            NoisePayload::Disabled
        };
        let sampler = i.object::<SamplerPayload>("sampler")?;
        let sigmas = i.object::<Sigmas>("sigmas")?;
        let latent = i.object::<Latent>("latent_image")?;
        // The sampler seed is noise_seed even with add_noise off.
        custom_sample(ctx, &guider, noise, seed, sampler.0, &sigmas.0, &latent)
    }
}

struct SamplerCustomAdvanced;
impl Node for SamplerCustomAdvanced {
    fn schema(&self) -> NodeSchema {
        custom_outputs(
            custom("SamplerCustomAdvanced", "sampling/custom_sampling")
                .input(InputSpec::of("noise", "NOISE"))
                .input(InputSpec::of("guider", "GUIDER"))
                .input(InputSpec::of("sampler", "SAMPLER"))
                .input(InputSpec::of("sigmas", "SIGMAS"))
                .input(InputSpec::of("latent_image", "LATENT")),
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let noise = i.object::<NoisePayload>("noise")?;
        let guider = i.object::<GuiderPayload>("guider")?;
        let sampler = i.object::<SamplerPayload>("sampler")?;
        let sigmas = i.object::<Sigmas>("sigmas")?;
        let latent = i.object::<Latent>("latent_image")?;
        let seed = match *noise {
            NoisePayload::Random(s) => s,
            NoisePayload::Disabled => 0,
        };
        custom_sample(ctx, &guider, *noise, seed, sampler.0, &sigmas.0, &latent)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(KSampler)?;
    r.register(KSamplerAdvanced)?;
    r.register(KSamplerSelect)?;
    r.register(BasicScheduler)?;
    r.register(RandomNoise)?;
    r.register(DisableNoise)?;
    r.register(CfgGuider)?;
    r.register(BasicGuider)?;
    r.register(SamplerCustom)?;
    r.register(SamplerCustomAdvanced)?;
    Ok(())
}
