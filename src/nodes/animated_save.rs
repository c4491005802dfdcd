//! SaveAnimatedPNG and SaveAnimatedWEBP (`comfy_extras/nodes_images.py`): a batch of images
//! as one animation in the output folder, each frame lasting `int(1000 / fps)` ms, looping
//! forever.
//!
//! * APNG (the `png` crate): as Pillow writes it, consecutive identical frames are merged
//!   (their durations added), a single remaining frame is a plain PNG, every frame's delay is
//!   the reduced fraction ms/1000, and the prompt and extra_pnginfo go in `comf` chunks
//!   after the image data (`keyword\0json`).
//! * WebP (libwebp's animation encoder through `libwebp-sys`): the options Pillow passes
//!   (lossless, quality, method 0/4/6 for fastest/default/slowest, kmin/kmax 9/17 lossless or
//!   3/5 lossy, loop 0), the prompt and extra_pnginfo in an EXIF chunk as Pillow stores
//!   them (tag 0x0110 `prompt:{json}`, then 0x010F, 0x010E... `{key}:{json}`).
//!
//! Decoded frames equal the input pixels (lossless; lossy WebP is lossy), not the encoders'
//! bytes.

use super::image_io::{get_save_image_path, tensor_to_images8, Image8};
use super::utils::py_json_dumps;
use crate::node::types::Image;
use crate::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry,
    RegistryError,
};
use serde_json::{json, Map, Value as Json};

/// `int(1000.0 / fps)` milliseconds.
fn frame_ms(fps: f64, input: &str) -> Result<u32, NodeError> {
    let ms = (1000.0 / fps).trunc();
    if !ms.is_finite() || !(0.0..=u32::MAX as f64).contains(&ms) {
        return Err(NodeError::input(
            input,
            format!("fps {fps} gives no valid frame duration"),
        ));
    }
    Ok(ms as u32)
}

fn frames(i: &Inputs) -> Result<Vec<Image8>, NodeError> {
    let images = i.object::<Image>("images")?;
    let frames = tensor_to_images8(&images.0)?;
    if frames.is_empty() {
        return Err(NodeError::input("images", "the batch holds no image"));
    }
    if let Some(f) = frames.iter().find(|f| f.channels != 3 && f.channels != 4) {
        return Err(NodeError::input(
            "images",
            format!("frames must be RGB or RGBA, got {} channels", f.channels),
        ));
    }
    Ok(frames)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Pillow's APNG frame delay for `ms`: `Fraction(ms / 1000).limit_denominator(65535)`,
/// which for whole milliseconds is ms/1000 reduced; None when the numerator does not fit.
fn apng_delay(ms: u32) -> Option<(u16, u16)> {
    let g = gcd(ms, 1000).max(1);
    Some((u16::try_from(ms / g).ok()?, (1000 / g) as u16))
}

/// The APNG bytes: frames (merged as Pillow merges identical neighbours) and `comf` chunks.
pub fn encode_apng(
    frames: &[Image8],
    ms: u32,
    compress_level: u8,
    comf: &[(String, String)],
) -> Result<Vec<u8>, NodeError> {
    let (w, h, c) = (frames[0].width, frames[0].height, frames[0].channels);
    if let Some(f) = frames
        .iter()
        .find(|f| (f.width, f.height, f.channels) != (w, h, c))
    {
        return Err(NodeError::input(
            "images",
            format!(
                "all frames must have the first one's size {w}x{h}, got {}x{}",
                f.width, f.height
            ),
        ));
    }
    // (frame index, duration)
    let mut kept: Vec<(usize, u32)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if let Some(last) = kept.last_mut() {
            if frames[last.0].data == f.data {
                let sum = last.1.saturating_add(ms);
                if apng_delay(sum).is_some() {
                    last.1 = sum;
                    continue;
                }
            }
        }
        kept.push((i, ms));
    }
    let png_err = |e: png::EncodingError| NodeError::msg(format!("PNG encoding failed: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(if c == 4 {
            png::ColorType::Rgba
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        enc.set_deflate_compression(if compress_level == 0 {
            png::DeflateCompression::NoCompression
        } else {
            png::DeflateCompression::Level(compress_level.min(9))
        });
        if kept.len() > 1 {
            enc.set_animated(kept.len() as u32, 0).map_err(png_err)?;
        }
        let mut wr = enc.write_header().map_err(png_err)?;
        for (i, d) in &kept {
            if kept.len() > 1 {
                let (num, den) = apng_delay(*d).unwrap_or((u16::MAX, 1000));
                wr.set_frame_delay(num, den).map_err(png_err)?;
            }
            wr.write_image_data(&frames[*i].data).map_err(png_err)?;
        }
        for (key, text) in comf {
            let mut chunk = latin1(key)?;
            chunk.push(0);
            chunk.extend(latin1(text)?);
            wr.write_chunk(png::chunk::ChunkType(*b"comf"), &chunk)
                .map_err(png_err)?;
        }
        wr.finish().map_err(png_err)?;
    }
    Ok(out)
}

fn latin1(s: &str) -> Result<Vec<u8>, NodeError> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| NodeError::msg(format!("{s:?} is not Latin-1 encodable")))
}

/// (key, json) of the prompt and every extra_pnginfo entry, as the savers embed them.
fn metadata_entries(ctx: &NodeContext) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let prompt = ctx.prompt.json();
    if !prompt.is_null() {
        out.push(("prompt".to_string(), py_json_dumps(prompt)));
    }
    if let Some(Json::Object(m)) = ctx.extra_pnginfo {
        for (k, v) in m {
            out.push((k.clone(), py_json_dumps(v)));
        }
    }
    out
}

fn saved_ui(file: String, subfolder: &str) -> NodeOutput {
    let mut ui = Map::new();
    ui.insert(
        "images".into(),
        json!([{"filename": file, "subfolder": subfolder, "type": "output"}]),
    );
    ui.insert("animated".into(), json!([true]));
    NodeOutput::ui(ui)
}

fn fps_input() -> InputSpec {
    InputSpec::float("fps")
        .default(6.0)
        .min(0.01)
        .max(1000.0)
        .step(0.01)
}

struct SaveAnimatedPng;
impl Node for SaveAnimatedPng {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveAnimatedPNG")
            .module("comfy_extras.nodes_images")
            .category("image/animation")
            .input(InputSpec::of("images", "IMAGE"))
            .input(InputSpec::string("filename_prefix").default("ComfyUI"))
            .input(fps_input())
            .input(InputSpec::int("compress_level").default(4).min(0).max(9))
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let frames = frames(i)?;
        let ms = frame_ms(i.float("fps")?, "fps")?;
        let level = u8::try_from(i.int("compress_level")?.clamp(0, 9)).unwrap_or(4);
        let bytes = encode_apng(&frames, ms, level, &metadata_entries(ctx))?;
        let (w, h) = (frames[0].width as usize, frames[0].height as usize);
        let sp = get_save_image_path(i.string("filename_prefix")?, &ctx.env.paths.output, w, h)?;
        let file = format!("{}_{:05}_.png", sp.filename, sp.counter);
        std::fs::write(sp.full_output_folder.join(&file), bytes)?;
        Ok(saved_ui(file, &sp.subfolder))
    }
}

/// The EXIF block (TIFF, little-endian, IFD0 only) holding ASCII `tags`, as Pillow's
/// `Exif.tobytes()` lays it out without its `Exif\0\0` header.
fn exif_tiff(tags: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut tags: Vec<&(u16, Vec<u8>)> = tags.iter().collect();
    tags.sort_by_key(|t| t.0);
    let n = tags.len();
    let mut out = Vec::new();
    out.extend(b"II");
    out.extend(42u16.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend((n as u16).to_le_bytes());
    let mut data_off = 8 + 2 + 12 * n + 4;
    let mut data = Vec::new();
    for (tag, value) in &tags {
        let mut v = value.clone();
        v.push(0);
        out.extend(tag.to_le_bytes());
        out.extend(2u16.to_le_bytes()); // ASCII
        out.extend((v.len() as u32).to_le_bytes());
        if v.len() <= 4 {
            let mut inline = v.clone();
            inline.resize(4, 0);
            out.extend(inline);
        } else {
            out.extend((data_off as u32).to_le_bytes());
            if v.len() % 2 == 1 {
                v.push(0);
            }
            data_off += v.len();
            data.extend(v);
        }
    }
    out.extend(0u32.to_le_bytes());
    out.extend(data);
    out
}

/// `webp` with an EXIF chunk added (and the VP8X header's EXIF flag set).
fn add_exif(webp: Vec<u8>, exif: &[u8]) -> Vec<u8> {
    if webp.len() < 30
        || &webp[0..4] != b"RIFF"
        || &webp[8..12] != b"WEBP"
        || &webp[12..16] != b"VP8X"
    {
        return webp;
    }
    let mut out = webp;
    out[20] |= 0x08;
    out.extend(b"EXIF");
    out.extend((exif.len() as u32).to_le_bytes());
    out.extend(exif);
    if exif.len() % 2 == 1 {
        out.push(0);
    }
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

/// An animated WebP of `frames` (`ms` each) with libwebp's animation encoder.
pub fn encode_webp(
    frames: &[Image8],
    ms: u32,
    lossless: bool,
    quality: f32,
    method: i32,
) -> Result<Vec<u8>, NodeError> {
    use libwebp_sys as w;
    let (wd, ht) = (frames[0].width, frames[0].height);
    if frames.iter().any(|f| (f.width, f.height) != (wd, ht)) {
        return Err(NodeError::input(
            "images",
            "all frames must have the same size",
        ));
    }
    let fail = |what: &str| NodeError::msg(format!("WebP encoding failed: {what}"));
    // SAFETY: every libwebp object is initialised by its init function before use and freed
    // on every path; picture buffers are owned by libwebp (imported copies of our frames).
    unsafe {
        let mut config = std::mem::MaybeUninit::<w::WebPConfig>::uninit();
        if w::WebPConfigInitInternal(
            config.as_mut_ptr(),
            w::WebPPreset::WEBP_PRESET_DEFAULT,
            quality,
            w::WEBP_ENCODER_ABI_VERSION as i32,
        ) == 0
        {
            return Err(fail("config"));
        }
        let mut config = config.assume_init();
        config.lossless = lossless as i32;
        config.quality = quality;
        config.method = method;
        if w::WebPValidateConfig(&config) == 0 {
            return Err(fail("invalid options"));
        }
        let mut opts = std::mem::MaybeUninit::<w::WebPAnimEncoderOptions>::uninit();
        let abi = w::WebPGetMuxABIVersion();
        if w::WebPAnimEncoderOptionsInitInternal(opts.as_mut_ptr(), abi) == 0 {
            return Err(fail("options"));
        }
        let mut opts = opts.assume_init();
        opts.anim_params.loop_count = 0;
        opts.anim_params.bgcolor = 0;
        opts.minimize_size = 0;
        opts.allow_mixed = 0;
        (opts.kmin, opts.kmax) = if lossless { (9, 17) } else { (3, 5) };
        let enc = w::WebPAnimEncoderNewInternal(wd as i32, ht as i32, &opts, abi);
        if enc.is_null() {
            return Err(fail("encoder"));
        }
        let mut t: i64 = 0;
        let mut result = Ok(());
        for f in frames {
            let mut pic = std::mem::MaybeUninit::<w::WebPPicture>::uninit();
            if w::WebPPictureInitInternal(pic.as_mut_ptr(), w::WEBP_ENCODER_ABI_VERSION as i32) == 0
            {
                result = Err(fail("picture"));
                break;
            }
            let mut pic = pic.assume_init();
            pic.width = wd as i32;
            pic.height = ht as i32;
            pic.use_argb = 1;
            let stride = (wd as usize * f.channels) as i32;
            let ok = if f.channels == 4 {
                w::WebPPictureImportRGBA(&mut pic, f.data.as_ptr(), stride)
            } else {
                w::WebPPictureImportRGB(&mut pic, f.data.as_ptr(), stride)
            };
            let added = ok != 0 && w::WebPAnimEncoderAdd(enc, &mut pic, t as i32, &config) != 0;
            w::WebPPictureFree(&mut pic);
            if !added {
                result = Err(fail("adding a frame"));
                break;
            }
            t += ms as i64;
        }
        if result.is_ok()
            && w::WebPAnimEncoderAdd(enc, std::ptr::null_mut(), t as i32, std::ptr::null()) == 0
        {
            result = Err(fail("closing the animation"));
        }
        let mut data = w::WebPData {
            bytes: std::ptr::null(),
            size: 0,
        };
        if result.is_ok() && w::WebPAnimEncoderAssemble(enc, &mut data) == 0 {
            result = Err(fail("assembling"));
        }
        w::WebPAnimEncoderDelete(enc);
        result?;
        let bytes = std::slice::from_raw_parts(data.bytes, data.size).to_vec();
        w::WebPFree(data.bytes as *mut std::ffi::c_void);
        Ok(bytes)
    }
}

const WEBP_METHODS: [(&str, i32); 3] = [("default", 4), ("fastest", 0), ("slowest", 6)];

struct SaveAnimatedWebp;
impl Node for SaveAnimatedWebp {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveAnimatedWEBP")
            .module("comfy_extras.nodes_images")
            .category("image/animation")
            .input(InputSpec::of("images", "IMAGE"))
            .input(InputSpec::string("filename_prefix").default("ComfyUI"))
            .input(fps_input())
            .input(InputSpec::boolean("lossless").default(true))
            .input(InputSpec::int("quality").default(80).min(0).max(100))
            .input(InputSpec::combo("method", &WEBP_METHODS.map(|(n, _)| n)))
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let frames = frames(i)?;
        let ms = frame_ms(i.float("fps")?, "fps")?;
        let method = i.string("method")?;
        let m = WEBP_METHODS
            .iter()
            .find(|(n, _)| *n == method)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                NodeError::input(
                    "method",
                    format!("'{method}' is not one of default, fastest, slowest"),
                )
            })?;
        let quality = i.int("quality")?.clamp(0, 100) as f32;
        let bytes = encode_webp(&frames, ms, i.boolean("lossless")?, quality, m)?;
        // EXIF: 0x0110 prompt, then 0x010F downwards one per extra_pnginfo key.
        let mut tags = Vec::new();
        let mut tag = 0x010Fu16;
        for (k, v) in metadata_entries(ctx) {
            if k == "prompt" {
                tags.retain(|(t, _)| *t != 0x0110);
                tags.push((0x0110, format!("prompt:{v}").into_bytes()));
            } else {
                tags.retain(|(t, _)| *t != tag);
                tags.push((tag, format!("{k}:{v}").into_bytes()));
                tag = tag.wrapping_sub(1);
            }
        }
        let bytes = if tags.is_empty() {
            bytes
        } else {
            add_exif(bytes, &exif_tiff(&tags))
        };
        let (w, h) = (frames[0].width as usize, frames[0].height as usize);
        let sp = get_save_image_path(i.string("filename_prefix")?, &ctx.env.paths.output, w, h)?;
        let file = format!("{}_{:05}_.webp", sp.filename, sp.counter);
        std::fs::write(sp.full_output_folder.join(&file), bytes)?;
        Ok(saved_ui(file, &sp.subfolder))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SaveAnimatedPng)?;
    r.register(SaveAnimatedWebp)?;
    Ok(())
}
