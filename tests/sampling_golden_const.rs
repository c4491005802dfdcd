//! Every sampler comfyrs runs, on CONST (flow) model samplings, against
//! `tests/data/samplers_toy_const_golden.json`: ComfyUI's own KSAMPLER.sample with the toy
//! denoiser x / (1 + σ²) (made by `scripts/goldens/gen_sampling_goldens.py`, like the EPS
//! `samplers_toy_golden.json`), on the Flux shift-1.15 table and the DiscreteFlow shift-3
//! (SD3) table, scheduler `simple`, 10 steps. This covers the `_RF` ancestral variants, the
//! logit-SNR SDE samplers with their first-sigma offset, lcm's CONST re-noising, CONST
//! noise scaling at the start and inverse noise scaling at the end.
//!
//! The golden was made on an Intel Xeon (AVX-512), whose MKL sqrt / log / exp differ in the
//! last bit from the AMD EPYC results `sampling::torch_math` reproduces (see
//! [`check_table`] for what is asserted).

use candle_core::{DType, Device, Tensor};
use comfyrs::sampling::model_sampling::ModelSampling;
use comfyrs::sampling::noise::prepare_noise;
use comfyrs::sampling::samplers::{
    finish_latent, initial_latent, sample, SampleOptions, SamplerKind,
};
use comfyrs::sampling::schedulers::{ksampler_sigmas, Scheduler};
use comfyrs::sampling::torch_math::{with_profile, Profile};
use serde_json::Value;

fn golden() -> Value {
    let s = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samplers_toy_const_golden.json"
    ))
    .unwrap();
    serde_json::from_str(&s).unwrap()
}

fn hexes(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
        .collect()
}

fn toy(x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
    let s = sigma as f32;
    x.broadcast_div(&Tensor::new(1.0f32 + s * s, x.device())?)
}

/// Samplers whose result depends on last-ulp libm differences beyond sqrt / ln (exp, the
/// 10 000-term DEIS reductions, UniPC's f32 linear solves): within tolerance only, per table.
fn not_bit_exact(table: &str, sampler: &str) -> bool {
    matches!(sampler, "deis" | "uni_pc" | "uni_pc_bh2")
        || (table == "flux_1.15" && matches!(sampler, "dpm_2" | "ddpm"))
}

struct Outcome {
    /// max |Δ| / max |golden| over the 64 values.
    scale_rel: f64,
    /// max |Δ| / max(|golden|, 1e-3) per value.
    elem_rel: f64,
    differ: usize,
}

fn run(ms: &ModelSampling, name: &str, entry: &Value, noise_hex: &Value) -> Outcome {
    let want_sigmas: Vec<f32> = entry["sigmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    // KSampler's schedule for this sampler on this model sampling is ComfyUI's.
    let sigmas = ksampler_sigmas(ms, Scheduler::Simple, name, 10, Some(1.0));
    assert_eq!(sigmas, want_sigmas, "{name}: KSampler sigmas");
    let shape = [1usize, 4, 4, 4];
    let noise = prepare_noise(&shape, 0, None).unwrap();
    assert_eq!(
        noise.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        hexes(noise_hex)
    );
    let latent = Tensor::zeros(&shape[..], DType::F32, &Device::Cpu).unwrap();
    let x = initial_latent(ms, &sigmas, &noise, &latent).unwrap();
    let kind: SamplerKind = name.parse().unwrap();
    let mut opts = SampleOptions::new(0).with_model_sampling(ms);
    let mut den = toy;
    let out = sample(kind, &mut den, &x, &sigmas, &mut opts).unwrap();
    let out = finish_latent(ms, &sigmas, &out).unwrap();
    let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = hexes(&entry["hex"]);
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
    let mut o = Outcome {
        scale_rel: 0.0,
        elem_rel: 0.0,
        differ: 0,
    };
    for (a, b) in got.iter().zip(&want) {
        if a.to_bits() != b.to_bits() {
            o.differ += 1;
        }
        let d = (*a as f64 - *b as f64).abs();
        o.scale_rel = o.scale_rel.max(d / scale);
        o.elem_rel = o.elem_rel.max(d / (*b as f64).abs().max(1e-3));
    }
    o
}

/// Every sampler on one table. With the reference machine's sqrt / ln (the default) results
/// must agree within 1e-5 of the output's scale: the golden's CPU rounds some sqrt / ln /
/// exp results to the other neighbour, and the ancestral and SDE samplers carry such
/// last-ulp differences into a few 1e-5 of small elements. With correctly rounded sqrt / ln
/// every sampler but those of [`not_bit_exact`] must reproduce the golden bit for bit,
/// which pins the algorithm (RF variants, logit SNR, first-sigma offset) exactly.
fn check_table(table: &str, ms: &ModelSampling) {
    let g = golden();
    let t = &g[table];
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, entry) in t.as_object().unwrap() {
        if name == "noise_hex" {
            continue;
        }
        count += 1;
        let o = run(ms, name, entry, &t["noise_hex"]);
        let cr = with_profile(Profile::CorrectlyRounded, || {
            run(ms, name, entry, &t["noise_hex"])
        });
        eprintln!(
            "{table} {name:22} reference math: {:.2e} of scale, {:.2e} per element, {}/64 differ; \
             correctly rounded: {}/64 differ",
            o.scale_rel, o.elem_rel, o.differ, cr.differ
        );
        if o.scale_rel > 1e-5 || cr.scale_rel > 1e-5 {
            failures.push(format!(
                "{name}: {:e} / {:e} of scale",
                o.scale_rel, cr.scale_rel
            ));
        }
        if !not_bit_exact(table, name) && cr.differ > 0 {
            failures.push(format!(
                "{name}: expected bit-exact with correctly rounded sqrt / ln, {} differ",
                cr.differ
            ));
        }
    }
    assert_eq!(count, 24, "every sampler comfyrs runs");
    assert!(failures.is_empty(), "{table}: {failures:?}");
}

#[test]
fn flux_shift_1_15() {
    check_table("flux_1.15", &ModelSampling::flux_dev());
}

#[test]
fn discrete_flow_shift_3() {
    check_table("flow_shift3_mult1000", &ModelSampling::sd3());
}

#[test]
fn without_the_model_sampling_a_sampler_takes_the_eps_branch() {
    // The `_RF` variant only runs when the CONST model sampling is given: the same inputs
    // give a different result through the EPS-form euler_ancestral.
    let ms = ModelSampling::flux_dev();
    let sigmas = ksampler_sigmas(&ms, Scheduler::Simple, "euler_ancestral", 10, None);
    let noise = prepare_noise(&[1, 4, 4, 4], 0, None).unwrap();
    let x = initial_latent(&ms, &sigmas, &noise, &noise.zeros_like().unwrap()).unwrap();
    let mut den = toy;
    let mut a = SampleOptions::new(0).with_model_sampling(&ms);
    let rf = sample(SamplerKind::EulerAncestral, &mut den, &x, &sigmas, &mut a).unwrap();
    let mut b = SampleOptions::new(0);
    let eps = sample(SamplerKind::EulerAncestral, &mut den, &x, &sigmas, &mut b).unwrap();
    let d = (rf - eps).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f32>().unwrap() > 1e-3);
}
