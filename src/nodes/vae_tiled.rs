//! VAEDecodeTiled and VAEEncodeTiled (nodes.py, `comfy.sd.VAE.decode_tiled_` /
//! `encode_tiled_`): the image is processed in overlapping tiles, three times with different
//! tile shapes (square, tall, wide) whose feathered blends are averaged, so that large images
//! decode or encode in bounded memory without visible seams. The temporal inputs only matter
//! for video VAEs, which comfyrs does not run; they are accepted and ignored, as ComfyUI does
//! for image VAEs.

use super::sd_types::SdVae;
use crate::image_ops::{tiled_scale, Planes, TiledError};
use crate::models::Vae;
use crate::node::types::{Image, Latent};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

fn temporal_inputs(s: NodeSchema, verb: &str) -> NodeSchema {
    s.input(
        InputSpec::int("temporal_size")
            .default(64)
            .min(8)
            .max(4096)
            .step(4)
            .tooltip(&format!(
                "Only used for video VAEs: Amount of frames to {verb} at a time."
            )),
    )
    .input(
        InputSpec::int("temporal_overlap")
            .default(8)
            .min(4)
            .max(4096)
            .step(4)
            .tooltip("Only used for video VAEs: Amount of frames to overlap."),
    )
}

/// A non-negative INT input.
fn size_input(i: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = i.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::input(name, format!("must be >= 0, got {v}")))
}

fn tiled_err(input: &str, e: TiledError<NodeError>) -> NodeError {
    match e {
        TiledError::Function(e) => e,
        TiledError::Geometry(m) => NodeError::input(input, m),
    }
}

fn to_planes(t: &candle_core::Tensor) -> Result<Planes, NodeError> {
    Planes::from_nchw(t).map_err(|e| NodeError::msg(e.to_string()))
}

/// `decode_tiled_`: the raw decoder output blended over tiles of (tile_y·2, tile_x/2),
/// (tile_y/2, tile_x·2) and (tile_y, tile_x) latent samples (rows, cols), summed in that
/// order, divided by 3, then mapped to 0..1 like a plain decode.
pub fn decode_tiled(
    vae: &Vae,
    latent: &candle_core::Tensor,
    tile: usize,
    overlap: usize,
) -> Result<candle_core::Tensor, NodeError> {
    let up = vae.config().downscale();
    let dims = latent.dims();
    if dims.len() != 4 {
        return Err(NodeError::input(
            "samples",
            format!("an image VAE decodes [B, C, H, W] latents, got shape {dims:?}"),
        ));
    }
    let z = to_planes(latent)?;
    let decode = |p: &Planes| -> Result<Planes, NodeError> {
        let t = p.to_nchw().map_err(|e| NodeError::msg(e.to_string()))?;
        let x = vae
            .decode_raw(&t)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        to_planes(&x)
    };
    let pass = |rows: usize, cols: usize| {
        tiled_scale(&z, (rows, cols), overlap, up as f64, 3, decode)
            .map_err(|e| tiled_err("tile_size", e))
    };
    let a = pass(tile * 2, tile / 2)?;
    let b = pass(tile / 2, tile * 2)?;
    let c = pass(tile, tile)?;
    let data: Vec<f32> = a
        .data
        .iter()
        .zip(&b.data)
        .zip(&c.data)
        .map(|((a, b), c)| ((((a + b) + c) / 3.0 + 1.0) / 2.0).clamp(0.0, 1.0))
        .collect();
    Planes::new(a.n, a.c, a.h, a.w, data)
        .to_nhwc()
        .map_err(|e| NodeError::msg(e.to_string()))
}

/// `encode_tiled_`: pixels center-cropped to whole latent samples, mapped to -1..1, encoded
/// over tiles of (tile_y, tile_x), (tile_y/2, tile_x·2) and (tile_y·2, tile_x/2) pixels, the
/// three latents summed in that order and divided by 3.
pub fn encode_tiled(
    vae: &Vae,
    pixels: &candle_core::Tensor,
    tile: usize,
    overlap: usize,
) -> Result<candle_core::Tensor, NodeError> {
    let f = vae.config().downscale();
    let (_, h, w, c) = pixels
        .dims4()
        .map_err(|_| NodeError::input("pixels", "an IMAGE is [B, H, W, C]"))?;
    if c < 3 {
        return Err(NodeError::input(
            "pixels",
            format!("image has {c} channels, need 3"),
        ));
    }
    let (nh, nw) = (h / f * f, w / f * f);
    if nh == 0 || nw == 0 {
        return Err(NodeError::input(
            "pixels",
            format!("image {w}x{h} is smaller than {f} pixels"),
        ));
    }
    let m = |e: candle_core::Error| NodeError::msg(e.to_string());
    let img = pixels
        .narrow(1, (h % f) / 2, nh)
        .and_then(|t| t.narrow(2, (w % f) / 2, nw))
        .and_then(|t| t.narrow(3, 0, 3))
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .and_then(|t| t.contiguous())
        .map_err(m)?;
    let px = to_planes(&img)?;
    let zc = vae.config().z_channels;
    let encode = |p: &Planes| -> Result<Planes, NodeError> {
        let t = p.to_nchw().map_err(|e| NodeError::msg(e.to_string()))?;
        let x = ((t * 2.0).and_then(|t| t - 1.0)).map_err(m)?;
        let z = vae
            .encode_raw(&x)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        to_planes(&z)
    };
    let pass = |rows: usize, cols: usize| {
        tiled_scale(&px, (rows, cols), overlap, 1.0 / f as f64, zc, encode)
            .map_err(|e| tiled_err("tile_size", e))
    };
    let a = pass(tile, tile)?;
    let b = pass(tile / 2, tile * 2)?;
    let c = pass(tile * 2, tile / 2)?;
    let data: Vec<f32> = a
        .data
        .iter()
        .zip(&b.data)
        .zip(&c.data)
        .map(|((a, b), c)| ((a + b) + c) / 3.0)
        .collect();
    Planes::new(a.n, a.c, a.h, a.w, data)
        .to_nchw()
        .map_err(|e| NodeError::msg(e.to_string()))
}

struct VaeDecodeTiled;
impl Node for VaeDecodeTiled {
    fn schema(&self) -> NodeSchema {
        let s = NodeSchema::new("VAEDecodeTiled")
            .display("VAE Decode (Tiled)")
            .category("_for_testing")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::of("vae", "VAE"))
            .input(
                InputSpec::int("tile_size")
                    .default(512)
                    .min(64)
                    .max(4096)
                    .step(32),
            )
            .input(
                InputSpec::int("overlap")
                    .default(64)
                    .min(0)
                    .max(4096)
                    .step(32),
            );
        temporal_inputs(s, "decode").output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let vae = i.object::<SdVae>("vae")?;
        let latent = i.object::<Latent>("samples")?;
        let tile_size = size_input(i, "tile_size")?;
        let mut overlap = size_input(i, "overlap")?;
        if tile_size < overlap * 4 {
            overlap = tile_size / 4;
        }
        let f = vae.0.config().downscale();
        if tile_size / f < 2 {
            return Err(NodeError::input(
                "tile_size",
                format!("must be at least {} pixels, got {tile_size}", 2 * f),
            ));
        }
        ctx.check_interrupt()?;
        let img = decode_tiled(&vae.0, &latent.samples, tile_size / f, overlap / f)?;
        Ok(NodeOutput::one(Value::object(Image(img))))
    }
}

struct VaeEncodeTiled;
impl Node for VaeEncodeTiled {
    fn schema(&self) -> NodeSchema {
        let s = NodeSchema::new("VAEEncodeTiled")
            .display("VAE Encode (Tiled)")
            .category("_for_testing")
            .input(InputSpec::of("pixels", "IMAGE"))
            .input(InputSpec::of("vae", "VAE"))
            .input(
                InputSpec::int("tile_size")
                    .default(512)
                    .min(64)
                    .max(4096)
                    .step(64),
            )
            .input(
                InputSpec::int("overlap")
                    .default(64)
                    .min(0)
                    .max(4096)
                    .step(32),
            );
        temporal_inputs(s, "encode").output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let vae = i.object::<SdVae>("vae")?;
        let pixels = i.object::<Image>("pixels")?;
        let tile_size = size_input(i, "tile_size")?;
        let overlap = size_input(i, "overlap")?;
        ctx.check_interrupt()?;
        let z = encode_tiled(&vae.0, &pixels.0, tile_size, overlap)?;
        Ok(NodeOutput::one(Value::object(Latent::new(z))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(VaeDecodeTiled)?;
    r.register(VaeEncodeTiled)?;
    Ok(())
}
