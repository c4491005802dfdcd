//! A CLIP payload's text encoders and how their outputs become one conditioning
//! (ComfyUI's `SD1ClipModel`, `SDXLClipModel`, `SDXLRefinerClipModel` and `FluxClipModel`
//! with their tokenizers): SD1 encodes with CLIP-L alone; SDXL tokenizes the prompt for
//! CLIP-L and bigG separately, concatenates their hidden states along the channels (cut to
//! the shorter token count) and uses bigG's projected pooled output; the refiner has bigG
//! alone; Flux's conditioning is T5-XXL's output (one sequence of at least 256 tokens) and
//! its pooled output CLIP-L's, unprojected, of the first 77-token window; SD3's
//! (`SD3ClipModel`, any of CLIP-L, CLIP-G, T5-XXL) is in [`sd3`].

pub mod sd3;

use candle_core::Tensor;

use super::lora::{PatchCache, PatchEntry, PatchedClip};
use super::text::clip::WeightedToken;
use super::text::t5::T5Encoder;
use super::{ModelError, Result};
use std::sync::Arc;

/// Token windows per member, as ComfyUI's `{"l": …, "g": …}` token dicts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub l: Option<Vec<Vec<WeightedToken>>>,
    pub g: Option<Vec<Vec<WeightedToken>>>,
    /// T5-XXL's one sequence, or why the text could not be tokenized (too long), which
    /// [`Conditioner::encode`] reports.
    pub t5xxl: Option<std::result::Result<Vec<WeightedToken>, String>>,
}

/// The text encoders of one CLIP payload.
#[derive(Clone)]
pub enum Conditioner {
    Sd1 {
        l: PatchedClip,
    },
    Sdxl {
        l: PatchedClip,
        g: PatchedClip,
    },
    SdxlRefiner {
        g: PatchedClip,
    },
    /// Flux: T5-XXL gives the conditioning, CLIP-L the pooled output. LoRA patches apply to
    /// CLIP-L only (T5 keys of a LoRA match nothing and are reported as not loaded).
    Flux {
        clip_l: PatchedClip,
        t5xxl: T5Encoder,
    },
    /// SD3/SD3.5: any subset of CLIP-L, CLIP-G and T5-XXL (missing members give zeros, as
    /// in ComfyUI). LoRA patches apply to the CLIP members.
    Sd3(crate::models::conditioner::sd3::Sd3Encoders),
}

impl Conditioner {
    /// ComfyUI's name of the CLIP model class, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Conditioner::Sd1 { .. } => "SD1 (CLIP-L)",
            Conditioner::Sdxl { .. } => "SDXL (CLIP-L + CLIP-G)",
            Conditioner::SdxlRefiner { .. } => "SDXL refiner (CLIP-G)",
            Conditioner::Flux { .. } => "Flux (CLIP-L + T5-XXL)",
            Conditioner::Sd3(e) => e.kind(),
        }
    }

    /// Every member CLIP encoder (the ones LoRA patches; Flux's T5 is not one).
    pub fn members(&self) -> Vec<&PatchedClip> {
        match self {
            Conditioner::Sd1 { l } => vec![l],
            Conditioner::Sdxl { l, g } => vec![l, g],
            Conditioner::SdxlRefiner { g } => vec![g],
            Conditioner::Flux { clip_l, .. } => vec![clip_l],
            Conditioner::Sd3(e) => e.members(),
        }
    }

    /// The member CLIP encoders by role: `"l"` (CLIP-L) or `"g"` (CLIP-G / bigG), as
    /// ComfyUI's `clip_l.` / `clip_g.` key prefixes name them.
    pub fn members_by_role(&self) -> Vec<(&'static str, &PatchedClip)> {
        match self {
            Conditioner::Sd1 { l } => vec![("l", l)],
            Conditioner::Sdxl { l, g } => vec![("l", l), ("g", g)],
            Conditioner::SdxlRefiner { g } => vec![("g", g)],
            Conditioner::Flux { clip_l, .. } => vec![("l", clip_l)],
            Conditioner::Sd3(e) => {
                let mut v = Vec::new();
                if let Some(l) = &e.clip_l {
                    v.push(("l", l));
                }
                if let Some(g) = &e.clip_g {
                    v.push(("g", g));
                }
                v
            }
        }
    }

    /// Whether a T5-XXL encoder is among the members.
    pub fn has_t5(&self) -> bool {
        match self {
            Conditioner::Flux { .. } => true,
            Conditioner::Sd3(e) => e.t5xxl.is_some(),
            _ => false,
        }
    }

    /// The same encoders with `f(role, member)` applied to each CLIP member (roles as in
    /// [`Self::members_by_role`]).
    pub fn map_members(&self, f: impl Fn(&'static str, &PatchedClip) -> PatchedClip) -> Self {
        match self {
            Conditioner::Sd1 { l } => Conditioner::Sd1 { l: f("l", l) },
            Conditioner::Sdxl { l, g } => Conditioner::Sdxl {
                l: f("l", l),
                g: f("g", g),
            },
            Conditioner::SdxlRefiner { g } => Conditioner::SdxlRefiner { g: f("g", g) },
            Conditioner::Flux { clip_l, t5xxl } => Conditioner::Flux {
                clip_l: f("l", clip_l),
                t5xxl: t5xxl.clone(),
            },
            Conditioner::Sd3(e) => {
                let mut e = e.clone();
                e.clip_l = e.clip_l.as_ref().map(|c| f("l", c));
                e.clip_g = e.clip_g.as_ref().map(|c| f("g", c));
                Conditioner::Sd3(e)
            }
        }
    }

    fn map(&self, f: impl Fn(&PatchedClip) -> PatchedClip) -> Self {
        match self {
            Conditioner::Sd1 { l } => Conditioner::Sd1 { l: f(l) },
            Conditioner::Sdxl { l, g } => Conditioner::Sdxl { l: f(l), g: f(g) },
            Conditioner::SdxlRefiner { g } => Conditioner::SdxlRefiner { g: f(g) },
            Conditioner::Flux { clip_l, t5xxl } => Conditioner::Flux {
                clip_l: f(clip_l),
                t5xxl: t5xxl.clone(),
            },
            Conditioner::Sd3(e) => Conditioner::Sd3(e.map_clips(f)),
        }
    }

    /// The same encoders with one more LoRA (each member takes the patches under its keys).
    pub fn with_patch(&self, entry: PatchEntry, cache: Arc<PatchCache>) -> Self {
        self.map(|c| c.with_patch(entry.clone(), cache.clone()))
    }

    /// The same encoders looking up `embedding:NAME` in these directories.
    pub fn with_embedding_directories(&self, dirs: Vec<std::path::PathBuf>) -> Self {
        match self.map(|c| c.with_embedding_directories(dirs.clone())) {
            Conditioner::Flux { clip_l, t5xxl } => Conditioner::Flux {
                clip_l,
                t5xxl: t5xxl.with_embedding_directories(dirs),
            },
            Conditioner::Sd3(e) => Conditioner::Sd3(e.with_t5_embedding_directories(dirs)),
            other => other,
        }
    }

    /// `clip.tokenize(text)`: the prompt for every member.
    pub fn tokenize(&self, text: &str) -> Tokens {
        match self {
            Conditioner::Sd1 { l } => Tokens {
                l: Some(l.tokenize(text)),
                ..Tokens::default()
            },
            Conditioner::Sdxl { l, g } => Tokens {
                l: Some(l.tokenize(text)),
                g: Some(g.tokenize(text)),
                ..Tokens::default()
            },
            Conditioner::SdxlRefiner { g } => Tokens {
                g: Some(g.tokenize(text)),
                ..Tokens::default()
            },
            Conditioner::Flux { clip_l, t5xxl } => Tokens {
                l: Some(clip_l.tokenize(text)),
                t5xxl: Some(t5xxl.tokenize(text).map_err(|e| e.to_string())),
                ..Tokens::default()
            },
            Conditioner::Sd3(e) => e.tokenize(text),
        }
    }

    /// CLIPTextEncodeFlux's tokens: `clip_l` for CLIP-L, `t5xxl` for T5-XXL
    /// (`tokens = clip.tokenize(clip_l); tokens["t5xxl"] = clip.tokenize(t5xxl)["t5xxl"]`).
    pub fn tokenize_flux(&self, clip_l_text: &str, t5xxl_text: &str) -> Result<Tokens> {
        let Conditioner::Flux { t5xxl, .. } = self else {
            return Err(ModelError::BadInput(format!(
                "CLIPTextEncodeFlux needs a Flux CLIP (CLIP-L + T5-XXL, e.g. DualCLIPLoader \
                 type flux); this one is {}",
                self.kind()
            )));
        };
        let mut tokens = self.tokenize(clip_l_text);
        tokens.t5xxl = Some(t5xxl.tokenize(t5xxl_text).map_err(|e| e.to_string()));
        Ok(tokens)
    }

    /// CLIPTextEncodeSDXL's tokens: `text_g` for bigG, `text_l` for CLIP-L, the shorter
    /// list padded with the windows of `tokenize("")`.
    pub fn tokenize_sdxl(&self, text_g: &str, text_l: &str) -> Result<Tokens> {
        let Conditioner::Sdxl { l, g } = self else {
            return Err(ModelError::BadInput(format!(
                "CLIPTextEncodeSDXL needs an SDXL CLIP (CLIP-L + CLIP-G); this one is {}",
                self.kind()
            )));
        };
        let mut tg = g.tokenize(text_g);
        let mut tl = l.tokenize(text_l);
        if tl.len() != tg.len() {
            let (el, eg) = (l.tokenize(""), g.tokenize(""));
            while tl.len() < tg.len() {
                tl.extend(el.iter().cloned());
            }
            while tl.len() > tg.len() {
                tg.extend(eg.iter().cloned());
            }
        }
        Ok(Tokens {
            l: Some(tl),
            g: Some(tg),
            t5xxl: None,
        })
    }

    /// `encode_from_tokens(tokens, return_pooled=True)`: (cond [1, T, C], pooled [1, P]),
    /// f32 on the CPU. `clip_layer`: CLIPSetLastLayer's value for every member.
    pub fn encode(&self, tokens: &Tokens, clip_layer: Option<i32>) -> Result<(Tensor, Tensor)> {
        let need = |t: &Option<Vec<Vec<WeightedToken>>>, which: &str| {
            t.clone().ok_or_else(|| {
                ModelError::BadInput(format!(
                    "no tokens for the {which} encoder of this {} CLIP",
                    self.kind()
                ))
            })
        };
        match self {
            Conditioner::Sd1 { l } => l.encode(&need(&tokens.l, "CLIP-L")?, clip_layer),
            Conditioner::SdxlRefiner { g } => g.encode(&need(&tokens.g, "CLIP-G")?, clip_layer),
            Conditioner::Sdxl { l, g } => {
                let (g_out, g_pooled) = g.encode(&need(&tokens.g, "CLIP-G")?, clip_layer)?;
                let (l_out, _) = l.encode(&need(&tokens.l, "CLIP-L")?, clip_layer)?;
                let cut = l_out.dim(1)?.min(g_out.dim(1)?);
                let cond = Tensor::cat(&[&l_out.narrow(1, 0, cut)?, &g_out.narrow(1, 0, cut)?], 2)?;
                Ok((cond, g_pooled))
            }
            Conditioner::Flux { clip_l, t5xxl } => {
                let t5_tokens = match &tokens.t5xxl {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => return Err(ModelError::BadInput(e.clone())),
                    None => {
                        return Err(ModelError::BadInput(format!(
                            "no tokens for the T5-XXL encoder of this {} CLIP",
                            self.kind()
                        )))
                    }
                };
                let cond = t5xxl.encode(t5_tokens, clip_layer)?;
                // Only the first window's pooled output is used (ComfyUI encodes every
                // window and keeps `pooled[0:1]`); prompt weights never change the pooled
                // output, so that window is encoded alone and unweighted.
                let windows = need(&tokens.l, "CLIP-L")?;
                let first: Vec<Vec<WeightedToken>> = windows
                    .first()
                    .map(|w| vec![w.iter().map(|(t, _)| (t.clone(), 1.0)).collect()])
                    .unwrap_or_default();
                let (_, pooled) = clip_l.encode(&first, clip_layer)?;
                Ok((cond, pooled))
            }
            Conditioner::Sd3(e) => e.encode(tokens, clip_layer),
        }
    }
}
