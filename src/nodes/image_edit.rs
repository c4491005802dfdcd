//! The utility image nodes of ComfyUI's official templates (`comfy_extras/nodes_images.py`,
//! `nodes_mask.py`): GetImageSize, ImageCompositeMasked, ImageScaleToMaxDimension,
//! ImageFromBatch, RepeatImageBatch, ImageFlip, ImageRotate, ResizeAndPadImage. Resampling is
//! [`crate::image_ops`]'s (via [`super::image_transform::scale_image`]); the rest is index
//! arithmetic on `[B, C, H, W]` planes.

use super::image_transform::{scale_image, upscale_method};
use crate::image_ops::{interpolate, py_round, Crop, Interp, Planes, TorchLayout, UpscaleMethod};
use crate::node::types::{Image, Mask};
use crate::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Registry, RegistryError, Value,
};

const MAX_RESOLUTION: i64 = 16384;

fn image_module(s: NodeSchema) -> NodeSchema {
    s.module("comfy_extras.nodes_images")
}

/// An IMAGE input as planes, or an error naming the input.
fn planes(i: &Inputs, name: &str) -> Result<Planes, NodeError> {
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

fn image_out(p: &Planes) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::one(Value::object(Image(p.to_nhwc()?))))
}

fn count(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = i.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} must not be negative")))
}

struct GetImageSize;
impl Node for GetImageSize {
    fn schema(&self) -> NodeSchema {
        image_module(NodeSchema::new("GetImageSize"))
            .display("Get Image Size")
            .category("image")
            .description("Returns width and height of the image, and passes it through unchanged.")
            .input(InputSpec::of("image", "IMAGE"))
            .hidden(Hidden::UniqueId)
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
            .output(OutputSpec::new("INT").named("batch_size"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let d = image.0.dims();
        if d.len() != 4 {
            return Err(NodeError::input(
                "image",
                format!("expected an IMAGE tensor [B, H, W, C], got shape {d:?}"),
            ));
        }
        Ok(NodeOutput::values(vec![
            Value::Int(d[2] as i128),
            Value::Int(d[1] as i128),
            Value::Int(d[0] as i128),
        ]))
    }
}

/// ImageScaleToMaxDimension's `upscale_methods` (ComfyUI lists bilinear twice).
const MAX_DIM_METHODS: [&str; 6] = [
    "area",
    "lanczos",
    "bilinear",
    "nearest-exact",
    "bilinear",
    "bicubic",
];

struct ImageScaleToMaxDimension;
impl Node for ImageScaleToMaxDimension {
    fn schema(&self) -> NodeSchema {
        image_module(NodeSchema::new("ImageScaleToMaxDimension"))
            .category("image/upscaling")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo("upscale_method", &MAX_DIM_METHODS))
            .input(
                InputSpec::int("largest_size")
                    .default(512)
                    .min(0)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let method = upscale_method(i, &MAX_DIM_METHODS)?;
        let largest = count(i, "largest_size")?;
        let p = planes(i, "image")?;
        let (h, w) = (p.h as f64, p.w as f64);
        let (width, height) = if p.h > p.w {
            (py_round((w / h) * largest as f64), largest as i64)
        } else if p.w > p.h {
            (largest as i64, py_round((h / w) * largest as f64))
        } else {
            (largest as i64, largest as i64)
        };
        if width < 1 || height < 1 {
            return Err(NodeError::input(
                "largest_size",
                format!("the result would be {width}x{height} pixels; both must be at least 1"),
            ));
        }
        let out = scale_image(
            &p,
            width as usize,
            height as usize,
            method,
            Crop::Disabled,
            "image",
        )?;
        Ok(NodeOutput::one(Value::object(Image(out))))
    }
}

/// `s[start..start + len]` of the batch.
fn batch_slice(p: &Planes, start: usize, len: usize) -> Planes {
    let per = p.c * p.h * p.w;
    Planes::new(
        len,
        p.c,
        p.h,
        p.w,
        p.data[start * per..(start + len) * per].to_vec(),
    )
}

struct ImageFromBatch;
impl Node for ImageFromBatch {
    fn schema(&self) -> NodeSchema {
        image_module(NodeSchema::new("ImageFromBatch"))
            .category("image/batch")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::int("batch_index").default(0).min(0).max(4095))
            .input(InputSpec::int("length").default(1).min(1).max(4096))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let p = planes(i, "image")?;
        if p.n == 0 {
            return Err(NodeError::input("image", "is an empty batch"));
        }
        let start = count(i, "batch_index")?.min(p.n - 1);
        let len = count(i, "length")?.min(p.n - start);
        image_out(&batch_slice(&p, start, len))
    }
}

struct RepeatImageBatch;
impl Node for RepeatImageBatch {
    fn schema(&self) -> NodeSchema {
        image_module(NodeSchema::new("RepeatImageBatch"))
            .category("image/batch")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::int("amount").default(1).min(1).max(4096))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let p = planes(i, "image")?;
        let amount = count(i, "amount")?;
        let mut data = Vec::with_capacity(p.data.len() * amount);
        for _ in 0..amount {
            data.extend_from_slice(&p.data);
        }
        image_out(&Planes::new(p.n * amount, p.c, p.h, p.w, data))
    }
}

/// `torch.flip` of every plane: `rows` flips dim H, otherwise dim W.
pub(crate) fn flip_planes(p: &Planes, rows: bool) -> Planes {
    let mut out = p.clone();
    for b in 0..p.n {
        for ch in 0..p.c {
            for y in 0..p.h {
                for x in 0..p.w {
                    let (sy, sx) = if rows {
                        (p.h - 1 - y, x)
                    } else {
                        (y, p.w - 1 - x)
                    };
                    let k = out.at(b, ch, y, x);
                    out.data[k] = p.data[p.at(b, ch, sy, sx)];
                }
            }
        }
    }
    out
}

/// `torch.rot90(x, k, dims=[W, H])` of every plane (a quarter turn per k, counter-clockwise
/// on screen... as ComfyUI's ImageRotate / LatentRotate call it).
pub(crate) fn rot90_planes(p: &Planes, k: usize) -> Planes {
    match k % 4 {
        0 => p.clone(),
        2 => flip_planes(&flip_planes(p, true), false),
        k => {
            let mut out = Planes::zeros(p.n, p.c, p.w, p.h);
            for b in 0..p.n {
                for ch in 0..p.c {
                    for i in 0..p.w {
                        for j in 0..p.h {
                            // k = 1: flip H then swap; k = 3: flip W then swap.
                            let (sy, sx) = if k == 1 {
                                (p.h - 1 - j, i)
                            } else {
                                (j, p.w - 1 - i)
                            };
                            let k = out.at(b, ch, i, j);
                            out.data[k] = p.data[p.at(b, ch, sy, sx)];
                        }
                    }
                }
            }
            out
        }
    }
}

pub(crate) const FLIP_METHODS: [&str; 2] = ["x-axis: vertically", "y-axis: horizontally"];
pub(crate) const ROTATIONS: [&str; 4] = ["none", "90 degrees", "180 degrees", "270 degrees"];

/// `flip_method.startswith("x")`: flip rows; `"y"`: flip columns.
pub(crate) fn flip_rows(i: &Inputs) -> Result<bool, NodeError> {
    let m = i.string("flip_method")?;
    if !FLIP_METHODS.contains(&m) {
        return Err(NodeError::input(
            "flip_method",
            format!("'{m}' is not one of {}", FLIP_METHODS.join(", ")),
        ));
    }
    Ok(m.starts_with('x'))
}

pub(crate) fn rotation_turns(i: &Inputs) -> Result<usize, NodeError> {
    let r = i.string("rotation")?;
    ROTATIONS.iter().position(|&n| n == r).ok_or_else(|| {
        NodeError::input(
            "rotation",
            format!("'{r}' is not one of {}", ROTATIONS.join(", ")),
        )
    })
}

struct ImageFlip;
impl Node for ImageFlip {
    fn schema(&self) -> NodeSchema {
        image_module(NodeSchema::new("ImageFlip"))
            .category("image/transform")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo("flip_method", &FLIP_METHODS))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let rows = flip_rows(i)?;
        image_out(&flip_planes(&planes(i, "image")?, rows))
    }
}

struct ImageRotate;
impl Node for ImageRotate {
    fn schema(&self) -> NodeSchema {
        image_module(NodeSchema::new("ImageRotate"))
            .category("image/transform")
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo("rotation", &ROTATIONS))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let k = rotation_turns(i)?;
        image_out(&rot90_planes(&planes(i, "image")?, k))
    }
}

const PAD_INTERPOLATIONS: [&str; 5] = ["area", "bicubic", "nearest-exact", "bilinear", "lanczos"];

struct ResizeAndPadImage;
impl Node for ResizeAndPadImage {
    fn schema(&self) -> NodeSchema {
        let dim = |n: &str| {
            InputSpec::int(n)
                .default(512)
                .min(1)
                .max(MAX_RESOLUTION)
                .step(1)
        };
        image_module(NodeSchema::new("ResizeAndPadImage"))
            .category("image/transform")
            .input(InputSpec::of("image", "IMAGE"))
            .input(dim("target_width"))
            .input(dim("target_height"))
            .input(InputSpec::combo("padding_color", &["white", "black"]))
            .input(InputSpec::combo("interpolation", &PAD_INTERPOLATIONS))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let p = planes(i, "image")?;
        let (tw, th) = (count(i, "target_width")?, count(i, "target_height")?);
        let name = i.string("interpolation")?;
        let method = UpscaleMethod::from_name(name)
            .filter(|_| PAD_INTERPOLATIONS.contains(&name))
            .ok_or_else(|| {
                NodeError::input(
                    "interpolation",
                    format!("'{name}' is not one of {}", PAD_INTERPOLATIONS.join(", ")),
                )
            })?;
        let pad = if i.string("padding_color")? == "black" {
            0.0
        } else {
            1.0
        };
        let scale = (tw as f64 / p.w as f64).min(th as f64 / p.h as f64);
        let (nw, nh) = ((p.w as f64 * scale) as usize, (p.h as f64 * scale) as usize);
        if nw == 0 || nh == 0 {
            return Err(NodeError::input(
                "image",
                format!(
                    "a {}x{} image fitted into {tw}x{th} would be {nw}x{nh} pixels",
                    p.w, p.h
                ),
            ));
        }
        let resized =
            Planes::from_nhwc(&scale_image(&p, nw, nh, method, Crop::Disabled, "image")?)?;
        let mut out = Planes::new(p.n, p.c, th, tw, vec![pad; p.n * p.c * th * tw]);
        let (yo, xo) = ((th - nh) / 2, (tw - nw) / 2);
        for b in 0..p.n {
            for ch in 0..p.c {
                for y in 0..nh {
                    let s = resized.at(b, ch, y, 0);
                    let d = out.at(b, ch, yo + y, xo);
                    out.data[d..d + nw].copy_from_slice(&resized.data[s..s + nw]);
                }
            }
        }
        image_out(&out)
    }
}

/// `comfy.utils.repeat_to_batch_size` on planes.
fn repeat_batch(p: &Planes, batch: usize) -> Planes {
    if p.n == batch {
        return p.clone();
    }
    let per = p.c * p.h * p.w;
    let data: Vec<f32> = (0..batch)
        .flat_map(|b| p.data[(b % p.n) * per..(b % p.n + 1) * per].iter().copied())
        .collect();
    Planes::new(batch, p.c, p.h, p.w, data)
}

/// `composite(destination, source, x, y, mask, multiplier=1, resize_source)` of
/// `comfy_extras/nodes_mask.py` on image planes (x, y ≥ 0).
fn composite_image(
    dest: &Planes,
    source: &Planes,
    x: usize,
    y: usize,
    mask: Option<&Planes>,
    resize_source: bool,
) -> Result<Planes, NodeError> {
    let mut source = source.clone();
    if resize_source {
        // F.interpolate(bilinear) of `source.movedim(-1, 1)` (a channels-last view).
        source = interpolate(
            &source,
            dest.h,
            dest.w,
            Interp::Bilinear,
            TorchLayout::ChannelsLast,
        );
    }
    if dest.n == 0 || source.n == 0 {
        return Err(NodeError::input("source", "is an empty batch"));
    }
    let source = repeat_batch(&source, dest.n);
    if !(source.c == dest.c || source.c == 1) {
        return Err(NodeError::input(
            "source",
            format!(
                "has {} channels; the destination has {} (after ComfyUI's alpha fix, which \
                 only drops a source's extra alpha channel)",
                source.c, dest.c
            ),
        ));
    }
    let x = x.min(dest.w);
    let y = y.min(dest.h);
    let (vw, vh) = ((dest.w - x).min(source.w), (dest.h - y).min(source.h));
    let mask = match mask {
        Some(m) => {
            let m = interpolate(
                m,
                source.h,
                source.w,
                Interp::Bilinear,
                TorchLayout::ChannelsFirst,
            );
            Some(repeat_batch(&m, source.n))
        }
        None => None,
    };
    let mut out = dest.clone();
    for b in 0..dest.n {
        for ch in 0..dest.c {
            let sc = ch.min(source.c - 1);
            for r in 0..vh {
                for c in 0..vw {
                    let m = mask.as_ref().map_or(1.0, |m| m.data[m.at(b, 0, r, c)]);
                    let s = source.data[source.at(b, sc, r, c)];
                    let di = out.at(b, ch, y + r, x + c);
                    out.data[di] = m * s + (1.0 - m) * dest.data[di];
                }
            }
        }
    }
    Ok(out)
}

struct ImageCompositeMasked;
impl Node for ImageCompositeMasked {
    fn schema(&self) -> NodeSchema {
        let pos = |n: &str| {
            InputSpec::int(n)
                .default(0)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(1)
        };
        NodeSchema::new("ImageCompositeMasked")
            .category("image")
            .module("comfy_extras.nodes_mask")
            .input(InputSpec::of("destination", "IMAGE"))
            .input(InputSpec::of("source", "IMAGE"))
            .input(pos("x"))
            .input(pos("y"))
            .input(InputSpec::boolean("resize_source").default(false))
            .input(InputSpec::of("mask", "MASK").optional())
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut dest = planes(i, "destination")?;
        let mut source = planes(i, "source")?;
        // node_helpers.image_alpha_fix
        if dest.c < source.c {
            let keep = dest.c;
            let mut s = Planes::zeros(source.n, keep, source.h, source.w);
            for b in 0..source.n {
                for ch in 0..keep {
                    let (d, o) = (s.at(b, ch, 0, 0), source.at(b, ch, 0, 0));
                    let len = source.h * source.w;
                    s.data[d..d + len].copy_from_slice(&source.data[o..o + len]);
                }
            }
            source = s;
        } else if dest.c > source.c {
            let mut d = Planes::zeros(dest.n, dest.c + 1, dest.h, dest.w);
            for b in 0..dest.n {
                for ch in 0..=dest.c {
                    for yy in 0..dest.h {
                        for xx in 0..dest.w {
                            let v = if ch < dest.c {
                                dest.data[dest.at(b, ch, yy, xx)]
                            } else {
                                1.0
                            };
                            let k = d.at(b, ch, yy, xx);
                            d.data[k] = v;
                        }
                    }
                }
            }
            dest = d;
        }
        let mask = match i.get("mask") {
            Some(_) => Some(Planes::from_mask(&i.object::<Mask>("mask")?.0)?),
            None => None,
        };
        let out = composite_image(
            &dest,
            &source,
            count(i, "x")?,
            count(i, "y")?,
            mask.as_ref(),
            i.boolean("resize_source")?,
        )?;
        image_out(&out)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(GetImageSize)?;
    r.register(ImageCompositeMasked)?;
    r.register(ImageScaleToMaxDimension)?;
    r.register(ImageFromBatch)?;
    r.register(RepeatImageBatch)?;
    r.register(ImageFlip)?;
    r.register(ImageRotate)?;
    r.register(ResizeAndPadImage)?;
    Ok(())
}
