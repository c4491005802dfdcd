//! CLIP text encoding for SD1.x, as ComfyUI does it.
//!
//! * [`bpe`]: the CLIP BPE tokenizer (transformers' `CLIPTokenizer` behaviour).
//! * [`tokenizer`]: ComfyUI's prompt weighting, `embedding:` and 77-token windows.
//! * [`text_model`]: the text transformer and `encode_token_weights`.
//!
//! [`ClipTextEncoder`] ties them together; it is cheap to clone.

pub mod bpe;
pub mod text_model;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use bpe::{BOS, EOS};
pub use text_model::{ClipConfig, ClipTextModel};
pub use tokenizer::{Token, Tokenizer, WeightedToken};

use crate::models::ModelError;

/// State-dict prefix of the SD1 text encoder inside a checkpoint.
pub const SD1_CLIP_PREFIX: &str = "cond_stage_model.transformer.text_model.";

/// SD1 text encoder: tokenizer + CLIP-L text model.
#[derive(Clone)]
pub struct ClipTextEncoder {
    pub tokenizer: Arc<Tokenizer>,
    pub model: Arc<ClipTextModel>,
}

impl ClipTextEncoder {
    /// Builds the encoder from a weight map whose text-model keys start with
    /// `prefix` (e.g. [`SD1_CLIP_PREFIX`]). Weights are used as given: the
    /// checkpoint loader already rounds them through fp16 like ComfyUI.
    pub fn from_weights(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        dtype: DType,
        device: &Device,
        embedding_directories: Vec<PathBuf>,
    ) -> Result<Self, ModelError> {
        let config = ClipConfig::detect(weights, prefix)?;
        let vb = VarBuilder::from_tensors(weights.clone(), dtype, device);
        let model = ClipTextModel::new(config.clone(), vb.pp(prefix.trim_end_matches('.')))?;
        Ok(ClipTextEncoder {
            tokenizer: Arc::new(Tokenizer::new(embedding_directories, config.width)),
            model: Arc::new(model),
        })
    }

    /// A copy that looks up `embedding:NAME` in these directories.
    pub fn with_embedding_directories(&self, dirs: Vec<PathBuf>) -> Self {
        ClipTextEncoder {
            tokenizer: Arc::new(Tokenizer::new(dirs, self.model.config.width)),
            model: self.model.clone(),
        }
    }

    /// `tokenize_with_weights(text)`: windows of 77 (token, weight).
    pub fn tokenize(&self, text: &str) -> Vec<Vec<WeightedToken>> {
        self.tokenizer.tokenize_with_weights(text)
    }

    /// ComfyUI's `encode_from_tokens(tokens, return_pooled=True)` for SD1:
    /// cond [1, 77·N, C] and pooled [1, C] (unprojected), both f32.
    /// `clip_skip`: CLIPSetLastLayer's `stop_at_clip_layer` (-1 = last layer).
    pub fn encode(
        &self,
        tokens: &[Vec<WeightedToken>],
        clip_skip: i32,
    ) -> Result<(Tensor, Tensor), ModelError> {
        if tokens.len() > tokenizer::MAX_PROMPT_WINDOWS {
            return Err(ModelError::BadInput(format!(
                "text: the prompt makes {} windows of {} tokens; at most {} ({} tokens) are \
                 encoded",
                tokens.len(),
                tokenizer::MAX_LENGTH,
                tokenizer::MAX_PROMPT_WINDOWS,
                tokenizer::MAX_PROMPT_WINDOWS * (tokenizer::MAX_LENGTH - 2)
            )));
        }
        let len = tokens
            .iter()
            .map(|w| w.len())
            .max()
            .unwrap_or(tokenizer::MAX_LENGTH);
        let empty = self
            .tokenizer
            .empty_tokens(len)
            .into_iter()
            .map(Token::Id)
            .collect();
        Ok(self.model.encode_token_weights(tokens, empty, clip_skip)?)
    }

    /// Tokenize and encode in one go.
    pub fn encode_text(&self, text: &str, clip_skip: i32) -> Result<(Tensor, Tensor), ModelError> {
        self.encode(&self.tokenize(text), clip_skip)
    }
}
