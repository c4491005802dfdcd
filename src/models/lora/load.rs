//! ComfyUI's `load_lora`: a LoRA file + a key map → one patch per target weight, plus the file
//! keys nothing used (reported, never silently dropped).

use std::collections::{BTreeMap, HashSet};

use super::adapter::{parse_patches, Patch};
use super::file::LoraFile;
use super::key_map::KeyMap;
use crate::models::checkpoint::WeightMap;
use crate::models::Result;

/// The patches of one LoRA file for one model.
#[derive(Debug, Default)]
pub struct LoadedLora {
    /// Target weight key → patch (ComfyUI's `patch_dict`; a later key-map entry naming the
    /// same target replaces an earlier one, as in ComfyUI).
    pub patches: BTreeMap<String, Patch>,
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
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
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
                "" => target.to_string(),
                s => format!("{}{s}", target.strip_suffix(".weight").unwrap_or(target)),
            };
            let Some(w) = base.get(&target) else {
                out.unmatched
                    .push(format!("{x} (no model weight {target})"));
                continue;
            };
            if !patch.adapter.fits(w.dims())? {
                out.shape_mismatches.push(format!(
                    "{target}: a delta of {} values for a weight of shape {:?}",
                    patch.adapter.delta_elems()?,
                    w.dims()
                ));
                continue;
            }
            out.patches.insert(target, patch);
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
