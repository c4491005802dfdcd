//! Writes the deterministic test fixtures (see fixtures/README.md).
//!
//! Usage: `cargo run --bin gen_fixtures [REPO_ROOT]` (default: the current dir), or
//! `cargo run --bin gen_fixtures -- --sd3-wide-t5 PATH` to write the uncommitted 4096-wide
//! tiny T5 (`fixture::tiny_t5xxl_wide_bytes`) that scripts/goldens/gen_sd3_goldens.py reads;
//! `-- --t2i-sdxl PATH` writes the uncommitted tiny SDXL T2I-Adapter
//! (`fixture::tiny_t2i_sdxl_bytes`) for scripts/goldens/gen_t2i_goldens.py.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sd3-wide-t5") {
        let path = args
            .get(2)
            .ok_or_else(|| anyhow::anyhow!("--sd3-wide-t5 needs an output path"))?;
        std::fs::write(path, comfyrs::models::fixture::tiny_t5xxl_wide_bytes())?;
        println!("wrote {path}");
        return Ok(());
    }
    if args.get(1).map(String::as_str) == Some("--t2i-sdxl") {
        let path = args
            .get(2)
            .ok_or_else(|| anyhow::anyhow!("--t2i-sdxl needs an output path"))?;
        std::fs::write(path, comfyrs::models::fixture::tiny_t2i_sdxl_bytes())?;
        println!("wrote {path}");
        return Ok(());
    }
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
        (fx::TINY_FLUX_FILL_PATH, fx::tiny_flux_fill_bytes),
        (fx::TINY_FLUX_CANNY_PATH, fx::tiny_flux_canny_bytes),
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
        (fx::TINY_SD3_MEDIUM_PATH, fx::tiny_sd3_medium_bytes),
        (fx::TINY_SD35_MEDIUM_PATH, fx::tiny_sd35_medium_bytes),
        (fx::TINY_SD35_LARGE_PATH, fx::tiny_sd35_large_bytes),
        (
            fx::TINY_SD35_LARGE_FP8_SCALED_PATH,
            fx::tiny_sd35_large_fp8_scaled_bytes,
        ),
        (fx::TINY_CLIP_G_PATH, fx::tiny_clip_g_bytes),
        (
            fx::TINY_SD35_CONTROLNET_CANNY_PATH,
            fx::tiny_sd35_controlnet_canny_bytes,
        ),
        (
            fx::TINY_SD35_CONTROLNET_DOUBLE_Y_PATH,
            fx::tiny_sd35_controlnet_double_y_bytes,
        ),
        (fx::TINY_SD3_CONTROLNET_PATH, fx::tiny_sd3_controlnet_bytes),
        (fx::TINY_T2I_SD15_PATH, fx::tiny_t2i_sd15_bytes),
        (fx::TINY_T2I_LIGHT_PATH, fx::tiny_t2i_light_bytes),
        (
            fx::TINY_CONTROL_LORA_SD15_PATH,
            fx::tiny_control_lora_sd15_bytes,
        ),
        (fx::TINY_SD35_CKPT_PATH, fx::tiny_sd35_checkpoint_bytes),
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
