//! What the frontend's bundled core extensions change on node classes, as far as it reaches
//! the API prompt: inputs they add to a class (audio players and upload buttons, 3D previews),
//! widgets they add after the class's own (PreviewAny's text box), save nodes whose
//! `filename_prefix` gets `%...%` replacements, and English display names the frontend's
//! locale gives where `/object_info` has none.

use super::nodedef::{InputDef, WidgetDef, WidgetKind};
use serde_json::Value as Json;

/// Classes the audio-player widget is added to (Comfy.AudioWidget).
const AUDIO_UI_CLASSES: &[&str] = &[
    "LoadAudio",
    "SaveAudio",
    "PreviewAudio",
    "SaveAudioMP3",
    "SaveAudioOpus",
];

/// Classes whose `filename_prefix` runs text replacements (Comfy.SaveImageExtraOutput).
pub const SAVE_NODE_TYPES: &[&str] = &[
    "SaveImage",
    "SaveAnimatedWEBP",
    "SaveWEBM",
    "SaveAudio",
    "SaveGLB",
    "SaveAnimatedPNG",
    "CLIPSave",
    "VAESave",
    "ModelSave",
    "LoraSave",
    "SaveLatent",
];

/// Display names from the frontend's English locale that differ from `/object_info`.
const DISPLAY_NAMES: &[(&str, &str)] = &[
    ("ImageBlend", "Image Blend"),
    ("ImageBlur", "Image Blur"),
    ("ImageQuantize", "Image Quantize"),
    ("ImageSharpen", "Image Sharpen"),
    ("ImageScaleToTotalPixels", "Scale Image to Total Pixels"),
];

pub fn display_name(class_type: &str) -> Option<&'static str> {
    DISPLAY_NAMES
        .iter()
        .find(|(c, _)| *c == class_type)
        .map(|(_, d)| *d)
}

/// Required inputs extensions append to a class's definition, in the order they run.
pub fn extra_inputs(class_type: &str, record: &[InputDef]) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match class_type {
        "Preview3D" | "SaveGLB" => out.push(("image", "PREVIEW_3D")),
        "Preview3DAnimation" => out.push(("image", "PREVIEW_3D_ANIMATION")),
        _ => {}
    }
    if AUDIO_UI_CLASSES.contains(&class_type) {
        out.push(("audioUI", "AUDIO_UI"));
    }
    let audio_upload = record.iter().any(|d| {
        d.name == "audio" && !d.optional && d.options.get("audio_upload") == Some(&Json::Bool(true))
    });
    if audio_upload {
        out.push(("upload", "AUDIOUPLOAD"));
    }
    out
}

/// Widgets extensions add when a node is created, after the class's own (no input slot).
pub fn extra_widgets(class_type: &str) -> Vec<WidgetDef> {
    match class_type {
        "PreviewAny" => vec![WidgetDef {
            name: "preview".into(),
            kind: WidgetKind::Value,
            default: Json::from(""),
            counted: false,
            dynamic_prompts: false,
            annotate_folder: None,
        }],
        _ => Vec::new(),
    }
}
