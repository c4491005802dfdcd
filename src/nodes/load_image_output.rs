//! LoadImageOutput (nodes.py): LoadImage over the output folder. Its `image` input is a bare
//! `COMBO` whose choices the frontend fetches from `/internal/files/output`; the value is an
//! annotated name (`ComfyUI_00001_.png [output]`), resolved like LoadImage's (a name without
//! annotation is looked up in the input folder, as ComfyUI's `get_annotated_filepath` does).

use super::image_io::{decode_image, file_sha256_hex, load_image_tensors, validate_image_name};
use crate::env::Environment;
use crate::node::types::{Image, Mask};
use crate::node::{
    Fingerprint, InputSpec, Inputs, LiteralInputs, Node, NodeContext, NodeError, NodeOutput,
    NodeSchema, OutputSpec, Registry, RegistryError, Value,
};
use serde_json::json;

struct LoadImageOutput;
impl Node for LoadImageOutput {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImageOutput")
            .display("Load Image (from Outputs)")
            .category("image")
            .description(
                "Load an image from the output folder. When the refresh button is clicked, the \
                 node will update the image list and automatically select the first image, \
                 allowing for easy iteration.",
            )
            .experimental()
            .input(
                InputSpec::of("image", "COMBO")
                    .opt("image_upload", true)
                    .opt("image_folder", "output")
                    .opt(
                        "remote",
                        json!({
                            "route": "/internal/files/output",
                            "refresh_button": true,
                            "control_after_refresh": "first",
                        }),
                    ),
            )
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("MASK"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let name = i.string("image")?;
        let path = validate_image_name(ctx.env, name).map_err(|m| NodeError::Failed {
            message: m,
            exception_type: "FileNotFoundError".into(),
        })?;
        let decoded = decode_image(&std::fs::read(&path)?)?;
        let (mut image, mut mask) = load_image_tensors(&decoded)?;
        // As LoadImage: only the first frame of an MPO.
        if decoded.format == image::ImageFormat::Jpeg && image.dim(0)? > 1 {
            image = image.narrow(0, 0, 1)?;
            mask = mask.narrow(0, 0, 1)?;
        }
        Ok(NodeOutput::values(vec![
            Value::object(Image(image)),
            Value::object(Mask(mask)),
        ]))
    }
    fn fingerprint(&self, env: &Environment, inputs: &LiteralInputs) -> Fingerprint {
        let Ok(name) = inputs.string("image") else {
            return Fingerprint::Always;
        };
        match validate_image_name(env, name)
            .ok()
            .and_then(|p| file_sha256_hex(&p).ok())
        {
            Some(h) => Fingerprint::Token(h),
            None => Fingerprint::Always,
        }
    }
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &["image"]
    }
    fn validate_inputs(&self, env: &Environment, inputs: &Inputs) -> Result<(), String> {
        match inputs.get("image") {
            Some(Value::String(name)) => validate_image_name(env, name).map(|_| ()),
            _ => Ok(()),
        }
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(LoadImageOutput)
}
