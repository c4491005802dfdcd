//! KSampler, KSamplerAdvanced and the custom-sampling family (nodes.py,
//! comfy_extras/nodes_custom_sampler.py), on the sampling numerics of `crate::sampling`.

use super::sd_types::{Conditioning, GuiderPayload, NoisePayload, SamplerPayload, SdModel, Sigmas};
use crate::models::controlnet::ControlStep;
use crate::models::diffusion::ModelInputs;
use crate::models::family::CondParams;
use crate::models::flux::DEFAULT_GUIDANCE;
use crate::models::unet::UnetOptions;
use crate::node::types::Latent;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::{CondPass, DualCfg, DualCond, PreCfgArgs};
use crate::sampling::conds::{
    calc_cond_batch, flux_concat, prepare as prepare_conds, BatchConds, CondInput, CondModel,
    ExtraCondInput, Guidance, ModelConds, PrepareContext, PreparedCond, PreparedConds,
};
use crate::sampling::masks::reshape_mask;
use crate::sampling::noise::prepare_noise;
use crate::sampling::samplers::{
    finish_latent, initial_latent, inpaint_noise, sample, Denoiser, SampleOptions, SamplerExtra,
    SamplerKind, SamplingError,
};
use crate::sampling::schedulers::{
    calculate_sigmas, ksampler_sigmas, select_steps, Scheduler, StepSelection,
};
use candle_core::{DType, Device, Tensor};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

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

/// KSampler's `cfg` input (the guiders take the same).
pub(super) fn cfg_input() -> InputSpec {
    cfg_named("cfg")
}

fn cfg_named(name: &str) -> InputSpec {
    InputSpec::float(name)
        .default(8.0)
        .min(0.0)
        .max(100.0)
        .step(0.1)
        .opt("round", 0.01)
}

pub(super) fn seed_input(name: &str) -> InputSpec {
    InputSpec::int(name)
        .default(0)
        .min(0)
        .max(SEED_MAX)
        .opt("control_after_generate", true)
}

// ---- the CFG denoiser ----

/// The diffusion network wrapped with its model sampling (ComfyUI's
/// `BaseModel.apply_model`): scales the input, appends the concat channels, passes every
/// model cond, returns denoised predictions. The pass, when set, is the re-evaluation a
/// post-CFG patch asks for: PerturbedAttentionGuidance's perturbed pass (the middle block's
/// self-attention maps replaced by the identity) or skip-layer guidance's skipped blocks.
struct ModelApply<'a>(&'a SdModel, Option<CondPass<'a>>);

impl CondModel for ModelApply<'_> {
    fn apply(
        &self,
        x: &Tensor,
        sigma: f64,
        context: &Tensor,
        concat: Option<&Tensor>,
        y: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.apply_conds(
            x,
            sigma,
            &BatchConds {
                context,
                concat,
                y,
                guidance: None,
                ref_latents: &[],
                ref_method: Default::default(),
                control: None,
                batched_number: 1,
            },
        )
    }

    fn apply_conds(&self, x: &Tensor, sigma: f64, c: &BatchConds) -> candle_core::Result<Tensor> {
        let ms = &self.0.sampling;
        let n = x.dim(0)?;
        let xc = ms.calculate_input(sigma, x)?;
        let xc = match c.concat {
            Some(cc) => Tensor::cat(&[&xc, &cc.to_dtype(DType::F32)?], 1)?,
            None => xc,
        };
        let t = ms.timestep(sigma as f32);
        let ts = Tensor::from_vec(vec![t; n], n, x.device())?;
        // The batch's ControlNet residuals (`c['control'] = control.get_control(...)`), from
        // the latent without concat channels.
        let control = match c.control {
            Some(link) => link
                .get_control(&ControlStep {
                    model_weights: self
                        .0
                        .diffusion
                        .patches()
                        .is_empty()
                        .then(|| self.0.diffusion.base_weights()),
                    model: &self
                        .0
                        .diffusion
                        .get()
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
                    x_noisy: x,
                    x_in: &ms.calculate_input(sigma, x)?,
                    sigma,
                    timestep: t,
                    context: c.context,
                    y: c.y,
                    batched_number: c.batched_number,
                    percent_to_sigma: &|p| ms.percent_to_sigma(p),
                })
                .map_err(|e| candle_core::Error::Msg(format!("ControlNet: {e}")))?,
            None => None,
        };
        let out = self
            .0
            .diffusion
            .forward(&ModelInputs {
                x: &xc,
                timesteps: &ts,
                context: c.context,
                y: c.y,
                guidance: c.guidance,
                ref_latents: c.ref_latents,
                ref_method: c.ref_method,
                control: control.as_ref(),
                unet: UnetOptions {
                    output_block_patch: (!self.0.unet_patches.is_empty())
                        .then_some(&self.0.unet_patches as _),
                    perturb_middle_attn1: matches!(self.1, Some(CondPass::Perturbed)),
                    input_block_patch: (!self.0.unet_patches.input_block.is_empty())
                        .then_some(&self.0.unet_patches as _),
                    sigma,
                    capture_middle_attn1: match self.1 {
                        Some(CondPass::CaptureUncondAttention(slot)) => Some(slot),
                        _ => None,
                    },
                    attn1_tiling: self.0.unet_patches.hypertile.as_ref().map(|t| t as _),
                },
                skip_blocks: match self.1 {
                    Some(CondPass::SkipBlocks { double, .. }) => double,
                    _ => &[],
                },
                skip_single_blocks: match self.1 {
                    Some(CondPass::SkipBlocks { single, .. }) => single,
                    _ => &[],
                },
            })
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .to_dtype(DType::F32)?;
        ms.calculate_denoised(sigma, &out, x)
    }
}

/// ComfyUI's `sampling_function`: `calc_cond_batch` over [positive, negative] (the negative
/// skipped at cfg 1), `uncond + (cond − uncond)·cfg`, wrapped in `KSamplerX0Inpaint`'s
/// masked-denoising blend.
struct CfgDenoiser<'a> {
    model: &'a SdModel,
    conds: PreparedConds,
    /// False for BasicGuider (positive only).
    has_negative: bool,
    cfg: f64,
    /// DualCFGGuider: `conds.lists` is [cond1, negative, cond2].
    dual: Option<DualCfg>,
    /// PerpNegGuider's `neg_scale`: `conds.lists` is [positive, negative, empty].
    perp_neg: Option<f64>,
    /// The MODEL's PerpNeg empty conditioning, prepared (evaluated for [`CondPass::Empty`]).
    empty: Option<Vec<PreparedCond>>,
    /// (mask [B, C, h, w], noise, model-space latent) for masked denoising.
    inpaint: Option<(Tensor, Tensor, Tensor)>,
    /// The run's sigmas (the MODEL's denoise-mask function reads them).
    sigmas: Vec<f32>,
    last_denoised: Option<Tensor>,
}

/// math.isclose(a, b) with the default tolerances.
fn isclose(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl CfgDenoiser<'_> {
    /// A post-CFG patch's extra evaluation: the cond list `cond` again with the pass's
    /// network change; for [`CondPass::Empty`] the MODEL's PerpNeg empty conditioning; for
    /// SAG's passes the uncond list `uncond` (its attention captured, or at another input).
    fn again(
        &self,
        cond: &[PreparedCond],
        uncond: Option<&[PreparedCond]>,
        pass: CondPass<'_>,
        x: &Tensor,
        sigma: f64,
    ) -> candle_core::Result<Tensor> {
        let need_uncond = || {
            uncond.ok_or_else(|| {
                candle_core::Error::Msg(
                    "SelfAttentionGuidance needs a negative (unconditional) conditioning".into(),
                )
            })
        };
        let (model, list, x) = match pass {
            CondPass::Empty => (
                ModelApply(self.model, None),
                self.empty.as_deref().ok_or_else(|| {
                    candle_core::Error::Msg("PerpNeg: the model has no empty conditioning".into())
                })?,
                x,
            ),
            CondPass::UncondAt(x2) => (ModelApply(self.model, None), need_uncond()?, x2),
            CondPass::CaptureUncondAttention(_) => {
                (ModelApply(self.model, Some(pass)), need_uncond()?, x)
            }
            pass => (ModelApply(self.model, Some(pass)), cond, x),
        };
        let out = calc_cond_batch(&model, &[Some(list)], x, sigma)?;
        Ok(out[0].clone())
    }

    /// (CFG result, uncond prediction). `force_uncond` is ComfyUI's
    /// `disable_cfg1_optimization` (the CFG++ samplers set it): the negative is evaluated
    /// even at cfg 1.
    fn guided(
        &self,
        x: &Tensor,
        sigma: f64,
        force_uncond: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let patches = &self.model.cfg_patches;
        let l = &self.conds.lists;
        // SAG disables the cfg-1 optimisation.
        let force_uncond = force_uncond || patches.forces_uncond();
        if let Some(d) = &self.dual {
            let (skip_neg, skip_mid) = d.skips(force_uncond);
            let pick = |k: usize, skip: bool| (!skip).then(|| l[k].as_slice());
            // Guider_DualCFG's calc_cond_batch order: [negative, cond2, cond1].
            let out = calc_cond_batch(
                &ModelApply(self.model, None),
                &[pick(1, skip_neg), pick(2, skip_mid), Some(l[0].as_slice())],
                x,
                sigma,
            )?;
            return patches.dual_combine(
                d,
                &out[0],
                &out[1],
                &out[2],
                x,
                sigma,
                &mut |which, pass| {
                    // The cond and uncond its cfg_function saw.
                    let (list, un) = match which {
                        DualCond::Cond1 => (&l[0], &l[2]),
                        DualCond::Cond2 => (&l[2], &l[1]),
                    };
                    self.again(list, Some(un), pass, x, sigma)
                },
            );
        }
        if let Some(neg_scale) = self.perp_neg {
            return self.perp_neg_guided(neg_scale, x, sigma, force_uncond);
        }
        // math.isclose(cfg, 1.0)
        let skip_uncond = !force_uncond && isclose(self.cfg, 1.0);
        let positive = Some(l[0].as_slice());
        let negative = if self.has_negative && !skip_uncond {
            Some(l[1].as_slice())
        } else {
            None
        };
        let out = match (&patches.calc_cond_batch, negative) {
            // SkipLayerGuidanceDiTSimple: the negative with the listed blocks skipped.
            (Some(slg), Some(neg)) if slg.active(sigma) => {
                let c = calc_cond_batch(&ModelApply(self.model, None), &[positive], x, sigma)?;
                let pass = CondPass::SkipBlocks {
                    double: &slg.double,
                    single: &slg.single,
                };
                let u =
                    calc_cond_batch(&ModelApply(self.model, Some(pass)), &[Some(neg)], x, sigma)?;
                vec![c[0].clone(), u[0].clone()]
            }
            _ => calc_cond_batch(
                &ModelApply(self.model, None),
                &[positive, negative],
                x,
                sigma,
            )?,
        };
        // sampler_pre_cfg_function (LatentApplyOperationCFG, APG, FreSca, TCFG).
        let (cond, uncond) = patches.pre_cfg(
            &out[0],
            &out[1],
            &PreCfgArgs {
                x,
                sigma,
                cfg: self.cfg,
                skipped: negative.is_none(),
            },
        )?;
        // cfg_function: the plain combine, or the MODEL's patched one (RescaleCFG, PerpNeg)
        // and its post-CFG functions (CFGNorm, ...). PerturbedAttentionGuidance and
        // skip-layer guidance re-evaluate the positive (`calc_cond_batch(model, [cond],
        // ...)`) with the middle block's self-attention perturbed, resp. the listed blocks
        // skipped; PerpNeg evaluates its empty conditioning.
        let combined = patches.combine_with(&cond, &uncond, self.cfg, x, sigma, &mut |pass| {
            self.again(&l[0], negative, pass, x, sigma)
        })?;
        Ok((combined, uncond))
    }

    /// `Guider_PerpNeg.predict_noise`: [positive, negative, empty] in one
    /// `calc_cond_batch` (the negative skipped at neg_scale 0, the empty one too when cfg is
    /// also 1), the pre-CFG functions, `perp_neg`, then the post-CFG functions with the
    /// positive and negative predictions (no `sampler_cfg_function`).
    fn perp_neg_guided(
        &self,
        neg_scale: f64,
        x: &Tensor,
        sigma: f64,
        force_uncond: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let l = &self.conds.lists;
        let patches = &self.model.cfg_patches;
        let force_uncond = force_uncond || patches.forces_uncond();
        let (mut skip_neg, mut skip_empty) = (false, false);
        if !force_uncond && isclose(neg_scale, 0.0) {
            skip_neg = true;
            skip_empty = isclose(self.cfg, 1.0);
        }
        let pick = |k: usize, skip: bool| (!skip).then(|| l[k].as_slice());
        let out = calc_cond_batch(
            &ModelApply(self.model, None),
            &[
                Some(l[0].as_slice()),
                pick(1, skip_neg),
                pick(2, skip_empty),
            ],
            x,
            sigma,
        )?;
        let (pos, neg) = patches.pre_cfg(
            &out[0],
            &out[1],
            &PreCfgArgs {
                x,
                sigma,
                cfg: self.cfg,
                skipped: skip_neg,
            },
        )?;
        let dims = pos.dims().to_vec();
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let v = crate::sampling::guidance_fns::perp_neg(
            &flat(&pos)?,
            &flat(&neg)?,
            &flat(&out[2])?,
            neg_scale,
            self.cfg,
        );
        let result = Tensor::from_vec(v, dims.as_slice(), pos.device())?;
        let result =
            patches.post_cfg_with(result, &pos, &neg, self.cfg, x, sigma, &mut |pass| {
                self.again(&l[0], (!skip_neg).then(|| l[1].as_slice()), pass, x, sigma)
            })?;
        Ok((result, neg))
    }

    /// `KSamplerX0Inpaint` around [`Self::guided`]: with a noise mask the input is blended
    /// with the noised latent and the output with the latent (the uncond is returned as the
    /// model gave it, as ComfyUI's post-CFG hook sees it).
    fn run(
        &mut self,
        x: &Tensor,
        sigma: f64,
        force_uncond: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (out, uncond) = match &self.inpaint {
            None => self.guided(x, sigma, force_uncond)?,
            Some((m, noise, latent)) => {
                // The MODEL's denoise_mask_function (DifferentialDiffusion) first.
                let dd;
                let m = match &self.model.denoise_mask_fn {
                    Some(f) => {
                        dd = f.apply(&self.model.sampling, &self.sigmas, sigma as f32, m)?;
                        &dd
                    }
                    None => m,
                };
                let inv = m.affine(-1.0, 1.0)?;
                let noised = self
                    .model
                    .sampling
                    .noise_scaling(sigma, noise, latent, false)?;
                let xi = ((x * m)? + (noised * &inv)?)?;
                let (out, uncond) = self.guided(&xi, sigma, force_uncond)?;
                (((out * m)? + (latent * &inv)?)?, uncond)
            }
        };
        self.last_denoised = Some(out.clone());
        Ok((out, uncond))
    }
}

impl Denoiser for CfgDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        Ok(self.run(x, sigma, false)?.0)
    }

    fn denoise_with_uncond(
        &mut self,
        x: &Tensor,
        sigma: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        self.run(x, sigma, true)
    }
}

/// Whether the UNet takes ComfyUI's inpainting concat: 4 latent channels + mask + masked
/// latent = 9 inputs; a plain UNet takes the latent's channels.
fn is_inpaint_model(model: &SdModel, latent_channels: usize) -> Result<bool, NodeError> {
    let inc = model.diffusion.in_channels();
    if model.family.is_flux() {
        // Flux's extra channels (Fill, Canny/Depth) come from its own concat_cond.
        return if inc >= latent_channels {
            Ok(false)
        } else {
            Err(NodeError::msg(format!(
                "the Flux model takes {inc} input channels, fewer than the \
                 {latent_channels}-channel latent"
            )))
        };
    }
    if inc == latent_channels {
        Ok(false)
    } else if inc == latent_channels + 5 {
        Ok(true)
    } else {
        Err(NodeError::msg(format!(
            "the UNet takes {inc} input channels; a {latent_channels}-channel latent needs a \
             UNet with {latent_channels} (plain) or {} (inpainting) input channels",
            latent_channels + 5
        )))
    }
}

fn entries(c: &Conditioning) -> Vec<CondInput<'_>> {
    c.0.iter()
        .map(|e| CondInput {
            cross_attn: &e.cond,
            pooled: e.pooled.as_ref(),
            opts: &e.opts,
        })
        .collect()
}

/// The family's `extra_conds` for one cond: SDXL's ADM vector; Flux's pooled `y`, guidance
/// (3.5 when the conditioning has none, nothing after FluxDisableGuidance), Kontext
/// reference latents and Fill/Canny/Depth concat channels.
fn extra_conds(model: &SdModel, c: &ExtraCondInput) -> candle_core::Result<ModelConds> {
    let o = c.opts;
    let (h, w) = c.latent_hw;
    let y = model
        .family
        .extra_y(&CondParams {
            pooled: c.pooled,
            width: o.width,
            height: o.height,
            crop_w: o.crop_w,
            crop_h: o.crop_h,
            target_width: o.target_width,
            target_height: o.target_height,
            aesthetic_score: o.aesthetic_score,
            latent_pixels: (w * 8, h * 8),
            positive: c.positive,
        })
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut out = ModelConds {
        y,
        // Flux and SD3 take their text tokens as a CONDRegular (never padded to batch).
        regular_cross_attn: model.family.regular_cross_attn(),
        ..ModelConds::default()
    };
    if model.family.is_flux() {
        let format = model.latent_format();
        out.guidance = match o.guidance {
            None => Some(DEFAULT_GUIDANCE as f32),
            Some(Guidance::Value(g)) => Some(g as f32),
            Some(Guidance::Disabled) => None,
        };
        out.ref_latents = o
            .reference_latents
            .iter()
            .map(|r| format.process_in(&r.to_dtype(DType::F32)?))
            .collect::<candle_core::Result<_>>()?;
        out.ref_method = o.reference_latents_method.unwrap_or_default();
        // The evaluated (patched) network's input width: a Flux control LoRA widens it.
        let net = model
            .diffusion
            .get()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        out.concat = flux_concat(
            o,
            net.in_channels(),
            net.out_channels(),
            c.shape,
            c.denoise_mask,
            &|z| format.process_in(z),
        )?;
    }
    Ok(out)
}

/// ComfyUI's `fix_empty_latent_channels`: an all-zero latent whose channel count is not the
/// model's latent format's becomes zeros with the right channels (so EmptyLatentImage's 4
/// channels work for 16-channel families).
pub fn fix_empty_latent_channels(model: &SdModel, latent: &Latent) -> Result<Latent, NodeError> {
    let channels = model.latent_format().channels;
    let dims = latent.samples.dims().to_vec();
    if dims.len() < 2 || dims[1] == channels {
        return Ok(latent.clone());
    }
    let nonzero = latent
        .samples
        .abs()?
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?
        > 0.0;
    if nonzero {
        return Ok(latent.clone());
    }
    let mut shape = dims;
    shape[1] = channels;
    let mut out = latent.clone();
    out.samples = Tensor::zeros(shape.as_slice(), DType::F32, latent.samples.device())?;
    Ok(out)
}

/// One sampling run (ComfyUI's `CFGGuider.sample` with a KSAMPLER): returns the output latent
/// and the last denoised prediction, both as unscaled latents. `ctx` (the running node)
/// receives progress and stops the run when interrupted; `None` runs without either.
#[allow(clippy::too_many_arguments)]
pub fn run_sampler(
    ctx: Option<&NodeContext>,
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
    run_sampler_with(
        ctx,
        model,
        positive,
        negative,
        cfg,
        kind,
        SamplerExtra::default(),
        sigmas,
        latent,
        noise,
        seed,
    )
}

/// [`run_sampler`] with the sampler's extra options (a custom-sampling sampler node's).
#[allow(clippy::too_many_arguments)]
pub fn run_sampler_with(
    ctx: Option<&NodeContext>,
    model: &SdModel,
    positive: &Conditioning,
    negative: Option<&Conditioning>,
    cfg: f64,
    kind: SamplerKind,
    sampler_extra: SamplerExtra,
    sigmas: &[f32],
    latent: &Latent,
    noise: &Tensor,
    seed: u64,
) -> Result<(Tensor, Tensor), NodeError> {
    run_guided(
        ctx,
        model,
        positive,
        negative,
        None,
        cfg,
        kind,
        sampler_extra,
        sigmas,
        latent,
        noise,
        seed,
    )
}

/// A guider's third conditioning and what it is for.
#[derive(Debug, Clone, Copy)]
enum ThirdCond {
    /// DualCFGGuider's cond2 and weights (`positive` is its cond1).
    Dual(DualCfg),
    /// PerpNegGuider's empty conditioning and `neg_scale`.
    PerpNeg(f64),
}

/// [`run_sampler_with`] for any guider: `third` is DualCFGGuider's cond2 or PerpNegGuider's
/// empty conditioning.
#[allow(clippy::too_many_arguments)]
fn run_guided(
    ctx: Option<&NodeContext>,
    model: &SdModel,
    positive: &Conditioning,
    negative: Option<&Conditioning>,
    third: Option<(&Conditioning, ThirdCond)>,
    cfg: f64,
    kind: SamplerKind,
    sampler_extra: SamplerExtra,
    sigmas: &[f32],
    latent: &Latent,
    noise: &Tensor,
    seed: u64,
) -> Result<(Tensor, Tensor), NodeError> {
    let samples = latent.samples.to_dtype(DType::F32)?;
    if sigmas.is_empty() {
        return Ok((samples.clone(), samples));
    }
    if positive.0.is_empty()
        || negative.is_some_and(|n| n.0.is_empty())
        || third.is_some_and(|(m, _)| m.0.is_empty())
        || model
            .empty_conditioning
            .as_ref()
            .is_some_and(|e| e.0.is_empty())
    {
        return Err(NodeError::msg("empty CONDITIONING"));
    }
    let ms = &model.sampling;
    let format = model.latent_format();
    if samples.dims()[1] != format.channels {
        return Err(NodeError::msg(format!(
            "the latent has {} channels; a {} model samples {}-channel latents ({})",
            samples.dims()[1],
            model.family.comfy_name(),
            format.channels,
            format.name
        )));
    }
    let nonzero = samples.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0;
    let latent_in = if nonzero {
        format.process_in(&samples)?
    } else {
        samples.clone()
    };
    let shape = samples.dims4()?;
    let mask = match &latent.noise_mask {
        Some(m) => Some(reshape_mask(m, samples.dims())?),
        None => None,
    };
    // The positive list first (prompt_type "positive"); DualCFGGuider's cond2 and
    // PerpNegGuider's empty conditioning are marked negative, as their set_conds do.
    let mut lists = match negative {
        Some(n) => vec![entries(positive), entries(n)],
        None => vec![entries(positive)],
    };
    if let Some((third, _)) = third {
        if negative.is_none() {
            return Err(NodeError::msg(
                "a guider with three conditionings needs a negative",
            ));
        }
        lists.push(entries(third));
    }
    let extra = |c: &ExtraCondInput| extra_conds(model, c);
    let process_in = |z: &Tensor| format.process_in(z);
    let prep = PrepareContext {
        shape: [shape.0, shape.1, shape.2, shape.3],
        sampling: ms,
        latent_image: &latent_in,
        denoise_mask: mask.as_ref(),
        inpaint_model: is_inpaint_model(model, shape.1)?,
        extra_conds: Some(&extra),
        process_in: &process_in,
    };
    let conds = prepare_conds(&lists, &prep)?;
    // PerpNeg's empty conditioning (the MODEL patch's): encoded on its own as a negative,
    // outside the guider's conds (an empty first list: no positive, no area pairing).
    let empty = match &model.empty_conditioning {
        Some(e) => {
            let mut p = prepare_conds(&[vec![], entries(e)], &prep)?;
            Some(p.lists.remove(1))
        }
        None => None,
    };
    if mask.is_some()
        && kind == SamplerKind::Lcm
        && sampler_extra
            .lcm_upscale
            .is_some_and(|u| u.total_upscale != 1.0)
    {
        // The mask keeps the first size while the latent grows (ComfyUI fails on the
        // shapes too).
        return Err(NodeError::msg(
            "SamplerLCMUpscale resizes the latent, which a latent with a noise mask cannot \
             follow: remove the mask or use scale_ratio 1",
        ));
    }
    let inpaint = match mask {
        Some(mask) => {
            let n = inpaint_noise(kind, samples.dims(), seed, noise)?;
            Some((mask, n, latent_in.clone()))
        }
        None => None,
    };
    // HyperTile draws from torch's global generator, which prepare_noise(seed) left
    // after the initial noise.
    if let Some(t) = &model.unet_patches.hypertile {
        t.rng.reset(seed, samples.dims());
    }
    let x = initial_latent(ms, sigmas, noise, &latent_in)?;
    let mut den = CfgDenoiser {
        model,
        conds,
        has_negative: negative.is_some(),
        cfg,
        dual: match third {
            Some((_, ThirdCond::Dual(d))) => Some(d),
            _ => None,
        },
        perp_neg: match third {
            Some((_, ThirdCond::PerpNeg(s))) => Some(s),
            _ => None,
        },
        empty,
        inpaint,
        sigmas: sigmas.to_vec(),
        last_denoised: None,
    };
    let stopped = Cell::new(false);
    let err: RefCell<Option<NodeError>> = RefCell::new(None);
    let mut opts = SampleOptions::new(seed).with_model_sampling(ms);
    opts.extra = sampler_extra;
    if let Some(ctx) = ctx {
        opts.keep_denoised = ctx.env.previews.enabled();
        opts.callback = Some(Box::new(|done, total, x0| {
            // The step's preview goes with its progress report.
            let jpeg = x0.and_then(|x0| {
                crate::sampling::preview::preview_jpeg(x0, &format, ctx.env.previews.max_size)
                    // A preview is a courtesy: the run goes on without it.
                    .map_err(|e| tracing::warn!(node = ctx.node_id, "latent preview failed: {e}"))
                    .ok()
                    .map(crate::node::PreviewImage::jpeg)
            });
            if let Err(e) = ctx.progress_with_preview(done as u64, total as u64, jpeg) {
                stopped.set(true);
                *err.borrow_mut() = Some(e);
            }
        }));
        opts.cancel = Some(Box::new(|| stopped.get() || ctx.check_interrupt().is_err()));
    }
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
    let out = format.process_out(&out)?;
    let denoised = match den.last_denoised {
        Some(d) => format.process_out(&d)?,
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
    let latent = Arc::new(fix_empty_latent_channels(
        &model,
        &*i.object::<Latent>("latent_image")?,
    )?);
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
        Some(ctx),
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

pub(super) fn custom(class: &str, category: &str) -> NodeSchema {
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
        Ok(NodeOutput::one(Value::object(SamplerPayload(
            kind,
            SamplerExtra::default(),
        ))))
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
            dual: None,
            perp_neg: None,
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
            dual: None,
            perp_neg: None,
        })))
    }
}

struct DualCfgGuider;
impl Node for DualCfgGuider {
    fn schema(&self) -> NodeSchema {
        custom("DualCFGGuider", "sampling/custom_sampling/guiders")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::of("cond1", "CONDITIONING"))
            .input(InputSpec::of("cond2", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(cfg_named("cfg_conds"))
            .input(cfg_named("cfg_cond2_negative"))
            .input(InputSpec::combo("style", &["regular", "nested"]))
            .output(OutputSpec::new("GUIDER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let nested = match i.string("style")? {
            "regular" => false,
            "nested" => true,
            other => {
                return Err(NodeError::input(
                    "style",
                    format!("{other:?} is not one of \"regular\", \"nested\""),
                ))
            }
        };
        let cfg_conds = i.float("cfg_conds")?;
        Ok(NodeOutput::one(Value::object(GuiderPayload {
            model: (*i.object::<SdModel>("model")?).clone(),
            positive: (*i.object::<Conditioning>("cond1")?).clone(),
            negative: Some((*i.object::<Conditioning>("negative")?).clone()),
            cfg: cfg_conds,
            dual: Some((
                (*i.object::<Conditioning>("cond2")?).clone(),
                DualCfg {
                    cfg_conds,
                    cfg_cond2_negative: i.float("cfg_cond2_negative")?,
                    nested,
                },
            )),
            perp_neg: None,
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
    sampler: &SamplerPayload,
    sigmas: &[f32],
    latent: &Latent,
) -> Result<NodeOutput, NodeError> {
    let latent = &fix_empty_latent_channels(&guider.model, latent)?;
    let shape = latent.samples.dims().to_vec();
    let noise_t = match noise {
        NoisePayload::Random(s) => prepare_noise(&shape, s, latent.batch_index.as_deref())?,
        NoisePayload::Disabled => Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)?,
    };
    let (out, denoised) = run_guided(
        Some(ctx),
        &guider.model,
        &guider.positive,
        guider.negative.as_ref(),
        match (&guider.dual, &guider.perp_neg) {
            (Some((m, d)), _) => Some((m, ThirdCond::Dual(*d))),
            (None, Some((e, s))) => Some((e, ThirdCond::PerpNeg(*s))),
            (None, None) => None,
        },
        guider.cfg,
        sampler.0,
        sampler.1,
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
            dual: None,
            perp_neg: None,
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
        custom_sample(ctx, &guider, noise, seed, &sampler, &sigmas.0, &latent)
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
        custom_sample(ctx, &guider, *noise, seed, &sampler, &sigmas.0, &latent)
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
    r.register(DualCfgGuider)?;
    r.register(SamplerCustom)?;
    r.register(SamplerCustomAdvanced)?;
    Ok(())
}
