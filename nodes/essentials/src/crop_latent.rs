//! `ImageCrop+` (a window of the image at a named position plus offsets, clamped to the
//! image) and `SDXLEmptyLatentSizePicker+` (an empty SDXL latent at a listed resolution).

use candle_core::{DType, Device, Tensor};
use comfyrs::image_ops::{py_round, Planes};
use comfyrs::node::types::{Image, Latent};
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Value,
};

const MAX_RESOLUTION: i64 = 16384;

const POSITIONS: [&str; 9] = [
    "top-left",
    "top-center",
    "top-right",
    "right-center",
    "bottom-right",
    "bottom-center",
    "bottom-left",
    "left-center",
    "center",
];

pub(crate) struct ImageCrop;
impl Node for ImageCrop {
    fn schema(&self) -> NodeSchema {
        let size = |n: &str| {
            InputSpec::int(n)
                .default(256)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        let offset = |n: &str| InputSpec::int(n).default(0).min(-99999).step(1);
        NodeSchema::new("ImageCrop+")
            .display("\u{1f527} Image Crop")
            .category("essentials/image manipulation")
            .input(InputSpec::of("image", "IMAGE"))
            .input(size("width"))
            .input(size("height"))
            .input(InputSpec::combo("position", &POSITIONS))
            .input(offset("x_offset"))
            .input(offset("y_offset"))
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("INT").named("x"))
            .output(OutputSpec::new("INT").named("y"))
    }
    /// The window's corner: centred (rounded half-to-even) for a `center` position, then
    /// `top`/`bottom`/`left`/`right` pin a side; the offsets move it; the far corner is
    /// clamped to the image and the near one to 0 (which can shrink the window).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let src = Planes::from_nhwc(&image.0)?;
        let (oh, ow) = (src.h as i64, src.w as i64);
        let width = (i.int("width")? as i64).min(ow);
        let height = (i.int("height")? as i64).min(oh);
        let position = i.string("position")?;
        if !POSITIONS.contains(&position) {
            return Err(NodeError::input(
                "position",
                format!("'{position}' is not one of {}", POSITIONS.join(", ")),
            ));
        }
        let (mut x, mut y) = (0i64, 0i64);
        if position.contains("center") {
            x = py_round((ow - width) as f64 / 2.0);
            y = py_round((oh - height) as f64 / 2.0);
        }
        if position.contains("top") {
            y = 0;
        }
        if position.contains("bottom") {
            y = oh - height;
        }
        if position.contains("left") {
            x = 0;
        }
        if position.contains("right") {
            x = ow - width;
        }
        x += i.int("x_offset")? as i64;
        y += i.int("y_offset")? as i64;
        let x2 = (x + width).min(ow);
        let y2 = (y + height).min(oh);
        let (x, y) = (x.max(0), y.max(0));
        // Python slicing: an empty range when start >= end.
        let rows = (y2 - y).max(0) as usize;
        let cols = (x2 - x).max(0) as usize;
        let (ys, xs) = ((y as usize).min(src.h), (x as usize).min(src.w));
        let out = src.window(ys, xs, rows.min(src.h - ys), cols.min(src.w - xs));
        Ok(NodeOutput::values(vec![
            Value::object(Image(out.to_nhwc()?)),
            Value::Int(x as i128),
            Value::Int(y as i128),
        ]))
    }
}

const RESOLUTIONS: [&str; 26] = [
    "704x1408 (0.5)",
    "704x1344 (0.52)",
    "768x1344 (0.57)",
    "768x1280 (0.6)",
    "832x1216 (0.68)",
    "832x1152 (0.72)",
    "896x1152 (0.78)",
    "896x1088 (0.82)",
    "960x1088 (0.88)",
    "960x1024 (0.94)",
    "1024x1024 (1.0)",
    "1024x960 (1.07)",
    "1088x960 (1.13)",
    "1088x896 (1.21)",
    "1152x896 (1.29)",
    "1152x832 (1.38)",
    "1216x832 (1.46)",
    "1280x768 (1.67)",
    "1344x768 (1.75)",
    "1344x704 (1.91)",
    "1408x704 (2.0)",
    "1472x704 (2.09)",
    "1536x640 (2.4)",
    "1600x640 (2.5)",
    "1664x576 (2.89)",
    "1728x576 (3.0)",
];

pub(crate) struct SdxlEmptyLatentSizePicker;
impl Node for SdxlEmptyLatentSizePicker {
    fn schema(&self) -> NodeSchema {
        let size = |n: &str| {
            InputSpec::int(n)
                .default(0)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("SDXLEmptyLatentSizePicker+")
            .display("\u{1f527} Empty Latent Size Picker")
            .category("essentials/utilities")
            .input(InputSpec::combo("resolution", &RESOLUTIONS).default("1024x1024 (1.0)"))
            .input(InputSpec::int("batch_size").default(1).min(1).max(4096))
            .input(size("width_override"))
            .input(size("height_override"))
            .output(OutputSpec::new("LATENT"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
    }
    /// Zeros `[batch, 4, height / 8, width / 8]`; an override above 0 replaces that side.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let resolution = i.string("resolution")?;
        let size = resolution.split(' ').next().unwrap_or_default();
        let parse = |s: Option<&str>| s.and_then(|v| v.parse::<i128>().ok());
        let mut parts = size.split('x');
        let (Some(w), Some(h)) = (parse(parts.next()), parse(parts.next())) else {
            return Err(NodeError::input(
                "resolution",
                format!("'{resolution}' is not WIDTHxHEIGHT (...)"),
            ));
        };
        let (wo, ho) = (i.int("width_override")?, i.int("height_override")?);
        let width = if wo > 0 { wo } else { w };
        let height = if ho > 0 { ho } else { h };
        let batch = i.int("batch_size")?;
        if batch < 1 || width < 0 || height < 0 {
            return Err(NodeError::input("batch_size", "must be at least 1"));
        }
        let samples = Tensor::zeros(
            (
                batch as usize,
                4,
                (height / 8) as usize,
                (width / 8) as usize,
            ),
            DType::F32,
            &Device::Cpu,
        )?;
        Ok(NodeOutput::values(vec![
            Value::object(Latent::new(samples)),
            Value::Int(width),
            Value::Int(height),
        ]))
    }
}
