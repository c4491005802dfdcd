//! Nodes of kijai's ComfyUI-KJNodes, re-implemented from their schemas and observed behaviour
//! (the pack is GPL-3.0; none of its code is used): constants, string joining and image size.

use comfyrs::node::types::Image;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use serde_json::{json, Map};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI-KJNodes";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(IntConstant)?;
    p.register(FloatConstant)?;
    p.register(StringConstant)?;
    p.register(StringConstantMultiline)?;
    p.register(JoinStrings)?;
    p.register(GetImageSizeAndCount)?;
    p.register(SomethingToString)?;
    p.register(ImageResizeKj)?;
    Ok(())
}

/// KJNodes' constants allow ±(2^64 - 1). The maximum is exact (u64::MAX); the minimum has no
/// exact JSON number here and goes out as the nearest f64 (-1.8446744073709552e19), which is
/// what a JSON reader (the editor's JavaScript included) makes of ComfyUI's exact integer.
const BIG: f64 = 18446744073709551615.0;

struct IntConstant;
impl Node for IntConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("INTConstant")
            .display("INT Constant")
            .category("KJNodes/constants")
            .input(InputSpec::int("value").default(0).min(-BIG).max(u64::MAX))
            .output(OutputSpec::new("INT").named("value"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("value")?)))
    }
}

struct FloatConstant;
impl Node for FloatConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("FloatConstant")
            .display("Float Constant")
            .category("KJNodes/constants")
            .input(
                InputSpec::float("value")
                    .default(0.0)
                    .min(-BIG)
                    .max(u64::MAX)
                    .step(1e-05),
            )
            .output(OutputSpec::new("FLOAT").named("value"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Float(i.float("value")?)))
    }
}

struct StringConstant;
impl Node for StringConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringConstant")
            .display("String Constant")
            .category("KJNodes/constants")
            .input(InputSpec::string("string").default("").multiline(false))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::String(i.string("string")?.into())))
    }
}

struct StringConstantMultiline;
impl Node for StringConstantMultiline {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringConstantMultiline")
            .display("String Constant Multiline")
            .category("KJNodes/constants")
            .input(InputSpec::string("string").default("").multiline(true))
            .input(InputSpec::boolean("strip_newlines").default(true))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let s = i.string("string")?;
        // With strip_newlines: every "\n" removed, then Python's str.strip() (whitespace).
        let out = if i.boolean("strip_newlines")? {
            s.replace('\n', "").trim().to_string()
        } else {
            s.to_string()
        };
        Ok(NodeOutput::one(Value::String(out)))
    }
}

struct JoinStrings;
impl Node for JoinStrings {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("JoinStrings")
            .display("Join Strings")
            .category("KJNodes/text")
            .input(InputSpec::string("delimiter").default(" ").multiline(false))
            .input(
                InputSpec::string("string1")
                    .default("")
                    .opt("forceInput", true)
                    .optional(),
            )
            .input(
                InputSpec::string("string2")
                    .default("")
                    .opt("forceInput", true)
                    .optional(),
            )
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let opt = |n: &str| -> Result<String, NodeError> {
            match i.get(n) {
                None => Ok(String::new()),
                Some(_) => i.string(n).map(str::to_string),
            }
        };
        let out = format!(
            "{}{}{}",
            opt("string1")?,
            i.string("delimiter")?,
            opt("string2")?
        );
        Ok(NodeOutput::one(Value::String(out)))
    }
}

struct GetImageSizeAndCount;
impl Node for GetImageSizeAndCount {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("GetImageSizeAndCount")
            .display("Get Image Size & Count")
            .category("KJNodes/image")
            .description(
                "\nReturns width, height and batch size of the image,  \nand passes it through unchanged.  \n\n",
            )
            .input(InputSpec::of("image", "IMAGE"))
            .output(OutputSpec::new("IMAGE").named("image"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
            .output(OutputSpec::new("INT").named("count"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let image = i.object::<Image>("image")?;
        let (count, height, width) = match image.0.dims() {
            [b, h, w, _] => (*b, *h, *w),
            dims => {
                return Err(NodeError::input(
                    "image",
                    format!(
                        "expected an IMAGE [batch, height, width, channels], got shape {dims:?}"
                    ),
                ))
            }
        };
        let mut ui = Map::new();
        ui.insert("text".into(), json!([format!("{count}x{width}x{height}")]));
        Ok(NodeOutput::values(vec![
            Value::Object(image),
            Value::Int(width as i128),
            Value::Int(height as i128),
            Value::Int(count as i128),
        ])
        .with_ui(ui))
    }
}

/// Python's `str()` of a primitive value (`None` for a JSON null).
fn py_str(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => comfyrs::node::py_float_repr(*f),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Json(serde_json::Value::Null) => "None".to_string(),
        _ => return None,
    })
}

struct SomethingToString;
impl Node for SomethingToString {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SomethingToString")
            .display("Something To String")
            .category("KJNodes/text")
            .description("\nConverts any type to a string.\n")
            .input(InputSpec::of("input", "*"))
            .input(InputSpec::string("prefix").default("").optional())
            .input(InputSpec::string("suffix").default("").optional())
            .output(OutputSpec::new("STRING"))
    }
    /// A number, boolean or string as Python's `str()`, a list as its items' `str()` joined
    /// with `", "`, with the prefix and suffix; anything else passes through unchanged (as
    /// the pack returns it).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let input = i.require("input")?;
        let text = match input {
            Value::List(items) => items
                .iter()
                .map(|v| py_str(v).ok_or(()))
                .collect::<Result<Vec<_>, ()>>()
                .map(|v| v.join(", "))
                .ok(),
            Value::Json(serde_json::Value::Array(items)) => items
                .iter()
                .map(|j| match j {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Null => Some("None".into()),
                    serde_json::Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
                    serde_json::Value::Number(n) if n.is_f64() => {
                        n.as_f64().map(comfyrs::node::py_float_repr)
                    }
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(", ")),
            Value::Json(serde_json::Value::Null) => None,
            v => py_str(v),
        };
        let Some(mut text) = text else {
            return Ok(NodeOutput::one(input.clone()));
        };
        let opt = |n: &str| -> Result<String, NodeError> {
            match i.get(n) {
                None => Ok(String::new()),
                Some(_) => i.string(n).map(str::to_string),
            }
        };
        text = format!("{}{text}{}", opt("prefix")?, opt("suffix")?);
        Ok(NodeOutput::one(Value::String(text)))
    }
}

const UPSCALE_METHODS: [&str; 5] = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

/// `ImageResizeKJ` (deprecated in the pack, kept for old workflows): ComfyUI's
/// `common_upscale` to the given size, the size of `get_image_size`, or one keeping the
/// proportion; sides rounded down to a multiple of `divisible_by`. Its `crop` combo holds the
/// number 0 next to the strings (old workflows send 0, meaning "center").
struct ImageResizeKj;
impl Node for ImageResizeKj {
    fn schema(&self) -> NodeSchema {
        let size = |n: &str| InputSpec::int(n).default(512).min(0).max(16384).step(1);
        NodeSchema::new("ImageResizeKJ")
            .display("Resize Image (deprecated)")
            .category("KJNodes/image")
            .description("\nDEPRECATED!\n\nDue to ComfyUI frontend changes, this node should no longer be used, please check the   \nv2 of the node. This node is only kept to not completely break older workflows.  \n\n")
            .deprecated()
            .input(InputSpec::of("image", "IMAGE"))
            .input(size("width"))
            .input(size("height"))
            .input(InputSpec::combo("upscale_method", &UPSCALE_METHODS))
            .input(InputSpec::boolean("keep_proportion").default(false))
            .input(
                InputSpec::int("divisible_by")
                    .default(2)
                    .min(0)
                    .max(512)
                    .step(1),
            )
            .input(InputSpec::of("get_image_size", "IMAGE").optional())
            .input(
                InputSpec::combo_values("crop", vec![json!("disabled"), json!("center"), json!(0)])
                    .tooltip("0 will do the default center crop, this is a workaround for the widget order changing with the new frontend, as in old workflows the value of this widget becomes 0 automatically")
                    .optional(),
            )
            .output(OutputSpec::new("IMAGE"))
            .output(OutputSpec::new("INT").named("width"))
            .output(OutputSpec::new("INT").named("height"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        use comfyrs::image_ops::{
            common_upscale, py_round, Crop, Planes, TorchLayout, UpscaleMethod,
        };
        let image = i.object::<Image>("image")?;
        let src = Planes::from_nhwc(&image.0)?;
        let (h0, w0) = (src.h as i128, src.w as i128);
        let (mut width, mut height) = (i.int("width")?, i.int("height")?);
        let sized = match i.get("get_image_size") {
            Some(_) => Some(i.object::<Image>("get_image_size")?),
            None => None,
        };
        if let Some(other) = &sized {
            let d = other.0.dims();
            if d.len() != 4 {
                return Err(NodeError::input(
                    "get_image_size",
                    format!("expected an IMAGE, got shape {d:?}"),
                ));
            }
            (height, width) = (d[1] as i128, d[2] as i128);
        }
        if i.boolean("keep_proportion")? && sized.is_none() {
            if width == 0 && height != 0 {
                width = py_round(w0 as f64 * (height as f64 / h0 as f64)) as i128;
            } else if height == 0 && width != 0 {
                height = py_round(h0 as f64 * (width as f64 / w0 as f64)) as i128;
            } else if width != 0 && height != 0 {
                let ratio = (width as f64 / w0 as f64).min(height as f64 / h0 as f64);
                width = py_round(w0 as f64 * ratio) as i128;
                height = py_round(h0 as f64 * ratio) as i128;
            }
        } else {
            if width == 0 {
                width = w0;
            }
            if height == 0 {
                height = h0;
            }
        }
        let divisible_by = i.int("divisible_by")?;
        if divisible_by > 1 && sized.is_none() {
            width -= width % divisible_by;
            height -= height % divisible_by;
        }
        let crop = match i.get("crop") {
            None => Crop::Disabled,
            Some(Value::Int(0)) => Crop::Center,
            Some(Value::String(s)) => Crop::from_name(s).ok_or_else(|| {
                NodeError::input("crop", format!("'{s}' is not one of disabled, center, 0"))
            })?,
            Some(other) => {
                return Err(NodeError::input(
                    "crop",
                    format!("expected disabled, center or 0, got {}", other.kind()),
                ))
            }
        };
        let method_name = i.string("upscale_method")?;
        let method = UpscaleMethod::from_name(method_name)
            .filter(|_| UPSCALE_METHODS.contains(&method_name))
            .ok_or_else(|| {
                NodeError::input(
                    "upscale_method",
                    format!(
                        "'{method_name}' is not one of {}",
                        UPSCALE_METHODS.join(", ")
                    ),
                )
            })?;
        if width <= 0 || height <= 0 {
            return Err(NodeError::input(
                "width",
                format!(
                    "the resized image would be {width}x{height}; both sides must be at least 1"
                ),
            ));
        }
        let out = common_upscale(
            &src,
            width as usize,
            height as usize,
            method,
            crop,
            TorchLayout::ChannelsLast,
        )
        .map_err(|e| NodeError::input("image", e))?;
        let (w, h) = (out.w as i128, out.h as i128);
        Ok(NodeOutput::values(vec![
            Value::object(Image(out.to_nhwc()?)),
            Value::Int(w),
            Value::Int(h),
        ]))
    }
}
