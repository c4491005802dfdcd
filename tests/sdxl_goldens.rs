//! comfyrs's SDXL pieces against goldens made by ComfyUI v0.3.64's own modules
//! (`scripts/goldens/gen_sdxl_goldens.py`, files under `tests/data/sdxl/`).
//!
//! * ADM vector: `model_base.SDXL.encode_adm` / `SDXLRefiner.encode_adm` for a seeded
//!   pooled vector [2, 1280] and several size / crop / target / aesthetic / prompt_type
//!   combinations, against `unet::adm::{sdxl_adm, sdxl_refiner_adm}` and
//!   `Family::extra_y` (which applies ComfyUI's defaults).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use comfyrs::models::family::{CondParams, Family};
use comfyrs::models::unet::adm::{sdxl_adm, sdxl_refiner_adm, SizeConds};
use serde_json::{Map, Value};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sdxl")
        .join(name)
}

fn load_adm() -> (HashMap<String, Tensor>, Value) {
    let tensors = candle_core::safetensors::load(data("adm.safetensors"), &Device::Cpu)
        .expect("tests/data/sdxl/adm.safetensors");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(data("adm.json")).expect("adm.json"))
            .expect("adm.json is JSON");
    (tensors, meta)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
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

fn num(kw: &Map<String, Value>, key: &str) -> Option<f64> {
    kw.get(key).map(|v| v.as_f64().expect("numeric kwarg"))
}

/// `encode_adm` kwargs as `Family::extra_y` parameters. ComfyUI's `encode_adm` defaults a
/// missing width/height to 768; `extra_y` takes that default from the latent size (as
/// `encode_model_conds` supplies it), so the latent here is 768×768.
fn params<'a>(pooled: &'a Tensor, kw: &Map<String, Value>) -> CondParams<'a> {
    CondParams {
        pooled: Some(pooled),
        width: num(kw, "width"),
        height: num(kw, "height"),
        crop_w: num(kw, "crop_w"),
        crop_h: num(kw, "crop_h"),
        target_width: num(kw, "target_width"),
        target_height: num(kw, "target_height"),
        aesthetic_score: num(kw, "aesthetic_score"),
        latent_pixels: (768, 768),
        // ComfyUI: anything but prompt_type == "negative" takes the positive default.
        positive: kw.get("prompt_type").and_then(Value::as_str) != Some("negative"),
    }
}

fn sizes(p: &CondParams) -> SizeConds {
    let width = p.width.unwrap_or(768.0);
    let height = p.height.unwrap_or(768.0);
    SizeConds {
        width,
        height,
        crop_w: p.crop_w.unwrap_or(0.0),
        crop_h: p.crop_h.unwrap_or(0.0),
        target_width: p.target_width.unwrap_or(width),
        target_height: p.target_height.unwrap_or(height),
    }
}

const ADM_TOL: f32 = 1e-6;

#[test]
fn sdxl_base_adm_matches_comfyui() {
    let (t, meta) = load_adm();
    let pooled = &t["pooled"];
    let cases = meta["base"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for (i, kw) in cases.iter().enumerate() {
        let kw = kw.as_object().unwrap();
        let want = &t[&format!("base.{i}")];
        let p = params(pooled, kw);
        let direct = sdxl_adm(pooled, &sizes(&p)).unwrap();
        assert_eq!(direct.dims(), [2, 2816]);
        let d = max_abs_diff(&direct, want);
        assert!(d <= ADM_TOL, "base case {i} {kw:?}: sdxl_adm max diff {d}");
        let via_family = Family::Sdxl.extra_y(&p).unwrap().expect("SDXL has a y");
        let d = max_abs_diff(&via_family, want);
        assert!(d <= ADM_TOL, "base case {i} {kw:?}: extra_y max diff {d}");
    }
}

#[test]
fn sdxl_refiner_adm_matches_comfyui() {
    let (t, meta) = load_adm();
    let pooled = &t["pooled"];
    let cases = meta["refiner"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for (i, kw) in cases.iter().enumerate() {
        let kw = kw.as_object().unwrap();
        let want = &t[&format!("refiner.{i}")];
        let p = params(pooled, kw);
        let aesthetic = p
            .aesthetic_score
            .unwrap_or(if p.positive { 6.0 } else { 2.5 });
        let direct = sdxl_refiner_adm(pooled, &sizes(&p), aesthetic).unwrap();
        assert_eq!(direct.dims(), [2, 2560]);
        let d = max_abs_diff(&direct, want);
        assert!(d <= ADM_TOL, "refiner case {i} {kw:?}: direct max diff {d}");
        let via_family = Family::SdxlRefiner
            .extra_y(&p)
            .unwrap()
            .expect("refiner has a y");
        let d = max_abs_diff(&via_family, want);
        assert!(d <= ADM_TOL, "refiner case {i} {kw:?}: extra_y max diff {d}");
    }
}

#[test]
fn sd15_has_no_adm() {
    let (t, _) = load_adm();
    let p = params(&t["pooled"], &Map::new());
    assert!(Family::Sd15.extra_y(&p).unwrap().is_none());
}
