//! comfyrs's Flux transformer against ComfyUI v0.3.64's own `comfy.ldm.flux` modules
//! (`scripts/goldens/gen_flux_goldens.py`, files under `tests/data/flux/`): a tiny Flux
//! (hidden 64, 4 heads, 2 double + 2 single blocks, fp16-stored random weights in the real
//! BFL key layout) for dev (guidance) and schnell (no `guidance_in`), guidance disabled, an
//! odd latent size (circular padding), Kontext reference latents with each placement
//! method, the rotary table and timestep embedding, and one denoised prediction through
//! ComfyUI's `model_base.Flux` (extra_conds' guidance default, ModelSamplingFlux).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use comfyrs::models::checkpoint::load_safetensors;
use comfyrs::models::flux::rope::{rope_table, timestep_embedding};
use comfyrs::models::flux::{Config, Flux, FluxInputs, RefLatentsMethod};
use comfyrs::models::nn::weights_vb;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/flux")
        .join(name)
}

fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(data("goldens.safetensors"), &Device::Cpu)
        .expect("tests/data/flux/goldens.safetensors")
}

fn weights(schnell: bool) -> HashMap<String, Tensor> {
    let mut w = load_safetensors(&data("tiny_flux.safetensors"), &Device::Cpu, DType::F32)
        .expect("tiny_flux.safetensors");
    if schnell {
        w.retain(|k, _| !k.starts_with("guidance_in."));
    }
    w
}

fn model(schnell: bool) -> Flux {
    let w = weights(schnell);
    let cfg = Config::detect(
        |k| w.get(k).map(|t| t.dims().to_vec()),
        &mut w.keys().map(|k| k.as_str()),
        "",
    )
    .unwrap();
    Flux::new(weights_vb(w, DType::F32, &Device::Cpu), &cfg).unwrap()
}

/// max |a − b| ≤ tol · max(1, max |b|).
fn check(name: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    assert_eq!(ours.dims(), theirs.dims(), "{name}: shape");
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{name}: max |Δ| {diff} (scale {scale})"
    );
}

#[test]
fn config_is_read_from_the_weights() {
    let w = weights(false);
    let cfg = Config::detect(
        |k| w.get(k).map(|t| t.dims().to_vec()),
        &mut w.keys().map(|k| k.as_str()),
        "",
    )
    .unwrap();
    let expected = Config {
        in_channels: 16,
        out_channels: 16,
        vec_in_dim: 32,
        context_in_dim: 48,
        hidden_size: 64,
        mlp_ratio: 4.0,
        num_heads: 4,
        depth: 2,
        depth_single_blocks: 2,
        axes_dim: vec![4, 6, 6],
        theta: 10_000.0,
        patch_size: 2,
        qkv_bias: true,
        guidance_embed: true,
    };
    assert_eq!(cfg, expected);
    assert!(!model(true).config().guidance_embed);
}

#[test]
fn rope_table_and_timestep_embedding() {
    let g = goldens();
    let ids = g["pe.ids"].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let ids: Vec<[f32; 3]> = ids.iter().map(|r| [r[0], r[1], r[2]]).collect();
    assert_eq!(ids.len(), 3 + 5 * 7);
    let ours = Tensor::from_vec(
        rope_table(&ids, &[4, 6, 6], 10_000.0),
        (1, 1, 38, 8, 2, 2),
        &Device::Cpu,
    )
    .unwrap();
    check("pe", &ours, &g["pe.grid"], 1e-7);
    // t = 0 … 3.5 (sigmas and guidance strengths): torch's f32 exp is one ulp off the
    // correctly rounded one on 3 of the 128 frequencies, which at 1000·t moves an angle by
    // ≤ 2e-4 at t = 3.5. t = 1000 (angles up to 1e6) is far outside what a model sees.
    let temb = timestep_embedding(&g["temb.t"], 256).unwrap();
    check(
        "timestep_embedding",
        &temb.narrow(0, 0, 6).unwrap(),
        &g["temb.out"].narrow(0, 0, 6).unwrap(),
        2e-4,
    );
}

fn run(
    m: &Flux,
    g: &HashMap<String, Tensor>,
    x: &Tensor,
    n: usize,
    guidance: bool,
    refs: &[Tensor],
    method: RefLatentsMethod,
) -> Tensor {
    let t = g["dev.t"].narrow(0, 0, n).unwrap();
    let ctx = g["dev.context"].narrow(0, 0, n).unwrap();
    let y = g["dev.y"].narrow(0, 0, n).unwrap();
    let gd = g["dev.guidance"].narrow(0, 0, n).unwrap();
    m.forward(&FluxInputs {
        x,
        timesteps: &t,
        context: &ctx,
        y: Some(&y),
        guidance: guidance.then_some(&gd),
        ref_latents: refs,
        ref_method: method,
    })
    .unwrap()
}

#[test]
fn dev_schnell_and_disabled_guidance_match_comfyui() {
    let g = goldens();
    let dev = model(false);
    let x = &g["dev.x"];
    let none = RefLatentsMethod::Offset;
    check(
        "dev",
        &run(&dev, &g, x, 2, true, &[], none),
        &g["dev.out"],
        1e-5,
    );
    check(
        "dev, guidance None",
        &run(&dev, &g, x, 2, false, &[], none),
        &g["dev_noguid.out"],
        1e-5,
    );
    let schnell = model(true);
    // Schnell ignores any guidance it is given.
    check(
        "schnell",
        &run(&schnell, &g, x, 2, true, &[], none),
        &g["schnell.out"],
        1e-5,
    );
    // Guidance makes a difference to dev.
    let a = g["dev.out"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = g["dev_noguid.out"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-3));
}

#[test]
fn odd_latent_size_is_padded_circularly_and_cropped() {
    let g = goldens();
    let dev = model(false);
    let out = run(
        &dev,
        &g,
        &g["dev_odd.x"],
        1,
        true,
        &[],
        RefLatentsMethod::Offset,
    );
    assert_eq!(out.dims(), &[1, 16, 5, 7]);
    check("dev odd 5x7", &out, &g["dev_odd.out"], 1e-5);
}

#[test]
fn kontext_reference_latents_match_comfyui() {
    let g = goldens();
    let dev = model(false);
    let x = g["dev.x"].narrow(0, 0, 1).unwrap();
    let refs = [g["kontext.ref0"].clone(), g["kontext.ref1"].clone()];
    for (name, m) in [
        ("offset", RefLatentsMethod::Offset),
        ("index", RefLatentsMethod::Index),
        ("uxo", RefLatentsMethod::Uxo),
    ] {
        let out = run(&dev, &g, &x, 1, true, &refs, m);
        check(
            &format!("kontext {name}"),
            &out,
            &g[&format!("kontext_{name}.out")],
            1e-5,
        );
    }
}

#[test]
fn fill_and_canny_concat_channels_match_comfyui() {
    use comfyrs::models::LatentFormat;
    use comfyrs::sampling::conds::{flux_concat, CondOptions};
    let g = goldens();
    let process_in = |z: &Tensor| LatentFormat::flux().process_in(z);
    let shape = [2, 16, 6, 8];
    for inc in [96usize, 32] {
        let plain = CondOptions::default();
        let with = CondOptions {
            concat_latent_image: Some(g["concat.image"].clone()),
            concat_mask: Some(g["concat.mask"].clone()),
            ..Default::default()
        };
        let image_only = CondOptions {
            concat_latent_image: Some(g["concat.image"].clone()),
            ..Default::default()
        };
        let dmask = &g["concat.denoise_mask"];
        for (case, opts, dm) in [
            ("plain", &plain, None),
            ("image_mask", &with, None),
            ("denoise_mask", &image_only, Some(dmask)),
        ] {
            let ours = flux_concat(opts, inc, 16, shape, dm, &process_in)
                .unwrap()
                .expect("a concat for models with extra input channels");
            check(
                &format!("concat {inc} {case}"),
                &ours,
                &g[&format!("concat.{inc}.{case}")],
                1e-6,
            );
        }
    }
    // Plain models take none.
    let none = flux_concat(&CondOptions::default(), 16, 16, shape, None, &process_in).unwrap();
    assert!(none.is_none());
}
