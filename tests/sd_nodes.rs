//! SD1.x nodes end to end on the tiny fixture checkpoint: the demo workflow, determinism,
//! caching, clip skip, object_info shapes, interrupts and loader errors.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Event, Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::node::{NodeError, Registry};
use comfyrs::nodes::loaders::model_path;
use comfyrs::nodes::sd_types::ModelCache;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

fn demo() -> Json {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/tiny_txt2img.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run_with(
    exec: &Executor,
    reg: &Registry,
    env: &Environment,
    prompt: &Json,
    id: &str,
    interrupt: &Interrupt,
    events: &dyn comfyrs::exec::EventSink,
) -> RunOutcome {
    let wf = parse_workflow(&prompt.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), reg, env, None).unwrap();
    exec.run(id, &valid, None, interrupt, events)
}

fn run(exec: &Executor, reg: &Registry, env: &Environment, prompt: &Json, id: &str) -> RunOutcome {
    let out = run_with(exec, reg, env, prompt, id, &Interrupt::new(), &NoEvents);
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    out
}

fn saved(env: &Environment, out: &RunOutcome) -> (PathBuf, Vec<u8>) {
    let name = out.outputs["7"]["images"][0]["filename"].as_str().unwrap();
    let p = env.paths.output.join(name);
    let img = image::open(&p).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    (p, img.into_raw())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn demo_runs_deterministically_and_reruns_only_the_sampler_chain() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d1, env1) = setup();
    let exec1 = Executor::new(reg.clone(), env1.clone(), ExecutorConfig::default());
    let prompt = demo();
    let out1 = run(&exec1, &reg, &env1, &prompt, "a");
    assert_eq!(out1.executed.len(), 7);
    let (p1, px1) = saved(&env1, &out1);
    // Not a flat image.
    assert!(px1.iter().any(|&v| v != px1[0]));

    // A fresh executor and environment: the same seed gives the same file, byte for byte.
    let (_d2, env2) = setup();
    let exec2 = Executor::new(reg.clone(), env2.clone(), ExecutorConfig::default());
    let out2 = run(&exec2, &reg, &env2, &prompt, "b");
    let (p2, px2) = saved(&env2, &out2);
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    assert_eq!(px1, px2);

    // Only a new seed: KSampler, VAEDecode and SaveImage run again; the checkpoint is not
    // re-read.
    let loads = env1.resources.get_or_default::<ModelCache>().loads();
    assert_eq!(loads, 1);
    let mut p = prompt.clone();
    p["5"]["inputs"]["seed"] = json!(43);
    let out3 = run(&exec1, &reg, &env1, &p, "c");
    assert_eq!(sorted(out3.executed.clone()), vec!["5", "6", "7"]);
    let (_, px3) = saved(&env1, &out3);
    assert_ne!(px1, px3);

    // With the output cache cleared, the loader runs again but the model cache serves it.
    exec1.clear_cache();
    let out4 = run(&exec1, &reg, &env1, &prompt, "d");
    assert!(out4.executed.contains(&"1".to_string()));
    assert_eq!(env1.resources.get_or_default::<ModelCache>().loads(), 1);
    assert_eq!(saved(&env1, &out4).1, px1);
}

#[test]
fn clip_skip_changes_the_output() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let prompt = demo();
    let (_, base) = saved(&env, &run(&exec, &reg, &env, &prompt, "a"));
    let mut p = prompt.clone();
    p["8"] = json!({"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}});
    p["2"]["inputs"]["clip"] = json!(["8", 0]);
    p["3"]["inputs"]["clip"] = json!(["8", 0]);
    let (_, skipped) = saved(&env, &run(&exec, &reg, &env, &p, "b"));
    assert_ne!(base, skipped);
    // -1 is the last layer: identical to no CLIPSetLastLayer.
    p["8"]["inputs"]["stop_at_clip_layer"] = json!(-1);
    let (_, last) = saved(&env, &run(&exec, &reg, &env, &p, "c"));
    assert_eq!(base, last);
}

#[test]
fn img2img_and_advanced_and_custom_sampling_run() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let mut p = demo();
    // img2img: encode the txt2img result and resample at denoise 0.5.
    p["10"] = json!({"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 2]}});
    p["11"] = json!({"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["1", 0], "add_noise": "enable", "noise_seed": 5, "steps": 6, "cfg": 1.0,
        "sampler_name": "euler_ancestral", "scheduler": "karras", "positive": ["2", 0],
        "negative": ["3", 0], "latent_image": ["10", 0], "start_at_step": 3, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}});
    p["12"] = json!({"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}});
    p["13"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}});
    p["20"] = json!({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}});
    p["21"] = json!({"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 4, "denoise": 1.0}});
    p["22"] = json!({"class_type": "RandomNoise", "inputs": {"noise_seed": 42}});
    p["23"] = json!({"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 7.0}});
    p["24"] = json!({"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["22", 0], "guider": ["23", 0], "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["4", 0]}});
    p["25"] = json!({"class_type": "VAEDecode", "inputs": {"samples": ["24", 1], "vae": ["1", 2]}});
    p["26"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["25", 0]}});
    let out = run(&exec, &reg, &env, &p, "a");
    assert_eq!(out.outputs["13"]["images"].as_array().unwrap().len(), 1);
    assert_eq!(out.outputs["26"]["images"].as_array().unwrap().len(), 1);

    // KSamplerAdvanced with start past the end returns the input latent; KSampler with the
    // same settings as SamplerCustom (euler, normal) agrees with it.
    let mut q = demo();
    q["20"] = json!({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}});
    q["21"] = json!({"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 6, "denoise": 1.0}});
    q["24"] = json!({"class_type": "SamplerCustom", "inputs": {"model": ["1", 0], "add_noise": true, "noise_seed": 42, "cfg": 7.0, "positive": ["2", 0], "negative": ["3", 0], "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["4", 0]}});
    q["25"] = json!({"class_type": "VAEDecode", "inputs": {"samples": ["24", 0], "vae": ["1", 2]}});
    q["26"] = json!({"class_type": "SaveImage", "inputs": {"images": ["25", 0], "filename_prefix": "custom"}});
    let out = run(&exec, &reg, &env, &q, "b");
    let (_, a) = saved(&env, &out);
    let name = out.outputs["26"]["images"][0]["filename"].as_str().unwrap();
    let b = image::open(env.paths.output.join(name))
        .unwrap()
        .to_rgb8()
        .into_raw();
    assert_eq!(a, b);
}

#[test]
fn object_info_matches_comfyui() {
    let reg = Registry::with_builtin_nodes();
    let (_d, env) = setup();
    let info = |c: &str| reg.schema(c).unwrap().object_info(&env);
    let samplers: Vec<Json> = comfyrs::sampling::samplers::SamplerKind::NAMES
        .iter()
        .map(|s| json!(s))
        .collect();
    assert_eq!(samplers.len(), 42);
    let ks = info("KSampler");
    assert_eq!(
        ks["input"]["required"],
        json!({
            "model": ["MODEL", {"tooltip": "The model used for denoising the input latent."}],
            "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615u64, "control_after_generate": true, "tooltip": "The random seed used for creating the noise."}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."}],
            "sampler_name": [samplers, {"tooltip": "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output."}],
            "scheduler": [["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal"], {"tooltip": "The scheduler controls how noise is gradually removed to form the image."}],
            "positive": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to include in the image."}],
            "negative": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to exclude from the image."}],
            "latent_image": ["LATENT", {"tooltip": "The latent image to denoise."}],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."}]
        })
    );
    assert_eq!(
        ks["input_order"],
        json!({"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image", "denoise"]})
    );
    for (k, v) in [
        ("output", json!(["LATENT"])),
        ("output_is_list", json!([false])),
        ("output_name", json!(["LATENT"])),
        ("name", json!("KSampler")),
        ("display_name", json!("KSampler")),
        ("description", json!("Uses the provided model, positive and negative conditioning to denoise the latent image.")),
        ("python_module", json!("nodes")),
        ("category", json!("sampling")),
        ("output_node", json!(false)),
        ("output_tooltips", json!(["The denoised latent."])),
    ] {
        assert_eq!(ks[k], v, "KSampler {k}");
    }

    let ck = info("CheckpointLoaderSimple");
    assert_eq!(
        ck,
        json!({
            "input": {"required": {"ckpt_name": [["tiny_flux_dev_fp8.safetensors", "tiny_sd15.safetensors", "tiny_sd35_medium.safetensors", "tiny_sdxl.safetensors", "tiny_sdxl_refiner.safetensors"], {"tooltip": "The name of the checkpoint (model) to load."}]}},
            "input_order": {"required": ["ckpt_name"]},
            "output": ["MODEL", "CLIP", "VAE"],
            "output_is_list": [false, false, false],
            "output_name": ["MODEL", "CLIP", "VAE"],
            "name": "CheckpointLoaderSimple",
            "display_name": "Load Checkpoint",
            "description": "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            "python_module": "nodes",
            "category": "loaders",
            "output_node": false,
            "output_tooltips": ["The model used for denoising latents.", "The CLIP model used for encoding text prompts.", "The VAE model used for encoding and decoding images to and from latent space."]
        })
    );

    let te = info("CLIPTextEncode");
    assert_eq!(
        te,
        json!({
            "input": {"required": {
                "text": ["STRING", {"multiline": true, "dynamicPrompts": true, "tooltip": "The text to be encoded."}],
                "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}]
            }},
            "input_order": {"required": ["text", "clip"]},
            "output": ["CONDITIONING"],
            "output_is_list": [false],
            "output_name": ["CONDITIONING"],
            "name": "CLIPTextEncode",
            "display_name": "CLIP Text Encode (Prompt)",
            "description": "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.",
            "python_module": "nodes",
            "category": "conditioning",
            "output_node": false,
            "output_tooltips": ["A conditioning containing the embedded text used to guide the diffusion model."]
        })
    );
    let el = info("EmptyLatentImage");
    assert_eq!(
        el["input"]["required"]["width"],
        json!(["INT", {"default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": "The width of the latent images in pixels."}])
    );
    let csl = info("CLIPSetLastLayer");
    assert_eq!(
        csl["input"]["required"]["stop_at_clip_layer"],
        json!(["INT", {"default": -1, "min": -24, "max": -1, "step": 1}])
    );
    assert_eq!(csl["display_name"], "CLIP Set Last Layer");
    let vl = info("VAELoader");
    assert_eq!(
        vl["input"]["required"]["vae_name"],
        json!([["tiny_flux_vae.safetensors", "pixel_space"]])
    );
    let adv = info("KSamplerAdvanced");
    assert_eq!(
        adv["input"]["required"]["add_noise"],
        json!([["enable", "disable"]])
    );
    assert_eq!(adv["display_name"], "KSampler (Advanced)");
}

#[test]
fn interrupt_during_ksampler_ends_as_execution_interrupted() {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let (_d, env) = setup();
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let interrupt = Interrupt::new();
    let trig = interrupt.clone();
    let steps = AtomicU64::new(0);
    let progress: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());
    let events = |e: Event| {
        if let Event::Progress {
            node, value, max, ..
        } = e
        {
            progress.lock().unwrap().push((node.clone(), value, max));
            if node == "5" && steps.fetch_add(1, Ordering::SeqCst) == 1 {
                trig.trigger();
            }
        }
    };
    let out = run_with(&exec, &reg, &env, &demo(), "x", &interrupt, &events);
    let RunStatus::Interrupted(data) = &out.status else {
        panic!("{:?}", out.status)
    };
    assert_eq!(data["node_id"], "5");
    assert_eq!(data["node_type"], "KSampler");
    let p = progress.lock().unwrap();
    assert_eq!(p[0], ("5".to_string(), 1, 6));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(!out.executed.contains(&"5".to_string()));
}

#[test]
fn missing_and_bad_checkpoints_are_clear_errors() {
    let (_d, env) = setup();
    let err = model_path(&env, "checkpoints", "nope.safetensors").unwrap_err();
    assert_eq!(
        err,
        NodeError::Failed {
            message: "Model in folder 'checkpoints' with filename 'nope.safetensors' not found."
                .into(),
            exception_type: "FileNotFoundError".into()
        }
    );
    // A file that is not a checkpoint: the models' error comes through the node.
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("junk.safetensors"), b"not a safetensors file").unwrap();
    let mut paths = env.paths.clone();
    paths.model_roots = vec![dir.path().to_path_buf()];
    let env = Arc::new(Environment::new(paths));
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let mut p = demo();
    p["1"]["inputs"]["ckpt_name"] = json!("junk.safetensors");
    let out = run_with(&exec, &reg, &env, &p, "e", &Interrupt::new(), &NoEvents);
    let RunStatus::Error(data) = &out.status else {
        panic!("{:?}", out.status)
    };
    assert_eq!(data["node_id"], "1");
    let msg = data["exception_message"].as_str().unwrap();
    assert!(
        msg.contains("junk.safetensors") && msg.contains("not a safetensors file"),
        "{msg}"
    );
}
