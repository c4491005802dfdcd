//! Model merging on the tiny SD1.5 fixture: the merged weights of every merge node against
//! ComfyUI's own nodes and patcher (`tests/data/model_merge/goldens.safetensors`, made by
//! `scripts/goldens/gen_model_merge_goldens.py`), nested and chained merges, ComfyUI's input
//! order rule of ModelMergeBlocks, runs through KSampler, one merged model per base in the
//! patch cache, errors, and `/object_info` against ComfyUI's
//! (`tests/data/object_info_model_merge.json`).

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::WeightMap;
use comfyrs::models::lora::patched::{patch_weights_stored, PatchedStorage};
use comfyrs::models::lora::PatchCache;
use comfyrs::node::{Registry, Value};
use comfyrs::nodes::sd_types::{SdClip, SdModel};
use comfyrs::prompt::prepare;
use comfyrs::testing::NodeHarness;
use comfyrs::torch_rng::TorchGenerator;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const U: &str = "model.diffusion_model.";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Model B of the goldens: tiny_sd15 + 0.05 · randn, one torch generator seeded 1234
/// drawing each floating weight's noise in sorted key order, stored as f32.
fn write_model_b(dir: &Path) {
    let a = candle_core::safetensors::load(
        root().join("fixtures/models/checkpoints/tiny_sd15.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut keys: Vec<&String> = a.keys().collect();
    keys.sort();
    let mut gen = TorchGenerator::new(1234);
    let mut b = HashMap::new();
    for k in keys {
        let t = &a[k];
        if !t.dtype().is_float() {
            b.insert(k.clone(), t.clone());
            continue;
        }
        let v: Vec<f32> = t
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = gen.randn(t.dims());
        let w: Vec<f32> = v.iter().zip(&n).map(|(x, e)| x + 0.05f32 * e).collect();
        b.insert(
            k.clone(),
            Tensor::from_vec(w, t.dims(), &Device::Cpu).unwrap(),
        );
    }
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    candle_core::safetensors::save(&b, dir.join("checkpoints/tiny_sd15_b.safetensors")).unwrap();
}

/// A models folder holding model B (made once per test binary).
fn models_b() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        write_model_b(d.path());
        d
    })
    .path()
}

fn paths(base: &Path) -> Paths {
    let mut paths = Paths::under(base);
    paths.model_roots = vec![root().join("fixtures/models"), models_b().to_path_buf()];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    paths
}

fn goldens() -> &'static (HashMap<String, Tensor>, Json) {
    static G: OnceLock<(HashMap<String, Tensor>, Json)> = OnceLock::new();
    G.get_or_init(|| {
        let p = root().join("tests/data/model_merge/goldens.safetensors");
        let t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let cases = meta.metadata().as_ref().unwrap()["cases"].clone();
        (t, serde_json::from_str(&cases).unwrap())
    })
}

struct Setup {
    h: NodeHarness,
    _dir: tempfile::TempDir,
    a: (Value, Value),
    b: (Value, Value),
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut h = NodeHarness::with_registry(Registry::with_builtin_nodes());
    h.env = Environment::new(paths(dir.path()));
    let mut load = |name: &str| {
        let out = h
            .run(
                "CheckpointLoaderSimple",
                [("ckpt_name", Value::String(name.into()))],
            )
            .unwrap();
        (out.values[0].clone(), out.values[1].clone())
    };
    let a = load("tiny_sd15.safetensors");
    let b = load("tiny_sd15_b.safetensors");
    Setup { h, _dir: dir, a, b }
}

/// The weights a MODEL's patch list gives (f32, every patched key).
fn merged_unet(v: &Value) -> WeightMap {
    let m = v.downcast::<SdModel>().expect("a MODEL");
    patch_weights_stored(
        m.diffusion.base_weights(),
        m.diffusion.patches(),
        U,
        PatchedStorage::Dtype(DType::F32),
    )
    .unwrap()
}

fn merged_clip(v: &Value) -> WeightMap {
    let c = v.downcast::<SdClip>().expect("a CLIP");
    let l = c.encoder.members()[0];
    patch_weights_stored(
        l.base_weights(),
        l.patches(),
        "cond_stage_model.",
        PatchedStorage::Dtype(DType::F32),
    )
    .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// Every golden key of `case` equals (bit for bit) what `merged` holds.
fn check_case(case: &str, merged: &WeightMap, ours_key: impl Fn(&str) -> String) -> usize {
    let (g, _) = goldens();
    let mut n = 0;
    for (k, want) in g.iter() {
        let Some(key) = k.strip_prefix(&format!("{case}/")) else {
            continue;
        };
        let got = merged
            .get(&ours_key(key))
            .unwrap_or_else(|| panic!("{case}: {key} was not patched"));
        assert_eq!(got.dims(), want.dims(), "{case}/{key}");
        let (gb, wb) = (bits(got), bits(want));
        let diff = gb.iter().zip(&wb).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff,
            0,
            "{case}/{key}: {diff} of {} values differ",
            wb.len()
        );
        n += 1;
    }
    assert!(n > 0, "no golden for {case}");
    n
}

fn f(x: f64) -> Value {
    Value::Float(x)
}

#[test]
fn merged_weights_match_comfyui() {
    let mut s = setup();
    let (a, b) = (s.a.0.clone(), s.b.0.clone());
    let h = &mut s.h;
    let mut run =
        |class: &str, inputs: Vec<(&str, Value)>| h.run(class, inputs).unwrap().values[0].clone();
    let m = |x: &Value| x.clone();
    let mut cases: Vec<(&str, Value)> = vec![];
    for (name, r) in [("simple_0.3", 0.3), ("simple_0", 0.0), ("simple_1", 1.0)] {
        let v = run(
            "ModelMergeSimple",
            vec![("model1", m(&a)), ("model2", m(&b)), ("ratio", f(r))],
        );
        cases.push((name, v));
    }
    let v = run(
        "ModelMergeBlocks",
        vec![
            ("model1", m(&a)),
            ("model2", m(&b)),
            ("input", f(0.2)),
            ("middle", f(0.7)),
            ("out", f(0.9)),
        ],
    );
    cases.push(("blocks", v));
    let v = run(
        "ModelMergeSubtract",
        vec![("model1", m(&a)), ("model2", m(&b)), ("multiplier", f(1.7))],
    );
    cases.push(("subtract_1.7", v));
    let v = run("ModelMergeAdd", vec![("model1", m(&a)), ("model2", m(&b))]);
    cases.push(("add", v));
    // model 2 carries a merge of its own
    let inner = run(
        "ModelMergeSubtract",
        vec![("model1", m(&b)), ("model2", m(&a)), ("multiplier", f(0.5))],
    );
    let v = run(
        "ModelMergeSimple",
        vec![("model1", m(&a)), ("model2", inner), ("ratio", f(0.6))],
    );
    cases.push(("nested", v));
    // model 1 carries a merge: the second applies after it
    let first = run(
        "ModelMergeSimple",
        vec![("model1", m(&a)), ("model2", m(&b)), ("ratio", f(0.25))],
    );
    let v = run("ModelMergeAdd", vec![("model1", first), ("model2", m(&b))]);
    cases.push(("chain", v));
    // ModelMergeSD1 with the generator's per-block ratios
    let ratios = goldens().1["sd1_ratios"].as_object().unwrap().clone();
    let mut inputs = vec![("model1", m(&a)), ("model2", m(&b))];
    for (k, r) in &ratios {
        inputs.push((k.as_str(), f(r.as_f64().unwrap())));
    }
    cases.push(("sd1", run("ModelMergeSD1", inputs)));

    let mut checked = 0;
    for (name, v) in &cases {
        let merged = merged_unet(v);
        // every diffusion weight both models have is patched
        assert_eq!(merged.len(), 208, "{name}");
        checked += check_case(name, &merged, |k| format!("model.{k}"));
    }
    assert_eq!(checked, cases.len() * 9);
}

#[test]
fn blocks_default_ratio_is_the_first_block_input_in_prompt_order() {
    let mut s = setup();
    let (a, b) = (s.a.0.clone(), s.b.0.clone());
    // The prompt lists `out` first: keys no block names (time_embed.*) take its ratio.
    let wf = parse_workflow(
        r#"{"1": {"class_type": "ModelMergeBlocks", "inputs": {"model1": ["8", 0], "model2": ["9", 0], "out": 0.9, "input": 0.2, "middle": 0.7}}}"#,
    )
    .unwrap();
    s.h.set_prompt(wf);
    let v =
        s.h.run(
            "ModelMergeBlocks",
            vec![
                ("model1", a),
                ("model2", b),
                ("input", f(0.2)),
                ("middle", f(0.7)),
                ("out", f(0.9)),
            ],
        )
        .unwrap()
        .values[0]
            .clone();
    check_case("blocks_out_first", &merged_unet(&v), |k| {
        format!("model.{k}")
    });
}

#[test]
fn clip_merges_match_comfyui() {
    let mut s = setup();
    let (a, b) = (s.a.1.clone(), s.b.1.clone());
    let h = &mut s.h;
    let cases = [
        (
            "clip_simple_0.4",
            h.run(
                "CLIPMergeSimple",
                vec![
                    ("clip1", a.clone()),
                    ("clip2", b.clone()),
                    ("ratio", f(0.4)),
                ],
            ),
        ),
        (
            "clip_subtract_0.8",
            h.run(
                "CLIPMergeSubtract",
                vec![
                    ("clip1", a.clone()),
                    ("clip2", b.clone()),
                    ("multiplier", f(0.8)),
                ],
            ),
        ),
        (
            "clip_add",
            h.run(
                "CLIPMergeAdd",
                vec![("clip1", a.clone()), ("clip2", b.clone())],
            ),
        ),
    ];
    for (name, out) in cases {
        let merged = merged_clip(&out.unwrap().values[0]);
        // position_ids (and logit_scale) are not merged
        assert!(
            merged.keys().all(|k| !k.ends_with(".position_ids")),
            "{name}"
        );
        check_case(name, &merged, |k| k.to_string());
    }
}

#[test]
fn clip_merges_of_t5_encoders_are_refused_clearly() {
    let mut s = setup();
    let flux = || {
        vec![
            (
                "clip_name1",
                Value::String("tiny_clip_l.safetensors".into()),
            ),
            ("clip_name2", Value::String("tiny_t5xxl.safetensors".into())),
            ("type", Value::String("flux".into())),
            ("device", Value::String("default".into())),
        ]
    };
    let c1 = s.h.run("DualCLIPLoader", flux()).unwrap().values[0].clone();
    let c2 = s.h.run("DualCLIPLoader", flux()).unwrap().values[0].clone();
    let e =
        s.h.run(
            "CLIPMergeSimple",
            vec![("clip1", c1), ("clip2", c2), ("ratio", f(0.5))],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("T5-XXL") && e.contains("clip2"), "{e}");
    // a CLIP without T5 merges with the CLIP-L of a Flux CLIP (members matched by role)
    let c3 = s.h.run("DualCLIPLoader", flux()).unwrap().values[0].clone();
    let merged = s.h.run(
        "CLIPMergeSimple",
        vec![("clip1", s.a.1.clone()), ("clip2", c3), ("ratio", f(0.5))],
    );
    assert!(merged.is_ok(), "{:?}", merged.err());
}

// ---- through the executor ----

fn executor(base: &Path) -> (Arc<Registry>, Arc<Environment>, Executor) {
    let env = Arc::new(Environment::new(paths(base)));
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    (reg, env, exec)
}

fn run(reg: &Registry, env: &Environment, exec: &Executor, p: &Json, id: &str) -> RunOutcome {
    let wf = parse_workflow(&p.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), reg, env, None).unwrap();
    exec.run(id, &valid, None, &Interrupt::new(), &NoEvents)
}

fn image(env: &Environment, out: &RunOutcome) -> Vec<u8> {
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let name = out.outputs["7"]["images"][0]["filename"].as_str().unwrap();
    image::open(env.paths.output.join(name))
        .unwrap()
        .to_rgb8()
        .into_raw()
}

/// The tiny demo with model B as node 8 and `merge` (node 10, MODEL) feeding KSampler.
fn merge_workflow(merge: Json) -> Json {
    let text = std::fs::read_to_string(root().join("workflows/tiny_txt2img.json")).unwrap();
    let mut p: Json = serde_json::from_str(&text).unwrap();
    p["8"] = json!({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15_b.safetensors"}});
    p["10"] = merge;
    p["5"]["inputs"]["model"] = json!(["10", 0]);
    p
}

fn simple(ratio: f64) -> Json {
    json!({"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["8", 0], "ratio": ratio}})
}

#[test]
fn merges_run_through_ksampler() {
    let d = tempfile::tempdir().unwrap();
    let (reg, env, exec) = executor(d.path());
    let text = std::fs::read_to_string(root().join("workflows/tiny_txt2img.json")).unwrap();
    let plain: Json = serde_json::from_str(&text).unwrap();
    let img_a = image(&env, &run(&reg, &env, &exec, &plain, "a"));
    let mut only_b = merge_workflow(simple(0.0));
    only_b["5"]["inputs"]["model"] = json!(["8", 0]);
    let img_b = image(&env, &run(&reg, &env, &exec, &only_b, "b"));
    assert_ne!(img_a, img_b);

    let cache = env.resources.get_or_default::<PatchCache>();
    // ratio 1 keeps model 1, ratio 0 gives model 2: the same images as the models alone.
    assert_eq!(
        image(
            &env,
            &run(&reg, &env, &exec, &merge_workflow(simple(1.0)), "r1")
        ),
        img_a
    );
    assert_eq!(
        image(
            &env,
            &run(&reg, &env, &exec, &merge_workflow(simple(0.0)), "r0")
        ),
        img_b
    );
    let half = image(
        &env,
        &run(&reg, &env, &exec, &merge_workflow(simple(0.5)), "r5"),
    );
    assert_ne!(half, img_a);
    assert_ne!(half, img_b);
    assert_eq!(cache.unet_builds(), 3);
    // One merged model per base is cached: the ratio 0.5 model replaced the others, so
    // going back to 0.5 with the output cache cleared rebuilds nothing.
    exec.clear_cache();
    assert_eq!(
        image(
            &env,
            &run(&reg, &env, &exec, &merge_workflow(simple(0.5)), "r5b")
        ),
        half
    );
    assert_eq!(cache.unet_builds(), 3);

    // ModelMergeBlocks listing `out` first in the prompt: the unnamed keys (time_embed)
    // take `out`'s ratio, the same weights as ModelMergeSD1 with time_embed. = out. = the
    // output blocks' ratio, input blocks at `input`'s and the middle at `middle`'s.
    let blocks = |order: &[(&str, f64)]| {
        let mut inputs = serde_json::Map::new();
        inputs.insert("model1".into(), json!(["1", 0]));
        inputs.insert("model2".into(), json!(["8", 0]));
        for (k, v) in order {
            inputs.insert((*k).into(), json!(v));
        }
        json!({"class_type": "ModelMergeBlocks", "inputs": inputs})
    };
    let out_first = image(
        &env,
        &run(
            &reg,
            &env,
            &exec,
            &merge_workflow(blocks(&[("out", 0.1), ("input", 0.8), ("middle", 0.5)])),
            "bo",
        ),
    );
    // (the output cache keys inputs by name, not order, as ComfyUI's signature does)
    exec.clear_cache();
    let input_first = image(
        &env,
        &run(
            &reg,
            &env,
            &exec,
            &merge_workflow(blocks(&[("input", 0.8), ("middle", 0.5), ("out", 0.1)])),
            "bi",
        ),
    );
    assert_ne!(out_first, input_first);
    let mut sd1 = serde_json::Map::new();
    sd1.insert("model1".into(), json!(["1", 0]));
    sd1.insert("model2".into(), json!(["8", 0]));
    let schema = reg.schema("ModelMergeSD1").unwrap();
    for spec in &schema.inputs {
        let k = spec.name.as_str();
        let r = if k.starts_with("input_blocks.") {
            0.8
        } else if k.starts_with("middle_block.") {
            0.5
        } else if k == "time_embed." || k == "label_emb." || k.starts_with("out") {
            0.1
        } else {
            continue;
        };
        sd1.insert(k.into(), json!(r));
    }
    let via_sd1 = image(
        &env,
        &run(
            &reg,
            &env,
            &exec,
            &merge_workflow(json!({"class_type": "ModelMergeSD1", "inputs": sd1})),
            "sd1",
        ),
    );
    assert_eq!(via_sd1, out_first);

    // CLIP merges feed the text encoders: ratio 1 keeps clip 1.
    let mut cw = plain.clone();
    cw["8"] = json!({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15_b.safetensors"}});
    cw["11"] = json!({"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["1", 1], "clip2": ["8", 1], "ratio": 1.0}});
    cw["2"]["inputs"]["clip"] = json!(["11", 0]);
    cw["3"]["inputs"]["clip"] = json!(["11", 0]);
    assert_eq!(image(&env, &run(&reg, &env, &exec, &cw, "c1")), img_a);
    cw["11"]["inputs"]["ratio"] = json!(0.3);
    assert_ne!(image(&env, &run(&reg, &env, &exec, &cw, "c3")), img_a);
}

#[test]
fn object_info_matches_comfyui() {
    let want: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/object_info_model_merge.json")).unwrap(),
    )
    .unwrap();
    let h = NodeHarness::with_registry(Registry::with_builtin_nodes());
    for class in [
        "ModelMergeSimple",
        "ModelMergeBlocks",
        "ModelMergeSubtract",
        "ModelMergeAdd",
        "CLIPMergeSimple",
        "CLIPMergeAdd",
        "CLIPMergeSubtract",
        "ModelMergeSD1",
        "ModelMergeSD2",
        "ModelMergeSDXL",
        "ModelMergeSD3_2B",
        "ModelMergeSD35_Large",
        "ModelMergeFlux1",
        "CheckpointSave",
        "CLIPSave",
        "VAESave",
        "ModelSave",
    ] {
        let ours = h
            .object_info(class)
            .unwrap_or_else(|| panic!("{class} is not registered"));
        assert_eq!(ours, want[class], "{class}");
    }
}
