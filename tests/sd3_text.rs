//! SD3's text conditioning against ComfyUI's `SD3ClipModel` (tests/data/sd3/text.*, made by
//! `scripts/goldens/gen_sd3_goldens.py` from the same fixture files): the tiny SD3.5
//! checkpoint's CLIP-L + CLIP-G (context = both penultimate layers, padded to 4096; pooled =
//! CLIP-L's unprojected ++ CLIP-G's projected), CLIPTextEncodeSD3 with both padding modes,
//! CLIPSetLastLayer, and single encoders as CLIPLoader type `sd3` loads them (CLIP-L alone,
//! CLIP-G alone: 768 zero channels in front; T5-XXL alone: its output is the context, the
//! pooled output zeros); loader routing and errors.

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions};
use comfyrs::models::component_files::load_text_encoders;
use comfyrs::models::fixture as fx;
use comfyrs::models::{Family, TextEncoders};
use comfyrs::nodes::sd3::encode_sd3;
use comfyrs::nodes::sd_types::{clip_payload, SdClip};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Goldens {
    t: HashMap<String, Tensor>,
    meta: Json,
}

fn goldens() -> Goldens {
    Goldens {
        t: candle_core::safetensors::load(
            root().join("tests/data/sd3/text.safetensors"),
            &Device::Cpu,
        )
        .unwrap(),
        meta: serde_json::from_str(
            &std::fs::read_to_string(root().join("tests/data/sd3/text.json")).unwrap(),
        )
        .unwrap(),
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a − b| ≤ tol · max(1e-6, max |b|).
fn close(name: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    assert_eq!(ours.dims(), theirs.dims(), "{name}: shape");
    let d = max_abs(&(ours - theirs).unwrap());
    let scale = max_abs(theirs).max(1e-6);
    assert!(d <= tol * scale, "{name}: max |Δ| {d} (scale {scale})");
}

impl Goldens {
    /// Checks (cond, pooled) against the golden `key` (stored as channels 0..128 and
    /// 768..896 of the cond, the rest recorded as its largest |value|).
    fn check(&self, key: &str, cond: &Tensor, pooled: &Tensor) {
        let m = &self.meta["conds"][format!("{key}.cond")];
        let shape: Vec<usize> = m["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(cond.dims(), shape.as_slice(), "{key}: cond shape");
        let c = cond.dim(2).unwrap();
        let head = 128.min(c);
        close(
            &format!("{key} cond"),
            &cond.narrow(2, 0, head).unwrap(),
            &self.t[&format!("{key}.cond")],
            2e-5,
        );
        let mut rest = Vec::new();
        if c > 768 {
            close(
                &format!("{key} cond 768.."),
                &cond.narrow(2, 768, 128).unwrap(),
                &self.t[&format!("{key}.cond_mid")],
                2e-5,
            );
            rest.push(cond.narrow(2, 128, 640).unwrap());
            rest.push(cond.narrow(2, 896, c - 896).unwrap());
        }
        // The other channels: zero padding (exactly 0 in both), or T5's output (its
        // largest |value| within float tolerance).
        let tail = rest.iter().map(max_abs).fold(0f32, f32::max);
        let want = m["tail_max_abs"].as_f64().unwrap() as f32;
        assert!(
            (tail - want).abs() <= 2e-5 * want.max(1.0) && (want == 0.0) == (tail == 0.0),
            "{key}: other channels' max |value| {tail}, ComfyUI {want}"
        );
        close(
            &format!("{key} pooled"),
            pooled,
            &self.t[&format!("{key}.pooled")],
            2e-5,
        );
    }

    fn cases(&self, kind: &str) -> Vec<Json> {
        self.meta["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == kind)
            .cloned()
            .collect()
    }
}

fn checkpoint_clip() -> SdClip {
    let ck = load_checkpoint_with(
        root().join(fx::TINY_SD35_CKPT_PATH),
        &Device::Cpu,
        DType::F32,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(ck.family, Family::Sd3);
    assert!(matches!(
        ck.text,
        TextEncoders::Sd3 {
            l: Some(_),
            g: Some(_),
            t5: None
        }
    ));
    clip_payload(&ck.text, &ck.weights)
}

fn encode(clip: &SdClip, text: &str) -> (Tensor, Tensor) {
    let tokens = clip.encoder.tokenize(text);
    clip.encoder.encode(&tokens, clip.clip_layer).unwrap()
}

#[test]
fn checkpoint_clip_matches_comfyui() {
    let g = goldens();
    let clip = checkpoint_clip();
    assert_eq!(clip.encoder.kind(), "SD3 (CLIP-L + CLIP-G)");
    let cases = g.cases("ckpt");
    assert!(cases.len() >= 5);
    for c in cases {
        let key = c["key"].as_str().unwrap();
        let mut clip = clip.clone();
        clip.clip_layer = c["clip_layer"].as_i64().map(|v| v as i32);
        let (cond, pooled) = encode(&clip, c["prompt"].as_str().unwrap());
        g.check(key, &cond, &pooled);
    }
}

#[test]
fn clip_text_encode_sd3_matches_comfyui() {
    let g = goldens();
    let clip = checkpoint_clip();
    let cases = g.cases("sd3node");
    assert_eq!(cases.len(), 6);
    for c in cases {
        let s = |k: &str| c[k].as_str().unwrap();
        let out = encode_sd3(
            &clip,
            s("clip_l"),
            s("clip_g"),
            s("t5xxl"),
            s("empty_padding"),
        )
        .unwrap();
        let e = &out.0[0];
        g.check(s("key"), &e.cond, e.pooled.as_ref().unwrap());
    }
}

/// Writes the tensors of `src` whose key starts with `prefix` to `dst`, the prefix
/// stripped, bytes unchanged.
fn cut(src: &Path, prefix: &str, dst: &Path) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v)))
        .collect();
    std::fs::write(dst, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

fn load(paths: &[&Path], clip_type: &str) -> Result<SdClip, String> {
    let files = load_text_encoders(paths, clip_type, &Device::Cpu, DType::F32, true, vec![])
        .map_err(|e| e.to_string())?;
    Ok(clip_payload(&files.text, &files.weights))
}

#[test]
fn single_encoders_of_clip_loader_type_sd3_match_comfyui() {
    let g = goldens();
    let dir = tempfile::tempdir().unwrap();
    let clip_l = dir.path().join("clip_l.safetensors");
    cut(
        &root().join(fx::TINY_SD35_CKPT_PATH),
        "text_encoders.clip_l.transformer.",
        &clip_l,
    );
    let files = [
        ("only_l", clip_l.clone(), "SD3 (CLIP-L)"),
        ("only_g", root().join(fx::TINY_CLIP_G_PATH), "SD3 (CLIP-G)"),
        ("only_t5", root().join(fx::TINY_T5XXL_PATH), "SD3 (T5-XXL)"),
    ];
    for (kind, path, name) in files {
        let clip = load(&[&path], "sd3").unwrap();
        assert_eq!(clip.encoder.kind(), name);
        let cases = g.cases(kind);
        assert_eq!(cases.len(), 3, "{kind}");
        for c in cases {
            let (cond, pooled) = encode(&clip, c["prompt"].as_str().unwrap());
            g.check(c["key"].as_str().unwrap(), &cond, &pooled);
        }
    }
    // DualCLIPLoader type sd3 with CLIP-L + CLIP-G (either order) is the checkpoint's pair.
    let g_path = root().join(fx::TINY_CLIP_G_PATH);
    let dual = load(&[&g_path, &clip_l], "sd3").unwrap();
    assert_eq!(dual.encoder.kind(), "SD3 (CLIP-L + CLIP-G)");
}

#[test]
fn dual_clip_pair_equals_the_checkpoint_encoders() {
    // tiny_clip_g holds the same values as the checkpoint's CLIP-G (same keys).
    let dir = tempfile::tempdir().unwrap();
    let (l, gp) = (
        dir.path().join("l.safetensors"),
        dir.path().join("g.safetensors"),
    );
    let ck = root().join(fx::TINY_SD35_CKPT_PATH);
    cut(&ck, "text_encoders.clip_l.transformer.", &l);
    cut(&ck, "text_encoders.clip_g.transformer.", &gp);
    let dual = load(&[&l, &gp], "sd3").unwrap();
    let text = "a (red:1.3) fox";
    let (a, pa) = encode(&dual, text);
    let (b, pb) = encode(&checkpoint_clip(), text);
    assert_eq!(max_abs(&(a - b).unwrap()), 0.0);
    assert_eq!(max_abs(&(pa - pb).unwrap()), 0.0);
    // The committed CLIP-G file is that part too.
    let g2 = load(&[&l, &root().join(fx::TINY_CLIP_G_PATH)], "sd3").unwrap();
    let (c, _) = encode(&g2, text);
    let (d, _) = encode(&dual, text);
    assert_eq!(max_abs(&(c - d).unwrap()), 0.0);
}

#[test]
fn triple_and_g_t5_sets_match_comfyui() {
    let g = goldens();
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("l.safetensors");
    cut(
        &root().join(fx::TINY_SD35_CKPT_PATH),
        "text_encoders.clip_l.transformer.",
        &l,
    );
    let t5 = dir.path().join("t5xxl_wide.safetensors");
    std::fs::write(&t5, fx::tiny_t5xxl_wide_bytes()).unwrap();
    let gp = root().join(fx::TINY_CLIP_G_PATH);
    // Any order: each file goes to the member of its kind.
    let triple = load(&[&t5, &gp, &l], "sd3").unwrap();
    assert_eq!(triple.encoder.kind(), "SD3 (CLIP-L + CLIP-G + T5-XXL)");
    let g_t5 = load(&[&gp, &t5], "sd3").unwrap();
    assert_eq!(g_t5.encoder.kind(), "SD3 (CLIP-G + T5-XXL)");
    for (kind, clip) in [("triple", &triple), ("g_t5", &g_t5)] {
        let cases = g.cases(kind);
        assert_eq!(cases.len(), 3);
        for c in cases {
            let (cond, pooled) = encode(clip, c["prompt"].as_str().unwrap());
            g.check(c["key"].as_str().unwrap(), &cond, &pooled);
        }
    }
    let cases = g.cases("triple_node");
    assert_eq!(cases.len(), 3);
    for c in cases {
        let s = |k: &str| c[k].as_str().unwrap();
        let out = encode_sd3(
            &triple,
            s("clip_l"),
            s("clip_g"),
            s("t5xxl"),
            s("empty_padding"),
        )
        .unwrap();
        let e = &out.0[0];
        g.check(s("key"), &e.cond, e.pooled.as_ref().unwrap());
    }
}

#[test]
fn a_narrow_t5_in_the_triple_set_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("l.safetensors");
    cut(
        &root().join(fx::TINY_SD35_CKPT_PATH),
        "text_encoders.clip_l.transformer.",
        &l,
    );
    let (gp, t5) = (
        root().join(fx::TINY_CLIP_G_PATH),
        root().join(fx::TINY_T5XXL_PATH),
    );
    let clip = load(&[&t5, &gp, &l], "sd3").unwrap();
    // The tiny T5 is 32 wide; SD3 concatenates T5 with the 4096-wide CLIP context (ComfyUI
    // would fail in torch.cat), so it is a clear error here.
    let tokens = clip.encoder.tokenize("a cat");
    let e = clip.encoder.encode(&tokens, None).unwrap_err().to_string();
    assert!(
        e.contains("T5-XXL encoder is 32 wide") && e.contains("4096"),
        "{e}"
    );
}

#[test]
fn loader_errors_name_the_problem() {
    let l = root().join(fx::TINY_CLIP_L_PATH);
    let e = load(&[&l, &l], "sd3").err().unwrap();
    assert!(
        e.contains("at most one file of each kind") && e.contains("CLIP-L and CLIP-L"),
        "{e}"
    );
    let vae = root().join(fx::TINY_FLUX_VAE_PATH);
    let e = load(&[&vae], "sd3").err().unwrap();
    assert!(
        e.contains("type sd3 takes CLIP-L, CLIP-G and T5-XXL files"),
        "{e}"
    );
    let e = load(&[&l, &l, &l, &l], "sd3").err().unwrap();
    assert!(e.contains("type 'sd3'"), "{e}");
}

#[test]
fn clip_text_encode_sd3_needs_an_sd3_clip() {
    let l = root().join(fx::TINY_CLIP_L_PATH);
    let sd1 = load(&[&l], "stable_diffusion").unwrap();
    let e = encode_sd3(&sd1, "a", "b", "c", "none").unwrap_err();
    let m = format!("{e:?}");
    assert!(
        m.contains("CLIPTextEncodeSD3 needs an SD3 CLIP") && m.contains("clip"),
        "{m}"
    );
    let clip = checkpoint_clip();
    let e = encode_sd3(&clip, "a", "b", "c", "sometimes").unwrap_err();
    let m = format!("{e:?}");
    assert!(
        m.contains("empty_padding") && m.contains("none, empty_prompt"),
        "{m}"
    );
}

#[test]
fn checkpoint_without_text_encoders_gives_comfyuis_clip_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(root().join(fx::TINY_SD35_CKPT_PATH)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("text_encoders."))
        .collect();
    let path = dir.path().join("sd35_no_te.safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    let ck =
        load_checkpoint_with(&path, &Device::Cpu, DType::F32, &LoadOptions::default()).unwrap();
    assert_eq!(ck.family, Family::Sd3);
    let clip = clip_payload(&ck.text, &ck.weights);
    let tokens = clip.encoder.tokenize("a cat");
    let e = clip.encoder.encode(&tokens, None).unwrap_err().to_string();
    assert!(
        e.contains("clip input is invalid: None")
            && e.contains("does not contain a valid clip or text encoder model"),
        "{e}"
    );
}
