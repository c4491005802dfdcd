//! SRVGGNetCompact (Real-ESRGAN Compact, e.g. realesr-general-x4v3) as spandrel runs it:
//! `body.0` conv, PReLU, `num_conv` × (conv, PReLU), the last conv to `out · scale²`
//! channels, pixel shuffle, plus the nearest-upsampled input (the network learns the
//! residual). Convs 3×3, padding 1; PReLU slopes per channel. On the CPU the convs and
//! PReLUs run fused on [`super::planes`].

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::detect::CompactConfig;
use super::pixel_shuffle;
use super::planes::{Activation, Conv3x3, Planes};
use crate::models::nn::{conv, stored, Conv2d};

enum Body {
    /// (conv, PReLU slopes as [1, C, 1, 1]) for every conv but the last, then the last.
    Candle(Vec<(Conv2d, Tensor)>, Conv2d),
    /// (conv, PReLU slopes) for every conv but the last, then the last.
    Planes(Vec<(Conv3x3, Vec<f32>)>, Conv3x3),
}

/// A loaded SRVGGNetCompact.
pub struct SrvggNet {
    config: CompactConfig,
    body: Body,
}

/// torch's PReLU: `x` where `x > 0`, else `slope · x`, computed as
/// `relu(x) + slope · min(x, 0)` (each term exact, so the sum is too).
fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let neg = x.minimum(0f32)?.broadcast_mul(slope)?;
    x.relu()? + neg
}

impl SrvggNet {
    pub fn new(vb: &VarBuilder, config: CompactConfig) -> Result<Self> {
        let slope = |i: usize| vb.get(config.nf, &format!("body.{}.weight", 2 * i + 1));
        let last = format!("body.{}", 2 * config.num_conv + 2);
        let body = if vb.device().is_cpu() {
            let c3 = |name: &str| -> Result<Conv3x3> {
                let vb = vb.pp(name);
                let bias = if vb.contains_tensor("bias") {
                    Some(stored(&vb, "bias")?)
                } else {
                    None
                };
                Conv3x3::new(&stored(&vb, "weight")?, bias.as_ref())
            };
            let body = (0..=config.num_conv)
                .map(|i| {
                    let s = slope(i)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                    Ok((c3(&format!("body.{}", 2 * i))?, s))
                })
                .collect::<Result<_>>()?;
            Body::Planes(body, c3(&last)?)
        } else {
            let body = (0..=config.num_conv)
                .map(|i| {
                    let c = conv(vb, &format!("body.{}", 2 * i), 1, 1)?;
                    Ok((c, slope(i)?.reshape((1, config.nf, 1, 1))?))
                })
                .collect::<Result<_>>()?;
            Body::Candle(body, conv(vb, &last, 1, 1)?)
        };
        Ok(SrvggNet { config, body })
    }

    pub fn config(&self) -> &CompactConfig {
        &self.config
    }

    /// `x` [B, C, H, W] → [B, out, H·scale, W·scale].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.body {
            Body::Candle(body, last) => {
                let mut y = x.clone();
                for (c, slope) in body {
                    y = prelu(&c.forward(&y)?, &slope.to_dtype(y.dtype())?)?;
                }
                last.forward(&y)?
            }
            Body::Planes(body, last) => {
                let x = x.to_dtype(DType::F32)?;
                let images = (0..x.dim(0)?)
                    .map(|i| {
                        let mut y = Planes::from_tensor(&x.narrow(0, i, 1)?)?;
                        for (c, slopes) in body {
                            let mut z = Planes::zeros(c.c_out(), y.h(), y.w());
                            c.forward_into(&y, &mut z, Activation::PRelu, slopes)?;
                            y = z;
                        }
                        let mut z = Planes::zeros(last.c_out(), y.h(), y.w());
                        last.forward_into(&y, &mut z, Activation::None, &[])?;
                        z.to_tensor(last.c_out())
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&images, 0)?
            }
        };
        let s = self.config.scale;
        let y = pixel_shuffle(&y, s)?;
        let (_, _, h, w) = x.dims4()?;
        let base = x.upsample_nearest2d(h * s, w * s)?;
        y + base
    }
}
