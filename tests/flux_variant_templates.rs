//! ComfyUI's official Flux variant templates (comfyui-workflow-templates 0.1.95, in
//! tests/data/ui_workflows/templates) converted to API form by comfyrs's converter (what
//! `comfyrs convert` runs) and executed on the tiny fixtures, saved under the file names the
//! templates load (`flux1-fill-dev.safetensors`, `ae.safetensors`, `clip_l.safetensors`, ...):
//!
//! * `flux_fill_inpaint_example` / `flux_fill_outpaint_example`: UNETLoader of a 96-channel
//!   Fill model, DifferentialDiffusion, InpaintModelConditioning (and ImagePadForOutpaint);
//! * `flux_canny_model_example`: Canny → InstructPixToPixConditioning → a 32-channel model;
//! * `flux_depth_lora_example`: the dev model with a BFL control LoRA (LoraLoaderModelOnly
//!   widens img_in to 32 channels) and InstructPixToPixConditioning;
//! * `flux_kontext_dev_basic`: LoadImageOutput → ImageStitch → FluxKontextImageScale →
//!   VAEEncode → ReferenceLatent on the dev model.
//!
//! Only the step count is lowered (20 → 2) to keep the runs short. Each run must succeed,
//! give the image size ComfyUI's nodes give, and react to the input the variant adds (the
//! mask, the control image, the reference image). `/object_info` of the new classes equals
//! ComfyUI 0.3.64's.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::fixture::{
    TINY_CLIP_L_PATH, TINY_FLUX_CANNY_PATH, TINY_FLUX_FILL_PATH, TINY_FLUX_PATH,
    TINY_FLUX_VAE_PATH, TINY_T5XXL_FP8_SCALED_PATH, TINY_T5XXL_PATH,
};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::workflow::ui::convert_ui_workflow;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn templates() -> PathBuf {
    root().join("tests/data/ui_workflows/templates")
}

/// An environment whose model folders hold the fixtures under the templates' file names.
fn setup() -> (tempfile::TempDir, Arc<Environment>) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (folder, fixture, name) in [
        (
            "diffusion_models",
            TINY_FLUX_FILL_PATH,
            "flux1-fill-dev.safetensors",
        ),
        (
            "diffusion_models",
            TINY_FLUX_CANNY_PATH,
            "flux1-canny-dev.safetensors",
        ),
        (
            "diffusion_models",
            TINY_FLUX_PATH,
            "flux1-dev-kontext_fp8_scaled.safetensors",
        ),
        (
            "diffusion_models",
            TINY_FLUX_PATH,
            "flux1-dev-fp8.safetensors",
        ),
        (
            "loras",
            "tests/data/flux_variants/tiny_flux_depth_lora.safetensors",
            "flux1-depth-dev-lora.safetensors",
        ),
        ("vae", TINY_FLUX_VAE_PATH, "ae.safetensors"),
        ("text_encoders", TINY_CLIP_L_PATH, "clip_l.safetensors"),
        ("text_encoders", TINY_T5XXL_PATH, "t5xxl_fp16.safetensors"),
        (
            "text_encoders",
            TINY_T5XXL_FP8_SCALED_PATH,
            "t5xxl_fp8_e4m3fn_scaled.safetensors",
        ),
    ] {
        std::fs::create_dir_all(models.join(folder)).unwrap();
        std::fs::copy(root().join(fixture), models.join(folder).join(name)).unwrap();
    }
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![models];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Arc::new(Environment::new(paths)))
}

/// A `w`×`h` RGBA test picture: colour gradients, alpha 0 (= mask 1 in LoadImage) inside
/// the rectangle `hole` (x0, y0, x1, y1).
fn picture(path: &Path, w: u32, h: u32, seed: u32, hole: Option<(u32, u32, u32, u32)>) {
    picture_with(path, w, h, seed, |x, y| match hole {
        Some((x0, y0, x1, y1)) if x >= x0 && x < x1 && y >= y0 && y < y1 => 0,
        _ => 255,
    })
}

/// [`picture`] with the alpha of each pixel given by `alpha(x, y)`.
fn picture_with(path: &Path, w: u32, h: u32, seed: u32, alpha: impl Fn(u32, u32) -> u8) {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        let a = alpha(x, y);
        image::Rgba([
            ((x * 255 / w + seed * 37) % 256) as u8,
            ((y * 255 / h + seed * 91) % 256) as u8,
            (((x + y) * 7 + seed * 53) % 256) as u8,
            a,
        ])
    });
    img.save(path).unwrap();
}

/// The template converted by comfyrs with its own schemas, steps lowered to 2.
fn convert(name: &str) -> Json {
    let reg = Registry::with_builtin_nodes();
    let scratch = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(scratch.path()));
    let lookup = |c: &str| reg.schema(c).map(|s| s.object_info(&env));
    let ui: Json = serde_json::from_str(
        &std::fs::read_to_string(templates().join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let mut prompt = convert_ui_workflow(&ui, &lookup)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .prompt;
    for node in prompt.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "KSampler" {
            node["inputs"]["steps"] = 2.into();
        }
    }
    prompt
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

/// The image SaveImage node `node` wrote: (width, height, RGB bytes).
fn saved(env: &Environment, out: &RunOutcome, node: &str) -> (u32, u32, Vec<u8>) {
    let name = out.outputs[node]["images"][0]["filename"].as_str().unwrap();
    let img = image::open(env.paths.output.join(name)).unwrap().to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn flux_fill_inpaint_template_runs_and_the_mask_matters() {
    let (_d, env) = setup();
    let input = env.paths.input.join("yosemite_inpaint_example.png");
    picture(&input, 64, 48, 1, Some((16, 8, 40, 32)));
    let prompt = convert("flux_fill_inpaint_example");
    assert_eq!(prompt["39"]["class_type"], "DifferentialDiffusion");
    assert_eq!(prompt["38"]["class_type"], "InpaintModelConditioning");
    let out = run(&env, &prompt).unwrap();
    let (w, h, a) = saved(&env, &out, "9");
    assert_eq!((w, h), (64, 48));
    // Another hole: the Fill model sees the mask and the masked image through its concat.
    picture(&input, 64, 48, 1, Some((0, 0, 20, 20)));
    let out = run(&env, &prompt).unwrap();
    let (_, _, b) = saved(&env, &out, "9");
    assert!(mean_abs_diff(&a, &b) > 0.5, "the mask changed nothing");
}

#[test]
fn flux_fill_inpaint_with_a_noise_mask_uses_differential_diffusion() {
    // The template passes noise_mask false (no masked denoising, so DifferentialDiffusion has
    // nothing to act on); with the noise mask on and a soft (feathered) mask, the patch
    // changes the result.
    let (_d, env) = setup();
    let input = env.paths.input.join("yosemite_inpaint_example.png");
    picture_with(&input, 64, 48, 2, |x, _| (x * 4).min(255) as u8);
    let mut prompt = convert("flux_fill_inpaint_example");
    prompt["38"]["inputs"]["noise_mask"] = true.into();
    let with_dd = saved(&env, &run(&env, &prompt).unwrap(), "9").2;
    prompt["3"]["inputs"]["model"] = serde_json::json!(["31", 0]);
    let without = saved(&env, &run(&env, &prompt).unwrap(), "9").2;
    assert!(mean_abs_diff(&with_dd, &without) > 0.1);
}

#[test]
fn flux_fill_outpaint_template_runs() {
    let (_d, env) = setup();
    picture(
        &env.paths.input.join("sd3_controlnet_example.png"),
        48,
        40,
        3,
        None,
    );
    let mut prompt = convert("flux_fill_outpaint_example");
    assert_eq!(prompt["44"]["class_type"], "ImagePadForOutpaint");
    // The template pads 400 px left/right/bottom; 40 keeps the tiny run small.
    for side in ["left", "right", "bottom"] {
        prompt["44"]["inputs"][side] = 40.into();
    }
    let out = run(&env, &prompt).unwrap();
    let (w, h, _) = saved(&env, &out, "9");
    assert_eq!((w, h), (48 + 80, 40 + 40));
}

#[test]
fn flux_canny_template_runs_and_follows_the_control_image() {
    let (_d, env) = setup();
    let input = env.paths.input.join("sd3_controlnet_example.png");
    picture(&input, 68, 50, 4, None);
    let prompt = convert("flux_canny_model_example");
    assert_eq!(prompt["35"]["class_type"], "InstructPixToPixConditioning");
    let out = run(&env, &prompt).unwrap();
    // InstructPixToPixConditioning crops to multiples of 8.
    let (w, h, a) = saved(&env, &out, "9");
    assert_eq!((w, h), (64, 48));
    // The Canny preview is the edge map at the input's size.
    let preview = out.outputs["19"]["images"][0]["filename"].as_str().unwrap();
    let p = image::open(env.paths.temp.join(preview)).unwrap();
    assert_eq!((p.width(), p.height()), (68, 50));
    picture(&input, 68, 50, 9, Some((0, 0, 30, 50)));
    let (_, _, b) = saved(&env, &run(&env, &prompt).unwrap(), "9");
    assert!(
        mean_abs_diff(&a, &b) > 0.5,
        "the control image changed nothing"
    );
}

#[test]
fn flux_depth_lora_template_runs_and_follows_the_depth_map() {
    let (_d, env) = setup();
    let input = env.paths.input.join("shark_depthmap.png");
    picture(&input, 64, 40, 8, None);
    let mut prompt = convert("flux_depth_lora_example");
    assert_eq!(prompt["37"]["class_type"], "LoraLoaderModelOnly");
    let (w, h, a) = saved(&env, &run(&env, &prompt).unwrap(), "9");
    assert_eq!((w, h), (64, 40));
    picture(&input, 64, 40, 3, Some((0, 0, 32, 40)));
    let (_, _, b) = saved(&env, &run(&env, &prompt).unwrap(), "9");
    assert!(mean_abs_diff(&a, &b) > 0.5, "the depth map changed nothing");
    // Without the LoRA the dev model takes 16 channels and ignores the concat latent.
    prompt["3"]["inputs"]["model"] = serde_json::json!(["31", 0]);
    let (_, _, c) = saved(&env, &run(&env, &prompt).unwrap(), "9");
    assert!(mean_abs_diff(&b, &c) > 0.5, "the LoRA changed nothing");
}

#[test]
fn flux_kontext_basic_template_runs_from_the_output_folder() {
    let (_d, env) = setup();
    let name = "Wan2.5-t2i-preview_00001_.png";
    picture(&env.paths.output.join(name), 64, 40, 5, None);
    let mut prompt = convert("flux_kontext_dev_basic");
    assert_eq!(prompt["142"]["class_type"], "LoadImageOutput");
    assert_eq!(prompt["142"]["inputs"]["image"], format!("{name} [output]"));
    assert_eq!(prompt["42"]["class_type"], "FluxKontextImageScale");
    // FluxKontextImageScale makes every image about a megapixel (64×40 → 1328×800), more
    // than a debug-build test should encode, sample and decode twice: the sampling runs
    // take the stitched image as it is, and the scale node is checked on its own below.
    prompt["124"]["inputs"]["pixels"] = serde_json::json!(["146", 0]);
    prompt["173"]["inputs"]["images"] = serde_json::json!(["146", 0]);
    let (w, h, a) = saved(&env, &run(&env, &prompt).unwrap(), "136");
    assert_eq!((w, h), (64, 40));
    // A different reference image changes the result through ReferenceLatent (KSampler's
    // denoise 1 leaves nothing of its own latent input at σ = 1).
    picture(
        &env.paths.output.join(name),
        64,
        40,
        6,
        Some((0, 0, 10, 10)),
    );
    let (_, _, b) = saved(&env, &run(&env, &prompt).unwrap(), "136");
    assert!(
        mean_abs_diff(&a, &b) > 0.5,
        "the reference image changed nothing"
    );

    // The template's image path up to the sampler: LoadImageOutput → ImageStitch (a second
    // image from the input folder, matched to the first one's height) →
    // FluxKontextImageScale.
    picture(&env.paths.input.join("second.png"), 30, 20, 7, None);
    let scale = serde_json::json!({
        "142": prompt["142"].clone(),
        "2": {"class_type": "LoadImage", "inputs": {"image": "second.png"}},
        "146": {"class_type": "ImageStitch", "inputs": {
            "image1": ["142", 0], "image2": ["2", 0], "direction": "right",
            "match_image_size": true, "spacing_width": 0, "spacing_color": "white"}},
        "42": {"class_type": "FluxKontextImageScale", "inputs": {"image": ["146", 0]}},
        "173": {"class_type": "PreviewImage", "inputs": {"images": ["42", 0]}},
    });
    let out = run(&env, &scale).unwrap();
    let preview = out.outputs["173"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    let p = image::open(env.paths.temp.join(preview)).unwrap();
    // 64×40 + 30×20 resized to 60×40 = 124×40 (aspect 3.1) → the widest Kontext size.
    assert_eq!(comfyrs::nodes::flux::kontext_size(124, 40), (1568, 672));
    assert_eq!((p.width(), p.height()), (1568, 672));
}

#[test]
fn load_image_output_names_the_missing_file() {
    let (_d, env) = setup();
    let prompt = serde_json::json!({
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": "nope.png [output]"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    let e = run(&env, &prompt).unwrap_err();
    assert!(e.contains("Invalid image file: nope.png [output]"), "{e}");
}

#[test]
fn object_info_of_the_variant_nodes_matches_comfyui() {
    let want: Json = serde_json::from_str(
        &std::fs::read_to_string(
            root().join("tests/data/ui_workflows/comfyui_0.3.64_object_info.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let reg = Registry::with_builtin_nodes();
    let scratch = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(scratch.path()));
    for class in [
        "DifferentialDiffusion",
        "InstructPixToPixConditioning",
        "ImageStitch",
        "LoadImageOutput",
        "InpaintModelConditioning",
        "ReferenceLatent",
        "FluxKontextImageScale",
        "FluxGuidance",
        "FluxKontextMultiReferenceLatentMethod",
    ] {
        let ours = reg.schema(class).unwrap().object_info(&env);
        assert_eq!(ours, want[class], "{class}");
    }
}
