//! The cldm `ControlNet` network (`comfy/cldm/cldm.py`): the UNet's encoder half over the
//! noisy latent, with the encoded hint image added after input block 0, and a 1×1 conv
//! after every input block and after the middle block whose outputs are the residuals.
//!
//! Built from LDM key names (`input_blocks.N.M.*`, `input_hint_block.{0,2,…,14}`,
//! `zero_convs.N.0`, `middle_block_out.0`), structure read from the keys like the UNet's.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};

use super::ControlResiduals;
use crate::models::nn::linear::{linear, Linear};
use crate::models::nn::{conv, has, silu, Conv2d};
use crate::models::unet::{timestep_embedding, Block, UnetConfig};
use crate::models::{ModelError, Result};

/// The hint encoder's convs: `input_hint_block.{2i}`, SiLU between them; stride 2 at
/// indices 4, 8 and 12 (so the hint is 8× the latent).
const HINT_STRIDES: [usize; 8] = [1, 1, 2, 1, 2, 1, 2, 1];

struct Inner {
    config: UnetConfig,
    hint_channels: usize,
    time_embed_0: Linear,
    time_embed_2: Linear,
    label_emb: Option<(Linear, Linear)>,
    hint: Vec<Conv2d>,
    input_blocks: Vec<Block>,
    zero_convs: Vec<Conv2d>,
    middle: Block,
    middle_out: Conv2d,
    dtype: DType,
    device: Device,
}

/// A loaded ControlNet network. Cheap to clone.
#[derive(Clone)]
pub struct ControlNet(Arc<Inner>);

impl std::fmt::Debug for ControlNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ControlNet(model_channels {}, context {:?}, adm {:?}, {} input blocks)",
            self.0.config.model_channels,
            self.0.config.context_dim,
            self.0.config.adm_in_channels,
            self.0.input_blocks.len()
        )
    }
}

impl ControlNet {
    /// Builds the network from LDM-named weights under `prefix` (`""` or
    /// `"control_model."`).
    pub fn from_weights(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let config = UnetConfig::detect_encoder(weights, prefix)?;
        let hint_key = format!("{prefix}input_hint_block.0.weight");
        let hint_channels = weights
            .get(&hint_key)
            .ok_or_else(|| ModelError::MissingKey(hint_key.clone()))?
            .dim(1)?;
        let vb = crate::models::nn::weights_vb(weights.clone(), dtype, device);
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let hint = HINT_STRIDES
            .iter()
            .enumerate()
            .map(|(i, &s)| conv(&vb, &format!("input_hint_block.{}", 2 * i), s, 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut input_blocks = Vec::new();
        let mut zero_convs = Vec::new();
        let mut i = 0;
        while has(&vb.pp(format!("input_blocks.{i}")), "0.weight")
            || has(&vb.pp(format!("input_blocks.{i}.0")), "in_layers.0.weight")
            || has(&vb.pp(format!("input_blocks.{i}.0")), "op.weight")
        {
            input_blocks.push(Block::new(&vb.pp(format!("input_blocks.{i}")), &config)?);
            zero_convs.push(conv(&vb, &format!("zero_convs.{i}.0"), 1, 0)?);
            i += 1;
        }
        if input_blocks.is_empty() {
            return Err(ModelError::NotSupported(
                "the ControlNet has no input blocks".into(),
            ));
        }
        let label_emb = match config.adm_in_channels {
            Some(_) => Some((linear(&vb, "label_emb.0.0")?, linear(&vb, "label_emb.0.2")?)),
            None => None,
        };
        Ok(ControlNet(Arc::new(Inner {
            time_embed_0: linear(&vb, "time_embed.0")?,
            time_embed_2: linear(&vb, "time_embed.2")?,
            label_emb,
            hint,
            input_blocks,
            zero_convs,
            middle: Block::new(&vb.pp("middle_block"), &config)?,
            middle_out: conv(&vb, "middle_block_out.0", 1, 0)?,
            config,
            hint_channels,
            dtype,
            device: device.clone(),
        })))
    }

    pub fn config(&self) -> &UnetConfig {
        &self.0.config
    }

    /// Channels of the hint image the network takes (3 for RGB hints).
    pub fn hint_channels(&self) -> usize {
        self.0.hint_channels
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// `ControlNet.forward(x, hint, timesteps, context, y)`: `x` [B, C, h, w] already
    /// `calculate_input`-scaled, `hint` [b, hint_channels, 8h, 8w] with b = B or 1,
    /// `timesteps` [B], `context` [B, T, D], `y` [B, adm] for SDXL ControlNets. Returns
    /// `{"middle": [mid], "output": [zc_0 … zc_n]}` in f32 on the input's device.
    pub fn forward(
        &self,
        x: &Tensor,
        hint: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<ControlResiduals> {
        let m = &self.0;
        let (out_dtype, out_device) = (DType::F32, x.device().clone());
        let (b, _, h, w) = x.dims4()?;
        let (_, hc, hh, hw) = hint.dims4()?;
        if hc != m.hint_channels || (hh, hw) != (h * 8, w * 8) {
            return Err(ModelError::BadInput(format!(
                "the ControlNet hint is {:?}; this ControlNet takes {} channels at 8× the \
                 latent ({}x{})",
                hint.dims(),
                m.hint_channels,
                w * 8,
                h * 8
            )));
        }
        let t: Vec<f32> = timesteps.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let t = if t.len() == 1 { vec![t[0]; b] } else { t };
        let temb = timestep_embedding(&t, m.config.model_channels, &m.device)?.to_dtype(m.dtype)?;
        let mut emb = m
            .time_embed_2
            .forward(&silu(&m.time_embed_0.forward(&temb)?)?)?;
        // The hint encoder (it does not use the embedding).
        let mut g = hint.to_device(&m.device)?.to_dtype(m.dtype)?;
        let last = m.hint.len() - 1;
        for (i, c) in m.hint.iter().enumerate() {
            g = c.forward(&g)?;
            if i != last {
                g = silu(&g)?;
            }
        }
        match (&m.label_emb, y) {
            (Some((l0, l2)), Some(y)) => {
                let y = y.to_device(&m.device)?.to_dtype(m.dtype)?;
                let adm = m.config.adm_in_channels.unwrap_or(0);
                if y.dims() != [b, adm] {
                    return Err(ModelError::BadInput(format!(
                        "the ADM input y is {:?}, the ControlNet takes [{b}, {adm}]",
                        y.dims()
                    )));
                }
                emb = (emb + l2.forward(&silu(&l0.forward(&y)?)?)?)?;
            }
            (Some(_), None) => {
                return Err(ModelError::BadInput(
                    "this ControlNet (SDXL) needs the model's ADM vector y; the model being \
                     sampled gives none: use it with an SDXL model"
                        .into(),
                ))
            }
            (None, _) => {}
        }
        if let Some(ctx_dim) = m.config.context_dim {
            let got = context.dims().last().copied().unwrap_or(0);
            if got != ctx_dim {
                return Err(ModelError::BadInput(format!(
                    "the conditioning has {got} channels but this ControlNet's cross-attention \
                     takes {ctx_dim}: the ControlNet does not belong to this model family"
                )));
            }
        }
        let mut context = context.to_device(&m.device)?.to_dtype(m.dtype)?;
        if context.dim(0)? != b {
            context = context.repeat((b / context.dim(0)?.max(1), 1, 1))?;
        }
        let mut h = x.to_device(&m.device)?.to_dtype(m.dtype)?;
        let mut output = Vec::with_capacity(m.input_blocks.len());
        for (i, (blk, zc)) in m.input_blocks.iter().zip(&m.zero_convs).enumerate() {
            h = blk.forward(&h, &emb, &context, None)?;
            if i == 0 {
                h = h.broadcast_add(&g)?;
            }
            output.push(Some(
                zc.forward(&h)?
                    .to_dtype(out_dtype)?
                    .to_device(&out_device)?,
            ));
        }
        h = m.middle.forward(&h, &emb, &context, None)?;
        let mid = m
            .middle_out
            .forward(&h)?
            .to_dtype(out_dtype)?
            .to_device(&out_device)?;
        Ok(ControlResiduals {
            input: Vec::new(),
            middle: vec![Some(mid)],
            output,
        })
    }
}
