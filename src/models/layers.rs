//! Building blocks shared by the UNet and the VAE, named like the LDM modules.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};

/// A conv2d whose shape is read from the weights (`weight` [out, in, k, k]).
pub fn conv(vb: &VarBuilder, name: &str, stride: usize, padding: usize) -> Result<Conv2d> {
    let w = vb.pp(name).get_unchecked("weight")?;
    let (out_c, in_c, k, _) = w.dims4()?;
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(in_c, out_c, k, cfg, vb.pp(name))
}

/// `nn.GroupNorm(32, C, eps)` with C read from the weights.
pub fn group_norm(vb: &VarBuilder, name: &str, eps: f64) -> Result<GroupNorm> {
    let c = vb.pp(name).get_unchecked("weight")?.dim(0)?;
    candle_nn::group_norm(32, c, eps, vb.pp(name))
}

/// Does `vb` hold a tensor called `name`?
pub fn has(vb: &VarBuilder, name: &str) -> bool {
    vb.contains_tensor(name)
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(x)
}

/// `GroupNorm → SiLU`.
pub fn norm_silu(norm: &GroupNorm, x: &Tensor) -> Result<Tensor> {
    silu(&norm.forward(x)?)
}
