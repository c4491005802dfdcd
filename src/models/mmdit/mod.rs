//! MMDiT, the diffusion transformer of SD3 medium, SD3.5 medium (MMDiT-X) and SD3.5 large,
//! computed like ComfyUI's `comfy/ldm/modules/diffusionmodules/mmdit.py`
//! (`OpenAISignatureMMDITWrapper`) on CPU f32.
//!
//! * [`Config`]: what `model_detection.detect_unet_config` reads from the keys: depth =
//!   `x_embedder.proj.weight.shape[0] / 64` (hidden 64·depth, `depth` heads of 64, `depth`
//!   joint blocks), patch size, in/out channels, pooled (`y_embedder`) and context
//!   (`context_embedder`) widths, `pos_embed_max_size = √num_patches`, RMS QK-norm when
//!   `ln_q` exists (SD3.5), and MMDiT-X's x-only self-attention layers (`x_block.attn2`,
//!   SD3.5 medium). The same rule as ComfyUI, so any file comfyrs detects, ComfyUI does too.
//! * [`Mmdit::forward`]: circular padding to the patch size, the patch conv plus the
//!   centre-cropped position table, `c = t_embedder(timestep) + y_embedder(pooled)`, the
//!   joint blocks, the final layer, unpatchify and crop.
//! * [`blocks`]: the blocks. SD3's text conditioning is `crate::models::conditioner::sd3`.
//!
//! Weights stay in the file's dtype (fp16, bf16, fp8, scaled fp8 with `scale_weight`) and
//! are widened per operation by the shared layers.

pub mod blocks;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use self::blocks::{FinalLayer, JointBlock, MlpEmbedder};
use crate::models::flux::pad_to_patch_size;
use crate::models::nn::{conv, linear, Conv2d, Linear};
use crate::models::unet::timestep_embedding;

/// ComfyUI's scaled-fp8 MMDiTs (`sd3.5_large_fp8_scaled`: a `scaled_fp8` marker under
/// `prefix`) build every Linear in the fp8 type, bias included, so a bias stored wider is
/// rounded to e4m3fn when loaded (torch's `copy_`, round to nearest even). The same
/// rounding for the biases of the layers carrying a `scale_weight`, in place; nothing
/// without the marker.
pub fn round_scaled_fp8_biases(
    weights: &mut crate::models::checkpoint::WeightMap,
    prefix: &str,
) -> crate::models::Result<()> {
    if !weights.contains_key(&format!("{prefix}scaled_fp8")) {
        return Ok(());
    }
    let biases: Vec<String> = weights
        .keys()
        .filter(|k| k.starts_with(prefix))
        .filter_map(|k| k.strip_suffix("scale_weight").map(|p| format!("{p}bias")))
        .filter(|b| weights.get(b).is_some_and(|t| t.dtype() != DType::F8E4M3))
        .collect();
    for key in biases {
        let t = &weights[&key];
        let bytes: Vec<u8> = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(crate::models::fp8::encode_e4m3fn)
            .collect();
        let q = Tensor::from_raw_buffer(&bytes, DType::F8E4M3, t.dims(), &Device::Cpu)?
            .to_device(t.device())?;
        weights.insert(key, q);
    }
    Ok(())
}

/// ComfyUI's MMDiT `unet_config` as detected from a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub in_channels: usize,
    pub out_channels: usize,
    pub patch_size: usize,
    /// Joint blocks; also the head count (hidden = 64·depth).
    pub depth: usize,
    /// Width of the pooled text vector `y` (2048 for SD3: CLIP-L 768 + CLIP-G 1280);
    /// None when the model has no `y_embedder`.
    pub adm_in_channels: Option<usize>,
    /// Input width of `context_embedder` (4096); None: the context is used as is.
    pub context_in: Option<usize>,
    /// Side of the square position table (192 for SD3 medium/SD3.5 large, 384 for SD3.5
    /// medium).
    pub pos_embed_max_size: usize,
    /// SD3.5's RMS QK-norm (`qk_norm = "rms"`).
    pub qk_norm: bool,
    /// MMDiT-X: the blocks whose x stream has a second self-attention.
    pub x_block_self_attn_layers: Vec<usize>,
}

impl Config {
    pub fn hidden_size(&self) -> usize {
        64 * self.depth
    }

    pub fn num_heads(&self) -> usize {
        self.depth
    }

    /// ComfyUI's name for the variant, for messages: SD3.5 medium is MMDiT-X, SD3.5 large
    /// has QK-norm alone, SD3 medium neither.
    pub fn variant(&self) -> &'static str {
        match (self.qk_norm, self.x_block_self_attn_layers.is_empty()) {
            (_, false) => "SD3.5 medium (MMDiT-X)",
            (true, true) => "SD3.5 large",
            (false, true) => "SD3 medium",
        }
    }

    /// Whether the weights under `prefix` are an MMDiT (ComfyUI's test:
    /// `joint_blocks.0.context_block.attn.qkv.weight`).
    pub fn is_mmdit(has: impl Fn(&str) -> bool, prefix: &str) -> bool {
        has(&format!(
            "{prefix}joint_blocks.0.context_block.attn.qkv.weight"
        ))
    }

    /// The config of the MMDiT under `prefix` (`detect_unet_config`).
    pub fn detect(
        shape: impl Fn(&str) -> Option<Vec<usize>>,
        keys: &mut dyn Iterator<Item = &str>,
        prefix: &str,
    ) -> std::result::Result<Self, String> {
        let dims = |k: &str| -> std::result::Result<Vec<usize>, String> {
            shape(&format!("{prefix}{k}")).ok_or_else(|| format!("missing tensor {prefix}{k}"))
        };
        let x_emb = dims("x_embedder.proj.weight")?;
        if x_emb.len() != 4 || x_emb[2] != x_emb[3] || x_emb[2] == 0 {
            return Err(format!(
                "x_embedder.proj.weight has shape {x_emb:?}, not a square patch convolution"
            ));
        }
        let (hidden, in_channels, patch_size) = (x_emb[0], x_emb[1], x_emb[2]);
        if hidden % 64 != 0 || hidden == 0 {
            return Err(format!(
                "the hidden size {hidden} is not a multiple of 64 (an MMDiT's hidden size is \
                 64 x depth)"
            ));
        }
        let depth = hidden / 64;
        let out_channels = match shape(&format!("{prefix}final_layer.linear.weight")) {
            Some(s) => s[0] / (patch_size * patch_size),
            None => in_channels,
        };
        let pos = dims("pos_embed").map_err(|_| {
            format!(
                "no {prefix}pos_embed: MMDiTs without a stored position table are not \
                 supported"
            )
        })?;
        let num_patches = *pos.get(1).ok_or("pos_embed is not [1, N, hidden]")?;
        let side = (num_patches as f64).sqrt().round() as usize;
        if side * side != num_patches {
            return Err(format!(
                "pos_embed holds {num_patches} patches, not a square"
            ));
        }
        let mut keys_seen = Vec::new();
        let mut blocks = 0usize;
        let mut context_processor = false;
        for k in keys {
            let Some(rest) = k.strip_prefix(prefix) else {
                continue;
            };
            if rest.starts_with("context_processor.") {
                context_processor = true;
            }
            if let Some(r) = rest.strip_prefix("joint_blocks.") {
                let mut parts = r.splitn(2, '.');
                if let Some(i) = parts.next().and_then(|i| i.parse::<usize>().ok()) {
                    blocks = blocks.max(i + 1);
                    if parts.next() == Some("x_block.attn2.qkv.weight") {
                        keys_seen.push(i);
                    }
                }
            }
        }
        if context_processor {
            return Err("MMDiTs with a context_processor are not supported".into());
        }
        if blocks != depth {
            return Err(format!(
                "{blocks} joint blocks, but the hidden size {hidden} means depth {depth}"
            ));
        }
        keys_seen.sort_unstable();
        Ok(Config {
            in_channels,
            out_channels,
            patch_size,
            depth,
            adm_in_channels: shape(&format!("{prefix}y_embedder.mlp.0.weight")).map(|s| s[1]),
            context_in: shape(&format!("{prefix}context_embedder.weight")).map(|s| s[1]),
            pos_embed_max_size: side,
            qk_norm: shape(&format!(
                "{prefix}joint_blocks.0.context_block.attn.ln_q.weight"
            ))
            .is_some(),
            x_block_self_attn_layers: keys_seen,
        })
    }
}

/// The inputs of one forward (`OpenAISignatureMMDITWrapper.forward`).
#[derive(Debug, Clone, Copy)]
pub struct MmditInputs<'a> {
    /// [B, in_channels, h, w] (any h, w up to the position table).
    pub x: &'a Tensor,
    /// [B] model timesteps (σ·1000 for SD3's discrete flow).
    pub timesteps: &'a Tensor,
    /// [B, T, context_in].
    pub context: &'a Tensor,
    /// [B, adm_in_channels] pooled text; None skips `y_embedder`, as ComfyUI does when the
    /// conditioning has no `pooled_output`.
    pub y: Option<&'a Tensor>,
    /// Joint blocks replaced by the identity (SkipLayerGuidance's `double_block` patch).
    pub skip_blocks: &'a [usize],
    /// An SD3 ControlNet's residuals (`control["output"]`): entry i, when present, is added
    /// to the x tokens [B, L, hidden] after joint block i (skipped blocks included).
    pub control: Option<&'a [Option<Tensor>]>,
}

/// The MMDiT.
#[derive(Debug, Clone)]
pub struct Mmdit {
    config: Config,
    x_embedder: Conv2d,
    /// [S, S, hidden] f32: the stored position table as a grid.
    pos_embed: Tensor,
    t_embedder: MlpEmbedder,
    y_embedder: Option<MlpEmbedder>,
    context_embedder: Option<Linear>,
    joint_blocks: Vec<JointBlock>,
    final_layer: FinalLayer,
    dtype: DType,
    device: Device,
}

impl Mmdit {
    /// Builds the network from `vb` (ComfyUI's MMDiT key names under the builder's prefix).
    pub fn new(vb: VarBuilder, config: &Config) -> Result<Self> {
        let heads = config.num_heads();
        let joint_blocks = (0..config.depth)
            .map(|i| {
                JointBlock::new(
                    &vb.pp(format!("joint_blocks.{i}")),
                    heads,
                    i + 1 == config.depth,
                    config.qk_norm,
                    config.x_block_self_attn_layers.contains(&i),
                )
            })
            .collect::<Result<_>>()?;
        let s = config.pos_embed_max_size;
        let pos_embed = vb.get_unchecked_dtype("pos_embed", DType::F32)?.reshape((
            s,
            s,
            config.hidden_size(),
        ))?;
        Ok(Mmdit {
            config: config.clone(),
            x_embedder: conv(&vb.pp("x_embedder"), "proj", config.patch_size, 0)?,
            pos_embed,
            t_embedder: MlpEmbedder::new(&vb.pp("t_embedder"))?,
            y_embedder: match config.adm_in_channels {
                Some(_) => Some(MlpEmbedder::new(&vb.pp("y_embedder"))?),
                None => None,
            },
            context_embedder: match config.context_in {
                Some(_) => Some(linear(&vb, "context_embedder")?),
                None => None,
            },
            joint_blocks,
            final_layer: FinalLayer::new(&vb.pp("final_layer"))?,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `cropped_pos_embed`: the centre h×w window of the table, [1, h·w, hidden].
    fn cropped_pos_embed(&self, h: usize, w: usize) -> Result<Tensor> {
        let s = self.config.pos_embed_max_size;
        if h > s || w > s {
            candle_core::bail!(
                "the latent is {h}x{w} patches; this {} model's position table covers at most \
                 {s}x{s} patches ({}x{} pixels)",
                self.config.variant(),
                s * self.config.patch_size * 8,
                s * self.config.patch_size * 8
            );
        }
        let (top, left) = ((s - h) / 2, (s - w) / 2);
        self.pos_embed
            .narrow(0, top, h)?
            .narrow(1, left, w)?
            .reshape((1, h * w, self.config.hidden_size()))
    }

    /// The patch embedding of a latent (`x_embedder` after circular padding to the patch
    /// size): [B, patches, hidden]. SD3.5 ControlNets embed the latent with the model's own.
    pub fn embed_patches(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(self.dtype)?;
        self.x_embedder
            .forward(&pad_to_patch_size(&x, self.config.patch_size)?)?
            .flatten_from(2)?
            .transpose(1, 2)
    }

    /// The pooled-text embedder (`y_embedder`), if the model has one.
    pub fn y_embedder(&self) -> Option<&MlpEmbedder> {
        self.y_embedder.as_ref()
    }

    /// The prediction for `inputs.x` (same shape as x, out_channels).
    pub fn forward(&self, inputs: &MmditInputs) -> Result<Tensor> {
        let cfg = &self.config;
        let x = inputs.x.to_dtype(self.dtype)?;
        let (b, _, h, w) = x.dims4()?;
        let p = cfg.patch_size;
        let (hp, wp) = (h.div_ceil(p), w.div_ceil(p));
        let tokens = self.embed_patches(&x)?;
        let pos = self.cropped_pos_embed(hp, wp)?.to_dtype(self.dtype)?;
        let mut x = tokens.broadcast_add(&pos)?;

        let ts = inputs
            .timesteps
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        if ts.len() != b {
            candle_core::bail!("{} timesteps for a batch of {b}", ts.len());
        }
        let temb = timestep_embedding(&ts, 256, &self.device)?.to_dtype(self.dtype)?;
        let mut c = self.t_embedder.forward(&temb)?;
        if let (Some(emb), Some(y)) = (&self.y_embedder, inputs.y) {
            let (want, got) = (cfg.adm_in_channels.unwrap_or(0), y.dim(1)?);
            if got != want {
                candle_core::bail!(
                    "the conditioning's pooled output is {got} wide; this {} model's y_embedder \
                     takes {want} (CLIP-L's 768 + CLIP-G's 1280 for the real encoders): encode \
                     the prompt with the text encoders made for this model",
                    cfg.variant()
                );
            }
            c = (c + emb.forward(&y.to_dtype(self.dtype)?)?)?;
        }
        if let Some(want) = cfg.context_in {
            let got = inputs.context.dim(2)?;
            if got != want {
                candle_core::bail!(
                    "the conditioning is {got} channels wide; this {} model's context_embedder \
                     takes {want} (SD3's text encoders give 4096)",
                    cfg.variant()
                );
            }
        }
        let mut context = inputs.context.to_dtype(self.dtype)?;
        if let Some(ce) = &self.context_embedder {
            context = ce.forward(&context)?;
        }
        let mut context = Some(context);
        for (i, block) in self.joint_blocks.iter().enumerate() {
            if !inputs.skip_blocks.contains(&i) {
                let ctx = context.as_ref().ok_or_else(|| {
                    candle_core::Error::Msg("no context after the last block".into())
                })?;
                let (ctx, xo) = block.forward(ctx, &x, &c)?;
                context = ctx;
                x = xo;
            }
            if let Some(Some(add)) = inputs.control.and_then(|c| c.get(i)) {
                if add.dims() != x.dims() {
                    candle_core::bail!(
                        "the ControlNet residual for joint block {i} is {:?}, the model's \
                         tokens are {:?}: the ControlNet does not belong to this {} model",
                        add.dims(),
                        x.dims(),
                        cfg.variant()
                    );
                }
                x = (x + add.to_dtype(self.dtype)?)?;
            }
        }
        let out = self.final_layer.forward(&x, &c)?;
        let oc = cfg.out_channels;
        debug_assert_eq!(out.dim(2)?, p * p * oc, "final layer width");
        // unpatchify: "nhwpqc -> nchpwq", then crop the padding.
        out.reshape((b, hp, wp, p, p, oc))?
            .permute((0, 5, 1, 3, 2, 4))?
            .reshape((b, oc, hp * p, wp * p))?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The shapes of a minimal MMDiT state dict (depth `depth`, hidden `hidden`).
    fn shapes(hidden: usize, blocks: usize) -> HashMap<String, Vec<usize>> {
        let mut m = HashMap::new();
        m.insert("x_embedder.proj.weight".into(), vec![hidden, 16, 2, 2]);
        m.insert("pos_embed".into(), vec![1, 64, hidden]);
        m.insert("final_layer.linear.weight".into(), vec![64, hidden]);
        m.insert("context_embedder.weight".into(), vec![hidden, 4096]);
        for i in 0..blocks {
            m.insert(
                format!("joint_blocks.{i}.context_block.attn.qkv.weight"),
                vec![3 * hidden, hidden],
            );
        }
        m
    }

    fn detect(m: &HashMap<String, Vec<usize>>) -> std::result::Result<Config, String> {
        Config::detect(|k| m.get(k).cloned(), &mut m.keys().map(|k| k.as_str()), "")
    }

    #[test]
    fn comfyuis_rule_and_its_errors() {
        let cfg = detect(&shapes(128, 2)).unwrap();
        assert_eq!((cfg.depth, cfg.num_heads(), cfg.hidden_size()), (2, 2, 128));
        assert_eq!((cfg.pos_embed_max_size, cfg.context_in), (8, Some(4096)));
        assert_eq!(cfg.adm_in_channels, None);
        assert!(!cfg.qk_norm && cfg.x_block_self_attn_layers.is_empty());
        let e = detect(&shapes(100, 2)).unwrap_err();
        assert!(e.contains("not a multiple of 64"), "{e}");
        let e = detect(&shapes(128, 3)).unwrap_err();
        assert!(e.contains("3 joint blocks") && e.contains("depth 2"), "{e}");
        let mut m = shapes(128, 2);
        m.insert("pos_embed".into(), vec![1, 60, 128]);
        assert!(detect(&m).unwrap_err().contains("not a square"));
        m.remove("pos_embed");
        assert!(detect(&m).unwrap_err().contains("no pos_embed"));
        let mut m = shapes(128, 2);
        m.insert("context_processor.layers.0.attn.qkv.weight".into(), vec![1]);
        assert!(detect(&m).unwrap_err().contains("context_processor"));
    }
}
