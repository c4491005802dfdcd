//! ComfyUI's post-processing image nodes (`comfy_extras/nodes_post_processing.py`):
//! ImageBlend, ImageBlur, ImageSharpen. Float32 element-wise as torch evaluates them; the blur
//! and sharpen kernels are torch's `gaussian_kernel` and the convolution runs over the
//! reflect-padded image (the zero padding `F.conv2d` adds is cropped away by the node).

use crate::image_ops::{
    common_upscale, gaussian_kernel, sharpen_kernel, Crop, Planes, TorchLayout, UpscaleMethod,
};
use crate::node::types::Image;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

const CATEGORY: &str = "image/postprocessing";

fn v3(class: &str) -> NodeSchema {
    NodeSchema::new(class)
        .category(CATEGORY)
        .module("comfy_extras.nodes_post_processing")
        .v3()
}

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

/// `node_helpers.image_alpha_fix(destination, source)`: the source loses channels the
/// destination lacks; a destination with fewer channels gets an opaque alpha channel.
pub fn image_alpha_fix(dest: Planes, source: Planes) -> (Planes, Planes) {
    let with_channels = |p: &Planes, c: usize, fill: f32| {
        let mut out = Planes::zeros(p.n, c, p.h, p.w);
        let plane = p.h * p.w;
        for b in 0..p.n {
            for ch in 0..c {
                let o = out.at(b, ch, 0, 0);
                if ch < p.c {
                    out.data[o..o + plane].copy_from_slice(p.plane(b, ch));
                } else {
                    out.data[o..o + plane].fill(fill);
                }
            }
        }
        out
    };
    if dest.c < source.c {
        let s = with_channels(&source, dest.c, 0.0);
        (dest, s)
    } else if dest.c > source.c {
        (with_channels(&dest, dest.c + 1, 1.0), source)
    } else {
        (dest, source)
    }
}

pub const BLEND_MODES: [&str; 6] = [
    "normal",
    "multiply",
    "screen",
    "overlay",
    "soft_light",
    "difference",
];

/// `Blend.blend_mode` on one pair of values.
fn blend_value(a: f32, b: f32, mode: &str) -> f32 {
    match mode {
        "normal" => b,
        "multiply" => a * b,
        "screen" => 1.0 - (1.0 - a) * (1.0 - b),
        "overlay" => {
            if a <= 0.5 {
                2.0 * a * b
            } else {
                1.0 - 2.0 * (1.0 - a) * (1.0 - b)
            }
        }
        "soft_light" => {
            if b <= 0.5 {
                a - (1.0 - 2.0 * b) * a * (1.0 - a)
            } else {
                let g = if a <= 0.25 {
                    ((16.0 * a - 12.0) * a + 4.0) * a
                } else {
                    a.sqrt()
                };
                a + (2.0 * b - 1.0) * (g - a)
            }
        }
        // "difference"
        _ => a - b,
    }
}

/// ImageBlend: image2 resized (bicubic, centre crop) to image1 when their shapes differ,
/// blended by `mode`, mixed with image1 by `factor`, clamped to [0, 1].
pub fn blend(image1: Planes, image2: Planes, factor: f64, mode: &str) -> Result<Planes, NodeError> {
    let (a, mut b) = image_alpha_fix(image1, image2);
    if (a.n, a.c, a.h, a.w) != (b.n, b.c, b.h, b.w) && (a.h, a.w) != (b.h, b.w) {
        b = common_upscale(
            &b,
            a.w,
            a.h,
            UpscaleMethod::Bicubic,
            Crop::Center,
            TorchLayout::ChannelsLast,
        )
        .map_err(|e| NodeError::input("image2", e))?;
    }
    // torch broadcasting over the batch: equal, or one of them 1.
    if a.c != b.c || !(a.n == b.n || a.n == 1 || b.n == 1) {
        return Err(NodeError::input(
            "image2",
            format!(
                "has {} images of {} channels; image1 has {} of {} (the batches must match \
                 or one be 1)",
                b.n, b.c, a.n, a.c
            ),
        ));
    }
    let n = a.n.max(b.n);
    let keep = (1.0 - factor) as f32;
    let f = factor as f32;
    let mut out = Planes::zeros(n, a.c, a.h, a.w);
    let per = a.c * a.h * a.w;
    for k in 0..n {
        let (pa, pb) = (
            &a.data[(k % a.n) * per..][..per],
            &b.data[(k % b.n) * per..][..per],
        );
        for (o, (&x, &y)) in out.data[k * per..][..per].iter_mut().zip(pa.iter().zip(pb)) {
            let v = x * keep + blend_value(x, y, mode) * f;
            *o = v.clamp(0.0, 1.0);
        }
    }
    Ok(out)
}

/// The reflect-padded convolution of the blur and sharpen nodes, its error naming `input`.
fn convolve_reflect(
    img: &Planes,
    kernel: &[f32],
    r: usize,
    input: &str,
) -> Result<Planes, NodeError> {
    crate::image_ops::convolve_reflect(img, kernel, r).map_err(|e| NodeError::input(input, e))
}

/// ImageBlur.
pub fn blur(img: &Planes, radius: usize, sigma: f64) -> Result<Planes, NodeError> {
    if radius == 0 {
        return Ok(img.clone());
    }
    let kernel = gaussian_kernel(2 * radius + 1, sigma);
    convolve_reflect(img, &kernel, radius, "image")
}

/// ImageSharpen: the negated Gaussian times `alpha·10` with its centre raised so the kernel
/// sums to 1, then clamped to [0, 1].
pub fn sharpen(img: &Planes, radius: usize, sigma: f64, alpha: f64) -> Result<Planes, NodeError> {
    if radius == 0 {
        return Ok(img.clone());
    }
    let kernel = sharpen_kernel(radius, sigma, alpha);
    let mut out = convolve_reflect(img, &kernel, radius, "image")?;
    for v in &mut out.data {
        *v = v.clamp(0.0, 1.0);
    }
    Ok(out)
}

fn radius(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = i.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} must not be negative")))
}

struct ImageBlend;
impl Node for ImageBlend {
    fn schema(&self) -> NodeSchema {
        v3("ImageBlend")
            .input(InputSpec::of("image1", "IMAGE"))
            .input(InputSpec::of("image2", "IMAGE"))
            .input(
                InputSpec::float("blend_factor")
                    .default(0.5)
                    .min(0.0)
                    .max(1.0)
                    .step(0.01),
            )
            .input(InputSpec::combo("blend_mode", &BLEND_MODES))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mode = i.string("blend_mode")?;
        if !BLEND_MODES.contains(&mode) {
            return Err(NodeError::input(
                "blend_mode",
                format!("{mode:?} is not one of {BLEND_MODES:?}"),
            ));
        }
        let out = blend(
            planes(i, "image1")?,
            planes(i, "image2")?,
            i.float("blend_factor")?,
            mode,
        )?;
        image_out(&out)
    }
}

struct ImageBlur;
impl Node for ImageBlur {
    fn schema(&self) -> NodeSchema {
        v3("ImageBlur")
            .input(InputSpec::of("image", "IMAGE"))
            .input(
                InputSpec::int("blur_radius")
                    .default(1)
                    .min(1)
                    .max(31)
                    .step(1),
            )
            .input(
                InputSpec::float("sigma")
                    .default(1.0)
                    .min(0.1)
                    .max(10.0)
                    .step(0.1),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let out = blur(
            &planes(i, "image")?,
            radius(i, "blur_radius")?,
            i.float("sigma")?,
        )?;
        image_out(&out)
    }
}

struct ImageSharpen;
impl Node for ImageSharpen {
    fn schema(&self) -> NodeSchema {
        v3("ImageSharpen")
            .input(InputSpec::of("image", "IMAGE"))
            .input(
                InputSpec::int("sharpen_radius")
                    .default(1)
                    .min(1)
                    .max(31)
                    .step(1),
            )
            .input(
                InputSpec::float("sigma")
                    .default(1.0)
                    .min(0.1)
                    .max(10.0)
                    .step(0.01),
            )
            .input(
                InputSpec::float("alpha")
                    .default(1.0)
                    .min(0.0)
                    .max(5.0)
                    .step(0.01),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let out = sharpen(
            &planes(i, "image")?,
            radius(i, "sharpen_radius")?,
            i.float("sigma")?,
            i.float("alpha")?,
        )?;
        image_out(&out)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ImageBlend)?;
    r.register(ImageBlur)?;
    r.register(ImageSharpen)?;
    Ok(())
}
