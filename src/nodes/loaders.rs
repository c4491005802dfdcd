//! CheckpointLoaderSimple and VAELoader (nodes.py), reading through the shared [`ModelCache`].

use super::sd_types::{split_checkpoint, ModelCache, SdVae};
use crate::env::Environment;
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

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(CheckpointLoaderSimple)?;
    r.register(VaeLoader)?;
    Ok(())
}
