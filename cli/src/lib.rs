//! The packs the shipped `comfyrs` binary includes: every crate under `nodes/`, in load order.
//! Adding a pack is a line here and a dependency line in this package's Cargo.toml.

use comfyrs::node::RegisterFn;

/// Every pack under `nodes/`, in load order (sorted by pack name).
pub const PACKS: &[RegisterFn] = &[
    comfyrs_pack_comfymath::register,
    comfyrs_pack_comfyroll::register,
    comfyrs_pack_custom_scripts::register,
    comfyrs_pack_essentials::register,
    comfyrs_pack_image_saver::register,
    comfyrs_pack_impact::register,
    comfyrs_pack_jps::register,
    comfyrs_pack_kjnodes::register,
    comfyrs_pack_mxtoolkit::register,
    comfyrs_pack_rgthree::register,
    comfyrs_pack_sdxl_prompt_styler::register,
    comfyrs_pack_use_everywhere::register,
    comfyrs_pack_was::register,
];
