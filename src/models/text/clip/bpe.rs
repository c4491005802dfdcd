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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
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
    /// Recent words' ids. Bounded (a server sees every word any client sends) and only for
    /// words up to [`CACHE_WORD_MAX`] symbols.
    cache: Mutex<lru::LruCache<String, Vec<u32>>>,
}

/// Words the cache holds at most.
pub const CACHE_ENTRIES: usize = 16_384;

/// Longer words are merged every time instead of cached (real words are short; a cache of
/// long ones only holds an attacker's bytes).
pub const CACHE_WORD_MAX: usize = 64;

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
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).expect("non-zero"),
            )),
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
        let cacheable = token.chars().count() <= CACHE_WORD_MAX;
        if cacheable {
            if let Some(ids) = self.cache.lock().expect("cache lock").get(token) {
                return ids.clone();
            }
        }
        let ids = self.merge(token);
        if cacheable {
            self.cache
                .lock()
                .expect("cache lock")
                .put(token.to_string(), ids.clone());
        }
        ids
    }

    /// The BPE merges of one word, in O(n log n): symbols in a linked list, candidate pairs
    /// in a min-heap by (rank, position). It merges what the reference loop (merge every
    /// occurrence of the lowest-ranked pair, left to right, then rescan) merges, because a
    /// pair a merge creates always ranks after the merge that made its symbol (checked over
    /// the whole merges list by `merges_only_use_earlier_symbols`), so equal ranks are taken
    /// left to right and lower ones never appear mid-round.
    fn merge(&self, token: &str) -> Vec<u32> {
        let mut sym: Vec<String> = token.chars().map(|c| c.to_string()).collect();
        if let Some(last) = sym.last_mut() {
            last.push_str("</w>");
        }
        let n = sym.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let rank = |a: &str, b: &str| self.ranks.get(&(a.to_string(), b.to_string())).copied();
        let mut heap: BinaryHeap<Reverse<(usize, usize)>> = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            if let Some(r) = rank(&sym[i], &sym[i + 1]) {
                heap.push(Reverse((r, i)));
            }
        }
        while let Some(Reverse((r, i))) = heap.pop() {
            // Stale: the left symbol was merged away, or the pair is no longer this one.
            let j = next.get(i).copied().unwrap_or(n);
            if !alive[i] || j >= n || rank(&sym[i], &sym[j]) != Some(r) {
                continue;
            }
            let right = std::mem::take(&mut sym[j]);
            sym[i].push_str(&right);
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
            }
            if let Some(&p) = prev.get(i).filter(|&&p| p < n) {
                if let Some(r) = rank(&sym[p], &sym[i]) {
                    heap.push(Reverse((r, p)));
                }
            }
            if next[i] < n {
                if let Some(r) = rank(&sym[i], &sym[next[i]]) {
                    heap.push(Reverse((r, i)));
                }
            }
        }
        (0..n)
            .filter(|&i| alive[i])
            .map(|i| *self.encoder.get(&sym[i]).expect("BPE symbol in vocabulary"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference loop (transformers' `bpe`): merge every occurrence of the lowest-ranked
    /// pair left to right, rescan.
    fn reference(bpe: &ClipBpe, token: &str) -> Vec<u32> {
        let mut word: Vec<String> = token.chars().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        while word.len() >= 2 {
            let best = (0..word.len() - 1)
                .filter_map(|i| {
                    bpe.ranks
                        .get(&(word[i].clone(), word[i + 1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let (a, b) = (word[i].clone(), word[i + 1].clone());
            let mut merged = Vec::new();
            let mut j = 0;
            while j < word.len() {
                if j + 1 < word.len() && word[j] == a && word[j + 1] == b {
                    merged.push(format!("{a}{b}"));
                    j += 2;
                } else {
                    merged.push(word[j].clone());
                    j += 1;
                }
            }
            word = merged;
        }
        word.iter().map(|w| bpe.encoder[w]).collect()
    }

    /// What makes the heap merge equal to the reference loop: each merge's operands are base
    /// symbols or the results of earlier merges.
    #[test]
    fn merges_only_use_earlier_symbols() {
        let bpe = ClipBpe::shared();
        let mut made: HashMap<String, usize> = HashMap::new();
        let base: std::collections::HashSet<String> = bpe
            .byte_encoder
            .iter()
            .flat_map(|c| [c.to_string(), format!("{c}</w>")])
            .collect();
        for (i, line) in MERGES.lines().enumerate() {
            let (a, b) = line.split_once(' ').expect("pair");
            for x in [a, b] {
                assert!(
                    base.contains(x) || made.get(x).is_some_and(|&j| j < i),
                    "merge {i} ({line}) uses {x:?} before it is made"
                );
            }
            made.entry(format!("{a}{b}")).or_insert(i);
        }
    }

    #[test]
    fn heap_merge_matches_the_reference_loop() {
        let bpe = ClipBpe::shared();
        let mut words: Vec<String> = [
            "a",
            "photograph",
            "aaaaaaaaaaaaaaa",
            "lowerlowerlowest",
            "hellohello",
            "supercalifragilisticexpialidocious",
            "ababababab",
            "the",
            "theaterthe",
            "ммммммм",
            "日本語",
            "éééé",
            "zzzzzzzzzzzzzzzzzzzzzzz",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Deterministic pseudo-random words over a small alphabet (many repeated pairs).
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..300 {
            let len = 1 + (x % 40) as usize;
            let w: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"aeinrst"[(x % 7) as usize] as char
                })
                .collect();
            words.push(w);
        }
        for w in &words {
            let mapped: String = w.bytes().map(|b| bpe.byte_encoder[b as usize]).collect();
            assert_eq!(bpe.merge(&mapped), reference(bpe, &mapped), "{w}");
        }
    }

    /// A single 200,000-letter word (the regex has no length cap) is merged in seconds (the
    /// quadratic loop took minutes), and is not cached.
    #[test]
    fn long_words_are_fast_and_not_cached() {
        let bpe = ClipBpe::shared();
        let word = "ab".repeat(100_000);
        let t0 = std::time::Instant::now();
        let ids = bpe.encode(&word);
        assert!(!ids.is_empty());
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            t0.elapsed()
        );
        let cache = bpe.cache.lock().unwrap();
        assert!(cache
            .iter()
            .all(|(k, _)| k.chars().count() <= CACHE_WORD_MAX));
        assert!(cache.cap().get() == CACHE_ENTRIES);
    }
}
