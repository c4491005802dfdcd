//! ImageStitch (`comfy_extras/nodes_images.py`, upstreamed from KJNodes): image2 put next to
//! image1 (right, down, left or up), optionally resized to image1's height/width (Lanczos,
//! aspect kept), otherwise the smaller one padded (centered) with the spacing colour's grey
//! value; with an optional spacer strip in between. Kontext workflows use it to put several
//! reference images into one.

use super::image_transform::scale_image;
use crate::image_ops::{Crop, Planes, UpscaleMethod};
use crate::node::types::Image;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use candle_core::{DType, Device, Tensor};

pub const DIRECTIONS: [&str; 4] = ["right", "down", "left", "up"];
pub const SPACING_COLORS: [&str; 5] = ["white", "black", "red", "green", "blue"];

/// The spacing colour: a grey value, or an RGB triple for the colours.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Color {
    Grey(f32),
    Rgb([f32; 3]),
}

fn color(name: &str) -> Option<Color> {
    Some(match name {
        "white" => Color::Grey(1.0),
        "black" => Color::Grey(0.0),
        "red" => Color::Rgb([1.0, 0.0, 0.0]),
        "green" => Color::Rgb([0.0, 1.0, 0.0]),
        "blue" => Color::Rgb([0.0, 0.0, 1.0]),
        _ => return None,
    })
}

/// The options of one stitch.
#[derive(Debug, Clone)]
pub struct StitchOptions<'a> {
    pub direction: &'a str,
    pub match_image_size: bool,
    pub spacing_width: usize,
    pub spacing_color: &'a str,
}

fn image_err(input: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::input(input, e.to_string())
}

/// `image` [B, H, W, C] padded to `b` images by repeating its last one.
fn pad_batch(image: &Tensor, b: usize) -> candle_core::Result<Tensor> {
    let n = image.dim(0)?;
    if n >= b {
        return Ok(image.clone());
    }
    let last = image.narrow(0, n - 1, 1)?.repeat((b - n, 1, 1, 1))?;
    Tensor::cat(&[image, &last], 0)
}

/// Constant padding of `dim` (1 = height, 2 = width) by `before`/`after` with `value`.
fn pad_dim(
    image: &Tensor,
    dim: usize,
    before: usize,
    after: usize,
    value: f32,
) -> candle_core::Result<Tensor> {
    let mut parts = Vec::with_capacity(3);
    let strip = |n: usize| -> candle_core::Result<Tensor> {
        let mut shape = image.dims().to_vec();
        shape[dim] = n;
        Tensor::full(value, shape.as_slice(), image.device())
    };
    if before > 0 {
        parts.push(strip(before)?);
    }
    parts.push(image.clone());
    if after > 0 {
        parts.push(strip(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// Channels widened to `c` with ones (an RGB image next to an RGBA one gets opaque alpha).
fn pad_channels(image: &Tensor, c: usize) -> candle_core::Result<Tensor> {
    let dims = image.dims4()?;
    if dims.3 >= c {
        return Ok(image.clone());
    }
    let ones = Tensor::ones(
        (dims.0, dims.1, dims.2, c - dims.3),
        DType::F32,
        image.device(),
    )?;
    Tensor::cat(&[image, &ones], 3)
}

/// ImageStitch's `stitch` for two images [B, H, W, C].
pub fn stitch(image1: &Tensor, image2: &Tensor, o: &StitchOptions) -> Result<Tensor, NodeError> {
    let horizontal = match o.direction {
        "right" | "left" => true,
        "down" | "up" => false,
        d => {
            return Err(NodeError::input(
                "direction",
                format!("'{d}' is not one of right, down, left, up"),
            ))
        }
    };
    let color = color(o.spacing_color).ok_or_else(|| {
        NodeError::input(
            "spacing_color",
            format!(
                "'{}' is not one of white, black, red, green, blue",
                o.spacing_color
            ),
        )
    })?;
    for (name, im) in [("image1", image1), ("image2", image2)] {
        let d = im.dims();
        if d.len() != 4 || d.contains(&0) {
            return Err(NodeError::input(
                name,
                format!("expected a non-empty IMAGE [B, H, W, C], got shape {d:?}"),
            ));
        }
    }
    let mut im1 = image1.to_dtype(DType::F32)?;
    let mut im2 = image2.to_dtype(DType::F32)?;
    let b = im1.dim(0)?.max(im2.dim(0)?);
    im1 = pad_batch(&im1, b)?;
    im2 = pad_batch(&im2, b)?;

    if o.match_image_size {
        let (_, h1, w1, _) = im1.dims4()?;
        let (_, h2, w2, _) = im2.dims4()?;
        let aspect = w2 as f64 / h2 as f64;
        // Python's int() truncates.
        let (tw, th) = if horizontal {
            ((h1 as f64 * aspect) as usize, h1)
        } else {
            (w1, (w1 as f64 / aspect) as usize)
        };
        if tw == 0 || th == 0 {
            return Err(NodeError::input(
                "image2",
                format!(
                    "resized to image1's {} it would be {tw}x{th} px",
                    if horizontal { "height" } else { "width" }
                ),
            ));
        }
        let planes = Planes::from_nhwc(&im2).map_err(|e| image_err("image2", e))?;
        im2 = scale_image(
            &planes,
            tw,
            th,
            UpscaleMethod::Lanczos,
            Crop::Disabled,
            "image2",
        )?;
    } else {
        let pad_value = match color {
            Color::Grey(v) => v,
            Color::Rgb(_) => 0.0,
        };
        let (_, h1, w1, _) = im1.dims4()?;
        let (_, h2, w2, _) = im2.dims4()?;
        let (dim, a, c) = if horizontal { (1, h1, h2) } else { (2, w1, w2) };
        if a != c {
            let target = a.max(c);
            let centered = |im: &Tensor, n: usize| -> candle_core::Result<Tensor> {
                if n >= target {
                    return Ok(im.clone());
                }
                let p = target - n;
                pad_dim(im, dim, p / 2, p - p / 2, pad_value)
            };
            im1 = centered(&im1, a)?;
            im2 = centered(&im2, c)?;
        }
    }

    let channels = im1.dim(3)?.max(im2.dim(3)?);
    im1 = pad_channels(&im1, channels)?;
    im2 = pad_channels(&im2, channels)?;

    let mut images = if matches!(o.direction, "left" | "up") {
        vec![im2.clone(), im1.clone()]
    } else {
        vec![im1.clone(), im2.clone()]
    };
    if o.spacing_width > 0 {
        let sw = o.spacing_width + o.spacing_width % 2;
        let (_, h1, w1, _) = im1.dims4()?;
        let (_, h2, w2, _) = im2.dims4()?;
        let (sh, sww) = if horizontal {
            (h1.max(h2), sw)
        } else {
            (sw, w1.max(w2))
        };
        let mut px = vec![0f32; channels];
        match color {
            Color::Rgb(rgb) => {
                for (k, v) in rgb.iter().enumerate().take(channels) {
                    px[k] = *v;
                }
            }
            Color::Grey(v) => {
                for p in px.iter_mut().take(3) {
                    *p = v;
                }
            }
        }
        if channels == 4 {
            px[3] = 1.0;
        }
        let n = b * sh * sww;
        let data: Vec<f32> = (0..n).flat_map(|_| px.iter().copied()).collect();
        let spacing = Tensor::from_vec(data, (b, sh, sww, channels), &Device::Cpu)?
            .to_device(im1.device())?;
        images.insert(1, spacing);
    }
    let dim = if horizontal { 2 } else { 1 };
    Tensor::cat(&images, dim).map_err(|e| {
        NodeError::msg(format!(
            "the images do not line up for stitching {}: {e}",
            o.direction
        ))
    })
}

struct ImageStitch;
impl Node for ImageStitch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageStitch")
            .display("Image Stitch")
            .category("image/transform")
            .module("comfy_extras.nodes_images")
            .description(
                "\nStitches image2 to image1 in the specified direction.\nIf image2 is not \
                 provided, returns image1 unchanged.\nOptional spacing can be added between \
                 images.\n",
            )
            .input(InputSpec::of("image1", "IMAGE"))
            .input(InputSpec::combo("direction", &DIRECTIONS).default("right"))
            .input(InputSpec::boolean("match_image_size").default(true))
            .input(
                InputSpec::int("spacing_width")
                    .default(0)
                    .min(0)
                    .max(1024)
                    .step(2),
            )
            .input(InputSpec::combo("spacing_color", &SPACING_COLORS).default("white"))
            .input(InputSpec::of("image2", "IMAGE").optional())
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image1 = i.object::<Image>("image1")?;
        if i.get("image2").is_none() {
            return Ok(NodeOutput::one(Value::object((*image1).clone())));
        }
        let image2 = i.object::<Image>("image2")?;
        let sw = i.int("spacing_width")?;
        let spacing_width = usize::try_from(sw)
            .map_err(|_| NodeError::input("spacing_width", format!("{sw} must be 0..1024")))?;
        let out = stitch(
            &image1.0,
            &image2.0,
            &StitchOptions {
                direction: i.string("direction")?,
                match_image_size: i.boolean("match_image_size")?,
                spacing_width,
                spacing_color: i.string("spacing_color")?,
            },
        )?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ImageStitch)
}
