//! ControlNets for the LDM UNet families (SD1.x, SDXL), as ComfyUI 0.3.64 runs them
//! (`comfy/cldm/cldm.py`, `comfy/controlnet.py`).
//!
//! * [`network`]: the cldm `ControlNet`, the UNet's encoder half (time embedding, SDXL's
//!   `label_emb`, input blocks, middle block, built with the UNet's own blocks) plus the
//!   hint encoder and the 1×1 "zero convs" whose outputs are the residuals.
//! * [`load`]: the file layouts (LDM `control_model.*` or bare, diffusers `controlnet_*`)
//!   and "diff" ControlNets, which store the difference to a base UNet.
//! * [`apply`]: one applied ControlNet (hint image, strength, timestep range, the previous
//!   ControlNet of a chain) and ComfyUI's `get_control` for one batched model call.
//!
//! The UNet adds the [`ControlResiduals`] in `Unet::forward_with_control`.

pub mod apply;
pub mod load;
pub mod network;

use candle_core::Tensor;

pub use apply::{ControlLink, ControlStep};
pub use load::{load_controlnet, load_controlnet_weights, ControlNetFile};
pub use network::ControlNet;

/// The residuals a ControlNet hands the UNet (ComfyUI's `{'input', 'middle', 'output'}`
/// dict): `output` holds one per input block (zero conv i after input block i), `middle`
/// one for the middle block, `input` those T2I-Adapters add after input blocks. The UNet
/// consumes each list from its end; `None` entries are skipped.
#[derive(Debug, Clone, Default)]
pub struct ControlResiduals {
    pub input: Vec<Option<Tensor>>,
    pub middle: Vec<Option<Tensor>>,
    pub output: Vec<Option<Tensor>>,
}
