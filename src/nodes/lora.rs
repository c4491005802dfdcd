//! LoraLoader and LoraLoaderModelOnly (nodes.py): add a LoRA file's patches, at a strength, to
//! MODEL (an SD1.x/SDXL UNet or a Flux transformer) and CLIP. Nothing is computed here: the payloads carry the patch list and the patched
//! UNet / text encoder is built on first use ([`crate::models::lora::patched`]).

use super::loaders::model_path;
use super::sd_types::{stamp, SdClip, SdModel, Stamp};
use crate::models::lora::{load_lora, read_lora, KeyMap, LoraFile, PatchCache, PatchEntry};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Read LoRA files by path (and modification time and size), shared through `env.resources`:
/// a strength change does not re-read the file. Cleared by `/free`.
#[derive(Default)]
pub struct LoraFiles {
    files: Mutex<HashMap<PathBuf, (Stamp, Arc<LoraFile>)>>,
    reads: AtomicUsize,
}

impl LoraFiles {
    /// How many files were actually read (for tests).
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    fn get(&self, path: &Path, name: &str) -> Result<(Arc<LoraFile>, String), NodeError> {
        let st = stamp(path);
        let identity = format!("{}|{:?}|{}", path.display(), st.0, st.1);
        let mut map = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, f)) = map.get(path) {
            if *s == st {
                return Ok((f.clone(), identity));
            }
        }
        let file = Arc::new(read_lora(path).map_err(|e| {
            NodeError::input("lora_name", format!("could not load LoRA '{name}': {e}"))
        })?);
        self.reads.fetch_add(1, Ordering::Relaxed);
        // Keep only the most recent few files (they can be hundreds of MB).
        if map.len() >= 8 {
            map.clear();
        }
        map.insert(path.to_path_buf(), (st, file.clone()));
        Ok((file, identity))
    }
}

/// ComfyUI's `load_lora_for_models`: maps the file onto the model (and CLIP when given), logs
/// the keys nothing used, and returns the patched payloads.
fn apply_lora(
    ctx: &mut NodeContext,
    class: &str,
    model: &SdModel,
    clip: Option<(&SdClip, f64)>,
    lora_name: &str,
    strength_model: f64,
) -> Result<(SdModel, Option<SdClip>), NodeError> {
    let path = model_path(ctx.env, "loras", lora_name)?;
    let (file, identity) = ctx
        .env
        .resources
        .get_or_default::<LoraFiles>()
        .get(&path, lora_name)?;
    // The model's and the CLIP's weights: one map when both come from a checkpoint, two
    // when they were loaded from separate files.
    let mut weights = model.diffusion.base_weights().clone();
    if let Some((c, _)) = clip {
        for m in c.encoder.members() {
            if !Arc::ptr_eq(m.base_weights(), &weights) {
                let mut merged = (*weights).clone();
                merged.extend(m.base_weights().iter().map(|(k, v)| (k.clone(), v.clone())));
                weights = Arc::new(merged);
            }
        }
    }
    let map = KeyMap::for_weights(&weights, true, clip.is_some())
        .map_err(|e| NodeError::msg(format!("{class}: could not build the LoRA key map: {e}")))?;
    let loaded = load_lora(&file, &map, &weights).map_err(|e| {
        NodeError::input(
            "lora_name",
            format!("'{lora_name}' could not be read as a LoRA: {e}"),
        )
    })?;
    if !loaded.unmatched.is_empty() {
        let shown: Vec<&str> = loaded
            .unmatched
            .iter()
            .take(5)
            .map(|s| s.as_str())
            .collect();
        tracing::warn!(
            "{class}: {} of {} keys of '{lora_name}' were not loaded (match nothing in this \
             model), e.g. {}",
            loaded.unmatched.len(),
            file.tensors.len(),
            shown.join(", ")
        );
    }
    for m in &loaded.shape_mismatches {
        tracing::error!("{class}: '{lora_name}': {m}; that weight is left unchanged");
    }
    if loaded.patches.is_empty() {
        let formats = file.formats().join(", ");
        let mismatched = if loaded.shape_mismatches.is_empty() {
            String::new()
        } else {
            format!(
                "; {} keys matched by name but not by shape, e.g. {}",
                loaded.shape_mismatches.len(),
                loaded.shape_mismatches[0]
            )
        };
        let examples: Vec<&str> = loaded
            .unmatched
            .iter()
            .take(3)
            .map(|s| s.as_str())
            .collect();
        return Err(NodeError::input(
            "lora_name",
            format!(
                "LoRA '{lora_name}' ({formats}) has no key that matches this {} model{} \
                 (it is probably for another architecture); keys look like {}{mismatched}",
                model.family.comfy_name(),
                if clip.is_some() { " or its CLIP" } else { "" },
                examples.join(", ")
            ),
        ));
    }
    let loaded = Arc::new(loaded);
    let cache = ctx.env.resources.get_or_default::<PatchCache>();
    let entry = |strength: f64| PatchEntry::lora(loaded.clone(), identity.clone(), strength);
    let mut new_model = model.clone();
    new_model.diffusion = model
        .diffusion
        .with_patch(entry(strength_model), cache.clone());
    let new_clip = clip.map(|(c, s)| {
        let mut c = c.clone();
        c.encoder = c.encoder.with_patch(entry(s), cache.clone());
        c
    });
    Ok((new_model, new_clip))
}

const DESCRIPTION: &str = "LoRAs are used to modify diffusion and CLIP models, altering the way \
                           in which latents are denoised such as applying styles. Multiple LoRA \
                           nodes can be linked together.";

fn strength(name: &str) -> InputSpec {
    InputSpec::float(name)
        .default(1.0)
        .min(-100.0)
        .max(100.0)
        .step(0.01)
}

fn lora_names(env: &crate::env::Environment) -> Vec<String> {
    env.paths.list_models("loras")
}

struct LoraLoader;
impl Node for LoraLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoraLoader")
            .display("Load LoRA")
            .category("loaders")
            .description(DESCRIPTION)
            .input(
                InputSpec::of("model", "MODEL")
                    .tooltip("The diffusion model the LoRA will be applied to."),
            )
            .input(
                InputSpec::of("clip", "CLIP")
                    .tooltip("The CLIP model the LoRA will be applied to."),
            )
            .input(InputSpec::combo_fn("lora_name", lora_names).tooltip("The name of the LoRA."))
            .input(
                strength("strength_model").tooltip(
                    "How strongly to modify the diffusion model. This value can be negative.",
                ),
            )
            .input(
                strength("strength_clip")
                    .tooltip("How strongly to modify the CLIP model. This value can be negative."),
            )
            .output(OutputSpec::new("MODEL").tooltip("The modified diffusion model."))
            .output(OutputSpec::new("CLIP").tooltip("The modified CLIP model."))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let clip = i.object::<SdClip>("clip")?;
        let strength_model = i.float("strength_model")?;
        let strength_clip = i.float("strength_clip")?;
        if strength_model == 0.0 && strength_clip == 0.0 {
            // ComfyUI returns its inputs unchanged.
            return Ok(NodeOutput::values(vec![
                Value::object((*model).clone()),
                Value::object((*clip).clone()),
            ]));
        }
        let (m, c) = apply_lora(
            ctx,
            "LoraLoader",
            &model,
            Some((&clip, strength_clip)),
            i.string("lora_name")?,
            strength_model,
        )?;
        let c = c.unwrap_or_else(|| (*clip).clone());
        Ok(NodeOutput::values(vec![Value::object(m), Value::object(c)]))
    }
}

struct LoraLoaderModelOnly;
impl Node for LoraLoaderModelOnly {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoraLoaderModelOnly")
            .category("loaders")
            .description(DESCRIPTION)
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::combo_fn("lora_name", lora_names))
            .input(strength("strength_model"))
            .output(OutputSpec::new("MODEL").tooltip("The modified diffusion model."))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let strength_model = i.float("strength_model")?;
        if strength_model == 0.0 {
            return Ok(NodeOutput::one(Value::object((*model).clone())));
        }
        let (m, _) = apply_lora(
            ctx,
            "LoraLoaderModelOnly",
            &model,
            None,
            i.string("lora_name")?,
            strength_model,
        )?;
        Ok(NodeOutput::one(Value::object(m)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(LoraLoader)?;
    r.register(LoraLoaderModelOnly)?;
    Ok(())
}
