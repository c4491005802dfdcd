//! Writes the deterministic test fixtures (see fixtures/README.md).
//!
//! Usage: `cargo run --bin gen_fixtures [REPO_ROOT]` (default: the current dir).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    use comfyrs::models::fixture as fx;
    type Writer = fn() -> Vec<u8>;
    use comfyrs::models::upscale::fixture as up;
    let files: &[(&str, Writer)] = &[
        (fx::TINY_SD15_PATH, fx::tiny_sd15_bytes),
        (fx::TINY_SDXL_PATH, fx::tiny_sdxl_bytes),
        (fx::TINY_SDXL_REFINER_PATH, fx::tiny_sdxl_refiner_bytes),
        (fx::TINY_FLUX_PATH, fx::tiny_flux_bytes),
        (fx::TINY_FLUX_SCHNELL_PATH, fx::tiny_flux_schnell_bytes),
        (fx::TINY_FLUX_VAE_PATH, fx::tiny_flux_vae_bytes),
        (fx::TINY_CLIP_L_PATH, fx::tiny_clip_l_bytes),
        (fx::TINY_T5XXL_PATH, fx::tiny_t5xxl_bytes),
        (
            fx::TINY_T5XXL_FP8_SCALED_PATH,
            fx::tiny_t5xxl_fp8_scaled_bytes,
        ),
        (fx::TINY_FLUX_DEV_FP8_PATH, fx::tiny_flux_dev_fp8_bytes),
        (
            fx::TINY_CONTROLNET_SD15_PATH,
            fx::tiny_controlnet_sd15_bytes,
        ),
        (
            fx::TINY_CONTROLNET_SDXL_PATH,
            fx::tiny_controlnet_sdxl_bytes,
        ),
        (up::TINY_RRDB_OLD_PATH, up::tiny_rrdb_old_bytes),
        (up::TINY_RRDB_NEW_PATH, up::tiny_rrdb_new_bytes),
        (up::TINY_SRVGG_PATH, up::tiny_srvgg_bytes),
    ];
    for &(rel, bytes) in files {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = bytes();
        std::fs::write(&path, &bytes)?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
