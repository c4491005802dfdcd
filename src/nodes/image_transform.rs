//! Image resizing, batching and cropping: ImageScale, ImageScaleBy, ImageScaleToTotalPixels,
//! ImageBatch (nodes.py, comfy_extras/nodes_post_processing.py) and ImageCrop
//! (comfy_extras/nodes_images.py). The resampling itself is [`crate::image_ops`].

use crate::image_ops::{common_upscale, py_round, Crop, Planes, TorchLayout, UpscaleMethod};
use crate::node::types::Image;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use candle_core::{Tensor, D};

const MAX_RESOLUTION: i64 = 16384;

/// ComfyUI hands IMAGE tensors to `interpolate` as `image.movedim(-1, 1)` of a contiguous
/// `[B, H, W, C]` tensor, i.e. in torch's channels-last layout.
const IMAGE_LAYOUT: TorchLayout = TorchLayout::ChannelsLast;

pub(crate) fn upscale_method(i: &Inputs, allowed: &[&str]) -> Result<UpscaleMethod, NodeError> {
    let name = i.string("upscale_method")?;
    UpscaleMethod::from_name(name)
        .filter(|_| allowed.contains(&name))
        .ok_or_else(|| {
            NodeError::input(
                "upscale_method",
                format!("'{name}' is not one of {}", allowed.join(", ")),
            )
        })
}

pub(crate) fn crop_mode(i: &Inputs) -> Result<Crop, NodeError> {
    let name = i.string("crop")?;
    Crop::from_name(name)
        .ok_or_else(|| NodeError::input("crop", format!("'{name}' is not one of disabled, center")))
}

/// An IMAGE input as `[B, C, H, W]` planes, or an error naming the input.
fn image_planes(i: &Inputs, name: &str) -> Result<Planes, NodeError> {
    let image = i.object::<Image>(name)?;
    if image.0.rank() != 4 {
        return Err(NodeError::input(
            name,
            format!(
                "expected an IMAGE tensor [B, H, W, C], got shape {:?}",
                image.0.dims()
            ),
        ));
    }
    Ok(Planes::from_nhwc(&image.0)?)
}

/// Resizes an IMAGE like ComfyUI (`common_upscale` on `image.movedim(-1, 1)`); `input` names the
/// node input a size error is reported against.
pub fn scale_image(
    image: &Planes,
    width: usize,
    height: usize,
    method: UpscaleMethod,
    crop: Crop,
    input: &str,
) -> Result<Tensor, NodeError> {
    let out = common_upscale(image, width, height, method, crop, IMAGE_LAYOUT)
        .map_err(|e| NodeError::input(input, e))?;
    Ok(out.to_nhwc()?)
}

fn size(v: f64, input: &str) -> Result<usize, NodeError> {
    let r = py_round(v);
    if r < 1 {
        return Err(NodeError::input(
            input,
            format!("the result would be {r} pixels wide or high; it must be at least 1"),
        ));
    }
    Ok(r as usize)
}

fn non_negative(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    usize::try_from(i.int(name)?).map_err(|_| NodeError::input(name, "must not be negative"))
}

struct ImageScale;
impl Node for ImageScale {
    fn schema(&self) -> NodeSchema {
        let dim = |n: &str| {
            InputSpec::int(n)
                .default(512)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(1)
        };
        NodeSchema::new("ImageScale")
            .display("Upscale Image")
            .category("image/upscaling")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo(
                "upscale_method",
                &UpscaleMethod::IMAGE_NAMES,
            ))
            .input(dim("width"))
            .input(dim("height"))
            .input(InputSpec::combo("crop", &Crop::NAMES))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let method = upscale_method(i, &UpscaleMethod::IMAGE_NAMES)?;
        let crop = crop_mode(i)?;
        let (mut width, mut height) = (non_negative(i, "width")?, non_negative(i, "height")?);
        if width == 0 && height == 0 {
            let image = i.require("image")?.clone();
            return Ok(NodeOutput::one(image));
        }
        let planes = image_planes(i, "image")?;
        let (w, h) = (planes.w as f64, planes.h as f64);
        if width == 0 {
            width = py_round(w * height as f64 / h).max(1) as usize;
        } else if height == 0 {
            height = py_round(h * width as f64 / w).max(1) as usize;
        }
        let out = scale_image(&planes, width, height, method, crop, "image")?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

struct ImageScaleBy;
impl Node for ImageScaleBy {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageScaleBy")
            .display("Upscale Image By")
            .category("image/upscaling")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo(
                "upscale_method",
                &UpscaleMethod::IMAGE_NAMES,
            ))
            .input(
                InputSpec::float("scale_by")
                    .default(1.0)
                    .min(0.01)
                    .max(8.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let method = upscale_method(i, &UpscaleMethod::IMAGE_NAMES)?;
        let scale_by = i.float("scale_by")?;
        let planes = image_planes(i, "image")?;
        let width = size(planes.w as f64 * scale_by, "scale_by")?;
        let height = size(planes.h as f64 * scale_by, "scale_by")?;
        let out = scale_image(&planes, width, height, method, Crop::Disabled, "image")?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

struct ImageScaleToTotalPixels;
impl Node for ImageScaleToTotalPixels {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageScaleToTotalPixels")
            .v3()
            .module("comfy_extras.nodes_post_processing")
            .category("image/upscaling")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo(
                "upscale_method",
                &UpscaleMethod::IMAGE_NAMES,
            ))
            .input(
                InputSpec::float("megapixels")
                    .default(1.0)
                    .min(0.01)
                    .max(16.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let method = upscale_method(i, &UpscaleMethod::IMAGE_NAMES)?;
        let megapixels = i.float("megapixels")?;
        let planes = image_planes(i, "image")?;
        // int(megapixels * 1024 * 1024), then the scale that gives that many pixels.
        let total = (megapixels * 1024.0 * 1024.0).trunc();
        let scale_by = (total / (planes.w * planes.h) as f64).sqrt();
        let width = size(planes.w as f64 * scale_by, "megapixels")?;
        let height = size(planes.h as f64 * scale_by, "megapixels")?;
        let out = scale_image(&planes, width, height, method, Crop::Disabled, "image")?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

struct ImageBatch;
impl Node for ImageBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageBatch")
            .display("Batch Images")
            .category("image")
            .input(InputSpec::of("image1", "IMAGE"))
            .input(InputSpec::of("image2", "IMAGE"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let first = i.object::<Image>("image1")?;
        let a = image_planes(i, "image1")?;
        let mut b = image_planes(i, "image2")?;
        if a.c != b.c {
            return Err(NodeError::input(
                "image2",
                format!(
                    "has {} channels but image1 has {}; images of a batch need the same channels",
                    b.c, a.c
                ),
            ));
        }
        // A second image of another size is resized to the first (bilinear, centre crop).
        if (a.h, a.w) != (b.h, b.w) {
            b = common_upscale(
                &b,
                a.w,
                a.h,
                UpscaleMethod::Bilinear,
                Crop::Center,
                IMAGE_LAYOUT,
            )
            .map_err(|e| NodeError::input("image2", e))?;
        }
        let out = Tensor::cat(
            &[&first.0.to_dtype(candle_core::DType::F32)?, &b.to_nhwc()?],
            0,
        )?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

struct ImageCrop;
impl Node for ImageCrop {
    fn schema(&self) -> NodeSchema {
        let dim = |n: &str, default: i64, min: i64| {
            InputSpec::int(n)
                .default(default)
                .min(min)
                .max(MAX_RESOLUTION)
                .step(1)
        };
        NodeSchema::new("ImageCrop")
            .display("Image Crop")
            .category("image/transform")
            .module("comfy_extras.nodes_images")
            .input(InputSpec::of("image", "IMAGE"))
            .input(dim("width", 512, 1))
            .input(dim("height", 512, 1))
            .input(dim("x", 0, 0))
            .input(dim("y", 0, 0))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let (_, h, w, _) = image.0.dims4().map_err(|_| {
            NodeError::input(
                "image",
                format!(
                    "expected an IMAGE tensor [B, H, W, C], got shape {:?}",
                    image.0.dims()
                ),
            )
        })?;
        if h == 0 || w == 0 {
            return Err(NodeError::input("image", "the image is empty"));
        }
        // The corner is clamped into the image; the size is cut at its edges.
        let x = non_negative(i, "x")?.min(w - 1);
        let y = non_negative(i, "y")?.min(h - 1);
        let width = non_negative(i, "width")?.min(w - x);
        let height = non_negative(i, "height")?.min(h - y);
        if width == 0 || height == 0 {
            return Err(NodeError::input("width", "the crop is empty"));
        }
        let out = image.0.narrow(1, y, height)?.narrow(D::Minus2, x, width)?;
        Ok(NodeOutput::one(Value::object(Image(out.contiguous()?))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ImageScale)?;
    r.register(ImageScaleBy)?;
    r.register(ImageScaleToTotalPixels)?;
    r.register(ImageBatch)?;
    r.register(ImageCrop)?;
    Ok(())
}
