//! The comfyrs side of the 4x upscale benchmark and pixel parity
//! (`scripts/bench/upscale_comfy.py` writes the model, the image and ComfyUI's output):
//!
//! ```sh
//! cargo run --example upscale_bench -- DIR [SIZE_PX] [RUNS]
//! ```
//!
//! Loads `DIR/rrdb_x4_random.safetensors` and `DIR/image_SIZE.safetensors` and runs what
//! `ImageUpscaleWithModel` runs (512 tiles, overlap 32, the descriptor call per tile, the
//! final clamp) RUNS times, then compares with `DIR/comfy_out_SIZE.safetensors` when
//! present: max and mean |Δ| in [0, 1] units and in 8-bit levels after SaveImage's
//! `clip(255·x)` truncation.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use comfyrs::models::upscale::tiling::tiled_scale;
use comfyrs::models::upscale::UpscaleModel;

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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .expect("usage: upscale_bench DIR [SIZE] [RUNS]"),
    );
    let size: usize = args.get(1).map_or(Ok(512), |s| s.parse())?;
    let runs: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let t0 = Instant::now();
    let model = UpscaleModel::load(&dir.join("rrdb_x4_random.safetensors"), &Device::Cpu)?;
    println!(
        "load {}: {:.2} s",
        model.describe(),
        t0.elapsed().as_secs_f64()
    );
    let image = candle_core::safetensors::load(
        dir.join(format!("image_{size}.safetensors")),
        &Device::Cpu,
    )?["image"]
        .clone();
    let x = image.permute((0, 3, 1, 2))?.contiguous()?;
    let mut out = None;
    for run in 0..runs {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let y = tiled_scale(&x, 512, 32, model.scale, 3, |t| model.call(t))?
            .clamp(0f32, 1f32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        println!(
            "run {run}: {:.2} s, CPU {:.2} s",
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0
        );
        out = Some(y);
    }
    let out = out.expect("at least one run");
    let reference = dir.join(format!("comfy_out_{size}.safetensors"));
    if reference.exists() {
        let want: Tensor =
            candle_core::safetensors::load(&reference, &Device::Cpu)?["image"].clone();
        let a = out.flatten_all()?.to_vec1::<f32>()?;
        let b = want.flatten_all()?.to_vec1::<f32>()?;
        anyhow::ensure!(
            a.len() == b.len(),
            "shapes differ: {:?} vs {:?}",
            out.dims(),
            want.dims()
        );
        let (mut max, mut sum, mut max8, mut sum8, mut off8) = (0f32, 0f64, 0i32, 0f64, 0usize);
        for (x, y) in a.iter().zip(&b) {
            let d = (x - y).abs();
            max = max.max(d);
            sum += d as f64;
            let q = |v: f32| (255.0 * v).clamp(0.0, 255.0) as i32;
            let d8 = (q(*x) - q(*y)).abs();
            max8 = max8.max(d8);
            sum8 += d8 as f64;
            off8 += usize::from(d8 > 0);
        }
        let n = a.len() as f64;
        println!(
            "parity vs ComfyUI {:?}: max |Δ| {max:e}, mean |Δ| {:e}; 8-bit: max {max8}, mean {:.6}, \
             values off {off8} of {}",
            out.dims(),
            sum / n,
            sum8 / n,
            a.len()
        );
    }
    Ok(())
}
