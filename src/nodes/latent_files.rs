//! SaveLatent and LoadLatent (nodes.py): ComfyUI's `.latent` files, safetensors holding
//! `latent_tensor` (the unscaled latent) and an empty `latent_format_version_0` marker, with
//! the prompt and extra_pnginfo as JSON strings in the header metadata. A file without the
//! marker is the legacy format, whose latents were stored scaled by SD's 0.18215: loading
//! divides by it, as ComfyUI does.

use super::image_io::{
    file_sha256_hex, get_save_image_path, list_input_files, resolve_annotated, FileRefError,
};
use super::utils::py_json_dumps;
use crate::env::Environment;
use crate::node::types::Latent;
use crate::node::{
    Fingerprint, Hidden, InputSpec, Inputs, LiteralInputs, Node, NodeContext, NodeError,
    NodeOutput, NodeSchema, OutputSpec, Registry, RegistryError, Value,
};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;
use std::path::PathBuf;

/// The tensor names of the format.
pub const LATENT_TENSOR: &str = "latent_tensor";
pub const FORMAT_VERSION_0: &str = "latent_format_version_0";
/// A legacy file's scale: its latents are `latent · 0.18215`.
const LEGACY_SCALE: f64 = 0.18215;

/// The bytes of a `.latent` file: `samples` as float32 and the version marker, with
/// `metadata` in the header.
pub fn latent_file_bytes(
    samples: &Tensor,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, NodeError> {
    let err = |e: candle_core::Error| NodeError::msg(e.to_string());
    let t = samples
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)?;
    let bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
    fn view(shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>, NodeError> {
        TensorView::new(Dtype::F32, shape, data).map_err(|e| NodeError::msg(e.to_string()))
    }
    let tensors = vec![
        (LATENT_TENSOR, view(samples.dims().to_vec(), &bytes)?),
        (FORMAT_VERSION_0, view(vec![0], &[])?),
    ];
    safetensors::serialize(tensors, Some(metadata)).map_err(|e| NodeError::msg(e.to_string()))
}

/// LoadLatent's latent from a file's bytes: `latent_tensor` as float32, divided by 0.18215
/// (multiplied by its float32 reciprocal, as torch does) when the version marker is absent.
pub fn latent_from_file_bytes(bytes: &[u8], name: &str) -> Result<Tensor, NodeError> {
    let bad = |e: String| NodeError::input("latent", format!("{name}: {e}"));
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| bad(e.to_string()))?;
    let t = tensors
        .get(LATENT_TENSOR)
        .ok_or_else(|| bad(format!("not a latent file (no '{LATENT_TENSOR}' tensor)")))?
        .to_dtype(DType::F32)
        .map_err(|e| bad(e.to_string()))?;
    if tensors.contains_key(FORMAT_VERSION_0) {
        return Ok(t);
    }
    let m = (1.0 / LEGACY_SCALE) as f32;
    (t * m as f64).map_err(|e| bad(e.to_string()))
}

struct SaveLatent;
impl Node for SaveLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveLatent")
            .category("_for_testing")
            .input(InputSpec::of("samples", "LATENT"))
            .input(InputSpec::string("filename_prefix").default("latents/ComfyUI"))
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let latent = i.object::<Latent>("samples")?;
        let sp = get_save_image_path(i.string("filename_prefix")?, &ctx.env.paths.output, 0, 0)?;
        let mut metadata = HashMap::new();
        let prompt = ctx.prompt.json();
        metadata.insert(
            "prompt".to_string(),
            if prompt.is_null() {
                String::new()
            } else {
                py_json_dumps(prompt)
            },
        );
        match ctx.extra_pnginfo {
            None | Some(Json::Null) => {}
            Some(Json::Object(m)) => {
                for (k, v) in m {
                    metadata.insert(k.clone(), py_json_dumps(v));
                }
            }
            Some(other) => {
                return Err(NodeError::Failed {
                    message: format!("extra_pnginfo must be a JSON object, got {other}"),
                    exception_type: "TypeError".into(),
                })
            }
        }
        let file = format!("{}_{:05}_.latent", sp.filename, sp.counter);
        let bytes = latent_file_bytes(&latent.samples, metadata)?;
        std::fs::write(sp.full_output_folder.join(&file), bytes)?;
        let mut ui = Map::new();
        ui.insert(
            "latents".into(),
            json!([{"filename": file, "subfolder": sp.subfolder, "type": "output"}]),
        );
        Ok(NodeOutput::ui(ui))
    }
}

fn latent_files(env: &Environment) -> Vec<String> {
    list_input_files(&env.paths.input, false)
        .into_iter()
        .filter(|n| n.ends_with(".latent"))
        .collect()
}

fn resolve(env: &Environment, name: &str) -> Result<PathBuf, String> {
    resolve_annotated(env, name).map_err(|e| match e {
        FileRefError::Missing => format!("Invalid latent file: {name}"),
        FileRefError::Escapes => format!(
            "Invalid latent file: {name} (the path leaves its folder; absolute paths, '..' and \
             symlinks to outside are refused)"
        ),
    })
}

struct LoadLatent;
impl Node for LoadLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLatent")
            .category("_for_testing")
            .input(InputSpec::combo_fn("latent", latent_files))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let name = i.string("latent")?;
        let path = resolve(ctx.env, name).map_err(|m| NodeError::Failed {
            message: m,
            exception_type: "FileNotFoundError".into(),
        })?;
        let samples = latent_from_file_bytes(&std::fs::read(&path)?, name)?;
        Ok(NodeOutput::one(Value::object(Latent::new(samples))))
    }
    fn fingerprint(&self, env: &Environment, inputs: &LiteralInputs) -> Fingerprint {
        let Ok(name) = inputs.string("latent") else {
            return Fingerprint::Always;
        };
        match resolve(env, name)
            .ok()
            .and_then(|p| file_sha256_hex(&p).ok())
        {
            Some(h) => Fingerprint::Token(h),
            None => Fingerprint::Always,
        }
    }
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &["latent"]
    }
    fn validate_inputs(&self, env: &Environment, inputs: &Inputs) -> Result<(), String> {
        match inputs.get("latent") {
            Some(Value::String(name)) => resolve(env, name).map(|_| ()),
            _ => Ok(()),
        }
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SaveLatent)?;
    r.register(LoadLatent)?;
    Ok(())
}
