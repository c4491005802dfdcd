//! ComfyUI's SD1 tokenizer (`SDTokenizer.tokenize_with_weights`): prompt
//! weighting syntax, `embedding:` textual inversions, and chunking into
//! 77-token windows (BOS + 75 + EOS), padded with EOS for SD1.
//!
//! Weighting syntax (numerics spec §8.2), as ComfyUI parses it:
//! * `\(` / `\)` are literal parentheses;
//! * a top-level `( … )` group multiplies the current weight by 1.1, unless
//!   the text inside has a `:` (the last one, not at position 0) followed by a
//!   valid float, which *sets* the weight (`(x:1.2)` → 1.2);
//! * groups recurse: `((x))` → 1.21, `(a (b:1.5) c)` → a 1.1, b 1.5, c 1.1;
//! * `[x]` is not special (tokenized literally, weight 1.0).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::bpe::{ClipBpe, BOS, EOS};

/// Tokens per window, BOS and EOS included.
pub const MAX_LENGTH: usize = 77;

/// The most 77-token windows one prompt may make (4,928 tokens, tens of thousands of
/// characters). Each window's encoding is 77 x width floats (236 KB for SD1's CLIP-L) and
/// the sampler attends over all of them, so an unbounded prompt costs memory without bound.
pub const MAX_PROMPT_WINDOWS: usize = 64;
/// Segments of at least this many tokens are split across windows.
const MAX_WORD_LENGTH: usize = 8;
pub(crate) const EMBEDDING_IDENTIFIER: &str = "embedding:";

/// One position of a tokenized prompt: a vocabulary id or a textual-inversion
/// vector that replaces the token embedding at that position.
#[derive(Clone, Debug)]
pub enum Token {
    Id(u32),
    /// A 1-D f32 tensor of the text encoder's width.
    Embedding(Tensor),
}

impl Token {
    pub fn id(&self) -> Option<u32> {
        match self {
            Token::Id(i) => Some(*i),
            Token::Embedding(_) => None,
        }
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Token::Id(a), Token::Id(b)) => a == b,
            (Token::Embedding(a), Token::Embedding(b)) => a.id() == b.id(),
            _ => false,
        }
    }
}

/// A token with its prompt weight.
pub type WeightedToken = (Token, f32);

/// ComfyUI's SD1 (CLIP-L) tokenizer.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    embedding_directories: Vec<PathBuf>,
    embedding_size: usize,
    /// The key of this encoder's vectors in a multi-encoder embedding file (ComfyUI's
    /// `embedding_key`: `clip_l` for CLIP-L, `clip_g` for SDXL's bigG).
    embedding_key: &'static str,
    pad_token: u32,
}

/// `escape_important`: protect `\(` and `\)` from the parenthesis parser.
pub(crate) fn escape_important(text: &str) -> String {
    text.replace("\\)", "\0\u{1}").replace("\\(", "\0\u{2}")
}

pub(crate) fn unescape_important(text: &str) -> String {
    text.replace("\0\u{1}", ")").replace("\0\u{2}", "(")
}

/// `parse_parentheses`: split into top-level parenthesised groups and plain runs.
fn parse_parentheses(s: &str) -> Vec<String> {
    let mut result = Vec::new();
    let mut current = String::new();
    let mut nesting: i64 = 0;
    for c in s.chars() {
        if c == '(' {
            if nesting == 0 {
                if !current.is_empty() {
                    result.push(std::mem::take(&mut current));
                }
                current.push('(');
            } else {
                current.push(c);
            }
            nesting += 1;
        } else if c == ')' {
            nesting -= 1;
            if nesting == 0 {
                current.push(')');
                result.push(std::mem::take(&mut current));
            } else {
                current.push(c);
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        result.push(current);
    }
    result
}

/// Python's `float(s)` for the strings a prompt weight can be.
fn python_float(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_whitespace());
    if t.is_empty() || t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    let t = t.replace('_', "");
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "infinity" | "nan") {
        return lower.parse::<f64>().ok().or_else(|| {
            let neg = lower.starts_with('-');
            let v = if body == "nan" {
                f64::NAN
            } else {
                f64::INFINITY
            };
            Some(if neg { -v } else { v })
        });
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'))
    {
        return None;
    }
    t.parse::<f64>().ok()
}

/// `token_weights(string, current_weight)`: (text, weight) segments.
pub fn token_weights(s: &str, current_weight: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for x in parse_parentheses(s) {
        let chars: Vec<char> = x.chars().collect();
        if chars.len() >= 2 && chars[0] == '(' && chars[chars.len() - 1] == ')' {
            let mut inner: String = chars[1..chars.len() - 1].iter().collect();
            let mut weight = current_weight * 1.1;
            if let Some(pos) = inner.rfind(':') {
                if pos > 0 {
                    if let Some(w) = python_float(&inner[pos + 1..]) {
                        weight = w;
                        inner.truncate(pos);
                    }
                }
            }
            out.extend(token_weights(&inner, weight));
        } else {
            out.push((x, current_weight));
        }
    }
    out
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new(Vec::new(), 768)
    }
}

impl Tokenizer {
    /// `embedding_directories`: where `embedding:NAME` is looked up (ComfyUI's
    /// `models/embeddings`); `embedding_size`: the text encoder width (768 for
    /// CLIP-L), used to pick the right tensor from an embedding file.
    pub fn new(embedding_directories: Vec<PathBuf>, embedding_size: usize) -> Self {
        Tokenizer {
            embedding_directories,
            embedding_size,
            embedding_key: "clip_l",
            pad_token: EOS,
        }
    }

    /// The same tokenizer reading `key` from embedding files that hold several encoders'
    /// vectors (an SDXL embedding has `clip_l` and `clip_g`).
    pub fn with_embedding_key(mut self, key: &'static str) -> Self {
        self.embedding_key = key;
        self
    }

    /// The same tokenizer padding windows with `pad` (ComfyUI's `pad_with_end=False`
    /// tokenizers, e.g. SDXL's CLIP-G, pad with 0).
    pub fn with_pad_token(mut self, pad: u32) -> Self {
        self.pad_token = pad;
        self
    }

    pub fn embedding_size(&self) -> usize {
        self.embedding_size
    }

    /// Plain CLIP ids of `text` (no BOS/EOS).
    pub fn encode_plain(&self, text: &str) -> Vec<u32> {
        ClipBpe::shared().encode(text)
    }

    /// The "empty" window `[BOS, EOS, pad, …]` of `len` tokens
    /// (`gen_empty_tokens`).
    pub fn empty_tokens(&self, len: usize) -> Vec<u32> {
        let mut v = vec![BOS, EOS];
        v.resize(len.max(2), self.pad_token);
        v.truncate(len);
        v
    }

    /// ComfyUI's `tokenize_with_weights`: windows of exactly 77 (token, weight).
    pub fn tokenize_with_weights(&self, text: &str) -> Vec<Vec<WeightedToken>> {
        let text = escape_important(text);
        let mut groups: Vec<Vec<WeightedToken>> = Vec::new();
        for (segment, weight) in token_weights(&text, 1.0) {
            let weight = weight as f32;
            let segment = unescape_important(&segment);
            for word in split_embeddings(&segment) {
                if word.is_empty() {
                    continue;
                }
                let mut word = word;
                if let Some(name) = word.strip_prefix(EMBEDDING_IDENTIFIER) {
                    if !self.embedding_directories.is_empty() {
                        let name = name.trim_matches('\n').to_string();
                        let (rows, leftover) = self.try_get_embedding(&name);
                        match rows {
                            Some(rows) => groups.push(
                                rows.into_iter()
                                    .map(|r| (Token::Embedding(r), weight))
                                    .collect(),
                            ),
                            None => {
                                tracing::warn!("warning, embedding:{name} does not exist, ignoring")
                            }
                        }
                        if leftover.is_empty() {
                            continue;
                        }
                        word = leftover;
                    }
                }
                groups.push(
                    ClipBpe::shared()
                        .encode(&word)
                        .into_iter()
                        .map(|t| (Token::Id(t), weight))
                        .collect(),
                );
            }
        }
        self.batch(groups)
    }

    fn batch(&self, groups: Vec<Vec<WeightedToken>>) -> Vec<Vec<WeightedToken>> {
        let mut batches: Vec<Vec<WeightedToken>> = Vec::new();
        let mut batch: Vec<WeightedToken> = vec![(Token::Id(BOS), 1.0)];
        for group in groups {
            let is_large = group.len() >= MAX_WORD_LENGTH;
            let mut rest: &[WeightedToken] = &group;
            while !rest.is_empty() {
                if rest.len() + batch.len() > MAX_LENGTH - 1 {
                    let remaining = MAX_LENGTH - batch.len() - 1;
                    if is_large {
                        batch.extend_from_slice(&rest[..remaining]);
                        batch.push((Token::Id(EOS), 1.0));
                        rest = &rest[remaining..];
                    } else {
                        batch.push((Token::Id(EOS), 1.0));
                        batch.extend(std::iter::repeat_n(
                            (Token::Id(self.pad_token), 1.0),
                            remaining,
                        ));
                    }
                    batches.push(std::mem::replace(&mut batch, vec![(Token::Id(BOS), 1.0)]));
                } else {
                    batch.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        batch.push((Token::Id(EOS), 1.0));
        let fill = MAX_LENGTH.saturating_sub(batch.len());
        batch.extend(std::iter::repeat_n((Token::Id(self.pad_token), 1.0), fill));
        batches.push(batch);
        batches
    }

    /// `_try_get_embedding`: the first whitespace-separated word is the name,
    /// the rest is left over for tokenizing; a name with commas around it is
    /// retried without them (the commas then go to the leftover).
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
            let candidates = [
                name.to_string(),
                format!("{name}.safetensors"),
                format!("{name}.pt"),
                format!("{name}.bin"),
            ];
            for c in candidates {
                let path = dir.join(&c);
                if !path.is_file() || !is_inside(dir, &path) {
                    continue;
                }
                match load_embedding_file_with_key(&path, self.embedding_size, self.embedding_key) {
                    Ok(t) => return Some(t),
                    Err(e) => {
                        tracing::warn!("could not load embedding {}: {e}", path.display());
                    }
                }
            }
        }
        None
    }
}

pub(crate) fn is_inside(dir: &Path, path: &Path) -> bool {
    match (dir.canonicalize(), path.canonicalize()) {
        (Ok(d), Ok(p)) => p.starts_with(d),
        _ => false,
    }
}

/// `re.split(' embedding:|\nembedding:')`, re-attaching the marker.
pub(crate) fn split_embeddings(segment: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = segment;
    let mut first = true;
    loop {
        let a = rest.find(" embedding:");
        let b = rest.find("\nembedding:");
        let pos = match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (x, None) | (None, x) => x,
        };
        let piece = match pos {
            Some(p) => &rest[..p],
            None => rest,
        };
        if first {
            out.push(piece.to_string());
            first = false;
        } else {
            out.push(format!("{EMBEDDING_IDENTIFIER}{piece}"));
        }
        match pos {
            Some(p) => rest = &rest[p + 1 + EMBEDDING_IDENTIFIER.len()..],
            None => break,
        }
    }
    out
}

/// Reads a textual-inversion file: safetensors (any of `clip_l`,
/// `emb_params`, `string_to_param.*`, or the first tensor whose last dim is
/// `embedding_size`) or a PyTorch pickle (`.pt`/`.bin`, same key rules).
/// Returns one f32 row per vector.
pub fn load_embedding_file(path: &Path, embedding_size: usize) -> anyhow::Result<Vec<Tensor>> {
    load_embedding_file_with_key(path, embedding_size, "clip_l")
}

/// [`load_embedding_file`] looking for `key` (the encoder's `embedding_key`) first.
pub fn load_embedding_file_with_key(
    path: &Path,
    embedding_size: usize,
    key: &str,
) -> anyhow::Result<Vec<Tensor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut tensors: Vec<(String, Tensor)> = if ext == "safetensors" {
        let mut v: Vec<_> = candle_core::safetensors::load(path, &Device::Cpu)?
            .into_iter()
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    } else {
        candle_core::pickle::read_all(path)?
    };
    let pick = |pred: &dyn Fn(&str) -> bool| tensors.iter().position(|(k, _)| pred(k));
    let idx = pick(&|k| k == key)
        .or_else(|| pick(&|k| k == "emb_params"))
        .or_else(|| pick(&|k| k.starts_with("string_to_param")))
        .or_else(|| {
            tensors
                .iter()
                .position(|(_, t)| t.dims().last() == Some(&embedding_size))
        })
        .ok_or_else(|| anyhow::anyhow!("no tensor of width {embedding_size} in the file"))?;
    let t = tensors.swap_remove(idx).1.to_dtype(DType::F32)?;
    let width = *t.dims().last().unwrap_or(&0);
    if width != embedding_size {
        anyhow::bail!("embedding width {width} does not match the text encoder ({embedding_size})");
    }
    let t = t.reshape(((), width))?;
    let rows = (0..t.dim(0)?)
        .map(|i| t.get(i))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Shared handle used by the text encoder.
pub type SharedTokenizer = Arc<Tokenizer>;

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(s: &str) -> Vec<(String, f64)> {
        token_weights(&escape_important(s), 1.0)
    }

    #[test]
    fn weighting_syntax() {
        assert_eq!(weights("a cat"), vec![("a cat".to_string(), 1.0)]);
        assert_eq!(weights("(a cat:1.2)"), vec![("a cat".to_string(), 1.2)]);
        let w = weights("((x))");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].1, 1.1 * 1.1);
        let w = weights("(a (b:1.5) c)");
        assert_eq!(
            w,
            vec![
                ("a ".to_string(), 1.1),
                ("b".to_string(), 1.5),
                (" c".to_string(), 1.1)
            ]
        );
        assert_eq!(weights("[x]"), vec![("[x]".to_string(), 1.0)]);
        // escaped parentheses are literal
        let w = weights(r"a \(b\) c");
        assert_eq!(w.len(), 1);
        assert_eq!(unescape_important(&w[0].0), "a (b) c");
        // a colon that is not followed by a float is kept and weight is 1.1
        let w = weights("(12:30 pm)");
        assert_eq!(w, vec![("12:30 pm".to_string(), 1.1)]);
    }

    #[test]
    fn embedding_split() {
        assert_eq!(
            split_embeddings("a embedding:foo, b\nembedding:bar"),
            vec!["a", "embedding:foo, b", "embedding:bar"]
        );
    }
}
