//! T2I-Adapters as ComfyUI 0.3.64 loads them through `ControlNetLoader`
//! (`comfy/controlnet.py` `load_t2i_adapter`, `comfy/t2i_adapter/adapter.py`):
//!
//! * the full `Adapter` (TencentARC's `t2iadapter_*_sd14v1/sd15v2`, the SDXL `*_sdxl`
//!   ones): pixel-unshuffle of the hint by 8 (16 for SDXL, recognised by `conv_in` taking
//!   256 or 768 channels), `conv_in`, four levels of 2 residual blocks (channels c, 2c, 4c,
//!   4c read from `conv_in`; the kernel size from `body.0.block2`; a strided conv or an
//!   average pool where a level halves the size, `down_opt.op` present or not);
//! * `Adapter_light` (`body.0.in_conv`): four extractors (1×1 in, 4 light residual blocks,
//!   1×1 out) of widths 320, 640, 1280, 1280, average-pooled between levels;
//! * the diffusers layout (`adapter.body.i.resnets.j.*`), renamed to the above.
//!
//! The features are ComfyUI's `{"input": [...]}` lists (`{"input", "middle"}` for SDXL):
//! one feature per level at the position of the UNet input block it is added to, `None`
//! elsewhere, in the order the UNet pops them. Stable Cascade ControlNets (the other
//! `load_t2i_adapter` branch) are not supported.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};

use super::ControlResiduals;
use crate::models::checkpoint::WeightMap;
use crate::models::nn::{conv, has, Conv2d};
use crate::models::upscale::pixel_unshuffle;
use crate::models::{ModelError, Result};

/// `Downsample(use_conv=False)`: 2×2 average pooling, zero padding of `H % 2` / `W % 2` on
/// both sides counted in the mean (torch's `AvgPool2d` defaults).
fn avg_down(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = x.pad_with_zeros(2, h % 2, h % 2)?;
    let x = x.pad_with_zeros(3, w % 2, w % 2)?;
    Ok(x.avg_pool2d(2)?)
}

enum Down {
    None,
    Conv(Conv2d),
    Pool,
}

impl Down {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Down::None => Ok(x.clone()),
            Down::Conv(c) => Ok(c.forward(x)?),
            Down::Pool => avg_down(x),
        }
    }
}

/// `ResnetBlock` (sk=True): optional down, optional `in_conv` (channel change), then
/// `x + block2(relu(block1(x)))`.
struct ResBlock {
    down: Down,
    in_conv: Option<Conv2d>,
    block1: Conv2d,
    block2: Conv2d,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.down.forward(x)?;
        if let Some(c) = &self.in_conv {
            x = c.forward(&x)?;
        }
        let h = self.block2.forward(&self.block1.forward(&x)?.relu()?)?;
        Ok((h + x)?)
    }
}

/// `extractor` of the light adapter.
struct Extractor {
    down: bool,
    in_conv: Conv2d,
    body: Vec<(Conv2d, Conv2d)>,
    out_conv: Conv2d,
}

impl Extractor {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.down { avg_down(x)? } else { x.clone() };
        let mut x = self.in_conv.forward(&x)?;
        for (b1, b2) in &self.body {
            let h = b2.forward(&b1.forward(&x)?.relu()?)?;
            x = (h + x)?;
        }
        Ok(self.out_conv.forward(&x)?)
    }
}

enum Body {
    Full {
        conv_in: Conv2d,
        /// 4 levels × `nums_rb` blocks.
        blocks: Vec<ResBlock>,
        nums_rb: usize,
    },
    Light(Vec<Extractor>),
}

struct Inner {
    body: Body,
    xl: bool,
    unshuffle: usize,
    /// Channels of the hint image (`cin / unshuffle²`).
    input_channels: usize,
    dtype: DType,
    device: Device,
}

/// A loaded T2I-Adapter. Cheap to clone.
#[derive(Clone)]
pub struct T2iAdapter(Arc<Inner>);

impl std::fmt::Debug for T2iAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match (&self.0.body, self.0.xl) {
            (Body::Light(_), _) => "light",
            (Body::Full { .. }, true) => "full SDXL",
            (Body::Full { .. }, false) => "full",
        };
        write!(
            f,
            "T2iAdapter({kind}, {}-channel hint, unshuffle {})",
            self.0.input_channels, self.0.unshuffle
        )
    }
}

/// Whether a state dict is a T2I-Adapter ComfyUI's `load_t2i_adapter` builds as
/// `Adapter`/`Adapter_light` (after the diffusers renames).
pub fn is_t2i_adapter(sd: &WeightMap) -> bool {
    sd.contains_key("adapter.body.0.resnets.0.block1.weight")
        || sd.contains_key("body.0.in_conv.weight")
        || sd.contains_key("conv_in.weight")
}

/// The diffusers T2I-Adapter names → ComfyUI's (`adapter.body.i.resnets.j.` →
/// `body.{2i+j}.`, `adapter.body.i.` → `body.{2i}.`, `adapter.` → ``).
fn from_diffusers(sd: WeightMap) -> WeightMap {
    let mut out = HashMap::new();
    'keys: for (k, v) in sd {
        for i in 0..4 {
            for j in 0..2 {
                let p = format!("adapter.body.{i}.resnets.{j}.");
                if let Some(rest) = k.strip_prefix(&p) {
                    out.insert(format!("body.{}.{rest}", i * 2 + j), v);
                    continue 'keys;
                }
            }
            let p = format!("adapter.body.{i}.");
            if let Some(rest) = k.strip_prefix(&p) {
                out.insert(format!("body.{}.{rest}", i * 2), v);
                continue 'keys;
            }
        }
        let k = k.strip_prefix("adapter.").map(str::to_string).unwrap_or(k);
        out.insert(k, v);
    }
    out
}

fn dims(sd: &WeightMap, k: &str) -> Result<Vec<usize>> {
    Ok(sd
        .get(k)
        .ok_or_else(|| ModelError::MissingKey(k.to_string()))?
        .dims()
        .to_vec())
}

impl T2iAdapter {
    /// Builds the adapter from a state dict [`is_t2i_adapter`] accepts.
    pub fn from_weights(sd: WeightMap, dtype: DType, device: &Device) -> Result<Self> {
        let sd = if sd.contains_key("adapter.body.0.resnets.0.block1.weight") {
            from_diffusers(sd)
        } else {
            sd
        };
        let vb = crate::models::nn::weights_vb(sd.clone(), dtype, device);
        let conv_k = |name: &str, stride: usize| -> Result<Conv2d> {
            let k = dims(&sd, &format!("{name}.weight"))?;
            Ok(conv(&vb, name, stride, k[2] / 2)?)
        };
        if sd.contains_key("body.0.in_conv.weight") {
            // Adapter_light(cin, channels [320, 640, 1280, 1280], nums_rb 4).
            let cin = dims(&sd, "body.0.in_conv.weight")?[1];
            let mut levels = Vec::new();
            for i in 0..4 {
                let p = format!("body.{i}");
                let mut body = Vec::new();
                let mut k = 0;
                while has(&vb, &format!("{p}.body.{k}.block1.weight")) {
                    body.push((
                        conv_k(&format!("{p}.body.{k}.block1"), 1)?,
                        conv_k(&format!("{p}.body.{k}.block2"), 1)?,
                    ));
                    k += 1;
                }
                levels.push(Extractor {
                    down: i > 0,
                    in_conv: conv_k(&format!("{p}.in_conv"), 1)?,
                    body,
                    out_conv: conv_k(&format!("{p}.out_conv"), 1)?,
                });
            }
            return Ok(T2iAdapter(Arc::new(Inner {
                body: Body::Light(levels),
                xl: false,
                unshuffle: 8,
                input_channels: cin / 64,
                dtype,
                device: device.clone(),
            })));
        }
        // Adapter(cin, [c, 2c, 4c, 4c], nums_rb 2, ksize, sk=True, use_conv, xl).
        let ci = dims(&sd, "conv_in.weight")?;
        let cin = ci[1];
        let xl = cin == 256 || cin == 768;
        let unshuffle = if xl { 16 } else { 8 };
        let nums_rb = 2;
        let down_at: &[usize] = if xl { &[2] } else { &[3, 2, 1] };
        let mut blocks = Vec::new();
        for i in 0..4 {
            for j in 0..nums_rb {
                let p = format!("body.{}", i * nums_rb + j);
                let down = if j == 0 && down_at.contains(&i) {
                    if sd.contains_key(&format!("{p}.down_opt.op.weight")) {
                        Down::Conv(conv(&vb, &format!("{p}.down_opt.op"), 2, 1)?)
                    } else {
                        Down::Pool
                    }
                } else {
                    Down::None
                };
                let in_conv = if sd.contains_key(&format!("{p}.in_conv.weight")) {
                    Some(conv_k(&format!("{p}.in_conv"), 1)?)
                } else {
                    None
                };
                if sd.contains_key(&format!("{p}.skep.weight")) {
                    return Err(ModelError::NotSupported(
                        "a T2I-Adapter with `skep` convolutions (sk=False); ComfyUI's \
                         loader builds every full adapter with sk=True"
                            .into(),
                    ));
                }
                blocks.push(ResBlock {
                    down,
                    in_conv,
                    block1: conv_k(&format!("{p}.block1"), 1)?,
                    block2: conv_k(&format!("{p}.block2"), 1)?,
                });
            }
        }
        Ok(T2iAdapter(Arc::new(Inner {
            body: Body::Full {
                conv_in: conv(&vb, "conv_in", 1, 1)?,
                blocks,
                nums_rb,
            },
            xl,
            unshuffle,
            input_channels: cin / (unshuffle * unshuffle),
            dtype,
            device: device.clone(),
        })))
    }

    /// Channels of the hint image (3 for colour hints, 1 for sketch/depth-style ones, whose
    /// RGB hint is averaged to one channel).
    pub fn input_channels(&self) -> usize {
        self.0.input_channels
    }

    /// The pixel-unshuffle factor (8, or 16 for SDXL adapters).
    pub fn unshuffle_amount(&self) -> usize {
        self.0.unshuffle
    }

    pub fn is_xl(&self) -> bool {
        self.0.xl
    }

    /// `scale_image_to`: the hint size for a `width`×`height` image, rounded up to the
    /// unshuffle factor.
    pub fn scale_image_to(&self, width: usize, height: usize) -> (usize, usize) {
        let u = self.0.unshuffle;
        (width.div_ceil(u) * u, height.div_ceil(u) * u)
    }

    /// The adapter's features for a hint [B, input_channels, H, W] (H, W multiples of the
    /// unshuffle factor): ComfyUI's `{"input": [...]}` (plus `"middle"` for SDXL), f32 on the
    /// hint's device.
    pub fn forward(&self, hint: &Tensor) -> Result<ControlResiduals> {
        let m = &self.0;
        let (_, c, h, w) = hint.dims4()?;
        if c != m.input_channels || h % m.unshuffle != 0 || w % m.unshuffle != 0 {
            return Err(ModelError::BadInput(format!(
                "the T2I-Adapter hint is {:?}; this adapter takes {} channels at a multiple \
                 of {} pixels",
                hint.dims(),
                m.input_channels,
                m.unshuffle
            )));
        }
        let out_device = hint.device().clone();
        let x = hint.to_device(&m.device)?.to_dtype(m.dtype)?;
        let x = pixel_unshuffle(&x, m.unshuffle)?;
        let keep = |t: &Tensor| -> Result<Option<Tensor>> {
            Ok(Some(t.to_dtype(DType::F32)?.to_device(&out_device)?))
        };
        let mut features: Vec<Option<Tensor>> = Vec::new();
        match &m.body {
            Body::Full {
                conv_in,
                blocks,
                nums_rb,
            } => {
                let mut x = conv_in.forward(&x)?;
                for i in 0..4 {
                    for j in 0..*nums_rb {
                        x = blocks[i * nums_rb + j].forward(&x)?;
                    }
                    if m.xl {
                        features.push(None);
                        if i == 0 {
                            features.push(None);
                            features.push(None);
                        }
                        if i == 2 {
                            features.push(None);
                        }
                    } else {
                        features.push(None);
                        features.push(None);
                    }
                    features.push(keep(&x)?);
                }
            }
            Body::Light(levels) => {
                let mut x = x;
                for e in levels {
                    x = e.forward(&x)?;
                    features.push(None);
                    features.push(None);
                    features.push(keep(&x)?);
                }
            }
        }
        features.reverse();
        Ok(if m.xl {
            let input = features.split_off(1);
            ControlResiduals {
                input,
                middle: features,
                output: Vec::new(),
            }
        } else {
            ControlResiduals {
                input: features,
                middle: Vec::new(),
                output: Vec::new(),
            }
        })
    }
}
