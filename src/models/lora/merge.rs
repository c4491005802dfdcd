//! Model merging as patches (ComfyUI's `ModelMergeSimple` & co.): model 2's weights (with its
//! own patch list, applied first, in f32) become a patch on model 1's weights, with a
//! strength for the patch and one for model 1's own weight (`add_patches(patches,
//! strength_patch, strength_model)`). For one weight ComfyUI's `calculate_weight` does, in
//! f32: `w *= strength_model` (when it is not 1), then `w += strength_patch · w2` (when it is
//! not 0 and the shapes agree; otherwise it logs and leaves `w` as scaled).
//!
//! A merge is one [`PatchEntry`] in the patched model's list, so it composes with LoRAs in
//! the order the nodes ran, as ComfyUI's per-key patch lists do.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::patched::PatchEntry;
use crate::models::checkpoint::WeightMap;
use crate::models::Result;

/// (strength_patch, strength_model) of each weight of a merge.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeStrengths {
    /// `ratio` of model 1 kept: (1 − ratio, ratio). The ratio of a weight is that of the
    /// longest prefix in `by_prefix` its key (below the model root, e.g. `input_blocks.1.…`)
    /// starts with, else `default` (ModelMergeBlocks and the model-specific nodes).
    Ratio {
        default: f64,
        by_prefix: Vec<(String, f64)>,
    },
    /// The same pair for every weight (ModelMergeAdd: (1, 1); ModelMergeSubtract: (−m, m)).
    Fixed { patch: f64, model: f64 },
}

impl MergeStrengths {
    /// A single ratio for every weight (ModelMergeSimple, CLIPMergeSimple).
    pub fn ratio(ratio: f64) -> Self {
        MergeStrengths::Ratio {
            default: ratio,
            by_prefix: Vec::new(),
        }
    }

    /// (strength_patch, strength_model) of the weight `rel` (its key below the root).
    pub fn at(&self, rel: &str) -> (f64, f64) {
        match self {
            MergeStrengths::Fixed { patch, model } => (*patch, *model),
            MergeStrengths::Ratio { default, by_prefix } => {
                let mut ratio = *default;
                let mut best = 0;
                for (prefix, r) in by_prefix {
                    if rel.starts_with(prefix.as_str()) && best < prefix.len() {
                        ratio = *r;
                        best = prefix.len();
                    }
                }
                (1.0 - ratio, ratio)
            }
        }
    }
}

/// Model 2 of a merge: its base weights and patch list, which of its keys take part
/// (those under `src_root`, less the `skip_suffixes`), and where they land in model 1
/// (`dst_root` + the same rest).
#[derive(Debug)]
pub struct MergeSource {
    pub weights: Arc<WeightMap>,
    pub patches: Vec<PatchEntry>,
    pub src_root: String,
    pub dst_root: String,
    /// Keys ending in one of these are left out (CLIP merges skip `.position_ids` and
    /// `.logit_scale`).
    pub skip_suffixes: Vec<String>,
    pub strengths: MergeStrengths,
}

impl MergeSource {
    /// Model 1's keys this merge patches: model 2's keys under the root, renamed, that
    /// model 1 (`base`) has.
    pub fn targets<'a>(&'a self, base: &'a WeightMap) -> impl Iterator<Item = String> + 'a {
        self.weights.keys().filter_map(move |k| {
            let rest = k.strip_prefix(self.src_root.as_str())?;
            if self.skip_suffixes.iter().any(|s| k.ends_with(s.as_str())) {
                return None;
            }
            let target = format!("{}{rest}", self.dst_root);
            base.contains_key(&target).then_some(target)
        })
    }

    /// Model 2's key for model 1's `target`, and `target` below the root, when this merge
    /// patches it.
    fn source_of<'a>(&self, target: &'a str) -> Option<(String, &'a str)> {
        let rest = target.strip_prefix(self.dst_root.as_str())?;
        let src = format!("{}{rest}", self.src_root);
        if self.skip_suffixes.iter().any(|s| src.ends_with(s.as_str())) {
            return None;
        }
        self.weights.contains_key(&src).then_some((src, rest))
    }

    /// Applies this merge to model 1's weight `target` (`w`, f32).
    pub(crate) fn apply(&self, w: Tensor, target: &str) -> Result<Tensor> {
        let Some((src, rest)) = self.source_of(target) else {
            return Ok(w);
        };
        let (strength_patch, strength_model) = self.strengths.at(rest);
        let mut w = w;
        if strength_model != 1.0 {
            w = scale(&w, strength_model)?;
        }
        // Model 2's weight as its own patches leave it, in f32 (never rounded to storage).
        let w2 = super::patched::patched_f32(&self.weights, &self.patches, &src)?;
        let Some(w2) = w2 else { return Ok(w) };
        if strength_patch != 0.0 {
            if w2.dims() != w.dims() {
                tracing::warn!(
                    "model merge: shape mismatch on {target}, weight not merged: {:?} != {:?}",
                    w2.dims(),
                    w.dims()
                );
            } else {
                w = (w + scale(&w2, strength_patch)?)?;
            }
        }
        Ok(w)
    }

    /// Every weight map this merge reads, nested merges included (for the cache's check that
    /// a key's sources are still the same maps).
    pub fn source_maps(&self, out: &mut Vec<Arc<WeightMap>>) {
        out.push(self.weights.clone());
        for p in &self.patches {
            p.source_maps(out);
        }
    }

    /// What identifies this merge in a patch cache key: model 2's map, its patch list and
    /// the strengths.
    pub fn identity(&self) -> String {
        let nested: Vec<String> = self
            .patches
            .iter()
            .map(|p| format!("{}@{:x}", p.identity, p.strength.to_bits()))
            .collect();
        format!(
            "merge:{:x}:{}->{}:[{}]:{:?}:{:?}",
            Arc::as_ptr(&self.weights) as usize,
            self.src_root,
            self.dst_root,
            nested.join(","),
            self.skip_suffixes,
            self.strengths
        )
    }
}

/// `t * s` in f32 as torch does it (`s` rounded to f32 first).
fn scale(t: &Tensor, s: f64) -> Result<Tensor> {
    debug_assert_eq!(t.dtype(), DType::F32);
    let s = Tensor::new(s as f32, t.device())?;
    Ok(t.broadcast_mul(&s)?)
}
