//! The CLIP byte-level BPE tokenizer, as transformers' (slow) `CLIPTokenizer`
//! runs it without `ftfy` installed (ComfyUI's default environment):
//!
//! 1. `BasicTokenizer(strip_accents=False, do_split_on_punc=False)`: drop NUL,
//!    U+FFFD and control characters (category C except `\t\n\r`), turn
//!    whitespace (`\t\n\r`, category Zs) into spaces, put spaces around CJK
//!    ideographs, NFC-normalise, split on whitespace, lower-case each word,
//!    join with single spaces.
//! 2. Pre-split with CLIP's regex
//!    `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`.
//! 3. Map each piece's UTF-8 bytes through GPT-2's byte→unicode table, then
//!    apply the BPE merges (rank order) with `</w>` appended to the last symbol.
//!
//! The vocabulary is the one of openai/clip-vit-large-patch14 (49408 entries):
//! 256 byte symbols, the same 256 with `</w>`, the 48894 merges, then
//! `<|startoftext|>` (49406) and `<|endoftext|>` (49407). It is derived from
//! the embedded merges list (`bpe_merges.txt`, the first 48894 merges of
//! OpenAI's `bpe_simple_vocab_16e6.txt`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Token id of `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// Token id of `<|endoftext|>`.
pub const EOS: u32 = 49407;
/// Size of the CLIP vocabulary.
pub const VOCAB_SIZE: usize = 49408;

const MERGES: &str = include_str!("bpe_merges.txt");

/// The CLIP BPE tokenizer (shared, immutable vocabulary plus a word cache).
pub struct ClipBpe {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    pat: Regex,
    drop_chars: Regex,
    space_chars: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

/// GPT-2's byte→unicode table, indexed by byte, and the symbols in the
/// order the vocabulary lists them (printable bytes first).
fn bytes_to_unicode() -> ([char; 256], Vec<char>) {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = [' '; 256];
    let mut order = Vec::with_capacity(256);
    for (b, c) in bs.iter().zip(cs.iter()) {
        let ch = char::from_u32(*c).expect("valid char");
        out[*b as usize] = ch;
        order.push(ch);
    }
    (out, order)
}

fn is_cjk(c: char) -> bool {
    let cp = c as u32;
    (0x4E00..=0x9FFF).contains(&cp)
        || (0x3400..=0x4DBF).contains(&cp)
        || (0x20000..=0x2A6DF).contains(&cp)
        || (0x2A700..=0x2B73F).contains(&cp)
        || (0x2B740..=0x2B81F).contains(&cp)
        || (0x2B820..=0x2CEAF).contains(&cp)
        || (0xF900..=0xFAFF).contains(&cp)
        || (0x2F800..=0x2FA1F).contains(&cp)
}

impl ClipBpe {
    /// The process-wide tokenizer (built once from the embedded merges).
    pub fn shared() -> &'static ClipBpe {
        static INSTANCE: OnceLock<ClipBpe> = OnceLock::new();
        INSTANCE.get_or_init(ClipBpe::new)
    }

    fn new() -> Self {
        let (byte_encoder, order) = bytes_to_unicode();
        let mut vocab: Vec<String> = order.iter().map(|c| c.to_string()).collect();
        vocab.extend(order.iter().map(|c| format!("{c}</w>")));
        let mut ranks = HashMap::new();
        for (i, line) in MERGES.lines().enumerate() {
            let mut it = line.split(' ');
            let a = it.next().unwrap_or_default().to_string();
            let b = it.next().unwrap_or_default().to_string();
            vocab.push(format!("{a}{b}"));
            ranks.insert((a, b), i);
        }
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        assert_eq!(
            vocab.len(),
            VOCAB_SIZE,
            "embedded CLIP merges list is incomplete"
        );
        let encoder = vocab
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u32))
            .collect();
        let pat = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
        )
        .expect("valid regex");
        ClipBpe {
            encoder,
            ranks,
            byte_encoder,
            pat,
            drop_chars: Regex::new(r"[\x00\x{FFFD}]|[\p{C}&&[^\t\n\r]]").expect("valid regex"),
            space_chars: Regex::new(r"[\t\n\r\p{Zs}]").expect("valid regex"),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// transformers' `BasicTokenizer.tokenize` followed by `" ".join(...)`.
    pub fn basic_clean(&self, text: &str) -> String {
        let text = self.drop_chars.replace_all(text, "");
        let text = self.space_chars.replace_all(&text, " ");
        let mut spaced = String::with_capacity(text.len());
        for c in text.chars() {
            if is_cjk(c) {
                spaced.push(' ');
                spaced.push(c);
                spaced.push(' ');
            } else {
                spaced.push(c);
            }
        }
        let nfc: String = spaced.nfc().collect();
        nfc.split_whitespace()
            .map(|w| w.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Token ids of `text` without BOS/EOS (what ComfyUI keeps of
    /// `tokenizer(text)["input_ids"][1:-1]`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text = self.basic_clean(text);
        let mut out = Vec::new();
        for m in self.pat.find_iter(&text) {
            let piece = m.as_str();
            if piece == "<|startoftext|>" {
                out.push(BOS);
                continue;
            }
            if piece == "<|endoftext|>" {
                out.push(EOS);
                continue;
            }
            let mapped: String = piece
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            out.extend(self.bpe_word(&mapped));
        }
        out
    }

    fn bpe_word(&self, token: &str) -> Vec<u32> {
        if let Some(ids) = self.cache.lock().expect("cache lock").get(token) {
            return ids.clone();
        }
        let chars: Vec<char> = token.chars().collect();
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        loop {
            if word.len() < 2 {
                break;
            }
            let mut best: Option<(usize, usize)> = None;
            for i in 0..word.len() - 1 {
                if let Some(&r) = self.ranks.get(&(word[i].clone(), word[i + 1].clone())) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let (first, second) = (word[i].clone(), word[i + 1].clone());
            // Merge every occurrence of the pair, left to right.
            let mut merged = Vec::with_capacity(word.len());
            let mut j = 0;
            while j < word.len() {
                if j + 1 < word.len() && word[j] == first && word[j + 1] == second {
                    merged.push(format!("{first}{second}"));
                    j += 2;
                } else {
                    merged.push(word[j].clone());
                    j += 1;
                }
            }
            word = merged;
        }
        let ids: Vec<u32> = word
            .iter()
            .map(|w| *self.encoder.get(w).expect("BPE symbol in vocabulary"))
            .collect();
        self.cache
            .lock()
            .expect("cache lock")
            .insert(token.to_string(), ids.clone());
        ids
    }
}
