//! ComfyUI's `load_lora` + `add_patches`: a LoRA file + a key map → the patches of each
//! target weight (one for the whole weight, or several on slices of a fused one, e.g. Flux's
//! q/k/v on `qkv`), plus the file keys nothing used (reported, never silently dropped).

use std::collections::{BTreeMap, HashSet};

use super::adapter::{parse_patches, Patch};
use super::file::LoraFile;
use super::key_map::{KeyMap, Target};
use crate::models::checkpoint::WeightMap;
use crate::models::Result;

/// One patch on a weight: on all of it or a slice, its delta's halves optionally swapped.
#[derive(Debug, Clone)]
pub struct TargetPatch {
    pub patch: Patch,
    /// (dim, offset, size) of the slice the patch applies to.
    pub slice: Option<(usize, usize, usize)>,
    pub swap_halves: bool,
}

/// The patches of one LoRA file for one model.
#[derive(Debug, Default)]
pub struct LoadedLora {
    /// Target weight key → its patches in order (ComfyUI's `patch_dict` keyed by
    /// (key, slice, function): a later key-map entry naming the same target and slice
    /// replaces an earlier one, as in ComfyUI; other slices of one weight add up).
    pub patches: BTreeMap<String, Vec<TargetPatch>>,
    /// File keys that no key-map entry used (ComfyUI logs each as "lora key not loaded").
    pub unmatched: Vec<String>,
    /// Targets whose delta does not fit the model weight (ComfyUI logs an error and leaves
    /// the weight unchanged); they are left out of `patches`.
    pub shape_mismatches: Vec<String>,
}

impl LoadedLora {
    /// How many patches touch keys starting with `prefix` (e.g. the UNet's).
    pub fn count_under(&self, prefix: &str) -> usize {
        self.patches
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.len())
            .sum()
    }
}

/// Maps `file` onto the weights of `base` through `map`. Patches whose delta cannot take the
/// target's shape are dropped (and listed) up front, so patching never fails half-way.
pub fn load_lora(file: &LoraFile, map: &KeyMap, base: &WeightMap) -> Result<LoadedLora> {
    let mut used = HashSet::new();
    let mut out = LoadedLora::default();
    for (x, target) in map.iter() {
        for (suffix, patch) in parse_patches(x, &file.tensors, &mut used)? {
            let target = match suffix {
                "" => target.clone(),
                // ComfyUI derives a bias key from a plain target only (a sliced or
                // transformed target gives it no model key: the bias patch is dropped).
                s if target.slice.is_none() && !target.swap_halves => Target::whole(format!(
                    "{}{s}",
                    target.key.strip_suffix(".weight").unwrap_or(&target.key)
                )),
                s => {
                    out.unmatched
                        .push(format!("{x}{s} (no model weight for a sliced target)"));
                    continue;
                }
            };
            let Some(w) = base.get(&target.key) else {
                out.unmatched
                    .push(format!("{x} (no model weight {})", target.key));
                continue;
            };
            // A `.reshape_weight` pads the weight first: the delta fits the padded shape.
            let shape = match &patch.reshape {
                Some(r) if target.slice.is_none() => r.clone(),
                _ => target.delta_shape(w.dims()),
            };
            let in_bounds = target
                .slice
                .is_none_or(|(dim, off, size)| w.dims().get(dim).is_some_and(|&n| off + size <= n));
            if !in_bounds || !patch.adapter.fits(&shape)? {
                out.shape_mismatches.push(format!(
                    "{}{}: a delta of {} values for a weight of shape {:?}",
                    target.key,
                    target.slice.map_or(String::new(), |(d, o, n)| format!(
                        " (slice {o}..{} of dim {d})",
                        o + n
                    )),
                    patch.adapter.delta_elems()?,
                    w.dims()
                ));
                continue;
            }
            let list = out.patches.entry(target.key.clone()).or_default();
            let entry = TargetPatch {
                patch,
                slice: target.slice,
                swap_halves: target.swap_halves,
            };
            match list
                .iter_mut()
                .find(|p| p.slice == entry.slice && p.swap_halves == entry.swap_halves)
            {
                Some(p) => *p = entry,
                None => list.push(entry),
            }
        }
    }
    let mut unmatched: Vec<String> = file
        .tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    unmatched.sort();
    out.unmatched.extend(unmatched);
    Ok(out)
}
