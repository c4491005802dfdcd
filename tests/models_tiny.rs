//! End-to-end checks on the tiny random-weight SD1.5-layout fixture.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::{load_sd1_checkpoint, load_vae, Prediction};
use comfyrs::models::fixture::{tiny_sd15_bytes, TINY_SD15_PATH};
use comfyrs::models::Sd1Checkpoint;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(TINY_SD15_PATH)
}

fn load() -> Sd1Checkpoint {
    load_sd1_checkpoint(fixture_path(), &Device::Cpu, DType::F32).expect("fixture loads")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn generator_reproduces_committed_fixture() {
    let committed = std::fs::read(fixture_path()).expect("committed fixture");
    let generated = tiny_sd15_bytes();
    assert_eq!(committed.len(), generated.len());
    assert!(
        committed == generated,
        "regenerate with `cargo run --bin gen_fixtures`"
    );
}

#[test]
fn detects_configs() {
    let ck = load();
    let u = ck.unet.config();
    assert_eq!(u.model_channels, 32);
    assert_eq!(u.in_channels, 4);
    assert_eq!(u.out_channels, 4);
    assert_eq!(u.channel_mult, vec![1, 2]);
    assert_eq!(u.num_res_blocks, vec![1, 1]);
    assert_eq!(u.transformer_depth, vec![0, 1]);
    assert_eq!(u.transformer_depth_output, vec![1, 1, 0, 0]);
    assert_eq!(u.transformer_depth_middle, 1);
    assert_eq!(u.context_dim, Some(32));
    assert!(!u.use_linear_in_transformer);
    assert!(!u.is_sd15());
    let c = &ck.clip.model.config;
    assert_eq!(
        (c.width, c.layers, c.heads, c.intermediate),
        (32, 2, 4, 128)
    );
    assert_eq!((c.vocab_size, c.max_positions), (49408, 77));
    let v = ck.vae.config();
    assert_eq!(v.ch, 32);
    assert_eq!(v.ch_mult, vec![1, 1, 1, 2]);
    assert_eq!(v.num_res_blocks, 1);
    assert_eq!(v.z_channels, 4);
    assert_eq!(ck.prediction, Prediction::Eps);
    assert!(ck
        .weights
        .contains_key("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
}

#[test]
fn non_checkpoint_is_rejected_with_a_description() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lora.safetensors");
    let mut m = std::collections::HashMap::new();
    for i in 0..3 {
        m.insert(
            format!("lora_unet_down_blocks_{i}.alpha"),
            Tensor::new(&[1f32], &Device::Cpu).unwrap(),
        );
    }
    m.insert(
        "foo.bar".to_string(),
        Tensor::new(&[1f32], &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&m, &p).unwrap();
    let err = load_sd1_checkpoint(&p, &Device::Cpu, DType::F32)
        .err()
        .expect("not a checkpoint")
        .to_string();
    assert!(err.contains("no model.diffusion_model.* keys"), "{err}");
    assert!(err.contains("found 4 tensors"), "{err}");
    assert!(err.contains("foo.* (1)"), "{err}");
    let txt = dir.path().join("x.safetensors");
    std::fs::write(&txt, b"hello").unwrap();
    let err = load_sd1_checkpoint(&txt, &Device::Cpu, DType::F32)
        .err()
        .expect("not safetensors")
        .to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
    // A VAE-only file is not a checkpoint but loads as a VAE.
    let err = load_vae(&p, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a VAE"), "{err}");
}

#[test]
fn clip_encode_shapes_weights_and_clip_skip() {
    let ck = load();
    let (cond, pooled) = ck.clip.encode_text("a photo of a cat", Some(-1)).unwrap();
    assert_eq!(cond.dims(), &[1, 77, 32]);
    assert_eq!(pooled.dims(), &[1, 32]);
    let (cond2, _) = ck.clip.encode_text("a photo of a cat", Some(-1)).unwrap();
    assert_eq!(max_abs_diff(&cond, &cond2), 0.0, "deterministic");
    // pooled is the final-LN output at the first EOS (position 6)
    let p6 = cond.get(0).unwrap().get(6).unwrap().unsqueeze(0).unwrap();
    assert_eq!(max_abs_diff(&pooled, &p6), 0.0);
    // clip skip -2 changes the output; -1 and out-of-range values are "last"
    let (skip2, pooled2) = ck.clip.encode_text("a photo of a cat", Some(-2)).unwrap();
    assert!(max_abs_diff(&cond, &skip2) > 1e-3);
    assert_eq!(
        max_abs_diff(&pooled, &pooled2),
        0.0,
        "pooled ignores clip skip"
    );
    let (skip_far, _) = ck.clip.encode_text("a photo of a cat", Some(-24)).unwrap();
    assert_eq!(max_abs_diff(&cond, &skip_far), 0.0);
    // Long prompts give 77·N tokens.
    let long = vec!["word"; 100].join(" ");
    let (c_long, _) = ck.clip.encode_text(&long, Some(-1)).unwrap();
    assert_eq!(c_long.dims(), &[1, 154, 32]);
    // Weights: z = (z - z_empty)·w + z_empty at weighted positions only.
    let (cw, _) = ck
        .clip
        .encode_text("a photo of a (cat:1.5)", Some(-1))
        .unwrap();
    let (empty, _) = ck.clip.encode_text("", Some(-1)).unwrap();
    let same = cw.get(0).unwrap().narrow(0, 0, 5).unwrap();
    let base = cond.get(0).unwrap().narrow(0, 0, 5).unwrap();
    assert_eq!(max_abs_diff(&same, &base), 0.0);
    let z = cond.get(0).unwrap().get(5).unwrap();
    let e = empty.get(0).unwrap().get(5).unwrap();
    let expect = (((&z - &e).unwrap() * 1.5).unwrap() + &e).unwrap();
    assert!(max_abs_diff(&cw.get(0).unwrap().get(5).unwrap(), &expect) < 1e-6);
}

#[test]
fn unet_forward_shape_and_determinism() {
    let ck = load();
    let dev = Device::Cpu;
    let (cond, _) = ck.clip.encode_text("a photo of a cat", Some(-1)).unwrap();
    let x = Tensor::randn(0f32, 1f32, (2, 4, 8, 8), &dev).unwrap();
    let t = Tensor::new(&[999f32, 500f32], &dev).unwrap();
    let ctx = Tensor::cat(&[&cond, &cond], 0).unwrap();
    let a = ck.unet.forward(&x, &t, &ctx, None).unwrap();
    let b = ck.unet.forward(&x, &t, &ctx, None).unwrap();
    assert_eq!(a.dims(), &[2, 4, 8, 8]);
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let std = a
        .flatten_all()
        .unwrap()
        .var(0)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        std.is_finite() && std > 0.05 && std < 50.0,
        "output std {std}"
    );
    // The batch items are independent; different timesteps give different outputs.
    let a0 = ck
        .unet
        .forward(
            &x.narrow(0, 0, 1).unwrap(),
            &t.narrow(0, 0, 1).unwrap(),
            &cond,
            None,
        )
        .unwrap();
    assert!(max_abs_diff(&a.narrow(0, 0, 1).unwrap(), &a0) < 1e-4);
    assert!(max_abs_diff(&a.narrow(0, 0, 1).unwrap(), &a.narrow(0, 1, 1).unwrap()) > 1e-3);
    // Odd latent sizes work (upsample to the skip's size, like ComfyUI).
    let odd = Tensor::randn(0f32, 1f32, (1, 4, 7, 9), &dev).unwrap();
    let o = ck
        .unet
        .forward(&odd, &t.narrow(0, 0, 1).unwrap(), &cond, None)
        .unwrap();
    assert_eq!(o.dims(), &[1, 4, 7, 9]);
}

#[test]
fn vae_decode_encode() {
    let ck = load();
    let dev = Device::Cpu;
    let z = Tensor::randn(0f32, 1f32, (1, 4, 8, 8), &dev).unwrap();
    let img = ck.vae.decode(&z).unwrap();
    assert_eq!(img.dims(), &[1, 64, 64, 3]);
    let flat = img.flatten_all().unwrap();
    let mn = flat.min(0).unwrap().to_scalar::<f32>().unwrap();
    let mx = flat.max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(mn >= 0.0 && mx <= 1.0);
    let std = flat
        .var(0)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(std > 0.05, "decoded image is flat (std {std})");
    // encode crops 70x66 → 64x64 (center), returns unscaled latents
    let big = Tensor::rand(0f32, 1f32, (1, 66, 70, 4), &dev).unwrap();
    let lat = ck.vae.encode(&big).unwrap();
    assert_eq!(lat.dims(), &[1, 4, 8, 8]);
    let cropped = big.narrow(1, 1, 64).unwrap().narrow(2, 3, 64).unwrap();
    let lat2 = ck.vae.encode(&cropped).unwrap();
    assert_eq!(max_abs_diff(&lat, &lat2), 0.0);
    let lstd = lat
        .flatten_all()
        .unwrap()
        .var(0)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(lstd > 0.5, "latent std {lstd}");
    // The standalone VAE loader reads the same weights from the checkpoint.
    let vae = load_vae(fixture_path(), &dev, DType::F32).unwrap();
    assert_eq!(max_abs_diff(&vae.decode(&z).unwrap(), &img), 0.0);
}

/// The full-size SD1.5 layout (every key and shape of a real checkpoint, from
/// shared/parity/sd15_layout.json) builds all three models and is detected as
/// ComfyUI's SD15 preset. Tensors are stride-0 broadcasts, so nothing big is
/// allocated.
#[test]
fn full_size_sd15_layout_builds() {
    #[derive(serde::Deserialize)]
    struct Layout {
        tensors: std::collections::BTreeMap<String, (Vec<usize>, String)>,
    }
    let layout: Layout =
        serde_json::from_str(include_str!("data/sd15_layout.json")).expect("layout json");
    let dev = Device::Cpu;
    let zero = Tensor::zeros((), DType::F32, &dev).unwrap();
    let mut w = std::collections::HashMap::new();
    for (k, (shape, kind)) in &layout.tensors {
        if kind == "int64" {
            continue;
        }
        w.insert(k.clone(), zero.broadcast_as(shape.as_slice()).unwrap());
    }
    assert_eq!(w.len(), 686 + 248 + 196 + 12);
    let opts = comfyrs::models::checkpoint::LoadOptions {
        clip_fp16_round: false,
        ..Default::default()
    };
    let ck = comfyrs::models::checkpoint::sd1_from_weights(w, &dev, DType::F32, &opts).unwrap();
    let u = ck.unet.config();
    assert!(u.is_sd15());
    assert_eq!(u.channel_mult, vec![1, 2, 4, 4]);
    assert_eq!(u.num_res_blocks, vec![2, 2, 2, 2]);
    assert_eq!(u.transformer_depth, vec![1, 1, 1, 1, 1, 1, 0, 0]);
    // output_blocks order (ComfyUI's list is the reverse: it pops from the end)
    assert_eq!(
        u.transformer_depth_output,
        vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    );
    assert_eq!(u.num_heads, Some(8));
    let c = &ck.clip.model.config;
    assert_eq!(
        (c.width, c.layers, c.heads, c.intermediate),
        (768, 12, 12, 3072)
    );
    let v = ck.vae.config();
    assert_eq!(
        (v.ch, v.ch_mult.clone(), v.num_res_blocks, v.z_channels),
        (128, vec![1, 2, 4, 4], 2, 4)
    );
}
