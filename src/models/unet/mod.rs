//! The LDM "openaimodel" UNet (SD1.x), built directly from LDM state-dict
//! names (`input_blocks.N.M.*`, `middle_block.*`, `output_blocks.*`,
//! `time_embed.{0,2}`, `out.{0,2}`) and computed like ComfyUI:
//!
//! * timestep embedding `[cos(t·f), sin(t·f)]`, `f_k = exp(-ln(10000)·k/half)`
//!   in f32 (numerics spec §5.3), then `time_embed.0 → SiLU → time_embed.2`;
//! * ResBlock: `GN(32, eps 1e-5) → SiLU → conv3×3`, `+ Linear(SiLU(emb))`,
//!   `GN → SiLU → conv3×3`, plus the (1×1 conv or identity) skip;
//! * SpatialTransformer: `GN(32, eps 1e-6)`, proj_in (1×1 conv or Linear),
//!   BasicTransformerBlocks (LayerNorm eps 1e-5; self-attn, cross-attn,
//!   GEGLU FF with exact erf GELU; attention scale dim_head^-0.5), proj_out,
//!   residual;
//! * Downsample: conv3×3 stride 2 pad 1; Upsample: nearest to the next skip's
//!   size (×2 normally), conv3×3.
//!
//! The whole block structure is read from the keys, so any SD1-like layout
//! (the real SD1.5 file or the tiny fixture) builds with the same code.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::models::controlnet::ControlResiduals;

/// Patches of the UNet's internals for one evaluation (ComfyUI's `transformer_options`
/// patches).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnetOptions<'a> {
    /// `output_block_patch` (FreeU), on each output block's (h, skip) pair.
    pub output_block_patch: Option<&'a dyn OutputBlockPatch>,
    /// An `attn1` replace patch on ("middle", 0) returning `v` (PerturbedAttentionGuidance):
    /// the middle block's self-attentions skip their attention map.
    pub perturb_middle_attn1: bool,
    /// `input_block_patch` / `input_block_patch_after_skip` (PatchModelAddDownscale), on
    /// each input block's output.
    pub input_block_patch: Option<&'a dyn InputBlockPatch>,
    /// σ of this evaluation (`transformer_options["sigmas"][0]`), for patches that depend
    /// on it.
    pub sigma: f64,
    /// SelfAttentionGuidance's `attn1` replace on ("middle", 0, 0): the attention
    /// probabilities `[B·heads, T, T]` of the middle block's first self-attention are stored
    /// here (the output is the plain attention's).
    pub capture_middle_attn1: Option<&'a std::sync::Mutex<Option<Tensor>>>,
    /// An `attn1_patch` + `attn1_output_patch` pair that splits the self-attention queries
    /// into tiles (HyperTile), on every transformer block.
    pub attn1_tiling: Option<&'a dyn Attn1Tiling>,
}

/// HyperTile's choice of tiles for one self-attention: given its token count and the UNet
/// input's latent size (H, W), `Some((nh, nw, h, w))` splits the `h × w` token grid into
/// `nh × nw` tiles (`nh·nw > 1`); None leaves the attention alone.
pub trait Attn1Tiling: Send + Sync + std::fmt::Debug {
    fn tiles(
        &self,
        tokens: usize,
        latent_hw: (usize, usize),
    ) -> Option<(usize, usize, usize, usize)>;
}

/// What a block's transformers do to their self-attention (`attn1`): PAG's identity map on
/// every one, SAG's capture of the first one's probabilities.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attn1Opts<'a> {
    pub perturb: bool,
    pub capture: Option<&'a std::sync::Mutex<Option<Tensor>>>,
    /// HyperTile's tiling and the UNet input's latent (H, W).
    pub tiling: Option<(&'a dyn Attn1Tiling, (usize, usize))>,
}

/// A MODEL patch of the input blocks' outputs (ComfyUI's `input_block_patch`, applied before
/// the skip is stored, and `input_block_patch_after_skip`, after): called for input block
/// `block` with its output `h`; returns the new `h`.
pub trait InputBlockPatch: Send + Sync + std::fmt::Debug {
    fn apply(
        &self,
        h: Tensor,
        block: usize,
        after_skip: bool,
        sigma: f64,
    ) -> candle_core::Result<Tensor>;
}

/// A MODEL patch of the skip connections (ComfyUI's `output_block_patch`, e.g. FreeU): called
/// for every output block with the hidden state `h` and the popped skip `hsp` (after its
/// ControlNet residual), before they are concatenated; returns the new pair.
pub trait OutputBlockPatch: Send + Sync + std::fmt::Debug {
    fn apply(&self, h: Tensor, hsp: Tensor) -> candle_core::Result<(Tensor, Tensor)>;
}
use crate::models::nn::activations::geglu;
use crate::models::nn::linear::{linear, Linear};
use crate::models::nn::{conv, group_norm, has, silu, Conv2d, GroupNorm};
use crate::models::{ModelError, Result};

pub mod adm;

/// State-dict prefix of the UNet in a single-file checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";

/// UNet hyper-parameters, detected from the weights like ComfyUI's
/// `model_detection.detect_unet_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: Vec<usize>,
    /// One entry per input res block.
    pub transformer_depth: Vec<usize>,
    pub transformer_depth_middle: usize,
    /// One entry per output res block, in `output_blocks` order (ComfyUI's
    /// `transformer_depth_output` lists the same numbers reversed).
    pub transformer_depth_output: Vec<usize>,
    pub context_dim: Option<usize>,
    pub use_linear_in_transformer: bool,
    pub adm_in_channels: Option<usize>,
    /// SD1: 8 heads (head dim = channels/8).
    pub num_heads: Option<usize>,
    /// SD2: 64 channels per head.
    pub num_head_channels: Option<usize>,
}

impl UnetConfig {
    /// Detects the config from weights whose UNet keys start with `prefix`.
    pub fn detect(w: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        Self::detect_with(w, prefix, true)
    }

    /// [`UnetConfig::detect`] for a UNet encoder half without `out.*` (a ControlNet's
    /// `control_model.*`): `out_channels` is then the input's channels.
    pub fn detect_encoder(w: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        Self::detect_with(w, prefix, false)
    }

    fn detect_with(w: &HashMap<String, Tensor>, prefix: &str, require_out: bool) -> Result<Self> {
        let key = |k: &str| format!("{prefix}{k}");
        let dims = |k: &str| w.get(&key(k)).map(|t| t.dims().to_vec());
        let first = dims("input_blocks.0.0.weight")
            .ok_or_else(|| ModelError::MissingKey(key("input_blocks.0.0.weight")))?;
        let model_channels = first[0];
        let in_channels = first[1];
        let out_channels = match dims("out.2.weight") {
            Some(d) => d[0],
            None if !require_out => in_channels,
            None => return Err(ModelError::MissingKey(key("out.2.weight"))),
        };
        let adm_in_channels = dims("label_emb.0.0.weight").map(|d| d[1]);
        let count = |p: &str| {
            let mut n = 0;
            while w.contains_key(&key(&format!("{p}.{n}.norm1.weight"))) {
                n += 1;
            }
            n
        };
        let mut channel_mult = Vec::new();
        let mut num_res_blocks = Vec::new();
        let mut transformer_depth = Vec::new();
        let mut context_dim = None;
        let mut use_linear = false;
        let mut current_res = 0;
        let mut last_mult = 0;
        let mut i = 1;
        loop {
            let p = format!("input_blocks.{i}");
            if dims(&format!("{p}.0.op.weight")).is_some() {
                channel_mult.push(last_mult);
                num_res_blocks.push(current_res);
                current_res = 0;
            } else if let Some(d) = dims(&format!("{p}.0.out_layers.3.weight")) {
                last_mult = d[0] / model_channels;
                current_res += 1;
                let depth = count(&format!("{p}.1.transformer_blocks"));
                transformer_depth.push(depth);
                if depth > 0 {
                    if let Some(k) = dims(&format!("{p}.1.transformer_blocks.0.attn2.to_k.weight"))
                    {
                        context_dim = Some(k[1]);
                    }
                    if let Some(pi) = dims(&format!("{p}.1.proj_in.weight")) {
                        use_linear = pi.len() == 2;
                    }
                }
            } else {
                break;
            }
            i += 1;
        }
        if current_res > 0 {
            channel_mult.push(last_mult);
            num_res_blocks.push(current_res);
        }
        let mut transformer_depth_output = Vec::new();
        let mut o = 0;
        while w.contains_key(&key(&format!("output_blocks.{o}.0.out_layers.3.weight"))) {
            transformer_depth_output
                .push(count(&format!("output_blocks.{o}.1.transformer_blocks")));
            o += 1;
        }
        let transformer_depth_middle = count("middle_block.1.transformer_blocks");
        // SD1 (context 768 and the tiny fixture): num_heads 8; SD2 (1024) and
        // linear-projection models: 64 channels per head.
        let (num_heads, num_head_channels) = if use_linear || context_dim == Some(1024) {
            (None, Some(64))
        } else {
            (Some(8), None)
        };
        Ok(UnetConfig {
            in_channels,
            out_channels,
            model_channels,
            channel_mult,
            num_res_blocks,
            transformer_depth,
            transformer_depth_middle,
            transformer_depth_output,
            context_dim,
            use_linear_in_transformer: use_linear,
            adm_in_channels,
            num_heads,
            num_head_channels,
        })
    }

    /// Is this the SD1.x layout ComfyUI's SD15 preset matches?
    pub fn is_sd15(&self) -> bool {
        self.model_channels == 320
            && self.context_dim == Some(768)
            && !self.use_linear_in_transformer
            && self.adm_in_channels.is_none()
    }

    fn heads_for(&self, ch: usize) -> (usize, usize) {
        match (self.num_heads, self.num_head_channels) {
            (_, Some(hc)) => (ch / hc, hc),
            (Some(h), None) => (h, ch / h),
            (None, None) => (1, ch),
        }
    }
}

/// Timestep embedding, ComfyUI's `timestep_embedding` (cos first), f32.
pub fn timestep_embedding(t: &[f32], dim: usize, device: &Device) -> candle_core::Result<Tensor> {
    let half = dim / 2;
    let freqs = crate::models::nn::sinusoid::timestep_frequencies(half);
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let args: Vec<f32> = freqs.iter().map(|f| ti * f).collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (t.len(), dim), device)
}

struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(vb: &VarBuilder) -> candle_core::Result<Self> {
        Ok(ResBlock {
            in_norm: group_norm(vb, "in_layers.0", 1e-5)?,
            in_conv: conv(vb, "in_layers.2", 1, 1)?,
            emb: linear(vb, "emb_layers.1")?,
            out_norm: group_norm(vb, "out_layers.0", 1e-5)?,
            out_conv: conv(vb, "out_layers.3", 1, 1)?,
            skip: if has(vb, "skip_connection.weight") {
                Some(conv(vb, "skip_connection", 1, 0)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward_silu(x)?)?;
        let e = self.emb.forward(&silu(emb)?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&e)?;
        let h = self.out_conv.forward(&self.out_norm.forward_silu(&h)?)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

pub use crate::models::nn::attention::attention;

struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn new(vb: &VarBuilder, heads: usize) -> candle_core::Result<Self> {
        Ok(CrossAttention {
            to_q: linear(vb, "to_q")?,
            to_k: linear(vb, "to_k")?,
            to_v: linear(vb, "to_v")?,
            to_out: linear(vb, "to_out.0")?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        self.to_out.forward(&attention(&q, &k, &v, self.heads)?)
    }

    /// Self-attention that also stores its probabilities `softmax(q·kᵀ/√d)` as
    /// `[B·heads, N, N]` (SAG's `attention_basic_with_sim`).
    fn forward_capture(
        &self,
        x: &Tensor,
        store: &std::sync::Mutex<Option<Tensor>>,
    ) -> candle_core::Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(x)?;
        let v = self.to_v.forward(x)?;
        let (b, n, inner) = q.dims3()?;
        let d = inner / self.heads;
        let split = |t: &Tensor| -> candle_core::Result<Tensor> {
            t.to_dtype(DType::F32)?
                .reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * self.heads, n, d))
        };
        let (qh, kh) = (split(&q)?, split(&k)?);
        let scale = (d as f64).powf(-0.5);
        let sim = (qh.matmul(&kh.t()?.contiguous()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&sim)?;
        *store
            .lock()
            .map_err(|_| candle_core::Error::Msg("SAG: a run panicked".into()))? = Some(probs);
        self.to_out.forward(&attention(&q, &k, &v, self.heads)?)
    }

    /// HyperTile's self-attention (`hypertile_in` / `hypertile_out` around ComfyUI's
    /// attention): the queries' input is split into `nh × nw` tiles of the `h × w` grid,
    /// making `B·nh·nw` query batches; the keys and values, computed from the whole input,
    /// are reshaped to that batch count as consecutive token chunks (what ComfyUI's
    /// attention does with a key batch smaller than the query batch); the output is put back
    /// in place.
    fn forward_tiled(
        &self,
        x: &Tensor,
        tiles: (usize, usize, usize, usize),
    ) -> candle_core::Result<Tensor> {
        let (nh, nw, h, w) = tiles;
        let (b, n, c) = x.dims3()?;
        let (th, tw) = (h / nh, w / nw);
        if th * tw * nh * nw != n {
            candle_core::bail!(
                "HyperTile: {n} tokens do not form a {h}x{w} grid of {nh}x{nw} tiles"
            );
        }
        let xt = x
            .reshape((b, nh, th, nw, tw, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b * nh * nw, th * tw, c))?;
        let q = self.to_q.forward(&xt)?;
        let chunk = |t: Tensor| -> candle_core::Result<Tensor> {
            let inner = t.dim(2)?;
            t.contiguous()?.reshape((b * nh * nw, n / (nh * nw), inner))
        };
        let k = chunk(self.to_k.forward(x)?)?;
        let v = chunk(self.to_v.forward(x)?)?;
        let out = self.to_out.forward(&attention(&q, &k, &v, self.heads)?)?;
        let c2 = out.dim(2)?;
        out.reshape((b, nh, nw, th, tw, c2))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b, n, c2))
    }

    /// Self-attention with the attention map replaced by the identity (PAG's
    /// `perturbed_attention` returns `v`): `to_out(to_v(x))`.
    fn forward_identity(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.to_out.forward(&self.to_v.forward(x)?)
    }
}

struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

fn layer_norm(vb: &VarBuilder, name: &str) -> candle_core::Result<LayerNorm> {
    let c = vb.pp(name).get_unchecked("weight")?.dim(0)?;
    candle_nn::layer_norm(c, 1e-5, vb.pp(name))
}

impl TransformerBlock {
    fn new(vb: &VarBuilder, heads: usize) -> candle_core::Result<Self> {
        Ok(TransformerBlock {
            norm1: layer_norm(vb, "norm1")?,
            attn1: CrossAttention::new(&vb.pp("attn1"), heads)?,
            norm2: layer_norm(vb, "norm2")?,
            attn2: CrossAttention::new(&vb.pp("attn2"), heads)?,
            norm3: layer_norm(vb, "norm3")?,
            ff_in: linear(vb, "ff.net.0.proj")?,
            ff_out: linear(vb, "ff.net.2")?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        attn1: Attn1Opts,
    ) -> candle_core::Result<Tensor> {
        let n = self.norm1.forward(x)?;
        let a = if attn1.perturb {
            self.attn1.forward_identity(&n)?
        } else if let Some(store) = attn1.capture {
            self.attn1.forward_capture(&n, store)?
        } else if let Some(tiles) = attn1
            .tiling
            .and_then(|(t, hw)| t.tiles(n.dim(1).unwrap_or(0), hw))
        {
            self.attn1.forward_tiled(&n, tiles)?
        } else {
            self.attn1.forward(&n, None)?
        };
        let x = (a + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + &x)?;
        let h = self.ff_in.forward(&self.norm3.forward(&x)?)?;
        let h = geglu(&h)?;
        self.ff_out.forward(&h)? + x
    }
}

enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
}

impl SpatialTransformer {
    fn new(vb: &VarBuilder, cfg: &UnetConfig) -> candle_core::Result<Self> {
        let pw = vb.pp("proj_in").get_unchecked("weight")?;
        let linear_proj = pw.rank() == 2;
        let inner = pw.dim(0)?;
        let (heads, _) = cfg.heads_for(inner);
        let proj = |name: &str| -> candle_core::Result<Proj> {
            if linear_proj {
                Ok(Proj::Linear(linear(vb, name)?))
            } else {
                Ok(Proj::Conv(conv(vb, name, 1, 0)?))
            }
        };
        let mut blocks = Vec::new();
        let mut n = 0;
        while has(vb, &format!("transformer_blocks.{n}.norm1.weight")) {
            blocks.push(TransformerBlock::new(
                &vb.pp(format!("transformer_blocks.{n}")),
                heads,
            )?);
            n += 1;
        }
        Ok(SpatialTransformer {
            norm: group_norm(vb, "norm", 1e-6)?,
            proj_in: proj("proj_in")?,
            blocks,
            proj_out: proj("proj_out")?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        attn1: Attn1Opts,
    ) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let mut y = self.norm.forward(x)?;
        if let Proj::Conv(p) = &self.proj_in {
            y = p.forward(&y)?;
        }
        let inner = y.dim(1)?;
        y = y
            .reshape((b, inner, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        if let Proj::Linear(p) = &self.proj_in {
            y = p.forward(&y)?;
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            // The capture is the first transformer block's only.
            let a = Attn1Opts {
                capture: attn1.capture.filter(|_| i == 0),
                ..attn1
            };
            y = blk.forward(&y, context, a)?;
        }
        if let Proj::Linear(p) = &self.proj_out {
            y = p.forward(&y)?;
        }
        let inner = y.dim(2)?;
        y = y.transpose(1, 2)?.contiguous()?.reshape((b, inner, h, w))?;
        if let Proj::Conv(p) = &self.proj_out {
            y = p.forward(&y)?;
        }
        debug_assert_eq!(y.dim(1)?, c);
        y + x
    }
}

enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Attn(SpatialTransformer),
    Down(Conv2d),
    Up(Conv2d),
}

/// One `TimestepEmbedSequential` of the UNet (shared with the ControlNet's encoder).
pub(crate) struct Block(Vec<Layer>);

impl Block {
    pub(crate) fn new(vb: &VarBuilder, cfg: &UnetConfig) -> candle_core::Result<Self> {
        let mut layers = Vec::new();
        let mut j = 0;
        loop {
            let l = vb.pp(j.to_string());
            let layer = if has(&l, "in_layers.0.weight") {
                Layer::Res(ResBlock::new(&l)?)
            } else if has(&l, "proj_in.weight") {
                Layer::Attn(SpatialTransformer::new(&l, cfg)?)
            } else if has(&l, "op.weight") {
                Layer::Down(conv(&l, "op", 2, 1)?)
            } else if has(&l, "conv.weight") {
                Layer::Up(conv(&l, "conv", 1, 1)?)
            } else if has(&l, "weight") {
                Layer::Conv(conv(vb, &j.to_string(), 1, 1)?)
            } else {
                break;
            };
            layers.push(layer);
            j += 1;
        }
        if layers.is_empty() {
            candle_core::bail!("empty UNet block at {}", vb.prefix());
        }
        Ok(Block(layers))
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        out_shape: Option<(usize, usize)>,
    ) -> candle_core::Result<Tensor> {
        self.forward_with(x, emb, context, out_shape, Attn1Opts::default())
    }

    /// [`Block::forward`] with the transformers' `attn1` changed: PerturbedAttentionGuidance's
    /// identity map on every one, SelfAttentionGuidance's capture of the first.
    pub(crate) fn forward_with(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        out_shape: Option<(usize, usize)>,
        attn1: Attn1Opts,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        let mut seen_attn = false;
        for layer in &self.0 {
            x = match layer {
                Layer::Conv(c) | Layer::Down(c) => c.forward(&x)?,
                Layer::Res(r) => r.forward(&x, emb)?,
                Layer::Attn(a) => {
                    // A capture goes to the block's first transformer only.
                    let o = Attn1Opts {
                        capture: attn1.capture.filter(|_| !seen_attn),
                        ..attn1
                    };
                    seen_attn = true;
                    a.forward(&x, context, o)?
                }
                Layer::Up(c) => {
                    let (_, _, h, w) = x.dims4()?;
                    let (th, tw) = out_shape.unwrap_or((h * 2, w * 2));
                    c.forward(&x.upsample_nearest2d(th, tw)?)?
                }
            };
        }
        Ok(x)
    }
}

/// `apply_control(h, control, name)`: pops the list's last residual and adds it to `h`
/// (torch's in-place `h += ctrl`: `ctrl` may broadcast to `h`, as a T2I-Adapter's batch-1
/// features do; anything else is skipped with ComfyUI's warning).
fn apply_control(
    h: Tensor,
    list: Option<&mut Vec<Option<Tensor>>>,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let Some(Some(ctrl)) = list.and_then(|l| l.pop()) else {
        return Ok(h);
    };
    let fits = ctrl.rank() == h.rank()
        && ctrl
            .dims()
            .iter()
            .zip(h.dims())
            .all(|(c, h)| c == h || *c == 1);
    if !fits {
        tracing::warn!(
            "warning control could not be applied {:?} {:?}",
            h.dims(),
            ctrl.dims()
        );
        return Ok(h);
    }
    let ctrl = ctrl.to_device(h.device())?.to_dtype(dtype)?;
    h.broadcast_add(&ctrl)
}

struct UnetInner {
    config: UnetConfig,
    time_embed_0: Linear,
    time_embed_2: Linear,
    /// SDXL's ADM embedding `label_emb.0.{0,2}`: Linear → SiLU → Linear, added to the
    /// time embedding.
    label_emb: Option<(Linear, Linear)>,
    input_blocks: Vec<Block>,
    middle: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    dtype: DType,
    device: Device,
}

/// The SD1.x UNet. Cheap to clone.
#[derive(Clone)]
pub struct Unet(Arc<UnetInner>);

impl Unet {
    /// Builds the UNet from a state dict whose UNet keys start with `prefix`
    /// (e.g. [`UNET_PREFIX`]); the map is not consumed, so patched copies
    /// (LoRA) can be built from base weights + deltas.
    pub fn from_weights(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let config = UnetConfig::detect(weights, prefix)?;
        let vb = crate::models::nn::weights_vb(weights.clone(), dtype, device);
        let vb = vb.pp(prefix.trim_end_matches('.'));
        let mut input_blocks = Vec::new();
        let mut i = 0;
        while has(&vb.pp(format!("input_blocks.{i}")), "0.weight")
            || has(&vb.pp(format!("input_blocks.{i}.0")), "in_layers.0.weight")
            || has(&vb.pp(format!("input_blocks.{i}.0")), "op.weight")
        {
            input_blocks.push(Block::new(&vb.pp(format!("input_blocks.{i}")), &config)?);
            i += 1;
        }
        let mut output_blocks = Vec::new();
        let mut o = 0;
        while has(&vb.pp(format!("output_blocks.{o}.0")), "in_layers.0.weight") {
            output_blocks.push(Block::new(&vb.pp(format!("output_blocks.{o}")), &config)?);
            o += 1;
        }
        if output_blocks.len() != input_blocks.len() {
            return Err(ModelError::NotSupported(format!(
                "UNet has {} input blocks but {} output blocks",
                input_blocks.len(),
                output_blocks.len()
            )));
        }
        let inner = UnetInner {
            time_embed_0: linear(&vb, "time_embed.0")?,
            time_embed_2: linear(&vb, "time_embed.2")?,
            label_emb: match config.adm_in_channels {
                Some(_) => Some((linear(&vb, "label_emb.0.0")?, linear(&vb, "label_emb.0.2")?)),
                None => None,
            },
            input_blocks,
            middle: Block::new(&vb.pp("middle_block"), &config)?,
            output_blocks,
            out_norm: group_norm(&vb, "out.0", 1e-5)?,
            out_conv: conv(&vb, "out.2", 1, 1)?,
            config,
            dtype,
            device: device.clone(),
        };
        Ok(Unet(Arc::new(inner)))
    }

    pub fn config(&self) -> &UnetConfig {
        &self.0.config
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// One UNet evaluation: `x` [B, C, h, w] (already `calculate_input`-scaled),
    /// `timesteps` [B] (ComfyUI passes the integer index from `timestep(σ)` as
    /// f32), `context` [B, 77·k, context_dim], `y` [B, adm_in_channels] for models with
    /// an ADM input (SDXL). Returns the raw model output (ε, or v for v-prediction
    /// checkpoints) in the input's dtype, on the input's device: inputs move to the
    /// UNet's device and dtype here.
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with_control(x, timesteps, context, y, None)
    }

    /// [`Unet::forward`] with ControlNet residuals added where ComfyUI's `apply_control`
    /// adds them (`openaimodel.py`): `input` after each input block, `middle` after the
    /// middle block, `output` on each skip connection as it is popped; every list is
    /// consumed from its end. A residual whose shape does not match is skipped, as
    /// ComfyUI does (it logs "control could not be applied").
    pub fn forward_with_control(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        self.forward_patched(x, timesteps, context, y, control, UnetOptions::default())
    }

    /// [`Unet::forward_with_control`] with MODEL patches of the UNet's internals
    /// ([`UnetOptions`]).
    pub fn forward_patched(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
        control: Option<&ControlResiduals>,
        opts: UnetOptions,
    ) -> Result<Tensor> {
        let mut control = control.cloned();
        let m = &self.0;
        let (in_dtype, in_device) = (x.dtype(), x.device().clone());
        let (b, _, _, _) = x.dims4()?;
        let t: Vec<f32> = timesteps.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if t.len() != b && t.len() != 1 {
            return Err(ModelError::BadInput(format!(
                "{} timesteps for a batch of {b}",
                t.len()
            )));
        }
        let t = if t.len() == 1 { vec![t[0]; b] } else { t };
        let temb = timestep_embedding(&t, m.config.model_channels, &m.device)?.to_dtype(m.dtype)?;
        let mut emb = m
            .time_embed_2
            .forward(&silu(&m.time_embed_0.forward(&temb)?)?)?;
        match (&m.label_emb, y) {
            (Some((l0, l2)), Some(y)) => {
                let y = y.to_device(&m.device)?.to_dtype(m.dtype)?;
                if y.dims() != [b, m.config.adm_in_channels.unwrap_or(0)] {
                    return Err(ModelError::BadInput(format!(
                        "the ADM input y is {:?}, the UNet takes [{b}, {}]",
                        y.dims(),
                        m.config.adm_in_channels.unwrap_or(0)
                    )));
                }
                emb = (emb + l2.forward(&silu(&l0.forward(&y)?)?)?)?;
            }
            (Some(_), None) => {
                return Err(ModelError::BadInput(
                    "this UNet needs an ADM vector y (SDXL size conditioning); none was given"
                        .into(),
                ))
            }
            (None, _) => {}
        }
        let x = x.to_device(&m.device)?.to_dtype(m.dtype)?;
        if let Some(ctx_dim) = m.config.context_dim {
            let got = context.dims().last().copied().unwrap_or(0);
            if got != ctx_dim {
                return Err(ModelError::BadInput(format!(
                    "the conditioning has {got} channels but this UNet's cross-attention takes \
                     {ctx_dim}: encode the prompt with this model's own text encoder"
                )));
            }
        }
        let mut context = context.to_device(&m.device)?.to_dtype(m.dtype)?;
        if context.dim(0)? != b {
            context = context.repeat((b / context.dim(0)?.max(1), 1, 1))?;
        }
        let mut hs = Vec::with_capacity(m.input_blocks.len());
        let (_, _, lh, lw) = x.dims4()?;
        let mut h = x;
        let tiling = opts.attn1_tiling.map(|t| (t, (lh, lw)));
        let plain = Attn1Opts {
            tiling,
            ..Attn1Opts::default()
        };
        for (id, blk) in m.input_blocks.iter().enumerate() {
            h = blk.forward_with(&h, &emb, &context, None, plain)?;
            h = apply_control(h, control.as_mut().map(|c| &mut c.input), m.dtype)?;
            if let Some(p) = opts.input_block_patch {
                h = p.apply(h, id, false, opts.sigma)?;
            }
            hs.push(h.clone());
            if let Some(p) = opts.input_block_patch {
                h = p.apply(h, id, true, opts.sigma)?;
            }
        }
        h = m.middle.forward_with(
            &h,
            &emb,
            &context,
            None,
            Attn1Opts {
                perturb: opts.perturb_middle_attn1,
                capture: opts.capture_middle_attn1,
                tiling,
            },
        )?;
        h = apply_control(h, control.as_mut().map(|c| &mut c.middle), m.dtype)?;
        for blk in &m.output_blocks {
            let skip = hs.pop().expect("as many skips as output blocks");
            let mut skip = apply_control(skip, control.as_mut().map(|c| &mut c.output), m.dtype)?;
            if let Some(p) = opts.output_block_patch {
                (h, skip) = p.apply(h, skip)?;
            }
            h = Tensor::cat(&[&h, &skip], 1)?;
            let out_shape = match hs.last() {
                Some(s) => {
                    let (_, _, sh, sw) = s.dims4()?;
                    Some((sh, sw))
                }
                None => None,
            };
            h = blk.forward_with(&h, &emb, &context, out_shape, plain)?;
        }
        let out = m.out_conv.forward(&m.out_norm.forward_silu(&h)?)?;
        Ok(out.to_dtype(in_dtype)?.to_device(&in_device)?)
    }
}
