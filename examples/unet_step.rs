//! Times UNet forward passes of a full-size checkpoint (SD1.x, SD2, SDXL) on the CPU, the
//! unit of a sampler step (batch 2 = cond + uncond at cfg != 1). For profiling
//! (`perf record`) and for the per-step figures in BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release --example unet_step -- CHECKPOINT [SIZE_PX] [PASSES] [stored|f32|default|fp8_e4m3fn|fp8_e5m2]
//! ```
//!
//! `stored` (default) keeps the weights in the file's dtype as the loaders do; `f32` widens
//! every weight once before the passes, to compare per-operation widening with none;
//! `default` / `fp8_e4m3fn` / `fp8_e5m2` load only the UNet, as UNETLoader does with that
//! `weight_dtype` (the file's fp16, or fp8 storage; widened per operation). It prints the UNet's weight bytes and the process's
//! resident memory after loading.

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::{load_checkpoint_with, LoadOptions};
use comfyrs::models::component_files::{load_diffusion_model_with, weight_bytes};
use comfyrs::models::fp8::Fp8Kind;
use comfyrs::models::unet::UNET_PREFIX;
use comfyrs::models::Unet;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: unet_step CHECKPOINT [SIZE_PX] [PASSES] [stored|f32|default|fp8_e4m3fn|fp8_e5m2]";
    let ckpt = args.next().ok_or(usage)?;
    let px: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let passes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let (widen, fp8) = match args.next().as_deref() {
        None | Some("stored") => (false, None),
        Some("f32") => (true, None),
        Some("default") => (false, Some(None)),
        Some("fp8_e4m3fn") => (false, Some(Some(Fp8Kind::E4m3fn))),
        Some("fp8_e5m2") => (false, Some(Some(Fp8Kind::E5m2))),
        Some(_) => return Err(usage.into()),
    };
    let dev = Device::Cpu;
    let t = Instant::now();
    if let Some(kind) = fp8 {
        let file = load_diffusion_model_with(std::path::Path::new(&ckpt), &dev, DType::F32, kind)?;
        let unet = file
            .model
            .as_unet()
            .ok_or("the file's diffusion model is not a UNet")?
            .clone();
        println!("load: {:.2} s", t.elapsed().as_secs_f64());
        report_memory(file.weight_bytes());
        drop(file);
        return passes_of(&unet, px, passes);
    }
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
    let unet_bytes = if widen {
        unet_weight_bytes(&ck.weights) * 2
    } else {
        unet_weight_bytes(&ck.weights)
    };
    report_memory(unet_bytes);
    drop(ck);
    passes_of(&unet, px, passes)
}

fn unet_weight_bytes(w: &comfyrs::models::WeightMap) -> usize {
    let unet: comfyrs::models::WeightMap = w
        .iter()
        .filter(|(k, _)| k.starts_with(UNET_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    weight_bytes(&unet)
}

/// The UNet's weight bytes and the process's VmRSS (the whole checkpoint's other parts
/// included where the mode loads a checkpoint).
fn report_memory(unet_bytes: usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    println!(
        "UNet weight bytes: {:.3} GiB; VmRSS after load: {:.3} GiB",
        unet_bytes as f64 / (1u64 << 30) as f64,
        rss / (1u64 << 20) as f64
    );
}

fn passes_of(unet: &Unet, px: usize, passes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
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
        let c = cpu_seconds();
        let out = unet.forward(&x, &ts, &ctx, y.as_ref())?;
        let _ = out.sum_all()?.to_scalar::<f32>()?;
        println!(
            "pass {i}: {:.3} s ({:.2} CPU-s)",
            t.elapsed().as_secs_f64(),
            cpu_seconds() - c
        );
    }
    Ok(())
}

/// User + system CPU seconds of this process so far (/proc/self/stat, 100 ticks a second
/// on Linux); 0 where it cannot be read. On a shared machine the CPU-seconds of a pass are
/// steadier than its wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
