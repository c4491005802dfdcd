//! ControlNet (issue 14): the cldm network and its loaders against ComfyUI's own
//! `comfy.controlnet.load_controlnet` + cldm forward, sampling with ControlNetApply /
//! ControlNetApplyAdvanced against `comfy.samplers.sample`, the Canny node against kornia,
//! and the nodes' schemas and behaviour. Goldens: scripts/goldens/gen_controlnet_goldens.py
//! → tests/data/controlnet/.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::image_ops::canny::canny;
use comfyrs::image_ops::Planes;
use comfyrs::models::controlnet::load::ControlNetLayout;
use comfyrs::models::controlnet::{load_controlnet, load_controlnet_weights, ControlNetFile};
use comfyrs::models::fixture::{
    TINY_CONTROLNET_SD15_PATH, TINY_CONTROLNET_SDXL_PATH, TINY_SD15_PATH, TINY_SDXL_PATH,
};
use comfyrs::node::types::Latent;
use comfyrs::node::Registry;
use comfyrs::nodes::controlnet::{apply_controlnet, apply_controlnet_advanced, ControlNetPayload};
use comfyrs::nodes::sampling::run_sampler;
use comfyrs::nodes::sd_types::{split_checkpoint, CondEntry, Conditioning, ModelCache, SdModel};
use comfyrs::prompt::prepare;
use comfyrs::sampling::samplers::SamplerKind;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root().join("tests/data/controlnet").join(name),
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("tests/data/controlnet/{name}: {e}"))
}

fn cn(path: &str) -> ControlNetFile {
    load_controlnet(&root().join(path), None, DType::F32, &Device::Cpu).unwrap()
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

fn check_module(name: &str, file: &ControlNetFile, g: &HashMap<String, Tensor>) {
    let k = |s: &str| g[&format!("{name}.{s}")].clone();
    let y = g.get(&format!("{name}.y"));
    let out = file
        .net
        .forward(&k("x"), &k("hint"), &k("t"), &k("context"), y)
        .unwrap();
    assert_eq!(out.output.len(), 4);
    assert!(out.input.is_empty());
    assert_close(
        &format!("{name} middle"),
        out.middle[0].as_ref().unwrap(),
        &k("middle.0"),
        2e-5,
    );
    for (i, o) in out.output.iter().enumerate() {
        assert_close(
            &format!("{name} output {i}"),
            o.as_ref().unwrap(),
            &k(&format!("output.{i}")),
            2e-5,
        );
    }
}

#[test]
fn generator_reproduces_the_committed_controlnet_fixtures() {
    use comfyrs::models::fixture::{tiny_controlnet_sd15_bytes, tiny_controlnet_sdxl_bytes};
    for (path, bytes) in [
        (TINY_CONTROLNET_SD15_PATH, tiny_controlnet_sd15_bytes()),
        (TINY_CONTROLNET_SDXL_PATH, tiny_controlnet_sdxl_bytes()),
    ] {
        assert!(std::fs::read(root().join(path)).unwrap() == bytes, "{path}");
    }
}

#[test]
fn cldm_forward_matches_comfyui_sd15_and_sdxl() {
    let g = data("module.safetensors");
    let sd15 = cn(TINY_CONTROLNET_SD15_PATH);
    assert_eq!(sd15.layout, ControlNetLayout::LdmPrefixed);
    assert_eq!(sd15.net.hint_channels(), 3);
    check_module("sd15", &sd15, &g);
    let sdxl = cn(TINY_CONTROLNET_SDXL_PATH);
    assert_eq!(sdxl.layout, ControlNetLayout::Ldm);
    assert_eq!(sdxl.net.config().adm_in_channels, Some(48 + 6 * 256));
    check_module("sdxl", &sdxl, &g);
    // An SDXL ControlNet without the model's y: a clear error, not a panic.
    let k = |s: &str| g[&format!("sdxl.{s}")].clone();
    let err = sdxl
        .net
        .forward(&k("x"), &k("hint"), &k("t"), &k("context"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ADM vector y"), "{err}");
}

/// LDM → diffusers module names, written independently of the loader (the diffusers
/// ControlNetModel layout of the tiny SD1.5 ControlNet).
fn to_diffusers(ldm: &str) -> Option<String> {
    let resnet = [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("emb_layers.1", "time_emb_proj"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("skip_connection", "conv_shortcut"),
    ];
    let r = |rest: &str, base: &str| -> Option<String> {
        for (l, d) in resnet {
            if let Some(p) = rest.strip_prefix(l) {
                return Some(format!("{base}.{d}{p}"));
            }
        }
        None
    };
    let k = ldm.strip_prefix("control_model.")?;
    let pairs: [(&str, &str); 4] = [
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("input_blocks.0.0", "conv_in"),
        ("middle_block_out.0", "controlnet_mid_block"),
    ];
    for (l, d) in pairs {
        if let Some(p) = k.strip_prefix(l) {
            return Some(format!("{d}{p}"));
        }
    }
    if let Some(rest) = k.strip_prefix("input_hint_block.") {
        let (i, p) = rest.split_once('.').unwrap();
        let i: usize = i.parse().unwrap();
        return Some(match i {
            0 => format!("controlnet_cond_embedding.conv_in.{p}"),
            14 => format!("controlnet_cond_embedding.conv_out.{p}"),
            _ => format!("controlnet_cond_embedding.blocks.{}.{p}", i / 2 - 1),
        });
    }
    if let Some(rest) = k.strip_prefix("zero_convs.") {
        let (i, p) = rest.split_once(".0.").unwrap();
        return Some(format!("controlnet_down_blocks.{i}.{p}"));
    }
    if let Some(rest) = k.strip_prefix("input_blocks.1.0.") {
        return r(rest, "down_blocks.0.resnets.0");
    }
    if let Some(rest) = k.strip_prefix("input_blocks.2.0.op.") {
        return Some(format!("down_blocks.0.downsamplers.0.conv.{rest}"));
    }
    if let Some(rest) = k.strip_prefix("input_blocks.3.0.") {
        return r(rest, "down_blocks.1.resnets.0");
    }
    if let Some(rest) = k.strip_prefix("input_blocks.3.1.") {
        return Some(format!("down_blocks.1.attentions.0.{rest}"));
    }
    if let Some(rest) = k.strip_prefix("middle_block.1.") {
        return Some(format!("mid_block.attentions.0.{rest}"));
    }
    if let Some(rest) = k.strip_prefix("middle_block.0.") {
        return r(rest, "mid_block.resnets.0");
    }
    if let Some(rest) = k.strip_prefix("middle_block.2.") {
        return r(rest, "mid_block.resnets.1");
    }
    None
}

#[test]
fn diffusers_layout_loads_the_same_network() {
    let path = root().join(TINY_CONTROLNET_SD15_PATH);
    let ldm = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut diff = HashMap::new();
    for (k, v) in &ldm {
        let d = to_diffusers(k).unwrap_or_else(|| panic!("no diffusers name for {k}"));
        diff.insert(d, v.clone());
    }
    assert_eq!(diff.len(), ldm.len());
    let file = load_controlnet_weights(diff, None, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(file.layout, ControlNetLayout::Diffusers);
    assert_eq!(
        file.preset(),
        None,
        "a tiny network matches no full-size preset"
    );
    check_module("sd15", &file, &data("module.safetensors"));
}

#[test]
fn unsupported_control_files_are_named() {
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    let one = |k: &str| HashMap::from([(k.to_string(), t.clone())]);
    for (keys, kind) in [
        (one("lora_controlnet"), "Control-LoRA"),
        (one("body.0.in_conv.weight"), "T2I-Adapter"),
        (one("controlnet_blocks.0.weight"), "Flux ControlNet"),
        (
            HashMap::from([
                ("controlnet_cond_embedding.conv_in.weight".into(), t.clone()),
                ("control_add_embedding.linear_1.bias".into(), t.clone()),
            ]),
            "union SDXL ControlNet",
        ),
        (one("something.else"), "could not detect"),
    ] {
        let e = load_controlnet_weights(keys, None, DType::F32, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains(kind), "{kind}: {e}");
    }
    // Pickled files are refused before they are opened.
    let e = load_controlnet(&root().join("no_such.pth"), None, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains(".safetensors files only"), "{e}");
}

fn tiny_model() -> SdModel {
    let ck = ModelCache::default()
        .checkpoint(
            &root().join(TINY_SD15_PATH),
            &comfyrs::compute::Compute::default(),
        )
        .unwrap();
    split_checkpoint(&ck).0
}

#[test]
fn diff_controlnet_adds_the_models_weights() {
    // A diff file made from the tiny ControlNet: every weight the UNet also has is stored as
    // (ControlNet − UNet) in f16, plus the `difference` marker.
    let model = tiny_model();
    let base = model.diffusion.base_weights();
    let full = candle_core::safetensors::load(root().join(TINY_CONTROLNET_SD15_PATH), &Device::Cpu)
        .unwrap();
    let mut diff = HashMap::new();
    let mut shared = 0;
    for (k, v) in &full {
        let rest = k.strip_prefix("control_model.").unwrap();
        let t = match base.get(&format!("model.diffusion_model.{rest}")) {
            Some(b) => {
                shared += 1;
                (v.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap()
            }
            None => v.clone(),
        };
        diff.insert(k.clone(), t);
    }
    assert!(shared > 40, "{shared} shared weights");
    diff.insert(
        "difference".into(),
        Tensor::zeros(1, DType::F16, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("diff_tiny.safetensors");
    candle_core::safetensors::save(&diff, &p).unwrap();
    let with_base = load_controlnet(&p, Some(base), DType::F32, &Device::Cpu).unwrap();
    assert!(with_base.diff_applied);
    // Equal to the full ControlNet up to the f16 rounding of the stored differences.
    check_module_loose(&with_base, 2e-2);
    let without = load_controlnet(&p, None, DType::F32, &Device::Cpu).unwrap();
    assert!(!without.diff_applied);
    let g = data("module.safetensors");
    let k = |s: &str| g[&format!("sd15.{s}")].clone();
    let o = without
        .net
        .forward(&k("x"), &k("hint"), &k("t"), &k("context"), None)
        .unwrap();
    let d = (o.middle[0].as_ref().unwrap() - k("middle.0"))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d > 1e-2,
        "without the base model the diff ControlNet differs ({d})"
    );
}

fn check_module_loose(file: &ControlNetFile, tol: f32) {
    let g = data("module.safetensors");
    let k = |s: &str| g[&format!("sd15.{s}")].clone();
    let out = file
        .net
        .forward(&k("x"), &k("hint"), &k("t"), &k("context"), None)
        .unwrap();
    assert_close(
        "diff middle",
        out.middle[0].as_ref().unwrap(),
        &k("middle.0"),
        tol,
    );
}

// ---- sampling against comfy.samplers.sample ----

fn payload() -> ControlNetPayload {
    ControlNetPayload {
        model: cn(TINY_CONTROLNET_SD15_PATH).into(),
        control_type: None,
    }
}

/// IMAGE [B, H, W, C] → the apply nodes' hint [B, C, H, W].
fn hint(img: &Tensor) -> Tensor {
    img.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
}

struct Sampling {
    model: SdModel,
    g: HashMap<String, Tensor>,
    pos: Conditioning,
    neg: Conditioning,
}

impl Sampling {
    fn new() -> Self {
        let g = data("sampling.safetensors");
        let c = |k: &str| Conditioning(vec![CondEntry::new(g[k].clone(), None)]);
        Sampling {
            model: tiny_model(),
            pos: c("pos"),
            neg: c("neg"),
            g,
        }
    }
    fn run(&self, pos: &Conditioning, neg: &Conditioning) -> Tensor {
        let sigmas = vals(&self.g["sigmas"]);
        let latent = Latent::new(Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap());
        let (out, _) = run_sampler(
            None,
            &self.model,
            pos,
            Some(neg),
            6.0,
            SamplerKind::Euler,
            &sigmas,
            &latent,
            &self.g["noise"],
            42,
        )
        .unwrap();
        out
    }
}

#[test]
fn sampling_with_controlnets_matches_comfyui() {
    let s = Sampling::new();
    let cn = payload();
    let (ha, hb) = (hint(&s.g["hint_a"]), hint(&s.g["hint_b"]));
    let (p, n) = (&s.pos, &s.neg);
    let adv = |p: &Conditioning, n: &Conditioning, h: &Tensor, st: f64, r: (f64, f64)| {
        apply_controlnet_advanced(p, n, &cn, h, st, r, None)
    };
    let p2 = apply_controlnet(p, &cn, &ha, 1.0);
    let (p3, n3) = adv(p, n, &ha, 0.7, (0.0, 1.0));
    let cases: Vec<(&str, (Conditioning, Conditioning))> = vec![
        ("none", (p.clone(), n.clone())),
        ("apply_0.9", (apply_controlnet(p, &cn, &ha, 0.9), n.clone())),
        ("advanced_0.8", adv(p, n, &ha, 0.8, (0.0, 1.0))),
        ("advanced_range", adv(p, n, &ha, 1.0, (0.2, 0.8))),
        ("advanced_late", adv(p, n, &ha, 1.0, (0.9, 1.0))),
        (
            "apply_chain",
            (apply_controlnet(&p2, &cn, &hb, 0.5), n.clone()),
        ),
        ("advanced_chain", adv(&p3, &n3, &hb, 1.3, (0.0, 0.5))),
    ];
    let mut outs = HashMap::new();
    for (name, (cp, cn_)) in &cases {
        let got = s.run(cp, cn_);
        assert_close(name, &got, &s.g[&format!("case.{name}")], 1e-4);
        outs.insert(*name, vals(&got));
    }
    // Every ControlNet case changes the result; each differs from the others.
    for name in outs.keys().filter(|k| **k != "none") {
        assert_ne!(outs[name], outs["none"], "{name}");
    }
}

#[test]
fn latent_and_hint_batches_match_comfyui() {
    let g = data("sampling_batch.safetensors");
    let model = tiny_model();
    let cn = payload();
    let c = |k: &str| Conditioning(vec![CondEntry::new(g[k].clone(), None)]);
    let (p, n) = (c("pos"), c("neg"));
    let h = hint(&g["hints"]);
    assert_eq!(h.dim(0).unwrap(), 2);
    let sigmas = vals(&g["sigmas"]);
    let latent = Latent::new(Tensor::zeros((2, 4, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let run = |p: &Conditioning, n: &Conditioning| {
        run_sampler(
            None,
            &model,
            p,
            Some(n),
            4.0,
            SamplerKind::Euler,
            &sigmas,
            &latent,
            &g["noise"],
            3,
        )
        .unwrap()
        .0
    };
    let cases = [
        ("apply", (apply_controlnet(&p, &cn, &h, 1.0), n.clone())),
        (
            "advanced",
            apply_controlnet_advanced(&p, &n, &cn, &h, 0.9, (0.0, 1.0), None),
        ),
    ];
    for (name, (cp, cn_)) in &cases {
        assert_close(
            &format!("batch {name}"),
            &run(cp, cn_),
            &g[&format!("case.{name}")],
            1e-4,
        );
    }
    // The second latent gets the second hint: the first hint alone gives another result.
    let first_only = run(
        &apply_controlnet(&p, &cn, &h.narrow(0, 0, 1).unwrap(), 1.0),
        &n,
    );
    let second = |t: &Tensor| vals(&t.narrow(0, 1, 1).unwrap());
    assert_ne!(second(&first_only), second(&g["case.apply"]));
}

#[test]
fn sdxl_sampling_with_controlnets_matches_comfyui() {
    let g = data("sampling_sdxl.safetensors");
    let ck = ModelCache::default()
        .checkpoint(
            &root().join(TINY_SDXL_PATH),
            &comfyrs::compute::Compute::default(),
        )
        .unwrap();
    let model = split_checkpoint(&ck).0;
    let cn = ControlNetPayload {
        model: cn(TINY_CONTROLNET_SDXL_PATH).into(),
        control_type: None,
    };
    let c = |k: &str, pooled: &str| {
        Conditioning(vec![CondEntry::new(g[k].clone(), Some(g[pooled].clone()))])
    };
    let (p, n) = (c("pos", "pos_pooled"), c("neg", "neg_pooled"));
    let h = hint(&g["hint"]);
    let sigmas = vals(&g["sigmas"]);
    let latent = Latent::new(Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let run = |p: &Conditioning, n: &Conditioning| {
        run_sampler(
            None,
            &model,
            p,
            Some(n),
            5.0,
            SamplerKind::Euler,
            &sigmas,
            &latent,
            &g["noise"],
            7,
        )
        .unwrap()
        .0
    };
    let cases = [
        ("none", (p.clone(), n.clone())),
        ("apply", (apply_controlnet(&p, &cn, &h, 0.8), n.clone())),
        (
            "advanced",
            apply_controlnet_advanced(&p, &n, &cn, &h, 1.2, (0.0, 0.6), None),
        ),
    ];
    for (name, (cp, cn_)) in &cases {
        assert_close(
            &format!("sdxl {name}"),
            &run(cp, cn_),
            &g[&format!("case.{name}")],
            1e-4,
        );
    }
    assert_ne!(vals(&g["case.none"]), vals(&g["case.apply"]));
}

#[test]
fn timestep_range_gating_and_strength_zero() {
    let s = Sampling::new();
    let cn = payload();
    let ha = hint(&s.g["hint_a"]);
    let none = vals(&s.run(&s.pos, &s.neg));
    // end_percent 0 is sigma 999999999.9: every step is outside the range, exactly `none`.
    let (p, n) = apply_controlnet_advanced(&s.pos, &s.neg, &cn, &ha, 1.0, (0.0, 0.0), None);
    assert_eq!(vals(&s.run(&p, &n)), none);
    // Strength 0 returns the inputs: no control at all.
    let (p, n) = apply_controlnet_advanced(&s.pos, &s.neg, &cn, &ha, 0.0, (0.0, 1.0), None);
    assert!(p.0[0].opts.control.is_none() && n.0[0].opts.control.is_none());
    assert!(apply_controlnet(&s.pos, &cn, &ha, 0.0).0[0]
        .opts
        .control
        .is_none());
    // A range covering only the first step differs from the full range and from none.
    let (p, n) = apply_controlnet_advanced(&s.pos, &s.neg, &cn, &ha, 1.0, (0.0, 0.3), None);
    let first = vals(&s.run(&p, &n));
    let (p, n) = apply_controlnet_advanced(&s.pos, &s.neg, &cn, &ha, 1.0, (0.0, 1.0), None);
    let full = vals(&s.run(&p, &n));
    assert_ne!(first, none);
    assert_ne!(first, full);
}

#[test]
fn apply_marks_the_uncond_advanced_shares_one_link() {
    let s = Sampling::new();
    let cn = payload();
    let ha = hint(&s.g["hint_a"]);
    // ControlNetApply: one link per entry, flagged for the negative.
    let two = Conditioning(vec![s.pos.0[0].clone(), s.pos.0[0].clone()]);
    let a = apply_controlnet(&two, &cn, &ha, 1.0);
    let (l0, l1) = (
        a.0[0].opts.control.as_ref().unwrap(),
        a.0[1].opts.control.as_ref().unwrap(),
    );
    assert!(!Arc::ptr_eq(l0, l1));
    assert_eq!(a.0[0].opts.control_apply_to_uncond, Some(true));
    // Chaining keeps the previous link.
    let b = apply_controlnet(&a, &cn, &ha, 0.5);
    assert!(Arc::ptr_eq(
        b.0[0]
            .opts
            .control
            .as_ref()
            .unwrap()
            .previous
            .as_ref()
            .unwrap(),
        l0
    ));
    // Advanced: positive and negative (same previous: none) share the new link.
    let (p, n) = apply_controlnet_advanced(&s.pos, &s.neg, &cn, &ha, 1.0, (0.0, 1.0), None);
    assert!(Arc::ptr_eq(
        p.0[0].opts.control.as_ref().unwrap(),
        n.0[0].opts.control.as_ref().unwrap()
    ));
    assert_eq!(p.0[0].opts.control_apply_to_uncond, Some(false));
    // Apply with the control copied to the uncond at sampling time equals Advanced on both
    // with the same hint and strength: the same model inputs for both lists.
    let apply = vals(&s.run(&apply_controlnet(&s.pos, &cn, &ha, 0.8), &s.neg));
    let adv = vals(&s.run(&p_n(&s, &cn, &ha, 0.8).0, &p_n(&s, &cn, &ha, 0.8).1));
    let d = apply
        .iter()
        .zip(&adv)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(d < 1e-3, "{d}");
    // Advanced on the positive only (negative untouched) differs: the uncond runs without
    // the ControlNet.
    let (p_only, _) = apply_controlnet_advanced(&s.pos, &s.neg, &cn, &ha, 0.8, (0.0, 1.0), None);
    let pos_only = vals(&s.run(&p_only, &s.neg));
    assert_ne!(pos_only, apply);
}

fn p_n(s: &Sampling, cn: &ControlNetPayload, h: &Tensor, st: f64) -> (Conditioning, Conditioning) {
    apply_controlnet_advanced(&s.pos, &s.neg, cn, h, st, (0.0, 1.0), None)
}

// ---- Canny against kornia ----

#[test]
fn canny_matches_kornia() {
    let g = data("canny.safetensors");
    let meta: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/controlnet/canny.json")).unwrap(),
    )
    .unwrap();
    let img = Planes::from_nhwc(&g["image"]).unwrap();
    for (i, case) in meta["cases"].as_array().unwrap().iter().enumerate() {
        let (lo, hi) = (case[0].as_f64().unwrap(), case[1].as_f64().unwrap());
        let (mag, edges) = canny(&img, lo as f32, hi as f32).unwrap();
        let want_e = vals(&g[&format!("{i}.edges")]);
        let n_edges = want_e.iter().filter(|v| **v > 0.0).count();
        assert!(n_edges > 10, "case {i}: {n_edges} edge pixels");
        let want_m = vals(&g[&format!("{i}.magnitude")]);
        let d = mag
            .data
            .iter()
            .zip(&want_m)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d < 1e-5, "case {i}: magnitude max |Δ| {d}");
        let wrong = edges
            .data
            .iter()
            .zip(&want_e)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            wrong, 0,
            "case {i} ({lo}, {hi}): {wrong} edge pixels differ"
        );
    }
    assert!(canny(&img, 0.5, 0.4).unwrap_err().contains("low_threshold"));
}

// ---- nodes ----

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![dir.path().join("models"), root().join("fixtures/models")];
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

#[test]
fn object_info_matches_comfyui() {
    // tests/data/controlnet/object_info_controlnet.json: GET /object_info/<class> of ComfyUI
    // a125cd84 (no files in its controlnet folders).
    let p = root().join("tests/data/controlnet/object_info_controlnet.json");
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let reg = Registry::with_builtin_nodes();
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 6);
    for (class, info) in classes {
        let ours = reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}

/// txt2img on the tiny SD1.5 with a ControlNet from the fixtures folder; the hint is `Canny`
/// of the VAE-decoded empty latent (an image made inside the workflow, no input file).
fn workflow(control: Json) -> Json {
    let mut wf = json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny_controlnet_sd15.safetensors"}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "7": {"class_type": "Canny", "inputs": {"image": ["6", 0], "low_threshold": 0.05, "high_threshold": 0.1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "cn"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}}
    });
    for (k, v) in control.as_object().unwrap() {
        wf[k] = v.clone();
    }
    wf
}

fn saved(env: &Environment, out: &RunOutcome) -> Vec<u8> {
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let name = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    image::open(env.paths.output.join(name))
        .unwrap()
        .to_rgb8()
        .into_raw()
}

#[test]
fn controlnet_nodes_run_in_a_workflow() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let plain = saved(&env, &run(&reg, &env, &workflow(json!({}))));
    let apply = json!({
        "11": {"class_type": "ControlNetApply", "inputs": {
            "conditioning": ["2", 0], "control_net": ["5", 0], "image": ["7", 0], "strength": 0.9}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["11", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}}
    });
    let with_apply = saved(&env, &run(&reg, &env, &workflow(apply)));
    assert_ne!(plain, with_apply);
    // Advanced through SetUnionControlNetType (a no-op for a non-union ControlNet) with a
    // range that excludes every step: the plain result.
    let gated = json!({
        "12": {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["5", 0], "type": "canny/lineart/anime_lineart/mlsd"}},
        "11": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["12", 0], "image": ["7", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 0.0, "vae": ["1", 2]}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["11", 0], "negative": ["11", 1],
            "latent_image": ["4", 0], "denoise": 1.0}}
    });
    assert_eq!(plain, saved(&env, &run(&reg, &env, &workflow(gated))));
    // DiffControlNetLoader on the same (non-diff) file loads it as it is.
    let diff = json!({
        "5": {"class_type": "DiffControlNetLoader", "inputs": {"model": ["1", 0], "control_net_name": "tiny_controlnet_sd15.safetensors"}},
        "11": {"class_type": "ControlNetApply", "inputs": {
            "conditioning": ["2", 0], "control_net": ["5", 0], "image": ["7", 0], "strength": 0.9}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["11", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}}
    });
    assert_eq!(with_apply, saved(&env, &run(&reg, &env, &workflow(diff))));
}

#[test]
fn sdxl_controlnet_on_the_sd15_model_fails_clearly() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let wf = workflow(json!({
        "5": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny_controlnet_sdxl.safetensors"}},
        "11": {"class_type": "ControlNetApply", "inputs": {
            "conditioning": ["2", 0], "control_net": ["5", 0], "image": ["7", 0], "strength": 1.0}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["11", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}}
    }));
    let out = run(&reg, &env, &wf);
    let RunStatus::Error(e) = out.status else {
        panic!("expected an error, got {:?}", out.status)
    };
    let msg = format!("{e:?}");
    assert!(
        msg.contains("ControlNet") && msg.contains("ADM vector y"),
        "{msg}"
    );
}
