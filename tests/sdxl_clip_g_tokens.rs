//! SDXL token ids (CLIP-G and CLIP-L) against ComfyUI's own `SDXLTokenizer` for 33 prompts:
//! weights, emphasis, escapes, unicode, prompts over 77 tokens, textual inversions with an
//! SDXL embedding file (`clip_g` and `clip_l` keys). Reference data: tests/data/sdxl, made by
//! `scripts/goldens/gen_clip_g_tokens.py`.

use comfyrs::models::text::clip::{Token, Tokenizer};
use serde_json::Value;
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sdxl")
}

/// bigG as SDXL builds it: width 1280, pads with 0, embeddings from the `clip_g` key.
fn clip_g() -> Tokenizer {
    Tokenizer::new(vec![data().join("embeddings")], 1280)
        .with_pad_token(0)
        .with_embedding_key("clip_g")
}

fn clip_l() -> Tokenizer {
    Tokenizer::new(vec![data().join("embeddings")], 768)
}

fn check(which: &str, prompt: &str, got: &[Vec<(Token, f32)>], want: &Value) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{which} window count for {prompt:?}");
    for (w, (gw, ew)) in got.iter().zip(want).enumerate() {
        let ew = ew.as_array().unwrap();
        assert_eq!(
            gw.len(),
            ew.len(),
            "{which} window {w} length for {prompt:?}"
        );
        for (i, ((tok, weight), e)) in gw.iter().zip(ew).enumerate() {
            let e = e.as_array().unwrap();
            let at = format!("{which} window {w} position {i} of {prompt:?}");
            match (tok, e[0].as_str()) {
                (Token::Id(id), None) => {
                    assert_eq!(*id as u64, e[0].as_u64().unwrap(), "id at {at}");
                    assert_eq!(*weight, e[1].as_f64().unwrap() as f32, "weight at {at}");
                }
                (Token::Embedding(t), Some("emb")) => {
                    let first = t.flatten_all().unwrap().get(0).unwrap();
                    let first = first.to_scalar::<f32>().unwrap();
                    assert_eq!(first, e[1].as_f64().unwrap() as f32, "embedding at {at}");
                    assert_eq!(*weight, e[2].as_f64().unwrap() as f32, "weight at {at}");
                }
                (t, _) => panic!("{at}: got {t:?}, ComfyUI has {e:?}"),
            }
        }
    }
}

#[test]
fn sdxl_tokens_match_comfyui() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("clip_g_tokens.json")).unwrap())
            .unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 30);
    let (g, l) = (clip_g(), clip_l());
    let mut multi = 0;
    let mut embeddings = 0;
    for c in cases {
        let prompt = c["prompt"].as_str().unwrap();
        let tg = g.tokenize_with_weights(prompt);
        check("g", prompt, &tg, &c["g"]);
        check("l", prompt, &l.tokenize_with_weights(prompt), &c["l"]);
        multi += usize::from(tg.len() > 1);
        embeddings += usize::from(
            tg.iter()
                .flatten()
                .any(|(t, _)| matches!(t, Token::Embedding(_))),
        );
    }
    // The set covers prompts over 77 tokens and textual inversions.
    assert!(multi >= 4, "{multi} multi-window prompts");
    assert!(embeddings >= 3, "{embeddings} prompts with an embedding");
}
