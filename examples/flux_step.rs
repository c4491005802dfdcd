//! Times forward passes of a random-weight Flux.1-dev transformer with the real widths
//! (hidden 3072, 24 heads, context 4096, pooled 768) and a reduced block count on the CPU,
//! the unit of a sampler step at cfg 1. Weights are bf16 (widened per operation, as from a
//! bf16 file); 256 text tokens as Flux pads T5 to. For BENCHMARKS.md; the matching ComfyUI
//! timing is `scripts/bench/flux_step_comfy.py`.
//!
//! ```sh
//! cargo run --release --example flux_step -- [SIZE_PX] [DOUBLE] [SINGLE] [PASSES] [bf16|f32]
//! ```

use candle_core::{DType, Device, Tensor};
use comfyrs::models::flux::{Config, Flux, FluxInputs, RefLatentsMethod};
use comfyrs::models::nn::weights_vb;
use std::collections::HashMap;
use std::time::Instant;

/// Every tensor of a Flux state dict at `cfg`: (key, shape).
fn shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let mlp = (h as f64 * cfg.mlp_ratio) as usize;
    let d = h / cfg.num_heads;
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut lin = |k: String, o: usize, i: usize| {
        v.push((format!("{k}.weight"), vec![o, i]));
        v.push((format!("{k}.bias"), vec![o]));
    };
    lin("img_in".into(), h, cfg.in_channels * 4);
    lin("txt_in".into(), h, cfg.context_in_dim);
    for (e, i) in [
        ("time_in", 256),
        ("vector_in", cfg.vec_in_dim),
        ("guidance_in", 256),
    ] {
        lin(format!("{e}.in_layer"), h, i);
        lin(format!("{e}.out_layer"), h, h);
    }
    for b in 0..cfg.depth {
        for s in ["img", "txt"] {
            let p = format!("double_blocks.{b}.{s}");
            lin(format!("{p}_mod.lin"), 6 * h, h);
            lin(format!("{p}_attn.qkv"), 3 * h, h);
            lin(format!("{p}_attn.proj"), h, h);
            lin(format!("{p}_mlp.0"), mlp, h);
            lin(format!("{p}_mlp.2"), h, mlp);
        }
    }
    for b in 0..cfg.depth_single_blocks {
        let p = format!("single_blocks.{b}");
        lin(format!("{p}.linear1"), 3 * h + mlp, h);
        lin(format!("{p}.linear2"), h, h + mlp);
        lin(format!("{p}.modulation.lin"), 3 * h, h);
    }
    lin("final_layer.adaLN_modulation.1".into(), 2 * h, h);
    lin("final_layer.linear".into(), 4 * cfg.out_channels, h);
    for b in 0..cfg.depth {
        for s in ["img", "txt"] {
            for n in ["query_norm", "key_norm"] {
                v.push((
                    format!("double_blocks.{b}.{s}_attn.norm.{n}.scale"),
                    vec![d],
                ));
            }
        }
    }
    for b in 0..cfg.depth_single_blocks {
        for n in ["query_norm", "key_norm"] {
            v.push((format!("single_blocks.{b}.norm.{n}.scale"), vec![d]));
        }
    }
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut next = |default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .next()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (px, depth, single, passes) = (next(256)?, next(2)?, next(2)?, next(3)?);
    // A fifth argument `f32` stores the weights in f32 (no per-operation widening).
    let storage = match std::env::args().nth(5).as_deref() {
        Some("f32") => DType::F32,
        _ => DType::BF16,
    };
    let dev = Device::Cpu;
    let cfg = Config {
        depth,
        depth_single_blocks: single,
        ..Config::dev()
    };
    let t = Instant::now();
    let mut w = HashMap::new();
    for (k, shape) in shapes(&cfg) {
        let t = if k.ends_with(".scale") {
            Tensor::ones(shape.as_slice(), DType::F32, &dev)?
        } else {
            Tensor::randn(0f32, 0.02, shape.as_slice(), &dev)?
        };
        w.insert(k, t.to_dtype(storage)?);
    }
    let model = Flux::new(weights_vb(w, DType::F32, &dev), &cfg)?;
    println!(
        "build ({depth} double + {single} single blocks, {storage:?}): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let lat = px / 8;
    let x = Tensor::randn(0f32, 1f32, (1, 16, lat, lat), &dev)?;
    let ctx = Tensor::randn(0f32, 1f32, (1, 256, 4096), &dev)?;
    let y = Tensor::randn(0f32, 1f32, (1, 768), &dev)?;
    let ts = Tensor::new(&[0.7f32], &dev)?;
    let g = Tensor::new(&[3.5f32], &dev)?;
    for i in 0..passes {
        let t = Instant::now();
        let out = model.forward(&FluxInputs {
            x: &x,
            timesteps: &ts,
            context: &ctx,
            y: Some(&y),
            guidance: Some(&g),
            ref_latents: &[],
            ref_method: RefLatentsMethod::Offset,
        })?;
        let _ = out.sum_all()?.to_scalar::<f32>()?;
        println!("pass {i}: {:.3} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
