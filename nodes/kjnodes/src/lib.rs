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
