//! Nodes of cubiq's ComfyUI_essentials, re-implemented from their schemas and observed
//! behaviour (none of the pack's code is used).

mod crop_latent;
mod mask_preview;
mod resize;
mod simple_math;

use comfyrs::node::types::Image;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI_essentials";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(resize::ImageResize)?;
    p.register(mask_preview::MaskPreview)?;
    p.register(crop_latent::ImageCrop)?;
    p.register(crop_latent::SdxlEmptyLatentSizePicker)?;
    p.register(GetImageSize)?;
    p.register(simple_math::SimpleMath)?;
    Ok(())
}

struct GetImageSize;
impl Node for GetImageSize {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("GetImageSize+")
            .display("\u{1f527} Get Image Size")
            .category("essentials/image utils")
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
            .output(OutputSpec::new("INT").named("count"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        match image.0.dims() {
            [b, h, w, _] => Ok(NodeOutput::values(vec![
                Value::Int(*w as i128),
                Value::Int(*h as i128),
                Value::Int(*b as i128),
            ])),
            dims => Err(NodeError::input(
                "image",
                format!("expected an IMAGE [batch, height, width, channels], got shape {dims:?}"),
            )),
        }
    }
}
