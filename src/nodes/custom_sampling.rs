//! The rest of ComfyUI's custom-sampling family (`comfy_extras/nodes_custom_sampler.py`,
//! `nodes_align_your_steps.py`, `nodes_optimalsteps.py`): the sampler nodes that set a
//! sampler's extra options ([`SamplerExtra`]), the scheduler nodes that compute a SIGMAS
//! table without (or from) a model, the sigma-editing nodes and AddNoise. KSamplerSelect,
//! BasicScheduler, the guiders and SamplerCustom(Advanced) are in [`super::sampling`].

use super::sampling::custom;
use super::sd_types::{NoisePayload, SamplerPayload, SdModel, Sigmas};
use crate::node::types::Latent;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::noise::prepare_noise;
use crate::sampling::samplers::{ErSdeOptions, SaSolverOptions, SamplerExtra, SamplerKind};
use crate::sampling::schedulers;
use candle_core::{DType, Tensor};

const SAMPLERS: &str = "sampling/custom_sampling/samplers";
const SCHEDULERS: &str = "sampling/custom_sampling/schedulers";
const SIGMAS: &str = "sampling/custom_sampling/sigmas";

/// `("FLOAT", {"default": d, "min": lo, "max": hi, "step": step, "round": False})`.
fn float_nr(name: &str, d: f64, lo: f64, hi: f64, step: f64) -> InputSpec {
    InputSpec::float(name)
        .default(d)
        .min(lo)
        .max(hi)
        .step(step)
        .opt("round", false)
}

fn eta_input(max: f64) -> InputSpec {
    float_nr("eta", 1.0, 0.0, max, 0.01)
}

fn s_noise_input(max: f64) -> InputSpec {
    float_nr("s_noise", 1.0, 0.0, max, 0.01)
}

fn noise_device() -> InputSpec {
    InputSpec::combo("noise_device", &["gpu", "cpu"])
}

fn sampler_out(kind: SamplerKind, extra: SamplerExtra) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::one(Value::object(SamplerPayload(kind, extra))))
}

fn sigmas_out(s: Vec<f32>) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::one(Value::object(Sigmas(s))))
}

fn f32_of(i: &Inputs, name: &str) -> Result<f32, NodeError> {
    Ok(i.float(name)? as f32)
}

fn steps_of(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = i.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is not a step count")))
}

fn sampler_schema(class: &str) -> NodeSchema {
    custom(class, SAMPLERS).output(OutputSpec::new("SAMPLER"))
}

// ---- sampler nodes ----

struct SamplerEulerAncestral;
impl Node for SamplerEulerAncestral {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerEulerAncestral")
            .input(eta_input(100.0))
            .input(s_noise_input(100.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let extra = SamplerExtra {
            eta: i.float("eta")?,
            s_noise: f32_of(i, "s_noise")?,
            ..Default::default()
        };
        sampler_out(SamplerKind::EulerAncestral, extra)
    }
}

struct SamplerEulerAncestralCfgPp;
impl Node for SamplerEulerAncestralCfgPp {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerEulerAncestralCFGPP")
            .display("SamplerEulerAncestralCFG++")
            .input(eta_input(1.0))
            .input(s_noise_input(10.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let extra = SamplerExtra {
            eta: i.float("eta")?,
            s_noise: f32_of(i, "s_noise")?,
            ..Default::default()
        };
        sampler_out(SamplerKind::EulerAncestralCfgPp, extra)
    }
}

struct SamplerDpmpp2sAncestral;
impl Node for SamplerDpmpp2sAncestral {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerDPMPP_2S_Ancestral")
            .input(eta_input(100.0))
            .input(s_noise_input(100.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let extra = SamplerExtra {
            eta: i.float("eta")?,
            s_noise: f32_of(i, "s_noise")?,
            ..Default::default()
        };
        sampler_out(SamplerKind::Dpmpp2sAncestral, extra)
    }
}

struct SamplerLms;
impl Node for SamplerLms {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerLMS").input(InputSpec::int("order").default(4).min(1).max(100))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let extra = SamplerExtra {
            lms_order: steps_of(i, "order")?.max(1),
            ..Default::default()
        };
        sampler_out(SamplerKind::Lms, extra)
    }
}

/// `noise_device`: "cpu" picks the CPU-noise name, "gpu" the `_gpu` one (both draw the same
/// CPU Brownian tree in ComfyUI and here).
fn sde_kind(i: &Inputs, cpu: SamplerKind, gpu: SamplerKind) -> Result<SamplerKind, NodeError> {
    Ok(if i.string("noise_device")? == "cpu" {
        cpu
    } else {
        gpu
    })
}

struct SamplerDpmpp3mSde;
impl Node for SamplerDpmpp3mSde {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerDPMPP_3M_SDE")
            .input(eta_input(100.0))
            .input(s_noise_input(100.0))
            .input(noise_device())
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let kind = sde_kind(i, SamplerKind::Dpmpp3mSde, SamplerKind::Dpmpp3mSdeGpu)?;
        let extra = SamplerExtra {
            eta: i.float("eta")?,
            s_noise: f32_of(i, "s_noise")?,
            ..Default::default()
        };
        sampler_out(kind, extra)
    }
}

struct SamplerDpmpp2mSde;
impl Node for SamplerDpmpp2mSde {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerDPMPP_2M_SDE")
            .input(InputSpec::combo("solver_type", &["midpoint", "heun"]))
            .input(eta_input(100.0))
            .input(s_noise_input(100.0))
            .input(noise_device())
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let kind = sde_kind(i, SamplerKind::Dpmpp2mSde, SamplerKind::Dpmpp2mSdeGpu)?;
        let extra = SamplerExtra {
            eta: i.float("eta")?,
            s_noise: f32_of(i, "s_noise")?,
            heun: Some(i.string("solver_type")? == "heun"),
            ..Default::default()
        };
        sampler_out(kind, extra)
    }
}

struct SamplerDpmppSde;
impl Node for SamplerDpmppSde {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerDPMPP_SDE")
            .input(eta_input(100.0))
            .input(s_noise_input(100.0))
            .input(float_nr("r", 0.5, 0.0, 100.0, 0.01))
            .input(noise_device())
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let kind = sde_kind(i, SamplerKind::DpmppSde, SamplerKind::DpmppSdeGpu)?;
        let r = i.float("r")?;
        if r == 0.0 {
            // fac = 1 / (2 r): ComfyUI fails with ZeroDivisionError at the first step.
            return Err(NodeError::input(
                "r",
                "must be greater than 0 (the step uses 1 / (2 r))",
            ));
        }
        let extra = SamplerExtra {
            eta: i.float("eta")?,
            s_noise: f32_of(i, "s_noise")?,
            r,
            ..Default::default()
        };
        sampler_out(kind, extra)
    }
}

struct SamplerDpmAdaptative;
impl Node for SamplerDpmAdaptative {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerDPMAdaptative")
            .input(InputSpec::int("order").default(3).min(2).max(3))
            .input(float_nr("rtol", 0.05, 0.0, 100.0, 0.01))
            .input(float_nr("atol", 0.0078, 0.0, 100.0, 0.01))
            .input(float_nr("h_init", 0.05, 0.0, 100.0, 0.01))
            .input(float_nr("pcoeff", 0.0, 0.0, 100.0, 0.01))
            .input(float_nr("icoeff", 1.0, 0.0, 100.0, 0.01))
            .input(float_nr("dcoeff", 0.0, 0.0, 100.0, 0.01))
            .input(float_nr("accept_safety", 0.81, 0.0, 100.0, 0.01))
            .input(float_nr("eta", 0.0, 0.0, 100.0, 0.01))
            .input(s_noise_input(100.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let order = steps_of(i, "order")?;
        if order != 2 && order != 3 {
            return Err(NodeError::input("order", "order should be 2 or 3"));
        }
        let mut extra = SamplerExtra::default();
        let a = &mut extra.dpm_adaptive;
        a.order = order;
        a.rtol = i.float("rtol")?;
        a.atol = i.float("atol")?;
        a.h_init = i.float("h_init")?;
        a.pcoeff = i.float("pcoeff")?;
        a.icoeff = i.float("icoeff")?;
        a.dcoeff = i.float("dcoeff")?;
        a.accept_safety = i.float("accept_safety")?;
        a.eta = i.float("eta")?;
        a.s_noise = i.float("s_noise")?;
        sampler_out(SamplerKind::DpmAdaptive, extra)
    }
}

struct SamplerErSde;
impl Node for SamplerErSde {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerER_SDE")
            .input(InputSpec::combo_typed(
                "solver_type",
                &["ER-SDE", "Reverse-time SDE", "ODE"],
            ))
            .input(InputSpec::int("max_stage").default(3).min(1).max(3))
            .input(eta_input(100.0).tooltip(
                "Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to \
                 deterministic ODE. This setting doesn't apply to ER-SDE solver type.",
            ))
            .input(s_noise_input(100.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let solver = i.string("solver_type")?;
        let mut eta = i.float("eta")?;
        let mut s_noise = i.float("s_noise")?;
        if solver == "ODE" || (solver == "Reverse-time SDE" && eta == 0.0) {
            eta = 0.0;
            s_noise = 0.0;
        }
        let extra = SamplerExtra {
            er_sde: ErSdeOptions {
                s_noise: s_noise as f32,
                max_stage: steps_of(i, "max_stage")?.clamp(1, 3),
                reverse_time_eta: (solver != "ER-SDE").then_some(eta as f32),
            },
            ..Default::default()
        };
        sampler_out(SamplerKind::ErSde, extra)
    }
}

struct SamplerSaSolver;
impl Node for SamplerSaSolver {
    fn schema(&self) -> NodeSchema {
        sampler_schema("SamplerSASolver")
            .input(InputSpec::of("model", "MODEL").always_options())
            .input(eta_input(10.0))
            .input(
                InputSpec::float("sde_start_percent")
                    .default(0.2)
                    .min(0.0)
                    .max(1.0)
                    .step(0.001),
            )
            .input(
                InputSpec::float("sde_end_percent")
                    .default(0.8)
                    .min(0.0)
                    .max(1.0)
                    .step(0.001),
            )
            .input(s_noise_input(100.0))
            .input(InputSpec::int("predictor_order").default(3).min(1).max(6))
            .input(InputSpec::int("corrector_order").default(4).min(0).max(6))
            .input(InputSpec::boolean("use_pece").always_options())
            .input(InputSpec::boolean("simple_order_2").always_options())
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let ms = &model.sampling;
        let start = ms.percent_to_sigma(i.float("sde_start_percent")?);
        let end = ms.percent_to_sigma(i.float("sde_end_percent")?);
        let extra = SamplerExtra {
            sa_solver: SaSolverOptions {
                tau: Some((i.float("eta")?, start, end)),
                s_noise: f32_of(i, "s_noise")?,
                predictor_order: steps_of(i, "predictor_order")?.clamp(1, 6),
                corrector_order: steps_of(i, "corrector_order")?.min(6),
                use_pece: i.boolean("use_pece")?,
                simple_order_2: i.boolean("simple_order_2")?,
            },
            ..Default::default()
        };
        sampler_out(SamplerKind::SaSolver, extra)
    }
}

struct SamplerEulerCfgPpNode;
impl Node for SamplerEulerCfgPpNode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SamplerEulerCFGpp")
            .display("SamplerEulerCFG++")
            .category("_for_testing")
            .module("comfy_extras.nodes_advanced_samplers")
            .v3()
            .experimental()
            .input(InputSpec::combo("version", &["regular", "alternative"]))
            .output(OutputSpec::new("SAMPLER"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let extra = SamplerExtra {
            euler_pp_alternative: i.string("version")? == "alternative",
            ..Default::default()
        };
        sampler_out(SamplerKind::EulerCfgPp, extra)
    }
}

// ---- scheduler nodes ----

fn sigma_range_inputs(s: NodeSchema) -> NodeSchema {
    s.input(InputSpec::int("steps").default(20).min(1).max(10000))
        .input(float_nr("sigma_max", 14.614642, 0.0, 5000.0, 0.01))
        .input(float_nr("sigma_min", 0.0291675, 0.0, 5000.0, 0.01))
}

fn scheduler_schema(class: &str) -> NodeSchema {
    custom(class, SCHEDULERS).output(OutputSpec::new("SIGMAS"))
}

struct KarrasScheduler;
impl Node for KarrasScheduler {
    fn schema(&self) -> NodeSchema {
        sigma_range_inputs(scheduler_schema("KarrasScheduler"))
            .input(float_nr("rho", 7.0, 0.0, 100.0, 0.01))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        sigmas_out(schedulers::karras(
            steps_of(i, "steps")?,
            i.float("sigma_min")?,
            i.float("sigma_max")?,
            i.float("rho")?,
        ))
    }
}

struct ExponentialScheduler;
impl Node for ExponentialScheduler {
    fn schema(&self) -> NodeSchema {
        sigma_range_inputs(scheduler_schema("ExponentialScheduler"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        sigmas_out(schedulers::exponential(
            steps_of(i, "steps")?,
            i.float("sigma_min")?,
            i.float("sigma_max")?,
        ))
    }
}

struct PolyexponentialScheduler;
impl Node for PolyexponentialScheduler {
    fn schema(&self) -> NodeSchema {
        sigma_range_inputs(scheduler_schema("PolyexponentialScheduler"))
            .input(float_nr("rho", 1.0, 0.0, 100.0, 0.01))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        sigmas_out(schedulers::polyexponential(
            steps_of(i, "steps")?,
            i.float("sigma_min")?,
            i.float("sigma_max")?,
            i.float("rho")?,
        ))
    }
}

struct LaplaceScheduler;
impl Node for LaplaceScheduler {
    fn schema(&self) -> NodeSchema {
        sigma_range_inputs(scheduler_schema("LaplaceScheduler"))
            .input(float_nr("mu", 0.0, -10.0, 10.0, 0.1))
            .input(float_nr("beta", 0.5, 0.0, 10.0, 0.1))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        sigmas_out(schedulers::laplace(
            steps_of(i, "steps")?,
            i.float("sigma_min")?,
            i.float("sigma_max")?,
            i.float("mu")?,
            i.float("beta")?,
        ))
    }
}

struct VpScheduler;
impl Node for VpScheduler {
    fn schema(&self) -> NodeSchema {
        scheduler_schema("VPScheduler")
            .input(InputSpec::int("steps").default(20).min(1).max(10000))
            .input(float_nr("beta_d", 19.9, 0.0, 5000.0, 0.01))
            .input(float_nr("beta_min", 0.1, 0.0, 5000.0, 0.01))
            .input(float_nr("eps_s", 0.001, 0.0, 1.0, 0.0001))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        sigmas_out(schedulers::vp(
            steps_of(i, "steps")?,
            i.float("beta_d")?,
            i.float("beta_min")?,
            i.float("eps_s")?,
        ))
    }
}

struct BetaSamplingScheduler;
impl Node for BetaSamplingScheduler {
    fn schema(&self) -> NodeSchema {
        scheduler_schema("BetaSamplingScheduler")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::int("steps").default(20).min(1).max(10000))
            .input(float_nr("alpha", 0.6, 0.0, 50.0, 0.01))
            .input(float_nr("beta", 0.6, 0.0, 50.0, 0.01))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        sigmas_out(schedulers::beta(
            &model.sampling,
            steps_of(i, "steps")?,
            i.float("alpha")?,
            i.float("beta")?,
        ))
    }
}

/// A V3 table scheduler (AlignYourSteps, OptimalSteps): `model_type`, steps, denoise.
fn table_schema(
    class: &str,
    module: &str,
    types: &[&str],
    default_steps: i64,
    min: i64,
    max: i64,
) -> NodeSchema {
    NodeSchema::new(class)
        .category(SCHEDULERS)
        .module(module)
        .v3()
        .input(InputSpec::combo("model_type", types))
        .input(
            InputSpec::int("steps")
                .default(default_steps)
                .min(min)
                .max(max),
        )
        .input(
            InputSpec::float("denoise")
                .default(1.0)
                .min(0.0)
                .max(1.0)
                .step(0.01),
        )
        .output(OutputSpec::new("SIGMAS"))
}

fn table_execute(
    i: &Inputs,
    table: fn(&str) -> Option<&'static [f64]>,
) -> Result<NodeOutput, NodeError> {
    let ty = i.string("model_type")?;
    let levels = table(ty)
        .ok_or_else(|| NodeError::input("model_type", format!("unknown model type {ty:?}")))?;
    sigmas_out(schedulers::noise_level_table(
        levels,
        steps_of(i, "steps")?,
        i.float("denoise")?,
    ))
}

struct AlignYourStepsScheduler;
impl Node for AlignYourStepsScheduler {
    fn schema(&self) -> NodeSchema {
        table_schema(
            "AlignYourStepsScheduler",
            "comfy_extras.nodes_align_your_steps",
            &["SD1", "SDXL", "SVD"],
            10,
            1,
            10000,
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        table_execute(i, schedulers::ays_levels)
    }
}

struct OptimalStepsScheduler;
impl Node for OptimalStepsScheduler {
    fn schema(&self) -> NodeSchema {
        table_schema(
            "OptimalStepsScheduler",
            "comfy_extras.nodes_optimalsteps",
            &["FLUX", "Wan", "Chroma"],
            20,
            3,
            1000,
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        table_execute(i, schedulers::optimal_steps_levels)
    }
}

// ---- sigma nodes ----

fn sigmas_in() -> InputSpec {
    InputSpec::of("sigmas", "SIGMAS")
}

fn two_sigmas(s: NodeSchema) -> NodeSchema {
    s.output(OutputSpec::new("SIGMAS").named("high_sigmas"))
        .output(OutputSpec::new("SIGMAS").named("low_sigmas"))
}

struct SplitSigmas;
impl Node for SplitSigmas {
    fn schema(&self) -> NodeSchema {
        two_sigmas(
            custom("SplitSigmas", SIGMAS)
                .input(sigmas_in())
                .input(InputSpec::int("step").default(0).min(0).max(10000)),
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.object::<Sigmas>("sigmas")?;
        let step = steps_of(i, "step")?;
        let (hi, lo) = schedulers::split_sigmas(&s.0, step);
        Ok(NodeOutput::values(vec![
            Value::object(Sigmas(hi)),
            Value::object(Sigmas(lo)),
        ]))
    }
}

struct SplitSigmasDenoise;
impl Node for SplitSigmasDenoise {
    fn schema(&self) -> NodeSchema {
        two_sigmas(
            custom("SplitSigmasDenoise", SIGMAS)
                .input(sigmas_in())
                .input(
                    InputSpec::float("denoise")
                        .default(1.0)
                        .min(0.0)
                        .max(1.0)
                        .step(0.01),
                ),
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.object::<Sigmas>("sigmas")?;
        let (hi, lo) = schedulers::split_sigmas_denoise(&s.0, i.float("denoise")?);
        Ok(NodeOutput::values(vec![
            Value::object(Sigmas(hi)),
            Value::object(Sigmas(lo)),
        ]))
    }
}

struct FlipSigmas;
impl Node for FlipSigmas {
    fn schema(&self) -> NodeSchema {
        custom("FlipSigmas", SIGMAS)
            .input(sigmas_in())
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut s = i.object::<Sigmas>("sigmas")?.0.clone();
        s.reverse();
        if s.first() == Some(&0.0) {
            s[0] = 0.0001;
        }
        sigmas_out(s)
    }
}

struct SetFirstSigma;
impl Node for SetFirstSigma {
    fn schema(&self) -> NodeSchema {
        custom("SetFirstSigma", SIGMAS)
            .input(sigmas_in())
            .input(float_nr("sigma", 136.0, 0.0, 20000.0, 0.001))
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut s = i.object::<Sigmas>("sigmas")?.0.clone();
        if s.is_empty() {
            // sigmas[0] = sigma on an empty tensor: IndexError in ComfyUI.
            return Err(NodeError::input(
                "sigmas",
                "is empty: there is no first sigma to set",
            ));
        }
        s[0] = i.float("sigma")? as f32;
        sigmas_out(s)
    }
}

struct ExtendIntermediateSigmas;
impl Node for ExtendIntermediateSigmas {
    fn schema(&self) -> NodeSchema {
        custom("ExtendIntermediateSigmas", SIGMAS)
            .input(sigmas_in())
            .input(InputSpec::int("steps").default(2).min(1).max(100))
            .input(float_nr("start_at_sigma", -1.0, -1.0, 20000.0, 0.01))
            .input(float_nr("end_at_sigma", 12.0, 0.0, 20000.0, 0.01))
            .input(InputSpec::combo("spacing", &["linear", "cosine", "sine"]))
            .output(OutputSpec::new("SIGMAS"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.object::<Sigmas>("sigmas")?;
        let spacing = match i.string("spacing")? {
            "linear" => schedulers::Spacing::Linear,
            "cosine" => schedulers::Spacing::Cosine,
            "sine" => schedulers::Spacing::Sine,
            other => {
                return Err(NodeError::input(
                    "spacing",
                    format!("unknown spacing {other:?}"),
                ))
            }
        };
        sigmas_out(schedulers::extend_intermediate_sigmas(
            &s.0,
            steps_of(i, "steps")?,
            i.float("start_at_sigma")?,
            i.float("end_at_sigma")?,
            spacing,
        ))
    }
}

struct SamplingPercentToSigma;
impl Node for SamplingPercentToSigma {
    fn schema(&self) -> NodeSchema {
        custom("SamplingPercentToSigma", SIGMAS)
            .input(InputSpec::of("model", "MODEL").always_options())
            .input(
                InputSpec::float("sampling_percent")
                    .default(0.0)
                    .min(0.0)
                    .max(1.0)
                    .step(0.0001),
            )
            .input(InputSpec::boolean("return_actual_sigma").default(false).tooltip(
                "Return the actual sigma value instead of the value used for interval checks.\n\
                 This only affects results at 0.0 and 1.0.",
            ))
            .output(OutputSpec::new("FLOAT").named("sigma_value"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let ms = &model.sampling;
        let p = i.float("sampling_percent")?;
        let mut v = ms.percent_to_sigma(p);
        if i.boolean("return_actual_sigma")? {
            if p == 0.0 {
                v = ms.sigma_max() as f64;
            } else if p == 1.0 {
                v = ms.sigma_min() as f64;
            }
        }
        Ok(NodeOutput::one(Value::Float(v)))
    }
}

// ---- AddNoise ----

struct AddNoise;
impl Node for AddNoise {
    fn schema(&self) -> NodeSchema {
        custom("AddNoise", "_for_testing/custom_sampling/noise")
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::of("noise", "NOISE"))
            .input(sigmas_in())
            .input(InputSpec::of("latent_image", "LATENT"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let model = i.object::<SdModel>("model")?;
        let noise = i.object::<NoisePayload>("noise")?;
        let sigmas = i.object::<Sigmas>("sigmas")?;
        let latent_in = i.object::<Latent>("latent_image")?;
        if sigmas.0.is_empty() {
            return Ok(NodeOutput::one(Value::object((*latent_in).clone())));
        }
        let latent = (*latent_in).clone();
        let samples = latent.samples.to_dtype(DType::F32)?;
        let shape = samples.dims().to_vec();
        let noisy = match *noise {
            NoisePayload::Random(seed) => {
                prepare_noise(&shape, seed, latent.batch_index.as_deref())?
            }
            NoisePayload::Disabled => {
                Tensor::zeros(shape.as_slice(), DType::F32, samples.device())?
            }
        };
        let s = &sigmas.0;
        // torch.abs(sigmas[0] - sigmas[-1]) in float32, or sigmas[0].
        let scale = if s.len() > 1 {
            (s[0] - s[s.len() - 1]).abs()
        } else {
            s[0]
        };
        // Element-wise in float32 as torch does it (`process_latent_out` is a true division,
        // which candle's `tensor / scalar` is not).
        let format = model.latent_format();
        let (scale_f, shift) = (format.scale_factor, format.shift_factor.unwrap_or(0.0));
        let has_shift = format.shift_factor.is_some();
        let lat = samples.flatten_all()?.to_vec1::<f32>()?;
        let nonzero = lat.iter().any(|v| *v != 0.0);
        let noise_v = noisy.flatten_all()?.to_vec1::<f32>()?;
        let ms = &model.sampling;
        let v: Vec<f32> = noise_v
            .iter()
            .zip(&lat)
            .map(|(n, l)| {
                let l = match (nonzero, has_shift) {
                    (false, _) => *l,
                    (true, false) => l * scale_f,
                    (true, true) => (l - shift) * scale_f,
                };
                let y = ms.noise_scaling_f32(scale, *n, l);
                let y = if has_shift {
                    y / scale_f + shift
                } else {
                    y / scale_f
                };
                // torch.nan_to_num(nan=0, posinf=0, neginf=0)
                if y.is_finite() {
                    y
                } else {
                    0.0
                }
            })
            .collect();
        let mut out = latent.clone();
        out.samples = Tensor::from_vec(v, shape, samples.device())?;
        Ok(NodeOutput::one(Value::object(out)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SamplerEulerAncestral)?;
    r.register(SamplerEulerAncestralCfgPp)?;
    r.register(SamplerDpmpp2sAncestral)?;
    r.register(SamplerLms)?;
    r.register(SamplerDpmpp3mSde)?;
    r.register(SamplerDpmpp2mSde)?;
    r.register(SamplerDpmppSde)?;
    r.register(SamplerDpmAdaptative)?;
    r.register(SamplerErSde)?;
    r.register(SamplerSaSolver)?;
    r.register(SamplerEulerCfgPpNode)?;
    r.register(KarrasScheduler)?;
    r.register(ExponentialScheduler)?;
    r.register(PolyexponentialScheduler)?;
    r.register(LaplaceScheduler)?;
    r.register(VpScheduler)?;
    r.register(BetaSamplingScheduler)?;
    r.register(AlignYourStepsScheduler)?;
    r.register(OptimalStepsScheduler)?;
    r.register(SplitSigmas)?;
    r.register(SplitSigmasDenoise)?;
    r.register(FlipSigmas)?;
    r.register(SetFirstSigma)?;
    r.register(ExtendIntermediateSigmas)?;
    r.register(SamplingPercentToSigma)?;
    r.register(AddNoise)?;
    Ok(())
}
