//! SD3's text conditioning, as ComfyUI's `comfy/text_encoders/sd3_clip.py`
//! (`SD3Tokenizer`, `SD3ClipModel.encode_token_weights`) computes it:
//!
//! * every prompt is tokenized for CLIP-L (77-token windows, padded with EOS), CLIP-G
//!   (padded with 0) and T5-XXL (one sequence of at least 77 tokens);
//! * CLIP-L's and CLIP-G's penultimate hidden states (no final LN) are concatenated along
//!   the channels (cut to the shorter token count; a missing CLIP-L leaves 768 zero channels
//!   in front of CLIP-G's) and zero-padded to 4096 channels; T5-XXL's output follows along
//!   the sequence: context [1, 77·n + T, 4096];
//! * pooled = CLIP-L's unprojected pooled output ++ CLIP-G's projected one (2048 wide),
//!   zeros for a missing member;
//! * without any CLIP the context is T5's alone, and with no encoder at all (or no CLIP
//!   tokens and no T5) it is zeros [1, 77, 4096] and the pooled output zeros [1, 2048].
//!
//! Any subset of the three encoders works (TripleCLIPLoader, DualCLIPLoader / CLIPLoader
//! type `sd3`, checkpoints with or without text encoders).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::models::conditioner::Tokens;
use crate::models::lora::PatchedClip;
use crate::models::text::clip::{Tokenizer, WeightedToken, EOS};
use crate::models::text::t5::T5Encoder;
use crate::models::{ModelError, Result};

/// The width CLIP-L's output takes in the context when it is missing (ComfyUI's literal).
const CLIP_L_WIDTH: usize = 768;
/// The pooled width of a missing CLIP-G (ComfyUI's literal).
const CLIP_G_POOLED: usize = 1280;
/// The context width the CLIP outputs are padded to (T5-XXL's d_model).
pub const CONTEXT_WIDTH: usize = 4096;

/// The text encoders of an SD3 CLIP payload (ComfyUI's `SD3ClipModel`).
#[derive(Clone)]
pub struct Sd3Encoders {
    pub clip_l: Option<PatchedClip>,
    pub clip_g: Option<PatchedClip>,
    pub t5xxl: Option<T5Encoder>,
    /// Tokenizers for missing CLIP members: ComfyUI's SD3Tokenizer tokenizes for all three
    /// whatever is loaded, and CLIPTextEncodeSD3 pads CLIP-L and CLIP-G to the same window
    /// count from those tokens.
    l_tokenizer: Arc<Tokenizer>,
    g_tokenizer: Arc<Tokenizer>,
}

impl Sd3Encoders {
    pub fn new(
        clip_l: Option<PatchedClip>,
        clip_g: Option<PatchedClip>,
        t5xxl: Option<T5Encoder>,
    ) -> Self {
        Sd3Encoders {
            clip_l,
            clip_g,
            t5xxl,
            l_tokenizer: Arc::new(Tokenizer::new(Vec::new(), CLIP_L_WIDTH).with_pad_token(EOS)),
            g_tokenizer: Arc::new(Tokenizer::new(Vec::new(), CLIP_G_POOLED).with_pad_token(0)),
        }
    }

    /// "SD3 (CLIP-L + CLIP-G + T5-XXL)" etc., for messages.
    pub fn kind(&self) -> &'static str {
        match (
            self.clip_l.is_some(),
            self.clip_g.is_some(),
            self.t5xxl.is_some(),
        ) {
            (true, true, true) => "SD3 (CLIP-L + CLIP-G + T5-XXL)",
            (true, true, false) => "SD3 (CLIP-L + CLIP-G)",
            (true, false, true) => "SD3 (CLIP-L + T5-XXL)",
            (false, true, true) => "SD3 (CLIP-G + T5-XXL)",
            (true, false, false) => "SD3 (CLIP-L)",
            (false, true, false) => "SD3 (CLIP-G)",
            (false, false, true) => "SD3 (T5-XXL)",
            (false, false, false) => "SD3 (no text encoder)",
        }
    }

    /// The CLIP members (CLIP-L before CLIP-G).
    pub fn members(&self) -> Vec<&PatchedClip> {
        self.clip_l.iter().chain(self.clip_g.iter()).collect()
    }

    /// The same set with `f` applied to each CLIP member.
    pub fn map_clips(&self, f: impl Fn(&PatchedClip) -> PatchedClip) -> Self {
        Sd3Encoders {
            clip_l: self.clip_l.as_ref().map(&f),
            clip_g: self.clip_g.as_ref().map(&f),
            ..self.clone()
        }
    }

    /// The same set with T5-XXL looking up `embedding:NAME` in `dirs`.
    pub fn with_t5_embedding_directories(&self, dirs: Vec<std::path::PathBuf>) -> Self {
        Sd3Encoders {
            t5xxl: self
                .t5xxl
                .as_ref()
                .map(|t| t.with_embedding_directories(dirs)),
            ..self.clone()
        }
    }

    fn tokenize_l(&self, text: &str) -> Vec<Vec<WeightedToken>> {
        match &self.clip_l {
            Some(c) => c.tokenize(text),
            None => self.l_tokenizer.tokenize_with_weights(text),
        }
    }

    fn tokenize_g(&self, text: &str) -> Vec<Vec<WeightedToken>> {
        match &self.clip_g {
            Some(c) => c.tokenize(text),
            None => self.g_tokenizer.tokenize_with_weights(text),
        }
    }

    fn tokenize_t5(&self, text: &str) -> Option<std::result::Result<Vec<WeightedToken>, String>> {
        self.t5xxl
            .as_ref()
            .map(|t| t.tokenize(text).map_err(|e| e.to_string()))
    }

    /// `SD3Tokenizer.tokenize_with_weights(text)`.
    pub fn tokenize(&self, text: &str) -> Tokens {
        Tokens {
            l: Some(self.tokenize_l(text)),
            g: Some(self.tokenize_g(text)),
            t5xxl: self.tokenize_t5(text),
        }
    }

    /// CLIPTextEncodeSD3's tokens: each prompt for its encoder; with `empty_padding`
    /// "none" an empty prompt gives no tokens at all, with "empty_prompt" it is tokenized
    /// (BOS, EOS and padding); then CLIP-L and CLIP-G are padded with empty windows to the
    /// same window count.
    pub fn tokenize_sd3(&self, clip_l: &str, clip_g: &str, t5xxl: &str, pad: bool) -> Tokens {
        let mut g = if clip_g.is_empty() && !pad {
            Vec::new()
        } else {
            self.tokenize_g(clip_g)
        };
        let mut l = if clip_l.is_empty() && !pad {
            Vec::new()
        } else {
            self.tokenize_l(clip_l)
        };
        let t5 = if t5xxl.is_empty() && !pad {
            Some(Ok(Vec::new()))
        } else {
            self.tokenize_t5(t5xxl)
        };
        if l.len() != g.len() {
            let (el, eg) = (self.tokenize_l(""), self.tokenize_g(""));
            while l.len() < g.len() {
                l.extend(el.iter().cloned());
            }
            while l.len() > g.len() {
                g.extend(eg.iter().cloned());
            }
        }
        Tokens {
            l: Some(l),
            g: Some(g),
            t5xxl: t5,
        }
    }

    /// `SD3ClipModel.encode_token_weights`: (context [1, T, 4096], pooled [1, 2048]), f32
    /// on the CPU. `clip_layer`: CLIPSetLastLayer's value for every member.
    pub fn encode(&self, tokens: &Tokens, clip_layer: Option<i32>) -> Result<(Tensor, Tensor)> {
        if self.clip_l.is_none() && self.clip_g.is_none() && self.t5xxl.is_none() {
            // ComfyUI's checkpoint loader returns no CLIP for a file without text encoders.
            return Err(ModelError::BadInput(
                "clip input is invalid: None\n\nIf the clip is from a checkpoint loader node \
                 your checkpoint does not contain a valid clip or text encoder model."
                    .into(),
            ));
        }
        let cpu = Device::Cpu;
        let empty = Vec::new();
        let l_tokens = tokens.l.as_ref().unwrap_or(&empty);
        let g_tokens = tokens.g.as_ref().unwrap_or(&empty);
        let mut lg_out: Option<Tensor> = None;
        let mut pooled: Option<Tensor> = None;
        if !l_tokens.is_empty() || !g_tokens.is_empty() {
            let l_pooled = match &self.clip_l {
                Some(l) => {
                    let (out, p) = l.encode(l_tokens, clip_layer)?;
                    lg_out = Some(out);
                    p
                }
                None => Tensor::zeros((1, CLIP_L_WIDTH), DType::F32, &cpu)?,
            };
            let g_pooled = match &self.clip_g {
                Some(g) => {
                    let (g_out, p) = g.encode(g_tokens, clip_layer)?;
                    lg_out = Some(match lg_out {
                        Some(l_out) => {
                            let cut = l_out.dim(1)?.min(g_out.dim(1)?);
                            Tensor::cat(&[&l_out.narrow(1, 0, cut)?, &g_out.narrow(1, 0, cut)?], 2)?
                        }
                        None => {
                            let (b, t, _) = g_out.dims3()?;
                            let zeros = Tensor::zeros((b, t, CLIP_L_WIDTH), DType::F32, &cpu)?;
                            Tensor::cat(&[&zeros, &g_out], 2)?
                        }
                    });
                    p
                }
                None => Tensor::zeros((1, CLIP_G_POOLED), DType::F32, &cpu)?,
            };
            if let Some(lg) = lg_out.take() {
                lg_out = Some(pad_channels(&lg, CONTEXT_WIDTH)?);
            }
            pooled = Some(Tensor::cat(&[&l_pooled, &g_pooled], 1)?);
        }
        let mut out = lg_out.clone();
        if let Some(t5) = &self.t5xxl {
            let t5_tokens = match &tokens.t5xxl {
                Some(Ok(t)) => t.as_slice(),
                Some(Err(e)) => return Err(ModelError::BadInput(e.clone())),
                None => {
                    return Err(ModelError::BadInput(format!(
                        "no tokens for the T5-XXL encoder of this {} CLIP",
                        self.kind()
                    )))
                }
            };
            let t5_out = t5.encode(t5_tokens, clip_layer)?;
            out = Some(match lg_out {
                Some(lg) => {
                    if lg.dim(2)? != t5_out.dim(2)? {
                        return Err(ModelError::BadInput(format!(
                            "the T5-XXL encoder is {} wide; SD3 concatenates it with the CLIP \
                             outputs padded to {CONTEXT_WIDTH} channels",
                            t5_out.dim(2)?
                        )));
                    }
                    Tensor::cat(&[&lg, &t5_out], 1)?
                }
                None => t5_out,
            });
        }
        let out = match out {
            Some(o) => o,
            None => Tensor::zeros((1, 77, CONTEXT_WIDTH), DType::F32, &cpu)?,
        };
        let pooled = match pooled {
            Some(p) => p,
            None => Tensor::zeros((1, CLIP_L_WIDTH + CLIP_G_POOLED), DType::F32, &cpu)?,
        };
        Ok((out, pooled))
    }
}

/// Zero-pads the channels (last dim) of [B, T, C] to `width`.
fn pad_channels(x: &Tensor, width: usize) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    if c > width {
        return Err(ModelError::BadInput(format!(
            "the CLIP outputs are {c} channels wide, more than SD3's {width}"
        )));
    }
    if c == width {
        return Ok(x.clone());
    }
    let zeros = Tensor::zeros((b, t, width - c), x.dtype(), x.device())?;
    Ok(Tensor::cat(&[x, &zeros], 2)?)
}
