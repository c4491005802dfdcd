//! The base models behind the Model API and ai-toolkit model ids: which files each family
//! loads (configured per family) and whether they are there. An id whose base files are
//! missing is not listed (`GET /v1/models`) and answers `404 MODEL_NOT_FOUND` naming them.
//!
//! Pipelines are written with one CheckpointLoaderSimple; FLUX.1-dev may instead be the
//! quickstart's separate files, and [`BaseFiles::apply`] then swaps that node for UNETLoader +
//! DualCLIPLoader (type flux) + VAELoader, rewiring every consumer (LoraLoaders included).

use super::config::ServerlessConfig;
use super::errors::{code, ServerlessError};
use crate::env::Environment;
use serde_json::{json, Value};

/// A model family a serverless id runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Sd15,
    Sdxl,
    /// FLUX.1-dev: an all-in-one checkpoint (`flux1-dev-fp8.safetensors`) or the split files.
    Flux,
}

/// The files a base resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseFiles {
    /// One checkpoint under models/checkpoints.
    Checkpoint(String),
    /// FLUX.1-dev as separate files.
    FluxSplit(super::config::FluxFiles),
}

impl BaseFiles {
    /// The file named as the model's base (`base_checkpoint`).
    pub fn name(&self) -> &str {
        match self {
            BaseFiles::Checkpoint(c) => c,
            BaseFiles::FluxSplit(f) => &f.diffusion_model,
        }
    }

    /// Points the CheckpointLoaderSimple `node` of `graph` (API format) at these files: its
    /// `ckpt_name`, or for split files UNETLoader `node` (MODEL, output 0 as before), a
    /// DualCLIPLoader `{node}_clip` and a VAELoader `{node}_vae`, with every input that read
    /// the checkpoint's CLIP (output 1) or VAE (output 2) rewired to them.
    pub fn apply(&self, graph: &mut Value, node: &str) {
        let Some(g) = graph.as_object_mut() else {
            return;
        };
        match self {
            BaseFiles::Checkpoint(c) => {
                if let Some(inputs) = g.get_mut(node).and_then(|n| n.get_mut("inputs")) {
                    inputs["ckpt_name"] = json!(c);
                }
            }
            BaseFiles::FluxSplit(f) => {
                let (clip, vae) = (format!("{node}_clip"), format!("{node}_vae"));
                for n in g.values_mut() {
                    let Some(inputs) = n.get_mut("inputs").and_then(Value::as_object_mut) else {
                        continue;
                    };
                    for v in inputs.values_mut() {
                        if v.get(0).and_then(Value::as_str) == Some(node) {
                            match v.get(1).and_then(Value::as_u64) {
                                Some(1) => *v = json!([clip, 0]),
                                Some(2) => *v = json!([vae, 0]),
                                _ => {}
                            }
                        }
                    }
                }
                g.insert(
                    node.to_string(),
                    json!({"class_type": "UNETLoader", "inputs": {
                        "unet_name": f.diffusion_model, "weight_dtype": "default"}}),
                );
                g.insert(
                    clip,
                    json!({"class_type": "DualCLIPLoader", "inputs": {
                        "clip_name1": f.t5xxl, "clip_name2": f.clip_l, "type": "flux"}}),
                );
                g.insert(
                    vae,
                    json!({"class_type": "VAELoader", "inputs": {"vae_name": f.vae}}),
                );
            }
        }
    }
}

fn present(env: &Environment, kind: &str, name: &str) -> bool {
    env.paths.find_model(kind, name).is_some()
}

impl Base {
    /// The checkpoint file (under models/checkpoints) configured for this family.
    pub fn checkpoint(self, cfg: &ServerlessConfig) -> &str {
        match self {
            Base::Sd15 => &cfg.sd15_checkpoint,
            Base::Sdxl => &cfg.sdxl_checkpoint,
            Base::Flux => &cfg.flux_checkpoint,
        }
    }

    /// The config key naming the checkpoint (for error messages).
    pub fn config_key(self) -> &'static str {
        match self {
            Base::Sd15 => "sd15_checkpoint",
            Base::Sdxl => "sdxl_checkpoint",
            Base::Flux => "flux_checkpoint",
        }
    }

    /// The files this family loads: its checkpoint when present; for Flux otherwise the
    /// split files when all four are present. None: not available.
    pub fn resolve(self, cfg: &ServerlessConfig, env: &Environment) -> Option<BaseFiles> {
        let ckpt = self.checkpoint(cfg);
        if present(env, "checkpoints", ckpt) {
            return Some(BaseFiles::Checkpoint(ckpt.to_string()));
        }
        let f = &cfg.flux_files;
        let split = self == Base::Flux
            && present(env, "diffusion_models", &f.diffusion_model)
            && present(env, "text_encoders", &f.clip_l)
            && present(env, "text_encoders", &f.t5xxl)
            && present(env, "vae", &f.vae);
        split.then(|| BaseFiles::FluxSplit(f.clone()))
    }

    /// [`Base::resolve`], or `404 MODEL_NOT_FOUND` naming what is missing.
    pub fn require(
        self,
        id: &str,
        cfg: &ServerlessConfig,
        env: &Environment,
    ) -> Result<BaseFiles, ServerlessError> {
        if let Some(files) = self.resolve(cfg, env) {
            return Ok(files);
        }
        let also = if self == Base::Flux {
            let f = &cfg.flux_files;
            format!(
                ", nor are its separate files (flux_files: diffusion_models/{}, \
                 text_encoders/{} and {}, vae/{})",
                f.diffusion_model, f.clip_l, f.t5xxl, f.vae
            )
        } else {
            String::new()
        };
        Err(ServerlessError::not_found(
            code::MODEL_NOT_FOUND,
            format!(
                "model {id:?} is not available on this server: its base checkpoint {:?} \
                 ({}) is not under models/checkpoints{also}",
                self.checkpoint(cfg),
                self.config_key()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_flux_files_replace_the_checkpoint_loader() {
        let mut g = json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
            "1_lora0": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1]}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1_lora0", 1], "text": "a"}},
            "3": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 2], "samples": ["9", 0]}}
        });
        BaseFiles::FluxSplit(Default::default()).apply(&mut g, "1");
        assert_eq!(g["1"]["class_type"], "UNETLoader");
        assert_eq!(g["1"]["inputs"]["unet_name"], "flux1-dev.safetensors");
        assert_eq!(
            g["1_clip"]["inputs"]["clip_name1"],
            "t5xxl_fp16.safetensors"
        );
        assert_eq!(g["1_clip"]["inputs"]["type"], "flux");
        assert_eq!(g["1_vae"]["inputs"]["vae_name"], "ae.safetensors");
        assert_eq!(g["1_lora0"]["inputs"]["model"], json!(["1", 0]));
        assert_eq!(g["1_lora0"]["inputs"]["clip"], json!(["1_clip", 0]));
        assert_eq!(g["2"]["inputs"]["clip"], json!(["1_lora0", 1]));
        assert_eq!(g["3"]["inputs"]["vae"], json!(["1_vae", 0]));
        let mut g2 =
            json!({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}}});
        BaseFiles::Checkpoint("y.safetensors".into()).apply(&mut g2, "1");
        assert_eq!(g2["1"]["inputs"]["ckpt_name"], "y.safetensors");
    }
}
