//! Flux's blocks (`comfy/ldm/flux/layers.py`): the MLP embedders, modulation, the
//! double-stream (separate image/text weights, joint attention) and single-stream (fused
//! linear1/linear2) blocks, and the final layer.
//!
//! Tensors are [B, N, hidden]; attention runs on [B, N, heads·head_dim] through the shared
//! kernel ([`crate::models::nn::attention`], ComfyUI's CPU sub-quadratic attention with the
//! scale inside the product), after RMS QK-norm and the rotary embedding.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::rope::apply_rope;
use crate::models::nn::{attention::attention, linear, silu, Linear};

/// LayerNorm over the last dimension without affine parameters (eps 1e-6), in f32.
pub fn layer_norm(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + 1e-6)?.sqrt()?)
}

/// `torch.nn.functional.rms_norm(x, weight, eps 1e-6)` over the last dimension.
fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (ms + 1e-6)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(weight)
}

/// `addcmul(shift, x, 1 + scale)` with [B, 1, hidden] modulation tensors.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

/// GELU with the tanh approximation (`nn.GELU(approximate="tanh")`).
fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// `MLPEmbedder`: `out_layer(silu(in_layer(x)))`.
#[derive(Debug, Clone)]
pub struct MlpEmbedder {
    in_layer: Linear,
    out_layer: Linear,
}

impl MlpEmbedder {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(MlpEmbedder {
            in_layer: linear(vb, "in_layer")?,
            out_layer: linear(vb, "out_layer")?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out_layer.forward(&silu(&self.in_layer.forward(x)?)?)
    }
}

/// `Modulation`: `lin(silu(vec))` split into 6 (double) or 3 (single) [B, 1, hidden] parts
/// (shift, scale, gate per stage).
#[derive(Debug, Clone)]
struct Modulation {
    lin: Linear,
    parts: usize,
}

impl Modulation {
    fn new(vb: &VarBuilder, parts: usize) -> Result<Self> {
        Ok(Modulation {
            lin: linear(vb, "lin")?,
            parts,
        })
    }

    fn forward(&self, vec: &Tensor) -> Result<Vec<Tensor>> {
        let out = self.lin.forward(&silu(vec)?)?.unsqueeze(1)?;
        out.chunk(self.parts, D::Minus1)
    }
}

/// The learnt RMS QK-norm scales of one attention.
#[derive(Debug, Clone)]
struct QkNorm {
    query: Tensor,
    key: Tensor,
}

impl QkNorm {
    fn new(vb: &VarBuilder) -> Result<Self> {
        let get = |name: &str| -> Result<Tensor> {
            vb.get_unchecked_dtype(&format!("{name}.scale"), DType::F32)
        };
        Ok(QkNorm {
            query: get("query_norm")?,
            key: get("key_norm")?,
        })
    }
}

/// q, k, v of a fused `qkv` projection [B, N, 3·hidden]: q and k RMS-normed (per head) and
/// rotated as [B, N, hidden]; v as [B, N, hidden].
fn split_qkv(
    qkv: &Tensor,
    heads: usize,
    norm: &QkNorm,
    pe: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, n, three_hidden) = qkv.dims3()?;
    let hidden = three_hidden / 3;
    let d = hidden / heads;
    let qkv = qkv.reshape((b, n, 3, heads, d))?;
    let part = |i: usize| -> Result<Tensor> { qkv.narrow(2, i, 1)?.squeeze(2) };
    let q = rms_norm(&part(0)?, &norm.query)?;
    let k = rms_norm(&part(1)?, &norm.key)?;
    let v = part(2)?.contiguous()?.reshape((b, n, hidden))?;
    let (q, k) = match pe {
        Some(pe) => (apply_rope(&q, pe)?, apply_rope(&k, pe)?),
        None => (
            q.contiguous()?.reshape((b, n, hidden))?,
            k.contiguous()?.reshape((b, n, hidden))?,
        ),
    };
    Ok((q, k, v))
}

/// One stream's weights of a double block.
#[derive(Debug, Clone)]
struct Stream {
    modulation: Modulation,
    qkv: Linear,
    norm: QkNorm,
    proj: Linear,
    mlp0: Linear,
    mlp2: Linear,
}

impl Stream {
    fn new(vb: &VarBuilder, s: &str) -> Result<Self> {
        Ok(Stream {
            modulation: Modulation::new(&vb.pp(format!("{s}_mod")), 6)?,
            qkv: linear(&vb.pp(format!("{s}_attn")), "qkv")?,
            norm: QkNorm::new(&vb.pp(format!("{s}_attn.norm")))?,
            proj: linear(&vb.pp(format!("{s}_attn")), "proj")?,
            mlp0: linear(&vb.pp(format!("{s}_mlp")), "0")?,
            mlp2: linear(&vb.pp(format!("{s}_mlp")), "2")?,
        })
    }

    /// The stream after attention: `x + gate·proj(attn)`, then the modulated MLP.
    fn finish(&self, x: &Tensor, attn: &Tensor, m: &[Tensor]) -> Result<Tensor> {
        let x = (x + self.proj.forward(attn)?.broadcast_mul(&m[2])?)?;
        let h = modulate(&layer_norm(&x)?, &m[3], &m[4])?;
        let h = self.mlp2.forward(&gelu_tanh(&self.mlp0.forward(&h)?)?)?;
        x + h.broadcast_mul(&m[5])?
    }
}

/// `DoubleStreamBlock`: image and text streams with their own weights, attending jointly
/// over `cat(txt, img)`.
#[derive(Debug, Clone)]
pub struct DoubleStreamBlock {
    img: Stream,
    txt: Stream,
    heads: usize,
}

impl DoubleStreamBlock {
    pub fn new(vb: &VarBuilder, heads: usize) -> Result<Self> {
        Ok(DoubleStreamBlock {
            img: Stream::new(vb, "img")?,
            txt: Stream::new(vb, "txt")?,
            heads,
        })
    }

    /// `pe`: the rotary table of the joint sequence (text tokens first).
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        vec: &Tensor,
        pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let im = self.img.modulation.forward(vec)?;
        let tm = self.txt.modulation.forward(vec)?;
        let n_txt = txt.dim(1)?;
        let n_img = img.dim(1)?;
        let img_qkv = self
            .img
            .qkv
            .forward(&modulate(&layer_norm(img)?, &im[0], &im[1])?)?;
        let txt_qkv = self
            .txt
            .qkv
            .forward(&modulate(&layer_norm(txt)?, &tm[0], &tm[1])?)?;
        let pe_txt = pe.narrow(0, 0, n_txt)?;
        let pe_img = pe.narrow(0, n_txt, n_img)?;
        let (iq, ik, iv) = split_qkv(&img_qkv, self.heads, &self.img.norm, Some(&pe_img))?;
        let (tq, tk, tv) = split_qkv(&txt_qkv, self.heads, &self.txt.norm, Some(&pe_txt))?;
        let q = Tensor::cat(&[tq, iq], 1)?;
        let k = Tensor::cat(&[tk, ik], 1)?;
        let v = Tensor::cat(&[tv, iv], 1)?;
        let attn = attention(&q, &k, &v, self.heads)?;
        let txt_attn = attn.narrow(1, 0, n_txt)?;
        let img_attn = attn.narrow(1, n_txt, n_img)?;
        let img = self.img.finish(img, &img_attn, &im)?;
        let txt = self.txt.finish(txt, &txt_attn, &tm)?;
        Ok((img, txt))
    }
}

/// `SingleStreamBlock`: one fused `linear1` (qkv ‖ MLP in) and `linear2` (attention ‖ MLP
/// out) over the joint sequence.
#[derive(Debug, Clone)]
pub struct SingleStreamBlock {
    linear1: Linear,
    linear2: Linear,
    norm: QkNorm,
    modulation: Modulation,
    heads: usize,
}

impl SingleStreamBlock {
    pub fn new(vb: &VarBuilder, heads: usize) -> Result<Self> {
        Ok(SingleStreamBlock {
            linear1: linear(vb, "linear1")?,
            linear2: linear(vb, "linear2")?,
            norm: QkNorm::new(&vb.pp("norm"))?,
            modulation: Modulation::new(&vb.pp("modulation"), 3)?,
            heads,
        })
    }

    pub fn forward(&self, x: &Tensor, vec: &Tensor, pe: &Tensor) -> Result<Tensor> {
        let m = self.modulation.forward(vec)?;
        let hidden = x.dim(D::Minus1)?;
        let h = self
            .linear1
            .forward(&modulate(&layer_norm(x)?, &m[0], &m[1])?)?;
        let mlp_width = h.dim(D::Minus1)? - 3 * hidden;
        let qkv = h.narrow(D::Minus1, 0, 3 * hidden)?;
        let mlp = h.narrow(D::Minus1, 3 * hidden, mlp_width)?;
        let (q, k, v) = split_qkv(&qkv, self.heads, &self.norm, Some(pe))?;
        let attn = attention(&q, &k, &v, self.heads)?;
        let out = self
            .linear2
            .forward(&Tensor::cat(&[attn, gelu_tanh(&mlp)?], 2)?)?;
        x + out.broadcast_mul(&m[2])?
    }
}

/// `LastLayer`: adaLN (shift, scale) of the final LayerNorm, then the patch projection.
#[derive(Debug, Clone)]
pub struct LastLayer {
    ada: Linear,
    linear: Linear,
}

impl LastLayer {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(LastLayer {
            ada: linear(&vb.pp("adaLN_modulation"), "1")?,
            linear: linear(vb, "linear")?,
        })
    }

    pub fn forward(&self, x: &Tensor, vec: &Tensor) -> Result<Tensor> {
        let m = self
            .ada
            .forward(&silu(vec)?)?
            .unsqueeze(1)?
            .chunk(2, D::Minus1)?;
        self.linear
            .forward(&modulate(&layer_norm(x)?, &m[0], &m[1])?)
    }
}
