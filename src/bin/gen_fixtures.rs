//! Writes the deterministic test fixtures (see fixtures/README.md).
//!
//! Usage: `cargo run --bin gen_fixtures [REPO_ROOT]` (default: the current dir).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let path = root.join(comfyrs::models::fixture::TINY_SD15_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = comfyrs::models::fixture::tiny_sd15_bytes();
    std::fs::write(&path, &bytes)?;
    println!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}
