//! Token ids against transformers' CLIPTokenizer and ComfyUI's windowing
//! (reference data: tests/data/clip_tokens.json, made by gen_clip_tokens.py).

use comfyrs::models::text::clip::{Token, Tokenizer};

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    plain_ids: Vec<u32>,
    windows: Vec<Vec<(u32, f64)>>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("data/clip_tokens.json");
    serde_json::from_str(text).expect("valid reference json")
}

#[test]
fn plain_ids_match_transformers() {
    let tok = Tokenizer::default();
    for c in cases() {
        assert_eq!(
            tok.encode_plain(&c.prompt),
            c.plain_ids,
            "prompt {:?}",
            c.prompt
        );
    }
}

#[test]
fn weighted_windows_match_reference() {
    let tok = Tokenizer::default();
    let all = cases();
    assert!(all.len() >= 10);
    for c in all {
        let got = tok.tokenize_with_weights(&c.prompt);
        assert_eq!(
            got.len(),
            c.windows.len(),
            "window count for {:?}",
            c.prompt
        );
        for (gw, ew) in got.iter().zip(c.windows.iter()) {
            assert_eq!(gw.len(), 77);
            let ids: Vec<u32> = gw
                .iter()
                .map(|(t, _)| t.id().expect("plain token"))
                .collect();
            let eids: Vec<u32> = ew.iter().map(|(t, _)| *t).collect();
            assert_eq!(ids, eids, "ids for {:?}", c.prompt);
            let ws: Vec<f32> = gw.iter().map(|(_, w)| *w).collect();
            let ews: Vec<f32> = ew.iter().map(|(_, w)| *w as f32).collect();
            assert_eq!(ws, ews, "weights for {:?}", c.prompt);
        }
    }
}

#[test]
fn known_prompt_and_empty_prompt() {
    let tok = Tokenizer::default();
    let w = tok.tokenize_with_weights("a photo of a cat");
    let ids: Vec<u32> = w[0].iter().map(|(t, _)| t.id().unwrap()).collect();
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&i| i == 49407));
    let e = tok.tokenize_with_weights("");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0][0].0, Token::Id(49406));
    assert!(e[0][1..]
        .iter()
        .all(|(t, w)| *t == Token::Id(49407) && *w == 1.0));
}

#[test]
fn textual_inversion_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let t = candle_core::Tensor::from_vec(
        (0..64).map(|i| i as f32 / 64.0).collect::<Vec<f32>>(),
        (2, 32),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut m = std::collections::HashMap::new();
    m.insert("emb_params".to_string(), t);
    candle_core::safetensors::save(&m, dir.path().join("myemb.safetensors")).unwrap();
    let tok = Tokenizer::new(vec![dir.path().to_path_buf()], 32);
    let w = tok.tokenize_with_weights("a embedding:myemb, (cat embedding:myemb:1.5)");
    let row = &w[0];
    assert_eq!(row[0].0, Token::Id(49406));
    assert_eq!(row[1].0, Token::Id(320)); // "a"
    assert!(matches!(row[2].0, Token::Embedding(_)));
    assert!(matches!(row[3].0, Token::Embedding(_)));
    assert_eq!(row[4].0, Token::Id(267)); // the "," left over after the name
    assert_eq!(row[5].0, Token::Id(2368)); // "cat"
    assert_eq!(row[5].1, 1.5);
    assert!(matches!(row[6].0, Token::Embedding(_)));
    assert_eq!(row[7].1, 1.5);
    assert_eq!(row[8].0, Token::Id(49407));
    if let Token::Embedding(e) = &row[3].0 {
        let v: Vec<f32> = e.to_vec1().unwrap();
        assert_eq!(v[0], 32.0 / 64.0);
    }
    // unknown embeddings are dropped (with a warning), like ComfyUI
    let w = tok.tokenize_with_weights("embedding:nothere cat");
    assert_eq!(w[0][1].0, Token::Id(2368));
}
