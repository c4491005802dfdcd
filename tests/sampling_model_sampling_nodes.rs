//! The ModelSampling* nodes and SDTurboScheduler: their `/object_info` is ComfyUI's
//! (`tests/data/object_info_model_sampling.json`, from ComfyUI a125cd84's server via
//! `scripts/goldens/gen_object_info.py`), and on the tiny SD1.5 fixture the model they return
//! drives BasicScheduler, SDTurboScheduler and KSampler with the sigmas ComfyUI computes for
//! that model sampling (`tests/data/sampling_sigmas_golden.json`).
//!
//! Two probe nodes registered by this test expose values: `ProbeSigmas` (a SIGMAS input as
//! UI output) and `ProbeLatent` (a LATENT's samples as UI output); `GoldenSigmas` feeds a
//! schedule from the golden file.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::node::types::Latent;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    Value,
};
use comfyrs::nodes::sd_types::Sigmas;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Map, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;

struct ProbeSigmas;
impl Node for ProbeSigmas {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ProbeSigmas")
            .input(InputSpec::of("sigmas", "SIGMAS"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.object::<Sigmas>("sigmas")?;
        let mut ui = Map::new();
        // JSON has no inf: non-finite values travel as strings, as in the golden file.
        let v: Vec<Json> =
            s.0.iter()
                .map(|v| match v.is_finite() {
                    true => json!(*v as f64),
                    false => json!(v.to_string()),
                })
                .collect();
        ui.insert("sigmas".into(), json!(v));
        Ok(NodeOutput::ui(ui))
    }
}

struct ProbeLatent;
impl Node for ProbeLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ProbeLatent")
            .input(InputSpec::of("samples", "LATENT"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let l = i.object::<Latent>("samples")?;
        let v = l.samples.flatten_all()?.to_vec1::<f32>()?;
        let mut ui = Map::new();
        ui.insert(
            "bits".into(),
            json!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        );
        Ok(NodeOutput::ui(ui))
    }
}

/// SIGMAS from `kinds.<kind>.schedulers.<key>` of the golden file.
struct GoldenSigmas;
impl Node for GoldenSigmas {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("GoldenSigmas")
            .input(InputSpec::string("kind"))
            .input(InputSpec::string("key"))
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let g = golden();
        let s = f32s(&g["kinds"][i.string("kind")?]["schedulers"][i.string("key")?]);
        Ok(NodeOutput::one(Value::object(Sigmas(s))))
    }
}

fn golden() -> Json {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sampling_sigmas_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f32s(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| match x {
            Json::String(s) => s.parse::<f32>().unwrap(), // "inf" / "nan"
            _ => x.as_f64().unwrap() as f32,
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, Arc<Environment>, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![
        dir.path().join("models"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models"),
    ];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut reg = Registry::with_builtin_nodes();
    reg.register(ProbeSigmas).unwrap();
    reg.register(ProbeLatent).unwrap();
    reg.register(GoldenSigmas).unwrap();
    (dir, Arc::new(Environment::new(paths)), Arc::new(reg))
}

fn run(reg: &Arc<Registry>, env: &Arc<Environment>, prompt: &Json) -> RunOutcome {
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&prompt.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), reg, env, None).unwrap();
    exec.run("p", &valid, None, &Interrupt::new(), &NoEvents)
}

fn ok(out: &RunOutcome) -> &RunOutcome {
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    out
}

/// The tiny checkpoint as node "1", `patch` (a model-sampling node taking ["1", 0]) as "2",
/// and `extra` nodes.
fn graph(patch: Json, extra: Json) -> Json {
    let mut w = json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": patch,
    });
    for (k, v) in extra.as_object().unwrap() {
        w[k] = v.clone();
    }
    w
}

fn patch(class: &str, mut inputs: Json) -> Json {
    inputs["model"] = json!(["1", 0]);
    json!({"class_type": class, "inputs": inputs})
}

/// Every node with the inputs that give each golden kind.
fn patches() -> Vec<(&'static str, Json)> {
    vec![
        (
            "discrete_v",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "v_prediction", "zsnr": false}),
            ),
        ),
        (
            "discrete_eps_zsnr",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "eps", "zsnr": true}),
            ),
        ),
        (
            "discrete_v_zsnr",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "v_prediction", "zsnr": true}),
            ),
        ),
        (
            "discrete_lcm",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "lcm", "zsnr": false}),
            ),
        ),
        (
            "discrete_x0",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "x0", "zsnr": false}),
            ),
        ),
        (
            "discrete_img_to_img",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "img_to_img", "zsnr": false}),
            ),
        ),
        (
            "sd3_node_shift3",
            patch("ModelSamplingSD3", json!({"shift": 3.0})),
        ),
        (
            "auraflow_node_shift1.73",
            patch("ModelSamplingAuraFlow", json!({"shift": 1.73})),
        ),
        (
            "flux_node_1024x1024",
            patch(
                "ModelSamplingFlux",
                json!({"max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024}),
            ),
        ),
        (
            "flux_node_128x128",
            patch(
                "ModelSamplingFlux",
                json!({"max_shift": 1.15, "base_shift": 0.5, "width": 128, "height": 128}),
            ),
        ),
        (
            "flux_node_768x1344",
            patch(
                "ModelSamplingFlux",
                json!({"max_shift": 1.15, "base_shift": 0.5, "width": 768, "height": 1344}),
            ),
        ),
        (
            "continuous_edm_v",
            patch(
                "ModelSamplingContinuousEDM",
                json!({"sampling": "v_prediction", "sigma_max": 120.0, "sigma_min": 0.002}),
            ),
        ),
        (
            "continuous_edm_edm",
            patch(
                "ModelSamplingContinuousEDM",
                json!({"sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.002}),
            ),
        ),
        (
            "continuous_edm_eps",
            patch(
                "ModelSamplingContinuousEDM",
                json!({"sampling": "eps", "sigma_max": 80.0, "sigma_min": 0.002}),
            ),
        ),
        (
            "continuous_edm_cosmos",
            patch(
                "ModelSamplingContinuousEDM",
                json!({"sampling": "cosmos_rflow", "sigma_max": 80.0, "sigma_min": 0.002}),
            ),
        ),
        (
            "continuous_v",
            patch(
                "ModelSamplingContinuousV",
                json!({"sampling": "v_prediction", "sigma_max": 500.0, "sigma_min": 0.03}),
            ),
        ),
    ]
}

fn assert_sigmas(what: &str, got: &Json, want: &Json) {
    let (got, want) = (f32s(got), f32s(want));
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        if g == w {
            continue; // incl. inf
        }
        let rel = if *w == 0.0 {
            g.abs()
        } else {
            ((g - w) / w).abs()
        };
        assert!(rel <= 1e-6, "{what}[{k}]: {g} vs ComfyUI {w}");
    }
}

#[test]
fn object_info_matches_comfyui() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/object_info_model_sampling.json"
    );
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (_d, env, reg) = setup();
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 7);
    for (class, info) in classes {
        let ours = reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}

#[test]
fn basic_and_sd_turbo_schedulers_read_the_patched_model() {
    let (_d, env, reg) = setup();
    let g = golden();
    for (kind, p) in patches() {
        let want = &g["kinds"][kind];
        let mut extra = Map::new();
        let mut probes = Vec::new();
        for (n, (sched, steps, denoise)) in [
            ("normal", 10, 1.0),
            ("simple", 4, 1.0),
            ("karras", 20, 1.0),
            ("sgm_uniform", 10, 0.6),
        ]
        .into_iter()
        .enumerate()
        {
            let id = 10 + 2 * n;
            extra.insert(
                id.to_string(),
                json!({"class_type": "BasicScheduler", "inputs": {
                "model": ["2", 0], "scheduler": sched, "steps": steps, "denoise": denoise}}),
            );
            extra.insert(
                (id + 1).to_string(),
                json!({"class_type": "ProbeSigmas", "inputs": {"sigmas": [id.to_string(), 0]}}),
            );
            let key = if denoise < 1.0 {
                ("basic_scheduler", format!("{sched}/{steps}/{denoise}"))
            } else {
                ("schedulers", format!("{sched}/{steps}"))
            };
            probes.push(((id + 1).to_string(), key));
        }
        if kind != "continuous_edm_cosmos" {
            extra.insert(
                "30".into(),
                json!({"class_type": "SDTurboScheduler", "inputs": {
                "model": ["2", 0], "steps": 4, "denoise": 0.75}}),
            );
            extra.insert(
                "31".into(),
                json!({"class_type": "ProbeSigmas", "inputs": {"sigmas": ["30", 0]}}),
            );
            probes.push(("31".into(), ("sd_turbo", "4/0.75".into())));
        }
        let out = run(&reg, &env, &graph(p, Json::Object(extra)));
        ok(&out);
        for (id, (section, key)) in probes {
            assert_sigmas(
                &format!("{kind} {section} {key}"),
                &out.outputs[&id]["sigmas"],
                &want[section][&key],
            );
        }
    }
}

#[test]
fn sd_turbo_on_cosmos_rflow_is_an_error_naming_the_node_input() {
    let (_d, env, reg) = setup();
    let p = patch(
        "ModelSamplingContinuousEDM",
        json!({"sampling": "cosmos_rflow", "sigma_max": 80.0, "sigma_min": 0.002}),
    );
    let out = run(
        &reg,
        &env,
        &graph(
            p,
            json!({
                "3": {"class_type": "SDTurboScheduler", "inputs": {"model": ["2", 0], "steps": 1, "denoise": 1.0}},
                "4": {"class_type": "ProbeSigmas", "inputs": {"sigmas": ["3", 0]}}
            }),
        ),
    );
    let RunStatus::Error(e) = &out.status else {
        panic!("{:?}", out.status)
    };
    assert_eq!(e["node_id"], "3");
    assert_eq!(e["node_type"], "SDTurboScheduler");
    assert_eq!(e["exception_type"], "ValueError");
    assert_eq!(
        e["exception_message"],
        "input 'model': SDTurboScheduler cannot schedule a \
         ModelSamplingCosmosRFlow(0.002..80)+COSMOS_RFLOW model sampling (ComfyUI fails on it too)\n"
    );
}

#[test]
fn choices_comfyrs_cannot_compute_are_clear_errors() {
    let (_d, env, reg) = setup();
    let cases = [
        (
            patch("ModelSamplingContinuousEDM", json!({"sampling": "edm_playground_v2.5", "sigma_max": 120.0, "sigma_min": 0.002})),
            "ModelSamplingContinuousEDM",
            "input 'sampling': edm_playground_v2.5 is not supported by comfyrs yet: besides the EDM \
             sampling it switches the model's latent format to Playground 2.5's per-channel one, \
             which comfyrs's MODEL does not carry; use edm, v_prediction, eps or cosmos_rflow",
        ),
        (
            patch("ModelSamplingSD3", json!({"shift": 0.0})),
            "ModelSamplingSD3",
            "input 'shift': 0 is not allowed: the shift must be > 0 (a shift of 0 makes every sigma 0)",
        ),
        (
            patch("ModelSamplingContinuousV", json!({"sampling": "v_prediction", "sigma_max": 500.0, "sigma_min": 0.0})),
            "ModelSamplingContinuousV",
            "input 'sigma_min': 0 is not allowed: the sigma table is log-spaced, so it must be > 0",
        ),
    ];
    for (p, class, msg) in cases {
        let out = run(
            &reg,
            &env,
            &graph(
                p,
                json!({
                    "3": {"class_type": "BasicScheduler", "inputs": {"model": ["2", 0], "scheduler": "simple", "steps": 2, "denoise": 1.0}},
                    "4": {"class_type": "ProbeSigmas", "inputs": {"sigmas": ["3", 0]}}
                }),
            ),
        );
        let RunStatus::Error(e) = &out.status else {
            panic!("{class}: {:?}", out.status)
        };
        assert_eq!(e["node_id"], "2", "{class}");
        assert_eq!(e["node_type"], class);
        assert_eq!(e["exception_type"], "ValueError");
        assert_eq!(e["exception_message"], format!("{msg}\n"), "{class}");
    }
}

/// KSampler on the patched model samples over ComfyUI's schedule for that model sampling:
/// its latent is bit-identical to SamplerCustom's over the golden sigmas, and differs from
/// KSampler on the unpatched model.
#[test]
fn ksampler_uses_the_patched_schedule() {
    let (_d, env, reg) = setup();
    for (kind, p, sched) in [
        (
            "sd3_node_shift3",
            patch("ModelSamplingSD3", json!({"shift": 3.0})),
            "normal",
        ),
        (
            "flux_node_1024x1024",
            patch(
                "ModelSamplingFlux",
                json!({"max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024}),
            ),
            "simple",
        ),
        (
            "discrete_v_zsnr",
            patch(
                "ModelSamplingDiscrete",
                json!({"sampling": "v_prediction", "zsnr": true}),
            ),
            "karras",
        ),
    ] {
        let common = |model: Json| {
            json!({
                "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
                "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
                "3": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 4, "cfg": 5.0,
                      "sampler_name": "euler", "scheduler": sched, "denoise": 1.0, "model": model,
                      "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
                "8": {"class_type": "ProbeLatent", "inputs": {"samples": ["3", 0]}},
                "20": {"class_type": "GoldenSigmas", "inputs": {"kind": kind, "key": format!("{sched}/4")}},
                "21": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
                "22": {"class_type": "SamplerCustom", "inputs": {"model": ["2", 0], "add_noise": true,
                      "noise_seed": 3, "cfg": 5.0, "positive": ["6", 0], "negative": ["7", 0],
                      "sampler": ["21", 0], "sigmas": ["20", 0], "latent_image": ["5", 0]}},
                "23": {"class_type": "ProbeLatent", "inputs": {"samples": ["22", 0]}}
            })
        };
        let patched = run(&reg, &env, &graph(p.clone(), common(json!(["2", 0]))));
        ok(&patched);
        let ks = &patched.outputs["8"]["bits"];
        assert_eq!(
            ks, &patched.outputs["23"]["bits"],
            "{kind}: KSampler vs golden sigmas"
        );
        let plain = run(&reg, &env, &graph(p, common(json!(["1", 0]))));
        ok(&plain);
        assert_ne!(
            ks, &plain.outputs["8"]["bits"],
            "{kind}: the patch changed nothing"
        );
    }
}
