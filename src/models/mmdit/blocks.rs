//! MMDiT's blocks (`comfy/ldm/modules/diffusionmodules/mmdit.py`): the adaLN-modulated
//! `DismantledBlock` (one per stream), the `JointBlock` pairing a context and an x block
//! with one attention over `cat(context, x)`, MMDiT-X's extra x-only self-attention
//! (`x_block.attn2`, SD3.5 medium), and the final layer.
//!
//! Tensors are [B, N, hidden]; attention runs on [B, N, heads·64] through the shared
//! kernel ([`crate::models::nn::attention`], the scale inside the product like ComfyUI's
//! CPU sub-quadratic attention), after the optional RMS QK-norm (SD3.5's `ln_q`/`ln_k`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::models::nn::{attention::attention, linear, silu, Linear};

/// LayerNorm over the last dimension without affine parameters, eps 1e-6 (`norm1`,
/// `norm2`, `norm_final`).
fn layer_norm(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + 1e-6)?.sqrt()?)
}

/// `common_dit.rms_norm(x, weight, 1e-6)` over the last dimension.
fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (ms + 1e-6)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(weight)
}

/// `modulate(x, shift, scale)` = `addcmul(shift, x, 1 + scale)` with [B, hidden] mods.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?.unsqueeze(1)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// `x + gate.unsqueeze(1) · y`.
fn gated(x: &Tensor, gate: &Tensor, y: &Tensor) -> Result<Tensor> {
    x + y.broadcast_mul(&gate.unsqueeze(1)?)?
}

/// `Sequential(Linear, SiLU, Linear)`: the timestep and pooled-vector embedders.
#[derive(Debug, Clone)]
pub struct MlpEmbedder {
    l0: Linear,
    l2: Linear,
}

impl MlpEmbedder {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(MlpEmbedder {
            l0: linear(&vb.pp("mlp"), "0")?,
            l2: linear(&vb.pp("mlp"), "2")?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.l2.forward(&silu(&self.l0.forward(x)?)?)
    }

    /// Width of the input vector.
    pub fn in_features(&self) -> Result<usize> {
        self.l0.weight().dim(1)
    }
}

/// `SelfAttention`: fused qkv, optional RMS QK-norm per head, output projection (absent in
/// the last context block, `pre_only`).
#[derive(Debug, Clone)]
struct SelfAttention {
    qkv: Linear,
    proj: Option<Linear>,
    /// (ln_q, ln_k) weights, f32 [head_dim].
    qk_norm: Option<(Tensor, Tensor)>,
    heads: usize,
}

impl SelfAttention {
    fn new(vb: &VarBuilder, heads: usize, pre_only: bool, qk_norm: bool) -> Result<Self> {
        let qk_norm = if qk_norm {
            Some((
                vb.get_unchecked_dtype("ln_q.weight", DType::F32)?,
                vb.get_unchecked_dtype("ln_k.weight", DType::F32)?,
            ))
        } else {
            None
        };
        Ok(SelfAttention {
            qkv: linear(vb, "qkv")?,
            proj: if pre_only {
                None
            } else {
                Some(linear(vb, "proj")?)
            },
            qk_norm,
            heads,
        })
    }

    /// `pre_attention`: (q, k, v), each [B, N, hidden].
    fn pre_attention(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let qkv = self.qkv.forward(x)?;
        let (b, n, three) = qkv.dims3()?;
        let hidden = three / 3;
        let d = hidden / self.heads;
        let qkv = qkv.reshape((b, n, 3, self.heads, d))?;
        let part = |i: usize| -> Result<Tensor> { qkv.narrow(2, i, 1)?.squeeze(2) };
        let (mut q, mut k) = (part(0)?, part(1)?);
        if let Some((lq, lk)) = &self.qk_norm {
            q = rms_norm(&q, &lq.to_dtype(q.dtype())?)?;
            k = rms_norm(&k, &lk.to_dtype(k.dtype())?)?;
        }
        let flat = |t: Tensor| t.contiguous()?.reshape((b, n, hidden));
        Ok((flat(q)?, flat(k)?, flat(part(2)?)?))
    }

    fn post_attention(&self, x: &Tensor) -> Result<Tensor> {
        match &self.proj {
            Some(p) => p.forward(x),
            None => candle_core::bail!("post_attention of a pre-only attention"),
        }
    }
}

/// The modulation parts a block's `pre_attention` leaves for `post_attention`.
struct Intermediates {
    x: Tensor,
    mods: Vec<Tensor>,
}

/// `DismantledBlock`: one stream's adaLN block. `pre_only` (the last context block) keeps
/// only the attention input; `x_block_self_attn` (MMDiT-X) adds a second x-only attention
/// with its own three modulations (9 in all).
#[derive(Debug, Clone)]
pub struct DismantledBlock {
    attn: SelfAttention,
    attn2: Option<SelfAttention>,
    ada: Linear,
    fc1: Option<Linear>,
    fc2: Option<Linear>,
    pre_only: bool,
}

impl DismantledBlock {
    pub fn new(
        vb: &VarBuilder,
        heads: usize,
        pre_only: bool,
        qk_norm: bool,
        x_block_self_attn: bool,
    ) -> Result<Self> {
        let attn2 = if x_block_self_attn {
            Some(SelfAttention::new(&vb.pp("attn2"), heads, false, qk_norm)?)
        } else {
            None
        };
        let (fc1, fc2) = if pre_only {
            (None, None)
        } else {
            (
                Some(linear(&vb.pp("mlp"), "fc1")?),
                Some(linear(&vb.pp("mlp"), "fc2")?),
            )
        };
        Ok(DismantledBlock {
            attn: SelfAttention::new(&vb.pp("attn"), heads, pre_only, qk_norm)?,
            attn2,
            ada: linear(&vb.pp("adaLN_modulation"), "1")?,
            fc1,
            fc2,
            pre_only,
        })
    }

    fn mods(&self, c: &Tensor, n: usize) -> Result<Vec<Tensor>> {
        self.ada.forward(&silu(c)?)?.chunk(n, D::Minus1)
    }

    /// `pre_attention` (or `pre_attention_x` for MMDiT-X): the joint attention's q, k, v,
    /// the x-only attention's (MMDiT-X), and what `post_attention` needs.
    #[allow(clippy::type_complexity)]
    fn pre_attention(
        &self,
        x: &Tensor,
        c: &Tensor,
    ) -> Result<(
        (Tensor, Tensor, Tensor),
        Option<(Tensor, Tensor, Tensor)>,
        Intermediates,
    )> {
        let xn = layer_norm(x)?;
        if self.pre_only {
            let m = self.mods(c, 2)?;
            let qkv = self.attn.pre_attention(&modulate(&xn, &m[0], &m[1])?)?;
            return Ok((
                qkv,
                None,
                Intermediates {
                    x: x.clone(),
                    mods: m,
                },
            ));
        }
        if let Some(attn2) = &self.attn2 {
            let m = self.mods(c, 9)?;
            let qkv = self.attn.pre_attention(&modulate(&xn, &m[0], &m[1])?)?;
            let qkv2 = attn2.pre_attention(&modulate(&xn, &m[6], &m[7])?)?;
            return Ok((
                qkv,
                Some(qkv2),
                Intermediates {
                    x: x.clone(),
                    mods: m,
                },
            ));
        }
        let m = self.mods(c, 6)?;
        let qkv = self.attn.pre_attention(&modulate(&xn, &m[0], &m[1])?)?;
        Ok((
            qkv,
            None,
            Intermediates {
                x: x.clone(),
                mods: m,
            },
        ))
    }

    /// `post_attention` / `post_attention_x`: the gated attention output(s), then the
    /// modulated MLP.
    fn post_attention(
        &self,
        attn: &Tensor,
        attn2: Option<&Tensor>,
        it: &Intermediates,
    ) -> Result<Tensor> {
        let m = &it.mods;
        let a1 = self.attn.post_attention(attn)?;
        let x = match (&self.attn2, attn2) {
            (Some(a2m), Some(a2)) => {
                // gate_cat: stack([x, gate·attn1, gate2·attn2]).sum(0)
                let a2 = a2m.post_attention(a2)?;
                let out1 = a1.broadcast_mul(&m[2].unsqueeze(1)?)?;
                let out2 = a2.broadcast_mul(&m[8].unsqueeze(1)?)?;
                ((&it.x + out1)? + out2)?
            }
            _ => gated(&it.x, &m[2], &a1)?,
        };
        let (Some(fc1), Some(fc2)) = (&self.fc1, &self.fc2) else {
            candle_core::bail!("post_attention of a pre-only block");
        };
        let h = modulate(&layer_norm(&x)?, &m[3], &m[4])?;
        let h = fc2.forward(&fc1.forward(&h)?.gelu()?)?;
        gated(&x, &m[5], &h)
    }
}

impl DismantledBlock {
    /// `DismantledBlock.forward(x, c)`: the block alone (self-attention over its own
    /// tokens, then the MLP), as SD3.5 ControlNets run their `transformer_blocks`.
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let ((q, k, v), qkv2, it) = self.pre_attention(x, c)?;
        let heads = self.attn.heads;
        let a = attention(&q, &k, &v, heads)?;
        let a2 = match &qkv2 {
            Some((q2, k2, v2)) => Some(attention(q2, k2, v2, heads)?),
            None => None,
        };
        self.post_attention(&a, a2.as_ref(), &it)
    }
}

/// `JointBlock`: the context and x streams attending jointly over `cat(context, x)`.
#[derive(Debug, Clone)]
pub struct JointBlock {
    context_block: DismantledBlock,
    x_block: DismantledBlock,
    heads: usize,
}

impl JointBlock {
    pub fn new(
        vb: &VarBuilder,
        heads: usize,
        pre_only: bool,
        qk_norm: bool,
        x_block_self_attn: bool,
    ) -> Result<Self> {
        Ok(JointBlock {
            context_block: DismantledBlock::new(
                &vb.pp("context_block"),
                heads,
                pre_only,
                qk_norm,
                false,
            )?,
            x_block: DismantledBlock::new(
                &vb.pp("x_block"),
                heads,
                false,
                qk_norm,
                x_block_self_attn,
            )?,
            heads,
        })
    }

    /// `_block_mixing`: (context or None after the last block, x).
    pub fn forward(
        &self,
        context: &Tensor,
        x: &Tensor,
        c: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let (cq, _, c_it) = self.context_block.pre_attention(context, c)?;
        let (xq, xq2, x_it) = self.x_block.pre_attention(x, c)?;
        let n_ctx = context.dim(1)?;
        let n_x = x.dim(1)?;
        let q = Tensor::cat(&[&cq.0, &xq.0], 1)?;
        let k = Tensor::cat(&[&cq.1, &xq.1], 1)?;
        let v = Tensor::cat(&[&cq.2, &xq.2], 1)?;
        let attn = attention(&q, &k, &v, self.heads)?;
        let context_attn = attn.narrow(1, 0, n_ctx)?;
        let x_attn = attn.narrow(1, n_ctx, n_x)?;
        let context = if self.context_block.pre_only {
            None
        } else {
            Some(
                self.context_block
                    .post_attention(&context_attn, None, &c_it)?,
            )
        };
        let attn2 = match &xq2 {
            Some((q2, k2, v2)) => Some(attention(q2, k2, v2, self.heads)?),
            None => None,
        };
        let x = self
            .x_block
            .post_attention(&x_attn, attn2.as_ref(), &x_it)?;
        Ok((context, x))
    }
}

/// `FinalLayer`: adaLN (shift, scale) of the final LayerNorm, then the patch projection.
#[derive(Debug, Clone)]
pub struct FinalLayer {
    ada: Linear,
    linear: Linear,
}

impl FinalLayer {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(FinalLayer {
            ada: linear(&vb.pp("adaLN_modulation"), "1")?,
            linear: linear(vb, "linear")?,
        })
    }

    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = self.ada.forward(&silu(c)?)?.chunk(2, D::Minus1)?;
        self.linear
            .forward(&modulate(&layer_norm(x)?, &m[0], &m[1])?)
    }
}
