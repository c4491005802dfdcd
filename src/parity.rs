//! Full-size parity with ComfyUI: run SD1.5 workflows on a checkpoint and compare the saved
//! PNGs with ComfyUI's reference PNGs for the same workflow and seed (`comfyrs parity`).
//!
//! The bar (issue 3, `../shared/parity/README.md`): on CPU fp32, mean |Δ| ≤ 0.5 and
//! max |Δ| ≤ 4 levels (0–255) over every channel of every pixel. The built-in cases are the
//! workflows under `workflows/sd15/` (compiled in); the references are ComfyUI's outputs named
//! `<case>.png`.

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

/// The built-in full-size cases: name (= reference file stem) and workflow JSON.
pub const BUILTIN_CASES: &[(&str, &str)] = &[
    (
        "sd15_txt2img",
        include_str!("../workflows/sd15/sd15_txt2img.json"),
    ),
    (
        "sd15_dpmpp2m_karras",
        include_str!("../workflows/sd15/sd15_dpmpp2m_karras.json"),
    ),
];

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

/// Runs parity cases on one executor (the checkpoint is loaded once and shared).
pub struct ParityRunner {
    registry: Arc<Registry>,
    env: Arc<Environment>,
    executor: Executor,
    ckpt_name: String,
}

impl ParityRunner {
    /// `env` must find `ckpt_name` among its checkpoints and write to its output folder.
    pub fn new(registry: Arc<Registry>, env: Arc<Environment>, ckpt_name: &str) -> Self {
        let executor = Executor::new(registry.clone(), env.clone(), ExecutorConfig::default());
        ParityRunner {
            registry,
            env,
            executor,
            ckpt_name: ckpt_name.into(),
        }
    }

    /// Runs one workflow and compares its first saved image with `reference`.
    pub fn run_case(
        &self,
        name: &str,
        workflow_json: &str,
        reference: &Path,
    ) -> Result<CaseResult, String> {
        let mut wf = parse_workflow(workflow_json).map_err(|e| format!("{name}: {e}"))?;
        use_checkpoint(&mut wf, &self.ckpt_name);
        let valid = prepare(wf, &Overrides::default(), &self.registry, &self.env, None)
            .map_err(|e| format!("{name}: invalid workflow: {}", e.to_comfy_json()))?;
        let start = Instant::now();
        let out = self
            .executor
            .run(name, &valid, None, &Interrupt::new(), &NoEvents);
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
        for (name, json) in BUILTIN_CASES {
            let mut wf = parse_workflow(json).unwrap();
            use_checkpoint(&mut wf, "x.safetensors");
            let loaders: Vec<_> = wf
                .nodes
                .values()
                .filter(|n| n.class_type == "CheckpointLoaderSimple")
                .collect();
            assert_eq!(loaders.len(), 1, "{name}");
            assert_eq!(loaders[0].inputs["ckpt_name"], "x.safetensors");
        }
    }
}
