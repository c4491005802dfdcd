//! Flux as a model family, end to end:
//!
//! * one sampling step through comfyrs's family-neutral MODEL (UNETLoader's loader, the
//!   Flux family's `extra_conds` with its default guidance, ModelSamplingFlux's CONST
//!   prediction) against ComfyUI's `model_base.Flux.apply_model` (tests/data/flux, made by
//!   `scripts/goldens/gen_flux_goldens.py`);
//! * the RunComfy quickstart's graph shape (UNETLoader, VAELoader, FluxGuidance,
//!   ModelSamplingFlux, EmptySD3LatentImage, KSamplerSelect, BasicScheduler, BasicGuider,
//!   RandomNoise, SamplerCustomAdvanced, VAEDecode) on the tiny Flux fixtures, the prompt
//!   encoded by DualCLIPLoader (type flux: T5-XXL + CLIP-L) and CLIPTextEncode;
//! * schnell with EmptyLatentImage's 4 channels (widened to 16) through KSampler, an odd
//!   latent size, FluxDisableGuidance, ReferenceLatent and the Kontext placement methods.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::component_files::load_diffusion_model;
use comfyrs::models::fixture::{
    TINY_CLIP_L_PATH, TINY_FLUX_PATH, TINY_FLUX_SCHNELL_PATH, TINY_FLUX_VAE_PATH, TINY_T5XXL_PATH,
};
use comfyrs::models::{Family, LatentFormat};
use comfyrs::node::types::Latent;
use comfyrs::node::Registry;
use comfyrs::nodes::sampling::run_sampler;
use comfyrs::nodes::sd_types::{model_payload, CondEntry, Conditioning};
use comfyrs::prompt::prepare;
use comfyrs::sampling::samplers::SamplerKind;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn one_step_matches_comfyui_model_base_flux() {
    let g = candle_core::safetensors::load(
        root().join("tests/data/flux/goldens.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let file = load_diffusion_model(
        &root().join("tests/data/flux/tiny_flux.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(file.family, Family::Flux);
    let model = model_payload(
        file.model.clone(),
        &file.weights,
        file.family,
        file.prediction,
    );
    // One euler step from σ = 0.6 to 0 on an all-zero latent returns the denoised
    // prediction at x = 0.6·noise (CONST noise scaling), in unscaled latent space.
    let x = g["dev.x"].narrow(0, 0, 1).unwrap();
    let noise = (&x / 0.6).unwrap();
    let ctx = g["dev.context"].narrow(0, 0, 1).unwrap();
    let y = g["dev.y"].narrow(0, 0, 1).unwrap();
    // No guidance key: the family's default (3.5) applies, as in ComfyUI's extra_conds.
    let positive = Conditioning(vec![CondEntry::new(ctx, Some(y))]);
    let latent = Latent {
        samples: x.zeros_like().unwrap(),
        noise_mask: None,
        batch_index: None,
    };
    let (out, _) = run_sampler(
        None,
        &model,
        &positive,
        None,
        1.0,
        SamplerKind::Euler,
        &[0.6, 0.0],
        &latent,
        &noise,
        0,
    )
    .unwrap();
    let expected = LatentFormat::flux()
        .process_out(&g["step.denoised"])
        .unwrap();
    let d = max_diff(&out, &expected);
    assert!(d < 5e-5, "max |Δ| {d}");
}

fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (d, p) in [
        ("diffusion_models", TINY_FLUX_PATH),
        ("diffusion_models", TINY_FLUX_SCHNELL_PATH),
        ("vae", TINY_FLUX_VAE_PATH),
        ("text_encoders", TINY_T5XXL_PATH),
        ("text_encoders", TINY_CLIP_L_PATH),
    ] {
        std::fs::create_dir_all(models.join(d)).unwrap();
        let name = Path::new(p).file_name().unwrap();
        std::fs::copy(root().join(p), models.join(d).join(name)).unwrap();
    }
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![models];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

fn run(env: &Arc<Environment>, prompt: &Json) -> Result<RunOutcome, String> {
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let wf = parse_workflow(&prompt.to_string()).map_err(|e| format!("{e:?}"))?;
    let valid =
        prepare(wf, &Overrides::default(), &reg, env, None).map_err(|e| format!("{e:?}"))?;
    let out = exec.run("p", &valid, None, &Interrupt::new(), &NoEvents);
    match &out.status {
        RunStatus::Success => Ok(out),
        s => Err(format!("{s:?}")),
    }
}

/// The saved image of node "9": (width, height, RGB bytes).
fn image(env: &Environment, out: &RunOutcome) -> (u32, u32, Vec<u8>) {
    let name = out.outputs["9"]["images"][0]["filename"].as_str().unwrap();
    let img = image::open(env.paths.output.join(name)).unwrap().to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

/// ComfyUI's flux_dev_example graph (node ids as in the quickstart) at `w`×`h`, 3 steps.
fn quickstart(w: i64, h: i64) -> Json {
    json!({
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "a red fox in the snow", "clip": ["11", 0]}},
        "11": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "tiny_t5xxl.safetensors", "clip_name2": "tiny_clip_l.safetensors",
            "type": "flux"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["10", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["8", 0]}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_flux_vae.safetensors"}},
        "12": {"class_type": "UNETLoader", "inputs": {
            "unet_name": "tiny_flux.safetensors", "weight_dtype": "default"}},
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0],
            "sigmas": ["17", 0], "latent_image": ["27", 0]}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "BasicScheduler", "inputs": {
            "scheduler": "simple", "steps": 3, "denoise": 1.0, "model": ["30", 0]}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": ["30", 0], "conditioning": ["26", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": w, "height": h, "batch_size": 1}},
        "30": {"class_type": "ModelSamplingFlux", "inputs": {
            "max_shift": 1.15, "base_shift": 0.5, "width": w, "height": h, "model": ["12", 0]}}
    })
}

#[test]
fn quickstart_graph_runs_and_guidance_is_a_model_input() {
    let (_d, env) = setup();
    let (w, h, base) = image(&env, &run(&env, &quickstart(64, 48)).unwrap());
    assert_eq!((w, h), (64, 48));
    assert!(base.iter().any(|&v| v != base[0]), "a flat image");
    // The same graph again gives the same pixels.
    let again = image(&env, &run(&env, &quickstart(64, 48)).unwrap()).2;
    assert_eq!(again, base);

    // FluxGuidance 3.5 is what a conditioning without a guidance key gets.
    let mut no_key = quickstart(64, 48);
    no_key["22"]["inputs"]["conditioning"] = json!(["6", 0]);
    assert_eq!(image(&env, &run(&env, &no_key).unwrap()).2, base);
    // Another strength, or none at all, changes the image.
    let mut other = quickstart(64, 48);
    other["26"]["inputs"]["guidance"] = json!(1.0);
    assert_ne!(image(&env, &run(&env, &other).unwrap()).2, base);
    let mut disabled = quickstart(64, 48);
    disabled["31"] =
        json!({"class_type": "FluxDisableGuidance", "inputs": {"conditioning": ["6", 0]}});
    disabled["22"]["inputs"]["conditioning"] = json!(["31", 0]);
    assert_ne!(image(&env, &run(&env, &disabled).unwrap()).2, base);
    // The prompt matters.
    let mut prompt = quickstart(64, 48);
    prompt["6"]["inputs"]["text"] = json!("a grey wolf in the rain");
    assert_ne!(image(&env, &run(&env, &prompt).unwrap()).2, base);
}

#[test]
fn schnell_with_a_4_channel_empty_latent_and_an_odd_size() {
    let (_d, env) = setup();
    let graph = |w: i64, h: i64| {
        json!({
            "6": {"class_type": "CLIPTextEncode", "inputs": {
                "text": "a lighthouse at dusk", "clip": ["11", 0]}},
            "11": {"class_type": "DualCLIPLoader", "inputs": {
                "clip_name1": "tiny_t5xxl.safetensors", "clip_name2": "tiny_clip_l.safetensors",
                "type": "flux"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": w, "height": h, "batch_size": 1}},
            "12": {"class_type": "UNETLoader", "inputs": {
                "unet_name": "tiny_flux_schnell.safetensors", "weight_dtype": "default"}},
            "10": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_flux_vae.safetensors"}},
            "3": {"class_type": "KSampler", "inputs": {
                "seed": 5, "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                "denoise": 1.0, "model": ["12", 0], "positive": ["6", 0], "negative": ["6", 0],
                "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["10", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "schnell", "images": ["8", 0]}}
        })
    };
    let (w, h, px) = image(&env, &run(&env, &graph(64, 64)).unwrap());
    assert_eq!((w, h), (64, 64));
    assert!(px.iter().any(|&v| v != px[0]));
    // 72×40 px = a 9×5 latent: odd on both sides, padded circularly and cropped back.
    let (w, h, px) = image(&env, &run(&env, &graph(72, 40)).unwrap());
    assert_eq!((w, h), (72, 40));
    assert!(px.iter().any(|&v| v != px[0]));
}

#[test]
fn kontext_reference_latents_change_the_result() {
    let (_d, env) = setup();
    let base = image(&env, &run(&env, &quickstart(64, 64)).unwrap()).2;
    let with_ref = |method: Option<&str>| {
        let mut p = quickstart(64, 64);
        p["40"] = json!({"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 48, "batch_size": 1}});
        p["41"] = json!({"class_type": "ReferenceLatent", "inputs": {"conditioning": ["26", 0], "latent": ["40", 0]}});
        p["42"] = json!({"class_type": "ReferenceLatent", "inputs": {"conditioning": ["41", 0], "latent": ["40", 0]}});
        p["22"]["inputs"]["conditioning"] = json!(["42", 0]);
        if let Some(m) = method {
            p["43"] = json!({"class_type": "FluxKontextMultiReferenceLatentMethod", "inputs": {
                "conditioning": ["42", 0], "reference_latents_method": m}});
            p["22"]["inputs"]["conditioning"] = json!(["43", 0]);
        }
        image(&env, &run(&env, &p).unwrap()).2
    };
    let offset = with_ref(None);
    assert_ne!(offset, base);
    // "offset" is the default placement.
    assert_eq!(with_ref(Some("offset")), offset);
    assert_ne!(with_ref(Some("index")), offset);
    assert_ne!(with_ref(Some("uxo/uno")), offset);
    // ReferenceLatent without a latent leaves the conditioning as it is.
    let mut p = quickstart(64, 64);
    p["41"] = json!({"class_type": "ReferenceLatent", "inputs": {"conditioning": ["26", 0]}});
    p["22"]["inputs"]["conditioning"] = json!(["41", 0]);
    assert_eq!(image(&env, &run(&env, &p).unwrap()).2, base);
}

#[test]
fn flux_vae_has_16_channels_and_no_quant_convs() {
    let vae = comfyrs::models::load_vae(root().join(TINY_FLUX_VAE_PATH), &Device::Cpu, DType::F32)
        .unwrap();
    assert_eq!(vae.config().z_channels, 16);
    assert!(!vae.config().has_quant_conv);
    let img = Tensor::rand(0f32, 1f32, (1, 48, 64, 3), &Device::Cpu).unwrap();
    let z = vae.encode(&img).unwrap();
    assert_eq!(z.dims(), &[1, 16, 6, 8]);
    let back = vae.decode(&z).unwrap();
    assert_eq!(back.dims(), &[1, 48, 64, 3]);
}

/// Flux's `c_crossattn` is a `CONDRegular`: conds of different token lengths run as
/// separate model calls, where a UNet's `CONDCrossAttn` batches them (tokens repeated to
/// their LCM).
#[test]
fn flux_conds_of_different_lengths_are_not_batched() {
    use comfyrs::sampling::conds::{
        calc_cond_batch, prepare, CondInput, CondModel, CondOptions, ExtraCondInput, ModelConds,
        PrepareContext,
    };
    use comfyrs::sampling::model_sampling::ModelSampling;
    use std::cell::RefCell;

    struct Calls(RefCell<Vec<(usize, usize)>>);
    impl CondModel for Calls {
        fn apply(
            &self,
            x: &Tensor,
            _: f64,
            context: &Tensor,
            _: Option<&Tensor>,
            _: Option<&Tensor>,
        ) -> candle_core::Result<Tensor> {
            self.0.borrow_mut().push((x.dim(0)?, context.dim(1)?));
            x.zeros_like()
        }
    }
    let ms = ModelSampling::flux_dev();
    let shape = [1usize, 16, 4, 4];
    let x = Tensor::zeros(&shape, DType::F32, &Device::Cpu).unwrap();
    let long = Tensor::ones((1, 8, 4), DType::F32, &Device::Cpu).unwrap();
    let short = Tensor::ones((1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let opts = CondOptions::default();
    let list = vec![
        CondInput {
            cross_attn: &long,
            pooled: None,
            opts: &opts,
        },
        CondInput {
            cross_attn: &short,
            pooled: None,
            opts: &opts,
        },
    ];
    let process_in = |z: &Tensor| Ok(z.clone());
    for (regular, expected) in [(false, vec![(2, 8)]), (true, vec![(1, 8), (1, 4)])] {
        let hook = move |_: &ExtraCondInput| -> candle_core::Result<ModelConds> {
            Ok(ModelConds {
                regular_cross_attn: regular,
                ..ModelConds::default()
            })
        };
        let ctx = PrepareContext {
            shape,
            sampling: &ms,
            latent_image: &x,
            denoise_mask: None,
            inpaint_model: false,
            extra_conds: Some(&hook),
            process_in: &process_in,
        };
        let prepared = prepare(std::slice::from_ref(&list), &ctx).unwrap();
        let model = Calls(RefCell::new(Vec::new()));
        calc_cond_batch(&model, &[Some(prepared.lists[0].as_slice())], &x, 0.5).unwrap();
        assert_eq!(
            model.0.into_inner(),
            expected,
            "regular cross-attn {regular}"
        );
    }
}

#[test]
fn a_flux_lora_without_usable_keys_is_a_node_error_naming_the_family() {
    let (_d, env) = setup();
    let loras = env.paths.model_roots[0].join("loras");
    std::fs::create_dir_all(&loras).unwrap();
    let lora: std::collections::HashMap<String, Tensor> = [(
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight".to_string(),
        Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap(),
    )]
    .into();
    candle_core::safetensors::save(&lora, loras.join("flux_lora.safetensors")).unwrap();
    let mut p = quickstart(64, 64);
    p["50"] = json!({"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["12", 0], "lora_name": "flux_lora.safetensors", "strength_model": 1.0}});
    p["30"]["inputs"]["model"] = json!(["50", 0]);
    let err = run(&env, &p).unwrap_err();
    // A lone lora_down has no lora_up: nothing in the file patches the model.
    assert!(
        err.contains("has no key that matches this Flux model"),
        "{err}"
    );
}
