//! T5-XXL, the text encoder of Flux (and SD3), as ComfyUI runs it: the encoder stack
//! ([`model`]) and ComfyUI's T5 tokenizer rules ([`tokenizer`]), tied together by
//! [`T5Encoder`] with `encode_token_weights`.

pub mod model;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use model::{relative_position_bucket, T5Config, T5EncoderModel};
pub use tokenizer::{T5Tokenizer, FLUX_MIN_LENGTH, SD3_MIN_LENGTH};

use crate::models::text::clip::{Token, WeightedToken};
use crate::models::ModelError;

/// Where a T5-XXL lives in a combined weight map (ComfyUI's model keys for Flux and SD3:
/// `t5xxl.transformer.shared.weight`, `t5xxl.transformer.encoder.block.N…`).
pub const T5XXL_PREFIX: &str = "t5xxl.transformer.";

/// One T5-XXL text encoder: tokenizer (with the family's minimum length) + encoder.
/// Cheap to clone.
#[derive(Clone)]
pub struct T5Encoder {
    pub tokenizer: Arc<T5Tokenizer>,
    pub model: Arc<T5EncoderModel>,
    /// Where the encoder's weights were found (e.g. [`T5XXL_PREFIX`]).
    pub weights_prefix: Arc<str>,
}

impl T5Encoder {
    /// Builds the encoder from the weights under `prefix` (`shared.weight`,
    /// `encoder.*`; scaled fp8 layers carry `*.scale_weight`), computing in f32 on
    /// `device`. `min_length`: [`FLUX_MIN_LENGTH`] or [`SD3_MIN_LENGTH`]. The storage rule
    /// (which dtype each weight is kept in) is the loader's; weights stored as fp8 get
    /// ComfyUI's `nan_to_num` of the embeddings.
    pub fn from_weights(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        min_length: usize,
        device: &Device,
        embedding_directories: Vec<PathBuf>,
    ) -> Result<Self, ModelError> {
        let config = T5Config::detect(weights, prefix)?;
        let fp8_storage = weights
            .get(&format!("{prefix}encoder.final_layer_norm.weight"))
            .is_some_and(|t| t.dtype() == DType::F8E4M3);
        let vb = crate::models::nn::weights_vb(weights.clone(), DType::F32, device);
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let model = T5EncoderModel::new(vb, &config, fp8_storage)?;
        Ok(T5Encoder {
            tokenizer: Arc::new(T5Tokenizer::new(
                min_length,
                embedding_directories,
                config.d_model,
            )),
            model: Arc::new(model),
            weights_prefix: prefix.into(),
        })
    }

    /// A copy that looks up `embedding:NAME` in these directories.
    pub fn with_embedding_directories(&self, dirs: Vec<PathBuf>) -> Self {
        T5Encoder {
            tokenizer: Arc::new(self.tokenizer.with_embedding_directories(dirs)),
            ..self.clone()
        }
    }

    /// `tokenize_with_weights(text)`: one sequence of (token, weight).
    pub fn tokenize(&self, text: &str) -> Result<Vec<WeightedToken>, ModelError> {
        self.tokenizer.tokenize_with_weights(text)
    }

    /// ComfyUI's `encode_token_weights` for T5: the sequence (and, when any weight ≠ 1,
    /// the empty sequence `[</s>, <pad>, …]` of the same length) through the encoder, then
    /// `z = (z − z_empty)·w + z_empty` per weighted position. Returns [1, T, d_model] f32
    /// on the CPU. `clip_layer`: CLIPSetLastLayer's index (None: the last layer).
    pub fn encode(
        &self,
        tokens: &[WeightedToken],
        clip_layer: Option<i32>,
    ) -> Result<Tensor, ModelError> {
        let seq: Vec<Token> = if tokens.is_empty() {
            vec![Token::Id(tokenizer::END)]
        } else {
            tokens.iter().map(|(t, _)| t.clone()).collect()
        };
        let has_weights = tokens.iter().any(|(_, w)| *w != 1.0);
        let mut embeds = vec![self.model.input_embeddings(&seq)?];
        if has_weights {
            let empty: Vec<Token> = T5Tokenizer::empty_tokens(seq.len())
                .into_iter()
                .map(Token::Id)
                .collect();
            embeds.push(self.model.input_embeddings(&empty)?);
        }
        let embeds = Tensor::cat(&embeds, 0)?;
        let out = self
            .model
            .forward_embeds(&embeds, self.model.hidden_index(clip_layer))?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let z = out.get(0)?;
        if !has_weights {
            return Ok(z.unsqueeze(0)?);
        }
        let (t, c) = z.dims2()?;
        let mut rows = z.flatten_all()?.to_vec1::<f32>()?;
        let empty = out.get(1)?.flatten_all()?.to_vec1::<f32>()?;
        for (j, (_, w)) in tokens.iter().enumerate() {
            if *w != 1.0 {
                let r = j * c..(j + 1) * c;
                for (v, e) in rows[r.clone()].iter_mut().zip(&empty[r]) {
                    *v = (*v - *e) * *w + *e;
                }
            }
        }
        Ok(Tensor::from_vec(rows, (1, t, c), &Device::Cpu)?)
    }

    /// Tokenize and encode in one go.
    pub fn encode_text(&self, text: &str, clip_layer: Option<i32>) -> Result<Tensor, ModelError> {
        self.encode(&self.tokenize(text)?, clip_layer)
    }
}
