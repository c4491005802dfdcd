//! SRVGGNetCompact (Real-ESRGAN Compact, e.g. realesr-general-x4v3) as spandrel runs it:
//! `body.0` conv, PReLU, `num_conv` × (conv, PReLU), the last conv to `out · scale²`
//! channels, pixel shuffle, plus the nearest-upsampled input (the network learns the
//! residual). Convs 3×3, padding 1; PReLU slopes per channel.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::detect::CompactConfig;
use super::pixel_shuffle;
use crate::models::nn::{conv, Conv2d};

/// A loaded SRVGGNetCompact.
pub struct SrvggNet {
    config: CompactConfig,
    /// (conv, PReLU slopes as [1, C, 1, 1]) for every conv but the last.
    body: Vec<(Conv2d, Tensor)>,
    last: Conv2d,
}

/// torch's PReLU: `x` where `x > 0`, else `slope · x`, computed as
/// `relu(x) + slope · min(x, 0)` (each term exact, so the sum is too).
fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let neg = x.minimum(0f32)?.broadcast_mul(slope)?;
    x.relu()? + neg
}

impl SrvggNet {
    pub fn new(vb: &VarBuilder, config: CompactConfig) -> Result<Self> {
        let mut body = Vec::with_capacity(config.num_conv + 1);
        for i in 0..=config.num_conv {
            let c = conv(vb, &format!("body.{}", 2 * i), 1, 1)?;
            let slope = vb
                .get(config.nf, &format!("body.{}.weight", 2 * i + 1))?
                .reshape((1, config.nf, 1, 1))?;
            body.push((c, slope));
        }
        let last = conv(vb, &format!("body.{}", 2 * config.num_conv + 2), 1, 1)?;
        Ok(SrvggNet { config, body, last })
    }

    pub fn config(&self) -> &CompactConfig {
        &self.config
    }

    /// `x` [B, C, H, W] → [B, out, H·scale, W·scale].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for (c, slope) in &self.body {
            y = prelu(&c.forward(&y)?, &slope.to_dtype(y.dtype())?)?;
        }
        let s = self.config.scale;
        let y = pixel_shuffle(&self.last.forward(&y)?, s)?;
        let (_, _, h, w) = x.dims4()?;
        let base = x.upsample_nearest2d(h * s, w * s)?;
        y + base
    }
}
