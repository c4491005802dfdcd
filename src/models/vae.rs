//! The LDM AutoencoderKL (SD VAE), built from LDM names (`encoder.*`,
//! `decoder.*`, `quant_conv`, `post_quant_conv`), computed like ComfyUI:
//!
//! * ResnetBlock: `GN(32, eps 1e-6) → SiLU → conv3×3` twice, 1×1
//!   `nin_shortcut` when channels change;
//! * mid block: res, single-head spatial self-attention (1×1 conv q/k/v,
//!   scale C^-0.5, `proj_out`, residual), res;
//! * Downsample: zero-pad right/bottom by 1, conv3×3 stride 2;
//!   Upsample: nearest ×2, conv3×3.
//!
//! Scaling: [`Vae::decode`] takes and [`Vae::encode`] returns **unscaled**
//! latents (ComfyUI's LATENT type). The family's latent format
//! ([`crate::models::LatentFormat`]: SD1 z·0.18215, SDXL z·0.13025, …) is applied by
//! the sampler (`process_in` before sampling, `process_out` after it), not here.
//! Images are ComfyUI IMAGE tensors `[B, H, W, 3]` f32 in 0..1; decode returns
//! `clamp((x+1)/2, 0, 1)` and encode feeds `x·2 - 1`.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::models::nn::{conv, group_norm, has, Conv2d, GroupNorm};
use crate::models::{ModelError, Result};

/// VAE hyper-parameters detected from the weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaeConfig {
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub z_channels: usize,
    pub has_quant_conv: bool,
}

impl VaeConfig {
    /// Detects the config from weights under `prefix` (e.g. `first_stage_model.`).
    pub fn detect(w: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        let key = |k: &str| format!("{prefix}{k}");
        let dims = |k: &str| {
            w.get(&key(k))
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| ModelError::MissingKey(key(k)))
        };
        let ch = dims("encoder.conv_in.weight")?[0];
        let mut ch_mult = Vec::new();
        let mut level = 0;
        while let Ok(d) = dims(&format!("encoder.down.{level}.block.0.conv1.weight")) {
            ch_mult.push(d[0] / ch);
            level += 1;
        }
        let mut num_res_blocks = 0;
        while w.contains_key(&key(&format!(
            "encoder.down.0.block.{num_res_blocks}.conv1.weight"
        ))) {
            num_res_blocks += 1;
        }
        let z_channels = dims("decoder.conv_in.weight")?[1];
        Ok(VaeConfig {
            ch,
            ch_mult,
            num_res_blocks,
            z_channels,
            has_quant_conv: w.contains_key(&key("post_quant_conv.weight")),
        })
    }

    /// Pixels per latent pixel (8 for SD).
    pub fn downscale(&self) -> usize {
        1 << (self.ch_mult.len().saturating_sub(1))
    }
}

struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(vb: &VarBuilder) -> candle_core::Result<Self> {
        Ok(ResnetBlock {
            norm1: group_norm(vb, "norm1", 1e-6)?,
            conv1: conv(vb, "conv1", 1, 1)?,
            norm2: group_norm(vb, "norm2", 1e-6)?,
            conv2: conv(vb, "conv2", 1, 1)?,
            shortcut: if has(vb, "nin_shortcut.weight") {
                Some(conv(vb, "nin_shortcut", 1, 0)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(vb: &VarBuilder) -> candle_core::Result<Self> {
        Ok(AttnBlock {
            norm: group_norm(vb, "norm", 1e-6)?,
            q: conv(vb, "q", 1, 0)?,
            k: conv(vb, "k", 1, 0)?,
            v: conv(vb, "v", 1, 0)?,
            proj_out: conv(vb, "proj_out", 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = self.norm.forward(x)?;
        let flat = |t: Tensor| t.reshape((b, c, h * w));
        let q = flat(self.q.forward(&hn)?)?.transpose(1, 2)?.contiguous()?; // b, hw, c
        let k = flat(self.k.forward(&hn)?)?; // b, c, hw
        let v = flat(self.v.forward(&hn)?)?; // b, c, hw
        let scale = (c as f64).powf(-0.5);
        let mut outs = Vec::with_capacity(b);
        for i in 0..b {
            let w_ = (q.get(i)?.matmul(&k.get(i)?)? * scale)?; // hw, hw
            let p = candle_nn::ops::softmax_last_dim(&w_)?;
            // out[c, i] = sum_j v[c, j] p[i, j]
            outs.push(v.get(i)?.matmul(&p.t()?)?);
        }
        let o = Tensor::stack(&outs, 0)?.reshape((b, c, h, w))?;
        x + self.proj_out.forward(&o)?
    }
}

struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(vb: &VarBuilder) -> candle_core::Result<Self> {
        Ok(Mid {
            block_1: ResnetBlock::new(&vb.pp("block_1"))?,
            attn_1: AttnBlock::new(&vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(&vb.pp("block_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.block_2
            .forward(&self.attn_1.forward(&self.block_1.forward(x)?)?)
    }
}

struct Level {
    blocks: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    resample: Option<Conv2d>,
}

fn level(
    vb: &VarBuilder,
    n_blocks: usize,
    resample: &str,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Level> {
    let mut blocks = Vec::new();
    let mut attns = Vec::new();
    for i in 0..n_blocks {
        blocks.push(ResnetBlock::new(&vb.pp(format!("block.{i}")))?);
        if has(vb, &format!("attn.{i}.q.weight")) {
            attns.push(AttnBlock::new(&vb.pp(format!("attn.{i}")))?);
        }
    }
    let resample = if has(vb, &format!("{resample}.conv.weight")) {
        Some(conv(&vb.pp(resample), "conv", stride, pad)?)
    } else {
        None
    };
    Ok(Level {
        blocks,
        attns,
        resample,
    })
}

impl Level {
    fn run_blocks(&self, mut x: Tensor) -> candle_core::Result<Tensor> {
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x)?;
            if let Some(a) = self.attns.get(i) {
                x = a.forward(&x)?;
            }
        }
        Ok(x)
    }
}

struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for l in &self.down {
            h = l.run_blocks(h)?;
            if let Some(d) = &l.resample {
                let padded = h.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
                h = d.forward(&padded)?;
            }
        }
        h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    /// Indexed by level (0 = full resolution); run from the last to 0.
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid.forward(&h)?;
        for l in self.up.iter().rev() {
            h = l.run_blocks(h)?;
            if let Some(u) = &l.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = u.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

struct VaeInner {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dtype: DType,
    device: Device,
    /// The weights it was built from, keyed without the prefix (ComfyUI's
    /// `first_stage_model.state_dict()` names), for VAESave / CheckpointSave. The tensors
    /// are shared with the loaded file's map, not copied.
    state_dict: Arc<HashMap<String, Tensor>>,
}

/// The SD VAE. Cheap to clone.
#[derive(Clone)]
pub struct Vae(Arc<VaeInner>);

impl Vae {
    /// Builds the VAE from weights whose keys start with `prefix`
    /// (`first_stage_model.` in a checkpoint, `` in a plain VAE file).
    pub fn from_weights(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let config = VaeConfig::detect(weights, prefix)?;
        let vb = crate::models::nn::weights_vb(weights.clone(), dtype, device);
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let levels = config.ch_mult.len();
        let e = vb.pp("encoder");
        let down = (0..levels)
            .map(|i| {
                level(
                    &e.pp(format!("down.{i}")),
                    config.num_res_blocks,
                    "downsample",
                    2,
                    0,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let encoder = Encoder {
            conv_in: conv(&e, "conv_in", 1, 1)?,
            down,
            mid: Mid::new(&e.pp("mid"))?,
            norm_out: group_norm(&e, "norm_out", 1e-6)?,
            conv_out: conv(&e, "conv_out", 1, 1)?,
        };
        let d = vb.pp("decoder");
        let up = (0..levels)
            .map(|i| {
                level(
                    &d.pp(format!("up.{i}")),
                    config.num_res_blocks + 1,
                    "upsample",
                    1,
                    1,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let decoder = Decoder {
            conv_in: conv(&d, "conv_in", 1, 1)?,
            mid: Mid::new(&d.pp("mid"))?,
            up,
            norm_out: group_norm(&d, "norm_out", 1e-6)?,
            conv_out: conv(&d, "conv_out", 1, 1)?,
        };
        let (quant_conv, post_quant_conv) = if config.has_quant_conv {
            (
                Some(conv(&vb, "quant_conv", 1, 0)?),
                Some(conv(&vb, "post_quant_conv", 1, 0)?),
            )
        } else {
            (None, None)
        };
        let state_dict = weights
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect();
        Ok(Vae(Arc::new(VaeInner {
            config,
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            dtype,
            device: device.clone(),
            state_dict: Arc::new(state_dict),
        })))
    }

    /// The weights the VAE was built from, keyed as in its own state dict (no
    /// `first_stage_model.` prefix), in the file's dtypes.
    pub fn state_dict(&self) -> &HashMap<String, Tensor> {
        &self.0.state_dict
    }

    pub fn config(&self) -> &VaeConfig {
        &self.0.config
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// Decodes unscaled latents [B, z, h, w] to a ComfyUI IMAGE
    /// [B, h·8, w·8, 3] f32 in 0..1 (`clamp((x+1)/2, 0, 1)`, channels last),
    /// on the CPU whatever the VAE's device.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let x = self.decode_raw(latent)?;
        let img = ((x + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
        Ok(img.permute((0, 2, 3, 1))?.contiguous()?)
    }

    /// The decoder's own output for unscaled latents [B, z, h, w]: [B, 3, h·8, w·8] f32 in
    /// about -1..1, channels first, on the CPU (ComfyUI's `first_stage_model.decode`, before
    /// `process_output`; tiled decoding blends these).
    pub fn decode_raw(&self, latent: &Tensor) -> Result<Tensor> {
        let m = &self.0;
        let mut z = latent.to_device(&m.device)?.to_dtype(m.dtype)?;
        if let Some(p) = &m.post_quant_conv {
            z = p.forward(&z)?;
        }
        let x = m.decoder.forward(&z)?.to_dtype(DType::F32)?;
        Ok(x.to_device(&Device::Cpu)?)
    }

    /// The encoder's latent mean for pixels already mapped to -1..1, channels first
    /// [B, 3, H, W] (ComfyUI's `first_stage_model.encode` after `process_input`; no crop):
    /// [B, z, H/8, W/8] f32 on the CPU.
    pub fn encode_raw(&self, x: &Tensor) -> Result<Tensor> {
        let m = &self.0;
        let x = x.to_device(&m.device)?.to_dtype(m.dtype)?;
        let mut moments = m.encoder.forward(&x)?;
        if let Some(q) = &m.quant_conv {
            moments = q.forward(&moments)?;
        }
        let mean = moments.narrow(1, 0, m.config.z_channels)?;
        Ok(mean.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
    }

    /// Encodes a ComfyUI IMAGE [B, H, W, C≥3] (0..1) to unscaled latents
    /// [B, z, H/8, W/8]: center-crops H and W down to multiples of 8 (offset
    /// `(dim % 8) / 2`), uses the first 3 channels, maps to `x·2 - 1`, runs the
    /// encoder and `quant_conv`, and returns the mean of the diagonal Gaussian
    /// (f32, on the CPU).
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        let m = &self.0;
        let (_, h, w, c) = image.dims4()?;
        if c < 3 {
            return Err(ModelError::BadInput(format!(
                "image has {c} channels, need 3"
            )));
        }
        let f = m.config.downscale();
        let (nh, nw) = (h / f * f, w / f * f);
        if nh == 0 || nw == 0 {
            return Err(ModelError::BadInput(format!(
                "image {w}x{h} is smaller than {f} pixels"
            )));
        }
        let img = image
            .narrow(1, (h % f) / 2, nh)?
            .narrow(2, (w % f) / 2, nw)?
            .narrow(3, 0, 3)?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .to_device(&m.device)?
            .to_dtype(m.dtype)?;
        let x = ((img * 2.0)? - 1.0)?;
        self.encode_raw(&x)
    }
}
