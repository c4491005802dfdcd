//! The model loaders of nodes.py and nodes_sd3.py (CheckpointLoaderSimple, VAELoader,
//! UNETLoader, CLIPLoader, DualCLIPLoader, TripleCLIPLoader), reading through the shared
//! [`ModelCache`]. Which file holds which family is decided in `crate::models`; a family or
//! text-encoder type comfyrs cannot run yet is a node error naming it.

use super::sd_types::{clip_payload, model_payload, split_checkpoint, ModelCache, SdVae};
use crate::env::Environment;
use crate::models::fp8::Fp8Kind;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use std::path::PathBuf;

/// `folder_paths.get_full_path_or_raise(folder, name)`.
pub fn model_path(env: &Environment, folder: &str, name: &str) -> Result<PathBuf, NodeError> {
    env.paths
        .find_model(folder, name)
        .ok_or_else(|| NodeError::Failed {
            message: format!("Model in folder '{folder}' with filename '{name}' not found."),
            exception_type: "FileNotFoundError".into(),
        })
}

struct CheckpointLoaderSimple;
impl Node for CheckpointLoaderSimple {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CheckpointLoaderSimple")
            .display("Load Checkpoint")
            .category("loaders")
            .description(
                "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            )
            .input(
                InputSpec::combo_fn("ckpt_name", |env| env.paths.list_models("checkpoints"))
                    .tooltip("The name of the checkpoint (model) to load."),
            )
            .output(OutputSpec::new("MODEL").tooltip("The model used for denoising latents."))
            .output(
                OutputSpec::new("CLIP").tooltip("The CLIP model used for encoding text prompts."),
            )
            .output(OutputSpec::new("VAE").tooltip(
                "The VAE model used for encoding and decoding images to and from latent space.",
            ))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let path = model_path(ctx.env, "checkpoints", i.string("ckpt_name")?)?;
        let cache = ctx.env.resources.get_or_default::<ModelCache>();
        let ck = cache.checkpoint(&path, &ctx.env.compute)?;
        let (model, mut clip, vae) = split_checkpoint(&ck);
        let emb = ctx.env.paths.model_dirs("embeddings");
        clip.encoder = clip.encoder.with_embedding_directories(emb);
        Ok(NodeOutput::values(vec![
            Value::object(model),
            Value::object(clip),
            Value::object(vae),
        ]))
    }
}

/// VAELoader's choices: vae files, the TAESD pairs present in vae_approx, then `pixel_space`.
fn vae_list(env: &Environment) -> Vec<String> {
    let mut vaes = env.paths.list_models("vae");
    let approx = env.paths.list_models("vae_approx");
    let has = |p: &str| approx.iter().any(|a| a.starts_with(p));
    for n in ["taesd", "taesdxl", "taesd3"] {
        if has(&format!("{n}_decoder.")) && has(&format!("{n}_encoder.")) {
            vaes.push(n.into());
        }
    }
    if has("taef1_encoder.") && has("taef1_decoder.") {
        vaes.push("taef1".into());
    }
    vaes.push("pixel_space".into());
    vaes
}

struct VaeLoader;
impl Node for VaeLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAELoader")
            .display("Load VAE")
            .category("loaders")
            .input(InputSpec::combo_fn("vae_name", vae_list))
            .output(OutputSpec::new("VAE"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let name = i.string("vae_name")?;
        if matches!(
            name,
            "taesd" | "taesdxl" | "taesd3" | "taef1" | "pixel_space"
        ) {
            return Err(NodeError::msg(format!(
                "VAELoader: '{name}' is not supported by comfyrs (only AutoencoderKL files)"
            )));
        }
        let path = model_path(ctx.env, "vae", name)?;
        let cache = ctx.env.resources.get_or_default::<ModelCache>();
        Ok(NodeOutput::one(Value::object(SdVae(
            cache.vae(&path, &ctx.env.compute)?,
        ))))
    }
}

fn text_encoder_input(name: &str) -> InputSpec {
    InputSpec::combo_fn(name, |env| env.paths.list_models("text_encoders"))
}

fn device_input() -> InputSpec {
    InputSpec::combo("device", &["default", "cpu"])
        .opt("advanced", true)
        .optional()
}

/// UNETLoader's `weight_dtype` as ComfyUI reads it (nodes.py `load_unet`): `default` keeps
/// the file's dtype rule, the fp8 choices store the weights in that format. `fp8_e4m3fn_fast`
/// stores e4m3fn too; its fp8 matmul needs fp8 compute (`supports_fp8_compute`: Ada/Hopper
/// GPUs), which ComfyUI never picks on the CPU and comfyrs does not have, so it computes
/// like `fp8_e4m3fn` (widened per operation, ComfyUI's `manual_cast`).
fn fp8_weight_dtype(choice: &str) -> Result<Option<Fp8Kind>, NodeError> {
    match choice {
        "default" => Ok(None),
        "fp8_e4m3fn" | "fp8_e4m3fn_fast" => Ok(Some(Fp8Kind::E4m3fn)),
        "fp8_e5m2" => Ok(Some(Fp8Kind::E5m2)),
        other => Err(NodeError::input(
            "weight_dtype",
            format!(
                "weight_dtype '{other}' is not one of default, fp8_e4m3fn, fp8_e4m3fn_fast, \
                 fp8_e5m2"
            ),
        )),
    }
}

struct UnetLoader;
impl Node for UnetLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("UNETLoader")
            .display("Load Diffusion Model")
            .category("advanced/loaders")
            .input(InputSpec::combo_fn("unet_name", |env| {
                env.paths.list_models("diffusion_models")
            }))
            .input(InputSpec::combo(
                "weight_dtype",
                &["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
            ))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let path = model_path(ctx.env, "diffusion_models", i.string("unet_name")?)?;
        let weight_dtype = fp8_weight_dtype(i.string("weight_dtype")?)?;
        let cache = ctx.env.resources.get_or_default::<ModelCache>();
        let m = cache.diffusion_model(&path, &ctx.env.compute, weight_dtype)?;
        let mut model = model_payload(m.model.clone(), &m.weights, m.family, m.prediction);
        model.diffusion = model.diffusion.with_fp8_storage(weight_dtype);
        Ok(NodeOutput::one(Value::object(model)))
    }
}

/// Loads `names` from the text_encoders folders as `clip_type` into a CLIP payload.
fn load_clip(ctx: &NodeContext, names: &[&str], clip_type: &str) -> Result<NodeOutput, NodeError> {
    let paths = names
        .iter()
        .map(|n| model_path(ctx.env, "text_encoders", n))
        .collect::<Result<Vec<_>, _>>()?;
    let emb = ctx.env.paths.model_dirs("embeddings");
    let cache = ctx.env.resources.get_or_default::<ModelCache>();
    let files = cache.text_encoders(&paths, clip_type, &ctx.env.compute, emb)?;
    Ok(NodeOutput::one(Value::object(clip_payload(
        &files.text,
        &files.weights,
    ))))
}

struct ClipLoader;
impl Node for ClipLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPLoader")
            .display("Load CLIP")
            .category("advanced/loaders")
            .description(
                "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ \
                 clip-g / clip-l\nstable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\n\
                 lumina2: gemma 2 2B\nwan: umt5 xxl\n hidream: llama-3.1 (Recommend) or t5\n\
                 omnigen2: qwen vl 2.5 3B",
            )
            .input(text_encoder_input("clip_name"))
            .input(InputSpec::combo(
                "type",
                &[
                    "stable_diffusion",
                    "stable_cascade",
                    "sd3",
                    "stable_audio",
                    "mochi",
                    "ltxv",
                    "pixart",
                    "cosmos",
                    "lumina2",
                    "wan",
                    "hidream",
                    "chroma",
                    "ace",
                    "omnigen2",
                    "qwen_image",
                    "hunyuan_image",
                ],
            ))
            .input(device_input())
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        load_clip(ctx, &[i.string("clip_name")?], i.string("type")?)
    }
}

struct DualClipLoader;
impl Node for DualClipLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DualCLIPLoader")
            .category("advanced/loaders")
            .description(
                "[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, \
                 t5\nflux: clip-l, t5\nhidream: at least one of t5 or llama, recommended t5 and \
                 llama\nhunyuan_image: qwen2.5vl 7b and byt5 small",
            )
            .input(text_encoder_input("clip_name1"))
            .input(text_encoder_input("clip_name2"))
            .input(InputSpec::combo(
                "type",
                &[
                    "sdxl",
                    "sd3",
                    "flux",
                    "hunyuan_video",
                    "hidream",
                    "hunyuan_image",
                ],
            ))
            .input(device_input())
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        load_clip(
            ctx,
            &[i.string("clip_name1")?, i.string("clip_name2")?],
            i.string("type")?,
        )
    }
}

struct TripleClipLoader;
impl Node for TripleClipLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TripleCLIPLoader")
            .v3()
            .module("comfy_extras.nodes_sd3")
            .category("advanced/loaders")
            .description("[Recipes]\n\nsd3: clip-l, clip-g, t5")
            .input(text_encoder_input("clip_name1"))
            .input(text_encoder_input("clip_name2"))
            .input(text_encoder_input("clip_name3"))
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        // Three files always build ComfyUI's SD3 text encoder.
        load_clip(
            ctx,
            &[
                i.string("clip_name1")?,
                i.string("clip_name2")?,
                i.string("clip_name3")?,
            ],
            "sd3",
        )
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(CheckpointLoaderSimple)?;
    r.register(VaeLoader)?;
    r.register(UnetLoader)?;
    r.register(ClipLoader)?;
    r.register(DualClipLoader)?;
    r.register(TripleClipLoader)?;
    Ok(())
}
