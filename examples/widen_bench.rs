//! How long widening stored weights to f32 takes (per-operation manual cast cost):
//! candle's `to_dtype` against `nn::widen`. `cargo run --release --example widen_bench`.
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let n = 64 << 20;
    let src = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
    for dt in [DType::F16, DType::BF16, DType::F8E4M3] {
        let t = src.to_dtype(dt)?;
        let t0 = Instant::now();
        let a = t.to_dtype(DType::F32)?;
        let candle = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let b = comfyrs::models::nn::widen(&t, DType::F32)?;
        let ours = t0.elapsed().as_secs_f64();
        let same = (a - b)?.abs()?.max(0)?.to_scalar::<f32>()?;
        println!(
            "{dt:?}: {n} values: candle to_dtype {:.1} ms ({:.2} ns/value), widen {:.1} ms ({:.2} ns/value), max |diff| {same}",
            candle * 1e3,
            candle * 1e9 / n as f64,
            ours * 1e3,
            ours * 1e9 / n as f64
        );
    }
    Ok(())
}
