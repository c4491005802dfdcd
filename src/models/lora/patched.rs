//! A diffusion network (UNet, Flux, ...) or text encoder with LoRA patches: the (shared, never modified) base weights plus an
//! ordered list of (LoRA, strength), turned into a model on first use.
//!
//! Stacked LoraLoaders only extend the list, so no intermediate model is built. The model is
//! built from a copy of the base weight map (tensors are shared, not copied) in which only the
//! patched tensors are new, and kept in a [`PatchCache`] keyed by (base weights, list of (LoRA
//! identity, strength)): changing only `strength_model` rebuilds the UNet and finds the text
//! encoder in the cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use candle_core::{DType, Device, Tensor};

use super::fp8_round::{
    comfy_keeps_fp8, stochastic_round_tensor, stochastic_round_tensor_as, string_to_seed, total_ram,
};
use super::load::{LoadedLora, TargetPatch};
use super::merge::MergeSource;
use crate::models::checkpoint::WeightMap;
use crate::models::diffusion::{DiffusionNet, ModelInputs};
use crate::models::fp8::Fp8Kind;
use crate::models::text::clip::{ClipTextEncoder, ClipTextModel, WeightedToken};
use crate::models::unet::UNET_PREFIX;
use crate::models::{ModelError, Result};

/// What a patch-list entry applies: a LoRA's patches, or another model's weights (a merge).
#[derive(Clone, Debug)]
pub enum PatchSource {
    Lora(Arc<LoadedLora>),
    Merge(Arc<MergeSource>),
}

/// One LoRA or merge in a patch list.
#[derive(Clone, Debug)]
pub struct PatchEntry {
    pub source: PatchSource,
    /// What identifies the patch: for a LoRA the file's content (path, modification time and
    /// size), for a merge [`MergeSource::identity`].
    pub identity: String,
    /// The LoRA's strength (a merge carries its strengths per weight; 1 here).
    pub strength: f64,
}

impl PatchEntry {
    /// A LoRA at `strength`.
    pub fn lora(lora: Arc<LoadedLora>, identity: String, strength: f64) -> Self {
        PatchEntry {
            source: PatchSource::Lora(lora),
            identity,
            strength,
        }
    }

    /// A merge with another model's weights.
    pub fn merge(source: MergeSource) -> Self {
        PatchEntry {
            identity: source.identity(),
            source: PatchSource::Merge(Arc::new(source)),
            strength: 1.0,
        }
    }

    /// The LoRA of this entry, if it is one.
    pub fn as_lora(&self) -> Option<&Arc<LoadedLora>> {
        match &self.source {
            PatchSource::Lora(l) => Some(l),
            PatchSource::Merge(_) => None,
        }
    }

    /// Whether this entry (a merge) replaces whole weights of the model.
    pub fn is_merge(&self) -> bool {
        matches!(self.source, PatchSource::Merge(_))
    }

    /// The weight maps a merge entry reads (none for a LoRA).
    pub fn source_maps(&self, out: &mut Vec<Arc<WeightMap>>) {
        if let PatchSource::Merge(m) = &self.source {
            m.source_maps(out);
        }
    }

    /// The keys of `base` this entry patches, restricted to `prefix`.
    fn targets(&self, base: &WeightMap, prefix: &str, out: &mut Vec<String>) {
        match &self.source {
            PatchSource::Lora(l) => out.extend(
                l.patches
                    .keys()
                    .filter(|k| k.starts_with(prefix) && base.contains_key(*k))
                    .cloned(),
            ),
            PatchSource::Merge(m) => out.extend(m.targets(base).filter(|k| k.starts_with(prefix))),
        }
    }

    /// This entry applied to the weight `target` (`w`, f32).
    fn apply(&self, w: Tensor, target: &str) -> Result<Tensor> {
        match &self.source {
            PatchSource::Lora(l) => {
                let mut w = w;
                for p in l.patches.get(target).into_iter().flatten() {
                    match apply_one(&w, p, self.strength) {
                        Ok(nw) => w = nw,
                        // ComfyUI logs and leaves the weight as it was.
                        Err(e) => tracing::error!("LoRA patch on {target} not applied: {e}"),
                    }
                }
                Ok(w)
            }
            PatchSource::Merge(m) => m.apply(w, target),
        }
    }
}

/// `key`'s weight in `base` as `patches` leave it, in f32 (None: `base` has no such key):
/// ComfyUI's `calculate_weight` on an f32 copy, the value a merge takes from its model 2.
pub fn patched_f32(base: &WeightMap, patches: &[PatchEntry], key: &str) -> Result<Option<Tensor>> {
    let Some(w0) = base.get(key) else {
        return Ok(None);
    };
    // (Tensors are immutable: an f32 base is shared, never changed.) `widen`: fp8 e5m2
    // weights are U8 bits (see `fp8::store_as`).
    let mut w = crate::models::nn::widen(w0, DType::F32)?;
    for entry in patches {
        w = entry.apply(w, key)?;
    }
    Ok(Some(w))
}

/// The cache key of a patch list on a base.
type Key = (usize, Vec<(String, u64)>);

fn key_of(weights: &Arc<WeightMap>, patches: &[PatchEntry]) -> Key {
    (
        Arc::as_ptr(weights) as usize,
        patches
            .iter()
            .map(|p| (p.identity.clone(), p.strength.to_bits()))
            .collect(),
    )
}

/// One cached model: its key, the base it was built on, the maps its merges read (the key
/// names them by address, so they must still be alive), whether a merge is in its list, and
/// the model.
struct Slot<T> {
    key: Key,
    base: Weak<WeightMap>,
    sources: Vec<Weak<WeightMap>>,
    merged: bool,
    value: T,
}

/// Cached models of one kind, most recent last.
type Slots<T> = Vec<Slot<T>>;

/// Materialised patched models, a few of each kind.
#[derive(Default)]
pub struct PatchCache {
    unets: Mutex<Slots<DiffusionNet>>,
    clips: Mutex<Slots<Arc<ClipTextModel>>>,
    unet_builds: AtomicUsize,
    clip_builds: AtomicUsize,
}

/// How many patched models of each kind stay cached (each holds its patched tensors).
const KEEP: usize = 2;

/// The weight maps the merges of `patches` read.
fn sources_of(patches: &[PatchEntry]) -> Vec<Arc<WeightMap>> {
    let mut out = Vec::new();
    for p in patches {
        p.source_maps(&mut out);
    }
    out
}

impl PatchCache {
    /// How many patched diffusion models were built (for tests and benchmarks).
    pub fn unet_builds(&self) -> usize {
        self.unet_builds.load(Ordering::Relaxed)
    }

    /// How many patched text encoders were built.
    pub fn clip_builds(&self) -> usize {
        self.clip_builds.load(Ordering::Relaxed)
    }

    fn lookup<T: Clone>(
        list: &mut Slots<T>,
        key: &Key,
        weights: &Arc<WeightMap>,
        patches: &[PatchEntry],
    ) -> Option<T> {
        list.retain(|s| {
            s.base.strong_count() > 0 && s.sources.iter().all(|w| w.strong_count() > 0)
        });
        let sources = sources_of(patches);
        let i = list.iter().position(|s| {
            s.key == *key
                && s.base.upgrade().is_some_and(|w| Arc::ptr_eq(&w, weights))
                && s.sources.len() == sources.len()
                && s.sources
                    .iter()
                    .zip(&sources)
                    .all(|(w, a)| w.upgrade().is_some_and(|w| Arc::ptr_eq(&w, a)))
        })?;
        let hit = list.remove(i);
        let value = hit.value.clone();
        list.push(hit);
        Some(value)
    }

    /// Keeps `v` for (key, base). A merged model holds a full set of new weights: one merged
    /// model per base is kept (a new ratio replaces the previous merge instead of adding a
    /// second full model), as ComfyUI keeps one patched copy.
    fn store<T>(
        list: &mut Slots<T>,
        key: Key,
        weights: &Arc<WeightMap>,
        patches: &[PatchEntry],
        v: T,
    ) {
        let merged = patches.iter().any(PatchEntry::is_merge);
        if merged {
            list.retain(|s| {
                !(s.merged && s.base.upgrade().is_some_and(|w| Arc::ptr_eq(&w, weights)))
            });
        }
        list.push(Slot {
            key,
            base: Arc::downgrade(weights),
            sources: sources_of(patches).iter().map(Arc::downgrade).collect(),
            merged,
            value: v,
        });
        // KEEP bounds the LoRA-patched models; merged ones are bounded to one per base
        // above, and are not evicted by other models (a merged model is rebuilt in full, and
        // the MODEL payload does not hold it).
        while list.iter().filter(|s| !s.merged).count() > KEEP {
            if let Some(i) = list.iter().position(|s| !s.merged) {
                list.remove(i);
            }
        }
    }

    /// Drops the merged models built on `weights` (before building a new one, so two full
    /// merged models never coexist in the cache).
    fn evict_merged<T>(list: &mut Slots<T>, weights: &Arc<WeightMap>) {
        list.retain(|s| !(s.merged && s.base.upgrade().is_some_and(|w| Arc::ptr_eq(&w, weights))));
    }
}

/// How a patched weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchedStorage {
    /// In this dtype (rounded to nearest): the compute dtype, as ComfyUI's model holds its
    /// weights when it upcasts them at load; or fp16 for a text encoder's fp16 storage.
    Dtype(DType),
    /// Weights stored as fp8 e4m3fn go back to fp8 with ComfyUI's seeded stochastic
    /// rounding (the model keeps fp8 weights, see [`comfy_keeps_fp8`]); others as `Dtype`.
    KeepFp8(DType),
    /// Every patched weight goes back to fp8 `kind` with the seeded stochastic rounding:
    /// the model's weights are stored in fp8 by choice (UNETLoader's `weight_dtype`).
    Fp8(Fp8Kind),
}

/// The patched tensors (only those) under `prefix`: each target's f32 copy gets every patch
/// of the list in order, and is kept in the `compute` dtype (ComfyUI's model holds its
/// weights in the compute dtype when it upcasts at load, so a patch is not rounded to the
/// file's dtype); with `round_f16` it is kept as fp16, like ComfyUI casting a patched weight
/// back to the text encoder's fp16 storage.
pub fn patch_weights(
    base: &WeightMap,
    patches: &[PatchEntry],
    prefix: &str,
    compute: DType,
    round_f16: bool,
) -> Result<WeightMap> {
    let keep = if round_f16 { DType::F16 } else { compute };
    patch_weights_stored(base, patches, prefix, PatchedStorage::Dtype(keep))
}

/// ComfyUI's model key of one of our weight keys (`model.diffusion_model.X` is
/// `diffusion_model.X` there): the string its stochastic-rounding seed is made from.
pub fn comfy_key(key: &str) -> &str {
    key.strip_prefix("model.").unwrap_or(key)
}

/// One patch on `w` (f32): on the whole weight or on its slice, halves swapped when asked.
fn apply_one(w: &Tensor, p: &TargetPatch, strength: f64) -> Result<Tensor> {
    let swapped;
    let patch = if p.swap_halves {
        swapped = p.patch.with_swapped_halves()?;
        &swapped
    } else {
        &p.patch
    };
    let Some((dim, off, size)) = p.slice else {
        return patch.apply(w, strength);
    };
    let n = w.dim(dim)?;
    let part = patch.apply(&w.narrow(dim, off, size)?, strength)?;
    let mut pieces = Vec::with_capacity(3);
    if off > 0 {
        pieces.push(w.narrow(dim, 0, off)?);
    }
    pieces.push(part);
    if off + size < n {
        pieces.push(w.narrow(dim, off + size, n - off - size)?);
    }
    Ok(Tensor::cat(&pieces, dim)?)
}

/// [`patch_weights`] with an explicit storage rule for the patched tensors.
pub fn patch_weights_stored(
    base: &WeightMap,
    patches: &[PatchEntry],
    prefix: &str,
    storage: PatchedStorage,
) -> Result<WeightMap> {
    let mut targets: Vec<String> = Vec::new();
    for p in patches {
        p.targets(base, prefix, &mut targets);
    }
    targets.sort();
    targets.dedup();
    let mut out = WeightMap::new();
    for target in targets {
        let Some(w0) = base.get(&target) else {
            continue;
        };
        let Some(w) = patched_f32(base, patches, &target)? else {
            continue;
        };
        let stored = match storage {
            PatchedStorage::KeepFp8(_) if w0.dtype() == DType::F8E4M3 => {
                stochastic_round_tensor(&w, string_to_seed(comfy_key(&target)))?
            }
            PatchedStorage::Fp8(kind) => {
                stochastic_round_tensor_as(kind, &w, string_to_seed(comfy_key(&target)))?
            }
            PatchedStorage::Dtype(d) | PatchedStorage::KeepFp8(d) => w.to_dtype(d)?,
        };
        out.insert(target, stored);
    }
    Ok(out)
}

/// The base map with `changed` tensors swapped in (the others are shared).
fn overlay(base: &WeightMap, changed: WeightMap) -> WeightMap {
    let mut map = base.clone();
    map.extend(changed);
    map
}

/// MODEL's diffusion network: base + LoRA patch list, built when first evaluated. The
/// network's weights live under [`UNET_PREFIX`] (`model.diffusion_model.`) whatever its
/// family, as in a checkpoint.
#[derive(Clone)]
pub struct PatchedModel {
    base: DiffusionNet,
    weights: Arc<WeightMap>,
    patches: Vec<PatchEntry>,
    cache: Option<Arc<PatchCache>>,
    built: Arc<Mutex<Option<DiffusionNet>>>,
    /// The fp8 format the weights are stored in by choice (UNETLoader's `weight_dtype`),
    /// which patched weights go back to; None: the file's dtype rule.
    fp8_storage: Option<Fp8Kind>,
}

impl PatchedModel {
    /// An unpatched network and the weight map it was built from.
    pub fn new(base: impl Into<DiffusionNet>, weights: Arc<WeightMap>) -> Self {
        PatchedModel {
            base: base.into(),
            weights,
            patches: Vec::new(),
            cache: None,
            built: Arc::default(),
            fp8_storage: None,
        }
    }

    /// The same model with its weights marked as stored in fp8 `kind` by choice (ComfyUI's
    /// `model_options["dtype"]`), so LoRA-patched weights are rounded back to it.
    pub fn with_fp8_storage(mut self, kind: Option<Fp8Kind>) -> Self {
        self.fp8_storage = kind;
        self
    }

    /// The same base with one more LoRA at the end of the list (nothing is computed yet).
    pub fn with_patch(&self, entry: PatchEntry, cache: Arc<PatchCache>) -> Self {
        let mut patches = self.patches.clone();
        patches.push(entry);
        PatchedModel {
            base: self.base.clone(),
            weights: self.weights.clone(),
            patches,
            cache: Some(cache),
            built: Arc::default(),
            fp8_storage: self.fp8_storage,
        }
    }

    pub fn patches(&self) -> &[PatchEntry] {
        &self.patches
    }

    /// The base weight map (shared with the checkpoint).
    pub fn base_weights(&self) -> &Arc<WeightMap> {
        &self.weights
    }

    /// The unpatched network.
    pub fn base(&self) -> &DiffusionNet {
        &self.base
    }

    /// The network to evaluate: the base when unpatched, else the patched one (built once,
    /// and shared through the cache with every MODEL carrying the same list).
    pub fn get(&self) -> Result<DiffusionNet> {
        if self.patches.is_empty() {
            return Ok(self.base.clone());
        }
        // A merged model (a full set of new weights) lives in the cache only, so a MODEL
        // kept by the executor's output cache does not pin it: a new merge ratio on the
        // same base replaces it there rather than making a second full model.
        let merged = self.patches.iter().any(PatchEntry::is_merge) && self.cache.is_some();
        let mut slot = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = slot.as_ref() {
            return Ok(u.clone());
        }
        let key = key_of(&self.weights, &self.patches);
        let net = match &self.cache {
            Some(cache) => {
                let mut list = cache.unets.lock().unwrap_or_else(|e| e.into_inner());
                match PatchCache::lookup(&mut list, &key, &self.weights, &self.patches) {
                    Some(u) => u,
                    None => {
                        if merged {
                            PatchCache::evict_merged(&mut list, &self.weights);
                        }
                        let u = self.build()?;
                        cache.unet_builds.fetch_add(1, Ordering::Relaxed);
                        PatchCache::store(&mut list, key, &self.weights, &self.patches, u.clone());
                        u
                    }
                }
            }
            None => self.build()?,
        };
        if !merged {
            *slot = Some(net.clone());
        }
        Ok(net)
    }

    fn build(&self) -> Result<DiffusionNet> {
        let t0 = std::time::Instant::now();
        let compute = self.base.dtype();
        let storage = if let Some(kind) = self.fp8_storage {
            PatchedStorage::Fp8(kind)
        } else if self.keeps_fp8() {
            PatchedStorage::KeepFp8(compute)
        } else {
            PatchedStorage::Dtype(compute)
        };
        let changed = patch_weights_stored(&self.weights, &self.patches, UNET_PREFIX, storage)?;
        let n = changed.len();
        let map = overlay(&self.weights, changed);
        let net = self.base.rebuild(&map, UNET_PREFIX)?;
        tracing::info!(
            "patched diffusion model: {n} weights from {} LoRA(s) in {:.2}s",
            self.patches.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(net)
    }

    /// Whether ComfyUI would hold this model's weights in fp8 ([`comfy_keeps_fp8`]): its
    /// weights are fp8 e4m3fn and either the device is CUDA (comfyrs assumes an fp8-capable
    /// GPU, as Flux fp8 users run) or the model at 2 bytes per parameter does not fit the
    /// machine's memory budget. Then patched weights go back to fp8 as ComfyUI's do.
    pub fn keeps_fp8(&self) -> bool {
        let mut params = 0usize;
        let mut fp8 = false;
        for (k, t) in self.weights.iter() {
            if k.starts_with(UNET_PREFIX) {
                params += t.elem_count();
                fp8 |= t.dtype() == DType::F8E4M3;
            }
        }
        if !fp8 {
            return false;
        }
        let cuda = self.base.device().is_cuda();
        let total = if cuda {
            0
        } else {
            total_ram().unwrap_or(u64::MAX)
        };
        comfy_keeps_fp8(params, total, cuda)
    }

    /// [`DiffusionNet::forward`] on the patched network.
    pub fn forward(&self, inputs: &ModelInputs) -> Result<Tensor> {
        self.get()?.forward(inputs)
    }

    /// Input channels of the network (latent + concat channels).
    pub fn in_channels(&self) -> usize {
        self.base.in_channels()
    }

    pub fn dtype(&self) -> DType {
        self.base.dtype()
    }

    pub fn device(&self) -> &Device {
        self.base.device()
    }
}

/// CLIP's text encoder: base + LoRA patch list, built when first used to encode.
#[derive(Clone)]
pub struct PatchedClip {
    base: ClipTextEncoder,
    /// Where this encoder's text model lives in `weights` (ends in `text_model.`).
    text_prefix: Arc<str>,
    weights: Arc<WeightMap>,
    patches: Vec<PatchEntry>,
    /// Patched weights are rounded through fp16 (the checkpoint's CLIP storage).
    fp16_storage: bool,
    cache: Option<Arc<PatchCache>>,
    built: Arc<Mutex<Option<Arc<ClipTextModel>>>>,
}

impl PatchedClip {
    /// An unpatched encoder, its weight map, and whether its weights are stored as fp16
    /// (ComfyUI's CPU default, which the loader reproduces).
    pub fn new(base: ClipTextEncoder, weights: Arc<WeightMap>, fp16_storage: bool) -> Self {
        PatchedClip {
            text_prefix: base.weights_prefix.clone(),
            base,
            weights,
            patches: Vec::new(),
            fp16_storage,
            cache: None,
            built: Arc::default(),
        }
    }

    /// The same base with one more LoRA at the end of the list (nothing is computed yet).
    pub fn with_patch(&self, entry: PatchEntry, cache: Arc<PatchCache>) -> Self {
        let mut patches = self.patches.clone();
        patches.push(entry);
        PatchedClip {
            base: self.base.clone(),
            text_prefix: self.text_prefix.clone(),
            weights: self.weights.clone(),
            patches,
            fp16_storage: self.fp16_storage,
            cache: Some(cache),
            built: Arc::default(),
        }
    }

    pub fn patches(&self) -> &[PatchEntry] {
        &self.patches
    }

    /// The base weight map this encoder was built from.
    pub fn base_weights(&self) -> &Arc<WeightMap> {
        &self.weights
    }

    /// The same model looking up `embedding:NAME` in these directories.
    pub fn with_embedding_directories(&self, dirs: Vec<std::path::PathBuf>) -> Self {
        PatchedClip {
            base: self.base.with_embedding_directories(dirs),
            ..self.clone()
        }
    }

    /// The encoder to run: the base when unpatched, else one with the patched text model.
    pub fn get(&self) -> Result<ClipTextEncoder> {
        if self.patches.is_empty() {
            return Ok(self.base.clone());
        }
        // As for the diffusion model: a merged encoder lives in the cache only.
        let merged = self.patches.iter().any(PatchEntry::is_merge) && self.cache.is_some();
        let mut slot = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let model = match slot.as_ref() {
            Some(m) => m.clone(),
            None => {
                let key = key_of(&self.weights, &self.patches);
                let model = match &self.cache {
                    Some(cache) => {
                        let mut list = cache.clips.lock().unwrap_or_else(|e| e.into_inner());
                        match PatchCache::lookup(&mut list, &key, &self.weights, &self.patches) {
                            Some(m) => m,
                            None => {
                                if merged {
                                    PatchCache::evict_merged(&mut list, &self.weights);
                                }
                                let m = self.build()?;
                                cache.clip_builds.fetch_add(1, Ordering::Relaxed);
                                PatchCache::store(
                                    &mut list,
                                    key,
                                    &self.weights,
                                    &self.patches,
                                    m.clone(),
                                );
                                m
                            }
                        }
                    }
                    None => self.build()?,
                };
                if !merged {
                    *slot = Some(model.clone());
                }
                model
            }
        };
        Ok(ClipTextEncoder {
            tokenizer: self.base.tokenizer.clone(),
            model,
            role: self.base.role,
            weights_prefix: self.text_prefix.clone(),
        })
    }

    fn build(&self) -> Result<Arc<ClipTextModel>> {
        let t0 = std::time::Instant::now();
        // The encoder's root (`cond_stage_model.`, `clip_l.`, `clip_g.`): its text model
        // and its projection.
        let root = self
            .text_prefix
            .strip_suffix("transformer.text_model.")
            .or_else(|| self.text_prefix.strip_suffix("text_model."))
            .unwrap_or(&self.text_prefix)
            .to_string();
        let changed = patch_weights(
            &self.weights,
            &self.patches,
            &root,
            self.base.model.dtype(),
            self.fp16_storage,
        )?;
        let n = changed.len();
        let map = overlay(&self.weights, changed);
        let m = &self.base.model;
        let proj_key = format!(
            "{}text_projection.weight",
            self.text_prefix.strip_suffix("text_model.").unwrap_or("")
        );
        let projection = map.get(&proj_key).cloned();
        let vb = crate::models::nn::weights_vb(map, m.dtype(), m.device());
        let model = ClipTextModel::new(
            m.config.clone(),
            vb.pp(self.text_prefix.trim_end_matches('.')),
            projection,
        )
        .map_err(ModelError::from)?;
        tracing::info!(
            "patched text encoder: {n} weights from {} LoRA(s) in {:.2}s",
            self.patches.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(Arc::new(model))
    }

    /// `tokenize_with_weights(text)` (the tokenizer is never patched).
    pub fn tokenize(&self, text: &str) -> Vec<Vec<WeightedToken>> {
        self.base.tokenize(text)
    }

    /// [`ClipTextEncoder::encode`] with the patched model.
    pub fn encode(
        &self,
        tokens: &[Vec<WeightedToken>],
        clip_layer: Option<i32>,
    ) -> Result<(Tensor, Tensor)> {
        self.get()?.encode(tokens, clip_layer)
    }

    /// Tokenize and encode in one go.
    pub fn encode_text(&self, text: &str, clip_layer: Option<i32>) -> Result<(Tensor, Tensor)> {
        self.get()?.encode_text(text, clip_layer)
    }

    /// The unpatched encoder.
    pub fn base(&self) -> &ClipTextEncoder {
        &self.base
    }
}
