//! ComfyUI's sampling-time conditioning (`comfy/samplers.py`, `comfy/conds.py`;
//! numerics.md §4.3): what a CONDITIONING entry's options (area, mask, strength, timestep
//! range, inpaint concat) mean while sampling, and `calc_cond_batch`, which evaluates every
//! cond on its region, batches the ones that fit together into one model call and returns
//! the weighted average prediction per cond list.
//!
//! Steps, as ComfyUI runs them:
//! 1. [`prepare`] once per sampling run (`process_conds`): percentage areas become latent
//!    units, masks are resized to the latent, "mask bounds" sets the area from the mask,
//!    start/end percentages become sigmas, the model conds (cross-attention, and for an
//!    inpainting UNet the 5 concat channels) are built, and every area cond gets an
//!    "opposite" entry with the same area in the other list.
//! 2. [`calc_cond_batch`] at every model evaluation.
//!
//! ControlNets ride on the conds (ComfyUI's `control` key): a cond's [`ControlLink`] is
//! run for each batch it is in (`get_control`, by the model's [`CondModel::apply_conds`]),
//! conds batch only with conds holding the same link, and [`prepare`] gives negative conds
//! the positive's links for `ControlNetApply` (`control_apply_to_uncond`).

use candle_core::{DType, Device, Result, Tensor};

use super::masks::{
    repeat_to_batch_size, resize_to_batch_size, round_half_even, upscale_bilinear_center,
};
use super::model_sampling::ModelSampling;
use crate::image_ops::bilinear_nchw;
use crate::models::controlnet::ControlLink;
use crate::models::flux::RefLatentsMethod;
use std::sync::Arc;

/// Where a cond applies (`"area"`), as ConditioningSetArea / ...Percentage set it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CondArea {
    /// (h, w, y, x) in latent units (pixels / 8).
    Latent {
        h: usize,
        w: usize,
        y: usize,
        x: usize,
    },
    /// Fractions of the latent's height/width, resolved when sampling starts.
    Percentage { h: f64, w: f64, y: f64, x: f64 },
}

/// The options a CONDITIONING entry carries next to its tensor (the keys of ComfyUI's
/// `[cond, {...}]` dict that change sampling). `None` = the key is absent.
#[derive(Debug, Clone, Default)]
pub struct CondOptions {
    pub area: Option<CondArea>,
    /// `strength`: scales the entry's weight in the average (default 1).
    pub strength: Option<f64>,
    /// `set_area_to_bounds`: with a mask, the area becomes the mask's bounding box.
    pub set_area_to_bounds: Option<bool>,
    /// `mask` [B, H, W] (any size; resized to the latent when sampling starts).
    pub mask: Option<Tensor>,
    /// `mask_strength`: multiplies the mask (default 1).
    pub mask_strength: Option<f64>,
    /// `start_percent` / `end_percent` of the schedule in which the entry is used.
    pub start_percent: Option<f64>,
    pub end_percent: Option<f64>,
    /// InpaintModelConditioning: the masked image's (unscaled) latent and the pixel mask,
    /// used by inpainting UNets (9 input channels), ignored by others.
    pub concat_latent_image: Option<Tensor>,
    pub concat_mask: Option<Tensor>,
    /// CLIPTextEncodeSDXL's size conditioning (pixels); absent keys default to the latent
    /// size (`encode_model_conds`), crops to 0.
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub crop_w: Option<f64>,
    pub crop_h: Option<f64>,
    pub target_width: Option<f64>,
    pub target_height: Option<f64>,
    /// CLIPTextEncodeSDXLRefiner's `aesthetic_score` (default 6 positive, 2.5 negative).
    pub aesthetic_score: Option<f64>,
    /// Flux's distilled guidance, a model input (`guidance` key, set by FluxGuidance and
    /// CLIPTextEncodeFlux; FluxDisableGuidance sets it to None: [`Guidance::Disabled`]).
    pub guidance: Option<Guidance>,
    /// Flux Kontext's `reference_latents` (ReferenceLatent; unscaled latents [1, C, h, w])
    /// and `reference_latents_method` (FluxKontextMultiReferenceLatentMethod).
    pub reference_latents: Vec<Tensor>,
    pub reference_latents_method: Option<RefLatentsMethod>,
    /// `control`: the ControlNet (chain) applied to this entry (ControlNetApply*).
    pub control: Option<Arc<ControlLink>>,
    /// `control_apply_to_uncond`: ControlNetApply sets it (negative conds without a
    /// ControlNet get the positive's), ControlNetApplyAdvanced clears it.
    pub control_apply_to_uncond: Option<bool>,
}

/// The `guidance` key of a Flux conditioning: a strength, or explicitly none
/// (FluxDisableGuidance), which differs from an absent key for guidance-distilled models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guidance {
    Value(f64),
    Disabled,
}

/// What a family's `extra_conds` sees of one cond when sampling starts (the parameters
/// ComfyUI's `encode_model_conds` passes): its pooled output, its options, the latent's
/// size and which list it is in.
pub struct ExtraCondInput<'a> {
    pub pooled: Option<&'a Tensor>,
    pub opts: &'a CondOptions,
    /// Latent (h, w); pixels are 8× these.
    pub latent_hw: (usize, usize),
    /// `prompt_type == "positive"` (list 0).
    pub positive: bool,
    /// The latent's shape [B, C, h, w] (`noise`'s shape).
    pub shape: [usize; 4],
    /// The prepared noise mask of masked denoising, if any (`denoise_mask`).
    pub denoise_mask: Option<&'a Tensor>,
}

/// The model conds a family's `extra_conds` builds for one cond, beyond cross-attention.
#[derive(Debug, Clone, Default)]
pub struct ModelConds {
    /// `y`: SDXL's ADM vector, Flux's pooled text [1, D].
    pub y: Option<Tensor>,
    /// `c_concat` built by the family (Flux Fill/Canny/Depth) [b, c, h, w]; inpainting
    /// UNets get theirs from [`PrepareContext::inpaint_model`].
    pub concat: Option<Tensor>,
    /// Flux's `guidance` (`FloatTensor([g])`, f32).
    pub guidance: Option<f32>,
    /// Flux Kontext's `ref_latents` (model space) and their placement.
    pub ref_latents: Vec<Tensor>,
    pub ref_method: RefLatentsMethod,
    /// `c_crossattn` is a `CONDRegular` (Flux, SD3): conds of different token lengths are
    /// not batched together (a UNet's `CONDCrossAttn` repeats tokens up to their LCM).
    pub regular_cross_attn: bool,
}

/// A family's hook that builds the cond's [`ModelConds`] (SDXL's ADM vector, Flux's pooled
/// vector, guidance, reference latents, concat).
pub type ExtraConds<'a> = &'a dyn Fn(&ExtraCondInput) -> Result<ModelConds>;

/// One CONDITIONING entry as [`prepare`] takes it.
#[derive(Clone, Copy)]
pub struct CondInput<'a> {
    /// The cross-attention tensor [1, T, D].
    pub cross_attn: &'a Tensor,
    pub pooled: Option<&'a Tensor>,
    pub opts: &'a CondOptions,
}

/// One cond ready for sampling (areas resolved, model conds built).
#[derive(Debug, Clone)]
pub struct PreparedCond {
    /// `c_crossattn` [b, T, D].
    cross_attn: Tensor,
    /// `c_concat` [B, 5, h, w] for inpainting UNets.
    concat: Option<Tensor>,
    /// `y`, guidance, reference latents (and the family's concat, merged into `concat`).
    model: ModelConds,
    /// (h, w, y, x) in latent units.
    area: Option<[usize; 4]>,
    strength: f64,
    /// [mb, h, w] at the latent size.
    mask: Option<Tensor>,
    mask_strength: f64,
    sigma_start: Option<f64>,
    sigma_end: Option<f64>,
    control: Option<Arc<ControlLink>>,
    control_apply_to_uncond: bool,
}

/// What [`prepare`] needs to know about the run.
pub struct PrepareContext<'a> {
    /// The latent's shape [B, C, h, w].
    pub shape: [usize; 4],
    pub sampling: &'a ModelSampling,
    /// The model-space latent the run starts from (`latent_image` of encode_model_conds).
    pub latent_image: &'a Tensor,
    /// The prepared noise mask [B, C, h, w] of masked denoising, if any.
    pub denoise_mask: Option<&'a Tensor>,
    /// The UNet takes the inpainting concat (mask + masked latent) as 5 extra channels.
    pub inpaint_model: bool,
    /// The family's `extra_conds` (None: the model takes no `y`).
    pub extra_conds: Option<ExtraConds<'a>>,
    /// The family's latent format's `process_in`, for the inpaint concat image.
    pub process_in: &'a dyn Fn(&Tensor) -> Result<Tensor>,
}

/// The model inputs of one batched call beyond `x` (see [`CondModel::apply_conds`]).
#[derive(Debug, Clone, Copy)]
pub struct BatchConds<'a> {
    /// Cross-attention context [n, T, D].
    pub context: &'a Tensor,
    /// Concat channels [n, c, h, w].
    pub concat: Option<&'a Tensor>,
    /// `y` [n, adm].
    pub y: Option<&'a Tensor>,
    /// Flux guidance [n].
    pub guidance: Option<&'a Tensor>,
    /// Flux Kontext reference latents, each [n, C, h, w].
    pub ref_latents: &'a [Tensor],
    pub ref_method: RefLatentsMethod,
    /// The batch's ControlNet (every cond of a batch holds the same one).
    pub control: Option<&'a ControlLink>,
    /// How many conds were batched (`len(cond_or_uncond)`; the batch is this many chunks).
    pub batched_number: usize,
}

/// The model as calc_cond_batch sees it: `apply_model` returning denoised predictions.
pub trait CondModel {
    /// Denoised prediction for `x` [n, C, h, w] at `sigma`, with cross-attention context
    /// [n, T, D], for inpainting UNets the concat channels [n, 5, h, w], and for models
    /// with an ADM input its vector `y` [n, adm].
    fn apply(
        &self,
        x: &Tensor,
        sigma: f64,
        context: &Tensor,
        concat: Option<&Tensor>,
        y: Option<&Tensor>,
    ) -> Result<Tensor>;

    /// [`CondModel::apply`] with every model cond; models that take guidance or reference
    /// latents (Flux) override it. calc_cond_batch calls this one.
    fn apply_conds(&self, x: &Tensor, sigma: f64, c: &BatchConds) -> Result<Tensor> {
        self.apply(x, sigma, c.context, c.concat, c.y)
    }
}

/// SD1's latent values of a blank (zero) image, per channel (`blank_inpaint_image_like`).
const BLANK_INPAINT_LATENT: [f32; 4] = [0.8223, -0.6876, 0.6364, 0.1380];

fn resolve_area(area: CondArea, h: usize, w: usize) -> [usize; 4] {
    match area {
        CondArea::Latent { h, w, y, x } => [h, w, y, x],
        CondArea::Percentage {
            h: ph,
            w: pw,
            y: py,
            x: px,
        } => [
            // Python's round (half to even) on floats.
            (ph * h as f64).round_ties_even().max(1.0) as usize,
            (pw * w as f64).round_ties_even().max(1.0) as usize,
            (py * h as f64).round_ties_even() as usize,
            (px * w as f64).round_ties_even() as usize,
        ],
    }
}

/// The mask at the latent size as [mb, h, w].
fn resize_cond_mask(mask: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?;
    let m = match m.rank() {
        2 => m.unsqueeze(0)?,
        3 => m,
        r => candle_core::bail!("a conditioning mask must be [B, H, W], got {r} dimensions"),
    };
    let (_, mh, mw) = m.dims3()?;
    if (mh, mw) == (h, w) {
        return Ok(m);
    }
    bilinear_nchw(&m.unsqueeze(1)?, h, w)?.squeeze(1)
}

/// `get_mask_aabb` of `max(|mask|)` over the batch: the area (h ≥ 8, w ≥ 8, y, x), or
/// (8, 8, 0, 0) for an empty mask.
fn mask_bounds_area(mask: &Tensor) -> Result<[usize; 4]> {
    let (_, h, w) = mask.dims3()?;
    let bounds = mask.abs()?.max(0)?.flatten_all()?.to_vec1::<f32>()?;
    let (mut y0, mut x0, mut y1, mut x1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            if bounds[y * w + x] != 0.0 {
                y0 = y0.min(y);
                x0 = x0.min(x);
                y1 = y1.max(y);
                x1 = x1.max(x);
            }
        }
    }
    if y0 == usize::MAX {
        return Ok([8, 8, 0, 0]);
    }
    Ok([(y1 - y0 + 1).max(8), (x1 - x0 + 1).max(8), y0, x0])
}

/// `BaseModel.concat_cond` for an inpainting UNet: [mask (1), masked latent (4)].
fn inpaint_concat(opts: &CondOptions, ctx: &PrepareContext) -> Result<Tensor> {
    let [b, c, h, w] = ctx.shape;
    let mask = match opts.concat_mask.as_ref().or(ctx.denoise_mask) {
        Some(m) => {
            let m = m.to_dtype(DType::F32)?;
            // [B, C, h, w] denoise masks keep their first channel.
            let m = if m.rank() == 4 { m.narrow(1, 0, 1)? } else { m };
            let dims = m.dims().to_vec();
            let (mh, mw) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            let m = m.reshape(((), 1, mh, mw))?;
            let m = if (mh, mw) != (h, w) {
                upscale_bilinear_center(&m, h, w)?
            } else {
                m
            };
            Some(resize_to_batch_size(&round_half_even(&m)?, b)?)
        }
        None => None,
    };
    let image = match &opts.concat_latent_image {
        Some(img) => (ctx.process_in)(&img.to_dtype(DType::F32)?)?,
        None => ctx.latent_image.to_dtype(DType::F32)?,
    };
    let image = if image.dims()[1..] != [c, h, w] {
        upscale_bilinear_center(&image, h, w)?
    } else {
        image
    };
    let image = resize_to_batch_size(&image, b)?;
    let (mask, image) = match mask {
        Some(m) => (m, image),
        None => {
            let blank: Vec<f32> = (0..b)
                .flat_map(|_| BLANK_INPAINT_LATENT.iter().flat_map(|&v| vec![v; h * w]))
                .collect();
            (
                Tensor::ones((b, 1, h, w), DType::F32, &Device::Cpu)?,
                Tensor::from_vec(blank, (b, 4, h, w), &Device::Cpu)?,
            )
        }
    };
    Tensor::cat(&[&mask, &image], 1)
}

/// `model_base.Flux.concat_cond`: the extra input channels of Flux models whose `img_in`
/// takes more than the latent (`in_channels` > `out_channels`): the control/masked image's
/// latent (`concat_latent_image`, or zeros) in model space for Canny/Depth (≤ 2× the latent
/// channels), plus for Fill the pixel mask (`concat_mask`, else the denoise mask, else ones)
/// folded 8×8 into 64 channels. `None` for plain models.
pub fn flux_concat(
    opts: &CondOptions,
    in_channels: usize,
    out_channels: usize,
    shape: [usize; 4],
    denoise_mask: Option<&Tensor>,
    process_in: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    if in_channels <= out_channels {
        return Ok(None);
    }
    let [b, c, h, w] = shape;
    let image = match &opts.concat_latent_image {
        Some(img) => upscale_bilinear_center(&img.to_dtype(DType::F32)?, h, w)?,
        None => Tensor::zeros((b, c, h, w), DType::F32, &Device::Cpu)?,
    };
    let image = process_in(&resize_to_batch_size(&image, b)?)?;
    if in_channels <= out_channels * 2 {
        return Ok(Some(image));
    }
    let mask = match opts.concat_mask.as_ref().or(denoise_mask) {
        Some(m) => {
            let m = m.to_dtype(DType::F32)?;
            let dims = m.dims().to_vec();
            let (mh, mw) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            match m.rank() {
                4 => m,
                _ => m.reshape(((), 1, mh, mw))?,
            }
        }
        None => Tensor::ones((b, 1, h, w), DType::F32, &Device::Cpu)?,
    };
    let mask = mask.mean_keepdim(1)?;
    let mask = upscale_bilinear_center(&mask, h * 8, w * 8)?;
    let n = mask.dim(0)?;
    let mask = mask
        .reshape((n, h, 8, w, 8))?
        .permute((0, 2, 4, 1, 3))?
        .reshape((n, 64, h, w))?;
    let mask = resize_to_batch_size(&mask, b)?;
    Ok(Some(Tensor::cat(&[&image, &mask], 1)?))
}

/// Conds of every list ready for [`calc_cond_batch`] (list 0 = positive, 1 = negative).
#[derive(Debug, Clone)]
pub struct PreparedConds {
    pub lists: Vec<Vec<PreparedCond>>,
}

/// `process_conds`: see the module docs. `lists[0]` is the positive list.
pub fn prepare(lists: &[Vec<CondInput>], ctx: &PrepareContext) -> Result<PreparedConds> {
    let [_, _, h, w] = ctx.shape;
    let mut out: Vec<Vec<PreparedCond>> = Vec::with_capacity(lists.len());
    for (li, list) in lists.iter().enumerate() {
        let mut prepared = Vec::with_capacity(list.len());
        for input in list {
            let (cross_attn, opts) = (input.cross_attn, input.opts);
            let mut area = opts.area.map(|a| resolve_area(a, h, w));
            let mask = match &opts.mask {
                Some(m) => {
                    let m = resize_cond_mask(m, h, w)?;
                    if opts.set_area_to_bounds == Some(true) {
                        area = Some(mask_bounds_area(&m)?);
                    }
                    Some(m)
                }
                None => None,
            };
            let sampling = ctx.sampling;
            let mut model = match ctx.extra_conds {
                Some(f) => f(&ExtraCondInput {
                    pooled: input.pooled,
                    opts,
                    latent_hw: (h, w),
                    positive: li == 0,
                    shape: ctx.shape,
                    denoise_mask: ctx.denoise_mask,
                })?,
                None => ModelConds::default(),
            };
            let concat = if ctx.inpaint_model {
                Some(inpaint_concat(opts, ctx)?)
            } else {
                model.concat.take()
            };
            prepared.push(PreparedCond {
                cross_attn: cross_attn.to_dtype(DType::F32)?,
                concat,
                model,
                area,
                strength: opts.strength.unwrap_or(1.0),
                mask,
                mask_strength: opts.mask_strength.unwrap_or(1.0),
                sigma_start: opts.start_percent.map(|p| sampling.percent_to_sigma(p)),
                sigma_end: opts.end_percent.map(|p| sampling.percent_to_sigma(p)),
                control: opts.control.clone(),
                control_apply_to_uncond: opts.control_apply_to_uncond == Some(true),
            });
        }
        out.push(prepared);
    }
    // Every area cond gets an opposite entry with the same area in each other list.
    for k in 0..out.len() {
        let mut i = 0;
        while i < out[k].len() {
            let c = out[k][i].clone();
            for (kk, other) in out.iter_mut().enumerate() {
                if kk != k {
                    add_same_area_if_none(other, &c);
                }
            }
            i += 1;
        }
    }
    // ControlNetApply: negative conds without a ControlNet get the positive's.
    if out.len() > 1 {
        let positive: Vec<PreparedCond> = out[0]
            .iter()
            .filter(|c| c.control_apply_to_uncond)
            .cloned()
            .collect();
        for other in out.iter_mut().skip(1) {
            fill_control_to_uncond(&positive, other);
        }
    }
    Ok(PreparedConds { lists: out })
}

/// `apply_empty_x_to_equal_area(positive_with_apply_to_uncond, uncond, 'control', ...)`:
/// unless an area-less uncond already has a ControlNet, the i-th area-less positive
/// ControlNet goes to area-less uncond `i % n`.
fn fill_control_to_uncond(conds: &[PreparedCond], uncond: &mut [PreparedCond]) {
    let cond_cnets: Vec<&Arc<ControlLink>> = conds
        .iter()
        .filter(|c| c.area.is_none())
        .filter_map(|c| c.control.as_ref())
        .collect();
    if uncond
        .iter()
        .any(|u| u.area.is_none() && u.control.is_some())
    {
        return;
    }
    let uncond_other: Vec<usize> = (0..uncond.len())
        .filter(|&i| uncond[i].area.is_none() && uncond[i].control.is_none())
        .collect();
    if uncond_other.is_empty() {
        return;
    }
    // ComfyUI tests the snapshot taken before the loop (never holding a ControlNet), so a
    // later ControlNet replaces an earlier one on the same uncond.
    for (x, cnet) in cond_cnets.into_iter().enumerate() {
        let t = uncond_other[x % uncond_other.len()];
        uncond[t].control = Some(cnet.clone());
    }
}

/// `area_inside(a, cmp)`: a lies within cmp.
fn area_inside(a: &[usize; 4], cmp: &[usize; 4]) -> bool {
    a[2] >= cmp[2]
        && a[3] >= cmp[3]
        && a[0] + a[2] <= cmp[0] + cmp[2]
        && a[1] + a[3] <= cmp[1] + cmp[3]
}

/// `create_cond_with_same_area_if_none(conds, c)`: unless `conds` already has an entry
/// with c's area, add a copy of c that takes its model conds (text) from the smallest
/// entry of `conds` containing c's area (or the first area-less one).
fn add_same_area_if_none(conds: &mut Vec<PreparedCond>, c: &PreparedCond) {
    let Some(c_area) = c.area else { return };
    let mut smallest: Option<usize> = None;
    for (i, x) in conds.iter().enumerate() {
        match x.area {
            Some(a) => {
                if area_inside(&c_area, &a) {
                    smallest = match smallest {
                        None => Some(i),
                        Some(s) => match conds[s].area {
                            None => Some(i),
                            Some(sa) if sa[0] * sa[1] > a[0] * a[1] => Some(i),
                            Some(_) => Some(s),
                        },
                    };
                }
            }
            None => {
                if smallest.is_none() {
                    smallest = Some(i);
                }
            }
        }
    }
    let Some(s) = smallest else { return };
    if conds[s].area == Some(c_area) {
        return;
    }
    let mut out = c.clone();
    out.cross_attn = conds[s].cross_attn.clone();
    out.concat = conds[s].concat.clone();
    out.model = conds[s].model.clone();
    conds.push(out);
}

/// One cond evaluated at this step (`get_area_and_mult`).
struct CondRun {
    input_x: Tensor,
    /// [B, C, ha, wa] weights.
    mult: Tensor,
    cross_attn: Tensor,
    concat: Option<Tensor>,
    y: Option<Tensor>,
    /// [b] guidance.
    guidance: Option<Tensor>,
    /// Each [b, C, h, w].
    ref_latents: Vec<Tensor>,
    ref_method: RefLatentsMethod,
    regular_cross_attn: bool,
    control: Option<Arc<ControlLink>>,
    /// (h, w, y, x) clamped to the latent, or the whole latent.
    area: [usize; 4],
    list: usize,
}

fn area_and_mult(c: &PreparedCond, x: &Tensor, sigma: f64, list: usize) -> Result<Option<CondRun>> {
    let s = sigma as f32;
    if c.sigma_start.is_some_and(|st| s > st as f32) || c.sigma_end.is_some_and(|e| s < e as f32) {
        return Ok(None);
    }
    let (b, ch, h, w) = x.dims4()?;
    let (area, input_x) = match c.area {
        Some([ah, aw, ay, ax]) => {
            if ay >= h || ax >= w {
                candle_core::bail!(
                    "conditioning area at (x {}, y {}) px lies outside the {}x{} px latent",
                    ax * 8,
                    ay * 8,
                    w * 8,
                    h * 8
                );
            }
            let (ah, aw) = (ah.min(h - ay), aw.min(w - ax));
            ([ah, aw, ay, ax], x.narrow(2, ay, ah)?.narrow(3, ax, aw)?)
        }
        None => ([h, w, 0, 0], x.clone()),
    };
    let [ah, aw, ay, ax] = area;
    let strength = c.strength as f32;
    let mult = match &c.mask {
        Some(m) => {
            let mb = m.dim(0)?.min(b);
            let m = m.narrow(0, 0, mb)?.narrow(1, ay, ah)?.narrow(2, ax, aw)?;
            let m = (m * c.mask_strength as f32 as f64)?;
            if b % mb != 0 {
                candle_core::bail!(
                    "a conditioning mask batch of {mb} does not divide the latent batch {b}"
                );
            }
            let m = m.unsqueeze(1)?.repeat((b / mb, ch, 1, 1))?;
            (m * strength as f64)?
        }
        None => {
            // ones·strength, feathered over up to 8 rows/cols on sides not at the border.
            let mut plane = vec![strength; ah * aw];
            if c.area.is_some() {
                let feather =
                    |plane: &mut [f32], len: usize, at_start: bool, at_end: bool, row: bool| {
                        let rr = (8usize).min(len / 4);
                        let scale_line = |plane: &mut [f32], idx: usize, f: f32| {
                            if row {
                                for v in &mut plane[idx * aw..(idx + 1) * aw] {
                                    *v *= f;
                                }
                            } else {
                                for r in 0..ah {
                                    plane[r * aw + idx] *= f;
                                }
                            }
                        };
                        if !at_start {
                            for t in 0..rr {
                                scale_line(plane, t, ((1.0 / rr as f64) * (t + 1) as f64) as f32);
                            }
                        }
                        if !at_end {
                            for t in 0..rr {
                                scale_line(
                                    plane,
                                    len - 1 - t,
                                    ((1.0 / rr as f64) * (t + 1) as f64) as f32,
                                );
                            }
                        }
                    };
                feather(&mut plane, ah, ay == 0, ah + ay >= h, true);
                feather(&mut plane, aw, ax == 0, aw + ax >= w, false);
            }
            Tensor::from_vec(plane, (1, 1, ah, aw), &Device::Cpu)?.repeat((b, ch, 1, 1))?
        }
    };
    let concat = match &c.concat {
        Some(t) => Some(repeat_to_batch_size(
            &t.narrow(2, ay, ah)?.narrow(3, ax, aw)?,
            b,
        )?),
        None => None,
    };
    Ok(Some(CondRun {
        input_x,
        mult,
        cross_attn: repeat_to_batch_size(&c.cross_attn, b)?,
        concat,
        y: match &c.model.y {
            Some(y) => Some(repeat_to_batch_size(y, b)?),
            None => None,
        },
        guidance: match c.model.guidance {
            Some(g) => Some(Tensor::from_vec(vec![g; b], b, &Device::Cpu)?),
            None => None,
        },
        ref_latents: c
            .model
            .ref_latents
            .iter()
            .map(|r| repeat_to_batch_size(r, b))
            .collect::<Result<_>>()?,
        ref_method: c.model.ref_method,
        regular_cross_attn: c.model.regular_cross_attn,
        control: c.control.clone(),
        area,
        list,
    }))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b).max(1) * b
}

/// `can_concat_cond`: same input shape, cross-attention lengths whose LCM is at most 4× the
/// shorter (CONDCrossAttn.can_concat), same concat shape.
fn can_concat(a: &CondRun, b: &CondRun) -> bool {
    if a.input_x.dims() != b.input_x.dims() {
        return false;
    }
    // `objects_concatable(c1.control, c2.control)`: the same ControlNet object or none.
    match (&a.control, &b.control) {
        (None, None) => {}
        (Some(p), Some(q)) if Arc::ptr_eq(p, q) => {}
        _ => return false,
    }
    let (s1, s2) = (a.cross_attn.dims(), b.cross_attn.dims());
    if s1 != s2 {
        if a.regular_cross_attn || b.regular_cross_attn {
            return false;
        }
        if s1[0] != s2[0] || s1[2] != s2[2] {
            return false;
        }
        if lcm(s1[1], s2[1]) / s1[1].min(s2[1]) > 4 {
            return false;
        }
    }
    let same = |p: &Option<Tensor>, q: &Option<Tensor>| match (p, q) {
        (None, None) => true,
        (Some(x), Some(y)) => x.dims() == y.dims(),
        _ => false,
    };
    let same_refs = a.ref_latents.len() == b.ref_latents.len()
        && a.ref_latents
            .iter()
            .zip(&b.ref_latents)
            .all(|(p, q)| p.dims() == q.dims())
        && (a.ref_latents.is_empty() || a.ref_method == b.ref_method);
    same(&a.concat, &b.concat) && same(&a.y, &b.y) && same(&a.guidance, &b.guidance) && same_refs
}

/// `CONDCrossAttn.concat`: repeat each along the tokens up to the LCM of the lengths.
fn cat_cross_attn(list: &[&Tensor]) -> Result<Tensor> {
    let l = list.iter().try_fold(0usize, |acc, t| -> Result<usize> {
        let n = t.dim(1)?;
        Ok(if acc == 0 { n } else { lcm(acc, n) })
    })?;
    let padded: Vec<Tensor> = list
        .iter()
        .map(|t| {
            let n = t.dim(1)?;
            if n < l {
                t.repeat((1, l / n, 1))
            } else {
                Ok((*t).clone())
            }
        })
        .collect::<Result<_>>()?;
    Tensor::cat(&padded, 0)
}

/// `calc_cond_batch`: the weighted average prediction of each list at `sigma`
/// (`None` = the list is skipped, e.g. the uncond at cfg 1: its output is zeros).
pub fn calc_cond_batch(
    model: &dyn CondModel,
    lists: &[Option<&[PreparedCond]>],
    x: &Tensor,
    sigma: f64,
) -> Result<Vec<Tensor>> {
    let x = x.to_dtype(DType::F32)?;
    let dims = x.dims4()?;
    let (b, ch, h, w) = dims;
    let n = b * ch * h * w;
    let mut outs = vec![vec![0f32; n]; lists.len()];
    let mut counts = vec![vec![1e-37f32; n]; lists.len()];
    let mut to_run: Vec<CondRun> = Vec::new();
    for (li, list) in lists.iter().enumerate() {
        if let Some(list) = list {
            for c in list.iter() {
                if let Some(r) = area_and_mult(c, &x, sigma, li)? {
                    to_run.push(r);
                }
            }
        }
    }
    while !to_run.is_empty() {
        // Every entry that batches with the first, popped from the back (ComfyUI's order).
        let mut idx: Vec<usize> = (0..to_run.len())
            .filter(|&i| can_concat(&to_run[i], &to_run[0]))
            .collect();
        idx.reverse();
        let batch: Vec<CondRun> = idx.into_iter().map(|i| to_run.remove(i)).collect();
        let xs: Vec<&Tensor> = batch.iter().map(|r| &r.input_x).collect();
        let ctxs: Vec<&Tensor> = batch.iter().map(|r| &r.cross_attn).collect();
        let input = Tensor::cat(&xs, 0)?;
        let context = cat_cross_attn(&ctxs)?;
        let concat = match batch[0].concat {
            Some(_) => {
                let cs: Vec<&Tensor> = batch.iter().filter_map(|r| r.concat.as_ref()).collect();
                Some(Tensor::cat(&cs, 0)?)
            }
            None => None,
        };
        let y = match batch[0].y {
            Some(_) => {
                let ys: Vec<&Tensor> = batch.iter().filter_map(|r| r.y.as_ref()).collect();
                Some(Tensor::cat(&ys, 0)?)
            }
            None => None,
        };
        let guidance = match batch[0].guidance {
            Some(_) => {
                let gs: Vec<&Tensor> = batch.iter().filter_map(|r| r.guidance.as_ref()).collect();
                Some(Tensor::cat(&gs, 0)?)
            }
            None => None,
        };
        let ref_latents = (0..batch[0].ref_latents.len())
            .map(|i| {
                let rs: Vec<&Tensor> = batch.iter().map(|r| &r.ref_latents[i]).collect();
                Tensor::cat(&rs, 0)
            })
            .collect::<Result<Vec<_>>>()?;
        let output = model.apply_conds(
            &input,
            sigma,
            &BatchConds {
                context: &context,
                concat: concat.as_ref(),
                y: y.as_ref(),
                guidance: guidance.as_ref(),
                ref_latents: &ref_latents,
                ref_method: batch[0].ref_method,
                control: batch[0].control.as_deref(),
                batched_number: batch.len(),
            },
        )?;
        for (k, r) in batch.iter().enumerate() {
            let o = output.narrow(0, k * b, b)?.to_dtype(DType::F32)?;
            let o = o.flatten_all()?.to_vec1::<f32>()?;
            let m = r.mult.flatten_all()?.to_vec1::<f32>()?;
            let [ah, aw, ay, ax] = r.area;
            let (out, cnt) = (&mut outs[r.list], &mut counts[r.list]);
            for bc in 0..b * ch {
                for yy in 0..ah {
                    let src = (bc * ah + yy) * aw;
                    let dst = (bc * h + ay + yy) * w + ax;
                    for xx in 0..aw {
                        let mv = m[src + xx];
                        out[dst + xx] += o[src + xx] * mv;
                        cnt[dst + xx] += mv;
                    }
                }
            }
        }
    }
    outs.into_iter()
        .zip(counts)
        .map(|(o, c)| {
            let v: Vec<f32> = o.iter().zip(&c).map(|(a, d)| a / d).collect();
            Tensor::from_vec(v, (b, ch, h, w), &Device::Cpu)
        })
        .collect()
}
