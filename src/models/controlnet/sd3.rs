//! SD3 / SD3.5 ControlNets as ComfyUI 0.3.64 loads and runs them (`comfy/controlnet.py`
//! `load_controlnet_mmdit`, `load_controlnet_sd35`; `comfy/cldm/mmdit.py`,
//! `comfy/cldm/dit_embedder.py`). Both take a *latent* hint (the hint image encoded by the
//! VAE, see [`super::apply`]) and return one residual per MMDiT joint block, added to the x
//! tokens after that block (`control["output"]`).
//!
//! * [`Sd3Kind::Mmdit`], the diffusers SD3 ControlNets (InstantX canny/pose/tile, the
//!   alimama inpaint one): an MMDiT without final layer (`cldm/mmdit.py`) of fewer joint
//!   blocks than the model, plus `pos_embed_input` (the patch embedding of the hint latent)
//!   and one `controlnet_blocks` Linear per block. The pooled vector is zeroed ("weird sd3
//!   controlnet specific stuff"). Block i's output is repeated `depth / blocks` times (one
//!   fewer for the last), so 6 blocks drive 23 of SD3 medium's 24 joint blocks.
//! * [`Sd3Kind::Sd35`], Stability's SD3.5 large blur/canny/depth ControlNets
//!   (`ControlNetEmbedder`): `transformer_blocks.*` are plain adaLN DiT blocks
//!   (self-attention over the x tokens only, no text), the time and pooled-text embedders
//!   of the file, and the *model's* `x_embedder` (ComfyUI's `pre_run` copies it in) plus a
//!   2-d sin-cos position table; block i's output is repeated `ceil(depth / blocks)` times
//!   (19 blocks → 38 residuals for SD3.5 large). The files store `control_type` (0 blur,
//!   1 canny, 2 depth), which picks the hint preprocessing. A "double y" file (its
//!   `y_embedder` square) embeds the pooled vector through the model's `y_embedder` first
//!   and runs every block on the same input.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};

use super::ControlResiduals;
use crate::models::checkpoint::WeightMap;
use crate::models::flux::pad_to_patch_size;
use crate::models::lora::key_map::mmdit_to_diffusers;
use crate::models::mmdit::blocks::{DismantledBlock, JointBlock, MlpEmbedder};
use crate::models::mmdit::Mmdit;
use crate::models::nn::{conv, linear, Conv2d, Linear};
use crate::models::unet::{timestep_embedding, UNET_PREFIX};
use crate::models::{ModelError, Result};
use crate::sampling::model_sampling::linspace_f32;

/// Which of ComfyUI's two SD3 ControlNet classes a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sd3Kind {
    /// diffusers SD3 ControlNet (`comfy.cldm.mmdit.ControlNet`).
    Mmdit,
    /// Stability's SD3.5 ControlNet (`comfy.cldm.dit_embedder.ControlNetEmbedder`).
    Sd35 {
        /// The file's `control_type` (0 blur, 1 canny, 2 depth), −1 when absent.
        control_type: i64,
        /// `y_embedder` square: the pooled vector goes through the model's `y_embedder`
        /// (`orig_y_embedder`) first, the file's x embedder is used, no position table,
        /// and each block sees the same input.
        double_y_emb: bool,
    },
}

/// The hint preprocessing of an SD3.5 ControlNet (`preprocess_image`), applied to the
/// resized hint image before the VAE encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintPreprocess {
    None,
    /// canny (`control_type` 1): `a · 255 · 0.5 + 0.5`.
    Canny,
    /// depth (`control_type` 2): `1 − a`.
    Depth,
}

impl HintPreprocess {
    pub fn apply(&self, a: &Tensor) -> Result<Tensor> {
        Ok(match self {
            HintPreprocess::None => a.clone(),
            HintPreprocess::Canny => (((a * 255.0)? * 0.5)? + 0.5)?,
            HintPreprocess::Depth => (1.0 - a)?,
        })
    }
}

struct Inner {
    kind: Sd3Kind,
    hidden: usize,
    patch_size: usize,
    /// The `depth` of the model the ControlNet was made for (its joint block count).
    main_depth: usize,
    /// Channels of the hint latent (`pos_embed_input`): 16, or 17 for inpaint ControlNets
    /// (a mask channel of ones is appended).
    hint_channels: usize,
    /// The file's own patch embedding (Mmdit kind; SD3.5 "double y" files).
    x_embedder: Option<Conv2d>,
    /// Mmdit kind: the stored position table as a [S, S, hidden] grid (f32), if any.
    pos_embed: Option<Tensor>,
    pos_embed_input: Conv2d,
    t_embedder: MlpEmbedder,
    y_embedder: Option<MlpEmbedder>,
    context_embedder: Option<Linear>,
    joint_blocks: Vec<JointBlock>,
    blocks: Vec<DismantledBlock>,
    controlnet_blocks: Vec<Linear>,
    dtype: DType,
    device: Device,
}

/// A loaded SD3 / SD3.5 ControlNet. Cheap to clone.
#[derive(Clone)]
pub struct Sd3ControlNet(Arc<Inner>);

impl std::fmt::Debug for Sd3ControlNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.0;
        write!(
            f,
            "Sd3ControlNet({:?}, hidden {}, {} blocks for depth {})",
            m.kind,
            m.hidden,
            m.controlnet_blocks.len(),
            m.main_depth
        )
    }
}

/// Whether a state dict is an SD3 ControlNet, and which (ComfyUI's tests in
/// `load_controlnet_state_dict`).
pub fn detect(sd: &WeightMap) -> Option<Sd3Kind> {
    if !sd.contains_key("controlnet_blocks.0.weight")
        || !sd.contains_key("pos_embed_input.proj.weight")
        || sd.contains_key("double_blocks.0.img_attn.norm.key_norm.scale")
    {
        return None;
    }
    if sd.contains_key("transformer_blocks.0.adaLN_modulation.1.bias") {
        Some(Sd3Kind::Sd35 {
            control_type: -1,
            double_y_emb: false,
        })
    } else {
        Some(Sd3Kind::Mmdit)
    }
}

/// How many `{prefix}{i}.` indices the keys have (`count_blocks`).
fn count_blocks(sd: &WeightMap, prefix: &str) -> usize {
    let mut n = 0;
    while sd.keys().any(|k| k.starts_with(&format!("{prefix}{n}."))) {
        n += 1;
    }
    n
}

fn missing(k: &str) -> ModelError {
    ModelError::MissingKey(k.to_string())
}

fn shape(sd: &WeightMap, k: &str) -> Result<Vec<usize>> {
    Ok(sd.get(k).ok_or_else(|| missing(k))?.dims().to_vec())
}

/// `convert_diffusers_mmdit` for an SD3 ControlNet: the diffusers transformer names
/// (`transformer_blocks.i.attn.to_q`, `time_text_embed.*`, `pos_embed.proj`, ...) to
/// ComfyUI's MMDiT names (q/k/v fused into `qkv`, the AdaLayerNormContinuous halves swapped),
/// every original key kept beside them (ComfyUI adds them back; `pos_embed_input.*` and
/// `controlnet_blocks.*` are used under their own names).
fn convert_diffusers(sd: &WeightMap) -> Result<WeightMap> {
    let hidden = shape(sd, "pos_embed.proj.weight")?[0];
    let depth = hidden / 64;
    // (our key) → pieces (row offset, tensor) and whether to swap halves.
    let mut parts: std::collections::BTreeMap<String, (Vec<(usize, Tensor)>, bool)> =
        Default::default();
    for (diffusers, target) in mmdit_to_diffusers(depth) {
        let Some(t) = sd.get(&diffusers) else {
            continue;
        };
        let key = target
            .key
            .strip_prefix(UNET_PREFIX)
            .unwrap_or(&target.key)
            .to_string();
        let e = parts.entry(key).or_insert_with(|| (Vec::new(), false));
        let offset = target.slice.map(|(_, o, _)| o).unwrap_or(0);
        e.0.push((offset, t.clone()));
        e.1 |= target.swap_halves;
    }
    let mut out = sd.clone();
    for (key, (mut pieces, swap)) in parts {
        pieces.sort_by_key(|(o, _)| *o);
        let ts: Vec<&Tensor> = pieces.iter().map(|(_, t)| t).collect();
        let mut t = if ts.len() == 1 {
            ts[0].clone()
        } else {
            Tensor::cat(&ts, 0)?
        };
        if swap {
            let n = t.dim(0)? / 2;
            t = Tensor::cat(&[t.narrow(0, n, n)?, t.narrow(0, 0, n)?], 0)?;
        }
        out.insert(key, t);
    }
    Ok(out)
}

/// `get_2d_sincos_pos_embed_torch(dim, w, h)` (val_center = val_magnitude = 7.5): [h·w, dim]
/// f32, the w half first.
pub fn sincos_pos_embed(dim: usize, w: usize, h: usize, device: &Device) -> Result<Tensor> {
    let small = h.min(w) as f64;
    let (vh, vw) = (h as f64 / small * 7.5, w as f64 / small * 7.5);
    let gh = linspace_f32(-vh + 7.5, vh + 7.5, h);
    let gw = linspace_f32(-vw + 7.5, vw + 7.5, w);
    let half = dim / 2;
    let quarter = half / 2;
    let omega: Vec<f32> = (0..quarter)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / (half as f64 / 2.0) as f32))
        .collect();
    let mut data = Vec::with_capacity(h * w * dim);
    let push_1d = |pos: f32, data: &mut Vec<f32>| {
        data.extend(omega.iter().map(|o| (pos * o).sin()));
        data.extend(omega.iter().map(|o| (pos * o).cos()));
    };
    for &ph in &gh {
        for &pw in &gw {
            push_1d(pw, &mut data);
            push_1d(ph, &mut data);
        }
    }
    Ok(Tensor::from_vec(data, (h * w, dim), device)?)
}

impl Sd3ControlNet {
    /// Builds the ControlNet from a state dict [`detect`] recognised.
    pub fn from_weights(sd: WeightMap, dtype: DType, device: &Device) -> Result<Self> {
        match detect(&sd) {
            Some(Sd3Kind::Mmdit) => Self::mmdit(sd, dtype, device),
            Some(Sd3Kind::Sd35 { .. }) => Self::sd35(sd, dtype, device),
            None => Err(ModelError::NotSupported(
                "not an SD3 ControlNet: no `controlnet_blocks.0.weight` and \
                 `pos_embed_input.proj.weight`"
                    .into(),
            )),
        }
    }

    fn mmdit(sd: WeightMap, dtype: DType, device: &Device) -> Result<Self> {
        let sd = if sd.contains_key("pos_embed.proj.weight") {
            convert_diffusers(&sd)?
        } else {
            sd
        };
        let xs = shape(&sd, "x_embedder.proj.weight")?;
        let (hidden, patch_size) = (xs[0], xs[2]);
        if hidden % 64 != 0 || hidden == 0 {
            return Err(ModelError::NotSupported(format!(
                "the SD3 ControlNet's hidden size {hidden} is not a multiple of 64"
            )));
        }
        let depth = hidden / 64;
        let blocks = count_blocks(&sd, "joint_blocks.");
        if blocks == 0 || blocks > depth {
            return Err(ModelError::NotSupported(format!(
                "the SD3 ControlNet has {blocks} joint blocks for a model of depth {depth}"
            )));
        }
        if sd.contains_key("context_processor.layers.0.attn.qkv.weight") {
            return Err(ModelError::NotSupported(
                "SD3 ControlNets with a context_processor are not supported".into(),
            ));
        }
        let qk_norm = sd.contains_key("joint_blocks.0.context_block.attn.ln_q.weight");
        let hint_channels = shape(&sd, "pos_embed_input.proj.weight")?[1];
        let pos_embed = match sd.get("pos_embed") {
            Some(p) => {
                let n = p.dim(1)?;
                let s = (n as f64).sqrt().round() as usize;
                if s * s != n {
                    return Err(ModelError::NotSupported(format!(
                        "the SD3 ControlNet's pos_embed holds {n} patches, not a square"
                    )));
                }
                Some(p.to_dtype(DType::F32)?.reshape((s, s, hidden))?)
            }
            None => None,
        };
        let vb = crate::models::nn::weights_vb(sd.clone(), dtype, device);
        let has = |k: &str| sd.contains_key(k);
        let joint_blocks = (0..blocks)
            .map(|i| {
                JointBlock::new(
                    &vb.pp(format!("joint_blocks.{i}")),
                    depth,
                    false,
                    qk_norm,
                    has(&format!("joint_blocks.{i}.x_block.attn2.qkv.weight")),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let controlnet_blocks = (0..blocks)
            .map(|i| linear(&vb, &format!("controlnet_blocks.{i}")))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Sd3ControlNet(Arc::new(Inner {
            kind: Sd3Kind::Mmdit,
            hidden,
            patch_size,
            main_depth: depth,
            hint_channels,
            x_embedder: Some(conv(&vb.pp("x_embedder"), "proj", patch_size, 0)?),
            pos_embed,
            pos_embed_input: conv(&vb.pp("pos_embed_input"), "proj", patch_size, 0)?,
            t_embedder: MlpEmbedder::new(&vb.pp("t_embedder"))?,
            y_embedder: if has("y_embedder.mlp.0.weight") {
                Some(MlpEmbedder::new(&vb.pp("y_embedder"))?)
            } else {
                None
            },
            context_embedder: if has("context_embedder.weight") {
                Some(linear(&vb, "context_embedder")?)
            } else {
                None
            },
            joint_blocks,
            blocks: Vec::new(),
            controlnet_blocks,
            dtype,
            device: device.clone(),
        })))
    }

    fn sd35(mut sd: WeightMap, dtype: DType, device: &Device) -> Result<Self> {
        let control_type = match sd.remove("control_type") {
            Some(t) => t
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?
                .first()
                .map(|v| v.round() as i64)
                .unwrap_or(-1),
            None => -1,
        };
        // MMDIT_MAP_BASIC: the diffusers names of the embedders.
        for (ours, theirs) in [
            (
                "t_embedder.mlp.0",
                "time_text_embed.timestep_embedder.linear_1",
            ),
            (
                "t_embedder.mlp.2",
                "time_text_embed.timestep_embedder.linear_2",
            ),
            ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
            ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
            ("x_embedder.proj", "pos_embed.proj"),
            ("context_embedder", "context_embedder"),
        ] {
            for s in ["weight", "bias"] {
                if let Some(t) = sd.remove(&format!("{theirs}.{s}")) {
                    sd.insert(format!("{ours}.{s}"), t);
                }
            }
        }
        let ys = shape(&sd, "y_embedder.mlp.0.weight")?;
        let depth = ys[0] / 64;
        if depth == 0 {
            return Err(ModelError::NotSupported(format!(
                "the SD3.5 ControlNet's y_embedder is {ys:?}: hidden size below 64"
            )));
        }
        let hidden = 64 * depth;
        let double_y_emb = ys[0] == ys[1];
        let blocks = count_blocks(&sd, "transformer_blocks.");
        if blocks == 0 {
            return Err(ModelError::NotSupported(
                "the SD3.5 ControlNet has no transformer_blocks".into(),
            ));
        }
        let pe = shape(&sd, "pos_embed_input.proj.weight")?;
        // ComfyUI builds `pos_embed_input` (and the x embedder) for 16 channels, patch 2.
        if pe != [hidden, 16, 2, 2] {
            return Err(ModelError::NotSupported(format!(
                "the SD3.5 ControlNet's pos_embed_input.proj.weight is {pe:?}; ComfyUI's \
                 SD3.5 ControlNets take a 16-channel latent in 2x2 patches ([{hidden}, 16, 2, 2])"
            )));
        }
        if double_y_emb && !sd.contains_key("x_embedder.proj.weight") {
            return Err(missing("pos_embed.proj.weight"));
        }
        let vb = crate::models::nn::weights_vb(sd.clone(), dtype, device);
        let blocks_v = (0..blocks)
            .map(|i| {
                DismantledBlock::new(
                    &vb.pp(format!("transformer_blocks.{i}")),
                    depth,
                    false,
                    false,
                    false,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let controlnet_blocks = (0..blocks)
            .map(|i| linear(&vb, &format!("controlnet_blocks.{i}")))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Sd3ControlNet(Arc::new(Inner {
            kind: Sd3Kind::Sd35 {
                control_type,
                double_y_emb,
            },
            hidden,
            patch_size: 2,
            main_depth: depth,
            hint_channels: 16,
            x_embedder: if double_y_emb {
                Some(conv(&vb.pp("x_embedder"), "proj", 2, 0)?)
            } else {
                None
            },
            pos_embed: None,
            pos_embed_input: conv(&vb.pp("pos_embed_input"), "proj", 2, 0)?,
            t_embedder: MlpEmbedder::new(&vb.pp("t_embedder"))?,
            y_embedder: Some(MlpEmbedder::new(&vb.pp("y_embedder"))?),
            context_embedder: None,
            joint_blocks: Vec::new(),
            blocks: blocks_v,
            controlnet_blocks,
            dtype,
            device: device.clone(),
        })))
    }

    pub fn kind(&self) -> Sd3Kind {
        self.0.kind
    }

    /// Hidden width (64 × the depth of the model it drives).
    pub fn hidden_size(&self) -> usize {
        self.0.hidden
    }

    /// Channels of the hint latent the network takes (16; 17 for an inpaint ControlNet,
    /// whose last channel is a mask of ones).
    pub fn hint_channels(&self) -> usize {
        self.0.hint_channels
    }

    /// How many ControlNet blocks the file has.
    pub fn num_blocks(&self) -> usize {
        self.0.controlnet_blocks.len()
    }

    /// ComfyUI's latent format for the hint: SD3's, with shift 0 for the diffusers SD3
    /// ControlNets ("SD3 controlnet weirdness").
    pub fn latent_format(&self) -> crate::models::latent_format::LatentFormat {
        let mut f = crate::models::latent_format::LatentFormat::sd3();
        if self.0.kind == Sd3Kind::Mmdit {
            f.shift_factor = Some(0.0);
        }
        f
    }

    /// The hint preprocessing (SD3.5 canny and depth files).
    pub fn preprocess(&self) -> HintPreprocess {
        match self.0.kind {
            Sd3Kind::Sd35 {
                control_type: 1, ..
            } => HintPreprocess::Canny,
            Sd3Kind::Sd35 {
                control_type: 2, ..
            } => HintPreprocess::Depth,
            _ => HintPreprocess::None,
        }
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// The position table for an h×w-patch grid: the stored table's centre crop (Mmdit
    /// kind) or the 2-d sin-cos table.
    fn pos(&self, hp: usize, wp: usize) -> Result<Tensor> {
        let m = &self.0;
        match &m.pos_embed {
            Some(table) => {
                let s = table.dim(0)?;
                if hp > s || wp > s {
                    return Err(ModelError::BadInput(format!(
                        "the latent is {hp}x{wp} patches; this SD3 ControlNet's position \
                         table covers at most {s}x{s}"
                    )));
                }
                let (top, left) = ((s - hp) / 2, (s - wp) / 2);
                Ok(table
                    .narrow(0, top, hp)?
                    .narrow(1, left, wp)?
                    .reshape((1, hp * wp, m.hidden))?
                    .to_device(&m.device)?)
            }
            None => Ok(sincos_pos_embed(m.hidden, wp, hp, &m.device)?.unsqueeze(0)?),
        }
    }

    /// The ControlNet's forward: `x` [B, 16, h, w] (after `calculate_input`), `hint` [b, 16|17,
    /// h, w] (the processed hint latent, b = B or 1), `timesteps` [B], `context` [B, T, D],
    /// `y` [B, 2048] (the pooled text), `model` the MMDiT being sampled (SD3.5 files embed
    /// the latent, or the pooled vector, with its layers). Returns `{"output": [...]}`:
    /// [B, patches, hidden] f32 tensors on the input's device, one per joint block of the
    /// model it drives.
    pub fn forward(
        &self,
        x: &Tensor,
        hint: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
        model: &Mmdit,
    ) -> Result<ControlResiduals> {
        let m = &self.0;
        let out_device = x.device().clone();
        let (b, _, h, w) = x.dims4()?;
        let (_, hc, hh, hw) = hint.dims4()?;
        if hc != m.hint_channels || (hh, hw) != (h, w) {
            return Err(ModelError::BadInput(format!(
                "the SD3 ControlNet hint latent is {:?}; this ControlNet takes {} channels at \
                 the latent's size ({w}x{h})",
                hint.dims(),
                m.hint_channels
            )));
        }
        let model_hidden = model.config().hidden_size();
        if model_hidden != m.hidden {
            return Err(ModelError::BadInput(format!(
                "this SD3 ControlNet is {} wide (for an MMDiT of depth {}), the model being \
                 sampled is {model_hidden} wide ({}): use the ControlNet made for this model",
                m.hidden,
                m.main_depth,
                model.config().variant()
            )));
        }
        let p = m.patch_size;
        let (hp, wp) = (h.div_ceil(p), w.div_ceil(p));
        let xd = x.to_device(&m.device)?.to_dtype(m.dtype)?;
        let patches = |c: &Conv2d, t: &Tensor| -> Result<Tensor> {
            Ok(c.forward(&pad_to_patch_size(t, p)?)?
                .flatten_from(2)?
                .transpose(1, 2)?)
        };
        let ts: Vec<f32> = timesteps
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let ts = if ts.len() == 1 { vec![ts[0]; b] } else { ts };
        let temb = timestep_embedding(&ts, 256, &m.device)?.to_dtype(m.dtype)?;
        let mut c = m.t_embedder.forward(&temb)?;
        let hint = hint.to_device(&m.device)?.to_dtype(m.dtype)?;
        let hint_tokens = patches(&m.pos_embed_input, &hint)?;
        let y = y
            .map(|y| y.to_device(&m.device)?.to_dtype(m.dtype))
            .transpose()?;
        let mut output = Vec::new();
        match m.kind {
            Sd3Kind::Mmdit => {
                let xe = m.x_embedder.as_ref().expect("Mmdit kind has an x_embedder");
                let tokens = patches(xe, &xd)?
                    .broadcast_add(&self.pos(hp, wp)?.to_dtype(m.dtype)?)?
                    .broadcast_add(&hint_tokens)?;
                if let Some(ye) = &m.y_embedder {
                    let y = y.ok_or_else(|| {
                        ModelError::BadInput(
                            "this SD3 ControlNet needs the conditioning's pooled output".into(),
                        )
                    })?;
                    c = (c + ye.forward(&y.zeros_like()?)?)?;
                }
                let mut ctx = context.to_device(&m.device)?.to_dtype(m.dtype)?;
                if ctx.dim(0)? != b {
                    ctx = ctx.repeat((b / ctx.dim(0)?.max(1), 1, 1))?;
                }
                if let Some(ce) = &m.context_embedder {
                    let want = ce.weight().dim(1)?;
                    let got = ctx.dim(2)?;
                    if got != want {
                        return Err(ModelError::BadInput(format!(
                            "the conditioning is {got} channels wide; this SD3 ControlNet's \
                             context_embedder takes {want}"
                        )));
                    }
                    ctx = ce.forward(&ctx)?;
                }
                let n = m.joint_blocks.len();
                let mut xt = tokens;
                let mut ctx = Some(ctx);
                for (i, (blk, cb)) in m.joint_blocks.iter().zip(&m.controlnet_blocks).enumerate() {
                    let cur = ctx.take().ok_or_else(|| {
                        ModelError::BadInput("no context after a joint block".into())
                    })?;
                    let (nc, nx) = blk.forward(&cur, &xt, &c)?;
                    ctx = nc;
                    xt = nx;
                    let out = cb
                        .forward(&xt)?
                        .to_dtype(DType::F32)?
                        .to_device(&out_device)?;
                    let mut count = m.main_depth / n;
                    if i + 1 == n {
                        count = count.saturating_sub(1);
                    }
                    for _ in 0..count {
                        output.push(Some(out.clone()));
                    }
                }
            }
            Sd3Kind::Sd35 { double_y_emb, .. } => {
                let mut tokens = match &m.x_embedder {
                    Some(xe) if double_y_emb => patches(xe, &xd)?,
                    _ => model.embed_patches(x)?.to_dtype(m.dtype)?,
                };
                if !double_y_emb {
                    tokens = tokens.broadcast_add(&self.pos(hp, wp)?.to_dtype(m.dtype)?)?;
                }
                if let (Some(ye), Some(y)) = (&m.y_embedder, y) {
                    let y = if double_y_emb {
                        let orig = model.y_embedder().ok_or_else(|| {
                            ModelError::BadInput(
                                "this SD3.5 ControlNet embeds the pooled text with the model's \
                                 y_embedder, which the model being sampled lacks"
                                    .into(),
                            )
                        })?;
                        orig.forward(&y.to_dtype(model.dtype())?)?
                            .to_dtype(m.dtype)?
                    } else {
                        y
                    };
                    let want = ye.in_features()?;
                    if y.dim(1)? != want {
                        return Err(ModelError::BadInput(format!(
                            "the conditioning's pooled output is {} wide; this SD3.5 \
                             ControlNet's y_embedder takes {want}",
                            y.dim(1)?
                        )));
                    }
                    c = (c + ye.forward(&y)?)?;
                }
                let xt = tokens.broadcast_add(&hint_tokens)?;
                let n = m.blocks.len();
                let repeat = m.main_depth.div_ceil(n);
                let mut cur = xt;
                for (blk, cb) in m.blocks.iter().zip(&m.controlnet_blocks) {
                    let out = blk.forward(&cur, &c)?;
                    let r = cb
                        .forward(&out)?
                        .to_dtype(DType::F32)?
                        .to_device(&out_device)?;
                    if !double_y_emb {
                        cur = out;
                    }
                    for _ in 0..repeat {
                        output.push(Some(r.clone()));
                    }
                }
            }
        }
        Ok(ControlResiduals {
            input: Vec::new(),
            middle: Vec::new(),
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_table_layout() {
        // 2 rows × 3 columns of patches, width 8: [w half (sin, cos), h half (sin, cos)].
        let t = sincos_pos_embed(8, 3, 2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [6, 8]);
        let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
        // Row-major over (h, w): patch (0, 1) has w position 7.5 (the centre of
        // linspace(-3.75, 18.75, 3)) and h position -0.0 (linspace(0, 15, 2)).
        let wpos = 7.5f32;
        assert!((v[1][0] - wpos.sin()).abs() < 1e-6);
        assert!((v[1][2] - wpos.cos()).abs() < 1e-6);
        assert!((v[1][4] - 0f32.sin()).abs() < 1e-6);
        assert!((v[1][6] - 1.0).abs() < 1e-6);
        // omega[1] = 1 / 10000^(1/2) for a quarter of 2 entries.
        assert!((v[1][1] - (wpos * 0.01).sin()).abs() < 1e-6);
    }
}
