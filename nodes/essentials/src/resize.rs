//! `ImageResize+`: resize with a fit method (stretch, keep proportion, fill / crop, pad), a
//! condition (always, only down, only up, by area) and an optional multiple-of crop, using the
//! same resamplers as ComfyUI (torch's interpolate modes bit for bit, Pillow's lanczos).

use comfyrs::image_ops::{interpolate, lanczos, py_round, Interp, Planes, TorchLayout};
use comfyrs::node::types::Image;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Value,
};

/// ComfyUI's MAX_RESOLUTION.
const MAX_RESOLUTION: i64 = 16384;

const INTERPOLATIONS: [&str; 6] = [
    "nearest",
    "bilinear",
    "bicubic",
    "area",
    "nearest-exact",
    "lanczos",
];
const METHODS: [&str; 4] = ["stretch", "keep proportion", "fill / crop", "pad"];
const CONDITIONS: [&str; 5] = [
    "always",
    "downscale if bigger",
    "upscale if smaller",
    "if bigger area",
    "if smaller area",
];

/// torch's legacy `nearest`: source index `floor(dst * (in / out))` in float32, clamped.
fn nearest(src: &Planes, out_h: usize, out_w: usize) -> Planes {
    let taps = |input: usize, output: usize| -> Vec<usize> {
        if input == output {
            return (0..output).collect();
        }
        if output == 2 * input {
            return (0..output).map(|o| o >> 1).collect();
        }
        let scale = input as f32 / output as f32;
        (0..output)
            .map(|o| ((o as f32 * scale).floor() as usize).min(input - 1))
            .collect()
    };
    let (ys, xs) = (taps(src.h, out_h), taps(src.w, out_w));
    let mut out = Planes::zeros(src.n, src.c, out_h, out_w);
    let mut o = 0;
    for b in 0..src.n {
        for ch in 0..src.c {
            let p = src.plane(b, ch);
            for &y in &ys {
                for &x in &xs {
                    out.data[o] = p[y * src.w + x];
                    o += 1;
                }
            }
        }
    }
    out
}

/// Python's `a // b` on ints.
fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b) - if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 }
}

/// `planes[:, :, y0:y1, x0:x1]` with Python's slice clamping (bounds already non-negative).
fn slice(p: &Planes, y0: i64, y1: i64, x0: i64, x1: i64) -> Planes {
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64) as usize;
    let (y0, y1) = (clamp(y0, p.h), clamp(y1, p.h));
    let (x0, x1) = (clamp(x0, p.w), clamp(x1, p.w));
    p.window(y0, x0, y1.saturating_sub(y0), x1.saturating_sub(x0))
}

fn pad(p: &Planes, left: usize, right: usize, top: usize, bottom: usize) -> Planes {
    let (h, w) = (p.h + top + bottom, p.w + left + right);
    let mut out = Planes::zeros(p.n, p.c, h, w);
    for b in 0..p.n {
        for ch in 0..p.c {
            for y in 0..p.h {
                let s = p.at(b, ch, y, 0);
                let d = out.at(b, ch, y + top, left);
                out.data[d..d + p.w].copy_from_slice(&p.data[s..s + p.w]);
            }
        }
    }
    out
}

pub(crate) struct ImageResize;
impl Node for ImageResize {
    fn schema(&self) -> NodeSchema {
        let size = |n: &str| {
            InputSpec::int(n)
                .default(512)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(1)
        };
        NodeSchema::new("ImageResize+")
            .display("\u{1f527} Image Resize")
            .category("essentials/image manipulation")
            .input(InputSpec::of("image", "IMAGE"))
            .input(size("width"))
            .input(size("height"))
            .input(InputSpec::combo("interpolation", &INTERPOLATIONS))
            .input(InputSpec::combo("method", &METHODS))
            .input(InputSpec::combo("condition", &CONDITIONS))
            .input(
                InputSpec::int("multiple_of")
                    .default(0)
                    .min(0)
                    .max(512)
                    .step(1),
            )
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
    }

    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let src = Planes::from_nhwc(&image.0)?;
        let (oh, ow) = (src.h as i64, src.w as i64);
        if oh == 0 || ow == 0 {
            return Err(NodeError::input("image", "the image is empty"));
        }
        let (mut width, mut height) = (i.int("width")? as i64, i.int("height")? as i64);
        let method = i.string("method")?;
        let interpolation = i.string("interpolation")?;
        let condition = i.string("condition")?;
        let multiple_of = i.int("multiple_of")? as i64;
        let (mut x, mut y, mut x2, mut y2) = (0i64, 0i64, 0i64, 0i64);
        let (mut pl, mut pr, mut pt, mut pb) = (0i64, 0i64, 0i64, 0i64);
        if multiple_of > 1 {
            width -= width % multiple_of;
            height -= height % multiple_of;
        }
        if method == "keep proportion" || method == "pad" {
            // Zero means "unbounded" (against the other side, as the pack compares).
            if width == 0 {
                width = if oh < height { MAX_RESOLUTION } else { ow };
            }
            if height == 0 {
                height = if ow < width { MAX_RESOLUTION } else { oh };
            }
            let ratio = (width as f64 / ow as f64).min(height as f64 / oh as f64);
            let (nw, nh) = (py_round(ow as f64 * ratio), py_round(oh as f64 * ratio));
            if method == "pad" {
                pl = floor_div(width - nw, 2);
                pr = width - nw - pl;
                pt = floor_div(height - nh, 2);
                pb = height - nh - pt;
            }
            width = nw;
            height = nh;
        } else if method.starts_with("fill") {
            if width <= 0 {
                width = ow;
            }
            if height <= 0 {
                height = oh;
            }
            let ratio = (width as f64 / ow as f64).max(height as f64 / oh as f64);
            let (nw, nh) = (py_round(ow as f64 * ratio), py_round(oh as f64 * ratio));
            x = floor_div(nw - width, 2);
            y = floor_div(nh - height, 2);
            x2 = x + width;
            y2 = y + height;
            if x2 > nw {
                x -= x2 - nw;
            }
            x = x.max(0);
            if y2 > nh {
                y -= y2 - nh;
            }
            y = y.max(0);
            width = nw;
            height = nh;
        } else {
            if width <= 0 {
                width = ow;
            }
            if height <= 0 {
                height = oh;
            }
        }
        let resize = condition == "always"
            || (condition == "downscale if bigger" && (oh > height || ow > width))
            || (condition == "upscale if smaller" && (oh < height || ow < width))
            || (condition == "if bigger area" && oh * ow > height * width)
            || (condition == "if smaller area" && oh * ow < height * width);
        let mut out = if resize {
            if width <= 0 || height <= 0 {
                return Err(NodeError::input(
                    "width",
                    format!("the resized image would be {width}x{height}; both sides must be at least 1"),
                ));
            }
            let (w, h) = (width as usize, height as usize);
            let layout = TorchLayout::ChannelsLast;
            let mut r = match interpolation {
                "lanczos" => lanczos(&src, w, h).map_err(|e| NodeError::input("image", e))?,
                "nearest" => nearest(&src, h, w),
                "bilinear" => interpolate(&src, h, w, Interp::Bilinear, layout),
                "bicubic" => interpolate(&src, h, w, Interp::Bicubic, layout),
                "area" => interpolate(&src, h, w, Interp::Area, layout),
                "nearest-exact" => interpolate(&src, h, w, Interp::NearestExact, layout),
                other => {
                    return Err(NodeError::input(
                        "interpolation",
                        format!("'{other}' is not one of {}", INTERPOLATIONS.join(", ")),
                    ))
                }
            };
            if method == "pad" && (pl > 0 || pr > 0 || pt > 0 || pb > 0) {
                r = pad(&r, pl as usize, pr as usize, pt as usize, pb as usize);
            }
            if method.starts_with("fill") && (x > 0 || y > 0 || x2 > 0 || y2 > 0) {
                r = slice(&r, y, y2, x, x2);
            }
            r
        } else {
            src
        };
        if multiple_of > 1 && (out.w as i64 % multiple_of != 0 || out.h as i64 % multiple_of != 0) {
            let (w, h) = (out.w as i64, out.h as i64);
            let cx = floor_div(w % multiple_of, 2);
            let cy = floor_div(h % multiple_of, 2);
            let cx2 = w - ((w % multiple_of) - cx);
            let cy2 = h - ((h % multiple_of) - cy);
            out = slice(&out, cy, cy2, cx, cx2);
        }
        for v in &mut out.data {
            *v = v.clamp(0.0, 1.0);
        }
        let (w, h) = (out.w as i128, out.h as i128);
        Ok(NodeOutput::values(vec![
            Value::object(Image(out.to_nhwc()?)),
            Value::Int(w),
            Value::Int(h),
        ]))
    }
}
