//! ComfyUI's T5-XXL tokenization against goldens made by ComfyUI's own `T5XXLTokenizer`
//! (Flux: at least 256 tokens; SD3: at least 77), and T5's relative position buckets
//! against `T5Attention._relative_position_bucket` (scripts/goldens/gen_t5_goldens.py).

use comfyrs::models::text::t5::{relative_position_bucket, T5Tokenizer};
use serde_json::Value;
use std::path::PathBuf;

fn data(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/t5")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn token_ids_and_weights_match_comfyui() {
    // ComfyUI looks `embedding:NAME` up in its embeddings folder; the goldens used an empty
    // one, so every embedding is missing (dropped with its name, the rest kept).
    let emb = tempfile::tempdir().unwrap();
    let cases = data("tokens.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut longest = 0;
    for c in cases {
        let prompt = c["prompt"].as_str().unwrap();
        let min_length = c["min_length"].as_u64().unwrap() as usize;
        let tok = T5Tokenizer::new(min_length, vec![emb.path().to_path_buf()], 4096);
        let got = tok.tokenize_with_weights(prompt).unwrap();
        let ids: Vec<u64> = got.iter().map(|(t, _)| t.id().unwrap() as u64).collect();
        let want_ids: Vec<u64> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ids, want_ids, "ids of {prompt:?} ({})", c["kind"]);
        let weights: Vec<f32> = got.iter().map(|(_, w)| *w).collect();
        let want_w: Vec<f32> = c["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(weights, want_w, "weights of {prompt:?}");
        longest = longest.max(ids.len());
    }
    assert!(longest > 512, "a prompt past 512 tokens is covered");
}

#[test]
fn relative_position_buckets_match_torch() {
    let g = data("buckets.json");
    let from = g["from"].as_i64().unwrap();
    for (i, b) in g["buckets"].as_array().unwrap().iter().enumerate() {
        let rel = from + i as i64;
        assert_eq!(
            relative_position_bucket(rel) as u64,
            b.as_u64().unwrap(),
            "relative position {rel}"
        );
    }
}
