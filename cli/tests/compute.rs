//! Compute device and dtype configuration: models load in the configured dtype, the tiny
//! demo workflow in reduced precision on the CPU gives an image close to (but not the same as)
//! the fp32 one, and the `--device`/`--dtype` flags of the binary.

use candle_core::DType;
use comfyrs::compute::Compute;
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use comfyrs::node::Registry;
use comfyrs::nodes::sd_types::ModelCache;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(rel)
}

fn environment(dir: &Path, compute: Compute) -> Arc<Environment> {
    let mut paths = Paths::under(dir);
    paths.model_roots = vec![repo("fixtures/models")];
    Arc::new(Environment::new(paths).with_compute(compute))
}

/// Runs workflows/tiny_txt2img.json in-process and returns its 64x64 RGB pixels.
fn demo_pixels(compute: Compute) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let env = environment(dir.path(), compute);
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let text = std::fs::read_to_string(repo("workflows/tiny_txt2img.json")).unwrap();
    let valid = prepare(
        parse_workflow(&text).unwrap(),
        &Overrides::default(),
        &reg,
        &env,
        None,
    )
    .unwrap();
    let out = exec.run("p", &valid, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let name = out.outputs["7"]["images"][0]["filename"].as_str().unwrap();
    png_pixels(&env.paths.output.join(name))
}

fn png_pixels(path: &Path) -> Vec<u8> {
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    img.into_raw()
}

/// (mean |Δ|, max |Δ|, number of differing values) in 0..255 levels.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8, usize) {
    assert_eq!(a.len(), b.len());
    let d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
    let max = d.iter().copied().max().unwrap_or(0);
    (mean, max, d.iter().filter(|&&v| v != 0).count())
}

#[test]
fn loaders_read_the_dtypes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let compute = Compute {
        vae_dtype: DType::BF16,
        ..Compute::cpu(DType::F16)
    };
    let env = environment(dir.path(), compute.clone());
    let cache = env.resources.get_or_default::<ModelCache>();
    let path = repo("fixtures/models/checkpoints/tiny_sd15.safetensors");
    let ck = cache.checkpoint(&path, &env.compute).unwrap();
    assert_eq!(ck.model.dtype(), DType::F16);
    assert_eq!(ck.text.members()[0].model.dtype(), DType::F16);
    assert_eq!(ck.vae.dtype(), DType::BF16);
    // The weight map holds each weight in `storage_dtype(file, model dtype)`: the
    // fixture's f16 stays f16 for the bf16 VAE (widened per operation).
    let w = &ck.weights;
    assert_eq!(
        w["model.diffusion_model.input_blocks.0.0.weight"].dtype(),
        DType::F16
    );
    assert_eq!(
        w["first_stage_model.decoder.conv_in.weight"].dtype(),
        comfyrs::models::checkpoint::storage_dtype(DType::F16, DType::BF16)
    );
    let vae = cache.vae(&path, &env.compute).unwrap();
    assert_eq!(vae.dtype(), DType::BF16);
}

/// fp16 on the CPU (UNet, CLIP and VAE) against fp32 on the tiny fixture (64x64, euler 6
/// steps, cfg 7). Measured: mean |d| 0.2354 levels, max 2, 2863 of 12288 values differ. The
/// bound is the parity bar for CPU fp32 vs ComfyUI (mean <= 0.5, max <= 4): halving
/// the precision of every weight and activation moves this image less than that. (bf16 cannot
/// run on the CPU: candle has no CPU bf16 convolution, so `Compute::open` refuses it.)
#[test]
fn fp16_on_cpu_is_close_to_fp32() {
    let fp32 = demo_pixels(Compute::default());
    let fp16 = demo_pixels(Compute::cpu(DType::F16));
    let (mean, max, n) = diff(&fp32, &fp16);
    eprintln!(
        "fp16 vs fp32: mean |d| {mean:.4}, max |d| {max}, {n} of {} values differ",
        fp16.len()
    );
    assert!(
        n > 0,
        "fp16 gave the fp32 image: the dtype did not take effect"
    );
    assert!(mean <= 0.5, "mean |d| {mean} > 0.5");
    assert!(max <= 4, "max |d| {max} > 4");
}

fn comfyrs(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs the binary")
}

#[test]
fn dtype_flag_reaches_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let wf = repo("workflows/tiny_txt2img.json");
    let models = repo("fixtures/models");
    let out = comfyrs(
        &[
            "run",
            wf.to_str().unwrap(),
            "--models-dir",
            models.to_str().unwrap(),
            "--output-dir",
            dir.path().to_str().unwrap(),
            "--dtype",
            "fp16",
            "--vae-dtype",
            "fp16",
        ],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = png_pixels(&dir.path().join("tiny_txt2img_00001_.png"));
    assert_eq!(cli, demo_pixels(Compute::cpu(DType::F16)));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let wf = repo("workflows/tiny_txt2img.json");
    for (args, dev) in [
        (
            vec!["run", wf.to_str().unwrap(), "--device", "cuda"],
            "cuda:0",
        ),
        (vec!["serve", "--port", "0", "--device", "cuda:1"], "cuda:1"),
    ] {
        let out = comfyrs(&args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!(
                "--device {dev}: this comfyrs was built without CUDA support; rebuild with \
                 `cargo build --release --features cuda` (see docs/gpu.md), or use --device cpu"
            )
        );
    }
}

#[test]
fn bad_device_and_dtype_names_list_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let wf = repo("workflows/tiny_txt2img.json");
    let out = comfyrs(
        &["run", wf.to_str().unwrap(), "--device", "gpu"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'gpu' for '--device <cpu|cuda[:N]>': unknown device 'gpu': allowed are cpu, cuda, cuda:N (N = GPU index)"),
        "{err}"
    );
    let out = comfyrs(
        &["run", wf.to_str().unwrap(), "--dtype", "int8"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'int8' for '--dtype <fp32|fp16|bf16>': unknown dtype 'int8': allowed are fp32, fp16, bf16"),
        "{err}"
    );
    let out = comfyrs(
        &["run", wf.to_str().unwrap(), "--dtype", "bf16"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "bf16 is not supported on the cpu (candle has no CPU bf16 convolution); use --dtype \
         fp16 or fp32 (and --vae-dtype fp16 or fp32) there, bf16 on cuda"
    );
}
