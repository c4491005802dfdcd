//! CLIP text encoding as ComfyUI does it, for every family that uses CLIP (SD1.x's
//! CLIP-L; SDXL's CLIP-L + OpenCLIP bigG; later SD3's and Flux's CLIP-L).
//!
//! What differs between families is not the network but its role ([`ClipRole`]): which
//! hidden layer is the conditioning, whether the final LN applies to it, whether the
//! pooled output is projected, and the padding token.
//!
//! * [`bpe`]: the CLIP BPE tokenizer (transformers' `CLIPTokenizer` behaviour).
//! * [`tokenizer`]: ComfyUI's prompt weighting, `embedding:` and 77-token windows.
//! * [`text_model`]: the text transformer and `encode_token_weights`.
//!
//! [`ClipTextEncoder`] ties them together; it is cheap to clone.

pub mod bpe;
pub mod open_clip;
pub mod text_model;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use bpe::{BOS, EOS};
pub use text_model::{ClipActivation, ClipConfig, ClipTextModel, LayerChoice};
pub use tokenizer::{Token, Tokenizer, WeightedToken};

use crate::models::ModelError;

/// State-dict prefix of the SD1 text encoder inside a checkpoint.
pub const SD1_CLIP_PREFIX: &str = "cond_stage_model.transformer.text_model.";

/// How a family uses one CLIP text model (the arguments ComfyUI gives `SDClipModel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipRole {
    /// The conditioning layer when no CLIPSetLastLayer is applied (`reset_clip_layer`).
    pub default_layer: LayerChoice,
    /// `layer_norm_hidden_state`: the final LN also applies to a hidden-layer output.
    pub layer_norm_hidden: bool,
    /// `return_projected_pooled`: the pooled output goes through `text_projection`.
    pub project_pooled: bool,
    /// The token that fills a window after its EOS (`pad_with_end` → EOS, else 0).
    pub pad_token: u32,
    /// The key of its vectors in an embedding file holding several encoders' (ComfyUI's
    /// `embedding_key`: `clip_l`, or `clip_g` for bigG).
    pub embedding_key: &'static str,
    /// The MLP activation of this CLIP (quick GELU for CLIP-L, GELU for bigG).
    pub activation: ClipActivation,
}

impl ClipRole {
    /// SD1.x's CLIP-L: last layer with final LN, padded with EOS.
    pub const SD1: ClipRole = ClipRole {
        default_layer: LayerChoice::Last,
        layer_norm_hidden: true,
        project_pooled: false,
        pad_token: EOS,
        embedding_key: "clip_l",
        activation: ClipActivation::QuickGelu,
    };
    /// SDXL's CLIP-L: penultimate layer without final LN (`SDXLClipModel.clip_l`).
    pub const SDXL_L: ClipRole = ClipRole {
        default_layer: LayerChoice::Hidden(-2),
        layer_norm_hidden: false,
        project_pooled: false,
        pad_token: EOS,
        embedding_key: "clip_l",
        activation: ClipActivation::QuickGelu,
    };
    /// SDXL's (and the refiner's) OpenCLIP bigG: penultimate layer without final LN,
    /// projected pooled output, padded with 0 (`SDXLClipG`).
    pub const SDXL_G: ClipRole = ClipRole {
        default_layer: LayerChoice::Hidden(-2),
        layer_norm_hidden: false,
        project_pooled: true,
        pad_token: 0,
        embedding_key: "clip_g",
        activation: ClipActivation::Gelu,
    };
}

/// One CLIP text encoder: tokenizer + text model + the role its family gives it.
#[derive(Clone)]
pub struct ClipTextEncoder {
    pub tokenizer: Arc<Tokenizer>,
    pub model: Arc<ClipTextModel>,
    pub role: ClipRole,
    /// Where the text model's weights were found (ends in `text_model.`), so patched
    /// copies are built from the same keys.
    pub weights_prefix: Arc<str>,
}

impl ClipTextEncoder {
    /// Builds the encoder from a weight map whose text-model keys start with
    /// `prefix` (e.g. [`SD1_CLIP_PREFIX`], ending in `text_model.`); a
    /// `text_projection.weight` beside `text_model.` is used when present. Weights are
    /// used as given: the checkpoint loader already rounds them through fp16 like ComfyUI.
    pub fn from_weights(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        role: ClipRole,
        dtype: DType,
        device: &Device,
        embedding_directories: Vec<PathBuf>,
    ) -> Result<Self, ModelError> {
        let mut config = ClipConfig::detect(weights, prefix)?;
        config.activation = role.activation;
        let vb = crate::models::nn::weights_vb(weights.clone(), dtype, device);
        let root = prefix.strip_suffix("text_model.").unwrap_or("");
        let projection = weights
            .get(&format!("{root}text_projection.weight"))
            .cloned();
        let model = ClipTextModel::new(
            config.clone(),
            vb.pp(prefix.trim_end_matches('.')),
            projection,
        )?;
        Ok(ClipTextEncoder {
            tokenizer: Arc::new(
                Tokenizer::new(embedding_directories, config.width)
                    .with_pad_token(role.pad_token)
                    .with_embedding_key(role.embedding_key),
            ),
            model: Arc::new(model),
            role,
            weights_prefix: prefix.into(),
        })
    }

    /// A copy that looks up `embedding:NAME` in these directories.
    pub fn with_embedding_directories(&self, dirs: Vec<PathBuf>) -> Self {
        ClipTextEncoder {
            tokenizer: Arc::new(
                Tokenizer::new(dirs, self.model.config.width)
                    .with_pad_token(self.role.pad_token)
                    .with_embedding_key(self.role.embedding_key),
            ),
            model: self.model.clone(),
            role: self.role,
            weights_prefix: self.weights_prefix.clone(),
        }
    }

    /// The conditioning layer for CLIPSetLastLayer's `clip_layer` (None: the role's default).
    pub fn layer_choice(&self, clip_layer: Option<i32>) -> LayerChoice {
        match clip_layer {
            Some(idx) => LayerChoice::from_clip_layer(idx, self.model.config.layers),
            None => self.role.default_layer,
        }
    }

    /// `tokenize_with_weights(text)`: windows of 77 (token, weight).
    pub fn tokenize(&self, text: &str) -> Vec<Vec<WeightedToken>> {
        self.tokenizer.tokenize_with_weights(text)
    }

    /// ComfyUI's `encode_token_weights` for this encoder: cond [1, 77·N, C] and pooled
    /// [1, C] (or [1, P] projected), both f32. `clip_layer`: CLIPSetLastLayer's
    /// `stop_at_clip_layer` (None: the role's default layer).
    pub fn encode(
        &self,
        tokens: &[Vec<WeightedToken>],
        clip_layer: Option<i32>,
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
        Ok(self.model.encode_token_weights(
            tokens,
            empty,
            self.layer_choice(clip_layer),
            self.role.layer_norm_hidden,
            self.role.project_pooled,
        )?)
    }

    /// Tokenize and encode in one go.
    pub fn encode_text(
        &self,
        text: &str,
        clip_layer: Option<i32>,
    ) -> Result<(Tensor, Tensor), ModelError> {
        self.encode(&self.tokenize(text), clip_layer)
    }
}
