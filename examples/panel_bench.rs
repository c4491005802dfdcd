//! Stored (f16) weights on the CPU: a layer widening its weight panel by panel into a cached
//! buffer (`nn::panels`, what the layers do) against widening the whole weight to f32 first
//! (`nn::widen`, then the layer on the f32 copy: the way before) and against a weight already
//! in f32 (the floor: no widening at all). SDXL 512² shapes (batch 2 under cfg).
//!
//! `cargo run --release --example panel_bench [REPEATS] [PANEL_FLOATS...]`
use candle_core::{DType, Device, Module, Tensor};
use comfyrs::models::nn::{self, Conv2d, Linear};
use std::time::Instant;

fn best_of(repeats: usize, mut f: impl FnMut() -> Tensor) -> (f64, Tensor) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let y = f();
        best = best.min(t0.elapsed().as_secs_f64());
        out = Some(y);
    }
    (best, out.expect("at least one repeat"))
}

fn main() -> candle_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let repeats: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let panels: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    let panels = if panels.is_empty() {
        vec![1 << 20]
    } else {
        panels
    };
    let dev = Device::Cpu;
    println!("threads: {}", nn::cpu_gemm::num_threads());
    // (name, tokens, in, out) for linears; (name, c_in, c_out, hw, k) for convs.
    let linears = [
        ("linear 2048 tok 640→640", 2048, 640, 640),
        ("linear 2048 tok 640→5120 (GEGLU)", 2048, 640, 5120),
        ("linear 2048 tok 2560→640", 2048, 2560, 640),
        ("linear 512 tok 1280→1280", 512, 1280, 1280),
        ("linear 512 tok 1280→10240 (GEGLU)", 512, 1280, 10240),
        ("linear 512 tok 5120→1280", 512, 5120, 1280),
        ("linear 154 ctx 2048→1280 (k/v)", 154, 2048, 1280),
        ("linear 2 rows 1280→1280 (emb)", 2, 1280, 1280),
    ];
    let convs = [
        ("conv3x3 320ch 64²", 320, 320, 64, 3),
        ("conv3x3 640ch 32²", 640, 640, 32, 3),
        ("conv3x3 1280ch 16²", 1280, 1280, 16, 3),
        ("conv3x3 2560→1280ch 16²", 2560, 1280, 16, 3),
    ];
    for &floats in &panels {
        nn::panels::set_panel_floats(floats);
        println!("panel: {floats} floats");
        for (name, rows, inf, outf) in linears {
            let x = Tensor::randn(0f32, 1.0, (rows, inf), &dev)?;
            let w = Tensor::randn(0f32, 0.05, (outf, inf), &dev)?.to_dtype(DType::F16)?;
            let b = Tensor::randn(0f32, 0.05, outf, &dev)?;
            let w32 = w.to_dtype(DType::F32)?;
            let stored = Linear::new(w.clone(), Some(b.clone()));
            let eager = Linear::new(w32, Some(b.clone()));
            let (t_panel, y1) = best_of(repeats, || stored.forward(&x).unwrap());
            let (t_whole, y2) = best_of(repeats, || {
                let w = nn::widen(&w, DType::F32).unwrap();
                Linear::new(w, Some(b.clone())).forward(&x).unwrap()
            });
            let (t_f32, y3) = best_of(repeats, || eager.forward(&x).unwrap());
            let same = (y1.clone() - y2)?.abs()?.max_all()?.to_scalar::<f32>()?
                + (y1 - y3)?.abs()?.max_all()?.to_scalar::<f32>()?;
            println!(
                "{name:<36} panels {:7.2} ms | widen whole {:7.2} ms | f32 weight {:7.2} ms | max|Δ| {same}",
                t_panel * 1e3,
                t_whole * 1e3,
                t_f32 * 1e3
            );
        }
        for (name, cin, cout, hw, k) in convs {
            let x = Tensor::randn(0f32, 1.0, (2, cin, hw, hw), &dev)?;
            let w = Tensor::randn(0f32, 0.05, (cout, cin, k, k), &dev)?.to_dtype(DType::F16)?;
            let b = Tensor::randn(0f32, 0.05, cout, &dev)?;
            let w32 = w.to_dtype(DType::F32)?;
            let stored = Conv2d::new(w.clone(), Some(b.clone()), 1, 1);
            let eager = Conv2d::new(w32, Some(b.clone()), 1, 1);
            let (t_panel, y1) = best_of(repeats, || stored.forward(&x).unwrap());
            let (t_whole, y2) = best_of(repeats, || {
                let w = nn::widen(&w, DType::F32).unwrap();
                Conv2d::new(w, Some(b.clone()), 1, 1).forward(&x).unwrap()
            });
            let (t_f32, y3) = best_of(repeats, || eager.forward(&x).unwrap());
            let same = (y1.clone() - y2)?.abs()?.max_all()?.to_scalar::<f32>()?
                + (y1 - y3)?.abs()?.max_all()?.to_scalar::<f32>()?;
            println!(
                "{name:<36} panels {:7.2} ms | widen whole {:7.2} ms | f32 weight {:7.2} ms | max|Δ| {same}",
                t_panel * 1e3,
                t_whole * 1e3,
                t_f32 * 1e3
            );
        }
    }
    Ok(())
}
