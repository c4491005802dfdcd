//! Model patches that change how the CFG result is formed (ComfyUI's
//! `model_options["sampler_cfg_function"]` and `["sampler_post_cfg_function"]`, set by
//! `set_model_sampler_cfg_function` / `set_model_sampler_post_cfg_function`):
//! RescaleCFG replaces the `uncond + (cond − uncond)·cfg` combine, CFGNorm and CFGZeroStar
//! correct the result afterwards. A MODEL carries its patches ([`CfgPatches`]); the CFG denoiser calls
//! [`CfgPatches::combine`] at every model evaluation, as `comfy.samplers.cfg_function` does.
//!
//! Float32 element-wise as torch evaluates the patch functions; the per-sample standard
//! deviations and channel norms are reductions whose order differs from torch's vectorised
//! ones in the last bits.

pub use super::pre_cfg::{PreCfg, PreCfgArgs};
use crate::sampling::torch_math::TorchScalar;
use candle_core::{DType, Result, Tensor};

/// A `sampler_cfg_function` (only the last one set is used, as in ComfyUI).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CfgFunction {
    /// RescaleCFG (`comfy_extras/nodes_model_advanced.py`): CFG on the v-prediction
    /// outputs, rescaled to the conditional prediction's per-sample std, mixed by
    /// `multiplier`.
    RescaleCfg { multiplier: f64 },
    /// RenormCFG (`comfy_extras/nodes_lumina2.py`): plain CFG below `cfg_trunc` (σ), its
    /// norm capped at `renorm_cfg` times the conditional prediction's; the conditional
    /// prediction alone from `cfg_trunc` up ([`super::guidance_fns::renorm_cfg`]).
    RenormCfg { cfg_trunc: f64, renorm_cfg: f64 },
    /// PerpNeg (`comfy_extras/nodes_perpneg.py`, the deprecated model patch): the MODEL's
    /// empty conditioning is evaluated too ([`CondPass::Empty`]) and the positive and negative
    /// directions from it are combined with the negative's component perpendicular to the
    /// positive scaled by `neg_scale` ([`super::guidance_fns::perp_neg`]).
    PerpNeg { neg_scale: f64 },
}

/// A `sampler_post_cfg_function` (run in the order they were added).
#[derive(Debug, Clone, PartialEq)]
pub enum PostCfg {
    /// CFGNorm (`comfy_extras/nodes_cfg.py`): scales the result per pixel so its channel
    /// norm does not exceed the conditional prediction's, times `strength`.
    CfgNorm { strength: f64 },
    /// CFGZeroStar (`comfy_extras/nodes_cfg.py`, CFG-Zero*): corrects the result with the
    /// per-sample optimal scale of the uncond (`optimized_scale`).
    CfgZeroStar,
    /// PerturbedAttentionGuidance (`comfy_extras/nodes_pag.py`): adds
    /// `(cond − perturbed)·scale`, `perturbed` the conditional prediction with the middle
    /// block's self-attention maps replaced by the identity (a second model pass).
    Pag { scale: f64 },
    /// SkipLayerGuidanceSD3 / SkipLayerGuidanceDiT (`comfy_extras/nodes_slg.py`): for
    /// `sigma_end ≤ σ ≤ sigma_start`, the positive conds are evaluated again with the DiT's
    /// joint (double) blocks `layers` and single blocks `single_layers` skipped and the result
    /// moves by `(cond − skipped)·scale`; then, when `rescaling_scale` is not 0, it is scaled
    /// by `rescaling_scale·std(cond)/std(result) + 1 − rescaling_scale` (whole-tensor stds).
    SkipLayerGuidance {
        layers: Vec<usize>,
        single_layers: Vec<usize>,
        scale: f64,
        sigma_start: f64,
        sigma_end: f64,
        rescaling_scale: f64,
    },
    /// Epsilon Scaling (`comfy_extras/nodes_eps.py`): the predicted noise `x − denoised`
    /// divided by `factor` (float32 division), `x −` that.
    EpsilonScaling { factor: f64 },
    /// Mahiro (`comfy_extras/nodes_mahiro.py`): moves the result towards `cond·cfg` by how
    /// little the guided and unconditional directions agree ([`super::guidance_fns::mahiro`]).
    Mahiro,
    /// SelfAttentionGuidance (`comfy_extras/nodes_sag.py`): the unconditional prediction,
    /// blurred where the middle block's self-attention concentrates
    /// ([`super::sag::create_blur_map`]), is re-noised and denoised again; the result moves by
    /// `(degraded − that)·scale`. Disables the cfg-1 optimisation (the uncond is always
    /// evaluated).
    Sag { scale: f64, blur_sigma: f64 },
}

/// A second evaluation of the conditional prediction that a post-CFG patch asks for.
#[derive(Debug, Clone, Copy)]
pub enum CondPass<'a> {
    /// PAG: the middle block's self-attention replaced by the identity.
    Perturbed,
    /// Skip-layer guidance: these DiT double (joint) and single blocks replaced by the
    /// identity.
    SkipBlocks {
        double: &'a [usize],
        single: &'a [usize],
    },
    /// PerpNeg's model patch: the MODEL's empty conditioning instead of the positive, the
    /// network unchanged.
    Empty,
    /// SAG: the negative (uncond) again, its middle block's first self-attention
    /// probabilities stored in the given slot.
    CaptureUncondAttention(&'a std::sync::Mutex<Option<Tensor>>),
    /// SAG: the negative (uncond) at another input.
    UncondAt(&'a Tensor),
}

/// SkipLayerGuidanceDiTSimple (`comfy_extras/nodes_slg.py`), a
/// `sampler_calc_cond_batch_function`: for `sigma_end ≤ σ ≤ sigma_start`, when the negative
/// is evaluated, it is evaluated with these DiT blocks skipped (the positive as usual).
#[derive(Debug, Clone, PartialEq)]
pub struct SkipLayerUncond {
    pub double: Vec<usize>,
    pub single: Vec<usize>,
    pub sigma_start: f64,
    pub sigma_end: f64,
}

impl SkipLayerUncond {
    /// Whether σ (a float32 `sigma[0].item()`) is in the patch's range.
    pub fn active(&self, sigma: f64) -> bool {
        let s = sigma as f32 as f64;
        s >= self.sigma_end && s <= self.sigma_start
    }
}

/// DualCFGGuider's weights and style (`Guider_DualCFG` of
/// `comfy_extras/nodes_custom_sampler.py`): `cfg_conds` weighs cond1 against cond2,
/// `cfg_cond2_negative` cond2 against the negative; "nested" applies the first CFG inside
/// the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DualCfg {
    pub cfg_conds: f64,
    pub cfg_cond2_negative: f64,
    pub nested: bool,
}

/// Which conditioning a DualCFGGuider combine treats as its `cond` (the one a PAG pass
/// re-evaluates): cond2 in the regular style, cond1 in the nested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualCond {
    Cond1,
    Cond2,
}

/// `math.isclose(v, 1.0)`.
fn is_one(v: f64) -> bool {
    (v - 1.0).abs() <= 1e-9 * v.abs().max(1.0)
}

impl DualCfg {
    /// (skip the negative, skip cond2): the regular style's cfg-1 optimisation (a skipped
    /// prediction is zeros, as `calc_cond_batch` gives for a missing cond); never for
    /// "nested" or when the sampler disables the optimisation (`force`).
    pub fn skips(&self, force: bool) -> (bool, bool) {
        if self.nested || force || !is_one(self.cfg_cond2_negative) {
            return (false, false);
        }
        (true, is_one(self.cfg_conds))
    }
}

/// A LATENT_OPERATION (`comfy_extras/nodes_latent.py`): a function of a latent-shaped
/// tensor, applied to a LATENT (LatentApplyOperation) or, as a pre-CFG patch, to the
/// conditional prediction's difference from the unconditional (LatentApplyOperationCFG).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatentOperation {
    /// LatentOperationTonemapReinhard: per-pixel channel vectors keep their direction; their
    /// length `m` becomes `top·(m/top)/(m/top + 1)`, `top = (5·std + mean)·multiplier` of the
    /// lengths per sample.
    TonemapReinhard { multiplier: f64 },
    /// LatentOperationSharpen: the channel vectors' directions sharpened like ImageSharpen
    /// (radius, sigma, alpha), their lengths kept ([`super::guidance_fns::latent_sharpen`]).
    Sharpen {
        radius: usize,
        sigma: f64,
        alpha: f64,
    },
}

impl LatentOperation {
    /// The operation on a `[B, C, …]` tensor.
    pub fn apply(&self, latent: &Tensor) -> Result<Tensor> {
        match *self {
            LatentOperation::TonemapReinhard { multiplier } => tonemap_reinhard(latent, multiplier),
            LatentOperation::Sharpen {
                radius,
                sigma,
                alpha,
            } => super::guidance_fns::latent_sharpen(latent, radius, sigma, alpha),
        }
    }
}

/// `tonemap_reinhard` of LatentOperationTonemapReinhard, float32 as torch evaluates it (the
/// norms, mean and std reduce in f64 and round once).
fn tonemap_reinhard(latent: &Tensor, multiplier: f64) -> Result<Tensor> {
    let dims = latent.dims().to_vec();
    if dims.len() < 2 {
        candle_core::bail!("a latent operation needs a [B, C, ...] tensor, got {dims:?}");
    }
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let v = flat(latent)?;
    let mut out = vec![0f32; v.len()];
    for bi in 0..b {
        let at = |ch: usize, k: usize| (bi * c + ch) * rest + k;
        // torch.linalg.vector_norm(latent, dim=1) + 1e-10
        let mag: Vec<f32> = (0..rest)
            .map(|k| {
                let ss: f64 = (0..c).map(|ch| (v[at(ch, k)] as f64).powi(2)).sum();
                (ss.sqrt() as f32) + 1e-10
            })
            .collect();
        let mean = (mag.iter().map(|&m| m as f64).sum::<f64>() / rest as f64) as f32;
        let std = std_unbiased(&mag);
        let top = (std * 5.0 + mean) * multiplier as f32;
        let inv_top = 1.0 / top;
        for k in 0..rest {
            let m = mag[k] * inv_top;
            let new = (m / (m + 1.0)) * top;
            for ch in 0..c {
                out[at(ch, k)] = (v[at(ch, k)] / mag[k]) * new;
            }
        }
    }
    Tensor::from_vec(out, dims.as_slice(), latent.device())
}

/// The CFG patches of a MODEL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CfgPatches {
    pub cfg_function: Option<CfgFunction>,
    pub post_cfg: Vec<PostCfg>,
    /// `sampler_pre_cfg_function`s (LatentApplyOperationCFG, APG, FreSca, TCFG), in the
    /// order added.
    pub pre_cfg: Vec<PreCfg>,
    /// The `sampler_calc_cond_batch_function` (SkipLayerGuidanceDiTSimple; the last one set).
    pub calc_cond_batch: Option<SkipLayerUncond>,
}

/// Flat float32 values of a tensor and its dims.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// torch.std (unbiased) over one sample's values, in f64 then rounded to f32.
fn std_unbiased(v: &[f32]) -> f32 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let ss: f64 = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum();
    (ss / (n - 1.0)).sqrt() as f32
}

impl CfgPatches {
    /// Whether a patch needs the uncond even at cfg 1 (ComfyUI's
    /// `disable_cfg1_optimization`, set by SelfAttentionGuidance).
    pub fn forces_uncond(&self) -> bool {
        self.post_cfg
            .iter()
            .any(|p| matches!(p, PostCfg::Sag { .. }))
    }

    pub fn is_empty(&self) -> bool {
        self.cfg_function.is_none()
            && self.post_cfg.is_empty()
            && self.pre_cfg.is_empty()
            && self.calc_cond_batch.is_none()
    }

    /// The pre-CFG functions on (cond, uncond) as `sampling_function` runs them (its
    /// `conds_out` always has both; a skipped uncond is zeros): the new (cond, uncond).
    pub fn pre_cfg(
        &self,
        cond: &Tensor,
        uncond: &Tensor,
        args: &PreCfgArgs<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let (mut cond, mut uncond) = (cond.clone(), uncond.clone());
        for f in &self.pre_cfg {
            (cond, uncond) = f.apply(&cond, &uncond, args)?;
        }
        Ok((cond, uncond))
    }

    /// `Guider_DualCFG.predict_noise` from the negative, cond2 and cond1 predictions:
    /// regular `cfg_function(cond2, negative, cfg_cond2_negative) + (cond1 − cond2)·cfg_conds`,
    /// nested `negative + cfg_cond2_negative·(cfg_function(cond1, cond2, cfg_conds) −
    /// negative)`. Returns the result and the uncond its `cfg_function` saw (the negative,
    /// or cond2 when nested), which the CFG++ samplers use.
    #[allow(clippy::too_many_arguments)]
    pub fn dual_combine(
        &self,
        d: &DualCfg,
        negative: &Tensor,
        cond2: &Tensor,
        cond1: &Tensor,
        x: &Tensor,
        sigma: f64,
        again: &mut dyn FnMut(DualCond, CondPass<'_>) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        if d.nested {
            let text = self.combine_with(cond1, cond2, d.cfg_conds, x, sigma, &mut |pass| {
                again(DualCond::Cond1, pass)
            })?;
            let out = (negative + ((text - negative)? * d.cfg_cond2_negative)?)?;
            Ok((out, cond2.clone()))
        } else {
            let first = self.combine_with(
                cond2,
                negative,
                d.cfg_cond2_negative,
                x,
                sigma,
                &mut |pass| again(DualCond::Cond2, pass),
            )?;
            let out = (first + ((cond1 - cond2)? * d.cfg_conds)?)?;
            Ok((out, negative.clone()))
        }
    }

    /// `cfg_function(model, cond_pred, uncond_pred, cond_scale, x, σ)` with these patches:
    /// the CFG combine (or the patched one), then every post-CFG function. `uncond` is
    /// zeros when the uncond pass was skipped (cfg 1 without a CFG++ sampler). Patches
    /// that evaluate the model again (skip-layer guidance) are an error here: use
    /// [`Self::combine_with`].
    pub fn combine(
        &self,
        cond: &Tensor,
        uncond: &Tensor,
        cfg: f64,
        x: &Tensor,
        sigma: f64,
    ) -> Result<Tensor> {
        self.combine_with(cond, uncond, cfg, x, sigma, &mut |pass| {
            candle_core::bail!("{pass:?} needs the model: use combine_with")
        })
    }

    /// [`Self::combine`] with `again` evaluating the conditional prediction once more the
    /// way a post-CFG patch asks (PAG's perturbed pass, skip-layer guidance's skipped
    /// blocks); called only when such a patch is active.
    pub fn combine_with(
        &self,
        cond: &Tensor,
        uncond: &Tensor,
        cfg: f64,
        x: &Tensor,
        sigma: f64,
        again: &mut dyn FnMut(CondPass<'_>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let dims = cond.dims().to_vec();
        let out = match self.cfg_function {
            None => (uncond + ((cond - uncond)? * cfg)?)?,
            Some(CfgFunction::RescaleCfg { multiplier }) => {
                let v = rescale_cfg(
                    &flat(cond)?,
                    &flat(uncond)?,
                    cfg,
                    &flat(x)?,
                    sigma as f32,
                    multiplier,
                    dims[0],
                );
                Tensor::from_vec(v, dims.as_slice(), cond.device())?
            }
            Some(CfgFunction::RenormCfg {
                cfg_trunc,
                renorm_cfg,
            }) => {
                // Every model comfyrs runs predicts all its input's latent channels.
                let v = super::guidance_fns::renorm_cfg(
                    &flat(cond)?,
                    &flat(uncond)?,
                    &flat(x)?,
                    cfg,
                    sigma,
                    cfg_trunc,
                    renorm_cfg,
                    dims[1],
                    &dims,
                );
                Tensor::from_vec(v, dims.as_slice(), cond.device())?
            }
            Some(CfgFunction::PerpNeg { neg_scale }) => {
                let empty = again(CondPass::Empty)?;
                let v = super::guidance_fns::perp_neg(
                    &flat(cond)?,
                    &flat(uncond)?,
                    &flat(&empty)?,
                    neg_scale,
                    cfg,
                );
                // `x − (x − perp_neg(...))`, as cfg_function applies a sampler_cfg_function.
                let v = flat(x)?.iter().zip(v).map(|(x, p)| x - (x - p)).collect();
                Tensor::from_vec(v, dims.as_slice(), cond.device())?
            }
        };
        self.post_cfg_with(out, cond, uncond, cfg, x, sigma, again)
    }

    /// The post-CFG functions on a CFG result `out` (what `cfg_function` runs after the
    /// combine, and PerpNegGuider after its own), `cond` / `uncond` the predictions they see.
    #[allow(clippy::too_many_arguments)]
    pub fn post_cfg_with(
        &self,
        mut out: Tensor,
        cond: &Tensor,
        uncond: &Tensor,
        cfg: f64,
        x: &Tensor,
        sigma: f64,
        again: &mut dyn FnMut(CondPass<'_>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let dims = cond.dims().to_vec();
        for p in &self.post_cfg {
            out = match p {
                &PostCfg::CfgNorm { strength } => {
                    let v = cfg_norm(&flat(cond)?, &flat(&out)?, &dims, strength);
                    Tensor::from_vec(v, dims.as_slice(), cond.device())?
                }
                PostCfg::CfgZeroStar => {
                    let v = cfg_zero_star(
                        &flat(cond)?,
                        &flat(uncond)?,
                        &flat(&out)?,
                        &flat(x)?,
                        cfg,
                        dims[0],
                    );
                    Tensor::from_vec(v, dims.as_slice(), cond.device())?
                }
                &PostCfg::Pag { scale } => {
                    if scale == 0.0 {
                        out
                    } else {
                        let pag = again(CondPass::Perturbed)?;
                        (out + ((cond - pag)? * scale)?)?
                    }
                }
                PostCfg::SkipLayerGuidance {
                    layers,
                    single_layers,
                    scale,
                    sigma_start,
                    sigma_end,
                    rescaling_scale,
                } => {
                    // `sigma[0].item()` against Python floats.
                    let s = sigma as f32 as f64;
                    if *scale > 0.0 && s >= *sigma_end && s <= *sigma_start {
                        let slg = again(CondPass::SkipBlocks {
                            double: layers,
                            single: single_layers,
                        })?;
                        let r = (&out + ((cond - slg)? * (*scale as f32 as f64))?)?;
                        if *rescaling_scale != 0.0 {
                            // factor = cond.std() / r.std() (whole tensors, unbiased)
                            let (c, v) = (flat(cond)?, flat(&r)?);
                            let factor = std_unbiased(&c) / std_unbiased(&v);
                            let rs = *rescaling_scale as f32;
                            let factor = rs * factor + (1.0 - *rescaling_scale) as f32;
                            let v = v.iter().map(|x| x * factor).collect();
                            Tensor::from_vec(v, dims.as_slice(), cond.device())?
                        } else {
                            r
                        }
                    } else {
                        out
                    }
                }
                &PostCfg::EpsilonScaling { factor } => {
                    let f = factor as f32;
                    let v: Vec<f32> = flat(x)?
                        .iter()
                        .zip(flat(&out)?)
                        .map(|(x, d)| x - (x - d) / f)
                        .collect();
                    Tensor::from_vec(v, dims.as_slice(), cond.device())?
                }
                &PostCfg::Sag { scale, blur_sigma } => {
                    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
                    if dims.len() != 4 || h.min(w) <= 4 {
                        // "skip when too small to add padding"
                        out
                    } else {
                        let slot = std::sync::Mutex::new(None);
                        again(CondPass::CaptureUncondAttention(&slot))?;
                        let attn = slot
                            .into_inner()
                            .map_err(|_| candle_core::Error::Msg("SAG: a run panicked".into()))?
                            .ok_or_else(|| {
                                candle_core::Error::Msg(
                                    "SelfAttentionGuidance: the model has no middle-block \
                                     self-attention to guide with (a UNet's)"
                                        .into(),
                                )
                            })?;
                        let ad = attn.dims3()?;
                        let d4 = [dims[0], dims[1], h, w];
                        let degraded = super::sag::create_blur_map(
                            &flat(uncond)?,
                            d4,
                            &flat(&attn)?,
                            [ad.0, ad.1, ad.2],
                            blur_sigma,
                            1.0,
                        )
                        .map_err(|e| {
                            candle_core::Error::Msg(format!("SelfAttentionGuidance: {e}"))
                        })?;
                        // `degraded + x − uncond_pred`, left to right in float32.
                        let noised: Vec<f32> = degraded
                            .iter()
                            .zip(flat(x)?)
                            .zip(flat(uncond)?)
                            .map(|((d, x), u)| (d + x) - u)
                            .collect();
                        let noised = Tensor::from_vec(noised, dims.as_slice(), cond.device())?;
                        let sag = flat(&again(CondPass::UncondAt(&noised))?)?;
                        let sc = scale as f32;
                        let v = flat(&out)?
                            .iter()
                            .zip(&degraded)
                            .zip(sag)
                            .map(|((o, d), s)| o + (d - s) * sc)
                            .collect();
                        Tensor::from_vec(v, dims.as_slice(), cond.device())?
                    }
                }
                PostCfg::Mahiro => {
                    let v = super::guidance_fns::mahiro(
                        &flat(cond)?,
                        &flat(uncond)?,
                        &flat(&out)?,
                        cfg,
                        &dims,
                    );
                    Tensor::from_vec(v, dims.as_slice(), cond.device())?
                }
            };
        }
        Ok(out)
    }
}

/// `x − rescale_cfg(args)` of RescaleCFG on flat `[B, …]` buffers (what `cfg_function`
/// returns with that `sampler_cfg_function`).
pub fn rescale_cfg(
    cond_pred: &[f32],
    uncond_pred: &[f32],
    cond_scale: f64,
    x_orig: &[f32],
    sigma: f32,
    multiplier: f64,
    batch: usize,
) -> Vec<f32> {
    let s2 = sigma * sigma + 1.0;
    let sq = (sigma * sigma + 1.0).torch_sqrt();
    let cs = cond_scale as f32;
    let (m, q) = (multiplier as f32, (1.0 - multiplier) as f32);
    let n = cond_pred.len();
    // args["cond"] = x − cond_pred, args["uncond"] = x − uncond_pred
    let mut xs = vec![0f32; n];
    let mut cv = vec![0f32; n];
    let mut xcfg = vec![0f32; n];
    for k in 0..n {
        let xo = x_orig[k];
        let x = xo / s2;
        let c_arg = xo - cond_pred[k];
        let u_arg = xo - uncond_pred[k];
        let c = ((x - (xo - c_arg)) * sq) / sigma;
        let u = ((x - (xo - u_arg)) * sq) / sigma;
        xs[k] = x;
        cv[k] = c;
        xcfg[k] = u + cs * (c - u);
    }
    let per = n / batch.max(1);
    let mut out = vec![0f32; n];
    for b in 0..batch {
        let r = b * per..(b + 1) * per;
        let ratio = std_unbiased(&cv[r.clone()]) / std_unbiased(&xcfg[r.clone()]);
        for k in r {
            let rescaled = xcfg[k] * ratio;
            let fin = m * rescaled + q * xcfg[k];
            let ret = x_orig[k] - (xs[k] - fin * sigma / sq);
            out[k] = x_orig[k] - ret;
        }
    }
    out
}

/// CFGNorm's post-CFG function on flat `[B, C, …]` buffers: `pred · clamp(‖cond‖ /
/// (‖pred‖ + 1e-8), 0, 1) · strength` with norms over the channels.
pub fn cfg_norm(cond: &[f32], pred: &[f32], dims: &[usize], strength: f64) -> Vec<f32> {
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let st = strength as f32;
    let mut out = vec![0f32; pred.len()];
    for n in 0..b {
        for p in 0..rest {
            let idx = |ch: usize| (n * c + ch) * rest + p;
            let (mut nc, mut np) = (0f32, 0f32);
            for ch in 0..c {
                nc += cond[idx(ch)] * cond[idx(ch)];
                np += pred[idx(ch)] * pred[idx(ch)];
            }
            let scale = (nc.sqrt() / (np.sqrt() + 1e-8)).clamp(0.0, 1.0);
            for ch in 0..c {
                out[idx(ch)] = pred[idx(ch)] * scale * st;
            }
        }
    }
    out
}

/// CFGZeroStar's post-CFG function on flat `[B, …]` buffers:
/// `out + u·(α − 1) + cfg·u·(1 − α)` with α = ⟨x − c, x − u⟩ / (‖x − u‖² + 1e-8) per sample.
pub fn cfg_zero_star(
    cond: &[f32],
    uncond: &[f32],
    out: &[f32],
    x: &[f32],
    cfg: f64,
    batch: usize,
) -> Vec<f32> {
    let per = out.len() / batch.max(1);
    let gs = cfg as f32;
    let mut res = vec![0f32; out.len()];
    for b in 0..batch {
        let r = b * per..(b + 1) * per;
        let (mut dot, mut sq) = (0f64, 0f64);
        for k in r.clone() {
            let p = x[k] - cond[k];
            let n = x[k] - uncond[k];
            dot += (p * n) as f64;
            sq += (n * n) as f64;
        }
        let alpha = dot as f32 / (sq as f32 + 1e-8);
        for k in r {
            let u = uncond[k];
            res[k] = (out[k] + u * (alpha - 1.0)) + (gs * u) * (1.0 - alpha);
        }
    }
    res
}
