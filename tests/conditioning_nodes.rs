//! The conditioning transform nodes' outputs field by field, the inpainting nodes' pixel and
//! mask preparation against ComfyUI's (tests/data/cond_batch_golden.json, `inpaint_pixels`),
//! and end-to-end runs on the tiny fixture: area/mask/timestep conditioning changes the image
//! only as ComfyUI's semantics say, masked denoising keeps the unmasked latent, and a
//! 9-input-channel inpainting UNet loads and samples with the inpaint concat.

use candle_core::{Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::node::types::Latent;
use comfyrs::node::Registry;
use comfyrs::nodes::conditioning_transform as ct;
use comfyrs::nodes::inpaint::{grow_mask, masked_pixels};
use comfyrs::nodes::sampling::run_sampler;
use comfyrs::nodes::sd_types::{split_checkpoint, CondEntry, Conditioning, ModelCache};
use comfyrs::prompt::prepare;
use comfyrs::sampling::conds::CondArea;
use comfyrs::sampling::noise::prepare_noise;
use comfyrs::sampling::samplers::SamplerKind;
use comfyrs::sampling::schedulers::{ksampler_sigmas, Scheduler};
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn vals(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn entry(base: f32, tokens: usize, pooled: Option<f32>) -> CondEntry {
    let v: Vec<f32> = (0..tokens * 4).map(|i| base + i as f32).collect();
    CondEntry::new(
        t(v, &[1, tokens, 4]),
        pooled.map(|p| t(vec![p, p + 1.0], &[1, 2])),
    )
}

#[test]
fn combine_concat_average_zero_out() {
    let a = Conditioning(vec![entry(0.0, 2, Some(1.0))]);
    let b = Conditioning(vec![entry(100.0, 3, Some(5.0)), entry(200.0, 1, None)]);

    let c = ct::combine(&a, &b);
    assert_eq!(c.0.len(), 3);
    assert_eq!(vals(&c.0[1].cond), vals(&b.0[0].cond));
    assert_eq!(vals(&c.0[2].cond), vals(&b.0[1].cond));

    // Concat: to's tokens then the first `from` entry's; to's options kept.
    let to = ct::set_strength(&a, 0.5);
    let cc = ct::concat(&to, &b).unwrap();
    assert_eq!(cc.0.len(), 1);
    assert_eq!(cc.0[0].cond.dims(), &[1, 5, 4]);
    let mut want = vals(&a.0[0].cond);
    want.extend(vals(&b.0[0].cond));
    assert_eq!(vals(&cc.0[0].cond), want);
    assert_eq!(cc.0[0].opts.strength, Some(0.5));
    assert_eq!(vals(cc.0[0].pooled.as_ref().unwrap()), vec![1.0, 2.0]);

    // Average: to·s + from·(1−s); from cut to to's 2 tokens; pooled blended.
    let av = ct::average(&a, &b, 0.25).unwrap();
    let (ta, tb) = (vals(&a.0[0].cond), vals(&b.0[0].cond));
    let want: Vec<f32> = (0..8).map(|i| ta[i] * 0.25 + tb[i] * 0.75).collect();
    assert_eq!(vals(&av.0[0].cond), want);
    assert_eq!(vals(av.0[0].pooled.as_ref().unwrap()), vec![4.0, 5.0]);
    // From longer than to is cut; shorter is zero-padded.
    let av2 = ct::average(&Conditioning(vec![entry(0.0, 3, None)]), &a, 0.5).unwrap();
    let v2 = vals(&av2.0[0].cond);
    assert_eq!(v2.len(), 12);
    assert_eq!(v2[8..], [4.0, 4.5, 5.0, 5.5]); // to·0.5 + 0
                                               // to without pooled takes from's pooled (blended with itself).
    assert_eq!(vals(av2.0[0].pooled.as_ref().unwrap()), vec![1.0, 2.0]);
    let err = ct::average(&a, &Conditioning(vec![]), 0.5).unwrap_err();
    assert!(err.to_string().contains("conditioning_from"), "{err}");

    let z = ct::zero_out(&b).unwrap();
    assert_eq!(z.0.len(), 2);
    assert!(vals(&z.0[0].cond).iter().all(|&v| v == 0.0));
    assert_eq!(z.0[0].cond.dims(), &[1, 3, 4]);
    assert_eq!(vals(z.0[0].pooled.as_ref().unwrap()), vec![0.0, 0.0]);
    assert!(z.0[1].pooled.is_none());
}

#[test]
fn area_mask_strength_and_timestep_options() {
    let a = Conditioning(vec![entry(0.0, 2, None), entry(9.0, 2, None)]);
    let s = ct::set_area(&a, 200, 130, 72, 15, 0.7);
    for e in &s.0 {
        assert_eq!(
            e.opts.area,
            Some(CondArea::Latent {
                h: 16,
                w: 25,
                y: 1,
                x: 9
            })
        );
        assert_eq!(e.opts.strength, Some(0.7));
        assert_eq!(e.opts.set_area_to_bounds, Some(false));
        assert!(e.opts.mask.is_none());
    }
    // The input is not modified.
    assert!(a.0[0].opts.area.is_none());

    let p = ct::set_area_percentage(&a, 0.5, 0.25, 0.1, 0.2, 1.5);
    assert_eq!(
        p.0[1].opts.area,
        Some(CondArea::Percentage {
            h: 0.25,
            w: 0.5,
            y: 0.2,
            x: 0.1
        })
    );
    assert_eq!(p.0[1].opts.strength, Some(1.5));

    let st = ct::set_strength(&s, 2.0);
    assert_eq!(st.0[0].opts.strength, Some(2.0));
    assert!(st.0[0].opts.area.is_some());

    let m = t(vec![0.0, 1.0, 1.0, 0.0], &[2, 2]);
    let sm = ct::set_mask(&s, &m, 0.3, true).unwrap();
    let e = &sm.0[0];
    assert_eq!(e.opts.mask.as_ref().unwrap().dims(), &[1, 2, 2]);
    assert_eq!(e.opts.mask_strength, Some(0.3));
    assert_eq!(e.opts.set_area_to_bounds, Some(true));
    assert_eq!(e.opts.strength, Some(0.7), "strength kept from SetArea");
    let sm2 = ct::set_mask(&a, &m.unsqueeze(0).unwrap(), 1.0, false).unwrap();
    assert_eq!(sm2.0[0].opts.set_area_to_bounds, Some(false));
    assert!(ct::set_mask(&a, &m.reshape((1, 1, 1, 4)).unwrap(), 1.0, false).is_err());

    let tr = ct::set_timestep_range(&a, 0.2, 0.7);
    assert_eq!(tr.0[1].opts.start_percent, Some(0.2));
    assert_eq!(tr.0[1].opts.end_percent, Some(0.7));
}

fn golden() -> Json {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cond_batch_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn tensor(v: &Json) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    t(data, &shape)
}

fn assert_same(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    for (i, (a, b)) in vals(got).iter().zip(vals(want)).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{i}]: got {a}, ComfyUI {b}");
    }
}

#[test]
fn inpaint_pixels_and_masks_match_comfyui() {
    let g = golden();
    let cases = g["inpaint_pixels"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let node = c["node"].as_str().unwrap();
        let (px, mask) = masked_pixels(&tensor(&c["pixels"]), &tensor(&c["mask"]), 8).unwrap();
        // ComfyUI's identity "VAE" saw these pixels (cropped 21x27 -> 16x24, masked = 0.5).
        assert_same(node, &px, &tensor(&c["encoded"]), 1e-6);
        if node == "VAEEncodeForInpaint" {
            let grow = c["grow_mask_by"].as_u64().unwrap() as usize;
            let nm = grow_mask(&mask, grow).unwrap();
            assert_same(
                &format!("noise_mask grow {grow}"),
                &nm,
                &tensor(&c["noise_mask"]),
                0.0,
            );
        } else {
            // torch's bilinear of the mask to the pixel size, reproduced bit for bit.
            assert_same("noise_mask", &mask, &tensor(&c["noise_mask"]), 0.0);
            assert_same("concat_mask", &mask, &tensor(&c["concat_mask"]), 0.0);
        }
    }
}

// ---- end to end on the tiny fixture ----

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![
        dir.path().join("models"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models"),
    ];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

fn run(reg: &Arc<Registry>, env: &Arc<Environment>, prompt: &Json) -> RunOutcome {
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&prompt.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), reg, env, None).unwrap();
    exec.run("p", &valid, None, &Interrupt::new(), &NoEvents)
}

/// Pixels of the image SaveImage node "9" wrote.
fn saved(env: &Environment, out: &RunOutcome) -> image::RgbImage {
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let name = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    image::open(env.paths.output.join(name)).unwrap().to_rgb8()
}

/// txt2img on the tiny checkpoint with `extra` nodes; positive = node "20".
fn workflow(extra: Json, ckpt: &str) -> Json {
    let mut w = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "15": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red car on a street", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 3, "cfg": 6.0,
              "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
              "positive": ["20", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}}
    });
    for (k, v) in extra.as_object().unwrap() {
        w[k] = v.clone();
    }
    w
}

#[test]
fn area_and_timestep_conditioning_on_the_tiny_model() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let ck = "tiny_sd15.safetensors";
    let plain = saved(
        &env,
        &run(
            &reg,
            &env,
            &workflow(
                json!({"20": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["6", 0]}}}),
                ck,
            ),
        ),
    );
    // Two identical conds average to the same prediction: combining a cond with itself is
    // (up to float rounding of the average) the plain run.
    let single = saved(
        &env,
        &run(&reg, &env, &{
            let mut w = workflow(json!({}), ck);
            w["3"]["inputs"]["positive"] = json!(["6", 0]);
            w
        }),
    );
    let max_diff = plain
        .as_raw()
        .iter()
        .zip(single.as_raw())
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(max_diff <= 1, "self-combine vs single: {max_diff}");

    // A cond whose timestep range excludes every step contributes nothing: the result is
    // bit-identical to the run without it.
    let gated = saved(
        &env,
        &run(
            &reg,
            &env,
            &workflow(
                json!({
                    "16": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["15", 0], "start": 0.0, "end": 0.0}},
                    "20": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["16", 0]}}
                }),
                ck,
            ),
        ),
    );
    assert_eq!(gated.as_raw(), single.as_raw());

    // An area cond on the top-left 64x64 px changes the image, mostly there.
    let area = saved(
        &env,
        &run(
            &reg,
            &env,
            &workflow(
                json!({
                    "16": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["15", 0], "width": 64, "height": 64, "x": 0, "y": 0, "strength": 1.0}},
                    "20": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["16", 0]}}
                }),
                ck,
            ),
        ),
    );
    assert_ne!(area.as_raw(), single.as_raw());
    let err = |img: &image::RgbImage, x0: u32, y0: u32| -> f64 {
        let mut s = 0f64;
        for y in y0..y0 + 64 {
            for x in x0..x0 + 64 {
                for c in 0..3 {
                    s += (img.get_pixel(x, y)[c] as f64 - single.get_pixel(x, y)[c] as f64).abs();
                }
            }
        }
        s
    };
    assert!(
        err(&area, 0, 0) > 2.0 * err(&area, 64, 64),
        "area change inside {} vs far corner {}",
        err(&area, 0, 0),
        err(&area, 64, 64)
    );
}

#[test]
fn masked_denoising_keeps_the_unmasked_latent_in_every_sampler() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models/checkpoints/tiny_sd15.safetensors");
    let ck = ModelCache::default()
        .checkpoint(&path, &comfyrs::compute::Compute::default())
        .unwrap();
    let (model, clip, _) = split_checkpoint(&ck);
    let enc = |text: &str| {
        let (c, p) = clip
            .encoder
            .encode(&clip.encoder.tokenize(text), None)
            .unwrap();
        Conditioning(vec![CondEntry::new(c, Some(p))])
    };
    let (pos, neg) = (enc("a cat"), enc("blurry"));
    let shape = [1usize, 4, 8, 8];
    let samples: Vec<f32> = (0..256).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
    let mut latent = Latent::new(t(samples.clone(), &shape));
    // Pixel mask over the left half: latent columns 0..4 are denoised, 4..8 kept.
    let m: Vec<f32> = (0..64 * 64)
        .map(|i| if i % 64 < 32 { 1.0 } else { 0.0 })
        .collect();
    latent.noise_mask = Some(t(m, &[1, 1, 64, 64]));
    let noise = prepare_noise(&shape, 11, None).unwrap();
    // Samplers whose last step lands on the (blended) x0 prediction; UniPC's last step is a
    // multistep combination, which ComfyUI does not pin to the input either.
    let kinds = [
        "euler",
        "euler_ancestral",
        "heun",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "ddim",
        "lms",
    ];
    for name in kinds {
        let kind: SamplerKind = name.parse().unwrap();
        let sigmas = ksampler_sigmas(&model.sampling, Scheduler::Normal, name, 3, Some(1.0));
        for (guider, negative, cfg) in [("cfg", Some(&neg), 5.0), ("basic", None, 1.0)] {
            let (out, _) = run_sampler(
                None, &model, &pos, negative, cfg, kind, &sigmas, &latent, &noise, 11,
            )
            .unwrap();
            let o = vals(&out);
            let mut changed = 0f32;
            for c in 0..4 {
                for y in 0..8 {
                    for x in 0..8 {
                        let i = (c * 8 + y) * 8 + x;
                        if x >= 4 {
                            // ComfyUI blends only the denoised prediction, so the kept region
                            // is the sampler's update of an exact x0: equal up to rounding.
                            assert!(
                                (o[i] - samples[i]).abs() <= 1e-4 * (1.0 + samples[i].abs()),
                                "{name}/{guider}: kept latent [{c},{y},{x}] {} -> {}",
                                samples[i],
                                o[i]
                            );
                        } else {
                            changed = changed.max((o[i] - samples[i]).abs());
                        }
                    }
                }
            }
            assert!(
                changed > 0.1,
                "{name}/{guider}: the masked half did not change"
            );
        }
    }
}

/// The tiny checkpoint with a 9-input-channel UNet (ComfyUI's inpainting layout).
fn tiny_inpaint_checkpoint(dir: &std::path::Path) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models/checkpoints/tiny_sd15.safetensors");
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let t = match view.dtype() {
            safetensors::Dtype::F16 => {
                let v: Vec<f32> = view
                    .data()
                    .chunks(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap()
            }
            safetensors::Dtype::I64 => {
                let v: Vec<i64> = view
                    .data()
                    .chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap()
            }
            d => panic!("unexpected dtype {d:?}"),
        };
        let t = if name == "model.diffusion_model.input_blocks.0.0.weight" {
            // [32, 4, 3, 3] -> [32, 9, 3, 3]: the 5 extra input channels get the first
            // ones' weights scaled, so mask and masked image visibly matter.
            let extra = t.narrow(1, 0, 4).unwrap();
            let mask_w = t.narrow(1, 0, 1).unwrap();
            Tensor::cat(
                &[&t, &(&mask_w * 0.5).unwrap(), &(&extra * 0.7).unwrap()],
                1,
            )
            .unwrap()
        } else {
            t
        };
        tensors.push((name.to_string(), t));
    }
    let out = dir.join("models/checkpoints");
    std::fs::create_dir_all(&out).unwrap();
    candle_core::safetensors::save(
        &tensors
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        out.join("tiny_inpaint.safetensors"),
    )
    .unwrap();
}

#[test]
fn nine_channel_inpainting_unet_uses_the_concat() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (dir, env) = setup();
    tiny_inpaint_checkpoint(dir.path());
    let mut mask = image::RgbImage::new(64, 64);
    for (x, y, p) in mask.enumerate_pixels_mut() {
        if (16..48).contains(&x) && (8..40).contains(&y) {
            *p = image::Rgb([255, 0, 0]);
        }
    }
    mask.save(env.paths.input.join("mask.png")).unwrap();
    let mut img = image::RgbImage::new(64, 64);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]);
    }
    img.save(env.paths.input.join("img.png")).unwrap();
    let wf = |ckpt: &str, with_imc: bool| {
        let mut w = json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "10": {"class_type": "LoadImage", "inputs": {"image": "img.png"}},
            "12": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
            "14": {"class_type": "InpaintModelConditioning", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["10", 0], "mask": ["12", 0], "noise_mask": true}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["14", 0], "negative": ["14", 1], "latent_image": ["14", 2]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ip", "images": ["8", 0]}}
        });
        if !with_imc {
            w["3"]["inputs"]["positive"] = json!(["6", 0]);
            w["3"]["inputs"]["negative"] = json!(["7", 0]);
        }
        w
    };
    let inpaint = saved(
        &env,
        &run(&reg, &env, &wf("tiny_inpaint.safetensors", true)),
    );
    // The same 9-channel model without InpaintModelConditioning falls back to the noise mask
    // and the latent for the concat: a different result.
    let fallback = saved(
        &env,
        &run(&reg, &env, &wf("tiny_inpaint.safetensors", false)),
    );
    assert_ne!(inpaint.as_raw(), fallback.as_raw());
    // A 4-channel model ignores the concat: with or without InpaintModelConditioning's
    // conditioning the result is identical.
    let plain_a = saved(&env, &run(&reg, &env, &wf("tiny_sd15.safetensors", true)));
    let plain_b = saved(&env, &run(&reg, &env, &wf("tiny_sd15.safetensors", false)));
    assert_eq!(plain_a.as_raw(), plain_b.as_raw());
    assert_ne!(inpaint.as_raw(), plain_a.as_raw());
}

#[test]
fn object_info_matches_comfyui_for_the_conditioning_and_inpaint_nodes() {
    // tests/data/object_info_cond_inpaint.json: GET /object_info/<class> of ComfyUI a125cd84.
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/object_info_cond_inpaint.json"
    );
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let reg = Registry::with_builtin_nodes();
    let (_d, env) = setup();
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 12);
    for (class, info) in classes {
        let ours = reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}
