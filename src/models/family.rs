//! The diffusion-model families comfyrs runs, and how a UNet is recognised as one
//! (ComfyUI's `supported_models` configs matched by `model_detection`).
//!
//! SD3/SD3.5 files are MMDiTs (`joint_blocks.0.context_block.attn.qkv.weight`), all one
//! family (`SD3`, matched on 16 input channels).
//!
//! Flux files are told apart by keys (`Family::detect_flux` on a [`super::flux::Config`]):
//! with `guidance_in` = `Flux` (dev and its variants), without = `FluxSchnell`.
//!
//! A family fixes what the executor and nodes must know beyond the network itself: its
//! latent format, which text encoders its checkpoints carry and how they are named, and
//! what extra model input (`y`) a cond turns into when sampling starts.
//!
//! Detection follows ComfyUI: a detected UNet config matches a family when the family's
//! preset keys are a subset of it (SD15: context 768, 320 channels, no linear projections,
//! no ADM; SDXL: 320 channels, linear projections, transformer depths [0,0,2,2,10,10],
//! context 2048, ADM 2816; the refiner: 384 channels, context 1280, ADM 2560, depths
//! [0,0,4,4,4,4,0,0]; SSD-1B, Segmind Vega and KOALA are SDXL with other depths). As a
//! superset of ComfyUI's rule, reduced-width models (the test fixtures) are recognised by
//! structure: no ADM and conv projections = SD1.x; an ADM input = SDXL, or the refiner when
//! its ADM width is the context width + 1280 (its pooled CLIP-G is its only text encoder).

use candle_core::Tensor;

use super::latent_format::LatentFormat;
use super::unet::adm::{sdxl_adm, sdxl_refiner_adm, SizeConds};
use super::unet::UnetConfig;
use super::{ModelError, Result};

/// A family of diffusion models (ComfyUI's `supported_models` class name in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// SD1.x (`SD15`).
    Sd15,
    /// SDXL base and its distilled variants (`SDXL`, `SSD1B`, `Segmind_Vega`, `KOALA_*`).
    Sdxl,
    /// The SDXL refiner (`SDXLRefiner`).
    SdxlRefiner,
    /// Flux.1 with guidance embedding: dev, Krea, Fill (`FluxInpaint`), Canny/Depth,
    /// Kontext (`Flux`); ModelSamplingFlux, default shift 1.15.
    Flux,
    /// Flux.1 without guidance embedding (`FluxSchnell`): discrete flow, shift 1,
    /// multiplier 1.
    FluxSchnell,
    /// SD3 medium, SD3.5 medium and large (`SD3`): an MMDiT, discrete flow with shift 3,
    /// multiplier 1000.
    Sd3,
}

/// What a family's `extra_conds` needs of one cond (ComfyUI's `encode_model_conds`
/// parameters, defaults not yet applied).
#[derive(Debug, Clone, Copy)]
pub struct CondParams<'a> {
    pub pooled: Option<&'a Tensor>,
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub crop_w: Option<f64>,
    pub crop_h: Option<f64>,
    pub target_width: Option<f64>,
    pub target_height: Option<f64>,
    pub aesthetic_score: Option<f64>,
    /// The latent's size in pixels (width, height).
    pub latent_pixels: (usize, usize),
    /// `prompt_type == "positive"`.
    pub positive: bool,
}

impl Family {
    /// ComfyUI's name for the family's model config.
    pub fn comfy_name(self) -> &'static str {
        match self {
            Family::Sd15 => "SD15",
            Family::Sdxl => "SDXL",
            Family::SdxlRefiner => "SDXLRefiner",
            Family::Flux => "Flux",
            Family::FluxSchnell => "FluxSchnell",
            Family::Sd3 => "SD3",
        }
    }

    pub fn latent_format(self) -> LatentFormat {
        match self {
            Family::Sd15 => LatentFormat::sd15(),
            Family::Sdxl | Family::SdxlRefiner => LatentFormat::sdxl(),
            Family::Flux | Family::FluxSchnell => LatentFormat::flux(),
            Family::Sd3 => LatentFormat::sd3(),
        }
    }

    /// Whether the family is a Flux transformer.
    pub fn is_flux(self) -> bool {
        matches!(self, Family::Flux | Family::FluxSchnell)
    }

    /// Whether the family's network is a DiT whose text tokens are a `CONDRegular` (Flux,
    /// SD3): conds of different token counts are never batched together.
    pub fn regular_cross_attn(self) -> bool {
        matches!(self, Family::Flux | Family::FluxSchnell | Family::Sd3)
    }

    /// The family of a Flux config (ComfyUI's `FluxInpaint`/`Flux`/`FluxSchnell` match on
    /// `guidance_embed`; Fill's 96 input channels keep Flux's sampling).
    pub fn detect_flux(cfg: &super::flux::Config) -> Family {
        if cfg.guidance_embed {
            Family::Flux
        } else {
            Family::FluxSchnell
        }
    }

    /// The family of a detected UNet config: ComfyUI's presets first, then the structural
    /// rule for reduced-width models (module docs). `None`: no family matches.
    pub fn detect(cfg: &UnetConfig) -> Option<Family> {
        let depth = cfg.transformer_depth.as_slice();
        let linear = cfg.use_linear_in_transformer;
        let sdxl_depths: [&[usize]; 5] = [
            &[0, 0, 2, 2, 10, 10], // SDXL
            &[0, 0, 2, 2, 4, 4],   // SSD-1B
            &[0, 0, 1, 1, 2, 2],   // Segmind Vega
            &[0, 2, 5],            // KOALA-700M
            &[0, 2, 6],            // KOALA-1B
        ];
        match (
            cfg.model_channels,
            cfg.context_dim,
            cfg.adm_in_channels,
            linear,
        ) {
            (320, Some(768), None, false) => return Some(Family::Sd15),
            (320, Some(2048), Some(2816), true) if sdxl_depths.contains(&depth) => {
                return Some(Family::Sdxl)
            }
            (384, Some(1280), Some(2560), true) if depth == [0, 0, 4, 4, 4, 4, 0, 0] => {
                return Some(Family::SdxlRefiner)
            }
            _ => {}
        }
        let full_width = cfg.model_channels >= 320;
        match (cfg.adm_in_channels, cfg.context_dim) {
            // Full-width UNets must match a preset exactly, as in ComfyUI.
            _ if full_width => None,
            (None, Some(_)) if !linear => Some(Family::Sd15),
            (Some(adm), Some(ctx)) if adm == ctx + 1280 => Some(Family::SdxlRefiner),
            (Some(adm), Some(_)) if adm > 1536 => Some(Family::Sdxl),
            _ => None,
        }
    }

    /// The family's `extra_conds` beyond cross-attention: SDXL's ADM vector `y`.
    pub fn extra_y(self, p: &CondParams) -> Result<Option<Tensor>> {
        if self == Family::Sd15 {
            return Ok(None);
        }
        if self == Family::Sd3 {
            // model_base.SD3.encode_adm: the pooled output, or no `y` at all.
            return Ok(p.pooled.cloned());
        }
        let pooled = p.pooled.ok_or_else(|| {
            ModelError::BadInput(format!(
                "{} needs the conditioning's pooled_output (encode the prompt with an {} \
                 text encoder)",
                self.comfy_name(),
                self.comfy_name()
            ))
        })?;
        if self.is_flux() {
            // model_base.Flux.encode_adm: the pooled output is `y`.
            return Ok(Some(pooled.clone()));
        }
        let (lw, lh) = p.latent_pixels;
        let width = p.width.unwrap_or(lw as f64);
        let height = p.height.unwrap_or(lh as f64);
        let sizes = SizeConds {
            width,
            height,
            crop_w: p.crop_w.unwrap_or(0.0),
            crop_h: p.crop_h.unwrap_or(0.0),
            target_width: p.target_width.unwrap_or(width),
            target_height: p.target_height.unwrap_or(height),
        };
        let y = match self {
            Family::Sdxl => sdxl_adm(pooled, &sizes)?,
            _ => {
                let default = if p.positive { 6.0 } else { 2.5 };
                sdxl_refiner_adm(pooled, &sizes, p.aesthetic_score.unwrap_or(default))?
            }
        };
        Ok(Some(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mc: usize, ctx: usize, adm: Option<usize>, linear: bool, depth: &[usize]) -> UnetConfig {
        UnetConfig {
            in_channels: 4,
            out_channels: 4,
            model_channels: mc,
            channel_mult: vec![],
            num_res_blocks: vec![],
            transformer_depth: depth.to_vec(),
            transformer_depth_middle: 1,
            transformer_depth_output: vec![],
            context_dim: Some(ctx),
            use_linear_in_transformer: linear,
            adm_in_channels: adm,
            num_heads: None,
            num_head_channels: Some(64),
        }
    }

    #[test]
    fn comfyui_presets() {
        let sd15 = cfg(320, 768, None, false, &[1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(Family::detect(&sd15), Some(Family::Sd15));
        let sdxl = cfg(320, 2048, Some(2816), true, &[0, 0, 2, 2, 10, 10]);
        assert_eq!(Family::detect(&sdxl), Some(Family::Sdxl));
        let refiner = cfg(384, 1280, Some(2560), true, &[0, 0, 4, 4, 4, 4, 0, 0]);
        assert_eq!(Family::detect(&refiner), Some(Family::SdxlRefiner));
        // A depth-1 SDXL is no preset (ComfyUI: "Could not detect model type").
        let shallow = cfg(320, 2048, Some(2816), true, &[0, 0, 1, 1, 1, 1]);
        assert_eq!(Family::detect(&shallow), None);
        // SD2 (context 1024, linear) is not a family comfyrs runs.
        let sd2 = cfg(320, 1024, None, true, &[1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(Family::detect(&sd2), None);
    }

    #[test]
    fn reduced_width_models_by_structure() {
        assert_eq!(
            Family::detect(&cfg(32, 32, None, false, &[1, 1])),
            Some(Family::Sd15)
        );
        assert_eq!(
            Family::detect(&cfg(32, 64, Some(32 + 1536), true, &[0, 1])),
            Some(Family::Sdxl)
        );
        assert_eq!(
            Family::detect(&cfg(32, 32, Some(32 + 1280), true, &[0, 1])),
            Some(Family::SdxlRefiner)
        );
    }
}
