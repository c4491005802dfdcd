//! Times applying a LoRA to a full-size SD1.5 checkpoint: reading the file, mapping its keys,
//! building the patched UNet and text encoder, then a strength change (UNet rebuilt, text
//! encoder from the cache).
//!
//! `cargo run --release --example lora_bench -- CHECKPOINT LORA [STRENGTH] [STRENGTH2]`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use comfyrs::models::load_sd1_checkpoint;
use comfyrs::models::lora::{
    load_lora, read_lora, KeyMap, PatchCache, PatchEntry, PatchedClip, PatchedModel,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: lora_bench CHECKPOINT LORA [STRENGTH] [STRENGTH2]");
        std::process::exit(2);
    }
    let (ckpt, lora) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let s1: f64 = args.get(2).map_or(Ok(1.0), |s| s.parse())?;
    let s2: f64 = args.get(3).map_or(Ok(0.5), |s| s.parse())?;

    let t = Instant::now();
    let ck = load_sd1_checkpoint(&ckpt, &Device::Cpu, DType::F32)?;
    println!(
        "checkpoint load: {:.2} s (not part of the LoRA cost)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let file = read_lora(&lora)?;
    let t_read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let map = KeyMap::for_weights(&ck.weights, true, true)?;
    let loaded = Arc::new(load_lora(&file, &map, &ck.weights)?);
    let t_map = t.elapsed().as_secs_f64();
    println!(
        "read LoRA: {t_read:.3} s; key map + load_lora: {t_map:.3} s ({} patches, {} keys unmatched)",
        loaded.patches.len(),
        loaded.unmatched.len()
    );

    let cache = Arc::new(PatchCache::default());
    let entry = |s: f64| PatchEntry::lora(loaded.clone(), lora.display().to_string(), s);
    let unet = PatchedModel::new(ck.unet.clone(), ck.weights.clone());
    let clip = PatchedClip::new(ck.clip.clone(), ck.weights.clone(), false);

    let t = Instant::now();
    unet.with_patch(entry(s1), cache.clone()).get()?;
    let t_unet = t.elapsed().as_secs_f64();
    let t = Instant::now();
    clip.with_patch(entry(s1), cache.clone()).get()?;
    let t_clip = t.elapsed().as_secs_f64();
    println!(
        "first application (strength {s1}): UNet {t_unet:.2} s + CLIP {t_clip:.2} s = {:.2} s",
        t_unet + t_clip
    );

    // Strength change on the model only: the UNet is rebuilt, CLIP comes from the cache.
    let t = Instant::now();
    unet.with_patch(entry(s2), cache.clone()).get()?;
    let t_unet2 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    clip.with_patch(entry(s1), cache.clone()).get()?;
    let t_clip2 = t.elapsed().as_secs_f64();
    println!(
        "strength_model {s1} -> {s2}: UNet {t_unet2:.2} s, CLIP (cached) {t_clip2:.4} s; builds: \
         UNet {}, CLIP {}",
        cache.unet_builds(),
        cache.clip_builds()
    );
    Ok(())
}
