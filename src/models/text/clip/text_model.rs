//! The CLIP text transformer (HF `CLIPTextModel` layout, ComfyUI's
//! `clip_model.py` math) and ComfyUI's `encode_token_weights`.
//!
//! * embeddings: `token_embedding[ids]` (or a textual-inversion vector) +
//!   `position_embedding`;
//! * causal mask filled with `-f32::MAX` (ComfyUI uses `-finfo(f32).max`), no
//!   padding mask;
//! * pre-LN layers (LayerNorm eps 1e-5), attention scale head_dim^-0.5, an MLP with
//!   `quick_gelu(a) = a·sigmoid(1.702a)` (CLIP-L) or the exact erf GELU (OpenCLIP bigG);
//! * outputs: the final-LN last layer, or the hidden state after a chosen layer
//!   ([`LayerChoice`]; SD1 applies the final LN to it, SDXL/SD3/Flux do not), and pooled =
//!   final-LN output of the last layer at the first EOS, through `text_projection` when the
//!   encoder's role asks for the projected pooled output (CLIP-G in SDXL and SD3).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::bpe::EOS;
use super::tokenizer::{Token, WeightedToken};
use crate::models::ModelError;

/// The MLP activation (`hidden_act` of ComfyUI's CLIP config files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: OpenAI CLIP-L (`comfy/sd1_clip_config.json`).
    QuickGelu,
    /// `gelu` (erf form): OpenCLIP ViT-bigG (`comfy/clip_config_bigg.json`).
    Gelu,
}

/// Which hidden state becomes the conditioning (`SDClipModel.layer` / `layer_idx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerChoice {
    /// `layer = "last"`: the final-LN output of the last layer.
    Last,
    /// `layer = "hidden"`: the output of layer `idx` (negative counts from the end).
    Hidden(i32),
}

impl LayerChoice {
    /// `SDClipModel.clip_layer(idx)`: an index past the layer count means the last layer.
    pub fn from_clip_layer(idx: i32, num_layers: usize) -> Self {
        if idx.unsigned_abs() as usize > num_layers {
            LayerChoice::Last
        } else {
            LayerChoice::Hidden(idx)
        }
    }
}

/// Text encoder hyper-parameters, detected from the weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub activation: ClipActivation,
}

impl ClipConfig {
    /// Detects the config from weights under `prefix` (ending in `text_model.`).
    ///
    /// Head count is not in the shapes: the head dim is 64 (CLIP-L: 12 heads,
    /// CLIP-G: 20) when the width is a multiple of 64, else 8 (tiny test models).
    pub fn detect(weights: &HashMap<String, Tensor>, prefix: &str) -> Result<Self, ModelError> {
        let get = |k: &str| {
            weights
                .get(&format!("{prefix}{k}"))
                .ok_or_else(|| ModelError::MissingKey(format!("{prefix}{k}")))
        };
        let tok = get("embeddings.token_embedding.weight")?.dims().to_vec();
        let pos = get("embeddings.position_embedding.weight")?.dims().to_vec();
        let fc1 = get("encoder.layers.0.mlp.fc1.weight")?.dims().to_vec();
        let mut layers = 0;
        while weights.contains_key(&format!(
            "{prefix}encoder.layers.{layers}.layer_norm1.weight"
        )) {
            layers += 1;
        }
        let width = tok[1];
        let head_dim = if width % 64 == 0 { 64 } else { 8 };
        Ok(ClipConfig {
            width,
            layers,
            heads: (width / head_dim).max(1),
            intermediate: fc1[0],
            vocab_size: tok[0],
            max_positions: pos[0],
            activation: ClipActivation::QuickGelu,
        })
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * self.heads, t, hd))
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scale = (hd as f64).powf(-0.5);
        let sim = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let p = candle_nn::ops::softmax_last_dim(&sim)?;
        let o = p
            .matmul(&v)?
            .reshape((b, self.heads, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, c))?;
        self.out.forward(&o)
    }
}

struct Layer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: ClipActivation,
}

fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

impl Layer {
    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let a = self.fc1.forward(&self.ln2.forward(&h)?)?;
        let a = match self.activation {
            ClipActivation::QuickGelu => quick_gelu(&a)?,
            ClipActivation::Gelu => crate::models::nn::activations::gelu(&a)?,
        };
        let m = self.fc2.forward(&a)?;
        h + m
    }
}

/// The CLIP text transformer.
pub struct ClipTextModel {
    pub config: ClipConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    /// `text_projection` (no bias), when the file has one.
    projection: Option<Linear>,
    dtype: DType,
    device: Device,
}

impl ClipTextModel {
    /// Builds the model from `vb` rooted at `…text_model.`; `projection` is the
    /// `text_projection.weight` [out, width] stored beside `text_model.`, if any.
    pub fn new(
        config: ClipConfig,
        vb: VarBuilder,
        projection: Option<Tensor>,
    ) -> candle_core::Result<Self> {
        let c = config.width;
        let emb = vb.pp("embeddings");
        let token_embedding = emb.get((config.vocab_size, c), "token_embedding.weight")?;
        let position_embedding = emb.get((config.max_positions, c), "position_embedding.weight")?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = vb.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            layers.push(Layer {
                ln1: candle_nn::layer_norm(c, 1e-5, l.pp("layer_norm1"))?,
                attn: Attention {
                    q: candle_nn::linear(c, c, a.pp("q_proj"))?,
                    k: candle_nn::linear(c, c, a.pp("k_proj"))?,
                    v: candle_nn::linear(c, c, a.pp("v_proj"))?,
                    out: candle_nn::linear(c, c, a.pp("out_proj"))?,
                    heads: config.heads,
                },
                ln2: candle_nn::layer_norm(c, 1e-5, l.pp("layer_norm2"))?,
                fc1: candle_nn::linear(c, config.intermediate, l.pp("mlp.fc1"))?,
                fc2: candle_nn::linear(config.intermediate, c, l.pp("mlp.fc2"))?,
                activation: config.activation,
            });
        }
        let final_ln = candle_nn::layer_norm(c, 1e-5, vb.pp("final_layer_norm"))?;
        Ok(ClipTextModel {
            config,
            token_embedding,
            position_embedding,
            layers,
            final_ln,
            projection: match projection {
                Some(w) => Some(Linear::new(
                    w.to_dtype(vb.dtype())?.to_device(vb.device())?,
                    None,
                )),
                None => None,
            },
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Input embeddings [1, T, C] for one window of tokens.
    pub fn input_embeddings(&self, tokens: &[Token]) -> candle_core::Result<Tensor> {
        let ids: Vec<u32> = tokens.iter().map(|t| t.id().unwrap_or(0)).collect();
        let ids_t = Tensor::new(ids.as_slice(), &self.device)?;
        let mut x = self.token_embedding.index_select(&ids_t, 0)?;
        if tokens.iter().any(|t| t.id().is_none()) {
            let rows = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Token::Id(_) => x.get(i),
                    Token::Embedding(e) => e.to_device(&self.device)?.to_dtype(self.dtype),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            x = Tensor::stack(&rows, 0)?;
        }
        x.unsqueeze(0)
    }

    /// Runs the transformer on input embeddings [B, T, C]. Returns
    /// `(final_layer_norm(last), hidden after layer index `keep`)`.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        keep: Option<usize>,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (_, t, _) = embeds.dims3()?;
        let pos = self.position_embedding.narrow(0, 0, t)?;
        let mut x = embeds.broadcast_add(&pos)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &self.device)?.to_dtype(self.dtype)?;
        let mut kept = None;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &mask)?;
            if Some(i) == keep {
                kept = Some(x.clone());
            }
        }
        Ok((self.final_ln.forward(&x)?, kept))
    }

    /// Final LayerNorm (applied to clip-skip hidden states for SD1).
    pub fn final_layer_norm(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.final_ln.forward(x)
    }

    /// Whether the file carries a `text_projection`.
    pub fn has_projection(&self) -> bool {
        self.projection.is_some()
    }

    /// ComfyUI's `encode` for a batch of windows: returns (cond [N, T, C],
    /// pooled [N, C] or [N, P] projected). `layer`: which hidden state is the cond;
    /// `layer_norm_hidden`: apply the final LN to a hidden-layer cond (SD1);
    /// `project_pooled`: pass the pooled output through `text_projection`.
    pub fn encode_windows(
        &self,
        windows: &[Vec<Token>],
        layer: LayerChoice,
        layer_norm_hidden: bool,
        project_pooled: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let embeds = windows
            .iter()
            .map(|w| self.input_embeddings(w))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let embeds = Tensor::cat(&embeds, 0)?;
        let n_layers = self.layers.len() as i64;
        let keep = match layer {
            LayerChoice::Last => None,
            LayerChoice::Hidden(idx) => {
                let idx = idx as i64;
                let k = if idx < 0 { n_layers + idx } else { idx };
                Some(k.clamp(0, n_layers - 1) as usize)
            }
        };
        let (x_final, kept) = self.forward_embeds(&embeds, keep)?;
        let cond = match kept {
            Some(h) if layer_norm_hidden => self.final_ln.forward(&h)?,
            Some(h) => h,
            None => x_final.clone(),
        };
        let pooled = windows
            .iter()
            .enumerate()
            .map(|(b, w)| {
                let eos = w
                    .iter()
                    .position(|t| t.id() == Some(EOS))
                    .unwrap_or(w.len() - 1);
                x_final.get(b)?.get(eos)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&pooled, 0)?;
        let pooled = match (&self.projection, project_pooled) {
            (Some(p), true) => p.forward(&pooled)?,
            _ => pooled,
        };
        Ok((cond, pooled))
    }

    /// ComfyUI's `encode_token_weights`: encodes every window in one batch
    /// (plus the empty window when any weight ≠ 1), applies
    /// `z = (z - z_empty)·w + z_empty` per position in f32, and returns
    /// (cond [1, 77·N, C] f32, pooled of the first window [1, C] f32), on the CPU.
    pub fn encode_token_weights(
        &self,
        windows: &[Vec<WeightedToken>],
        empty: Vec<Token>,
        layer: LayerChoice,
        layer_norm_hidden: bool,
        project_pooled: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let has_weights = windows.iter().flatten().any(|(_, w)| *w != 1.0);
        let mut to_encode: Vec<Vec<Token>> = windows
            .iter()
            .map(|w| w.iter().map(|(t, _)| t.clone()).collect())
            .collect();
        if has_weights || windows.is_empty() {
            to_encode.push(empty);
        }
        let (out, pooled) =
            self.encode_windows(&to_encode, layer, layer_norm_hidden, project_pooled)?;
        // Back to f32 on the CPU: conditioning lives there like the sampler state.
        let out = out.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let pooled = pooled
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .narrow(0, 0, 1)?;
        if windows.is_empty() {
            let n = out.dim(0)?;
            return Ok((out.narrow(0, n - 1, 1)?, pooled));
        }
        let (_, t, c) = out.dims3()?;
        let mut chunks = Vec::with_capacity(windows.len());
        let empty_z: Option<Vec<Vec<f32>>> = if has_weights {
            Some(out.get(windows.len())?.to_vec2()?)
        } else {
            None
        };
        for (k, w) in windows.iter().enumerate() {
            let z = out.get(k)?;
            match &empty_z {
                Some(ez) if w.iter().any(|(_, wt)| *wt != 1.0) => {
                    let mut rows = z.to_vec2::<f32>()?;
                    for (j, (_, wt)) in w.iter().enumerate() {
                        if *wt != 1.0 {
                            for (v, e) in rows[j].iter_mut().zip(ez[j].iter()) {
                                *v = (*v - *e) * *wt + *e;
                            }
                        }
                    }
                    let flat: Vec<f32> = rows.into_iter().flatten().collect();
                    chunks.push(Tensor::from_vec(flat, (t, c), out.device())?);
                }
                _ => chunks.push(z),
            }
        }
        let cond = Tensor::cat(&chunks, 0)?.unsqueeze(0)?;
        Ok((cond, pooled))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}
