//! ComfyUI's T5-XXL tokenizer (`T5XXLTokenizer`, an `SDTokenizer` over transformers'
//! `T5TokenizerFast`), for Flux (at least 256 tokens) and SD3 (at least 77).
//!
//! * The vocabulary is Google's T5 SentencePiece unigram model in the Hugging Face
//!   `tokenizers` format, embedded from `assets/t5_tokenizer/tokenizer.json` (Apache-2.0,
//!   see the NOTICE there) and run by the `tokenizers` crate, the engine behind
//!   `T5TokenizerFast` (Precompiled normalizer, Metaspace pre-tokenizer, `</s>` appended).
//! * The prompt is split by ComfyUI's weighting syntax (`(word:1.2)`, `((word))`, `\(`),
//!   each segment by ` embedding:`; each piece is tokenized on its own and its trailing
//!   `</s>` dropped (`tokenizer(word)["input_ids"][0:-1]`).
//! * There is no start token; one `</s>` (id 1) ends the sequence, which is padded with
//!   `<pad>` (id 0) to the minimum length. There is no maximum and no chunking: the whole
//!   prompt is one sequence (comfyrs bounds it at [`MAX_TOKENS`]).
//! * `embedding:NAME` looks the file up in the embedding directories and inserts its
//!   `t5xxl` vectors; an unknown name is dropped with a warning, as ComfyUI does.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::models::text::clip::tokenizer::{
    escape_important, is_inside, split_embeddings, token_weights, unescape_important,
    EMBEDDING_IDENTIFIER,
};
use crate::models::text::clip::{Token, WeightedToken};
use crate::models::ModelError;

/// `</s>`: ends every sequence.
pub const END: u32 = 1;
/// `<pad>`: fills a sequence to its minimum length.
pub const PAD: u32 = 0;
/// Flux's minimum sequence length (`comfy/text_encoders/flux.py`).
pub const FLUX_MIN_LENGTH: usize = 256;
/// SD3's minimum sequence length (`comfy/text_encoders/sd3_clip.py`).
pub const SD3_MIN_LENGTH: usize = 77;
/// The longest sequence comfyrs encodes (ComfyUI has no bound). Attention is quadratic in
/// it: 4928 tokens (as many as CLIP's 64 windows) already cost seconds per layer.
pub const MAX_TOKENS: usize = 4928;
/// The embedding-file key ComfyUI reads for T5-XXL textual inversions.
const EMBEDDING_KEY: &str = "t5xxl";

static TOKENIZER_JSON: &[u8] = include_bytes!("../../../../assets/t5_tokenizer/tokenizer.json");

/// The parsed vocabulary, shared by every tokenizer.
fn vocabulary() -> Result<&'static tokenizers::Tokenizer, ModelError> {
    static SHARED: OnceLock<Result<tokenizers::Tokenizer, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            tokenizers::Tokenizer::from_bytes(TOKENIZER_JSON).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::NotSupported(format!("the embedded T5 tokenizer.json: {e}")))
}

/// ComfyUI's T5-XXL `SDTokenizer` with its minimum length.
#[derive(Clone, Debug)]
pub struct T5Tokenizer {
    min_length: usize,
    embedding_directories: Vec<PathBuf>,
    embedding_size: usize,
}

impl T5Tokenizer {
    /// `min_length`: [`FLUX_MIN_LENGTH`] or [`SD3_MIN_LENGTH`]; `embedding_size`: the
    /// encoder's width (4096 for T5-XXL), which `embedding:` vectors must have.
    pub fn new(
        min_length: usize,
        embedding_directories: Vec<PathBuf>,
        embedding_size: usize,
    ) -> Self {
        T5Tokenizer {
            min_length,
            embedding_directories,
            embedding_size,
        }
    }

    pub fn min_length(&self) -> usize {
        self.min_length
    }

    /// The same tokenizer looking up `embedding:NAME` in `dirs`.
    pub fn with_embedding_directories(&self, dirs: Vec<PathBuf>) -> Self {
        T5Tokenizer {
            embedding_directories: dirs,
            ..self.clone()
        }
    }

    /// T5 ids of `text` without the trailing `</s>` (`tokenizer(text)["input_ids"][0:-1]`).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = vocabulary()?
            .encode(text, true)
            .map_err(|e| ModelError::BadInput(format!("text: T5 tokenizer: {e}")))?;
        let ids = enc.get_ids();
        Ok(ids[..ids.len().saturating_sub(1)].to_vec())
    }

    /// `gen_empty_tokens` for T5: `[</s>, <pad>, …]` of `len` tokens.
    pub fn empty_tokens(len: usize) -> Vec<u32> {
        let mut v = vec![END];
        v.resize(len.max(1), PAD);
        v
    }

    /// ComfyUI's `tokenize_with_weights`: one sequence of (token, weight), ended by `</s>`
    /// and padded to the minimum length. Errors when it is longer than [`MAX_TOKENS`].
    pub fn tokenize_with_weights(&self, text: &str) -> Result<Vec<WeightedToken>, ModelError> {
        let text = escape_important(text);
        let mut out: Vec<WeightedToken> = Vec::new();
        for (segment, weight) in token_weights(&text, 1.0) {
            let weight = weight as f32;
            let segment = unescape_important(&segment);
            for word in split_embeddings(&segment) {
                if word.is_empty() {
                    continue;
                }
                let mut word = word;
                if let Some(name) = word.strip_prefix(EMBEDDING_IDENTIFIER) {
                    let name = name.trim_matches('\n').to_string();
                    let (rows, leftover) = self.try_get_embedding(&name);
                    match rows {
                        Some(rows) => {
                            out.extend(rows.into_iter().map(|r| (Token::Embedding(r), weight)))
                        }
                        None => {
                            tracing::warn!("warning, embedding:{name} does not exist, ignoring")
                        }
                    }
                    if leftover.is_empty() {
                        continue;
                    }
                    word = leftover;
                }
                out.extend(
                    self.encode_plain(&word)?
                        .into_iter()
                        .map(|t| (Token::Id(t), weight)),
                );
            }
            if out.len() >= MAX_TOKENS {
                break;
            }
        }
        out.push((Token::Id(END), 1.0));
        if out.len() > MAX_TOKENS {
            return Err(ModelError::BadInput(format!(
                "text: the prompt makes more than {MAX_TOKENS} T5 tokens; at most {MAX_TOKENS} \
                 are encoded"
            )));
        }
        let fill = self.min_length.saturating_sub(out.len());
        out.extend(std::iter::repeat_n((Token::Id(PAD), 1.0), fill));
        Ok(out)
    }

    /// `_try_get_embedding`: the first word is the name, the rest is left over; a name
    /// with commas around it is retried without them (the commas go to the leftover).
    fn try_get_embedding(&self, name: &str) -> (Option<Vec<Tensor>>, String) {
        let mut parts = name.split_whitespace();
        let Some(first) = parts.next() else {
            return (None, String::new());
        };
        let leftover = parts.collect::<Vec<_>>().join(" ");
        if let Some(rows) = self.load_embedding(first) {
            return (Some(rows), leftover);
        }
        let stripped = first.trim_matches(',');
        if stripped.len() < first.len() {
            let rows = self.load_embedding(stripped);
            let tail = first.get(stripped.len()..).unwrap_or("");
            return (rows, format!("{tail} {leftover}"));
        }
        (None, leftover)
    }

    fn load_embedding(&self, name: &str) -> Option<Vec<Tensor>> {
        for dir in &self.embedding_directories {
            for c in [
                name.to_string(),
                format!("{name}.safetensors"),
                format!("{name}.pt"),
                format!("{name}.bin"),
            ] {
                let path = dir.join(&c);
                if !path.is_file() || !is_inside(dir, &path) {
                    continue;
                }
                match load_t5_embedding(&path, self.embedding_size) {
                    Ok(t) => return Some(t),
                    Err(e) => tracing::warn!("could not load embedding {}: {e}", path.display()),
                }
            }
        }
        None
    }
}

/// The T5 vectors of a textual-inversion file: `string_to_param.*`, else the `t5xxl` key,
/// else the first tensor (by name) of the encoder's width. One f32 row per vector.
fn load_t5_embedding(path: &std::path::Path, width: usize) -> anyhow::Result<Vec<Tensor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut tensors: Vec<(String, Tensor)> = if ext == "safetensors" {
        candle_core::safetensors::load(path, &Device::Cpu)?
            .into_iter()
            .collect()
    } else {
        candle_core::pickle::read_all(path)?
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let pick = |pred: &dyn Fn(&str, &Tensor) -> bool| tensors.iter().position(|(k, t)| pred(k, t));
    let idx = pick(&|k, _| k.starts_with("string_to_param"))
        .or_else(|| pick(&|k, _| k == EMBEDDING_KEY))
        .or_else(|| pick(&|_, t| t.dims().last() == Some(&width)))
        .ok_or_else(|| anyhow::anyhow!("no '{EMBEDDING_KEY}' tensor of width {width}"))?;
    let t = tensors.swap_remove(idx).1.to_dtype(DType::F32)?;
    let w = *t.dims().last().unwrap_or(&0);
    if w != width {
        anyhow::bail!("embedding width {w} does not match the T5 encoder ({width})");
    }
    let t = t.reshape(((), w))?;
    Ok((0..t.dim(0)?)
        .map(|i| t.get(i))
        .collect::<candle_core::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(t: &[WeightedToken]) -> Vec<u32> {
        t.iter().filter_map(|(t, _)| t.id()).collect()
    }

    #[test]
    fn pads_to_the_minimum_and_ends_with_eos() {
        let tok = T5Tokenizer::new(FLUX_MIN_LENGTH, Vec::new(), 4096);
        let t = tok.tokenize_with_weights("").unwrap();
        assert_eq!(t.len(), 256);
        assert_eq!(ids(&t)[0], END);
        assert!(ids(&t)[1..].iter().all(|&i| i == PAD));
        assert_eq!(T5Tokenizer::empty_tokens(4), vec![1, 0, 0, 0]);
    }

    #[test]
    fn too_long_prompts_are_an_error() {
        let tok = T5Tokenizer::new(SD3_MIN_LENGTH, Vec::new(), 4096);
        let long = "cat ".repeat(MAX_TOKENS + 10);
        let e = tok.tokenize_with_weights(&long).unwrap_err().to_string();
        assert!(e.contains("4928"), "{e}");
    }
}
