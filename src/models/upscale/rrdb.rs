//! ESRGAN's RRDBNet as spandrel runs it (old-layout names; new-layout files are renamed by
//! [`super::detect::old_layout_names`] first):
//!
//! ```text
//! [reflect-pad to the unshuffle factor, pixel_unshuffle]          (Real-ESRGAN x2 / x1)
//! fea = model.0(x)
//! t = RRDB × nb (each: 3 dense blocks, out·0.2 + in), then model.1.sub.nb; fea = fea + t
//! per ×2 stage u: nearest ×2, model.{3u}, LeakyReLU 0.2
//! model.{3n+2}, LeakyReLU 0.2, model.{3n+4}                       [crop the padding]
//! ```
//!
//! A dense block: `x1..x4 = lrelu(conv_j(cat(x, x1..x_{j-1})))`, `x5 = conv5(cat(x, x1..x4))`,
//! out `x5·0.2 + x`. All convs 3×3, padding 1, with bias. Weights stay in the file's dtype.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::detect::EsrganConfig;
use super::{leaky_relu, pixel_unshuffle, reflect_pad_to_multiple};
use crate::models::nn::{conv, Conv2d};

struct DenseBlock {
    convs: [Conv2d; 5],
}

impl DenseBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut feats = vec![x.clone()];
        for (j, c) in self.convs.iter().enumerate() {
            let input = Tensor::cat(&feats, 1)?;
            let y = c.forward(&input)?;
            if j == 4 {
                return (y * 0.2)? + x;
            }
            feats.push(leaky_relu(&y, 0.2)?);
        }
        unreachable!("five convs")
    }
}

struct Rrdb {
    blocks: [DenseBlock; 3],
}

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = x.clone();
        for b in &self.blocks {
            out = b.forward(&out)?;
        }
        (out * 0.2)? + x
    }
}

/// A loaded RRDBNet.
pub struct RrdbNet {
    config: EsrganConfig,
    first: Conv2d,
    blocks: Vec<Rrdb>,
    trunk: Conv2d,
    ups: Vec<Conv2d>,
    hr: Conv2d,
    last: Conv2d,
}

impl RrdbNet {
    /// Builds the network from old-layout weights under `vb` (shapes already checked by
    /// detection).
    pub fn new(vb: &VarBuilder, config: EsrganConfig) -> Result<Self> {
        let c3 = |name: String| conv(vb, &name, 1, 1);
        let mut blocks = Vec::with_capacity(config.nb);
        for b in 0..config.nb {
            let dense = |r: usize| -> Result<DenseBlock> {
                let c = |j: usize| c3(format!("model.1.sub.{b}.RDB{r}.conv{j}.0"));
                Ok(DenseBlock {
                    convs: [c(1)?, c(2)?, c(3)?, c(4)?, c(5)?],
                })
            };
            blocks.push(Rrdb {
                blocks: [dense(1)?, dense(2)?, dense(3)?],
            });
        }
        let n = config.upsamples;
        Ok(RrdbNet {
            first: c3("model.0".into())?,
            blocks,
            trunk: c3(format!("model.1.sub.{}", config.nb))?,
            ups: (1..=n)
                .map(|u| c3(format!("model.{}", 3 * u)))
                .collect::<Result<_>>()?,
            hr: c3(format!("model.{}", 3 * n + 2))?,
            last: c3(format!("model.{}", 3 * n + 4))?,
            config,
        })
    }

    pub fn config(&self) -> &EsrganConfig {
        &self.config
    }

    /// `x` [B, C, H, W] → [B, out, H·scale, W·scale].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let input = match self.config.shuffle {
            Some(s) => pixel_unshuffle(&reflect_pad_to_multiple(x, s)?, s)?,
            None => x.clone(),
        };
        let fea = self.first.forward(&input)?;
        let mut t = fea.clone();
        for b in &self.blocks {
            t = b.forward(&t)?;
        }
        let mut y = (fea + self.trunk.forward(&t)?)?;
        for up in &self.ups {
            let (_, _, uh, uw) = y.dims4()?;
            y = y.upsample_nearest2d(uh * 2, uw * 2)?;
            y = leaky_relu(&up.forward(&y)?, 0.2)?;
        }
        y = leaky_relu(&self.hr.forward(&y)?, 0.2)?;
        y = self.last.forward(&y)?;
        if self.config.shuffle.is_some() {
            let s = self.config.scale();
            y = y.narrow(2, 0, h * s)?.narrow(D::Minus1, 0, w * s)?;
        }
        Ok(y)
    }
}
