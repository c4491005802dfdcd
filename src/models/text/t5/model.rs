//! The T5 encoder stack as ComfyUI computes it (`comfy/text_encoders/t5.py`), in f32
//! whatever the weights are stored in (f16, bf16, fp8 e4m3fn, scaled fp8: the layers widen
//! per operation, like ComfyUI's `manual_cast` and `scaled_fp8` ops).
//!
//! * `shared` token embedding, cast to f32; `nan_to_num` on it when the weights are
//!   stored in fp8 (ComfyUI's "fix for fp8 T5 base");
//! * per block: `x += o(attn(q, k, v) + bias)` on `T5LayerNorm(x)`, then
//!   `x += wo(gelu_tanh(wi_0(h)) · wi_1(h))` on `T5LayerNorm(x)`;
//! * `T5LayerNorm` is an RMS norm without mean or bias: `w · x · rsqrt(mean(x²) + 1e-6)`;
//! * attention has no 1/√d: ComfyUI passes `k · √d` to an attention that scales by
//!   `d^-0.5`, reproduced here (both are powers of two for T5-XXL's d = 64, so exact);
//! * the relative position bias (32 buckets, max distance 128, bidirectional) is an
//!   embedding of block 0, reused by every block, with the bucket of a distance computed
//!   in f32 as torch does ([`relative_position_bucket`]); no attention mask (Flux, SD3);
//! * the last block's output goes through `final_layer_norm`; a hidden layer chosen by
//!   CLIPSetLastLayer does too (`final_layer_norm_intermediate`).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::models::nn::{self, Linear};
use crate::models::text::clip::Token;
use crate::models::ModelError;

/// Buckets of the relative position bias.
pub const NUM_BUCKETS: usize = 32;
/// Distances at or past this share the last bucket.
pub const MAX_DISTANCE: i64 = 128;
/// `T5LayerNorm`'s epsilon.
const EPS: f64 = 1e-6;
/// Score-matrix elements per attention piece (bounds memory for long prompts).
const SCORE_ELEMS: usize = 1 << 25;

/// The encoder's hyper-parameters (`t5_config_xxl.json`: d_model 4096, 64 heads of 64,
/// d_ff 10240, 24 layers, vocabulary 32128; gated `gelu_pytorch_tanh` feed-forward).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct T5Config {
    pub d_model: usize,
    pub num_heads: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub vocab_size: usize,
}

impl T5Config {
    /// ComfyUI's `t5_config_xxl.json`.
    pub fn xxl() -> Self {
        T5Config {
            d_model: 4096,
            num_heads: 64,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            vocab_size: 32128,
        }
    }

    /// The config of the weights under `prefix` (keys `shared.weight`, `encoder.block.N…`).
    /// The head count is not in the shapes: heads are 64 wide (T5-XXL) when the inner width
    /// is a multiple of 64, else 8 wide (reduced test models); a `…relative_attention_bias`
    /// of block 0 gives it exactly.
    pub fn detect(weights: &HashMap<String, Tensor>, prefix: &str) -> Result<Self, ModelError> {
        let get = |k: &str| {
            weights
                .get(&format!("{prefix}{k}"))
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| ModelError::MissingKey(format!("{prefix}{k}")))
        };
        let shared = get("shared.weight")?;
        let q = get("encoder.block.0.layer.0.SelfAttention.q.weight")?;
        let wi = get("encoder.block.0.layer.1.DenseReluDense.wi_0.weight").map_err(|_| {
            ModelError::NotSupported(format!(
                "{prefix}encoder.block.0.layer.1.DenseReluDense.wi_0.weight is missing: only \
                 T5 v1.1 encoders with a gated feed-forward (T5-XXL) are supported"
            ))
        })?;
        let mut num_layers = 0;
        while weights.contains_key(&format!(
            "{prefix}encoder.block.{num_layers}.layer.0.layer_norm.weight"
        )) {
            num_layers += 1;
        }
        let (shared, q, wi) = (dims2(&shared)?, dims2(&q)?, dims2(&wi)?);
        let inner = q.0;
        let num_heads =
            match get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") {
                Ok(b) if b.len() == 2 => b[1],
                _ if inner % 64 == 0 => inner / 64,
                _ => (inner / 8).max(1),
            };
        if num_heads == 0 || inner % num_heads != 0 {
            return Err(ModelError::NotSupported(format!(
                "T5: an attention width of {inner} does not split into {num_heads} heads"
            )));
        }
        Ok(T5Config {
            d_model: shared.1,
            num_heads,
            d_kv: inner / num_heads,
            d_ff: wi.0,
            num_layers,
            vocab_size: shared.0,
        })
    }
}

fn dims2(d: &[usize]) -> Result<(usize, usize), ModelError> {
    match d {
        [a, b] => Ok((*a, *b)),
        _ => Err(ModelError::NotSupported(format!(
            "T5: expected a matrix, found shape {d:?}"
        ))),
    }
}

/// torch's `_relative_position_bucket(memory − query, bidirectional=True, 32, 128)`:
/// 16 buckets per direction, 8 exact distances, then `8 + trunc(ln(d/8) / ln(16) · 8)` in
/// f32, capped at 15.
pub fn relative_position_bucket(relative_position: i64) -> usize {
    let half = (NUM_BUCKETS / 2) as i64;
    let mut bucket = if relative_position > 0 { half } else { 0 };
    let d = relative_position.abs();
    let max_exact = half / 2;
    if d < max_exact {
        bucket += d;
    } else {
        let ln_ratio = ((MAX_DISTANCE / max_exact) as f64).ln() as f32;
        let scaled = ((d as f32) / max_exact as f32).ln() / ln_ratio * (half - max_exact) as f32;
        bucket += (max_exact + scaled as i64).min(half - 1);
    }
    bucket as usize
}

/// `T5LayerNorm`: `weight · x · rsqrt(mean(x²) + eps)`, in x's dtype.
struct RmsNorm {
    weight: Tensor,
}

impl RmsNorm {
    fn new(vb: &VarBuilder, name: &str) -> candle_core::Result<Self> {
        Ok(RmsNorm {
            weight: stored(vb, &format!("{name}.weight"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let r = (variance + EPS)?.sqrt()?.recip()?;
        let w = self.weight.to_dtype(x.dtype())?;
        x.broadcast_mul(&r)?.broadcast_mul(&w)
    }
}

struct Block {
    ln_attn: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Block 0's `relative_attention_bias` [32, heads].
    relative_bias: Option<Tensor>,
    ln_ff: RmsNorm,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

/// The T5 encoder (`T5` with its `T5Stack`), weights as stored.
pub struct T5EncoderModel {
    pub config: T5Config,
    /// `shared.weight` [vocab, d_model], as stored.
    shared: Tensor,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    /// ComfyUI's `nan_to_num` of the embeddings (weights stored in fp8).
    nan_to_num: bool,
    device: Device,
}

impl T5EncoderModel {
    /// Builds the encoder from `vb` rooted where `shared.weight` and `encoder.*` live.
    /// `fp8_storage`: the weights are stored as fp8 (ComfyUI then applies `nan_to_num` to
    /// the input embeddings).
    pub fn new(vb: VarBuilder, cfg: &T5Config, fp8_storage: bool) -> candle_core::Result<Self> {
        let shared = stored(&vb, "shared.weight")?;
        if shared.dims() != [cfg.vocab_size, cfg.d_model] {
            candle_core::bail!(
                "T5 shared.weight is {:?}, expected [{}, {}]",
                shared.dims(),
                cfg.vocab_size,
                cfg.d_model
            );
        }
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = vb.pp(format!("encoder.block.{i}.layer"));
            let a = b.pp("0.SelfAttention");
            let ff = b.pp("1.DenseReluDense");
            let relative_bias = if i == 0 {
                let t = stored(&a, "relative_attention_bias.weight")?;
                if t.dims() != [NUM_BUCKETS, cfg.num_heads] {
                    candle_core::bail!(
                        "T5 relative_attention_bias is {:?}, expected [{NUM_BUCKETS}, {}]",
                        t.dims(),
                        cfg.num_heads
                    );
                }
                Some(t)
            } else {
                None
            };
            blocks.push(Block {
                ln_attn: RmsNorm::new(&b, "0.layer_norm")?,
                q: nn::linear(&a, "q")?,
                k: nn::linear(&a, "k")?,
                v: nn::linear(&a, "v")?,
                o: nn::linear(&a, "o")?,
                relative_bias,
                ln_ff: RmsNorm::new(&b, "1.layer_norm")?,
                wi_0: nn::linear(&ff, "wi_0")?,
                wi_1: nn::linear(&ff, "wi_1")?,
                wo: nn::linear(&ff, "wo")?,
            });
        }
        Ok(T5EncoderModel {
            config: cfg.clone(),
            shared,
            blocks,
            final_norm: RmsNorm::new(&vb, "encoder.final_layer_norm")?,
            nan_to_num: fp8_storage,
            device: vb.device().clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Input embeddings [1, T, d_model] f32 of one sequence (ids through `shared`,
    /// textual-inversion vectors as given).
    pub fn input_embeddings(&self, tokens: &[Token]) -> candle_core::Result<Tensor> {
        let vocab = self.config.vocab_size as u32;
        if let Some(bad) = tokens.iter().filter_map(|t| t.id()).find(|&i| i >= vocab) {
            candle_core::bail!("T5 token id {bad} is outside the vocabulary ({vocab})");
        }
        let ids: Vec<u32> = tokens.iter().map(|t| t.id().unwrap_or(0)).collect();
        let ids_t = Tensor::new(ids.as_slice(), &self.device)?;
        let mut x = self.shared.index_select(&ids_t, 0)?.to_dtype(DType::F32)?;
        if tokens.iter().any(|t| t.id().is_none()) {
            let rows = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Token::Id(_) => x.get(i),
                    Token::Embedding(e) => e.to_device(&self.device)?.to_dtype(DType::F32),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            x = Tensor::stack(&rows, 0)?;
        }
        if self.nan_to_num {
            x = nan_to_num(&x)?;
        }
        x.unsqueeze(0)
    }

    /// The relative position bias [1, heads, T, T] for `t` tokens.
    fn position_bias(&self, table: &Tensor, t: usize) -> candle_core::Result<Tensor> {
        let buckets: Vec<u32> = (0..t as i64)
            .flat_map(|q| (0..t as i64).map(move |m| relative_position_bucket(m - q) as u32))
            .collect();
        let idx = Tensor::from_vec(buckets, t * t, &self.device)?;
        let table = table.to_dtype(DType::F32)?;
        table
            .index_select(&idx, 0)?
            .reshape((t, t, self.config.num_heads))?
            .permute((2, 0, 1))?
            .contiguous()?
            .unsqueeze(0)
    }

    fn attention(&self, blk: &Block, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, d) = (self.config.num_heads, self.config.d_kv);
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, h, d))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * h, t, d))
        };
        // ComfyUI: optimized_attention(q, k · (inner/heads)^0.5, v) scaling by d^-0.5.
        let k_gain = (d as f64).sqrt();
        let scale = (d as f64).powf(-0.5);
        let q = split(blk.q.forward(x)?)?;
        let k = split((blk.k.forward(x)? * k_gain)?)?;
        let v = split(blk.v.forward(x)?)?;
        let kt = k.t()?.contiguous()?;
        // bias [1, h, t, t] → [b·h, t, t] pieces of whole heads.
        let bias = bias.squeeze(0)?;
        let group = (SCORE_ELEMS / (t * t).max(1)).clamp(1, b * h);
        let mut outs = Vec::new();
        let mut s = 0;
        while s < b * h {
            let len = group.min(b * h - s);
            let sim = (q.narrow(0, s, len)?.matmul(&kt.narrow(0, s, len)?)? * scale)?;
            let heads: Vec<usize> = (s..s + len).map(|i| i % h).collect();
            let piece_bias = if len == h && s % h == 0 {
                bias.clone()
            } else {
                let idx = Tensor::from_vec(
                    heads.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    len,
                    &self.device,
                )?;
                bias.index_select(&idx, 0)?
            };
            let p = candle_nn::ops::softmax_last_dim(&(sim + piece_bias)?)?;
            outs.push(p.matmul(&v.narrow(0, s, len)?)?);
            s += len;
        }
        let o = if outs.len() == 1 {
            outs.pop().expect("one piece")
        } else {
            Tensor::cat(&outs, 0)?
        };
        let o = o
            .reshape((b, h, t, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h * d))?;
        blk.o.forward(&o)
    }

    fn feed_forward(&self, blk: &Block, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = blk.wi_0.forward(x)?.gelu()?;
        let lin = blk.wi_1.forward(x)?;
        blk.wo.forward(&(gate * lin)?)
    }

    /// Runs the stack on input embeddings [B, T, d_model] f32: the final-norm output of
    /// the last block, or (`hidden` = Some(i)) of block i (ComfyUI's `intermediate_output`
    /// with `final_layer_norm_intermediate`).
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        hidden: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let (_, t, _) = embeds.dims3()?;
        let mut x = embeds.clone();
        let mut bias: Option<Tensor> = None;
        let mut kept = None;
        for (i, blk) in self.blocks.iter().enumerate() {
            if let Some(table) = &blk.relative_bias {
                bias = Some(self.position_bias(table, t)?);
            }
            let Some(bias) = &bias else {
                candle_core::bail!("T5 block 0 has no relative_attention_bias");
            };
            let a = self.attention(blk, &blk.ln_attn.forward(&x)?, bias)?;
            x = (x + a)?;
            let f = self.feed_forward(blk, &blk.ln_ff.forward(&x)?)?;
            x = (x + f)?;
            if Some(i) == hidden {
                kept = Some(x.clone());
            }
        }
        self.final_norm.forward(kept.as_ref().unwrap_or(&x))
    }

    /// `SDClipModel.clip_layer` for T5: CLIPSetLastLayer's index selects a hidden block
    /// (negative from the end) unless it reaches past the layer count (then the last).
    pub fn hidden_index(&self, clip_layer: Option<i32>) -> Option<usize> {
        let n = self.config.num_layers as i64;
        let idx = clip_layer? as i64;
        if idx.unsigned_abs() as i64 > n {
            return None;
        }
        let i = if idx < 0 { n + idx } else { idx };
        (0..n).contains(&i).then_some(i as usize)
    }
}

/// A tensor as stored (norms, embeddings: small or read row-wise, widened where used).
fn stored(vb: &VarBuilder, name: &str) -> candle_core::Result<Tensor> {
    nn::stored(vb, name)
}

/// `torch.nan_to_num`: NaN → 0, ±inf → ±f32::MAX.
fn nan_to_num(x: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let v: Vec<f32> = x
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|f| {
            if f.is_nan() {
                0.0
            } else if f == f32::INFINITY {
                f32::MAX
            } else if f == f32::NEG_INFINITY {
                f32::MIN
            } else {
                f
            }
        })
        .collect();
    Tensor::from_vec(v, dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_at_the_exact_and_log_ranges() {
        assert_eq!(relative_position_bucket(0), 0);
        assert_eq!(relative_position_bucket(-7), 7);
        assert_eq!(relative_position_bucket(7), 23);
        assert_eq!(relative_position_bucket(-8), 8);
        assert_eq!(relative_position_bucket(-16), 10);
        assert_eq!(relative_position_bucket(-1000), 15);
        assert_eq!(relative_position_bucket(1000), 31);
    }

    #[test]
    fn nan_to_num_matches_torch() {
        let x = Tensor::new(
            &[f32::NAN, 1.5, f32::INFINITY, f32::NEG_INFINITY],
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<f32> = nan_to_num(&x).unwrap().to_vec1().unwrap();
        assert_eq!(y, vec![0.0, 1.5, f32::MAX, f32::MIN]);
    }
}
