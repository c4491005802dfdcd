//! Morphology ("ImageMorphology", comfy_extras/nodes_morphology.py): kornia's grey-scale
//! morphology with a full `k x k` kernel and its default geodesic border (pixels outside the
//! image are ignored), on every channel. Erosion takes the minimum over rows
//! `y − k/2 .. y + (k−1)/2` (rounding down, kernel origin `k/2`), dilation, which reflects the
//! kernel, the maximum over `y − (k−1)/2 .. y + k/2`; likewise for columns. The rest are
//! compositions: open = dilate(erode), close = erode(dilate), gradient = dilate − erode,
//! top hat = image − open, bottom hat = close − image. Minima and maxima are exact, so results
//! equal kornia's bit for bit.

use crate::image_ops::Planes;
use crate::node::types::Image;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

pub const OPERATIONS: [&str; 7] = [
    "erode",
    "dilate",
    "open",
    "close",
    "gradient",
    "bottom_hat",
    "top_hat",
];

/// A window of `before + 1 + after` samples and the reduction over it (min or max).
#[derive(Clone, Copy)]
struct Window {
    before: usize,
    after: usize,
    pick: fn(f32, f32) -> f32,
}

/// Slides `win` (clipped to the line) along each line of `n` samples spaced `stride` apart.
fn pass(
    src: &[f32],
    dst: &mut [f32],
    lines: impl Iterator<Item = usize>,
    (n, stride): (usize, usize),
    win: &Window,
) {
    let Window {
        before,
        after,
        pick,
    } = *win;
    for start in lines {
        for i in 0..n {
            let lo = i.saturating_sub(before);
            let hi = (i + after).min(n - 1);
            let mut v = src[start + lo * stride];
            for j in lo + 1..=hi {
                v = pick(v, src[start + j * stride]);
            }
            dst[start + i * stride] = v;
        }
    }
}

/// Erosion (`dilate == false`) or dilation of every plane with a `k x k` window.
fn morph(p: &Planes, k: usize, dilate: bool) -> Planes {
    let (o, rest) = (k / 2, k - k / 2 - 1);
    let win = if dilate {
        Window {
            before: rest,
            after: o,
            pick: f32::max,
        }
    } else {
        Window {
            before: o,
            after: rest,
            pick: f32::min,
        }
    };
    let (h, w) = (p.h, p.w);
    let planes = p.n * p.c;
    let mut rows = vec![0f32; p.data.len()];
    pass(
        &p.data,
        &mut rows,
        (0..planes * h).map(|r| r * w),
        (w, 1),
        &win,
    );
    let mut out = vec![0f32; p.data.len()];
    pass(
        &rows,
        &mut out,
        (0..planes).flat_map(|pl| (0..w).map(move |x| pl * h * w + x)),
        (h, w),
        &win,
    );
    Planes::new(p.n, p.c, h, w, out)
}

fn sub(a: &Planes, b: &Planes) -> Planes {
    let data = a.data.iter().zip(&b.data).map(|(x, y)| x - y).collect();
    Planes::new(a.n, a.c, a.h, a.w, data)
}

/// The node's operation on `[N, C, H, W]` planes.
pub fn morphology(p: &Planes, operation: &str, k: usize) -> Option<Planes> {
    let erode = |p: &Planes| morph(p, k, false);
    let dilate = |p: &Planes| morph(p, k, true);
    Some(match operation {
        "erode" => erode(p),
        "dilate" => dilate(p),
        "open" => dilate(&erode(p)),
        "close" => erode(&dilate(p)),
        "gradient" => sub(&dilate(p), &erode(p)),
        "top_hat" => sub(p, &dilate(&erode(p))),
        "bottom_hat" => sub(&erode(&dilate(p)), p),
        _ => return None,
    })
}

struct Morphology;
impl Node for Morphology {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Morphology")
            .display("ImageMorphology")
            .category("image/postprocessing")
            .module("comfy_extras.nodes_morphology")
            .v3()
            .input(InputSpec::of("image", "IMAGE"))
            .input(InputSpec::combo("operation", &OPERATIONS))
            .input(
                InputSpec::int("kernel_size")
                    .default(3)
                    .min(3)
                    .max(999)
                    .step(1),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let e = |e: candle_core::Error| NodeError::msg(e.to_string());
        let img = Planes::from_nhwc(&i.object::<Image>("image")?.0).map_err(e)?;
        let k = i.int("kernel_size")?;
        let k = usize::try_from(k)
            .ok()
            .filter(|k| *k >= 1)
            .ok_or_else(|| NodeError::input("kernel_size", format!("must be >= 1, got {k}")))?;
        let op = i.string("operation")?;
        let out = morphology(&img, op, k).ok_or_else(|| {
            NodeError::input(
                "operation",
                format!("'{op}' is not one of {}", OPERATIONS.join(", ")),
            )
        })?;
        Ok(NodeOutput::one(Value::object(Image(
            out.to_nhwc().map_err(e)?,
        ))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(Morphology)?;
    Ok(())
}
