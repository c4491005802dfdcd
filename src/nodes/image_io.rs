//! ComfyUI's image file nodes (nodes.py): SaveImage, PreviewImage, LoadImage, LoadImageMask,
//! with ComfyUI's file behaviour (spec §10), plus the helpers other nodes and the server reuse:
//! tensor <-> 8-bit conversion, `get_save_image_path` (prefix, subfolder and counter), a PNG
//! writer with tEXt chunks, and annotated input-file resolution (`name.png [output]`).

use crate::env::Environment;
use crate::node::types::{Image, Mask};
use crate::node::{
    Fingerprint, Hidden, InputSpec, Inputs, LiteralInputs, Node, NodeContext, NodeError,
    NodeOutput, NodeSchema, OutputSpec, Registry, RegistryError, Value,
};
use candle_core::{DType, Device, Tensor};
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};
use std::io::Cursor;
use std::path::{Component, Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Tensor <-> 8-bit pixels
// ---------------------------------------------------------------------------------------------

/// One 8-bit image, interleaved `[H, W, C]` (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
#[derive(Debug, Clone, PartialEq)]
pub struct Image8 {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// ComfyUI's `np.clip(255. * x, 0, 255).astype(np.uint8)`: multiply in f32, clip, truncate
/// (NaN becomes 0).
pub fn f32_to_u8(x: f32) -> u8 {
    (255.0f32 * x).clamp(0.0, 255.0) as u8
}

/// An IMAGE tensor `[B, H, W, C]` (any float dtype, any device) as 8-bit images, one per batch
/// element, converted as SaveImage converts them.
pub fn tensor_to_images8(images: &Tensor) -> Result<Vec<Image8>, NodeError> {
    let (b, h, w, c) = match images.dims() {
        [b, h, w, c] => (*b, *h, *w, *c),
        [h, w, c] => (1, *h, *w, *c),
        other => {
            return Err(NodeError::msg(format!(
                "expected an IMAGE tensor [B, H, W, C], got shape {other:?}"
            )))
        }
    };
    if !(1..=4).contains(&c) {
        return Err(NodeError::msg(format!(
            "cannot save an image with {c} channels (1 to 4 are supported)"
        )));
    }
    let flat = images
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let per = h * w * c;
    Ok((0..b)
        .map(|i| Image8 {
            width: w as u32,
            height: h as u32,
            channels: c,
            data: flat[i * per..(i + 1) * per]
                .iter()
                .map(|&x| f32_to_u8(x))
                .collect(),
        })
        .collect())
}

/// 8-bit RGB frames (all the same size) as an IMAGE tensor `[B, H, W, 3]`, `x / 255` in f32.
pub fn rgb8_frames_to_tensor(
    frames: &[&[u8]],
    width: u32,
    height: u32,
) -> Result<Tensor, NodeError> {
    let data: Vec<f32> = frames
        .iter()
        .flat_map(|f| f.iter().map(|&v| v as f32 / 255.0f32))
        .collect();
    Ok(Tensor::from_vec(
        data,
        (frames.len(), height as usize, width as usize, 3),
        &Device::Cpu,
    )?)
}

// ---------------------------------------------------------------------------------------------
// PNG writing with tEXt chunks
// ---------------------------------------------------------------------------------------------

/// Writes `img` as a PNG with one tEXt chunk per `(keyword, text)`, in order, before the image
/// data, at zlib level `compress_level` (0..=9). Keywords and texts are written as Latin-1 (as
/// Pillow's `PngInfo.add_text` does); a character outside Latin-1 is an error.
pub fn encode_png_with_text(
    img: &Image8,
    texts: &[(String, String)],
    compress_level: u8,
) -> Result<Vec<u8>, NodeError> {
    let color = match img.channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => return Err(NodeError::msg(format!("cannot encode {c} channels as PNG"))),
    };
    let png_err = |e: png::EncodingError| NodeError::msg(format!("PNG encoding failed: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_deflate_compression(if compress_level == 0 {
            png::DeflateCompression::NoCompression
        } else {
            png::DeflateCompression::Level(compress_level.min(9))
        });
        enc.set_filter(png::Filter::Adaptive);
        let mut w = enc.write_header().map_err(png_err)?;
        for (key, text) in texts {
            let mut chunk = latin1(key, "tEXt keyword")?;
            chunk.push(0);
            chunk.extend(latin1(text, "tEXt text")?);
            w.write_chunk(png::chunk::ChunkType(*b"tEXt"), &chunk)
                .map_err(png_err)?;
        }
        w.write_image_data(&img.data).map_err(png_err)?;
        w.finish().map_err(png_err)?;
    }
    Ok(out)
}

fn latin1(s: &str, what: &str) -> Result<Vec<u8>, NodeError> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| NodeError::msg(format!("{what} {s:?} is not Latin-1 encodable")))
}

/// The tEXt chunks SaveImage embeds: `"prompt"` (the PROMPT JSON, unless null), then one per
/// key of `extra_pnginfo`, each value as Python's `json.dumps` writes it (ASCII-escaped).
pub fn png_metadata(
    prompt: Option<&Json>,
    extra_pnginfo: Option<&Json>,
) -> Result<Vec<(String, String)>, NodeError> {
    let mut texts = Vec::new();
    if let Some(p) = prompt.filter(|p| !p.is_null()) {
        texts.push(("prompt".to_string(), super::utils::py_json_dumps(p)));
    }
    match extra_pnginfo {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (k, v) in m {
                texts.push((k.clone(), super::utils::py_json_dumps(v)));
            }
        }
        Some(other) => {
            return Err(NodeError::Failed {
                message: format!("extra_pnginfo must be a JSON object, got {other}"),
                exception_type: "TypeError".into(),
            })
        }
    }
    Ok(texts)
}

// ---------------------------------------------------------------------------------------------
// get_save_image_path
// ---------------------------------------------------------------------------------------------

/// Python's `posixpath.normpath`.
pub fn py_normpath(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let initial = if p.starts_with("//") && !p.starts_with("///") {
        2
    } else if p.starts_with('/') {
        1
    } else {
        0
    };
    let mut comps: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        if comp.is_empty() || comp == "." {
            continue;
        }
        if comp != ".." || (initial == 0 && comps.is_empty()) || comps.last() == Some(&"..") {
            comps.push(comp);
        } else if !comps.is_empty() {
            comps.pop();
        }
    }
    let s = format!("{}{}", "/".repeat(initial), comps.join("/"));
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

/// Python's `posixpath.dirname` and `basename`.
fn py_split(p: &str) -> (String, String) {
    let i = p.rfind('/').map_or(0, |i| i + 1);
    let (head, tail) = p.split_at(i);
    let head = if !head.is_empty() && head.chars().any(|c| c != '/') {
        head.trim_end_matches('/')
    } else {
        head
    };
    (head.to_string(), tail.to_string())
}

/// Python's `int(s)` for the counter field: surrounding whitespace, an optional sign, ASCII
/// digits. `None` where Python raises (or the number does not fit i128).
fn py_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i128 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Replaces `%width%`, `%height%`, `%year%`, ... as ComfyUI's server does (local time).
fn compute_vars(input: &str, width: usize, height: usize) -> String {
    use chrono::{Datelike, Timelike};
    let now = chrono::Local::now();
    input
        .replace("%width%", &width.to_string())
        .replace("%height%", &height.to_string())
        .replace("%year%", &now.year().to_string())
        .replace("%month%", &format!("{:02}", now.month()))
        .replace("%day%", &format!("{:02}", now.day()))
        .replace("%hour%", &format!("{:02}", now.hour()))
        .replace("%minute%", &format!("{:02}", now.minute()))
        .replace("%second%", &format!("{:02}", now.second()))
}

/// A lexical absolute path (Python's `os.path.abspath`: cwd-joined, then normalised).
fn py_abspath(p: &Path) -> String {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    py_normpath(&joined.to_string_lossy())
}

/// What `get_save_image_path` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SavePath {
    /// `output_dir/subfolder`, created if it did not exist.
    pub full_output_folder: PathBuf,
    /// The file name part of the prefix (may still hold `%batch_num%`).
    pub filename: String,
    /// The first free counter value.
    pub counter: i128,
    /// The directory part of the prefix, `""` when none.
    pub subfolder: String,
    /// The prefix after `%...%` substitution.
    pub filename_prefix: String,
}

impl SavePath {
    /// The file name of batch element `batch_number` at `counter`:
    /// `{filename with %batch_num%}_{counter:05}_.{ext}`.
    pub fn file_name(&self, batch_number: usize, counter: i128, ext: &str) -> String {
        let f = self
            .filename
            .replace("%batch_num%", &batch_number.to_string());
        format!("{f}_{counter:05}_.{ext}")
    }
}

/// ComfyUI's `folder_paths.get_save_image_path`: substitutes `%width%` etc., splits the prefix
/// into subfolder and filename, refuses folders outside `output_dir`, and finds the next
/// counter: 1 + the largest number `N` among entries named `{filename}_N...`, or 1 (creating
/// the folder when it does not exist).
pub fn get_save_image_path(
    filename_prefix: &str,
    output_dir: &Path,
    image_width: usize,
    image_height: usize,
) -> Result<SavePath, NodeError> {
    let filename_prefix = if filename_prefix.contains('%') {
        compute_vars(filename_prefix, image_width, image_height)
    } else {
        filename_prefix.to_string()
    };
    let norm = py_normpath(&filename_prefix);
    let (subfolder, filename) = py_split(&norm);

    let full_output_folder = output_dir.join(&subfolder);
    let out_abs = py_abspath(output_dir);
    let full_abs = py_abspath(&full_output_folder);
    let out_comps: Vec<Component> = Path::new(&out_abs).components().collect();
    let full_comps: Vec<Component> = Path::new(&full_abs).components().collect();
    if !full_comps.starts_with(&out_comps) {
        let common: PathBuf = out_comps
            .iter()
            .zip(&full_comps)
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a.as_os_str())
            .collect();
        return Err(NodeError::Failed {
            message: format!(
                "**** ERROR: Saving image outside the output folder is not allowed.\n \
                 full_output_folder: {full_abs}\n         output_dir: {out_abs}\n         \
                 commonpath: {}",
                common.display()
            ),
            exception_type: "Exception".into(),
        });
    }

    // Python measures the basename of the prefix as given (after substitution).
    let prefix_len = py_split(&filename_prefix).1.chars().count();
    let counter = match std::fs::read_dir(&full_output_folder) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&full_output_folder)?;
            1
        }
        Err(e) => return Err(e.into()),
        Ok(entries) => {
            let names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            next_counter(&names, &filename, prefix_len)
        }
    };
    Ok(SavePath {
        full_output_folder,
        filename,
        counter,
        subfolder,
        filename_prefix,
    })
}

/// The counter rule over a folder's entry names (Python string semantics, on code points).
pub fn next_counter(names: &[String], filename: &str, prefix_len: usize) -> i128 {
    let norm = |s: &str| {
        if cfg!(windows) {
            s.to_lowercase()
        } else {
            s.to_string()
        }
    };
    let filename = norm(filename);
    names
        .iter()
        .filter_map(|name| {
            let chars: Vec<char> = name.chars().collect();
            let prefix: String = chars.iter().take(prefix_len + 1).collect();
            let (head, last) = {
                let mut p = prefix.chars();
                let last = p.next_back()?;
                (p.as_str().to_string(), last)
            };
            if norm(&head) != filename || last != '_' {
                return None;
            }
            let rest: String = chars.iter().skip(prefix_len + 1).collect();
            Some(py_int(rest.split('_').next().unwrap_or("")).unwrap_or(0))
        })
        .max()
        .map_or(1, |m| m + 1)
}

/// Saves a batch as SaveImage and PreviewImage do; returns the UI entries
/// (`{"filename", "subfolder", "type"}`), one per image.
pub fn save_images(
    images: &Tensor,
    filename_prefix: &str,
    output_dir: &Path,
    kind: &str,
    compress_level: u8,
    prompt: Option<&Json>,
    extra_pnginfo: Option<&Json>,
) -> Result<Vec<Json>, NodeError> {
    let imgs = tensor_to_images8(images)?;
    let (w, h) = imgs
        .first()
        .map_or((0, 0), |i| (i.width as usize, i.height as usize));
    let sp = get_save_image_path(filename_prefix, output_dir, w, h)?;
    let texts = png_metadata(prompt, extra_pnginfo)?;
    let mut results = Vec::with_capacity(imgs.len());
    for (counter, (i, img)) in (sp.counter..).zip(imgs.iter().enumerate()) {
        let file = sp.file_name(i, counter, "png");
        let bytes = encode_png_with_text(img, &texts, compress_level)?;
        std::fs::write(sp.full_output_folder.join(&file), bytes)?;
        results.push(json!({"filename": file, "subfolder": sp.subfolder, "type": kind}));
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Input files: listing and annotated names
// ---------------------------------------------------------------------------------------------

/// Extensions Python's `mimetypes` maps to `image/*` (its built-in table).
const IMAGE_EXTENSIONS: &[&str] = &[
    "avif", "bmp", "gif", "heic", "heif", "ief", "jpg", "jpe", "jpeg", "png", "svg", "tiff", "tif",
    "ico", "ras", "pnm", "pbm", "pgm", "ppm", "rgb", "xbm", "xpm", "xwd", "webp", "pict", "pct",
    "pic", "jxl",
];

/// True when the name's extension has an `image/*` MIME type.
pub fn is_image_name(name: &str) -> bool {
    match name.rsplit_once('.') {
        Some((_, ext)) => IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()),
        None => false,
    }
}

/// The top-level files of `dir` (following symlinks), sorted; only image files when
/// `images_only`.
pub fn list_input_files(dir: &Path, images_only: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !images_only || is_image_name(n))
        .collect();
    names.sort();
    names
}

/// Why an annotated file name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefError {
    /// The name would leave its directory (absolute, `..`, or a symlink pointing outside).
    Escapes,
    /// No such file.
    Missing,
}

/// Splits ComfyUI's annotation off a name: `"x.png [output]"` -> (`"x.png"`, output dir).
/// Like Python's `name[:-9]`, the character before the annotation is dropped too.
pub fn annotated_filepath<'a>(name: &str, env: &'a Environment) -> (String, &'a Path) {
    for (tag, dir) in [
        ("[output]", &env.paths.output),
        ("[input]", &env.paths.input),
        ("[temp]", &env.paths.temp),
    ] {
        if let Some(stripped) = name.strip_suffix(tag) {
            let mut chars = stripped.chars();
            chars.next_back();
            return (chars.as_str().to_string(), dir.as_path());
        }
    }
    (name.to_string(), env.paths.input.as_path())
}

/// The file an annotated name refers to (input dir by default). Unlike ComfyUI, names that
/// leave their directory are refused, symlinks included.
pub fn resolve_annotated(env: &Environment, name: &str) -> Result<PathBuf, FileRefError> {
    let (rel, base) = annotated_filepath(name, env);
    if rel.is_empty() {
        return Err(FileRefError::Missing);
    }
    let p = Path::new(&rel);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(FileRefError::Escapes);
    }
    let path = base.join(p);
    let real = path.canonicalize().map_err(|_| FileRefError::Missing)?;
    let real_base = base.canonicalize().map_err(|_| FileRefError::Missing)?;
    if !real.starts_with(&real_base) {
        return Err(FileRefError::Escapes);
    }
    if !real.is_file() {
        return Err(FileRefError::Missing);
    }
    Ok(path)
}

/// VALIDATE_INPUTS of the image loaders: `Err("Invalid image file: <name>")`, with the reason
/// added when the name leaves its folder.
pub fn validate_image_name(env: &Environment, name: &str) -> Result<PathBuf, String> {
    resolve_annotated(env, name).map_err(|e| match e {
        FileRefError::Missing => format!("Invalid image file: {name}"),
        FileRefError::Escapes => format!(
            "Invalid image file: {name} (the path leaves its folder; absolute paths, '..' and \
             symlinks to outside are refused)"
        ),
    })
}

/// IS_CHANGED of the image loaders: the SHA-256 hex of the file's bytes.
pub fn file_sha256_hex(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// VALIDATE_INPUTS of the image loaders: the `image` name must resolve to a file inside its
/// folder (links are checked at run time).
fn validate_image_input(env: &Environment, inputs: &Inputs) -> Result<(), String> {
    match inputs.get("image") {
        Some(Value::String(name)) => validate_image_name(env, name).map(|_| ()),
        _ => Ok(()),
    }
}

/// IS_CHANGED of the image loaders: the SHA-256 of the file (never cached if unreadable).
fn image_fingerprint(env: &Environment, inputs: &Inputs) -> Fingerprint {
    let Ok(name) = inputs.string("image") else {
        return Fingerprint::Always;
    };
    match resolve_annotated(env, name)
        .ok()
        .and_then(|p| file_sha256_hex(&p).ok())
    {
        Some(h) => Fingerprint::Token(h),
        None => Fingerprint::Always,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// One decoded frame: 8-bit RGB plus the alpha channel where the source has one.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub alpha: Option<Vec<u8>>,
}

/// A decoded file: its frames, after EXIF orientation.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub format: ImageFormat,
    pub frames: Vec<Frame>,
    /// Whether Pillow would see an alpha band (or palette transparency) in LoadImage: alpha
    /// from a tRNS chunk counts only for palette PNGs.
    pub mask_alpha: bool,
}

fn decode_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Failed {
        message: format!("cannot decode image: {e}"),
        exception_type: "UnidentifiedImageError".into(),
    }
}

/// 16-bit samples to 8 bits by their high byte (as Pillow reads 16-bit PNGs).
fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

fn split_frame(img: &DynamicImage) -> Frame {
    let (width, height) = (img.width(), img.height());
    let (rgb, alpha): (Vec<u8>, Option<Vec<u8>>) = match img {
        DynamicImage::ImageLuma8(b) => (b.iter().flat_map(|&v| [v, v, v]).collect(), None),
        DynamicImage::ImageLumaA8(b) => (
            b.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
            Some(b.chunks(2).map(|p| p[1]).collect()),
        ),
        DynamicImage::ImageRgb8(b) => (b.as_raw().clone(), None),
        DynamicImage::ImageRgba8(b) => (
            b.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            Some(b.chunks(4).map(|p| p[3]).collect()),
        ),
        DynamicImage::ImageLuma16(b) => (
            b.iter().flat_map(|&v| [hi(v), hi(v), hi(v)]).collect(),
            None,
        ),
        DynamicImage::ImageLumaA16(b) => (
            b.chunks(2)
                .flat_map(|p| [hi(p[0]), hi(p[0]), hi(p[0])])
                .collect(),
            Some(b.chunks(2).map(|p| hi(p[1])).collect()),
        ),
        DynamicImage::ImageRgb16(b) => (b.iter().map(|&v| hi(v)).collect(), None),
        DynamicImage::ImageRgba16(b) => (
            b.chunks(4)
                .flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2])])
                .collect(),
            Some(b.chunks(4).map(|p| hi(p[3])).collect()),
        ),
        other => {
            let has_alpha = other.color().has_alpha();
            let rgba = other.to_rgba8();
            (
                rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
                has_alpha.then(|| rgba.chunks(4).map(|p| p[3]).collect()),
            )
        }
    };
    Frame {
        width,
        height,
        rgb,
        alpha,
    }
}

fn frames_of(
    frames: image::Frames<'_>,
    orientation: image::metadata::Orientation,
) -> Result<Vec<Frame>, NodeError> {
    frames
        .map(|f| {
            let mut img = DynamicImage::ImageRgba8(f.map_err(decode_err)?.into_buffer());
            img.apply_orientation(orientation);
            Ok(split_frame(&img))
        })
        .collect()
}

/// Decodes PNG (APNG frames), JPEG (first image of an MPO) and WebP (animated frames), applying
/// the EXIF orientation.
pub fn decode_image(bytes: &[u8]) -> Result<Decoded, NodeError> {
    let format = image::guess_format(bytes).map_err(decode_err)?;
    let mut mask_alpha = None;
    let frames = match format {
        ImageFormat::Png => {
            // What Pillow sees: tRNS makes a mask only for palette images.
            let info_dec = png::Decoder::new(Cursor::new(bytes));
            if let Ok(reader) = info_dec.read_info() {
                let info = reader.info();
                mask_alpha = Some(match info.color_type {
                    png::ColorType::GrayscaleAlpha | png::ColorType::Rgba => true,
                    png::ColorType::Indexed => info.trns.is_some(),
                    _ => false,
                });
            }
            let mut dec =
                image::codecs::png::PngDecoder::new(Cursor::new(bytes)).map_err(decode_err)?;
            let orientation = dec.orientation().map_err(decode_err)?;
            if dec.is_apng().map_err(decode_err)? {
                frames_of(dec.apng().map_err(decode_err)?.into_frames(), orientation)?
            } else {
                let mut img = DynamicImage::from_decoder(dec).map_err(decode_err)?;
                img.apply_orientation(orientation);
                vec![split_frame(&img)]
            }
        }
        ImageFormat::WebP => {
            let mut dec =
                image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map_err(decode_err)?;
            let orientation = dec.orientation().map_err(decode_err)?;
            mask_alpha = Some(dec.color_type().has_alpha());
            if dec.has_animation() {
                frames_of(dec.into_frames(), orientation)?
            } else {
                let mut img = DynamicImage::from_decoder(dec).map_err(decode_err)?;
                img.apply_orientation(orientation);
                vec![split_frame(&img)]
            }
        }
        _ => {
            let reader = image::ImageReader::with_format(Cursor::new(bytes), format);
            let mut dec = reader.into_decoder().map_err(decode_err)?;
            let orientation = dec.orientation().map_err(decode_err)?;
            let mut img = DynamicImage::from_decoder(dec).map_err(decode_err)?;
            img.apply_orientation(orientation);
            vec![split_frame(&img)]
        }
    };
    if frames.is_empty() {
        return Err(decode_err("the file has no frames"));
    }
    let mask_alpha = mask_alpha.unwrap_or_else(|| frames[0].alpha.is_some());
    Ok(Decoded {
        format,
        frames,
        mask_alpha,
    })
}

/// LoadImage's outputs from a decoded file: IMAGE `[B, H, W, 3]` (frames of another size than
/// the first are skipped) and MASK `1 - alpha/255` `[B, H, W]`, or zeros `[B, 64, 64]` without
/// alpha.
pub fn load_image_tensors(decoded: &Decoded) -> Result<(Tensor, Tensor), NodeError> {
    let first = &decoded.frames[0];
    let (w, h) = (first.width, first.height);
    let frames: Vec<&Frame> = decoded
        .frames
        .iter()
        .filter(|f| f.width == w && f.height == h)
        .collect();
    let rgb: Vec<&[u8]> = frames.iter().map(|f| f.rgb.as_slice()).collect();
    let image = rgb8_frames_to_tensor(&rgb, w, h)?;
    let mask = if decoded.mask_alpha {
        let data: Vec<f32> = frames
            .iter()
            .flat_map(|f| match &f.alpha {
                Some(a) => a.iter().map(|&v| 1.0f32 - v as f32 / 255.0f32).collect(),
                // An opaque frame of an image with alpha elsewhere.
                None => vec![0.0f32; (w * h) as usize],
            })
            .collect();
        Tensor::from_vec(data, (frames.len(), h as usize, w as usize), &Device::Cpu)?
    } else {
        Tensor::zeros((frames.len(), 64, 64), DType::F32, &Device::Cpu)?
    };
    Ok((image, mask))
}

fn resolve_for_load(env: &Environment, name: &str) -> Result<PathBuf, NodeError> {
    validate_image_name(env, name).map_err(|m| NodeError::Failed {
        message: m,
        exception_type: "FileNotFoundError".into(),
    })
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

const SAVE_DESCRIPTION: &str = "Saves the input images to your ComfyUI output directory.";

struct SaveImage;
impl Node for SaveImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveImage")
            .display("Save Image")
            .category("image")
            .description(SAVE_DESCRIPTION)
            .input(InputSpec::of("images", "IMAGE").tooltip("The images to save."))
            .input(
                InputSpec::string("filename_prefix")
                    .default("ComfyUI")
                    .tooltip(
                        "The prefix for the file to save. This may include formatting \
                         information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% \
                         to include values from nodes.",
                    ),
            )
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let images = i.object::<Image>("images")?;
        let results = save_images(
            &images.0,
            i.string("filename_prefix")?,
            &ctx.env.paths.output,
            "output",
            4,
            Some(ctx.prompt.json()),
            ctx.extra_pnginfo,
        )?;
        Ok(images_ui(results))
    }
}

fn images_ui(results: Vec<Json>) -> NodeOutput {
    let mut ui = Map::new();
    ui.insert("images".into(), Json::Array(results));
    NodeOutput::ui(ui)
}

/// The letters PreviewImage draws its suffix from (ComfyUI's string: no `w`, two `p`s).
pub const PREVIEW_LETTERS: &str = "abcdefghijklmnopqrstupvxyz";

/// `_temp_` plus 5 random letters, as PreviewImage appends to its prefix.
pub fn preview_prefix_append() -> String {
    use rand::Rng;
    let letters: Vec<char> = PREVIEW_LETTERS.chars().collect();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| letters[rng.random_range(0..letters.len())])
        .collect();
    format!("_temp_{suffix}")
}

/// Saves `images` to the temp folder as ComfyUI's PreviewImage (and the nodes derived from it)
/// does: prefix `ComfyUI_temp_` plus five random letters chosen once per node instance (kept in
/// the node's state, like ComfyUI's `__init__`), the prompt and workflow as PNG text chunks. The
/// `ui` output carries the saved files.
pub fn save_preview(
    ctx: &mut NodeContext,
    images: &Tensor,
    compress_level: u8,
) -> Result<NodeOutput, NodeError> {
    let append = match ctx.state.as_ref().and_then(|s| s.downcast_ref::<String>()) {
        Some(s) => s.clone(),
        None => {
            let s = preview_prefix_append();
            *ctx.state = Some(Box::new(s.clone()));
            s
        }
    };
    let results = save_images(
        images,
        &format!("ComfyUI{append}"),
        &ctx.env.paths.temp,
        "temp",
        compress_level,
        Some(ctx.prompt.json()),
        ctx.extra_pnginfo,
    )?;
    Ok(images_ui(results))
}

/// A MASK (`[B, H, W]` or `[H, W]`) as the grey IMAGE `[B, H, W, 3]` the mask previews save.
pub fn mask_preview_image(mask: &Tensor) -> Result<Tensor, NodeError> {
    let d = mask.dims();
    if d.len() < 2 {
        return Err(NodeError::input(
            "mask",
            format!("expected a MASK [B, H, W] or [H, W], got shape {d:?}"),
        ));
    }
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    let b = mask.elem_count() / (h * w).max(1);
    Ok(mask
        .reshape((b, h, w, 1))?
        .broadcast_as((b, h, w, 3))?
        .contiguous()?)
}

struct PreviewImage;
impl Node for PreviewImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PreviewImage")
            .display("Preview Image")
            .category("image")
            // Inherited from SaveImage in ComfyUI.
            .description(SAVE_DESCRIPTION)
            .input(InputSpec::of("images", "IMAGE"))
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let images = i.object::<Image>("images")?;
        save_preview(ctx, &images.0, 1)
    }
}

struct LoadImage;
impl Node for LoadImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImage")
            .display("Load Image")
            .category("image")
            .input(
                InputSpec::combo_fn("image", |env| list_input_files(&env.paths.input, true))
                    .opt("image_upload", true),
            )
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let path = resolve_for_load(ctx.env, i.string("image")?)?;
        let decoded = decode_image(&std::fs::read(&path)?)?;
        let (mut image, mut mask) = load_image_tensors(&decoded)?;
        // ComfyUI keeps only the first frame of an MPO (our JPEG decoder reads only that one).
        if decoded.format == ImageFormat::Jpeg && image.dim(0)? > 1 {
            image = image.narrow(0, 0, 1)?;
            mask = mask.narrow(0, 0, 1)?;
        }
        Ok(NodeOutput::values(vec![
            Value::object(Image(image)),
            Value::object(Mask(mask)),
        ]))
    }
    fn fingerprint(&self, env: &Environment, inputs: &LiteralInputs) -> Fingerprint {
        image_fingerprint(env, inputs)
    }
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &["image"]
    }
    fn validate_inputs(&self, env: &Environment, inputs: &Inputs) -> Result<(), String> {
        validate_image_input(env, inputs)
    }
}

const MASK_CHANNELS: [&str; 4] = ["alpha", "red", "green", "blue"];

/// LoadImageMask's mask from a decoded file's first frame: the channel / 255 (alpha inverted,
/// 255 where the file has none, tRNS honoured), shape `[1, H, W]`.
pub fn mask_from_channel(decoded: &Decoded, channel: &str) -> Result<Tensor, NodeError> {
    let f = &decoded.frames[0];
    let n = (f.width * f.height) as usize;
    let data: Vec<f32> = match channel.chars().next().map(|c| c.to_ascii_uppercase()) {
        Some('A') => match &f.alpha {
            Some(a) => a.iter().map(|&v| 1.0f32 - v as f32 / 255.0f32).collect(),
            None => vec![0.0f32; n],
        },
        Some(c @ ('R' | 'G' | 'B')) => {
            let k = match c {
                'R' => 0,
                'G' => 1,
                _ => 2,
            };
            f.rgb.chunks(3).map(|p| p[k] as f32 / 255.0f32).collect()
        }
        _ => return Ok(Tensor::zeros((1, 64, 64), DType::F32, &Device::Cpu)?),
    };
    Ok(Tensor::from_vec(
        data,
        (1, f.height as usize, f.width as usize),
        &Device::Cpu,
    )?)
}

struct LoadImageMask;
impl Node for LoadImageMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImageMask")
            .display("Load Image (as Mask)")
            .category("mask")
            .input(
                InputSpec::combo_fn("image", |env| list_input_files(&env.paths.input, false))
                    .opt("image_upload", true),
            )
            .input(InputSpec::combo("channel", &MASK_CHANNELS))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let path = resolve_for_load(ctx.env, i.string("image")?)?;
        let mut decoded = decode_image(&std::fs::read(&path)?)?;
        // Pillow's convert("RGBA") honours tRNS for every colour type here.
        decoded.frames.truncate(1);
        let mask = mask_from_channel(&decoded, i.string("channel")?)?;
        Ok(NodeOutput::one(Value::object(Mask(mask))))
    }
    fn fingerprint(&self, env: &Environment, inputs: &LiteralInputs) -> Fingerprint {
        image_fingerprint(env, inputs)
    }
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &["image"]
    }
    fn validate_inputs(&self, env: &Environment, inputs: &Inputs) -> Result<(), String> {
        validate_image_input(env, inputs)
    }
}

// ---------------------------------------------------------------------------------------------
// Small image utilities (nodes.py)
// ---------------------------------------------------------------------------------------------

const MAX_RESOLUTION: i64 = 16384;

struct ImageInvert;
impl Node for ImageInvert {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageInvert")
            .display("Invert Image")
            .category("image")
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        // -x + 1 is exactly 1 - x in IEEE arithmetic.
        Ok(NodeOutput::one(Value::object(Image(
            image.0.affine(-1.0, 1.0)?,
        ))))
    }
}

/// EmptyImage's pixels: `[batch, height, width, 3]` filled with the colour's channels / 255.
pub fn solid_image(
    width: usize,
    height: usize,
    batch: usize,
    color: u32,
) -> Result<Tensor, NodeError> {
    let ch = |shift: u32| (((color >> shift) & 0xFF) as f64 / 255.0) as f32;
    let px = [ch(16), ch(8), ch(0)];
    let data: Vec<f32> = std::iter::repeat_n(px, batch * height * width)
        .flatten()
        .collect();
    Ok(Tensor::from_vec(
        data,
        (batch, height, width, 3),
        &Device::Cpu,
    )?)
}

struct EmptyImage;
impl Node for EmptyImage {
    fn schema(&self) -> NodeSchema {
        let res = |name: &str| {
            InputSpec::int(name)
                .default(512)
                .min(1)
                .max(MAX_RESOLUTION)
                .step(1)
        };
        NodeSchema::new("EmptyImage")
            .category("image")
            .input(res("width"))
            .input(res("height"))
            .input(InputSpec::int("batch_size").default(1).min(1).max(4096))
            .input(
                InputSpec::int("color")
                    .default(0)
                    .min(0)
                    .max(0xFFFFFF)
                    .step(1)
                    .opt("display", "color"),
            )
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let dim = |name: &str| -> Result<usize, NodeError> {
            usize::try_from(i.int(name)?).map_err(|_| NodeError::input(name, "must be positive"))
        };
        let color = u32::try_from(i.int("color")? & 0xFFFFFF).unwrap_or(0);
        let image = solid_image(dim("width")?, dim("height")?, dim("batch_size")?, color)?;
        Ok(NodeOutput::one(Value::object(Image(image))))
    }
}

/// ImagePadForOutpaint: the image padded with 0.5 grey, and a `[1, H, W]` mask that is 1 on the
/// padding and `((feathering - d) / feathering)^2` inside, `d` being the distance to a padded
/// edge (when feathering fits the image).
pub fn pad_for_outpaint(
    image: &Tensor,
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
    feathering: usize,
) -> Result<(Tensor, Tensor), NodeError> {
    let (d1, d2, d3, d4) = image.dims4()?;
    let src = image
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (nh, nw) = (d2 + top + bottom, d3 + left + right);
    let mut out = vec![0.5f32; d1 * nh * nw * d4];
    for b in 0..d1 {
        for y in 0..d2 {
            let s = ((b * d2 + y) * d3) * d4;
            let o = ((b * nh + y + top) * nw + left) * d4;
            out[o..o + d3 * d4].copy_from_slice(&src[s..s + d3 * d4]);
        }
    }
    let mut mask = vec![1.0f32; nh * nw];
    for i in 0..d2 {
        for j in 0..d3 {
            let mut v = 0.0f32;
            if feathering > 0 && feathering * 2 < d2 && feathering * 2 < d3 {
                let dt = if top != 0 { i } else { d2 };
                let db = if bottom != 0 { d2 - i } else { d2 };
                let dl = if left != 0 { j } else { d3 };
                let dr = if right != 0 { d3 - j } else { d3 };
                let d = dt.min(db).min(dl).min(dr);
                if d < feathering {
                    let f = (feathering - d) as f64 / feathering as f64;
                    v = (f * f) as f32;
                }
            }
            mask[(i + top) * nw + j + left] = v;
        }
    }
    Ok((
        Tensor::from_vec(out, (d1, nh, nw, d4), &Device::Cpu)?,
        Tensor::from_vec(mask, (1, nh, nw), &Device::Cpu)?,
    ))
}

struct ImagePadForOutpaint;
impl Node for ImagePadForOutpaint {
    fn schema(&self) -> NodeSchema {
        let side = |name: &str| {
            InputSpec::int(name)
                .default(0)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(8)
        };
        NodeSchema::new("ImagePadForOutpaint")
            .display("Pad Image for Outpainting")
            .category("image")
            .input(InputSpec::of("image", "IMAGE"))
            .input(side("left"))
            .input(side("top"))
            .input(side("right"))
            .input(side("bottom"))
            .input(
                InputSpec::int("feathering")
                    .default(40)
                    .min(0)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let n = |name: &str| -> Result<usize, NodeError> {
            usize::try_from(i.int(name)?).map_err(|_| NodeError::input(name, "must be >= 0"))
        };
        let (img, mask) = pad_for_outpaint(
            &image.0,
            n("left")?,
            n("top")?,
            n("right")?,
            n("bottom")?,
            n("feathering")?,
        )?;
        Ok(NodeOutput::values(vec![
            Value::object(Image(img)),
            Value::object(Mask(mask)),
        ]))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SaveImage)?;
    r.register(PreviewImage)?;
    r.register(LoadImage)?;
    r.register(LoadImageMask)?;
    r.register(ImageInvert)?;
    r.register(ImagePadForOutpaint)?;
    r.register(EmptyImage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normpath_and_split_match_python() {
        assert_eq!(py_normpath(""), ".");
        assert_eq!(py_normpath("a//b/./c/"), "a/b/c");
        assert_eq!(py_normpath("a/../../b"), "../b");
        assert_eq!(py_normpath("/../a"), "/a");
        assert_eq!(py_normpath("//a"), "//a");
        assert_eq!(py_normpath("///a"), "/a");
        assert_eq!(
            py_split("portraits/2024/cat"),
            ("portraits/2024".into(), "cat".into())
        );
        assert_eq!(py_split("cat"), ("".into(), "cat".into()));
        assert_eq!(py_split("/cat"), ("/".into(), "cat".into()));
        assert_eq!(py_split("a/"), ("a".into(), "".into()));
    }

    #[test]
    fn counter_rule() {
        let n = names(&[
            "ComfyUI_00001_.png",
            "ComfyUI_00007_.png",
            "ComfyUI_00003_.png",
            "ComfyUIx_00099_.png",
            "comfyui_00050_.png",
            "other.png",
        ]);
        let expect_case = if cfg!(windows) { 51 } else { 8 };
        assert_eq!(next_counter(&n, "ComfyUI", 7), expect_case);
        assert_eq!(next_counter(&[], "ComfyUI", 7), 1);
        // A matching name with no number counts as 0.
        assert_eq!(next_counter(&names(&["ComfyUI_abc.png"]), "ComfyUI", 7), 1);
        assert_eq!(next_counter(&names(&["ComfyUI_5.png"]), "ComfyUI", 7), 1);
        assert_eq!(next_counter(&names(&["ComfyUI_ 12 _x"]), "ComfyUI", 7), 13);
        assert_eq!(next_counter(&names(&["ComfyUI"]), "ComfyUI", 7), 1);
        // Multibyte names are measured in code points.
        assert_eq!(next_counter(&names(&["café_00004_.png"]), "café", 4), 5);
    }

    #[test]
    fn py_int_like_python() {
        assert_eq!(py_int("00012"), Some(12));
        assert_eq!(py_int(" -3 "), Some(-3));
        assert_eq!(py_int("+4"), Some(4));
        assert_eq!(py_int(""), None);
        assert_eq!(py_int("1.png"), None);
        assert_eq!(py_int("-"), None);
    }

    #[test]
    fn u8_conversion_truncates() {
        assert_eq!(f32_to_u8(1.0), 255);
        assert_eq!(f32_to_u8(0.999), 254);
        assert_eq!(f32_to_u8(0.5), 127);
        assert_eq!(f32_to_u8(-1.0), 0);
        assert_eq!(f32_to_u8(2.0), 255);
        assert_eq!(f32_to_u8(f32::NAN), 0);
    }

    #[test]
    fn preview_suffix_letters() {
        let s = preview_prefix_append();
        assert!(s.starts_with("_temp_"));
        assert_eq!(s.len(), 11);
        assert!(s[6..].chars().all(|c| PREVIEW_LETTERS.contains(c)));
    }

    #[test]
    fn image_names() {
        assert!(is_image_name("a.PNG"));
        assert!(is_image_name("b.jpeg"));
        assert!(is_image_name("c.webp"));
        assert!(!is_image_name("d.txt"));
        assert!(!is_image_name("png"));
    }
    #[test]
    fn utility_images() {
        let img = solid_image(2, 1, 2, 0x80FF01).unwrap();
        assert_eq!(img.dims(), &[2, 1, 2, 3]);
        let v = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            &v[..3],
            &[(128.0f64 / 255.0) as f32, 1.0, (1.0f64 / 255.0) as f32]
        );

        // 1x4x4x1 image of 0.25, padded left 2 and top 1, feathering 1.
        let src = Tensor::full(0.25f32, (1, 4, 4, 1), &Device::Cpu).unwrap();
        let (out, mask) = pad_for_outpaint(&src, 2, 1, 0, 0, 1).unwrap();
        assert_eq!(out.dims(), &[1, 5, 6, 1]);
        assert_eq!(mask.dims(), &[1, 5, 6]);
        let o = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(o[0], 0.5);
        assert_eq!(o[6 + 2], 0.25);
        let m = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Padding is 1; the image's first row and column (d = 0 < 1) are 1.0; inside 0.
        assert_eq!(&m[..6], &[1.0; 6]);
        assert_eq!(&m[6..12], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(&m[12..18], &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        // Feathering 2 on a 4x4 image does not fit (2 * 2 is not < 4): the inside is 0.
        let (_, mask) = pad_for_outpaint(&src, 8, 0, 0, 0, 2).unwrap();
        let m = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            &m[..12],
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
        // Feathering 2 on 5x5 with right padding: d = 5 - j, ((2 - 1) / 2)^2 = 0.25 at j = 4.
        let src = Tensor::zeros((1, 5, 5, 3), DType::F32, &Device::Cpu).unwrap();
        let (_, mask) = pad_for_outpaint(&src, 0, 0, 8, 0, 2).unwrap();
        let m = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&m[..6], &[0.0, 0.0, 0.0, 0.0, 0.25, 1.0]);
    }
}
