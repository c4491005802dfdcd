//! Times UNet forward passes of a full-size SD1.x checkpoint on the CPU, the unit of a
//! sampler step (batch 2 = cond + uncond at cfg != 1). For profiling (`perf record`) and for
//! the per-step figures in BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release --example unet_step -- CHECKPOINT [SIZE_PX] [PASSES]
//! ```

use candle_core::{DType, Device, Tensor};
use comfyrs::models::load_sd1_checkpoint;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ckpt = args
        .next()
        .ok_or("usage: unet_step CHECKPOINT [SIZE_PX] [PASSES]")?;
    let px: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let passes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    let t = Instant::now();
    let ck = load_sd1_checkpoint(&ckpt, &dev, DType::F32)?;
    println!("load: {:.2} s", t.elapsed().as_secs_f64());
    let lat = px / 8;
    let x = Tensor::randn(0f32, 1f32, (2, 4, lat, lat), &dev)?;
    let ctx = Tensor::randn(0f32, 1f32, (2, 77, 768), &dev)?;
    let ts = Tensor::new(&[500f32, 500f32], &dev)?;
    for i in 0..passes {
        let t = Instant::now();
        let y = ck.unet.forward(&x, &ts, &ctx, None)?;
        let _ = y.sum_all()?.to_scalar::<f32>()?;
        println!("pass {i}: {:.3} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
