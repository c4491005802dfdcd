//! Times UNet forward passes of a full-size checkpoint (SD1.x, SD2, SDXL) on the CPU, the
//! unit of a sampler step (batch 2 = cond + uncond at cfg != 1). For profiling
//! (`perf record`) and for the per-step figures in BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release --example unet_step -- CHECKPOINT [SIZE_PX] [PASSES] [stored|f32]
//! ```
//!
//! `stored` (default) keeps the weights in the file's dtype as the loaders do; `f32` widens
//! every weight once before the passes, to compare per-operation widening with none.

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions};
use comfyrs::models::unet::UNET_PREFIX;
use comfyrs::models::Unet;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: unet_step CHECKPOINT [SIZE_PX] [PASSES] [stored|f32]";
    let ckpt = args.next().ok_or(usage)?;
    let px: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let passes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let widen = match args.next().as_deref() {
        None | Some("stored") => false,
        Some("f32") => true,
        Some(_) => return Err(usage.into()),
    };
    let dev = Device::Cpu;
    let t = Instant::now();
    let ck = load_checkpoint_with(&ckpt, &dev, DType::F32, &LoadOptions::default())?;
    let unet = if widen {
        let w: std::collections::HashMap<String, Tensor> = ck
            .weights
            .iter()
            .filter(|(k, _)| k.starts_with(UNET_PREFIX))
            .map(|(k, v)| Ok((k.clone(), v.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()?;
        Unet::from_weights(&w, UNET_PREFIX, DType::F32, &dev)?
    } else {
        ck.model
            .as_unet()
            .ok_or("the checkpoint's diffusion model is not a UNet")?
            .clone()
    };
    println!("load: {:.2} s", t.elapsed().as_secs_f64());
    let cfg = unet.config().clone();
    let lat = px / 8;
    let x = Tensor::randn(0f32, 1f32, (2, cfg.in_channels, lat, lat), &dev)?;
    let ctx_dim = cfg.context_dim.unwrap_or(768);
    let ctx = Tensor::randn(0f32, 1f32, (2, 77, ctx_dim), &dev)?;
    let y = cfg
        .adm_in_channels
        .map(|n| Tensor::randn(0f32, 1f32, (2, n), &dev))
        .transpose()?;
    let ts = Tensor::new(&[500f32, 500f32], &dev)?;
    for i in 0..passes {
        let t = Instant::now();
        let out = unet.forward(&x, &ts, &ctx, y.as_ref())?;
        let _ = out.sum_all()?.to_scalar::<f32>()?;
        println!("pass {i}: {:.3} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
