//! Flux.1 (dev, schnell, and the same network with other inputs: Fill, Canny/Depth,
//! Kontext), computed like ComfyUI's `comfy/ldm/flux/model.py` (`Flux._forward`,
//! `forward_orig`, `process_img`) on CPU f32.
//!
//! * [`Config`]: ComfyUI's `FluxParams`, read from a state dict ([`Config::detect`]).
//! * [`Flux::forward`]: pad the latent to the 2×2 patch size with **circular** padding,
//!   patchify to tokens, build the (index, row, column) ids of the image tokens (and of
//!   Kontext's reference latents) and zeros for the text tokens, run the blocks, crop.
//! * [`layers`]: the blocks; [`rope`]: timestep embedding and rotary tables (f64 like
//!   ComfyUI).
//!
//! Detection reads every width from the tensors, a superset of ComfyUI's rule (which fixes
//! hidden 3072, 24 heads, context 4096 and axes [16, 56, 56]): reduced-width test models
//! load too. Their rotary axes are split by comfyrs's convention for head dims other than
//! 128 (see [`axes_for_head_dim`]).

pub mod layers;
pub mod rope;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use self::layers::{DoubleStreamBlock, LastLayer, MlpEmbedder, SingleStreamBlock};
use self::rope::{rope_tensor, timestep_embedding};
use crate::models::nn::{linear, Linear};

/// The guidance a dev model gets when the conditioning has no `guidance` key
/// (`model_base.Flux.extra_conds`).
pub const DEFAULT_GUIDANCE: f64 = 3.5;

/// `comfy.utils.weight_dtype` is fp8 e4m3fn for the tensors under `prefix`: the dtype
/// holding the most elements, which is what ComfyUI's `unet_dtype` looks at.
pub fn mostly_fp8(weights: &std::collections::HashMap<String, Tensor>, prefix: &str) -> bool {
    let (mut fp8, mut other) = (0usize, std::collections::HashMap::new());
    for (k, t) in weights {
        if k.starts_with(prefix) {
            if t.dtype() == DType::F8E4M3 {
                fp8 += t.elem_count();
            } else {
                *other.entry(t.dtype()).or_insert(0usize) += t.elem_count();
            }
        }
    }
    fp8 > 0 && other.values().all(|&n| n < fp8)
}

/// When ComfyUI keeps a Flux model's weights in fp8 (`unet_dtype` returns the file's fp8
/// dtype: an fp8-computing GPU, or a model too large for memory at 2 bytes per parameter, as
/// the real-size Flux on a 24 GiB machine), it builds the network with *every* parameter in
/// fp8, so the file's wider tensors (biases, RMS-norm scales, in bf16 in such files) are
/// rounded to fp8 e4m3fn as `load_state_dict` copies them in; the forward pass then widens
/// them back. This rounds the tensors under `prefix` the same way (torch's round to nearest
/// even from f32, which is exact from bf16/f16) and returns how many it rounded. The caller
/// decides whether ComfyUI keeps fp8 (`lora::fp8_round::comfy_keeps_fp8`).
pub fn round_wide_params_to_fp8(
    weights: &mut std::collections::HashMap<String, Tensor>,
    prefix: &str,
) -> Result<usize> {
    let wide: Vec<String> = weights
        .iter()
        .filter(|(k, t)| k.starts_with(prefix) && t.dtype() != DType::F8E4M3)
        .map(|(k, _)| k.clone())
        .collect();
    for key in &wide {
        let t = &weights[key];
        let bytes: Vec<u8> = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(crate::models::fp8::encode_e4m3fn)
            .collect();
        let q = Tensor::from_raw_buffer(&bytes, DType::F8E4M3, t.dims(), &Device::Cpu)?
            .to_device(t.device())?;
        weights.insert(key.clone(), q);
    }
    Ok(wide.len())
}

/// ComfyUI's `FluxParams`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Latent channels of the model input (before patchify): 16; 96 for Fill (latent +
    /// masked image + 8×8 mask), 32 for Canny/Depth (latent + control image).
    pub in_channels: usize,
    pub out_channels: usize,
    pub vec_in_dim: usize,
    pub context_in_dim: usize,
    pub hidden_size: usize,
    pub mlp_ratio: f64,
    pub num_heads: usize,
    pub depth: usize,
    pub depth_single_blocks: usize,
    pub axes_dim: Vec<usize>,
    pub theta: f64,
    pub patch_size: usize,
    pub qkv_bias: bool,
    pub guidance_embed: bool,
}

/// The rotary axes of a head: ComfyUI's [16, 56, 56] for the real 128; for reduced models
/// a quarter for the index axis and the rest split evenly (16 → [4, 6, 6]), rounded to
/// even sizes.
pub fn axes_for_head_dim(d: usize) -> Vec<usize> {
    if d == 128 {
        return vec![16, 56, 56];
    }
    let first = (d / 4) & !1;
    let rest = ((d - first) / 2) & !1;
    vec![first, rest, d - first - rest]
}

impl Config {
    /// Flux.1-dev (guidance embedding).
    pub fn dev() -> Self {
        Config {
            in_channels: 16,
            out_channels: 16,
            vec_in_dim: 768,
            context_in_dim: 4096,
            hidden_size: 3072,
            mlp_ratio: 4.0,
            num_heads: 24,
            depth: 19,
            depth_single_blocks: 38,
            axes_dim: vec![16, 56, 56],
            theta: 10_000.0,
            patch_size: 2,
            qkv_bias: true,
            guidance_embed: true,
        }
    }

    /// Flux.1-schnell (no guidance embedding).
    pub fn schnell() -> Self {
        Config {
            guidance_embed: false,
            ..Self::dev()
        }
    }

    /// Whether the weights under `prefix` are a Flux transformer (ComfyUI's test:
    /// `double_blocks.0.img_attn.norm.key_norm.scale` and `img_in.weight`).
    pub fn is_flux(has: impl Fn(&str) -> bool, prefix: &str) -> bool {
        has(&format!(
            "{prefix}double_blocks.0.img_attn.norm.key_norm.scale"
        )) && has(&format!("{prefix}img_in.weight"))
    }

    /// The config of the Flux weights under `prefix` (`detect_unet_config`, widths read
    /// from the tensors).
    pub fn detect(
        shape: impl Fn(&str) -> Option<Vec<usize>>,
        keys: &mut dyn Iterator<Item = &str>,
        prefix: &str,
    ) -> std::result::Result<Self, String> {
        let dims = |k: &str| -> std::result::Result<Vec<usize>, String> {
            shape(&format!("{prefix}{k}")).ok_or_else(|| format!("missing tensor {prefix}{k}"))
        };
        let img_in = dims("img_in.weight")?;
        let patch_size = 2;
        let (hidden, img_in_features) = (img_in[0], img_in[1]);
        let head_dim = dims("double_blocks.0.img_attn.norm.key_norm.scale")?[0];
        if head_dim == 0 || hidden % head_dim != 0 {
            return Err(format!(
                "QK-norm width {head_dim} does not divide the hidden size {hidden}"
            ));
        }
        let mlp = dims("double_blocks.0.img_mlp.0.weight")?[0];
        let final_out = dims("final_layer.linear.weight")?[0];
        let (mut depth, mut single) = (0usize, 0usize);
        for k in keys {
            let Some(rest) = k.strip_prefix(prefix) else {
                continue;
            };
            let count = |block: &str, n: &mut usize| {
                if let Some(r) = rest.strip_prefix(block) {
                    if let Some(i) = r.split('.').next().and_then(|i| i.parse::<usize>().ok()) {
                        *n = (*n).max(i + 1);
                    }
                }
            };
            count("double_blocks.", &mut depth);
            count("single_blocks.", &mut single);
        }
        Ok(Config {
            in_channels: img_in_features / (patch_size * patch_size),
            out_channels: final_out / (patch_size * patch_size),
            vec_in_dim: dims("vector_in.in_layer.weight")?[1],
            context_in_dim: dims("txt_in.weight")?[1],
            hidden_size: hidden,
            mlp_ratio: mlp as f64 / hidden as f64,
            num_heads: hidden / head_dim,
            depth,
            depth_single_blocks: single,
            axes_dim: axes_for_head_dim(head_dim),
            theta: 10_000.0,
            patch_size,
            qkv_bias: shape(&format!("{prefix}double_blocks.0.img_attn.qkv.bias")).is_some(),
            guidance_embed: shape(&format!("{prefix}guidance_in.in_layer.weight")).is_some(),
        })
    }
}

/// How Kontext's reference latents are placed in rotary space
/// (`FluxKontextMultiReferenceLatentMethod`; ComfyUI's default is `offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefLatentsMethod {
    #[default]
    Offset,
    Index,
    Uxo,
}

impl RefLatentsMethod {
    /// The method of ComfyUI's `reference_latents_method` value (`uso` is `uxo`'s alias in
    /// the node).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "offset" => Some(RefLatentsMethod::Offset),
            "index" => Some(RefLatentsMethod::Index),
            "uxo" | "uso" => Some(RefLatentsMethod::Uxo),
            _ => None,
        }
    }
}

/// The inputs of one forward (ComfyUI's `Flux.forward` arguments).
#[derive(Debug, Clone, Copy)]
pub struct FluxInputs<'a> {
    /// [B, in_channels, h, w] (any h, w).
    pub x: &'a Tensor,
    /// [B] sigmas (the model multiplies by 1000 itself).
    pub timesteps: &'a Tensor,
    /// [B, T, context_in_dim].
    pub context: &'a Tensor,
    /// [B, ≥ vec_in_dim] pooled text (zeros when absent).
    pub y: Option<&'a Tensor>,
    /// [B] distilled guidance (ignored by models without `guidance_in`).
    pub guidance: Option<&'a Tensor>,
    /// Kontext reference latents, each [B, out_channels, h, w], in model space.
    pub ref_latents: &'a [Tensor],
    pub ref_method: RefLatentsMethod,
}

/// The Flux transformer.
#[derive(Debug, Clone)]
pub struct Flux {
    config: Config,
    img_in: Linear,
    time_in: MlpEmbedder,
    vector_in: MlpEmbedder,
    guidance_in: Option<MlpEmbedder>,
    txt_in: Linear,
    double_blocks: Vec<DoubleStreamBlock>,
    single_blocks: Vec<SingleStreamBlock>,
    final_layer: LastLayer,
    dtype: DType,
    device: Device,
}

/// Pads [B, C, h, w] at the bottom/right to multiples of `p` with circular padding
/// (`common_dit.pad_to_patch_size`: the first rows/columns wrap around).
pub fn pad_to_patch_size(x: &Tensor, p: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ph, pw) = ((p - h % p) % p, (p - w % p) % p);
    let x = if ph > 0 {
        Tensor::cat(&[x, &x.narrow(2, 0, ph)?], 2)?
    } else {
        x.clone()
    };
    if pw > 0 {
        Tensor::cat(&[&x, &x.narrow(3, 0, pw)?], 3)
    } else {
        Ok(x)
    }
}

impl Flux {
    /// Builds the network from `vb` (the keys under ComfyUI's bare BFL names).
    pub fn new(vb: VarBuilder, config: &Config) -> Result<Self> {
        let heads = config.num_heads;
        let double_blocks = (0..config.depth)
            .map(|i| DoubleStreamBlock::new(&vb.pp(format!("double_blocks.{i}")), heads))
            .collect::<Result<_>>()?;
        let single_blocks = (0..config.depth_single_blocks)
            .map(|i| SingleStreamBlock::new(&vb.pp(format!("single_blocks.{i}")), heads))
            .collect::<Result<_>>()?;
        let guidance_in = if config.guidance_embed {
            Some(MlpEmbedder::new(&vb.pp("guidance_in"))?)
        } else {
            None
        };
        Ok(Flux {
            config: config.clone(),
            img_in: linear(&vb, "img_in")?,
            time_in: MlpEmbedder::new(&vb.pp("time_in"))?,
            vector_in: MlpEmbedder::new(&vb.pp("vector_in"))?,
            guidance_in,
            txt_in: linear(&vb, "txt_in")?,
            double_blocks,
            single_blocks,
            final_layer: LastLayer::new(&vb.pp("final_layer"))?,
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

    /// `process_img`: tokens [B, h'·w', C·4] of the padded latent, and their ids
    /// (index, row + h_offset, column + w_offset) with offsets in latent pixels.
    fn process_img(
        &self,
        x: &Tensor,
        index: f32,
        h_offset: usize,
        w_offset: usize,
    ) -> Result<(Tensor, Vec<[f32; 3]>)> {
        let p = self.config.patch_size;
        let x = pad_to_patch_size(x, p)?;
        let (b, c, h, w) = x.dims4()?;
        let (hl, wl) = (h / p, w / p);
        let tokens = x
            .reshape((b, c, hl, p, wl, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, hl * wl, c * p * p))?;
        let (ho, wo) = ((h_offset + p / 2) / p, (w_offset + p / 2) / p);
        let mut ids = Vec::with_capacity(hl * wl);
        for r in 0..hl {
            for col in 0..wl {
                ids.push([index, (r + ho) as f32, (col + wo) as f32]);
            }
        }
        Ok((tokens, ids))
    }

    /// The prediction for `inputs.x` (same shape as x, out_channels).
    pub fn forward(&self, inputs: &FluxInputs) -> Result<Tensor> {
        self.forward_skipping(inputs, &[], &[])
    }

    /// [`Self::forward`] with the listed double and single blocks replaced by the identity
    /// (skip-layer guidance's `dit` `double_block` / `single_block` patches).
    pub fn forward_skipping(
        &self,
        inputs: &FluxInputs,
        skip_double: &[usize],
        skip_single: &[usize],
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let x = inputs.x.to_dtype(self.dtype)?;
        let (b, _, h, w) = x.dims4()?;
        let p = cfg.patch_size;
        let (hl, wl) = (h.div_ceil(p), w.div_ceil(p));
        let (mut img, mut img_ids) = self.process_img(&x, 0.0, 0, 0)?;
        let img_tokens = img.dim(1)?;
        if !inputs.ref_latents.is_empty() {
            let (mut hh, mut ww, mut index) = (0usize, 0usize, 0f32);
            let mut parts = vec![img];
            for r in inputs.ref_latents {
                let r = r.to_dtype(self.dtype)?;
                let (rh, rw) = (r.dim(2)?, r.dim(3)?);
                let (h_off, w_off);
                match inputs.ref_method {
                    RefLatentsMethod::Index => {
                        index += 1.0;
                        (h_off, w_off) = (0, 0);
                    }
                    RefLatentsMethod::Uxo => {
                        index = 0.0;
                        h_off = hl * p + hh;
                        w_off = wl * p + ww;
                        hh += rh;
                        ww += rw;
                    }
                    RefLatentsMethod::Offset => {
                        index = 1.0;
                        if rh + hh > rw + ww {
                            (h_off, w_off) = (0, ww);
                        } else {
                            (h_off, w_off) = (hh, 0);
                        }
                        hh = hh.max(rh + h_off);
                        ww = ww.max(rw + w_off);
                    }
                }
                let r = match r.dim(0)? {
                    rb if rb == b => r,
                    1 => r.repeat((b, 1, 1, 1))?,
                    rb => candle_core::bail!(
                        "a reference latent batch of {rb} does not match the latent batch {b}"
                    ),
                };
                let (tokens, ids) = self.process_img(&r, index, h_off, w_off)?;
                parts.push(tokens);
                img_ids.extend(ids);
            }
            img = Tensor::cat(&parts, 1)?;
        }
        let context = inputs.context.to_dtype(self.dtype)?;
        let n_txt = context.dim(1)?;

        let img = self.img_in.forward(&img)?;
        let ts = inputs.timesteps.to_dtype(DType::F32)?;
        let mut vec = self
            .time_in
            .forward(&timestep_embedding(&ts, 256)?.to_dtype(self.dtype)?)?;
        if let (Some(g_in), Some(g)) = (&self.guidance_in, inputs.guidance) {
            let ge = timestep_embedding(&g.to_dtype(DType::F32)?, 256)?.to_dtype(self.dtype)?;
            vec = (vec + g_in.forward(&ge)?)?;
        }
        let y = match inputs.y {
            Some(y) => y.to_dtype(self.dtype)?.narrow(1, 0, cfg.vec_in_dim)?,
            None => Tensor::zeros((b, cfg.vec_in_dim), self.dtype, &self.device)?,
        };
        let vec = (vec + self.vector_in.forward(&y)?)?;
        let mut txt = self.txt_in.forward(&context)?;

        let mut ids = vec![[0f32; 3]; n_txt];
        ids.extend(img_ids);
        let pe = rope_tensor(&ids, &cfg.axes_dim, cfg.theta, &self.device)?;

        let mut img = img;
        for (i, block) in self.double_blocks.iter().enumerate() {
            if !skip_double.contains(&i) {
                (img, txt) = block.forward(&img, &txt, &vec, &pe)?;
            }
        }
        let mut joint = Tensor::cat(&[&txt, &img], 1)?;
        for (i, block) in self.single_blocks.iter().enumerate() {
            if !skip_single.contains(&i) {
                joint = block.forward(&joint, &vec, &pe)?;
            }
        }
        let img = joint.narrow(1, n_txt, img_tokens)?;
        let out = self.final_layer.forward(&img, &vec)?;
        let oc = cfg.out_channels;
        out.reshape((b, hl, wl, oc, p, p))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, oc, hl * p, wl * p))?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fp8::{decode_slice, encode_e4m3fn, Fp8Kind};
    use std::collections::HashMap;

    /// The wide tensors of a mostly-fp8 file end up as torch's fp8 e4m3fn of their values;
    /// fp8 tensors and tensors outside the prefix are untouched.
    #[test]
    fn wide_params_round_to_fp8_like_torch() {
        let cpu = Device::Cpu;
        let vals = [1.02f32, -0.3, 0.0137, 300.0, 1.0e-4, 0.0];
        let bias = Tensor::new(&vals[..], &cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let w = Tensor::ones((4, 4), DType::F32, &cpu)
            .unwrap()
            .to_dtype(DType::F8E4M3)
            .unwrap();
        let mut m: HashMap<String, Tensor> = HashMap::new();
        m.insert("d.img_in.weight".into(), w.clone());
        m.insert("d.img_in.bias".into(), bias.clone());
        m.insert("other.bias".into(), bias.clone());
        assert!(mostly_fp8(&m, "d."));
        assert!(!mostly_fp8(&m, "other."));
        assert_eq!(round_wide_params_to_fp8(&mut m, "d.").unwrap(), 1);
        let got = &m["d.img_in.bias"];
        assert_eq!(got.dtype(), DType::F8E4M3);
        let want_bytes: Vec<u8> = bias
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(encode_e4m3fn)
            .collect();
        let want = decode_slice(Fp8Kind::E4m3fn, &want_bytes);
        assert_eq!(
            got.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            want
        );
        assert_eq!(want[0], 1.0); // 1.02 is within half an fp8 step (1/16) of 1
        assert_eq!(m["other.bias"].dtype(), DType::BF16);
        assert_eq!(m["d.img_in.weight"].dtype(), DType::F8E4M3);
    }
}
