//! Sampling-time conditioning (`comfyrs::sampling::conds`) against ComfyUI's own
//! process_conds + calc_cond_batch + cfg_function run with a toy model
//! (tests/data/cond_batch_golden.json, written by tests/data/gen_cond_batch_golden.py):
//! areas with feathered edges, strengths, percentage areas, masks (resized, mask strength,
//! mask bounds), timestep ranges, the opposite-area entries, token-length batching, cfg 1,
//! and the inpainting concat.

use candle_core::{Device, Tensor};
use comfyrs::sampling::conds::{
    calc_cond_batch, prepare, CondArea, CondInput, CondModel, CondOptions, PrepareContext,
};
use comfyrs::sampling::model_sampling::{ModelSampling, Prediction};
use serde_json::Value as Json;
use std::cell::RefCell;

/// SD1.5's latent `process_in` (the inpaint concat image's scale).
fn sd15_in(z: &Tensor) -> candle_core::Result<Tensor> {
    comfyrs::models::LatentFormat::sd15().process_in(z)
}

/// The generator's toy model: `x/(1+σ²) + mean_T(context)[:, :4] + 0.25·concat[:, :4]·concat[:, 4]`.
struct Toy {
    calls: RefCell<Vec<usize>>,
}

impl CondModel for Toy {
    fn apply(
        &self,
        x: &Tensor,
        sigma: f64,
        context: &Tensor,
        concat: Option<&Tensor>,
        _y: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        self.calls.borrow_mut().push(n);
        let s = sigma as f32;
        let k = 1.0f32 + s * s;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let (_, t, d) = context.dims3()?;
        let cv = context.flatten_all()?.to_vec1::<f32>()?;
        let cc = match concat {
            Some(cc) => Some(cc.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let mut out = vec![0f32; n * c * h * w];
        for b in 0..n {
            for ch in 0..c {
                let mut sum = 0f32;
                for ti in 0..t {
                    sum += cv[(b * t + ti) * d + ch];
                }
                let mean = sum / t as f32;
                for p in 0..h * w {
                    let i = (b * c + ch) * h * w + p;
                    let mut v = xv[i] / k + mean;
                    if let Some(cc) = &cc {
                        let img = cc[(b * 5 + ch) * h * w + p];
                        let m = cc[(b * 5 + 4) * h * w + p];
                        v += 0.25 * img * m;
                    }
                    out[i] = v;
                }
            }
        }
        Tensor::from_vec(out, (n, c, h, w), &Device::Cpu)
    }
}

fn golden() -> Json {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cond_batch_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn tensor(v: &Json) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    Tensor::from_vec(floats(&v["data"]), shape, &Device::Cpu).unwrap()
}

fn options(o: &Json) -> CondOptions {
    let f = |k: &str| o.get(k).and_then(Json::as_f64);
    let area = o.get("area").map(|a| {
        let a = a.as_array().unwrap();
        if a[0].is_string() {
            CondArea::Percentage {
                h: a[1].as_f64().unwrap(),
                w: a[2].as_f64().unwrap(),
                y: a[3].as_f64().unwrap(),
                x: a[4].as_f64().unwrap(),
            }
        } else {
            let u = |i: usize| a[i].as_u64().unwrap() as usize;
            CondArea::Latent {
                h: u(0),
                w: u(1),
                y: u(2),
                x: u(3),
            }
        }
    });
    CondOptions {
        area,
        strength: f("strength"),
        set_area_to_bounds: o.get("set_area_to_bounds").and_then(Json::as_bool),
        mask: o.get("mask").map(tensor),
        mask_strength: f("mask_strength"),
        start_percent: f("start_percent"),
        end_percent: f("end_percent"),
        concat_latent_image: o.get("concat_latent_image").map(tensor),
        concat_mask: o.get("concat_mask").map(tensor),
        ..Default::default()
    }
}

fn input((t, o): &(Tensor, CondOptions)) -> CondInput<'_> {
    CondInput {
        cross_attn: t,
        pooled: None,
        opts: o,
    }
}

fn entries(list: &Json) -> Vec<(Tensor, CondOptions)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| (tensor(&e["cond"]), options(&e["opts"])))
        .collect()
}

fn assert_close(name: &str, what: &str, got: &Tensor, want: &[f32]) {
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(g.len(), want.len(), "{name} {what}: length");
    let mut worst = 0f32;
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        let d = (a - b).abs();
        assert!(
            d <= 2e-5 * (1.0 + b.abs()),
            "{name} {what}[{i}]: got {a}, ComfyUI {b}"
        );
        worst = worst.max(d);
    }
    eprintln!("{name} {what}: max |diff| {worst:e}");
}

#[test]
fn calc_cond_batch_matches_comfyui_on_a_toy_model() {
    let g = golden();
    let ms = ModelSampling::sd15(Prediction::Eps);
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let x = Tensor::from_vec(floats(&case["x"]), shape.as_slice(), &Device::Cpu).unwrap();
        let latent = tensor(&case["latent_image"]);
        let dmask = match &case["denoise_mask"] {
            Json::Null => None,
            m => Some(comfyrs::sampling::masks::reshape_mask(&tensor(m), &shape).unwrap()),
        };
        let pos = entries(&case["positive"]);
        let neg = match &case["negative"] {
            Json::Null => None,
            n => Some(entries(n)),
        };
        let mut lists = vec![pos.iter().map(input).collect::<Vec<_>>()];
        if let Some(n) = &neg {
            lists.push(n.iter().map(input).collect());
        }
        let ctx = PrepareContext {
            shape: [shape[0], shape[1], shape[2], shape[3]],
            sampling: &ms,
            latent_image: &latent,
            denoise_mask: dmask.as_ref(),
            inpaint_model: case["inpaint_model"].as_bool().unwrap(),
            extra_conds: None,
            process_in: &sd15_in,
        };
        let prepared = prepare(&lists, &ctx).unwrap();
        let sigma = case["sigma"].as_f64().unwrap() as f32 as f64;
        let cfg = case["cfg"].as_f64().unwrap();
        let skip_uncond = (cfg - 1.0).abs() < 1e-9;
        let toy = Toy {
            calls: RefCell::new(Vec::new()),
        };
        let negative = if skip_uncond || neg.is_none() {
            None
        } else {
            Some(prepared.lists[1].as_slice())
        };
        let out = calc_cond_batch(
            &toy,
            &[Some(prepared.lists[0].as_slice()), negative],
            &x,
            sigma,
        )
        .unwrap();
        let calls: Vec<usize> = case["model_batch_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(*toy.calls.borrow(), calls, "{name}: model calls (batching)");
        assert_close(name, "cond", &out[0], &floats(&case["cond_out"]));
        assert_close(name, "uncond", &out[1], &floats(&case["uncond_out"]));
        let guided = (&out[1] + ((&out[0] - &out[1]).unwrap() * cfg).unwrap()).unwrap();
        assert_close(name, "guided", &guided, &floats(&case["guided"]));
    }
}

#[test]
fn a_cond_outside_its_timestep_range_contributes_nothing() {
    let ms = ModelSampling::sd15(Prediction::Eps);
    let shape = [1usize, 4, 8, 8];
    let x = Tensor::ones(&shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    let a = Tensor::full(1f32, (1, 3, 8), &Device::Cpu).unwrap();
    let b = Tensor::full(5f32, (1, 3, 8), &Device::Cpu).unwrap();
    let plain = CondOptions::default();
    let late = CondOptions {
        start_percent: Some(0.6),
        end_percent: Some(1.0),
        ..Default::default()
    };
    let ctx = PrepareContext {
        shape,
        sampling: &ms,
        latent_image: &x,
        denoise_mask: None,
        inpaint_model: false,
        extra_conds: None,
        process_in: &sd15_in,
    };
    let (pa, pb) = ((a.clone(), plain.clone()), (b.clone(), late.clone()));
    let prepared = prepare(&[vec![input(&pa), input(&pb)]], &ctx).unwrap();
    let toy = Toy {
        calls: RefCell::new(Vec::new()),
    };
    let start = ms.percent_to_sigma(0.6);
    // Above σ(start): only `a` runs, so the result is exactly a's prediction.
    let early =
        calc_cond_batch(&toy, &[Some(prepared.lists[0].as_slice())], &x, start * 2.0).unwrap();
    let only_a = prepare(&[vec![input(&pa)]], &ctx).unwrap();
    let want = calc_cond_batch(&toy, &[Some(only_a.lists[0].as_slice())], &x, start * 2.0).unwrap();
    let diff = (&early[0] - &want[0])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    // Below it both run: the plain average of the two.
    let late_out =
        calc_cond_batch(&toy, &[Some(prepared.lists[0].as_slice())], &x, start * 0.5).unwrap();
    let k = 1.0 + (start * 0.5) as f32 * (start * 0.5) as f32;
    let v = late_out[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((v[0] - (1.0 / k + 3.0)).abs() < 1e-5, "{}", v[0]);
}
