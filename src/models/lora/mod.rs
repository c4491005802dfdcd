//! LoRA and friends: weight deltas a file applies to a diffusion model (SD1.x/SDXL UNet,
//! Flux transformer) and its CLIP text encoders, computed the way
//! ComfyUI computes them (`comfy/lora.py`, `comfy/weight_adapter/*`, numerics spec §7), in f32.
//!
//! * [`file`]: reading a LoRA file (safetensors, every float tensor as f32) and naming the
//!   formats its keys show (kohya, diffusers/PEFT, LoHa, LoKr, DoRA, full diffs).
//! * [`key_map`]: ComfyUI's map from LoRA key prefixes to model weights (`model_lora_keys_unet`
//!   with `unet_to_diffusers`, `model_lora_keys_clip`).
//! * [`adapter`]: one patch per target weight (LoRA/LoCon, LoHa, LoKr, diff, set; DoRA) and its
//!   math ([`adapter::Patch::apply`]).
//! * [`fp8_round`]: when a patched weight goes back to fp8 and ComfyUI's seeded stochastic
//!   rounding that puts it there.
//! * [`load`]: `load_lora` — a file + key map → patches by target, and the keys nothing used.
//! * [`merge`]: another model's weights as a patch (ModelMergeSimple & co.), with
//!   ComfyUI's base-weight strength (`strength_model`) and order.
//! * [`patched`]: a UNet or text encoder = base weights + an ordered list of (LoRA, strength),
//!   materialised on first use and cached by that list; base weights are never changed.

pub mod adapter;
pub mod file;
pub mod fp8_round;
pub mod key_map;
pub mod load;
pub mod merge;
pub mod patched;

pub use adapter::{Adapter, Patch};
pub use file::{read_lora, LoraFile};
pub use key_map::KeyMap;
pub use key_map::Target;
pub use load::{load_lora, LoadedLora, TargetPatch};
pub use merge::{MergeSource, MergeStrengths};
pub use patched::{PatchCache, PatchEntry, PatchSource, PatchedClip, PatchedModel};
