//! The savers (CheckpointSave, CLIPSave, VAESave, ModelSave) on the tiny SD1.5 and SDXL
//! fixtures: file names, tensor names, dtypes, shapes and metadata equal what ComfyUI's own
//! nodes write for the same models (`tests/data/model_save/comfyui_files.json`, made by
//! `scripts/goldens/gen_model_save_goldens.py`); a saved checkpoint (a merged one, and SDXL's
//! with CLIP-G converted back to open_clip) loads back in comfyrs and gives the same image;
//! errors.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::node::{Registry, Value};
use comfyrs::prompt::prepare;
use comfyrs::testing::NodeHarness;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> Json {
    let p = root().join("tests/data/model_save/comfyui_files.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Every safetensors file under `dir`: relative name → {tensors: {name: [dtype, shape]},
/// metadata}.
fn describe(dir: &Path) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let mut tensors = serde_json::Map::new();
            for (name, view) in st.tensors() {
                tensors.insert(name, json!([format!("{:?}", view.dtype()), view.shape()]));
            }
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            out.insert(
                rel,
                json!({"tensors": tensors, "metadata": meta.metadata().clone().unwrap_or_default()}),
            );
        }
    }
    out
}

fn harness(base: &Path) -> NodeHarness {
    let mut h = NodeHarness::with_registry(Registry::with_builtin_nodes());
    let mut paths = Paths::under(base);
    paths.model_roots = vec![root().join("fixtures/models")];
    h.env = Environment::new(paths);
    h
}

#[test]
fn saved_files_match_what_comfyui_writes() {
    let g = golden();
    for (fam, ckpt) in [
        ("sd15", "tiny_sd15.safetensors"),
        ("sdxl", "tiny_sdxl.safetensors"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut h = harness(d.path());
        h.set_prompt(parse_workflow(&g["prompt"].to_string()).unwrap());
        h.extra_pnginfo = Some(g["extra_pnginfo"].clone());
        let out = h
            .run(
                "CheckpointLoaderSimple",
                [("ckpt_name", Value::String(ckpt.into()))],
            )
            .unwrap();
        let (m, c, v) = (
            out.values[0].clone(),
            out.values[1].clone(),
            out.values[2].clone(),
        );
        let s = |x: &str| Value::String(x.into());
        for _ in 0..2 {
            h.run(
                "CheckpointSave",
                [
                    ("model", m.clone()),
                    ("clip", c.clone()),
                    ("vae", v.clone()),
                    ("filename_prefix", s("checkpoints/ComfyUI")),
                ],
            )
            .unwrap();
        }
        h.run(
            "CLIPSave",
            [("clip", c.clone()), ("filename_prefix", s("clip/ComfyUI"))],
        )
        .unwrap();
        h.run(
            "VAESave",
            [
                ("vae", v.clone()),
                ("filename_prefix", s("vae/ComfyUI_vae")),
            ],
        )
        .unwrap();
        h.run(
            "ModelSave",
            [
                ("model", m.clone()),
                ("filename_prefix", s("diffusion_models/ComfyUI")),
            ],
        )
        .unwrap();
        let ours = describe(&h.env.paths.output);
        let want = g["files"][fam].as_object().unwrap();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{fam}: file names"
        );
        for (name, w) in want {
            let o = &ours[name];
            let (ot, wt) = (
                o["tensors"].as_object().unwrap(),
                w["tensors"].as_object().unwrap(),
            );
            let only_ours: Vec<_> = ot.keys().filter(|k| !wt.contains_key(*k)).collect();
            let only_theirs: Vec<_> = wt.keys().filter(|k| !ot.contains_key(*k)).collect();
            assert!(
                only_ours.is_empty() && only_theirs.is_empty(),
                "{fam} {name}: keys only comfyrs writes {only_ours:?}, only ComfyUI writes {only_theirs:?}"
            );
            for (k, spec) in wt {
                assert_eq!(&ot[k], spec, "{fam} {name}: {k} (dtype, shape)");
            }
            assert_eq!(o["metadata"], w["metadata"], "{fam} {name}: metadata");
        }
    }
}

// ---- round trips through the executor ----

fn executor(base: &Path) -> (Arc<Registry>, Arc<Environment>, Executor) {
    let mut paths = Paths::under(base);
    // the output folder is a models root too: saved checkpoints load back
    paths.model_roots = vec![root().join("fixtures/models"), base.join("output")];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env = Arc::new(Environment::new(paths));
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

fn txt2img(ckpt: &str) -> Json {
    let text = std::fs::read_to_string(root().join("workflows/tiny_txt2img.json")).unwrap();
    let mut p: Json = serde_json::from_str(&text).unwrap();
    p["1"]["inputs"]["ckpt_name"] = json!(ckpt);
    p
}

#[test]
fn a_saved_merged_checkpoint_loads_back_to_the_same_image() {
    let d = tempfile::tempdir().unwrap();
    let (reg, env, exec) = executor(d.path());
    // model: 0.7·A + 0.3·(A + A) = 1.3·A (ModelMergeAdd then ModelMergeSimple: new weights,
    // nested patches); clip and vae: A's.
    let mut p = txt2img("tiny_sd15.safetensors");
    p["10"] =
        json!({"class_type": "ModelMergeAdd", "inputs": {"model1": ["1", 0], "model2": ["1", 0]}});
    p["11"] = json!({"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["10", 0], "ratio": 0.7}});
    p["5"]["inputs"]["model"] = json!(["11", 0]);
    p["12"] = json!({"class_type": "CheckpointSave", "inputs": {"model": ["11", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/merged"}});
    let merged = image(&env, &run(&reg, &env, &exec, &p, "m"));
    assert!(env
        .paths
        .output
        .join("checkpoints/merged_00001_.safetensors")
        .is_file());
    let plain = image(
        &env,
        &run(&reg, &env, &exec, &txt2img("tiny_sd15.safetensors"), "a"),
    );
    assert_ne!(merged, plain);
    let back = image(
        &env,
        &run(
            &reg,
            &env,
            &exec,
            &txt2img("merged_00001_.safetensors"),
            "b",
        ),
    );
    assert_eq!(back, merged);
}

#[test]
fn a_saved_sdxl_checkpoint_loads_back_to_the_same_image() {
    let d = tempfile::tempdir().unwrap();
    let (reg, env, exec) = executor(d.path());
    let mut p = txt2img("tiny_sdxl.safetensors");
    p["12"] = json!({"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/xl"}});
    let first = image(&env, &run(&reg, &env, &exec, &p, "x"));
    let back = image(
        &env,
        &run(&reg, &env, &exec, &txt2img("xl_00001_.safetensors"), "y"),
    );
    assert_eq!(back, first);
}

#[test]
fn savers_refuse_what_they_cannot_write() {
    let d = tempfile::tempdir().unwrap();
    let mut h = harness(d.path());
    let out = h
        .run(
            "DualCLIPLoader",
            [
                (
                    "clip_name1",
                    Value::String("tiny_clip_l.safetensors".into()),
                ),
                ("clip_name2", Value::String("tiny_t5xxl.safetensors".into())),
                ("type", Value::String("flux".into())),
                ("device", Value::String("default".into())),
            ],
        )
        .unwrap();
    let e = h
        .run(
            "CLIPSave",
            [
                ("clip", out.values[0].clone()),
                ("filename_prefix", Value::String("clip/x".into())),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("T5-XXL") && e.contains("not supported"), "{e}");
    assert!(
        !h.env.paths.output.join("clip").exists()
            || std::fs::read_dir(h.env.paths.output.join("clip"))
                .unwrap()
                .next()
                .is_none()
    );
}
