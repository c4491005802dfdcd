//! Pre-CFG guidance patches of a MODEL: APG (`comfy_extras/nodes_apg.py`), FreSca
//! (`comfy_extras/nodes_fresca.py`) and TCFG (`comfy_extras/nodes_tcfg.py`). Each returns a
//! copy of the model with a [`PreCfg`] entry, which the CFG denoiser runs on the conditional
//! and unconditional predictions before combining them ([`crate::sampling::pre_cfg`]).

use super::sd_types::SdModel;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::pre_cfg::{ApgState, PreCfg};

fn patched(i: &Inputs, p: PreCfg) -> Result<NodeOutput, NodeError> {
    let mut m = (*i.object::<SdModel>("model")?).clone();
    m.cfg_patches.pre_cfg.push(p);
    Ok(NodeOutput::one(Value::object(m)))
}

struct Apg;
impl Node for Apg {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("APG")
            .display("Adaptive Projected Guidance")
            .category("sampling/custom_sampling")
            .module("comfy_extras.nodes_apg")
            .v3()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("eta")
                    .default(1.0)
                    .min(-10.0)
                    .max(10.0)
                    .step(0.01)
                    .tooltip(
                        "Controls the scale of the parallel guidance vector. Default CFG \
                         behavior at a setting of 1.",
                    ),
            )
            .input(
                InputSpec::float("norm_threshold")
                    .default(5.0)
                    .min(0.0)
                    .max(50.0)
                    .step(0.1)
                    .tooltip(
                        "Normalize guidance vector to this value, normalization disable at a \
                         setting of 0.",
                    ),
            )
            .input(
                InputSpec::float("momentum")
                    .default(0.0)
                    .min(-5.0)
                    .max(1.0)
                    .step(0.01)
                    .tooltip(
                        "Controls a running average of guidance during diffusion, disabled at \
                         a setting of 0.",
                    ),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        patched(
            i,
            PreCfg::Apg {
                eta: i.float("eta")?,
                norm_threshold: i.float("norm_threshold")?,
                momentum: i.float("momentum")?,
                // A fresh running average per node execution, shared by every run of its
                // output (ComfyUI's closure).
                state: ApgState::default(),
            },
        )
    }
}

struct FreSca;
impl Node for FreSca {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("FreSca")
            .display("FreSca")
            .category("_for_testing")
            .description("Applies frequency-dependent scaling to the guidance")
            .module("comfy_extras.nodes_fresca")
            .v3()
            .experimental()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::float("scale_low")
                    .default(1.0)
                    .min(0)
                    .max(10)
                    .step(0.01)
                    .tooltip("Scaling factor for low-frequency components"),
            )
            .input(
                InputSpec::float("scale_high")
                    .default(1.25)
                    .min(0)
                    .max(10)
                    .step(0.01)
                    .tooltip("Scaling factor for high-frequency components"),
            )
            .input(
                InputSpec::int("freq_cutoff")
                    .default(20)
                    .min(1)
                    .max(10000)
                    .step(1)
                    .tooltip(
                        "Number of frequency indices around center to consider as \
                         low-frequency",
                    ),
            )
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let cutoff = i.int("freq_cutoff")?;
        let freq_cutoff = usize::try_from(cutoff).map_err(|_| {
            NodeError::input(
                "freq_cutoff",
                format!("{cutoff} is not a frequency count (1..=10000)"),
            )
        })?;
        patched(
            i,
            PreCfg::FreSca {
                scale_low: i.float("scale_low")?,
                scale_high: i.float("scale_high")?,
                freq_cutoff,
            },
        )
    }
}

struct Tcfg;
impl Node for Tcfg {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TCFG")
            .display("Tangential Damping CFG")
            .category("advanced/guidance")
            .description(
                "TCFG – Tangential Damping CFG (2503.18137)\n\nRefine the uncond (negative) to \
                 align with the cond (positive) for improving quality.",
            )
            .module("comfy_extras.nodes_tcfg")
            .v3()
            .input(InputSpec::of("model", "MODEL"))
            .output(OutputSpec::new("MODEL").named("patched_model"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        patched(i, PreCfg::Tcfg)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(Apg)?;
    r.register(FreSca)?;
    r.register(Tcfg)?;
    Ok(())
}
