//! Stage-by-stage comparison with tensors dumped from a reference implementation, for finding
//! where a full-size parity miss comes from (`docs/parity.md`).
//!
//! ```sh
//! cargo run --release --example parity_stages -- CHECKPOINT DUMP.safetensors WORKFLOW.json
//! ```
//!
//! DUMP holds f32 tensors (any subset): `cond_pos`, `cond_neg` [1, 77, 768] (CLIPTextEncode of
//! the KSampler's positive / negative prompt), `noise` (the initial noise), `sigmas`,
//! `unet0_in`, `unet0_t` (σ per batch row), `unet0_ctx`, `unet0_out` (the denoised x0 of the
//! first batched model call: input x, σ and context in, x0 out), `samples` (the KSampler's
//! LATENT) and `image` (VAEDecode of `samples`, [B, H, W, 3]). Each stage is computed by comfyrs
//! from the dump's own inputs, so errors do not accumulate across stages.

use candle_core::{DType, Device, Tensor};
use comfyrs::models::load_sd1_checkpoint;
use comfyrs::sampling::model_sampling::{ModelSampling, Prediction};
use comfyrs::sampling::noise::prepare_noise;
use comfyrs::sampling::schedulers::{calculate_sigmas, Scheduler};
use serde_json::Value as Json;
use std::collections::HashMap;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn report(stage: &str, ours: &Tensor, reference: &Tensor) -> R<()> {
    let a: Vec<f32> = ours.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = reference.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if a.len() != b.len() {
        println!(
            "{stage:<18} shape differs: {:?} vs {:?}",
            ours.dims(),
            reference.dims()
        );
        return Ok(());
    }
    let (mut max_abs, mut sum_abs, mut ref_abs, mut exact) = (0f64, 0f64, 0f64, 0usize);
    for (x, y) in a.iter().zip(&b) {
        let d = (*x as f64 - *y as f64).abs();
        max_abs = max_abs.max(d);
        sum_abs += d;
        ref_abs += (*y as f64).abs();
        exact += usize::from(x.to_bits() == y.to_bits());
    }
    let n = a.len() as f64;
    println!(
        "{stage:<18} max|Δ| {max_abs:.3e}  mean|Δ| {:.3e}  mean|ref| {:.3e}  rel {:.3e}  bit-exact {:.1}%",
        sum_abs / n,
        ref_abs / n,
        sum_abs / ref_abs.max(1e-30),
        100.0 * exact as f64 / n
    );
    Ok(())
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ckpt, dump, workflow] = args.as_slice() else {
        return Err("usage: parity_stages CHECKPOINT DUMP.safetensors WORKFLOW.json".into());
    };
    let dev = Device::Cpu;
    let d: HashMap<String, Tensor> = candle_core::safetensors::load(dump, &dev)?;
    let wf: Json = serde_json::from_str(&std::fs::read_to_string(workflow)?)?;
    let nodes = wf.as_object().ok_or("workflow is not an object")?;
    let ks = nodes
        .values()
        .find(|n| n["class_type"] == "KSampler")
        .ok_or("no KSampler")?["inputs"]
        .clone();
    let text_of = |link: &Json| -> String {
        let id = link[0].as_str().unwrap_or("");
        nodes[id]["inputs"]["text"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let t0 = std::time::Instant::now();
    let ck = load_sd1_checkpoint(ckpt, &dev, DType::F32)?;
    println!("loaded in {:.1}s", t0.elapsed().as_secs_f64());

    for (key, link) in [("cond_pos", &ks["positive"]), ("cond_neg", &ks["negative"])] {
        if let Some(r) = d.get(key) {
            let (cond, _) = ck.clip.encode_text(&text_of(link), Some(-1))?;
            report(key, &cond, r)?;
        }
    }
    let seed = ks["seed"].as_u64().unwrap_or(0);
    if let Some(r) = d.get("noise") {
        report("noise", &prepare_noise(r.dims(), seed, None)?, r)?;
    }
    let ms = ModelSampling::sd15(Prediction::Eps);
    if let Some(r) = d.get("sigmas") {
        let sched: Scheduler = ks["scheduler"].as_str().unwrap_or("normal").parse()?;
        let steps = ks["steps"].as_u64().unwrap_or(1) as usize;
        let s = calculate_sigmas(&ms, sched, steps);
        report("sigmas", &Tensor::new(s.as_slice(), &dev)?, r)?;
    }
    for k in 0..4 {
        let (Some(x), Some(t), Some(ctx), Some(r)) = (
            d.get(&format!("unet{k}_in")),
            d.get(&format!("unet{k}_t")),
            d.get(&format!("unet{k}_ctx")),
            d.get(&format!("unet{k}_out")),
        ) else {
            continue;
        };
        let sig: Vec<f32> = t.to_vec1()?;
        let mut outs = Vec::new();
        for (b, &s) in sig.iter().enumerate() {
            let xb = x.narrow(0, b, 1)?;
            let inp = ms.calculate_input(s as f64, &xb)?;
            let ts = Tensor::new(&[ms.timestep(s)], &dev)?;
            let eps = ck.unet.forward(&inp, &ts, &ctx.narrow(0, b, 1)?, None)?;
            outs.push(ms.calculate_denoised(s as f64, &eps, &xb)?);
        }
        report(&format!("unet{k} x0"), &Tensor::cat(&outs, 0)?, r)?;
    }
    if let (Some(s), Some(r)) = (d.get("samples"), d.get("image")) {
        let img = ck.vae.decode(s)?;
        report("vae decode", &img, r)?;
        let q = |t: &Tensor| -> R<Tensor> {
            let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
            let u: Vec<f32> = v
                .iter()
                .map(|x| (255.0f32 * x).clamp(0.0, 255.0).trunc())
                .collect();
            Ok(Tensor::from_vec(u, t.dims(), &dev)?)
        };
        report("vae decode u8", &q(&img)?, &q(r)?)?;
    }
    Ok(())
}
