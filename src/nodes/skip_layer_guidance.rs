//! Skip-layer guidance for DiT models (`comfy_extras/nodes_slg.py`):
//! `SkipLayerGuidanceDiT`, a post-CFG patch that evaluates the positive again with the listed
//! double and single blocks replaced by the identity and moves the result away from it, and
//! `SkipLayerGuidanceDiTSimple`, which evaluates the negative with those blocks skipped
//! instead. SD3's MMDiT has only joint (double) blocks (single layers are ignored); Flux has
//! both. A UNet has neither and, as in ComfyUI, ignores the skips: its "skipped" pass equals
//! the plain one.

use super::sd3::parse_layers;
use super::sd_types::SdModel;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::cfg_patches::{PostCfg, SkipLayerUncond};

fn percent(name: &str, default: f64) -> InputSpec {
    InputSpec::float(name)
        .default(default)
        .min(0.0)
        .max(1.0)
        .step(0.001)
}

fn layers(name: &str) -> InputSpec {
    InputSpec::string(name).default("7, 8, 9").multiline(false)
}

fn slg_schema(class: &str, description: &str) -> NodeSchema {
    NodeSchema::new(class)
        .category("advanced/guidance")
        .description(description)
        .module("comfy_extras.nodes_slg")
        .v3()
        .experimental()
        .input(InputSpec::of("model", "MODEL"))
        .input(layers("double_layers"))
        .input(layers("single_layers"))
}

fn percent_of(i: &Inputs, name: &str) -> Result<f64, NodeError> {
    let v = i.float(name)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(NodeError::input(name, format!("{v} is outside 0..=1")))
    }
}

/// (double, single) block numbers.
type Layers = (Vec<usize>, Vec<usize>);

/// The model, its (double, single) layer lists, or None when both are empty (ComfyUI then
/// returns the model unpatched).
fn parse(i: &Inputs) -> Result<(SdModel, Option<Layers>), NodeError> {
    let m = (*i.object::<SdModel>("model")?).clone();
    let double = parse_layers(i.string("double_layers")?);
    let single = parse_layers(i.string("single_layers")?);
    if double.is_empty() && single.is_empty() {
        return Ok((m, None));
    }
    Ok((m, Some((double, single))))
}

struct SkipLayerGuidanceDit;
impl Node for SkipLayerGuidanceDit {
    fn schema(&self) -> NodeSchema {
        slg_schema(
            "SkipLayerGuidanceDiT",
            "Generic version of SkipLayerGuidance node that can be used on every DiT model.",
        )
        .input(
            InputSpec::float("scale")
                .default(3.0)
                .min(0.0)
                .max(10.0)
                .step(0.1),
        )
        .input(percent("start_percent", 0.01))
        .input(percent("end_percent", 0.15))
        .input(
            InputSpec::float("rescaling_scale")
                .default(0.0)
                .min(0.0)
                .max(10.0)
                .step(0.01),
        )
        .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (mut m, Some((layers, single_layers))) = parse(i)? else {
            return Ok(NodeOutput::one(Value::object(
                (*i.object::<SdModel>("model")?).clone(),
            )));
        };
        let sigma_start = m.sampling.percent_to_sigma(percent_of(i, "start_percent")?);
        let sigma_end = m.sampling.percent_to_sigma(percent_of(i, "end_percent")?);
        m.cfg_patches.post_cfg.push(PostCfg::SkipLayerGuidance {
            layers,
            single_layers,
            scale: i.float("scale")?,
            sigma_start,
            sigma_end,
            rescaling_scale: i.float("rescaling_scale")?,
        });
        Ok(NodeOutput::one(Value::object(m)))
    }
}

struct SkipLayerGuidanceDitSimple;
impl Node for SkipLayerGuidanceDitSimple {
    fn schema(&self) -> NodeSchema {
        slg_schema(
            "SkipLayerGuidanceDiTSimple",
            "Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass.",
        )
        .input(percent("start_percent", 0.0))
        .input(percent("end_percent", 1.0))
        .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (mut m, Some((double, single))) = parse(i)? else {
            return Ok(NodeOutput::one(Value::object(
                (*i.object::<SdModel>("model")?).clone(),
            )));
        };
        let sigma_start = m.sampling.percent_to_sigma(percent_of(i, "start_percent")?);
        let sigma_end = m.sampling.percent_to_sigma(percent_of(i, "end_percent")?);
        m.cfg_patches.calc_cond_batch = Some(SkipLayerUncond {
            double,
            single,
            sigma_start,
            sigma_end,
        });
        Ok(NodeOutput::one(Value::object(m)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SkipLayerGuidanceDit)?;
    r.register(SkipLayerGuidanceDitSimple)?;
    Ok(())
}
