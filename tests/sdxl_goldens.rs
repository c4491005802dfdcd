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

/// Compares a computed ADM vector with the golden: the pooled part exactly, each 256-wide
/// size embedding `E(v)` within `2·|v|·ε_f32 + 1e-6`. Why not bit-exact: torch's CPU `exp`
/// (vectorised SLEEF, ≤1 ULP) rounds 3 of the 128 f32 frequencies differently from a
/// correctly rounded exp, so `v·freq` can differ by one ULP of `v` (6e-5 at 768, 5e-4 at
/// 4096) and cos/sin follow. Any wrong value, order or default is off by far more.
fn check_adm(got: &Tensor, want: &Tensor, values: &[f64], what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let pooled_w = want.dim(1).unwrap() - 256 * values.len();
    let g: Vec<Vec<f32>> = got.to_vec2().unwrap();
    let w: Vec<Vec<f32>> = want.to_vec2().unwrap();
    for (gr, wr) in g.iter().zip(&w) {
        assert_eq!(
            gr[..pooled_w],
            wr[..pooled_w],
            "{what}: pooled part differs"
        );
        for (j, v) in values.iter().enumerate() {
            let tol = 2.0 * (*v as f32).abs() * f32::EPSILON + 1e-6;
            let lo = pooled_w + 256 * j;
            for k in lo..lo + 256 {
                let d = (gr[k] - wr[k]).abs();
                assert!(
                    d <= tol,
                    "{what}: E({v}) element {} differs by {d} > {tol}",
                    k - lo
                );
            }
        }
    }
}

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
        let s = sizes(&p);
        let values = [
            s.height,
            s.width,
            s.crop_h,
            s.crop_w,
            s.target_height,
            s.target_width,
        ];
        check_adm(
            &direct,
            want,
            &values,
            &format!("base case {i} {kw:?} sdxl_adm"),
        );
        let via_family = Family::Sdxl.extra_y(&p).unwrap().expect("SDXL has a y");
        check_adm(
            &via_family,
            want,
            &values,
            &format!("base case {i} {kw:?} extra_y"),
        );
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
        let s = sizes(&p);
        let values = [s.height, s.width, s.crop_h, s.crop_w, aesthetic];
        check_adm(
            &direct,
            want,
            &values,
            &format!("refiner case {i} {kw:?} direct"),
        );
        let via_family = Family::SdxlRefiner
            .extra_y(&p)
            .unwrap()
            .expect("refiner has a y");
        check_adm(
            &via_family,
            want,
            &values,
            &format!("refiner case {i} {kw:?} extra_y"),
        );
    }
}

#[test]
fn sd15_has_no_adm() {
    let (t, _) = load_adm();
    let p = params(&t["pooled"], &Map::new());
    assert!(Family::Sd15.extra_y(&p).unwrap().is_none());
}
