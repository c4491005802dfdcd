//! The ControlNet nodes of ComfyUI 0.3.64: `ControlNetLoader`, `DiffControlNetLoader`
//! (nodes.py), `ControlNetApply` (deprecated, but every SD1.5 example uses it),
//! `ControlNetApplyAdvanced`, `SetUnionControlNetType` (comfy_extras/nodes_controlnet.py),
//! the deprecated `ControlNetApplySD3` (comfy_extras/nodes_sd3.py, ControlNetApplyAdvanced
//! with a required VAE) and the `Canny` preprocessor (comfy_extras/nodes_canny.py).
//!
//! The loaders read SD1.x/SDXL (cldm) and SD3/SD3.5 ControlNets; an SD3 ControlNet's hint
//! is encoded by the apply node's VAE when sampling.
//!
//! CONTROL_NET is a loaded network ([`ControlNetPayload`]); the apply nodes put a new
//! [`ControlLink`] (hint, strength, range, previous link) on each CONDITIONING entry, with
//! ComfyUI's sharing rules: ControlNetApply makes one link per entry and marks it for the
//! negative (`control_apply_to_uncond`), ControlNetApplyAdvanced gives positive and negative
//! entries that held the same previous link the same new one, so they still batch together.

use std::sync::Arc;

use candle_core::Tensor;

use super::loaders::model_path;
use super::sd_types::{Conditioning, SdModel, SdVae};
use crate::env::Environment;
use crate::image_ops::canny::canny;
use crate::image_ops::Planes;
use crate::models::controlnet::{load_control_model, ControlLink, ControlModel};
use crate::models::unet::UNET_PREFIX;
use crate::models::vae::Vae;
use crate::node::types::Image;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// CONTROL_NET: a loaded control model and the extra arguments `set_extra_arg` gave it.
#[derive(Debug, Clone)]
pub struct ControlNetPayload {
    pub model: ControlModel,
    /// `extra_args["control_type"]` (SetUnionControlNetType): `None` when never set, the
    /// type numbers otherwise (empty for "auto"). Only union ControlNets read it.
    pub control_type: Option<Vec<usize>>,
}

impl crate::node::Payload for ControlNetPayload {
    fn describe(&self) -> String {
        format!("<CONTROL_NET {:?}>", self.model)
    }
}

/// `UNION_CONTROLNET_TYPES` (comfy/cldm/control_types.py), in order.
pub const UNION_CONTROLNET_TYPES: [&str; 8] = [
    "openpose",
    "depth",
    "hed/pidi/scribble/ted",
    "canny/lineart/anime_lineart/mlsd",
    "normal",
    "segment",
    "tile",
    "repaint",
];

/// ControlNet files: `controlnet` and its legacy alias `t2i_adapter`
/// (`folder_paths.folder_names_and_paths["controlnet"]`).
fn controlnets(env: &Environment) -> Vec<String> {
    let mut v = env.paths.list_models("controlnet");
    v.extend(env.paths.list_models("t2i_adapter"));
    v.sort();
    v.dedup();
    v
}

fn controlnet_path(env: &Environment, name: &str) -> Result<std::path::PathBuf, NodeError> {
    match env.paths.find_model("t2i_adapter", name) {
        Some(p) if env.paths.find_model("controlnet", name).is_none() => Ok(p),
        _ => model_path(env, "controlnet", name),
    }
}

fn load(
    class: &str,
    ctx: &NodeContext,
    name: &str,
    model: Option<&SdModel>,
) -> Result<NodeOutput, NodeError> {
    let path = controlnet_path(ctx.env, name)?;
    let base = match model {
        Some(m) => Some(model_unet_weights(m)?),
        None => None,
    };
    let model = load_control_model(
        &path,
        base.as_ref(),
        ctx.env.compute.dtype,
        &ctx.env.compute.device,
    )
    .map_err(|e| {
        NodeError::input(
            "control_net_name",
            format!("{class}: could not load ControlNet '{name}': {e}"),
        )
    })?;
    match &model {
        ControlModel::Cldm(file) => tracing::info!(
            "{class}: '{name}': {:?} layout, preset {}, {}",
            file.layout,
            file.preset()
                .unwrap_or("none (structure read from the keys)"),
            if file.diff_applied {
                "diff added to the model's weights"
            } else {
                "full weights"
            }
        ),
        other => tracing::info!("{class}: '{name}': {other:?}"),
    }
    Ok(NodeOutput::one(Value::object(ControlNetPayload {
        model,
        control_type: None,
    })))
}

/// The MODEL's UNet weights as `model_state_dict()` gives them to a diff ControlNet (LoRA
/// patches applied).
fn model_unet_weights(m: &SdModel) -> Result<crate::models::WeightMap, NodeError> {
    if m.diffusion.base().as_unet().is_none() {
        return Err(NodeError::input(
            "model",
            "DiffControlNetLoader: the model is not a UNet model (SD1.x / SDXL); diff \
             ControlNets add to a UNet's weights",
        ));
    }
    let base = m.diffusion.base_weights();
    if m.diffusion.patches().is_empty() {
        return Ok((**base).clone());
    }
    let changed = crate::models::lora::patched::patch_weights(
        base,
        m.diffusion.patches(),
        UNET_PREFIX,
        m.diffusion.dtype(),
        false,
    )
    .map_err(|e| NodeError::msg(format!("DiffControlNetLoader: patching the model: {e}")))?;
    let mut map = (**base).clone();
    map.extend(changed);
    Ok(map)
}

struct ControlNetLoader;
impl Node for ControlNetLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ControlNetLoader")
            .display("Load ControlNet Model")
            .category("loaders")
            .input(InputSpec::combo_fn("control_net_name", controlnets))
            .output(OutputSpec::new("CONTROL_NET"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        load("ControlNetLoader", ctx, i.string("control_net_name")?, None)
    }
}

struct DiffControlNetLoader;
impl Node for DiffControlNetLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DiffControlNetLoader")
            .display("Load ControlNet Model (diff)")
            .category("loaders")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::combo_fn("control_net_name", controlnets))
            .output(OutputSpec::new("CONTROL_NET"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        load(
            "DiffControlNetLoader",
            ctx,
            i.string("control_net_name")?,
            Some(&model),
        )
    }
}

/// `image.movedim(-1, 1)` of an IMAGE input, checked.
fn hint_of(class: &str, i: &Inputs) -> Result<Tensor, NodeError> {
    let image = i.object::<Image>("image")?;
    if image.0.rank() != 4 {
        return Err(NodeError::input(
            "image",
            format!(
                "{class}: expected an IMAGE tensor [B, H, W, C], got shape {:?}",
                image.0.dims()
            ),
        ));
    }
    Ok(image
        .0
        .to_dtype(candle_core::DType::F32)?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

fn check_hint(class: &str, cn: &ControlNetPayload, hint: &Tensor) -> Result<(), NodeError> {
    let c = hint.dim(1)?;
    match &cn.model {
        ControlModel::Cldm(f) if c != f.net.hint_channels() => Err(NodeError::input(
            "image",
            format!(
                "{class}: the image has {c} channels; this ControlNet takes {}-channel hints",
                f.net.hint_channels()
            ),
        )),
        ControlModel::Lora(l) if c != l.hint_channels() => Err(NodeError::input(
            "image",
            format!(
                "{class}: the image has {c} channels; this Control-LoRA takes {}-channel hints",
                l.hint_channels()
            ),
        )),
        ControlModel::Sd3(_) if c < 3 => Err(NodeError::input(
            "image",
            format!(
                "{class}: the image has {c} channels; this ControlNet's hint is encoded by \
                 the VAE, which takes 3 (RGB)"
            ),
        )),
        ControlModel::T2i(a) if a.input_channels() != 1 && c != a.input_channels() => {
            Err(NodeError::input(
                "image",
                format!(
                    "{class}: the image has {c} channels; this T2I-Adapter takes {}-channel \
                     hints",
                    a.input_channels()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The VAE a latent-hint ControlNet (SD3) needs: ComfyUI fails at sampling ("This
/// Controlnet needs a VAE but none was provided"); comfyrs names the node and input.
fn check_vae(
    class: &str,
    cn: &ControlNetPayload,
    vae: Option<&Vae>,
    input: &str,
) -> Result<(), NodeError> {
    if cn.model.needs_vae() && vae.is_none() {
        return Err(NodeError::input(
            input,
            format!(
                "{class}: the control_net is {}, whose hint image is encoded by a VAE: \
                 connect the model's VAE{}",
                cn.model.kind_name(),
                if input == "vae" {
                    " to the vae input"
                } else {
                    " through ControlNetApplyAdvanced's vae input"
                }
            ),
        ));
    }
    Ok(())
}

fn strength_input() -> InputSpec {
    InputSpec::float("strength")
        .default(1.0)
        .min(0.0)
        .max(10.0)
        .step(0.01)
}

fn percent_input(name: &str, default: f64) -> InputSpec {
    InputSpec::float(name)
        .default(default)
        .min(0.0)
        .max(1.0)
        .step(0.001)
}

/// ControlNetApply on a CONDITIONING: one new link per entry (chained to the entry's
/// previous one), marked to be copied to the negative.
pub fn apply_controlnet(
    conditioning: &Conditioning,
    cn: &ControlNetPayload,
    hint: &Tensor,
    strength: f64,
) -> Conditioning {
    if strength == 0.0 {
        return conditioning.clone();
    }
    let mut out = conditioning.clone();
    for e in &mut out.0 {
        let link = ControlLink::new(
            cn.model.clone(),
            hint.clone(),
            strength,
            (0.0, 1.0),
            e.opts.control.clone(),
            None,
        );
        e.opts.control = Some(Arc::new(link));
        e.opts.control_apply_to_uncond = Some(true);
    }
    out
}

/// ControlNetApplyAdvanced: entries of both lists that held the same previous link (or none)
/// get the same new link; `control_apply_to_uncond` is cleared. `vae` encodes the hint of
/// an SD3 ControlNet (the others ignore it).
pub fn apply_controlnet_advanced(
    positive: &Conditioning,
    negative: &Conditioning,
    cn: &ControlNetPayload,
    hint: &Tensor,
    strength: f64,
    range: (f64, f64),
    vae: Option<&Vae>,
) -> (Conditioning, Conditioning) {
    if strength == 0.0 {
        return (positive.clone(), negative.clone());
    }
    // The `cnets` dict, keyed by the previous link's identity.
    let mut cnets: Vec<(Option<*const ControlLink>, Arc<ControlLink>)> = Vec::new();
    let mut lists = [positive.clone(), negative.clone()];
    for list in &mut lists {
        for e in &mut list.0 {
            let prev = e.opts.control.clone();
            let key = prev.as_ref().map(Arc::as_ptr);
            let link = match cnets.iter().find(|(k, _)| *k == key) {
                Some((_, l)) => l.clone(),
                None => {
                    let l = Arc::new(ControlLink::new(
                        cn.model.clone(),
                        hint.clone(),
                        strength,
                        range,
                        prev,
                        vae.cloned(),
                    ));
                    cnets.push((key, l.clone()));
                    l
                }
            };
            e.opts.control = Some(link);
            e.opts.control_apply_to_uncond = Some(false);
        }
    }
    let [p, n] = lists;
    (p, n)
}

struct ControlNetApply;
impl Node for ControlNetApply {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new("ControlNetApply")
            .display("Apply ControlNet (OLD)")
            .category("conditioning/controlnet")
            .input(InputSpec::of("conditioning", "CONDITIONING"))
            .input(InputSpec::of("control_net", "CONTROL_NET"))
            .input(InputSpec::of("image", "IMAGE"))
            .input(strength_input())
            .output(OutputSpec::new("CONDITIONING"));
        s.deprecated = true;
        s
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let cond = i.object::<Conditioning>("conditioning")?;
        let cn = i.object::<ControlNetPayload>("control_net")?;
        let strength = i.float("strength")?;
        let hint = hint_of("ControlNetApply", i)?;
        check_hint("ControlNetApply", &cn, &hint)?;
        if strength != 0.0 {
            check_vae("ControlNetApply", &cn, None, "control_net")?;
        }
        Ok(NodeOutput::one(Value::object(apply_controlnet(
            &cond, &cn, &hint, strength,
        ))))
    }
}

struct ControlNetApplyAdvanced;
impl Node for ControlNetApplyAdvanced {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ControlNetApplyAdvanced")
            .display("Apply ControlNet")
            .category("conditioning/controlnet")
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(InputSpec::of("control_net", "CONTROL_NET"))
            .input(InputSpec::of("image", "IMAGE"))
            .input(strength_input())
            .input(percent_input("start_percent", 0.0))
            .input(percent_input("end_percent", 1.0))
            .input(InputSpec::of("vae", "VAE").optional())
            .output(OutputSpec::new("CONDITIONING").named("positive"))
            .output(OutputSpec::new("CONDITIONING").named("negative"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        apply_advanced_node("ControlNetApplyAdvanced", i)
    }
}

/// ControlNetApplyAdvanced / ControlNetApplySD3 (the same function; the SD3 node's VAE is
/// required).
fn apply_advanced_node(class: &str, i: &Inputs) -> Result<NodeOutput, NodeError> {
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let cn = i.object::<ControlNetPayload>("control_net")?;
    let strength = i.float("strength")?;
    let start = i.float("start_percent")?;
    let end = i.float("end_percent")?;
    let vae = match i.get("vae") {
        Some(_) => Some(i.object::<SdVae>("vae")?.0.clone()),
        None => None,
    };
    let hint = hint_of(class, i)?;
    check_hint(class, &cn, &hint)?;
    if strength != 0.0 {
        check_vae(class, &cn, vae.as_ref(), "vae")?;
    }
    let (p, n) = apply_controlnet_advanced(
        &positive,
        &negative,
        &cn,
        &hint,
        strength,
        (start, end),
        vae.as_ref(),
    );
    Ok(NodeOutput::values(vec![Value::object(p), Value::object(n)]))
}

struct ControlNetApplySD3;
impl Node for ControlNetApplySD3 {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new("ControlNetApplySD3")
            .v3()
            .module("comfy_extras.nodes_sd3")
            .display("Apply Controlnet with VAE")
            .category("conditioning/controlnet")
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(InputSpec::of("control_net", "CONTROL_NET"))
            .input(InputSpec::of("vae", "VAE"))
            .input(InputSpec::of("image", "IMAGE"))
            .input(strength_input())
            .input(percent_input("start_percent", 0.0))
            .input(percent_input("end_percent", 1.0))
            .output(OutputSpec::new("CONDITIONING").named("positive"))
            .output(OutputSpec::new("CONDITIONING").named("negative"));
        s.deprecated = true;
        s
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        apply_advanced_node("ControlNetApplySD3", i)
    }
}

struct SetUnionControlNetType;
impl Node for SetUnionControlNetType {
    fn schema(&self) -> NodeSchema {
        let mut types = vec!["auto"];
        types.extend(UNION_CONTROLNET_TYPES);
        NodeSchema::new("SetUnionControlNetType")
            .module("comfy_extras.nodes_controlnet")
            .category("conditioning/controlnet")
            .input(InputSpec::of("control_net", "CONTROL_NET"))
            .input(InputSpec::combo("type", &types))
            .output(OutputSpec::new("CONTROL_NET"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let cn = i.object::<ControlNetPayload>("control_net")?;
        let ty = i.string("type")?;
        let mut out = (*cn).clone();
        out.control_type = Some(match UNION_CONTROLNET_TYPES.iter().position(|t| *t == ty) {
            Some(n) => vec![n],
            None if ty == "auto" => Vec::new(),
            None => {
                return Err(NodeError::input(
                    "type",
                    format!(
                        "SetUnionControlNetType: '{ty}' is not a control type; allowed: auto, {}",
                        UNION_CONTROLNET_TYPES.join(", ")
                    ),
                ))
            }
        });
        Ok(NodeOutput::one(Value::object(out)))
    }
}

struct Canny;
impl Node for Canny {
    fn schema(&self) -> NodeSchema {
        let threshold = |name: &str, d: f64| {
            InputSpec::float(name)
                .default(d)
                .min(0.01)
                .max(0.99)
                .step(0.01)
        };
        NodeSchema::new("Canny")
            .v3()
            .module("comfy_extras.nodes_canny")
            .category("image/preprocessors")
            .input(InputSpec::of("image", "IMAGE"))
            .input(threshold("low_threshold", 0.4))
            .input(threshold("high_threshold", 0.8))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        if image.0.rank() != 4 {
            return Err(NodeError::input(
                "image",
                format!(
                    "Canny: expected an IMAGE tensor [B, H, W, C], got shape {:?}",
                    image.0.dims()
                ),
            ));
        }
        let planes = Planes::from_nhwc(&image.0)?;
        let low = i.float("low_threshold")? as f32;
        let high = i.float("high_threshold")? as f32;
        let (_, edges) = canny(&planes, low, high).map_err(|e| {
            NodeError::input(
                if e.contains("threshold") {
                    "low_threshold"
                } else {
                    "image"
                },
                format!("Canny: {e}"),
            )
        })?;
        // `output[1].repeat(1, 3, 1, 1).movedim(1, -1)`.
        let e = edges.to_nchw()?.repeat((1, 3, 1, 1))?;
        Ok(NodeOutput::one(Value::object(Image(
            e.permute((0, 2, 3, 1))?.contiguous()?,
        ))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ControlNetLoader)?;
    r.register(DiffControlNetLoader)?;
    r.register(ControlNetApply)?;
    r.register(ControlNetApplyAdvanced)?;
    r.register(ControlNetApplySD3)?;
    r.register(SetUnionControlNetType)?;
    r.register(Canny)?;
    Ok(())
}
