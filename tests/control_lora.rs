//! Control-LoRA (issue 14) as ComfyUI v0.3.64 runs it (`ControlLora`: the ControlNet built
//! from the sampled model's UNet, the file's weights and its low-rank up/down pairs), against
//! ComfyUI's own class on the tiny fixtures (goldens: `scripts/goldens/
//! gen_control_lora_goldens.py` → tests/data/control_lora/): the built network's forward,
//! and sampling with it through ControlNetApply / ControlNetApplyAdvanced on tiny_sd15.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use comfyrs::models::controlnet::{load_control_model, ControlLora, ControlModel};
use comfyrs::models::fixture as fx;
use comfyrs::node::types::Latent;
use comfyrs::nodes::controlnet::{apply_controlnet, apply_controlnet_advanced, ControlNetPayload};
use comfyrs::nodes::sampling::run_sampler;
use comfyrs::nodes::sd_types::{split_checkpoint, CondEntry, Conditioning, ModelCache, SdModel};
use comfyrs::sampling::samplers::SamplerKind;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root().join("tests/data/control_lora").join(name),
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("tests/data/control_lora/{name}: {e}"))
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a − b| ≤ tol · (1 + max |b|).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (vals(got), vals(want));
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = g
        .iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= tol * (1.0 + scale),
        "{what}: max |Δ| {diff} (scale {scale})"
    );
}

fn tiny_model() -> SdModel {
    let ck = ModelCache::default()
        .checkpoint(
            &root().join(fx::TINY_SD15_PATH),
            &comfyrs::compute::Compute::default(),
        )
        .unwrap();
    split_checkpoint(&ck).0
}

fn control_lora() -> ControlLora {
    match load_control_model(
        &root().join(fx::TINY_CONTROL_LORA_SD15_PATH),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    {
        ControlModel::Lora(l) => l,
        other => panic!("loaded as {other:?}"),
    }
}

#[test]
fn built_network_matches_comfyui() {
    let g = data("module.safetensors");
    let model = tiny_model();
    let cl = control_lora();
    assert_eq!(cl.hint_channels(), 3);
    let net = cl.network(model.diffusion.base_weights()).unwrap();
    // Built once per model.
    let again = cl.network(model.diffusion.base_weights()).unwrap();
    assert_eq!(format!("{net:?}"), format!("{again:?}"));
    let out = net
        .forward(&g["x"], &g["hint"], &g["t"], &g["context"], None)
        .unwrap();
    assert_close(
        "middle",
        out.middle[0].as_ref().unwrap(),
        &g["middle.0"],
        1e-5,
    );
    assert_eq!(out.output.len(), 4);
    for (i, o) in out.output.iter().enumerate() {
        assert_close(
            &format!("output {i}"),
            o.as_ref().unwrap(),
            &g[&format!("output.{i}")],
            1e-5,
        );
    }
}

#[test]
fn sampling_with_a_control_lora_matches_comfyui() {
    let g = data("sampling.safetensors");
    let model = tiny_model();
    let cn = ControlNetPayload {
        model: ControlModel::Lora(control_lora()),
        control_type: None,
    };
    let c = |k: &str| Conditioning(vec![CondEntry::new(g[k].clone(), None)]);
    let (p, n) = (c("pos"), c("neg"));
    let h = g["hint"]
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap();
    let sigmas = vals(&g["sigmas"]);
    let latent = Latent::new(Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let run = |p: &Conditioning, n: &Conditioning| {
        run_sampler(
            None,
            &model,
            p,
            Some(n),
            6.0,
            SamplerKind::Euler,
            &sigmas,
            &latent,
            &g["noise"],
            42,
        )
        .unwrap()
        .0
    };
    let cases = [
        ("none", (p.clone(), n.clone())),
        (
            "advanced",
            apply_controlnet_advanced(&p, &n, &cn, &h, 0.8, (0.0, 1.0), None),
        ),
        ("apply", (apply_controlnet(&p, &cn, &h, 1.0), n.clone())),
    ];
    for (name, (cp, cn_)) in &cases {
        assert_close(name, &run(cp, cn_), &g[&format!("case.{name}")], 1e-4);
    }
    assert_ne!(vals(&g["case.none"]), vals(&g["case.advanced"]));
}
