//! Full-size parity with ComfyUI: run workflows on full-size random-weight checkpoints and
//! compare the saved PNGs with ComfyUI's reference PNGs for the same workflow and seed
//! (`comfyrs parity`).
//!
//! The bar (issues 3 and 12, `../shared/parity/README.md`): on CPU fp32, mean |Δ| ≤ 0.5 and
//! max |Δ| ≤ 4 levels (0–255) over every channel of every pixel. The built-in cases are the
//! workflows under `workflows/{sd15,sdxl,controlnet,flux,toolbox}/` (compiled in), grouped in suites by
//! the checkpoints they need; the references are ComfyUI's outputs named `<case>.png`.

use crate::env::Environment;
use crate::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use crate::node::Registry;
use crate::prompt::prepare;
use crate::workflow::{parse_workflow, Overrides, Workflow};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest allowed mean |Δ| in 8-bit levels.
pub const MAX_MEAN_ABS_DIFF: f64 = 0.5;
/// Largest allowed single-channel |Δ| in 8-bit levels.
pub const MAX_ABS_DIFF: u8 = 4;

/// One built-in full-size case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The case name, also the reference file stem (`<name>.png`).
    pub name: &'static str,
    /// The suite it belongs to (`sd15`, `sdxl`, `controlnet`, `flux`, `toolbox`).
    pub suite: &'static str,
    /// The API-format workflow; its `CheckpointLoaderSimple` names the checkpoint it needs
    /// (`sd15_random.safetensors`, `sdxl_random.safetensors`,
    /// `sdxl_refiner_random.safetensors`, the generators' files).
    pub workflow: &'static str,
}

/// The built-in cases, in the order they run (cases on the same checkpoint are adjacent, so
/// each checkpoint is loaded once).
pub const BUILTIN_CASES: &[Case] = &[
    Case {
        name: "sd15_txt2img",
        suite: "sd15",
        workflow: include_str!("../workflows/sd15/sd15_txt2img.json"),
    },
    Case {
        name: "sd15_dpmpp2m_karras",
        suite: "sd15",
        workflow: include_str!("../workflows/sd15/sd15_dpmpp2m_karras.json"),
    },
    Case {
        name: "sdxl_txt2img",
        suite: "sdxl",
        workflow: include_str!("../workflows/sdxl/sdxl_txt2img.json"),
    },
    Case {
        name: "sdxl_sizecond",
        suite: "sdxl",
        workflow: include_str!("../workflows/sdxl/sdxl_sizecond.json"),
    },
    Case {
        name: "sdxl_img2img",
        suite: "sdxl",
        workflow: include_str!("../workflows/sdxl/sdxl_img2img.json"),
    },
    Case {
        name: "sdxl_refiner_only",
        suite: "sdxl",
        workflow: include_str!("../workflows/sdxl/sdxl_refiner_only.json"),
    },
    // sd15_random + `controlnet/controlnet_sd15_random.safetensors`
    // (scripts/parity/gen_controlnet.py), the hint from the img2img test image.
    Case {
        name: "cnet_sd15_apply",
        suite: "controlnet",
        workflow: include_str!("../workflows/controlnet/cnet_sd15_apply.json"),
    },
    Case {
        name: "cnet_sd15_advanced",
        suite: "controlnet",
        workflow: include_str!("../workflows/controlnet/cnet_sd15_advanced.json"),
    },
    Case {
        name: "cnet_sd15_mix",
        suite: "controlnet",
        workflow: include_str!("../workflows/controlnet/cnet_sd15_mix.json"),
    },
    // sdxl_random + the diffusers-layout SDXL "small" ControlNet (gen_controlnet.py
    // --preset sdxl_small).
    Case {
        name: "cnet_sdxl_small",
        suite: "controlnet",
        workflow: include_str!("../workflows/controlnet/cnet_sdxl_small.json"),
    },
    // The image toolbox (issue 15) on sd15_random: newer samplers and schedulers, model and
    // guidance patches, tiled VAE decoding, a two-sampler custom-sampling graph.
    // tb_vae_decode_tiled repeats tb_gradient_estimation_kl's sampling nodes, so it follows it
    // and only the decode runs again (the executor's cache, as ComfyUI's).
    Case {
        name: "tb_res_multistep_cfgpp_beta",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_res_multistep_cfgpp_beta.json"),
    },
    Case {
        name: "tb_gradient_estimation_kl",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_gradient_estimation_kl.json"),
    },
    Case {
        name: "tb_vae_decode_tiled",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_vae_decode_tiled.json"),
    },
    Case {
        name: "tb_er_sde_karras",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_er_sde_karras.json"),
    },
    Case {
        name: "tb_seeds2_simple",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_seeds2_simple.json"),
    },
    Case {
        name: "tb_sa_solver_beta",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_sa_solver_beta.json"),
    },
    Case {
        name: "tb_dpmpp2m_sde_gpu_karras",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_dpmpp2m_sde_gpu_karras.json"),
    },
    Case {
        name: "tb_freeu_v2_rescalecfg",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_freeu_v2_rescalecfg.json"),
    },
    Case {
        name: "tb_pag",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_pag.json"),
    },
    Case {
        name: "tb_split_sigmas_two_samplers",
        suite: "toolbox",
        workflow: include_str!("../workflows/toolbox/tb_split_sigmas_two_samplers.json"),
    },
    // Flux (issue 13): scripts/parity/gen_flux.py's files under the models dir's
    // diffusion_models/, text_encoders/, vae/, loras/ and checkpoints/ (the 2 double + 2 single
    // block model at the real widths, the real CLIP-L and VAE, the full-depth fp8 T5-XXL).
    Case {
        name: "flux_quickstart",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_quickstart.json"),
    },
    Case {
        name: "flux_odd_size",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_odd_size.json"),
    },
    Case {
        name: "flux_img2img",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_img2img.json"),
    },
    Case {
        name: "flux_schnell",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_schnell.json"),
    },
    // The quickstart on the 2-block fp16 T5-XXL (ComfyUI builds it with its
    // `t5xxl_model_config` option: scripts/parity/comfy_main_flux_t5layers.py).
    Case {
        name: "flux_t5depth2",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_t5depth2.json"),
    },
    // The all-in-one fp8 checkpoint (gen_flux.py `ckpt`), bare and with the kohya LoRA.
    Case {
        name: "flux_fp8_checkpoint",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_fp8_checkpoint.json"),
    },
    Case {
        name: "flux_lora_fp8",
        suite: "flux",
        workflow: include_str!("../workflows/flux/flux_lora_fp8.json"),
    },
];

/// The suites, for `--suite`.
pub const SUITES: &[&str] = &["sd15", "sdxl", "controlnet", "flux", "toolbox"];

/// The img2img input of the parity workflows (`comfyrs_test_256.png` in their `LoadImage`):
/// the image of `../shared/parity/gen_test_image.py` (red/green gradient, a blue disc, a
/// checkerboard square, yellow stripes), `[n, n, 3]` RGB bytes.
pub fn test_image_rgb(n: u32) -> Vec<u8> {
    let nf = n as f64;
    let s = 255.0 / (nf - 1.0);
    let mut out = Vec::with_capacity((n * n * 3) as usize);
    for y in 0..n {
        for x in 0..n {
            let (xf, yf) = (x as f64, y as f64);
            let mut px = [(xf * s) as u8, (yf * s) as u8, 96];
            let (cx, cy, rad) = (0.68 * nf, 0.34 * nf, 0.2 * nf);
            if (xf - cx).powi(2) + (yf - cy).powi(2) <= rad * rad {
                px = [40, 90, 220];
            }
            if 0.12 * nf <= xf && xf < 0.45 * nf && 0.55 * nf <= yf && yf < 0.88 * nf {
                let cell = (n / 32).max(1);
                let v = if ((x / cell) + (y / cell)).is_multiple_of(2) {
                    255
                } else {
                    0
                };
                px = [v, v, v];
            }
            if xf >= 0.55 * nf && yf >= 0.6 * nf && ((x + y) / (n / 16).max(1)).is_multiple_of(2) {
                px = [240, 220, 30];
            }
            out.extend_from_slice(&px);
        }
    }
    out
}

/// Writes the img2img input (`comfyrs_test_256.png`) into `dir`.
pub fn write_test_image(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("comfyrs_test_256.png");
    let img = image::RgbImage::from_raw(256, 256, test_image_rgb(256)).expect("256x256x3 bytes");
    img.save(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// How two 8-bit RGB images differ (the metrics of `../shared/parity/compare.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDiff {
    pub width: u32,
    pub height: u32,
    pub mean_abs_diff: f64,
    pub max_abs_diff: u8,
    /// `None` when the images are identical.
    pub psnr_db: Option<f64>,
    /// Fraction of pixels where some channel differs by more than 2 levels.
    pub frac_pixels_gt2: f64,
}

impl ImageDiff {
    /// Within the parity bar?
    pub fn passes(&self) -> bool {
        self.mean_abs_diff <= MAX_MEAN_ABS_DIFF && self.max_abs_diff <= MAX_ABS_DIFF
    }
}

/// Compares two RGB images of the same size, given as raw `[H, W, 3]` bytes.
pub fn diff_rgb8(width: u32, height: u32, a: &[u8], b: &[u8]) -> ImageDiff {
    assert_eq!(a.len(), b.len(), "same-size images");
    let n = a.len().max(1) as f64;
    let (mut sad, mut sq, mut max, mut over) = (0u64, 0u64, 0u8, 0usize);
    for (pa, pb) in a.chunks(3).zip(b.chunks(3)) {
        let mut px_max = 0u8;
        for (&x, &y) in pa.iter().zip(pb) {
            let d = x.abs_diff(y);
            sad += d as u64;
            sq += (d as u64) * (d as u64);
            px_max = px_max.max(d);
        }
        max = max.max(px_max);
        if px_max > 2 {
            over += 1;
        }
    }
    let mse = sq as f64 / n;
    ImageDiff {
        width,
        height,
        mean_abs_diff: sad as f64 / n,
        max_abs_diff: max,
        psnr_db: (sq > 0).then(|| 10.0 * (255.0f64 * 255.0 / mse).log10()),
        frac_pixels_gt2: over as f64 / (a.len() / 3).max(1) as f64,
    }
}

/// Compares two image files (alpha dropped, 16-bit reduced to 8).
pub fn compare_files(ours: &Path, reference: &Path) -> Result<ImageDiff, String> {
    let load = |p: &Path| {
        image::open(p)
            .map(|i| i.to_rgb8())
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (a, b) = (load(ours)?, load(reference)?);
    if a.dimensions() != b.dimensions() {
        return Err(format!(
            "size differs: {} is {}x{}, {} is {}x{}",
            ours.display(),
            a.width(),
            a.height(),
            reference.display(),
            b.width(),
            b.height()
        ));
    }
    Ok(diff_rgb8(a.width(), a.height(), a.as_raw(), b.as_raw()))
}

/// One case's result.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// The image comfyrs wrote.
    pub output: PathBuf,
    pub diff: ImageDiff,
    /// Wall time of the run (includes the checkpoint load for the first case).
    pub elapsed: Duration,
}

/// Points every `CheckpointLoaderSimple` of `workflow` at `ckpt_name`.
pub fn use_checkpoint(workflow: &mut Workflow, ckpt_name: &str) {
    for node in workflow.nodes.values_mut() {
        if node.class_type == "CheckpointLoaderSimple" {
            node.inputs
                .insert("ckpt_name".into(), Json::String(ckpt_name.into()));
        }
    }
}

/// The checkpoint names a workflow's `CheckpointLoaderSimple` nodes load, sorted.
pub fn checkpoints_of(workflow: &Workflow) -> Vec<String> {
    let mut names: Vec<String> = workflow
        .nodes
        .values()
        .filter(|n| n.class_type == "CheckpointLoaderSimple")
        .filter_map(|n| n.inputs.get("ckpt_name")?.as_str().map(String::from))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Runs parity cases. Consecutive cases on the same checkpoints share one executor (the
/// checkpoint is loaded once); when the checkpoints change the old executor, and with it the
/// loaded models, is dropped before the next case runs, so two full-size SDXL models are
/// never held at once.
pub struct ParityRunner {
    registry: Arc<Registry>,
    env: Arc<Environment>,
    executor: Option<(Vec<String>, Executor)>,
    ckpt_name: Option<String>,
}

impl ParityRunner {
    /// `env` must find the checkpoints among its `checkpoints` folders and write to its output
    /// folder. With `ckpt_name`, every case's loaders are pointed at that file; without, each
    /// workflow loads the checkpoint it names.
    pub fn new(registry: Arc<Registry>, env: Arc<Environment>, ckpt_name: Option<&str>) -> Self {
        ParityRunner {
            registry,
            env,
            executor: None,
            ckpt_name: ckpt_name.map(String::from),
        }
    }

    /// Runs one workflow and compares its first saved image with `reference`.
    pub fn run_case(
        &mut self,
        name: &str,
        workflow_json: &str,
        reference: &Path,
    ) -> Result<CaseResult, String> {
        let mut wf = parse_workflow(workflow_json).map_err(|e| format!("{name}: {e}"))?;
        if let Some(ckpt) = &self.ckpt_name {
            use_checkpoint(&mut wf, ckpt);
        }
        let ckpts = checkpoints_of(&wf);
        if self.executor.as_ref().is_some_and(|(c, _)| *c != ckpts) {
            self.executor = None; // frees the previous models before the next load
        }
        let valid = prepare(wf, &Overrides::default(), &self.registry, &self.env, None)
            .map_err(|e| format!("{name}: invalid workflow: {}", e.to_comfy_json()))?;
        let (registry, env) = (self.registry.clone(), self.env.clone());
        let (_, executor) = self.executor.get_or_insert_with(|| {
            (
                ckpts,
                Executor::new(registry, env, ExecutorConfig::default()),
            )
        });
        let start = Instant::now();
        let out = executor.run(name, &valid, None, &Interrupt::new(), &NoEvents);
        let elapsed = start.elapsed();
        if let RunStatus::Error(e) | RunStatus::Interrupted(e) = &out.status {
            return Err(format!("{name}: run failed: {e}"));
        }
        let image = out
            .outputs
            .values()
            .filter_map(|ui| ui.get("images")?.as_array()?.first())
            .next()
            .ok_or_else(|| format!("{name}: the workflow saved no image"))?;
        let output = self
            .env
            .paths
            .output
            .join(image["subfolder"].as_str().unwrap_or(""))
            .join(image["filename"].as_str().unwrap_or(""));
        let diff = compare_files(&output, reference)?;
        Ok(CaseResult {
            name: name.into(),
            output,
            diff,
            elapsed,
        })
    }
}

/// One line of the report table.
pub fn format_result(r: &CaseResult) -> String {
    let d = &r.diff;
    format!(
        "{:<24} {}x{}  mean|Δ| {:.4}  max|Δ| {:>3}  PSNR {}  >2 levels {:.4}%  {:>7.1}s  {}",
        r.name,
        d.width,
        d.height,
        d.mean_abs_diff,
        d.max_abs_diff,
        d.psnr_db
            .map(|p| format!("{p:.2} dB"))
            .unwrap_or_else(|| "inf (identical)".into()),
        d.frac_pixels_gt2 * 100.0,
        r.elapsed.as_secs_f64(),
        if d.passes() { "PASS" } else { "FAIL" }
    )
}

#[cfg(test)]
const TEST_IMAGE_RGB_SHA256: &str =
    "0f2723d65320196ad2ceb1c77a4efd3a4af72223e898135ff426309e6c2a33f1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_compare_py() {
        // Two 2x1 images: diffs 0,1,2 and 4,0,0 -> mean 7/6, max 4, one pixel over 2 levels.
        let a = [10u8, 20, 30, 100, 100, 100];
        let b = [10u8, 21, 28, 104, 100, 100];
        let d = diff_rgb8(2, 1, &a, &b);
        assert!((d.mean_abs_diff - 7.0 / 6.0).abs() < 1e-12);
        assert_eq!(d.max_abs_diff, 4);
        let mse: f64 = (1.0 + 4.0 + 16.0) / 6.0;
        assert!((d.psnr_db.unwrap() - 10.0 * (65025.0 / mse).log10()).abs() < 1e-9);
        assert_eq!(d.frac_pixels_gt2, 0.5);
        assert!(!d.passes(), "mean 1.17 is over the bar");
        let same = diff_rgb8(2, 1, &a, &a);
        assert_eq!(same.psnr_db, None);
        assert!(same.passes());
    }

    #[test]
    fn bar_edges() {
        let a = [0u8; 30];
        let mut b = [0u8; 30];
        b[0] = 4;
        assert!(diff_rgb8(10, 1, &a, &b).passes());
        b[0] = 5;
        assert!(!diff_rgb8(10, 1, &a, &b).passes());
    }

    #[test]
    fn builtin_cases_parse_and_name_their_checkpoint() {
        for case in BUILTIN_CASES {
            assert!(SUITES.contains(&case.suite), "{}", case.name);
            let mut wf = parse_workflow(case.workflow).unwrap();
            let want = match (case.suite, case.name) {
                ("controlnet", "cnet_sdxl_small") => "sdxl_random.safetensors",
                ("sd15" | "controlnet" | "toolbox", _) => "sd15_random.safetensors",
                ("sdxl", "sdxl_refiner_only") => "sdxl_refiner_random.safetensors",
                ("sdxl", _) => "sdxl_random.safetensors",
                ("flux", "flux_fp8_checkpoint" | "flux_lora_fp8") => {
                    "flux1_dev_fp8_2x2_random.safetensors"
                }
                ("flux", _) => "", // split files: UNETLoader + DualCLIPLoader + VAELoader
                _ => unreachable!(),
            };
            if want.is_empty() {
                assert!(checkpoints_of(&wf).is_empty(), "{}", case.name);
            } else {
                assert_eq!(checkpoints_of(&wf), vec![want.to_string()], "{}", case.name);
                use_checkpoint(&mut wf, "x.safetensors");
                assert_eq!(checkpoints_of(&wf), vec!["x.safetensors".to_string()]);
            }
            let prefix = wf
                .nodes
                .values()
                .find(|n| n.class_type == "SaveImage")
                .map(|n| n.inputs["filename_prefix"].clone());
            assert_eq!(prefix, Some(Json::from(case.name)), "{}", case.name);
        }
    }

    #[test]
    fn test_image_is_gen_test_image_py() {
        // sha256 of the decoded RGB bytes of `gen_test_image.py OUT.png` (256x256), computed
        // with Python from the script's output file.
        use sha2::{Digest, Sha256};
        let rgb = test_image_rgb(256);
        assert_eq!(rgb.len(), 256 * 256 * 3);
        let hex: String = Sha256::digest(&rgb)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, TEST_IMAGE_RGB_SHA256);
    }
}
