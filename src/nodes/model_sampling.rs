//! The ModelSampling* nodes of `comfy_extras/nodes_model_advanced.py` and SDTurboScheduler
//! (`nodes_custom_sampler.py`): each returns its MODEL with another
//! [`ModelSampling`](crate::sampling::model_sampling::ModelSampling) (ComfyUI's
//! `add_object_patch("model_sampling", …)`), or a schedule read from it.

use std::sync::Arc;

use super::sd_types::{SdModel, Sigmas};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::model_sampling::{flux_shift_for_resolution, ModelSampling, Prediction};
use crate::sampling::schedulers::sd_turbo;

const MAX_RESOLUTION: i64 = 16384;

fn advanced(class: &str) -> NodeSchema {
    NodeSchema::new(class)
        .category("advanced/model")
        .module("comfy_extras.nodes_model_advanced")
        .input(InputSpec::of("model", "MODEL"))
}

/// The input MODEL with `sampling` in place of its model sampling.
fn patched(i: &Inputs, sampling: ModelSampling) -> Result<NodeOutput, NodeError> {
    let mut m = (*i.object::<SdModel>("model")?).clone();
    m.sampling = Arc::new(sampling);
    Ok(NodeOutput::one(Value::object(m)))
}

fn shift_input(default: f64) -> InputSpec {
    InputSpec::float("shift")
        .default(default)
        .min(0.0)
        .max(100.0)
        .step(0.01)
}

/// A flow shift of 0 makes every sigma 0 (and a negative one flips the table's sign).
fn positive_shift(i: &Inputs) -> Result<f64, NodeError> {
    let shift = i.float("shift")?;
    if shift > 0.0 && shift.is_finite() {
        Ok(shift)
    } else {
        Err(NodeError::input(
            "shift",
            format!(
                "{shift} is not allowed: the shift must be > 0 (a shift of 0 makes every sigma 0)"
            ),
        ))
    }
}

fn sigma_range(i: &Inputs) -> Result<(f64, f64), NodeError> {
    let mut out = [0.0; 2];
    for (k, name) in ["sigma_min", "sigma_max"].iter().enumerate() {
        let v = i.float(name)?;
        if !(v > 0.0 && v.is_finite()) {
            return Err(NodeError::input(
                name,
                format!("{v} is not allowed: the sigma table is log-spaced, so it must be > 0"),
            ));
        }
        out[k] = v;
    }
    Ok((out[0], out[1]))
}

fn continuous_inputs(s: NodeSchema, max_default: f64, min_default: f64) -> NodeSchema {
    let sigma = |name: &str, default: f64| {
        InputSpec::float(name)
            .default(default)
            .min(0.0)
            .max(1000.0)
            .step(0.001)
            .opt("round", false)
    };
    s.input(sigma("sigma_max", max_default))
        .input(sigma("sigma_min", min_default))
        .output(OutputSpec::new("MODEL"))
}

struct ModelSamplingDiscrete;
impl Node for ModelSamplingDiscrete {
    fn schema(&self) -> NodeSchema {
        advanced("ModelSamplingDiscrete")
            .input(InputSpec::combo(
                "sampling",
                &["eps", "v_prediction", "lcm", "x0", "img_to_img"],
            ))
            .input(InputSpec::boolean("zsnr").default(false))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let zsnr = i.boolean("zsnr")?;
        // ComfyUI rebuilds the table from the model config's beta schedule; every family
        // comfyrs loads uses the default one (a flow model's config has none either).
        let model = i.object::<SdModel>("model")?;
        let b = model.sampling.betas().unwrap_or_default();
        let discrete =
            |p| ModelSampling::discrete(p, b.linear_start, b.linear_end, b.timesteps, zsnr);
        let ms = match i.string("sampling")? {
            "eps" => discrete(Prediction::Eps),
            "v_prediction" => discrete(Prediction::VPrediction),
            "lcm" => ModelSampling::discrete_lcm(b, zsnr),
            "x0" => discrete(Prediction::X0),
            "img_to_img" => discrete(Prediction::ImgToImg),
            other => {
                return Err(NodeError::input(
                    "sampling",
                    format!("{other:?} is not one of eps, v_prediction, lcm, x0, img_to_img"),
                ))
            }
        };
        patched(i, ms)
    }
}

struct ModelSamplingContinuousEdm;
impl Node for ModelSamplingContinuousEdm {
    fn schema(&self) -> NodeSchema {
        continuous_inputs(
            advanced("ModelSamplingContinuousEDM").input(InputSpec::combo(
                "sampling",
                &[
                    "v_prediction",
                    "edm",
                    "edm_playground_v2.5",
                    "eps",
                    "cosmos_rflow",
                ],
            )),
            120.0,
            0.002,
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let sampling = i.string("sampling")?;
        let (smin, smax) = sigma_range(i)?;
        let edm = |p, sd| ModelSampling::continuous_edm(p, smin, smax, sd);
        let ms = match sampling {
            "v_prediction" => edm(Prediction::VPrediction, 1.0),
            "edm" => edm(Prediction::Edm, 0.5),
            "eps" => edm(Prediction::Eps, 1.0),
            "cosmos_rflow" => ModelSampling::cosmos_rflow(smin, smax, 1.0),
            "edm_playground_v2.5" => {
                return Err(NodeError::input(
                    "sampling",
                    "edm_playground_v2.5 is not supported by comfyrs yet: besides the EDM \
                     sampling it switches the model's latent format to Playground 2.5's \
                     per-channel one, which comfyrs's MODEL does not carry; use edm, \
                     v_prediction, eps or cosmos_rflow",
                ))
            }
            other => {
                return Err(NodeError::input(
                    "sampling",
                    format!(
                        "{other:?} is not one of v_prediction, edm, edm_playground_v2.5, eps, \
                         cosmos_rflow"
                    ),
                ))
            }
        };
        patched(i, ms)
    }
}

struct ModelSamplingContinuousV;
impl Node for ModelSamplingContinuousV {
    fn schema(&self) -> NodeSchema {
        continuous_inputs(
            advanced("ModelSamplingContinuousV")
                .input(InputSpec::combo("sampling", &["v_prediction"])),
            500.0,
            0.03,
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let sampling = i.string("sampling")?;
        if sampling != "v_prediction" {
            return Err(NodeError::input(
                "sampling",
                format!("{sampling:?} is not one of v_prediction"),
            ));
        }
        let (smin, smax) = sigma_range(i)?;
        patched(
            i,
            ModelSampling::continuous_v(Prediction::VPrediction, smin, smax, 1.0),
        )
    }
}

struct ModelSamplingSd3;
impl Node for ModelSamplingSd3 {
    fn schema(&self) -> NodeSchema {
        advanced("ModelSamplingSD3")
            .input(shift_input(3.0))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        patched(i, ModelSampling::discrete_flow(positive_shift(i)?, 1000.0))
    }
}

struct ModelSamplingAuraFlow;
impl Node for ModelSamplingAuraFlow {
    fn schema(&self) -> NodeSchema {
        advanced("ModelSamplingAuraFlow")
            .input(shift_input(1.73))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        patched(i, ModelSampling::discrete_flow(positive_shift(i)?, 1.0))
    }
}

struct ModelSamplingFlux;
impl Node for ModelSamplingFlux {
    fn schema(&self) -> NodeSchema {
        let shift = |name: &str, default: f64| {
            InputSpec::float(name)
                .default(default)
                .min(0.0)
                .max(100.0)
                .step(0.01)
        };
        let size = |name: &str| {
            InputSpec::int(name)
                .default(1024)
                .min(16)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        advanced("ModelSamplingFlux")
            .input(shift("max_shift", 1.15))
            .input(shift("base_shift", 0.5))
            .input(size("width"))
            .input(size("height"))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let dim = |name: &str| -> Result<i64, NodeError> {
            let v = i.int(name)?;
            i64::try_from(v)
                .ok()
                .filter(|v| (0..=MAX_RESOLUTION).contains(v))
                .ok_or_else(|| {
                    NodeError::input(name, format!("{v} is outside 0..={MAX_RESOLUTION}"))
                })
        };
        let shift = flux_shift_for_resolution(
            i.float("max_shift")?,
            i.float("base_shift")?,
            dim("width")?,
            dim("height")?,
        );
        if !shift.is_finite() {
            return Err(NodeError::input(
                "max_shift",
                format!("the resulting shift {shift} is not a finite number"),
            ));
        }
        patched(i, ModelSampling::flux(shift))
    }
}

struct SdTurboScheduler;
impl Node for SdTurboScheduler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SDTurboScheduler")
            .category("sampling/custom_sampling/schedulers")
            .module("comfy_extras.nodes_custom_sampler")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::int("steps").default(1).min(1).max(10))
            .input(
                InputSpec::float("denoise")
                    .default(1.0)
                    .min(0)
                    .max(1.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let steps = i.int("steps")?;
        let steps = usize::try_from(steps)
            .map_err(|_| NodeError::input("steps", format!("{steps} is below 0")))?;
        let denoise = i.float("denoise")?;
        if !(0.0..=1.0).contains(&denoise) {
            return Err(NodeError::input(
                "denoise",
                format!("{denoise} is outside 0..=1"),
            ));
        }
        let sigmas =
            sd_turbo(&model.sampling, steps, denoise).map_err(|e| NodeError::input("model", e))?;
        Ok(NodeOutput::one(Value::object(Sigmas(sigmas))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ModelSamplingDiscrete)?;
    r.register(ModelSamplingContinuousEdm)?;
    r.register(ModelSamplingContinuousV)?;
    r.register(ModelSamplingSd3)?;
    r.register(ModelSamplingAuraFlow)?;
    r.register(ModelSamplingFlux)?;
    r.register(SdTurboScheduler)?;
    Ok(())
}
