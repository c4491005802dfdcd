//! The custom-sampling sampler, scheduler and sigma nodes of `nodes/custom_sampling.rs`
//! against ComfyUI's own nodes:
//!
//! * `/object_info` equals ComfyUI a125cd84's (`tests/data/object_info_custom_sampling.json`,
//!   from its server via `scripts/goldens/gen_object_info.py`);
//! * every output below is compared with `tests/data/custom_sampling_golden.json`, written by
//!   `scripts/goldens/gen_custom_sampling_goldens.py`, which runs ComfyUI's node functions:
//!   scheduler tables and sigma edits within 1e-6 relative, SamplingPercentToSigma within
//!   1e-6, and each sampler node's SAMPLER run on the toy denoiser (as the toy sampler goldens)
//!   within 1e-5 of the output's scale.
//!
//! Each case runs as a real workflow on the tiny SD1.5 fixture (`ModelSamplingFlux` at
//! 1024×1024 makes the Flux 1.15 sampling); probe nodes registered here expose SIGMAS, FLOAT
//! and a SAMPLER's toy run as UI output, and `GoldenTable` feeds the golden's input tables.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::node::types::Latent;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    Value,
};
use comfyrs::nodes::sd_types::{SamplerPayload, SdModel, Sigmas};
use comfyrs::prompt::prepare;
use comfyrs::sampling::noise::prepare_noise;
use comfyrs::sampling::samplers::{finish_latent, initial_latent, sample, Denoiser, SampleOptions};
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Map, Value as Json};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn golden() -> &'static Json {
    static G: OnceLock<Json> = OnceLock::new();
    G.get_or_init(|| {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/custom_sampling_golden.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    })
}

fn f32s(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| match x {
            Json::String(s) => s.parse::<f32>().unwrap(),
            _ => x.as_f64().unwrap() as f32,
        })
        .collect()
}

fn sigmas_json(s: &[f32]) -> Json {
    json!(s
        .iter()
        .map(|v| if v.is_finite() {
            json!(*v as f64)
        } else {
            json!(v.to_string())
        })
        .collect::<Vec<_>>())
}

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
        ui.insert("sigmas".into(), sigmas_json(&s.0));
        Ok(NodeOutput::ui(ui))
    }
}

struct ProbeFloat;
impl Node for ProbeFloat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ProbeFloat")
            .input(InputSpec::float("value"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut ui = Map::new();
        ui.insert("value".into(), json!([i.float("value")?]));
        Ok(NodeOutput::ui(ui))
    }
}

/// SIGMAS from `sigma_edits.tables.<name>`.
struct GoldenTable;
impl Node for GoldenTable {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("GoldenTable")
            .input(InputSpec::string("name"))
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = f32s(&golden()["sigma_edits"]["tables"][i.string("name")?]);
        Ok(NodeOutput::one(Value::object(Sigmas(s))))
    }
}

/// The toy model of the sampler goldens (cond x/(1+σ²), uncond x/(2+σ²), CFG at `cfg`).
struct Toy {
    cfg: f32,
}
impl Toy {
    fn parts(x: &Tensor, sigma: f64) -> (Vec<f32>, Vec<f32>) {
        let s = sigma as f32;
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (
            v.iter().map(|a| a / (1.0 + s * s)).collect(),
            v.iter().map(|a| a / (2.0 + s * s)).collect(),
        )
    }
}
impl Denoiser for Toy {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        Tensor::from_vec(Toy::parts(x, sigma).0, x.dims(), x.device())
    }
    fn denoise_with_uncond(
        &mut self,
        x: &Tensor,
        sigma: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (c, u) = Toy::parts(x, sigma);
        let g: Vec<f32> = c
            .iter()
            .zip(&u)
            .map(|(c, u)| u + (c - u) * self.cfg)
            .collect();
        Ok((
            Tensor::from_vec(g, x.dims(), x.device())?,
            Tensor::from_vec(u, x.dims(), x.device())?,
        ))
    }
}

/// Runs a SAMPLER on the toy model over `samplers.<table>.sigmas` with the MODEL's sampling
/// (the golden's setup) and returns the output's f32 bits.
struct ProbeToySampler;
impl Node for ProbeToySampler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ProbeToySampler")
            .input(InputSpec::of("sampler", "SAMPLER"))
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::string("table"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let sampler = i.object::<SamplerPayload>("sampler")?;
        let model = i.object::<SdModel>("model")?;
        let g = &golden()["samplers"];
        let sigmas = f32s(&g[i.string("table")?]["sigmas"]);
        let ms = &model.sampling;
        let shape = [1usize, 4, 4, 4];
        let noise = prepare_noise(&shape, 0, None)?;
        let latent = Tensor::zeros(&shape[..], DType::F32, &Device::Cpu)?;
        let x = initial_latent(ms, &sigmas, &noise, &latent)?;
        let mut opts = SampleOptions::new(0).with_model_sampling(ms);
        opts.extra = sampler.1;
        let mut den = Toy {
            cfg: g["cfg_pp_scale"].as_f64().unwrap() as f32,
        };
        let out = sample(sampler.0, &mut den, &x, &sigmas, &mut opts)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        let out = finish_latent(ms, &sigmas, &out)?;
        let bits: Vec<u32> = out
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let mut ui = Map::new();
        ui.insert("bits".into(), json!(bits));
        Ok(NodeOutput::ui(ui))
    }
}

/// LATENT `add_noise.latent` of the golden ("random") or zeros [1, 4, 4, 4].
struct GoldenLatent;
impl Node for GoldenLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("GoldenLatent")
            .input(InputSpec::string("which"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let v: Vec<f32> = if i.string("which")? == "random" {
            hexes(&golden()["add_noise"]["latent"])
        } else {
            vec![0.0; 64]
        };
        let t = Tensor::from_vec(v, (1, 4, 4, 4), &Device::Cpu)?;
        Ok(NodeOutput::one(Value::object(Latent::new(t))))
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

fn hexes(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
        .collect()
}

fn setup() -> (tempfile::TempDir, Arc<Environment>, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut reg = Registry::with_builtin_nodes();
    reg.register(ProbeSigmas).unwrap();
    reg.register(ProbeFloat).unwrap();
    reg.register(GoldenTable).unwrap();
    reg.register(ProbeToySampler).unwrap();
    reg.register(GoldenLatent).unwrap();
    reg.register(ProbeLatent).unwrap();
    (dir, Arc::new(Environment::new(paths)), Arc::new(reg))
}

fn run(reg: &Arc<Registry>, env: &Arc<Environment>, prompt: &Json) -> RunOutcome {
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&prompt.to_string()).unwrap();
    let valid =
        prepare(wf, &Overrides::default(), reg, env, None).unwrap_or_else(|e| panic!("{e:?}"));
    let out = exec.run("t", &valid, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    out
}

/// The tiny SD1.5 checkpoint ("m", EPS) and the same with ModelSamplingFlux at 1024² ("f",
/// Flux shift 1.15).
fn models() -> Json {
    json!({
        "m": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "f": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["m", 0], "max_shift": 1.15,
              "base_shift": 0.5, "width": 1024, "height": 1024}}
    })
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        let rel = ((*g as f64 - *w as f64) / (*w as f64).abs().max(1e-30)).abs();
        assert!(
            rel <= tol,
            "{what}[{k}]: {g} vs ComfyUI {w} ({got:?} vs {want:?})"
        );
    }
}

#[test]
fn object_info_matches_comfyui() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/object_info_custom_sampling.json"
    );
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (_d, env, reg) = setup();
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 26);
    for (class, info) in classes {
        let ours = reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&env);
        assert_eq!(&ours, info, "{class}");
    }
}

/// One workflow node per golden key: `key` split by "/" gives the class and its inputs.
fn scheduler_node(key: &str) -> Json {
    let p: Vec<&str> = key.split('/').collect();
    let f = |k: usize| p[k].parse::<f64>().unwrap();
    let n = |k: usize| p[k].parse::<i64>().unwrap();
    let model = |k: usize| {
        if p[k] == "eps" {
            json!(["m", 0])
        } else {
            json!(["f", 0])
        }
    };
    let inputs = match p[0] {
        "KarrasScheduler" => {
            json!({"steps": n(1), "sigma_max": f(2), "sigma_min": f(3), "rho": f(4)})
        }
        "ExponentialScheduler" => json!({"steps": n(1), "sigma_max": f(2), "sigma_min": f(3)}),
        "PolyexponentialScheduler" => {
            json!({"steps": n(1), "sigma_max": f(2), "sigma_min": f(3), "rho": f(4)})
        }
        "LaplaceScheduler" => json!({"steps": n(1), "sigma_max": f(2), "sigma_min": f(3),
                                     "mu": f(4), "beta": f(5)}),
        "VPScheduler" => json!({"steps": n(1), "beta_d": f(2), "beta_min": f(3), "eps_s": f(4)}),
        "BetaSamplingScheduler" => {
            json!({"model": model(1), "steps": n(2), "alpha": f(3), "beta": f(4)})
        }
        "AlignYourStepsScheduler" | "OptimalStepsScheduler" => {
            json!({"model_type": p[1], "steps": n(2), "denoise": f(3)})
        }
        other => panic!("{other}"),
    };
    json!({"class_type": p[0], "inputs": inputs})
}

#[test]
fn scheduler_nodes_match_comfyui() {
    let (_d, env, reg) = setup();
    let g = golden()["schedulers"].as_object().unwrap();
    let mut p = models();
    let mut probes = Vec::new();
    for (k, (key, _)) in g.iter().enumerate() {
        p[format!("s{k}")] = scheduler_node(key);
        p[format!("p{k}")] =
            json!({"class_type": "ProbeSigmas", "inputs": {"sigmas": [format!("s{k}"), 0]}});
        probes.push((key.clone(), format!("p{k}")));
    }
    let out = run(&reg, &env, &p);
    for (key, id) in &probes {
        let got = f32s(&out.outputs[id]["sigmas"]);
        assert_close(key, &got, &f32s(&g[key]), 1e-6);
    }
    assert_eq!(probes.len(), 150);
}

#[test]
fn sigma_nodes_match_comfyui() {
    let (_d, env, reg) = setup();
    let g = golden()["sigma_edits"].as_object().unwrap();
    let mut p = json!({});
    let mut probes = Vec::new();
    for (k, (key, want)) in g.iter().enumerate() {
        if key == "tables" {
            continue;
        }
        let parts: Vec<&str> = key.split('/').collect();
        let table = format!("t{k}");
        p[&table] = json!({"class_type": "GoldenTable", "inputs": {"name": parts[1]}});
        let src = json!([table, 0]);
        let inputs = match parts[0] {
            "SplitSigmas" => json!({"sigmas": src, "step": parts[2].parse::<i64>().unwrap()}),
            "SplitSigmasDenoise" => {
                json!({"sigmas": src, "denoise": parts[2].parse::<f64>().unwrap()})
            }
            "FlipSigmas" => json!({"sigmas": src}),
            "SetFirstSigma" => json!({"sigmas": src, "sigma": 136.0}),
            "ExtendIntermediateSigmas" => json!({"sigmas": src,
                "steps": parts[2].parse::<i64>().unwrap(),
                "start_at_sigma": parts[3].parse::<f64>().unwrap(),
                "end_at_sigma": parts[4].parse::<f64>().unwrap(), "spacing": parts[5]}),
            other => panic!("{other}"),
        };
        let node = format!("n{k}");
        p[&node] = json!({"class_type": parts[0], "inputs": inputs});
        let outs = if want
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|v| v.is_array())
        {
            2
        } else {
            1
        };
        for o in 0..outs {
            let id = format!("p{k}_{o}");
            p[&id] = json!({"class_type": "ProbeSigmas", "inputs": {"sigmas": [node, o]}});
            let w = if outs == 2 {
                want[o].clone()
            } else {
                want.clone()
            };
            probes.push((format!("{key} output {o}"), id, w));
        }
    }
    let out = run(&reg, &env, &p);
    for (what, id, want) in &probes {
        let (got, want) = (f32s(&out.outputs[id]["sigmas"]), f32s(want));
        if what.starts_with("ExtendIntermediateSigmas") {
            // The cosine / sine spacings go through torch's vectorised float32 sin / cos (one
            // ulp from the correctly rounded value), which `k·(next − cur) + cur` can turn
            // into ~1e-6 relative near a small sigma: compared within 1e-6 of the table's
            // largest sigma instead.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            assert_eq!(got.len(), want.len(), "{what}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - *w as f64).abs() <= 1e-6 * scale,
                    "{what}: {got:?} vs {want:?}"
                );
            }
        } else {
            assert_close(what, &got, &want, 1e-6);
        }
    }
    assert!(probes.len() > 60);
}

#[test]
fn sampling_percent_to_sigma_matches_comfyui() {
    let (_d, env, reg) = setup();
    let g = golden()["percent_to_sigma"].as_object().unwrap();
    let mut p = models();
    let mut probes = Vec::new();
    for (k, (key, want)) in g.iter().enumerate() {
        let parts: Vec<&str> = key.split('/').collect();
        let model = if parts[0] == "discrete_eps" { "m" } else { "f" };
        p[format!("n{k}")] = json!({"class_type": "SamplingPercentToSigma", "inputs": {
            "model": [model, 0], "sampling_percent": parts[1].parse::<f64>().unwrap(),
            "return_actual_sigma": parts[2] == "True"}});
        p[format!("p{k}")] =
            json!({"class_type": "ProbeFloat", "inputs": {"value": [format!("n{k}"), 0]}});
        probes.push((key.clone(), format!("p{k}"), want.as_f64().unwrap()));
    }
    let out = run(&reg, &env, &p);
    for (key, id, want) in probes {
        let got = out.outputs[&id]["value"][0].as_f64().unwrap();
        let rel = ((got - want) / want.abs().max(1e-30)).abs();
        assert!(got == want || rel <= 1e-6, "{key}: {got} vs ComfyUI {want}");
    }
}

/// A sampler node of the golden key `Class/input/input/...`.
fn sampler_node(key: &str, model: &str) -> Json {
    let p: Vec<&str> = key.split('/').collect();
    let f = |k: usize| p[k].parse::<f64>().unwrap();
    let n = |k: usize| p[k].parse::<i64>().unwrap();
    let b = |k: usize| p[k] == "True";
    let inputs = match p[0] {
        "SamplerEulerAncestral" | "SamplerEulerAncestralCFGPP" | "SamplerDPMPP_2S_Ancestral" => {
            json!({"eta": f(1), "s_noise": f(2)})
        }
        "SamplerLMS" => json!({"order": n(1)}),
        "SamplerDPMPP_3M_SDE" => json!({"eta": f(1), "s_noise": f(2), "noise_device": p[3]}),
        "SamplerDPMPP_2M_SDE" => json!({"solver_type": p[1], "eta": f(2), "s_noise": f(3),
                                        "noise_device": p[4]}),
        "SamplerDPMPP_SDE" => {
            json!({"eta": f(1), "s_noise": f(2), "r": f(3), "noise_device": p[4]})
        }
        "SamplerDPMAdaptative" => json!({"order": n(1), "rtol": f(2), "atol": f(3), "h_init": f(4),
            "pcoeff": f(5), "icoeff": f(6), "dcoeff": f(7), "accept_safety": f(8), "eta": f(9),
            "s_noise": f(10)}),
        "SamplerER_SDE" => {
            json!({"solver_type": p[1], "max_stage": n(2), "eta": f(3), "s_noise": f(4)})
        }
        "SamplerSASolver" => json!({"model": [model, 0], "eta": f(1), "sde_start_percent": f(2),
            "sde_end_percent": f(3), "s_noise": f(4), "predictor_order": n(5),
            "corrector_order": n(6), "use_pece": b(7), "simple_order_2": b(8)}),
        "SamplerEulerCFGpp" => json!({"version": p[1]}),
        other => panic!("{other}"),
    };
    json!({"class_type": p[0], "inputs": inputs})
}

#[test]
fn sampler_nodes_match_comfyui_on_the_toy_model() {
    let (_d, env, reg) = setup();
    let g = &golden()["samplers"];
    let mut p = models();
    let mut probes = Vec::new();
    let mut k = 0;
    for (table, model) in [("discrete_eps", "m"), ("flux_1.15", "f")] {
        for (key, want) in g[table].as_object().unwrap() {
            if key == "scheduler" || key == "sigmas" {
                continue;
            }
            k += 1;
            p[format!("s{k}")] = sampler_node(key, model);
            p[format!("p{k}")] = json!({"class_type": "ProbeToySampler", "inputs": {
                "sampler": [format!("s{k}"), 0], "model": [model, 0], "table": table}});
            probes.push((format!("{table} {key}"), format!("p{k}"), want.clone()));
        }
    }
    assert_eq!(probes.len(), 36);
    let out = run(&reg, &env, &p);
    let mut failures = Vec::new();
    for (what, id, want) in probes {
        let got: Vec<f32> = out.outputs[&id]["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| f32::from_bits(v.as_u64().unwrap() as u32))
            .collect();
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
            .collect();
        let scale = want.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        eprintln!("{what:70} {:.2e} of scale", err / scale);
        if err / scale > 1e-5 || err.is_nan() {
            failures.push(format!("{what}: {:e}", err / scale));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn bad_sampler_inputs_are_node_errors() {
    let (_d, env, reg) = setup();
    let mut p = models();
    p["s"] = json!({"class_type": "SamplerDPMPP_SDE", "inputs": {"eta": 1.0, "s_noise": 1.0, "r": 0.0, "noise_device": "cpu"}});
    p["p"] = json!({"class_type": "ProbeToySampler", "inputs": {"sampler": ["s", 0], "model": ["m", 0], "table": "discrete_eps"}});
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&p.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), &reg, &env, None).unwrap();
    let out = exec.run("t", &valid, None, &Interrupt::new(), &NoEvents);
    match &out.status {
        RunStatus::Error(e) => {
            let s = e.to_string();
            assert!(
                s.contains("SamplerDPMPP_SDE") && s.contains("input 'r'"),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn add_noise_matches_comfyui() {
    let (_d, env, reg) = setup();
    let g = golden()["add_noise"].as_object().unwrap();
    let mut p = models();
    p["noise"] = json!({"class_type": "RandomNoise", "inputs": {"noise_seed": 5}});
    let mut probes = Vec::new();
    for (k, (key, want)) in g.iter().enumerate() {
        if key == "latent" {
            continue;
        }
        let (which, table) = key.split_once('/').unwrap();
        p[format!("l{k}")] = json!({"class_type": "GoldenLatent", "inputs": {"which": which}});
        p[format!("t{k}")] = json!({"class_type": "GoldenTable", "inputs": {"name": table}});
        p[format!("a{k}")] = json!({"class_type": "AddNoise", "inputs": {"model": ["m", 0],
            "noise": ["noise", 0], "sigmas": [format!("t{k}"), 0], "latent_image": [format!("l{k}"), 0]}});
        p[format!("p{k}")] =
            json!({"class_type": "ProbeLatent", "inputs": {"samples": [format!("a{k}"), 0]}});
        probes.push((key.clone(), format!("p{k}"), hexes(want)));
    }
    assert_eq!(probes.len(), 6);
    let out = run(&reg, &env, &p);
    for (key, id, want) in probes {
        let got: Vec<f32> = out.outputs[&id]["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| f32::from_bits(v.as_u64().unwrap() as u32))
            .collect();
        assert_eq!(got, want, "{key}");
    }
}
