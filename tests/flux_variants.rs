//! The Flux variants that are the same network with other inputs, against ComfyUI's own
//! modules (tests/data/flux_variants, made by `scripts/goldens/gen_flux_variant_goldens.py`
//! from the project's tiny fixtures):
//!
//! * Fill (img_in over 96 channels): a 3-step euler run with InpaintModelConditioning's
//!   conds and the noise mask, plain and with DifferentialDiffusion (strengths 1 and 0.5);
//! * Canny/Depth (32 channels): InstructPixToPixConditioning's `concat_latent_image`;
//! * a BFL control LoRA (Depth/Canny LoRA) on the dev model: `img_in` widened to 32 input
//!   channels, the control latent concatenated as for the Canny model;
//! * Kontext: reference latents through the sampling path, every placement method;
//! * DifferentialDiffusion's per-step mask under Flux's and SD1.5's model samplings;
//! * ImageStitch in every direction, spacing, colour, size-matching and padding case.
//!
//! Tolerance 2e-5. The Fill and Canny runs use FluxGuidance 30, and at t·1000 = 30000 the
//! guidance embedding's sinusoids amplify torch's CPU `exp`, which is 1 ulp off the correctly
//! rounded value on three of the 128 frequencies; comfyrs uses torch's values
//! (`models::nn::sinusoid`). The goldens also hold the same runs made with that exp correctly
//! rounded in ComfyUI (`*_crexp`): those differ by ~6e-4, which shows the ulp matters.

use candle_core::{DType, Device, Tensor};
use comfyrs::models::component_files::load_diffusion_model;
use comfyrs::models::fixture::{TINY_FLUX_CANNY_PATH, TINY_FLUX_FILL_PATH, TINY_FLUX_PATH};
use comfyrs::models::flux::RefLatentsMethod;
use comfyrs::models::Family;
use comfyrs::node::types::Latent;
use comfyrs::nodes::image_stitch::{stitch, StitchOptions};
use comfyrs::nodes::sampling::run_sampler;
use comfyrs::nodes::sd_types::{model_payload, CondEntry, Conditioning, SdModel};
use comfyrs::sampling::conds::{CondOptions, Guidance};
use comfyrs::sampling::differential_diffusion::DifferentialDiffusion;
use comfyrs::sampling::model_sampling::{ModelSampling, Prediction};
use comfyrs::sampling::samplers::SamplerKind;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root().join("tests/data/flux_variants/goldens.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn meta() -> Json {
    let s = std::fs::read_to_string(root().join("tests/data/flux_variants/goldens.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
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

/// Bound against ComfyUI's own runs.
const EXACT_TOL: f32 = 2e-5;

/// The run made with correctly rounded embedding frequencies is measurably different.
fn differs(name: &str, ours: &Tensor, crexp: &Tensor) {
    let d = max_diff(ours, crexp);
    assert!(d > 1e-4, "{name}: only {d} from the correctly rounded run");
}

fn check(name: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    let d = max_diff(ours, theirs);
    assert!(d < tol, "{name}: max |Δ| {d} (bound {tol})");
}

fn model(path: &str) -> SdModel {
    let file = load_diffusion_model(&root().join(path), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(file.family, Family::Flux);
    model_payload(
        file.model.clone(),
        &file.weights,
        file.family,
        file.prediction,
    )
}

fn sigmas(g: &HashMap<String, Tensor>, key: &str) -> Vec<f32> {
    g[key].to_vec1::<f32>().unwrap()
}

fn cond(g: &HashMap<String, Tensor>, opts: CondOptions) -> Conditioning {
    let mut e = CondEntry::new(g["cond.context"].clone(), Some(g["cond.pooled"].clone()));
    e.opts = opts;
    Conditioning(vec![e])
}

/// A 3-step euler run at cfg 1 (positive = negative, as the goldens pass them).
fn sample(g: &HashMap<String, Tensor>, m: &SdModel, c: &Conditioning, latent: &Latent) -> Tensor {
    run_sampler(
        None,
        m,
        c,
        Some(c),
        1.0,
        SamplerKind::Euler,
        &sigmas(g, "fill.sigmas"),
        latent,
        &g["fill.noise"],
        0,
    )
    .unwrap()
    .0
}

#[test]
fn fill_model_is_detected_from_its_384_input_features() {
    let m = model(TINY_FLUX_FILL_PATH);
    let net = m.diffusion.base();
    assert_eq!((net.in_channels(), net.out_channels()), (96, 16));
    let c = model(TINY_FLUX_CANNY_PATH);
    assert_eq!(c.diffusion.base().in_channels(), 32);
}

#[test]
fn fill_inpainting_with_and_without_differential_diffusion_matches_comfyui() {
    let g = goldens();
    let m = model(TINY_FLUX_FILL_PATH);
    let c = cond(
        &g,
        CondOptions {
            concat_latent_image: Some(g["fill.concat"].clone()),
            concat_mask: Some(g["fill.mask"].clone()),
            guidance: Some(Guidance::Value(30.0)),
            ..Default::default()
        },
    );
    let latent = Latent {
        samples: g["fill.latent"].clone(),
        noise_mask: Some(g["fill.mask"].clone()),
        batch_index: None,
    };
    let plain = sample(&g, &m, &c, &latent);
    check("fill", &plain, &g["fill.out"], EXACT_TOL);
    differs("fill", &plain, &g["fill_crexp.out"]);
    let mut outs = vec![plain];
    for (strength, key) in [(1.0, "fill_dd"), (0.5, "fill_dd05")] {
        let mut dd = m.clone();
        dd.denoise_mask_fn = Some(DifferentialDiffusion { strength });
        let out = sample(&g, &dd, &c, &latent);
        check(key, &out, &g[&format!("{key}.out")], EXACT_TOL);
        outs.push(out);
    }
    // The three runs differ: the patch changes what is denoised when.
    assert!(max_diff(&outs[0], &outs[1]) > 1e-2);
    assert!(max_diff(&outs[1], &outs[2]) > 1e-2);
}

#[test]
fn canny_depth_concat_latent_matches_comfyui() {
    let g = goldens();
    let m = model(TINY_FLUX_CANNY_PATH);
    let c = cond(
        &g,
        CondOptions {
            concat_latent_image: Some(g["canny.concat"].clone()),
            guidance: Some(Guidance::Value(30.0)),
            ..Default::default()
        },
    );
    let latent = Latent::new(Tensor::zeros((1, 16, 6, 8), DType::F32, &Device::Cpu).unwrap());
    let out = sample(&g, &m, &c, &latent);
    check("canny", &out, &g["canny.out"], EXACT_TOL);
    differs("canny", &out, &g["canny_crexp.out"]);
}

#[test]
fn bfl_control_lora_widens_img_in_and_matches_comfyui() {
    use comfyrs::models::lora::{load_lora, read_lora, KeyMap, PatchCache, PatchEntry};
    let g = goldens();
    let base = model(TINY_FLUX_PATH);
    let file = read_lora(&root().join("tests/data/flux_variants/tiny_flux_depth_lora.safetensors"))
        .unwrap();
    let weights = base.diffusion.base_weights().clone();
    let map = KeyMap::for_weights(&weights, true, false).unwrap();
    let loaded = load_lora(&file, &map, &weights).unwrap();
    assert!(loaded.unmatched.is_empty(), "{:?}", loaded.unmatched);
    assert!(
        loaded.shape_mismatches.is_empty(),
        "{:?}",
        loaded.shape_mismatches
    );
    let mut m = base.clone();
    m.diffusion = base.diffusion.with_patch(
        PatchEntry::lora(
            std::sync::Arc::new(loaded),
            "tiny_flux_depth_lora".into(),
            1.0,
        ),
        std::sync::Arc::new(PatchCache::default()),
    );
    assert_eq!(base.diffusion.get().unwrap().in_channels(), 16);
    assert_eq!(m.diffusion.get().unwrap().in_channels(), 32);
    let c = cond(
        &g,
        CondOptions {
            concat_latent_image: Some(g["canny.concat"].clone()),
            guidance: Some(Guidance::Value(10.0)),
            ..Default::default()
        },
    );
    let latent = Latent::new(Tensor::zeros((1, 16, 6, 8), DType::F32, &Device::Cpu).unwrap());
    let out = sample(&g, &m, &c, &latent);
    check("depth lora", &out, &g["depth_lora.out"], EXACT_TOL);
}

#[test]
fn kontext_reference_latents_through_sampling_match_comfyui() {
    let g = goldens();
    let m = model(TINY_FLUX_PATH);
    let latent = Latent::new(Tensor::zeros((1, 16, 6, 8), DType::F32, &Device::Cpu).unwrap());
    let mut outs = Vec::new();
    for (name, method) in [
        ("offset", RefLatentsMethod::Offset),
        ("index", RefLatentsMethod::Index),
        ("uxo", RefLatentsMethod::Uxo),
    ] {
        let c = cond(
            &g,
            CondOptions {
                guidance: Some(Guidance::Value(2.5)),
                reference_latents: vec![g["kontext.ref0"].clone(), g["kontext.ref1"].clone()],
                reference_latents_method: Some(method),
                ..Default::default()
            },
        );
        let out = sample(&g, &m, &c, &latent);
        // Guidance 2.5: the exp difference stays below 1e-4 here.
        check(
            &format!("kontext {name}"),
            &out,
            &g[&format!("kontext_{name}.out")],
            1e-4,
        );
        outs.push(out);
    }
    assert!(max_diff(&outs[0], &outs[1]) > 1e-3);
    assert!(max_diff(&outs[0], &outs[2]) > 1e-3);
}

#[test]
fn differential_diffusion_schedule_matches_comfyui() {
    let g = goldens();
    let meta = meta();
    let mask = &g["dd.mask"];
    for (name, ms) in [
        ("flux", ModelSampling::flux_dev()),
        ("flux_partial", ModelSampling::flux_dev()),
        ("sd15", ModelSampling::sd15(Prediction::Eps)),
        ("sd15_partial", ModelSampling::sd15(Prediction::Eps)),
    ] {
        let sigma_min = meta["dd"][name]["sigma_min"].as_f64().unwrap() as f32;
        assert_eq!(ms.sigma_min(), sigma_min, "{name} sigma_min");
        let sig = sigmas(&g, &format!("dd.{name}.sigmas"));
        for s in [1.0, 0.5, 0.0, 0.25] {
            // Python's str of the float names the key: 1.0, 0.5, 0.0, 0.25.
            let key = format!("dd.{name}.s{s:?}");
            let expected = &g[&key];
            let dd = DifferentialDiffusion { strength: s };
            for (k, &sigma) in sig.iter().enumerate() {
                let ours = dd.apply(&ms, &sig, sigma, mask).unwrap();
                let theirs = expected.get(k).unwrap();
                let d = max_diff(&ours, &theirs);
                assert!(d == 0.0, "{key} step {k} (σ {sigma}): max |Δ| {d}");
            }
        }
    }
    // The schedule opens the mask step by step: at the first sigma only full-strength
    // pixels (threshold 1) are denoised, at sigma_min every pixel.
    let ms = ModelSampling::flux_dev();
    let sig = sigmas(&g, "dd.flux.sigmas");
    assert_eq!(DifferentialDiffusion::threshold(&ms, &sig, sig[0]), 1.0);
    assert_eq!(
        DifferentialDiffusion::threshold(&ms, &sig, ms.sigma_min()),
        0.0
    );
}

#[test]
fn image_stitch_matches_comfyui() {
    let g = goldens();
    let meta = meta();
    for (k, case) in meta["stitch"].as_array().unwrap().iter().enumerate() {
        let other = case["image2"].as_str().unwrap();
        let opts = StitchOptions {
            direction: case["direction"].as_str().unwrap(),
            match_image_size: case["match_image_size"].as_bool().unwrap(),
            spacing_width: case["spacing_width"].as_u64().unwrap() as usize,
            spacing_color: case["spacing_color"].as_str().unwrap(),
        };
        let out = stitch(&g["stitch.a"], &g[&format!("stitch.{other}")], &opts).unwrap();
        let expected = &g[&format!("stitch.{k}")];
        assert_eq!(out.dims(), expected.dims(), "case {k} {case}");
        let d = max_diff(&out, expected);
        assert!(d < 1e-6, "case {k} {case}: max |Δ| {d}");
    }
}

#[test]
fn image_stitch_rejects_bad_options_naming_the_input() {
    let a = Tensor::zeros((1, 8, 8, 3), DType::F32, &Device::Cpu).unwrap();
    let o = |direction, spacing_color| StitchOptions {
        direction,
        match_image_size: false,
        spacing_width: 0,
        spacing_color,
    };
    let e = stitch(&a, &a, &o("sideways", "white")).unwrap_err();
    assert!(e.to_string().contains("direction"), "{e}");
    assert!(e.to_string().contains("right, down, left, up"), "{e}");
    let e = stitch(&a, &a, &o("right", "purple")).unwrap_err();
    assert!(e.to_string().contains("spacing_color"), "{e}");
    let empty = Tensor::zeros((1, 0, 8, 3), DType::F32, &Device::Cpu).unwrap();
    let e = stitch(&a, &empty, &o("right", "white")).unwrap_err();
    assert!(e.to_string().contains("image2"), "{e}");
}
