//! Times one sampler step's model work with and without a ControlNet on the CPU: a full-size
//! SD1.x UNet forward (batch 2 = cond + uncond), and the same with the ControlNet's forward
//! first and its residuals added (ComfyUI's `get_control` + `apply_model`). The ComfyUI side
//! is `scripts/bench/controlnet_step_comfy.py`; figures in BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release --example controlnet_step -- CHECKPOINT CONTROLNET [SIZE_PX] [PASSES]
//! ```

use candle_core::{DType, Device, Tensor};
use comfyrs::models::controlnet::load_controlnet;
use comfyrs::models::load_sd1_checkpoint;
use std::time::Instant;

/// User + system CPU time of this process so far (all threads), from /proc/self/stat; NaN
/// where that is unavailable.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    match f.as_slice() {
        [u, s] => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: controlnet_step CHECKPOINT CONTROLNET [SIZE_PX] [PASSES]";
    let mut args = std::env::args().skip(1);
    let ckpt = args.next().ok_or(usage)?;
    let cnet = args.next().ok_or(usage)?;
    let px: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let passes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    let t = Instant::now();
    let ck = load_sd1_checkpoint(&ckpt, &dev, DType::F32)?;
    let cn = load_controlnet(std::path::Path::new(&cnet), None, DType::F32, &dev)?;
    println!("load: {:.2} s", t.elapsed().as_secs_f64());
    let lat = px / 8;
    let x = Tensor::randn(0f32, 1f32, (2, 4, lat, lat), &dev)?;
    let hint = Tensor::rand(0f32, 1f32, (1, 3, px, px), &dev)?;
    let ctx = Tensor::randn(0f32, 1f32, (2, 77, 768), &dev)?;
    let ts = Tensor::new(&[500f32, 500f32], &dev)?;
    for i in 0..passes {
        let (t, c) = (Instant::now(), cpu_seconds());
        let y = ck.unet.forward(&x, &ts, &ctx, None)?;
        let _ = y.sum_all()?.to_scalar::<f32>()?;
        let (plain, plain_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let (t, c) = (Instant::now(), cpu_seconds());
        let control = cn.net.forward(&x, &hint, &ts, &ctx, None)?;
        let (cn_s, cn_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let y = ck
            .unet
            .forward_with_control(&x, &ts, &ctx, None, Some(&control))?;
        let _ = y.sum_all()?.to_scalar::<f32>()?;
        let (with, with_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        println!(
            "pass {i}: UNet {plain:.3} s, ControlNet {cn_s:.3} s + UNet with control = {with:.3} s; \
             CPU {plain_cpu:.2} s, {cn_cpu:.2} s, {with_cpu:.2} s"
        );
    }
    Ok(())
}
