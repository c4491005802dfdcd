//! Flux's conditioning nodes (`comfy_extras/nodes_flux.py`, `nodes_edit_model.py`):
//! FluxGuidance and FluxDisableGuidance (the distilled guidance is a model input carried in
//! the conditioning), and Kontext's ReferenceLatent, FluxKontextMultiReferenceLatentMethod
//! and FluxKontextImageScale. What the keys do while sampling is
//! `crate::sampling::conds` and the family's `extra_conds` (`crate::nodes::sampling`).

use super::image_transform::scale_image;
use super::sd_types::Conditioning;
use crate::image_ops::{Crop, Planes, UpscaleMethod};
use crate::models::flux::RefLatentsMethod;
use crate::node::types::{Image, Latent};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::conds::{CondOptions, Guidance};

/// `conditioning_set_values`: every entry with its options changed by `f`.
fn set_values(c: &Conditioning, f: impl Fn(&mut CondOptions)) -> Conditioning {
    Conditioning(
        c.0.iter()
            .map(|e| {
                let mut n = e.clone();
                f(&mut n.opts);
                n
            })
            .collect(),
    )
}

/// FluxGuidance: `guidance` on every entry.
pub fn set_guidance(c: &Conditioning, guidance: f64) -> Conditioning {
    set_values(c, |o| o.guidance = Some(Guidance::Value(guidance)))
}

/// FluxDisableGuidance: `guidance` None (the model gets no guidance embedding at all).
pub fn disable_guidance(c: &Conditioning) -> Conditioning {
    set_values(c, |o| o.guidance = Some(Guidance::Disabled))
}

/// ReferenceLatent: `latent` appended to every entry's `reference_latents`.
pub fn add_reference_latent(c: &Conditioning, latent: &candle_core::Tensor) -> Conditioning {
    set_values(c, |o| o.reference_latents.push(latent.clone()))
}

/// FluxKontextMultiReferenceLatentMethod's placement on every entry.
pub fn set_reference_method(c: &Conditioning, method: RefLatentsMethod) -> Conditioning {
    set_values(c, |o| o.reference_latents_method = Some(method))
}

/// The Kontext training resolutions (width, height), `PREFERED_KONTEXT_RESOLUTIONS`.
pub const KONTEXT_RESOLUTIONS: [(usize, usize); 17] = [
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
];

/// FluxKontextImageScale's target: the Kontext resolution with the nearest aspect ratio
/// (Python's `min` over `(|Δ aspect|, w, h)` tuples: ties go to the smaller width).
pub fn kontext_size(width: usize, height: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let mut best = (f64::INFINITY, 0usize, 0usize);
    for &(w, h) in &KONTEXT_RESOLUTIONS {
        let d = (aspect - w as f64 / h as f64).abs();
        if (d, w, h) < best {
            best = (d, w, h);
        }
    }
    (best.1, best.2)
}

fn cond_out(c: Conditioning) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::one(Value::object(c)))
}

fn flux_node(name: &str) -> NodeSchema {
    NodeSchema::new(name)
        .category("advanced/conditioning/flux")
        .module("comfy_extras.nodes_flux")
        .v3()
}

struct FluxGuidance;
impl Node for FluxGuidance {
    fn schema(&self) -> NodeSchema {
        flux_node("FluxGuidance")
            .input(InputSpec::of("conditioning", "CONDITIONING"))
            .input(
                InputSpec::float("guidance")
                    .default(3.5)
                    .min(0.0)
                    .max(100.0)
                    .step(0.1),
            )
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        let g = i.float("guidance")?;
        if !g.is_finite() {
            return Err(NodeError::input(
                "guidance",
                format!("{g} is not a finite number (allowed: 0 to 100)"),
            ));
        }
        cond_out(set_guidance(&c, g))
    }
}

struct FluxDisableGuidance;
impl Node for FluxDisableGuidance {
    fn schema(&self) -> NodeSchema {
        flux_node("FluxDisableGuidance")
            .description(
                "This node completely disables the guidance embed on Flux and Flux like models",
            )
            .input(InputSpec::of("conditioning", "CONDITIONING"))
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        cond_out(disable_guidance(&c))
    }
}

struct FluxKontextMultiReferenceLatentMethod;
impl Node for FluxKontextMultiReferenceLatentMethod {
    fn schema(&self) -> NodeSchema {
        let mut s = flux_node("FluxKontextMultiReferenceLatentMethod")
            .input(InputSpec::of("conditioning", "CONDITIONING"))
            .input(InputSpec::combo(
                "reference_latents_method",
                &["offset", "index", "uxo/uno"],
            ))
            .output(OutputSpec::new("CONDITIONING"));
        s.experimental = true;
        s
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        let name = i.string("reference_latents_method")?;
        // ComfyUI: anything containing "uxo" or "uso" is uxo.
        let method = if name.contains("uxo") || name.contains("uso") {
            RefLatentsMethod::Uxo
        } else {
            RefLatentsMethod::parse(name).ok_or_else(|| {
                NodeError::input(
                    "reference_latents_method",
                    format!("'{name}' is not one of offset, index, uxo/uno"),
                )
            })?
        };
        cond_out(set_reference_method(&c, method))
    }
}

struct ReferenceLatent;
impl Node for ReferenceLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ReferenceLatent")
            .category("advanced/conditioning/edit_models")
            .module("comfy_extras.nodes_edit_model")
            .v3()
            .description(
                "This node sets the guiding latent for an edit model. If the model supports it \
                 you can chain multiple to set multiple reference images.",
            )
            .input(InputSpec::of("conditioning", "CONDITIONING"))
            .input(InputSpec::of("latent", "LATENT").optional())
            .output(OutputSpec::new("CONDITIONING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let c = i.object::<Conditioning>("conditioning")?;
        if i.get("latent").is_none() {
            return cond_out((*c).clone());
        }
        let latent = i.object::<Latent>("latent")?;
        if latent.samples.rank() != 4 {
            return Err(NodeError::input(
                "latent",
                format!(
                    "expected a LATENT [B, C, h, w], got shape {:?}",
                    latent.samples.dims()
                ),
            ));
        }
        cond_out(add_reference_latent(&c, &latent.samples))
    }
}

struct FluxKontextImageScale;
impl Node for FluxKontextImageScale {
    fn schema(&self) -> NodeSchema {
        flux_node("FluxKontextImageScale")
            .description(
                "This node resizes the image to one that is more optimal for flux kontext.",
            )
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let dims = image.0.dims().to_vec();
        if dims.len() != 4 || dims[1] == 0 || dims[2] == 0 {
            return Err(NodeError::input(
                "image",
                format!("expected a non-empty IMAGE [B, H, W, C], got shape {dims:?}"),
            ));
        }
        let (w, h) = kontext_size(dims[2], dims[1]);
        let planes = Planes::from_nhwc(&image.0)?;
        let out = scale_image(&planes, w, h, UpscaleMethod::Lanczos, Crop::Center, "image")?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(FluxGuidance)?;
    r.register(FluxDisableGuidance)?;
    r.register(FluxKontextMultiReferenceLatentMethod)?;
    r.register(ReferenceLatent)?;
    r.register(FluxKontextImageScale)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kontext_sizes_follow_the_nearest_aspect_ratio() {
        assert_eq!(kontext_size(1024, 1024), (1024, 1024));
        assert_eq!(kontext_size(512, 512), (1024, 1024));
        assert_eq!(kontext_size(1920, 1080), (1392, 752));
        assert_eq!(kontext_size(1080, 1920), (752, 1392));
        assert_eq!(kontext_size(4000, 100), (1568, 672));
    }
}
