//! Pixel and latent resampling with ComfyUI's numerics, shared by every node that resizes.
//!
//! ComfyUI resizes through `comfy.utils.common_upscale`, which calls
//! `torch.nn.functional.interpolate` (nearest-exact, bilinear, bicubic, area), its own `bislerp`,
//! or PIL's LANCZOS. Each of those is reproduced here operation for operation in float32 (PIL in
//! its fixed-point integer arithmetic), so results match ComfyUI's CPU output bit for bit where
//! the operations are exactly rounded, and to a few float32 ulps where torch uses its own
//! vectorised transcendental functions (bislerp's `acos`/`sin`).
//!
//! Everything works on [`Planes`], a plain `[N, C, H, W]` float32 buffer; the nodes convert
//! IMAGE (`[B, H, W, C]`), MASK (`[B, H, W]`) and LATENT (`[B, C, H, W]`) tensors to and from it.

mod bislerp;
pub mod canny;
mod convolve;
mod interpolate;
mod lanczos;
mod planes;
mod tiled;
mod upscale;

pub use bislerp::bislerp;
pub use convolve::{convolve_reflect, gaussian_kernel, sharpen_kernel};
pub use interpolate::{
    bilinear_kernel_is_channels_last, bilinear_nchw, interpolate, Interp, TorchLayout,
};
pub use lanczos::{lanczos, lanczos_vertical_first};
pub use planes::Planes;
pub use tiled::{tiled_scale, TiledError};
pub use upscale::{center_crop, common_upscale, py_round, Crop, UpscaleMethod};
