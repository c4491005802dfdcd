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
//! out `x5·0.2 + x`. All convs 3×3, padding 1, with bias.
//!
//! On the CPU the network runs on [`super::planes`] (weights repacked to f32 per tap at
//! load, features in zero-bordered planes, LeakyReLU fused into the convs); elsewhere it runs
//! as candle tensors with the weights in the file's dtype, widened per conv.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::detect::EsrganConfig;
use super::planes::{Activation, Conv3x3, Planes};
use super::{leaky_relu, pixel_unshuffle, reflect_pad_to_multiple};
use crate::models::nn::{conv, stored, Conv2d};

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

/// The convs as candle modules (any device, weights in the file's dtype).
struct CandleBody {
    first: Conv2d,
    blocks: Vec<Rrdb>,
    trunk: Conv2d,
    ups: Vec<Conv2d>,
    hr: Conv2d,
    last: Conv2d,
}

/// The convs repacked for [`super::planes`] (CPU, f32).
struct PlanesBody {
    first: Conv3x3,
    /// Per RRDB: 3 dense blocks of 5 convs.
    blocks: Vec<[[Conv3x3; 5]; 3]>,
    trunk: Conv3x3,
    ups: Vec<Conv3x3>,
    hr: Conv3x3,
    last: Conv3x3,
}

enum Body {
    Candle(Box<CandleBody>),
    Planes(Box<PlanesBody>),
}

/// A loaded RRDBNet.
pub struct RrdbNet {
    config: EsrganConfig,
    body: Body,
}

/// Old-layout names of every conv, in the order [`RrdbNet::new`] builds them.
struct Names {
    first: String,
    /// `[rrdb][dense][conv]`
    blocks: Vec<[[String; 5]; 3]>,
    trunk: String,
    ups: Vec<String>,
    hr: String,
    last: String,
}

impl Names {
    fn new(config: &EsrganConfig) -> Self {
        let n = config.upsamples;
        Names {
            first: "model.0".into(),
            blocks: (0..config.nb)
                .map(|b| {
                    std::array::from_fn(|r| {
                        std::array::from_fn(|j| {
                            format!("model.1.sub.{b}.RDB{}.conv{}.0", r + 1, j + 1)
                        })
                    })
                })
                .collect(),
            trunk: format!("model.1.sub.{}", config.nb),
            ups: (1..=n).map(|u| format!("model.{}", 3 * u)).collect(),
            hr: format!("model.{}", 3 * n + 2),
            last: format!("model.{}", 3 * n + 4),
        }
    }
}

impl RrdbNet {
    /// Builds the network from old-layout weights under `vb` (shapes already checked by
    /// detection): on the CPU for the planes engine, elsewhere as candle convs.
    pub fn new(vb: &VarBuilder, config: EsrganConfig) -> Result<Self> {
        let names = Names::new(&config);
        let body = if vb.device().is_cpu() {
            Body::Planes(Box::new(PlanesBody::new(vb, &names)?))
        } else {
            Body::Candle(Box::new(CandleBody::new(vb, &names)?))
        };
        Ok(RrdbNet { config, body })
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
        let mut y = match &self.body {
            Body::Candle(body) => body.forward(&input)?,
            Body::Planes(body) => {
                let input = input.to_dtype(candle_core::DType::F32)?;
                let images = (0..input.dim(0)?)
                    .map(|i| body.forward(&input.narrow(0, i, 1)?, &self.config))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&images, 0)?
            }
        };
        if self.config.shuffle.is_some() {
            let s = self.config.scale();
            y = y.narrow(2, 0, h * s)?.narrow(D::Minus1, 0, w * s)?;
        }
        Ok(y)
    }
}

impl CandleBody {
    fn new(vb: &VarBuilder, names: &Names) -> Result<Self> {
        let c3 = |name: &String| conv(vb, name, 1, 1);
        let blocks = names
            .blocks
            .iter()
            .map(|rrdb| -> Result<Rrdb> {
                let dense = |r: usize| -> Result<DenseBlock> {
                    let c = |j: usize| c3(&rrdb[r][j]);
                    Ok(DenseBlock {
                        convs: [c(0)?, c(1)?, c(2)?, c(3)?, c(4)?],
                    })
                };
                Ok(Rrdb {
                    blocks: [dense(0)?, dense(1)?, dense(2)?],
                })
            })
            .collect::<Result<_>>()?;
        Ok(CandleBody {
            first: c3(&names.first)?,
            blocks,
            trunk: c3(&names.trunk)?,
            ups: names.ups.iter().map(c3).collect::<Result<_>>()?,
            hr: c3(&names.hr)?,
            last: c3(&names.last)?,
        })
    }

    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let fea = self.first.forward(input)?;
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
        self.last.forward(&y)
    }
}

impl PlanesBody {
    fn new(vb: &VarBuilder, names: &Names) -> Result<Self> {
        let c3 = |name: &String| -> Result<Conv3x3> {
            let vb = vb.pp(name);
            let weight = stored(&vb, "weight")?;
            let bias = if vb.contains_tensor("bias") {
                Some(stored(&vb, "bias")?)
            } else {
                None
            };
            Conv3x3::new(&weight, bias.as_ref())
        };
        let blocks = names
            .blocks
            .iter()
            .map(|rrdb| -> Result<[[Conv3x3; 5]; 3]> {
                let dense = |r: usize| -> Result<[Conv3x3; 5]> {
                    let c = |j: usize| c3(&rrdb[r][j]);
                    Ok([c(0)?, c(1)?, c(2)?, c(3)?, c(4)?])
                };
                Ok([dense(0)?, dense(1)?, dense(2)?])
            })
            .collect::<Result<_>>()?;
        Ok(PlanesBody {
            first: c3(&names.first)?,
            blocks,
            trunk: c3(&names.trunk)?,
            ups: names.ups.iter().map(c3).collect::<Result<_>>()?,
            hr: c3(&names.hr)?,
            last: c3(&names.last)?,
        })
    }

    /// One image [1, C, H, W] (f32) through the network.
    fn forward(&self, x: &Tensor, config: &EsrganConfig) -> Result<Tensor> {
        let (nf, gc) = (config.nf, config.gc);
        let (_, _, h, w) = x.dims4()?;
        let leaky = Activation::Leaky(0.2);
        // A dense block's buffer: x in planes 0..nf, then x1..x4 (gc planes each).
        let width = nf + 4 * gc;
        let mut a = Planes::zeros(width, h, w);
        self.first
            .forward_into(&Planes::from_tensor(x)?, &mut a, Activation::None, &[])?;
        let fea = a.head(nf);
        // The current RRDB's input, for its residual.
        let mut rrdb_in = a.head(nf);
        let mut b = Planes::zeros(width, h, w);
        for rrdb in &self.blocks {
            for dense in rrdb {
                for (j, c) in dense[..4].iter().enumerate() {
                    c.forward_within(&mut a, nf + j * gc, leaky)?;
                }
                dense[4].forward_into(&a, &mut b, Activation::None, &[])?;
                // x5·0.2 + x
                b.scale_add(0.2, &a, nf);
                std::mem::swap(&mut a, &mut b);
            }
            // out·0.2 + the RRDB's input, which is also the next RRDB's input.
            a.scale_add_into_both(0.2, &mut rrdb_in, nf);
        }
        drop((b, rrdb_in));
        let mut y = Planes::zeros(nf, h, w);
        self.trunk.forward_into(&a, &mut y, Activation::None, &[])?;
        drop(a);
        // fea + trunk (an exact sum either way round).
        y.add(&fea, nf);
        drop(fea);
        for up in &self.ups {
            let u = y.upsample2(nf);
            drop(y);
            let mut z = Planes::zeros(up.c_out(), u.h(), u.w());
            up.forward_into(&u, &mut z, leaky, &[])?;
            y = z;
        }
        let mut z = Planes::zeros(self.hr.c_out(), y.h(), y.w());
        self.hr.forward_into(&y, &mut z, leaky, &[])?;
        drop(y);
        let mut out = Planes::zeros(self.last.c_out(), z.h(), z.w());
        self.last
            .forward_into(&z, &mut out, Activation::None, &[])?;
        out.to_tensor(self.last.c_out())
    }
}
