//! The loader classes of ComfyUI 0.3.64 for model kinds comfyrs cannot run yet (CLIP vision,
//! style models, GLIGEN, hypernetworks, PhotoMaker, ...).
//!
//! They exist so that `/object_info` matches ComfyUI's (the frontend registers loader widgets
//! by class name and breaks when one is missing) and their combos list the files in their
//! folders, so workflows using them load, validate and can be edited. Running one fails with an
//! error naming the model kind comfyrs lacks; it never pretends to load anything. A family that
//! lands replaces its entry here with the real node.

use crate::env::Environment;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError,
};

/// One pending loader: its schema as ComfyUI declares it, and the model kind it needs.
struct Pending {
    schema: fn() -> NodeSchema,
    kind: &'static str,
}

impl Node for Pending {
    fn schema(&self) -> NodeSchema {
        (self.schema)()
    }
    fn execute(&self, _ctx: &mut NodeContext, _i: &Inputs) -> Result<NodeOutput, NodeError> {
        let name = (self.schema)().name;
        Err(NodeError::Failed {
            message: format!(
                "{name}: comfyrs cannot run {} yet; this loader is listed so workflows that use \
                 it load and validate, but it has no implementation",
                self.kind
            ),
            exception_type: "NotImplementedError".into(),
        })
    }
}

/// Files with one of `exts` in a model kind's folders (ComfyUI's `get_filename_list` for
/// folders with their own extension sets).
fn files_with(env: &Environment, kind: &str, exts: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for dir in env.paths.model_dirs(kind) {
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| exts.contains(&x.to_ascii_lowercase().as_str()))
                {
                    if let Ok(rel) = p.strip_prefix(&dir) {
                        out.push(rel.to_string_lossy().replace('\\', "/"));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Diffusers folders: directories holding a `model_index.json` (DiffusersLoader's list).
fn diffusers_dirs(env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    for root in env.paths.model_dirs("diffusers") {
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    if p.join("model_index.json").is_file() {
                        if let Ok(rel) = p.strip_prefix(&root) {
                            out.push(rel.to_string_lossy().replace('\\', "/"));
                        }
                    }
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

fn models(kind: &'static str) -> impl Fn(&Environment) -> Vec<String> + Send + Sync + 'static {
    move |env| env.paths.list_models(kind)
}

fn checkpoint_loader() -> NodeSchema {
    let mut s = NodeSchema::new("CheckpointLoader")
        .display("Load Checkpoint With Config (DEPRECATED)")
        .category("advanced/loaders")
        .input(InputSpec::combo_fn("config_name", |env| {
            files_with(env, "configs", &["yaml"])
        }))
        .input(InputSpec::combo_fn("ckpt_name", models("checkpoints")))
        .output(OutputSpec::new("MODEL"))
        .output(OutputSpec::new("CLIP"))
        .output(OutputSpec::new("VAE"));
    s.deprecated = true;
    s
}

fn diffusers_loader() -> NodeSchema {
    NodeSchema::new("DiffusersLoader")
        .category("advanced/loaders/deprecated")
        .input(InputSpec::combo_fn("model_path", diffusers_dirs))
        .output(OutputSpec::new("MODEL"))
        .output(OutputSpec::new("CLIP"))
        .output(OutputSpec::new("VAE"))
}

fn unclip_checkpoint_loader() -> NodeSchema {
    NodeSchema::new("unCLIPCheckpointLoader")
        .category("loaders")
        .input(InputSpec::combo_fn("ckpt_name", models("checkpoints")))
        .output(OutputSpec::new("MODEL"))
        .output(OutputSpec::new("CLIP"))
        .output(OutputSpec::new("VAE"))
        .output(OutputSpec::new("CLIP_VISION"))
}

fn clip_vision_loader() -> NodeSchema {
    NodeSchema::new("CLIPVisionLoader")
        .display("Load CLIP Vision")
        .category("loaders")
        .input(InputSpec::combo_fn("clip_name", models("clip_vision")))
        .output(OutputSpec::new("CLIP_VISION"))
}

fn style_model_loader() -> NodeSchema {
    NodeSchema::new("StyleModelLoader")
        .display("Load Style Model")
        .category("loaders")
        .input(InputSpec::combo_fn(
            "style_model_name",
            models("style_models"),
        ))
        .output(OutputSpec::new("STYLE_MODEL"))
}

fn gligen_loader() -> NodeSchema {
    NodeSchema::new("GLIGENLoader")
        .category("loaders")
        .input(InputSpec::combo_fn("gligen_name", models("gligen")))
        .output(OutputSpec::new("GLIGEN"))
}

fn hypernetwork_loader() -> NodeSchema {
    NodeSchema::new("HypernetworkLoader")
        .category("loaders")
        .module("comfy_extras.nodes_hypernetwork")
        .input(InputSpec::of("model", "MODEL"))
        .input(InputSpec::combo_fn(
            "hypernetwork_name",
            models("hypernetworks"),
        ))
        .input(
            InputSpec::float("strength")
                .default(1.0)
                .min(-10.0)
                .max(10.0)
                .step(0.01),
        )
        .output(OutputSpec::new("MODEL"))
}

fn image_only_checkpoint_loader() -> NodeSchema {
    NodeSchema::new("ImageOnlyCheckpointLoader")
        .display("Image Only Checkpoint Loader (img2vid model)")
        .category("loaders/video_models")
        .module("comfy_extras.nodes_video_model")
        .input(InputSpec::combo_fn("ckpt_name", models("checkpoints")))
        .output(OutputSpec::new("MODEL"))
        .output(OutputSpec::new("CLIP_VISION"))
        .output(OutputSpec::new("VAE"))
}

fn photomaker_loader() -> NodeSchema {
    let mut s = NodeSchema::new("PhotoMakerLoader")
        .category("_for_testing/photomaker")
        .module("comfy_extras.nodes_photomaker")
        .v3()
        .input(InputSpec::combo_fn(
            "photomaker_model_name",
            models("photomaker"),
        ))
        .output(OutputSpec::new("PHOTOMAKER"));
    s.experimental = true;
    s
}

fn quadruple_clip_loader() -> NodeSchema {
    let mut s = NodeSchema::new("QuadrupleCLIPLoader")
        .category("advanced/loaders")
        .module("comfy_extras.nodes_hidream")
        .description("[Recipes]\n\nhidream: long clip-l, long clip-g, t5xxl, llama_8b_3.1_instruct")
        .v3();
    for n in ["clip_name1", "clip_name2", "clip_name3", "clip_name4"] {
        s = s.input(InputSpec::combo_fn(n, models("text_encoders")));
    }
    s.output(OutputSpec::new("CLIP"))
}

fn model_patch_loader() -> NodeSchema {
    let mut s = NodeSchema::new("ModelPatchLoader")
        .category("advanced/loaders")
        .module("comfy_extras.nodes_model_patch")
        .input(InputSpec::combo_fn("name", models("model_patches")))
        .output(OutputSpec::new("MODEL_PATCH"));
    s.experimental = true;
    s
}

fn audio_encoder_loader() -> NodeSchema {
    NodeSchema::new("AudioEncoderLoader")
        .category("loaders")
        .module("comfy_extras.nodes_audio_encoder")
        .v3()
        .input(InputSpec::combo_fn(
            "audio_encoder_name",
            models("audio_encoders"),
        ))
        .output(OutputSpec::new("AUDIO_ENCODER"))
}

/// A loader's schema builder and the model kind named in its error.
type PendingEntry = (fn() -> NodeSchema, &'static str);

/// Every pending loader.
const PENDING: &[PendingEntry] = &[
    (
        checkpoint_loader,
        "checkpoints loaded with a legacy YAML config",
    ),
    (diffusers_loader, "diffusers-format model folders"),
    (unclip_checkpoint_loader, "unCLIP checkpoints (CLIP vision)"),
    (clip_vision_loader, "CLIP vision models"),
    (style_model_loader, "style models"),
    (gligen_loader, "GLIGEN models"),
    (hypernetwork_loader, "hypernetworks"),
    (
        image_only_checkpoint_loader,
        "image-to-video (SVD) checkpoints",
    ),
    (photomaker_loader, "PhotoMaker models"),
    (quadruple_clip_loader, "HiDream's four text encoders"),
    (model_patch_loader, "model patches"),
    (audio_encoder_loader, "audio encoders"),
];

/// Whether `class` is one of the loaders listed here (registered, but not runnable).
pub fn is_pending(class: &str) -> bool {
    PENDING.iter().any(|(schema, _)| schema().name == class)
}

/// Registers every pending loader. A class that another module registers for real is a
/// `Duplicate` error: the family that lands removes its entry here, so each class has one
/// implementation.
pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    for (schema, kind) in PENDING {
        r.register(Pending {
            schema: *schema,
            kind,
        })?;
    }
    Ok(())
}
