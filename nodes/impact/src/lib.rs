//! Utility nodes of ltdrdata's ComfyUI-Impact-Pack, re-implemented from their schemas and
//! observed behaviour (the pack is GPL-3.0; none of its code is used).

use candle_core::Tensor;
use comfyrs::image_ops::{common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
use comfyrs::node::types::Image;
use comfyrs::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Registry, RegistryError, Value,
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
    p.register(Switch)?;
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

/// `ImpactSwitch` ("Switch (Any)"): passes on `input{select}` and only that branch runs (its
/// inputs are lazy). The pack's frontend adds `input2`, `input3`, ... as inputs get
/// connected. The label is the slot's label in the frontend's workflow (extra_pnginfo), else
/// the input's name. `sel_mode` only matters to the pack's prompt-time pruning in old ComfyUI
/// versions; selection here always happens at execution, as the pack does on current ones.
struct Switch;
impl Switch {
    fn input_name(i: &Inputs) -> Result<(i128, String), NodeError> {
        let select = i.int("select")?;
        Ok((select, format!("input{select}")))
    }
}
impl Node for Switch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImpactSwitch")
            .display("Switch (Any)")
            .category("ImpactPack/Util")
            .input(
                InputSpec::int("select")
                    .default(1)
                    .min(1)
                    .max(999999)
                    .step(1)
                    .tooltip("The input number you want to output among the inputs"),
            )
            .input(
                InputSpec::boolean("sel_mode")
                    .default(false)
                    .opt("label_on", "select_on_prompt")
                    .opt("label_off", "select_on_execution")
                    .opt("forceInput", false)
                    .tooltip(
                        "In the case of 'select_on_execution', the selection is dynamically \
                         determined at the time of workflow execution. 'select_on_prompt' is an \
                         option that exists for older versions of ComfyUI, and it makes the \
                         decision before the workflow execution.",
                    ),
            )
            .input(
                InputSpec::of("input1", "*")
                    .optional()
                    .lazy()
                    .tooltip("Any input. When connected, one more input slot is added."),
            )
            .dynamic_inputs("input", "*")
            .lazy_dynamic_inputs()
            .hidden(Hidden::UniqueId)
            .hidden(Hidden::ExtraPngInfo)
            .output(
                OutputSpec::new("*").named("selected_value").tooltip(
                    "Output is generated only from the input chosen by the 'select' value.",
                ),
            )
            .output(
                OutputSpec::new("STRING")
                    .named("selected_label")
                    .tooltip("Slot label of the selected input slot"),
            )
            .output(
                OutputSpec::new("INT")
                    .named("selected_index")
                    .tooltip("Outputs the select value as is"),
            )
    }

    fn check_lazy_status(&self, _: &mut NodeContext, i: &Inputs) -> Result<Vec<String>, NodeError> {
        Ok(vec![Self::input_name(i)?.1])
    }

    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (select, name) = Self::input_name(i)?;
        let Some(value) = i.get(&name) else {
            return Ok(NodeOutput::values(vec![
                Value::Json(serde_json::Value::Null),
                Value::String(String::new()),
                Value::Int(select),
            ]));
        };
        let label = slot_label(ctx, &name).unwrap_or(name);
        Ok(NodeOutput::values(vec![
            value.clone(),
            Value::String(label),
            Value::Int(select),
        ]))
    }
}

/// The label the frontend gave input `name` of this node, from the workflow in extra_pnginfo.
fn slot_label(ctx: &NodeContext, name: &str) -> Option<String> {
    let nodes = ctx
        .extra_pnginfo?
        .get("workflow")?
        .get("nodes")?
        .as_array()?;
    let node = nodes.iter().find(|n| match n.get("id") {
        Some(serde_json::Value::String(s)) => s == ctx.node_id,
        Some(id) => id.as_i64().is_some() && id.as_i64() == ctx.node_id.parse::<i64>().ok(),
        None => false,
    })?;
    node.get("inputs")?
        .as_array()?
        .iter()
        .find(|slot| slot.get("name").and_then(|n| n.as_str()) == Some(name))?
        .get("label")?
        .as_str()
        .map(str::to_string)
}
