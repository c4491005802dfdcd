//! Tiny fixture vs an independent float64 numpy implementation of the same
//! networks (tests/data/ref_tiny_numpy.py → tests/data/tiny_reference.json).

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::load_sd1_checkpoint;
use comfyrs::models::fixture::TINY_SD15_PATH;

#[derive(serde::Deserialize)]
struct Reference {
    cond: Vec<f64>,
    cond_skip2: Vec<f64>,
    pooled: Vec<f64>,
    cond_weighted: Vec<f64>,
    eps_t999: Vec<f64>,
    eps_t261_weighted: Vec<f64>,
    image: Vec<f64>,
}

fn det_input(shape: (usize, usize, usize, usize), scale: f64) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 0.37 + 0.1).sin() * scale) as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn check(name: &str, got: &Tensor, want: &[f64], tol: f64) {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len(), "{name}: length");
    let max = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(max <= tol, "{name}: max |Δ| {max} > {tol}");
}

#[test]
fn matches_numpy_reference() {
    let r: Reference =
        serde_json::from_str(include_str!("data/tiny_reference.json")).expect("reference json");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TINY_SD15_PATH);
    let ck = load_sd1_checkpoint(path, &Device::Cpu, DType::F32).unwrap();

    let (cond, pooled) = ck.clip.encode_text("a photo of a cat", Some(-1)).unwrap();
    check("cond", &cond, &r.cond, 1e-4);
    check("pooled", &pooled, &r.pooled, 1e-4);
    let (skip2, _) = ck.clip.encode_text("a photo of a cat", Some(-2)).unwrap();
    check("cond_skip2", &skip2, &r.cond_skip2, 1e-4);
    let (weighted, _) = ck
        .clip
        .encode_text("a photo of a (cat:1.5)", Some(-1))
        .unwrap();
    check("cond_weighted", &weighted, &r.cond_weighted, 1e-4);

    let x = det_input((1, 4, 8, 8), 1.0);
    let eps = ck
        .unet
        .forward(
            &x,
            &Tensor::new(&[999f32], &Device::Cpu).unwrap(),
            &cond,
            None,
        )
        .unwrap();
    check("eps_t999", &eps, &r.eps_t999, 1e-4);
    let eps_w = ck
        .unet
        .forward(
            &x,
            &Tensor::new(&[261f32], &Device::Cpu).unwrap(),
            &weighted,
            None,
        )
        .unwrap();
    check("eps_t261_weighted", &eps_w, &r.eps_t261_weighted, 1e-4);

    let img = ck.vae.decode(&det_input((1, 4, 8, 8), 2.0)).unwrap();
    check("image", &img, &r.image, 1e-4);
}
