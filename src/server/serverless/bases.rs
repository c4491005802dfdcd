//! The base models behind the Model API and ai-toolkit model ids: which checkpoint each
//! family loads (configured per family) and whether it is there. An id whose base file is
//! missing is not listed (`GET /v1/models`) and answers `404 MODEL_NOT_FOUND` naming the file.

use super::config::ServerlessConfig;
use super::errors::{code, ServerlessError};

/// A model family a serverless id runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Sd15,
    Sdxl,
    /// FLUX.1-dev (an all-in-one checkpoint, e.g. `flux1-dev-fp8.safetensors`).
    Flux,
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

    /// Whether the base checkpoint is under a models root.
    pub fn present(self, cfg: &ServerlessConfig, env: &crate::env::Environment) -> bool {
        env.paths
            .find_model("checkpoints", self.checkpoint(cfg))
            .is_some()
    }

    /// The checkpoint name when present, else `404 MODEL_NOT_FOUND` naming it.
    pub fn require(
        self,
        id: &str,
        cfg: &ServerlessConfig,
        env: &crate::env::Environment,
    ) -> Result<String, ServerlessError> {
        if self.present(cfg, env) {
            return Ok(self.checkpoint(cfg).to_string());
        }
        Err(ServerlessError::not_found(
            code::MODEL_NOT_FOUND,
            format!(
                "model {id:?} is not available on this server: its base checkpoint {:?} \
                 ({}) is not under models/checkpoints",
                self.checkpoint(cfg),
                self.config_key()
            ),
        ))
    }
}
