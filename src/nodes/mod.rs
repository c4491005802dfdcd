//! Built-in nodes, one file per family. Adding a node means adding it to its family's file
//! (and that file's `register`), nothing else.

pub mod alpha_masks;
pub mod animated_save;
pub mod attention_multiply;
pub mod clip_flux;
pub mod clip_sdxl;
pub mod conditioning;
pub mod conditioning_transform;
pub mod controlnet;
pub mod custom_sampling;
pub mod differential_diffusion;
pub mod epsilon_scaling;
pub mod flux;
pub mod guidance;
pub mod guidance_more;
pub mod guidance_pre_cfg;
pub mod image_edit;
pub mod image_io;
pub mod image_postprocess;
pub mod image_stitch;
pub mod image_transform;
pub mod image_yuv;
pub mod inpaint;
pub mod instruct_pix2pix;
pub mod latent;
pub mod latent_files;
pub mod latent_ops;
pub mod latent_sharpen;
pub mod latent_transform;
pub mod load_image_output;
pub mod loaders;
pub mod lora;
pub mod mask;
pub mod model_loaders_pending;
pub mod model_merge;
pub mod model_patches;
pub mod model_sampling;
pub mod model_save;
pub mod morphology;
pub mod perp_neg;
pub mod porter_duff;
mod primitives;
pub mod rebatch;
pub mod sampler_lcm_upscale;
pub mod sampling;
pub mod save_image_websocket;
pub mod sd3;
pub mod sd_types;
pub mod self_attention_guidance;
pub mod skip_layer_guidance;
mod strings;
pub mod upscale_model;
pub mod utils;
pub mod vae;
pub mod vae_tiled;

use crate::node::{Registry, RegistryError};

/// Registers every built-in node: the core set's register function, the same
/// [`crate::node::RegisterFn`] shape a pack exports.
pub fn register_builtin(r: &mut Registry) -> Result<(), RegistryError> {
    alpha_masks::register(r)?;
    animated_save::register(r)?;
    attention_multiply::register(r)?;
    clip_flux::register(r)?;
    clip_sdxl::register(r)?;
    conditioning::register(r)?;
    conditioning_transform::register(r)?;
    custom_sampling::register(r)?;
    epsilon_scaling::register(r)?;
    controlnet::register(r)?;
    flux::register(r)?;
    guidance::register(r)?;
    guidance_more::register(r)?;
    guidance_pre_cfg::register(r)?;
    perp_neg::register(r)?;
    skip_layer_guidance::register(r)?;
    self_attention_guidance::register(r)?;
    inpaint::register(r)?;
    image_edit::register(r)?;
    image_io::register(r)?;
    image_postprocess::register(r)?;
    image_transform::register(r)?;
    image_yuv::register(r)?;
    latent::register(r)?;
    latent_files::register(r)?;
    latent_ops::register(r)?;
    latent_sharpen::register(r)?;
    latent_transform::register(r)?;
    loaders::register(r)?;
    lora::register(r)?;
    mask::register(r)?;
    model_merge::register(r)?;
    model_save::register(r)?;
    model_patches::register(r)?;
    model_sampling::register(r)?;
    sampling::register(r)?;
    sampler_lcm_upscale::register(r)?;
    save_image_websocket::register(r)?;
    sd3::register(r)?;
    vae::register(r)?;
    vae_tiled::register(r)?;
    morphology::register(r)?;
    porter_duff::register(r)?;
    primitives::register(r)?;
    rebatch::register(r)?;
    strings::register(r)?;
    upscale_model::register(r)?;
    utils::register(r)?;
    differential_diffusion::register(r)?;
    image_stitch::register(r)?;
    instruct_pix2pix::register(r)?;
    load_image_output::register(r)?;
    // Loaders for model kinds not implemented yet (a class registered above is a Duplicate
    // error here: its pending entry must go when the family lands).
    model_loaders_pending::register(r)?;
    Ok(())
}

impl Registry {
    /// A registry holding every built-in node (no packs). Defined here, not in the node API,
    /// so that the API does not depend on the built-ins.
    pub fn with_builtin_nodes() -> Self {
        let mut r = Registry::new();
        register_builtin(&mut r).expect("built-in node schemas are valid");
        r
    }
}
