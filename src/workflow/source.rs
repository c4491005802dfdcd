//! Where a workflow comes from: a JSON file in API or UI format, or an image that carries
//! one the way ComfyUI writes them: PNG text chunks `prompt` (API format) and `workflow`
//! (UI format), and for WebP (and JPEG) EXIF IFD0 strings `prompt:{...}` / `workflow:{...}`
//! (SaveAnimatedWEBP puts them in the Model and Make tags; the frontend reads any tag).

use serde_json::Value as Json;

/// The format a workflow was found in.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// API format (`{"id": {"class_type", "inputs"}}`).
    Api(Json),
    /// UI format (`{"nodes": [...], "links": [...]}`), to be converted.
    Ui(Json),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the {format} image carries no ComfyUI workflow (no \"prompt\" or \"workflow\" metadata)"
    )]
    NoWorkflowInImage { format: &'static str },
    #[error("the {format} image's \"{key}\" metadata is not valid JSON: {message}")]
    BadEmbeddedJson {
        format: &'static str,
        key: String,
        message: String,
    },
    #[error("cannot read the {format} image: {message}")]
    BadImage {
        format: &'static str,
        message: String,
    },
}

/// Text metadata pairs found in an image, in file order.
pub type TextChunks = Vec<(String, String)>;

/// Reads the workflow in `bytes`: JSON (API or UI format) or a PNG/WebP/JPEG with one.
/// In an image the API-format `prompt` (what ComfyUI ran) is preferred over `workflow`.
pub fn detect(bytes: &[u8]) -> Result<Found, SourceError> {
    let (format, chunks) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ("PNG", png_text(bytes)?)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        ("WebP", webp_exif_text(bytes))
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        ("JPEG", jpeg_exif_text(bytes))
    } else {
        return json_workflow(bytes);
    };
    for key in ["prompt", "workflow"] {
        if let Some((_, text)) = chunks.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            let value: Json =
                serde_json::from_str(text).map_err(|e| SourceError::BadEmbeddedJson {
                    format,
                    key: key.to_string(),
                    message: e.to_string(),
                })?;
            return Ok(if key == "prompt" {
                Found::Api(value)
            } else {
                Found::Ui(value)
            });
        }
    }
    Err(SourceError::NoWorkflowInImage { format })
}

fn json_workflow(bytes: &[u8]) -> Result<Found, SourceError> {
    let value: Json = serde_json::from_slice(bytes).map_err(|e| SourceError::InvalidJson {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    Ok(classify(value))
}

/// API or UI format, by shape.
pub fn classify(value: Json) -> Found {
    if super::ui::is_ui_workflow(&value) {
        Found::Ui(value)
    } else {
        Found::Api(value)
    }
}

/// All tEXt, zTXt and iTXt chunks of a PNG.
pub fn png_text(bytes: &[u8]) -> Result<TextChunks, SourceError> {
    let bad = |e: png::DecodingError| SourceError::BadImage {
        format: "PNG",
        message: e.to_string(),
    };
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().map_err(bad)?;
    let info = reader.info();
    let mut out = Vec::new();
    for c in &info.uncompressed_latin1_text {
        out.push((c.keyword.clone(), c.text.clone()));
    }
    for c in &info.compressed_latin1_text {
        if let Ok(t) = c.get_text() {
            out.push((c.keyword.clone(), t));
        }
    }
    for c in &info.utf8_text {
        if let Ok(t) = c.get_text() {
            out.push((c.keyword.clone(), t));
        }
    }
    Ok(out)
}

/// `key:value` strings of an EXIF block's IFD0 (a TIFF header, then entries).
pub fn exif_text(tiff: &[u8]) -> TextChunks {
    let mut out = Vec::new();
    if tiff.len() < 8 {
        return out;
    }
    let le = match &tiff[0..2] {
        b"II" => true,
        b"MM" => false,
        _ => return out,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b = tiff.get(o..o + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b = tiff.get(o..o + 4)?;
        Some(if le {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        })
    };
    let Some(ifd) = u32_at(4) else { return out };
    let ifd = ifd as usize;
    let Some(count) = u16_at(ifd) else { return out };
    for i in 0..count as usize {
        let entry = ifd + 2 + i * 12;
        let (Some(ty), Some(n)) = (u16_at(entry + 2), u32_at(entry + 4)) else {
            break;
        };
        // ASCII (2) or UNDEFINED (7) strings.
        if ty != 2 && ty != 7 {
            continue;
        }
        let n = n as usize;
        let data = if n <= 4 {
            tiff.get(entry + 8..entry + 8 + n)
        } else {
            u32_at(entry + 8).and_then(|o| tiff.get(o as usize..o as usize + n))
        };
        let Some(data) = data else { continue };
        let text = String::from_utf8_lossy(data);
        let text = text.trim_end_matches('\0');
        if let Some((k, v)) = text.split_once(':') {
            out.push((k.trim().to_string(), v.to_string()));
        }
    }
    out
}

fn webp_exif_text(bytes: &[u8]) -> TextChunks {
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let start = pos + 8;
        let end = (start + size).min(bytes.len());
        if id == b"EXIF" {
            let mut data = &bytes[start..end];
            if data.starts_with(b"Exif\0\0") {
                data = &data[6..];
            }
            return exif_text(data);
        }
        pos = start + size + (size & 1);
    }
    Vec::new()
}

fn jpeg_exif_text(bytes: &[u8]) -> TextChunks {
    let mut out = Vec::new();
    let mut pos = 2;
    while pos + 4 <= bytes.len() && bytes[pos] == 0xFF {
        let marker = bytes[pos + 1];
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        let len = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
        if len < 2 {
            break; // a segment length counts its own two bytes: malformed
        }
        let start = pos + 4;
        let end = (pos + 2 + len).min(bytes.len());
        if marker == 0xE1 && bytes[start..end].starts_with(b"Exif\0\0") {
            out.extend(exif_text(&bytes[start + 6..end]));
        } else if marker == 0xFE {
            // A COM segment some tools use for the same strings.
            let text = String::from_utf8_lossy(&bytes[start..end]);
            if let Some((k, v)) = text.split_once(':') {
                out.push((k.trim().to_string(), v.to_string()));
            }
        }
        pos = end;
    }
    out
}

/// The API-format prompt of a found workflow: as it is, or converted from UI format with
/// `object_info` (a class's `/object_info` entry).
pub fn to_api(
    found: Found,
    object_info: &dyn Fn(&str) -> Option<Json>,
) -> Result<super::ui::UiConversion, super::ui::UiError> {
    match found {
        Found::Api(prompt) => Ok(super::ui::UiConversion {
            prompt,
            warnings: Vec::new(),
        }),
        Found::Ui(ui) => super::ui::convert_ui_workflow(&ui, object_info),
    }
}
