//! ImageRGBToYUV and ImageYUVToRGB (`comfy_extras/nodes_morphology.py`), with kornia's
//! `rgb_to_ycbcr` / `ycbcr_to_rgb` (kornia 0.9: the exact inverse coefficients and a clamp to
//! 0..1 on the way back), every step in f32 as torch evaluates it; and MaskPreview
//! (`nodes_mask.py`): a MASK shown as a grey image, saved to the temp folder like
//! PreviewImage with compress level 4.

use super::image_io::{mask_preview_image, save_preview};
use crate::node::types::{Image, Mask};
use crate::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Registry, RegistryError, Value,
};
use candle_core::{Device, Tensor};

fn err(e: candle_core::Error) -> NodeError {
    NodeError::msg(e.to_string())
}

/// An IMAGE as (data [B·H·W·C] f32, dims), checking it has `need` channels at least.
fn pixels(i: &Inputs, name: &str, need: usize) -> Result<(Vec<f32>, [usize; 4]), NodeError> {
    let img = i.object::<Image>(name)?;
    let [b, h, w, c] = *img.0.dims() else {
        return Err(NodeError::input(
            name,
            format!(
                "expected an IMAGE [B, H, W, C], got shape {:?}",
                img.0.dims()
            ),
        ));
    };
    if c < need {
        return Err(NodeError::input(
            name,
            format!("needs {need} channels (RGB), this image has {c}"),
        ));
    }
    let v = img
        .0
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)?;
    Ok((v, [b, h, w, c]))
}

fn image(v: Vec<f32>, dims: [usize; 4]) -> Result<Value, NodeError> {
    Ok(Value::object(Image(
        Tensor::from_vec(v, &dims, &Device::Cpu).map_err(err)?,
    )))
}

/// A Python float constant as torch uses it with a float32 tensor.
const fn c(v: f64) -> f32 {
    v as f32
}

/// kornia's `rgb_to_ycbcr` of one pixel.
pub fn rgb_to_ycbcr(r: f32, g: f32, b: f32) -> [f32; 3] {
    let y = c(0.299) * r + c(0.587) * g + c(0.114) * b;
    let cb = (b - y) * c(0.564) + 0.5;
    let cr = (r - y) * c(0.713) + 0.5;
    [y, cb, cr]
}

/// kornia's `ycbcr_to_rgb` of one pixel (clamped to 0..1).
pub fn ycbcr_to_rgb(y: f32, cb: f32, cr: f32) -> [f32; 3] {
    let cb = cb - 0.5;
    let cr = cr - 0.5;
    let r = y + c(1.4025245442) * cr;
    let g = y - c(0.7144034731) * cr - c(0.3443401356) * cb;
    let b = y + c(1.7730496454) * cb;
    // torch's clamp: NaN stays NaN
    [r, g, b].map(|v| if v.is_nan() { v } else { v.clamp(0.0, 1.0) })
}

struct ImageRgbToYuv;
impl Node for ImageRgbToYuv {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageRGBToYUV")
            .module("comfy_extras.nodes_morphology")
            .v3()
            .category("image/batch")
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE").named("Y"))
            .output(OutputSpec::new("IMAGE").named("U"))
            .output(OutputSpec::new("IMAGE").named("V"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (v, dims) = pixels(i, "image", 3)?;
        let c = dims[3];
        if c != 3 {
            // kornia needs exactly 3 channels ((*, 3, H, W)).
            return Err(NodeError::input(
                "image",
                format!(
                    "Input size must have a shape of (*, 3, H, W); this image has {c} channels"
                ),
            ));
        }
        let n = v.len() / 3;
        let mut planes = [
            vec![0f32; v.len()],
            vec![0f32; v.len()],
            vec![0f32; v.len()],
        ];
        for p in 0..n {
            let ycc = rgb_to_ycbcr(v[3 * p], v[3 * p + 1], v[3 * p + 2]);
            // each output is its channel expanded over the image's 3 channels
            for (plane, val) in planes.iter_mut().zip(ycc) {
                plane[3 * p..3 * p + 3].fill(val);
            }
        }
        let [y, u, w] = planes;
        Ok(NodeOutput::values(vec![
            image(y, dims)?,
            image(u, dims)?,
            image(w, dims)?,
        ]))
    }
}

/// `torch.mean(x, dim=-1)` over a pixel's channels: the sum in order, divided by the count.
fn channel_mean(px: &[f32]) -> f32 {
    let mut s = 0f32;
    for v in px {
        s += v;
    }
    s / px.len() as f32
}

struct ImageYuvToRgb;
impl Node for ImageYuvToRgb {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageYUVToRGB")
            .module("comfy_extras.nodes_morphology")
            .v3()
            .category("image/batch")
            .input(InputSpec::of("Y", "IMAGE"))
            .input(InputSpec::of("U", "IMAGE"))
            .input(InputSpec::of("V", "IMAGE"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (y, dy) = pixels(i, "Y", 1)?;
        let (u, du) = pixels(i, "U", 1)?;
        let (v, dv) = pixels(i, "V", 1)?;
        for (name, d) in [("U", du), ("V", dv)] {
            if d[..3] != dy[..3] {
                return Err(NodeError::input(
                    name,
                    format!(
                        "must have Y's batch and size {:?}, got {:?}",
                        &dy[..3],
                        &d[..3]
                    ),
                ));
            }
        }
        let n = dy[0] * dy[1] * dy[2];
        let mut out = Vec::with_capacity(n * 3);
        for p in 0..n {
            let ym = channel_mean(&y[p * dy[3]..(p + 1) * dy[3]]);
            let um = channel_mean(&u[p * du[3]..(p + 1) * du[3]]);
            let vm = channel_mean(&v[p * dv[3]..(p + 1) * dv[3]]);
            out.extend(ycbcr_to_rgb(ym, um, vm));
        }
        Ok(NodeOutput::one(image(out, [dy[0], dy[1], dy[2], 3])?))
    }
}

struct MaskPreview;
impl Node for MaskPreview {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("MaskPreview")
            .module("comfy_extras.nodes_mask")
            .category("mask")
            .description("Saves the input images to your ComfyUI output directory.")
            .input(InputSpec::of("mask", "MASK"))
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mask = i.object::<Mask>("mask")?;
        save_preview(ctx, &mask_preview_image(&mask.0)?, 4)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ImageRgbToYuv)?;
    r.register(ImageYuvToRgb)?;
    r.register(MaskPreview)?;
    Ok(())
}
