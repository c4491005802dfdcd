//! Utility nodes of ltdrdata's ComfyUI-Impact-Pack, re-implemented from their schemas and
//! observed behaviour (the pack is GPL-3.0; none of its code is used). `ImpactSwitch` is not
//! here: it relies on lazy inputs (only the selected branch runs), which comfyrs' executor
//! does not have yet.

use candle_core::Tensor;
use comfyrs::image_ops::{common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
use comfyrs::node::types::Image;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use std::sync::Arc;

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI-Impact-Pack";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(ImpactInt)?;
    p.register(BatchToList)?;
    p.register(ListToBatch)?;
    p.register(MakeImageBatch)?;
    p.register(ImageInfo)?;
    Ok(())
}

struct ImpactInt;
impl Node for ImpactInt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImpactInt")
            .category("ImpactPack/Logic")
            .input(
                InputSpec::int("value")
                    .default(0)
                    .min(0)
                    .max(i64::MAX)
                    .step(1),
            )
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("value")?)))
    }
}

/// `ImpactImageBatchToImageList`: one list item per image of the batch (`[1, H, W, C]` each).
struct BatchToList;
impl Node for BatchToList {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImpactImageBatchToImageList")
            .display("Image Batch to Image List")
            .category("ImpactPack/Util")
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE").list())
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let n = image.0.dims().first().copied().unwrap_or(0);
        let items = (0..n)
            .map(|k| Ok(Value::object(Image(image.0.narrow(0, k, 1)?))))
            .collect::<Result<Vec<_>, NodeError>>()?;
        Ok(NodeOutput::one(Value::List(items)))
    }
}

/// `ImageListToImageBatch`: the list concatenated into one batch; an image whose size differs
/// from the first is first resized to it (lanczos, centre crop), as the pack does.
struct ListToBatch;
impl Node for ListToBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageListToImageBatch")
            .display("Image List to Image Batch")
            .category("ImpactPack/Operation")
            .input(InputSpec::of("images", "IMAGE"))
            .input_is_list()
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let items: Vec<Value> = match i.require("images")? {
            Value::List(items) => items.clone(),
            v => vec![v.clone()],
        };
        let images: Vec<Arc<Image>> = items
            .iter()
            .map(|v| {
                v.downcast::<Image>().ok_or_else(|| {
                    NodeError::input("images", format!("expected IMAGE, got {}", v.kind()))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeOutput::one(Value::object(Image(concat_resized(
            &images, "images",
        )?))))
    }
}

/// The images concatenated into one batch, each resized to the first's size (lanczos, centre
/// crop) when it differs.
fn concat_resized(images: &[Arc<Image>], input: &str) -> Result<Tensor, NodeError> {
    let Some(first) = images.first() else {
        return Err(NodeError::input(input, "there are no images"));
    };
    let dims = first.0.dims().to_vec();
    let (h, w) = (dims[1], dims[2]);
    let mut parts = vec![first.0.clone()];
    for img in &images[1..] {
        let t = if img.0.dims()[1..] != dims[1..] {
            let planes = Planes::from_nhwc(&img.0)?;
            let resized = common_upscale(
                &planes,
                w,
                h,
                UpscaleMethod::Lanczos,
                Crop::Center,
                TorchLayout::ChannelsLast,
            )
            .map_err(|e| NodeError::input(input, e))?;
            resized.to_nhwc()?
        } else {
            img.0.clone()
        };
        parts.push(t);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// `ImpactMakeImageBatch`: `image1` plus the `image2`, `image3`, ... the pack's frontend adds
/// (dynamic inputs), in the prompt's order, concatenated like ImageListToImageBatch.
struct MakeImageBatch;
impl Node for MakeImageBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImpactMakeImageBatch")
            .display("Make Image Batch")
            .category("ImpactPack/Util")
            .input(InputSpec::of("image1", "IMAGE"))
            .dynamic_inputs("image", "IMAGE")
            .output(OutputSpec::new("IMAGE"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut images = vec![i.object::<Image>("image1")?];
        for (name, _) in i.iter().filter(|(n, _)| n.as_str() != "image1") {
            images.push(i.object::<Image>(name)?);
        }
        Ok(NodeOutput::one(Value::object(Image(concat_resized(
            &images, "image1",
        )?))))
    }
}

struct ImageInfo;
impl Node for ImageInfo {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImpactImageInfo")
            .category("ImpactPack/Logic/_for_test")
            .input(InputSpec::of("value", "IMAGE"))
            .output(OutputSpec::new("INT").named("batch"))
            .output(OutputSpec::new("INT").named("height"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("channel"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("value")?;
        match image.0.dims() {
            [b, h, w, c] => Ok(NodeOutput::values(
                [b, h, w, c]
                    .iter()
                    .map(|&&d| Value::Int(d as i128))
                    .collect(),
            )),
            d => Err(NodeError::input(
                "value",
                format!("expected an IMAGE [B, H, W, C], got shape {d:?}"),
            )),
        }
    }
}
