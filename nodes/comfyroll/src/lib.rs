//! Text nodes of Suzie1's ComfyUI_Comfyroll_CustomNodes, re-implemented from their schemas and
//! observed behaviour (none of the pack's code is used). Each returns its text plus the pack's
//! help URL (`show_help`), as the originals do.

use comfyrs::node::{
    py_float_repr, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema,
    OutputSpec, Registry, RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "ComfyUI_Comfyroll_CustomNodes";

const WIKI: &str = "https://github.com/Suzie1/ComfyUI_Comfyroll_CustomNodes/wiki/";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(PromptText)?;
    p.register(Text)?;
    p.register(Seed)?;
    p.register(IntegerToString)?;
    p.register(FloatToString)?;
    p.register(FloatToInteger)?;
    p.register(TextInputSwitch)?;
    p.register(TextInputSwitch4)?;
    p.register(ImageInputSwitch)?;
    p.register(ImageInputSwitch4)?;
    p.register(LatentInputSwitch)?;
    Ok(())
}

const CORE: &str = "\u{1f9e9} Comfyroll Studio/\u{2728} Essential/\u{1f4e6} Core";
const CONVERSION: &str = "\u{1f9e9} Comfyroll Studio/\u{1f6e0}\u{fe0f} Utils/\u{1f527} Conversion";

fn help(page: &str) -> Value {
    Value::String(format!("{WIKI}{page}"))
}

struct Seed;
impl Node for Seed {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Seed")
            .display("\u{1f331} CR Seed")
            .category(CORE)
            .input(InputSpec::int("seed").default(0).min(0).max(u64::MAX))
            .output(OutputSpec::new("INT").named("seed"))
            .output(OutputSpec::new("STRING").named("show_help"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::Int(i.int("seed")?),
            help("Core-Nodes#cr-seed"),
        ]))
    }
}

struct IntegerToString;
impl Node for IntegerToString {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Integer To String")
            .display("\u{1f527} CR Integer To String")
            .category(CONVERSION)
            .input(
                InputSpec::int("int_")
                    .default(0)
                    .min(0)
                    .max(u64::MAX)
                    .opt("forceInput", true),
            )
            .output(OutputSpec::new("STRING"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::String(i.int("int_")?.to_string()),
            help("Conversion-Nodes#cr-integer-to-string"),
        ]))
    }
}

struct FloatToString;
impl Node for FloatToString {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Float To String")
            .display("\u{1f527} CR Float To String")
            .category(CONVERSION)
            .input(
                InputSpec::float("float_")
                    .default(0.0)
                    .min(0.0)
                    .max(1000000.0)
                    .opt("forceInput", true),
            )
            .output(OutputSpec::new("STRING"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    /// Python's `str()` of the float (shortest round-trip repr, `1.0`, `1e+16`).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::String(py_float_repr(i.float("float_")?)),
            help("Conversion-Nodes#cr-float-to-string"),
        ]))
    }
}

struct FloatToInteger;
impl Node for FloatToInteger {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Float To Integer")
            .display("\u{1f527} CR Float To Integer")
            .category(CONVERSION)
            .input(
                InputSpec::float("_float")
                    .default(0.0)
                    .opt("forceInput", true),
            )
            .output(OutputSpec::new("INT"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    /// Python's `int()`: truncation toward zero.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let f = i.float("_float")?;
        if !f.is_finite() {
            return Err(NodeError::input(
                "_float",
                format!("cannot convert {f} to an integer"),
            ));
        }
        Ok(NodeOutput::values(vec![
            Value::Int(f.trunc() as i128),
            help("Conversion-Nodes#cr-float-to-integer"),
        ]))
    }
}

struct PromptText;
impl Node for PromptText {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Prompt Text")
            .display("\u{2699}\u{fe0f} CR Prompt Text")
            .category("\u{1f9e9} Comfyroll Studio/\u{2728} Essential/\u{1f4e6} Core")
            .input(
                InputSpec::string("prompt")
                    .default("prompt")
                    .multiline(true),
            )
            .output(OutputSpec::new("STRING").named("prompt"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::String(i.string("prompt")?.into()),
            Value::String(format!("{WIKI}Core-Nodes#cr-prompt-text")),
        ]))
    }
}

struct Text;
impl Node for Text {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CR Text")
            .display("\u{1f524} CR Text")
            .category("\u{1f9e9} Comfyroll Studio/\u{1f6e0}\u{fe0f} Utils/\u{1f524} Text")
            .input(InputSpec::string("text").default("").multiline(true))
            .output(OutputSpec::new("*").named("text"))
            .output(OutputSpec::new("STRING").named("show_help"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::values(vec![
            Value::String(i.string("text")?.into()),
            Value::String(format!("{WIKI}Other-Nodes#cr-text")),
        ]))
    }
}

const LOGIC: &str = "\u{1f9e9} Comfyroll Studio/\u{1f6e0}\u{fe0f} Utils/\u{1f500} Logic";

/// The switches return the chosen input (`None`, shown as a JSON null, when it is not
/// connected; the pack does the same) and the help URL. Every connected input is computed.
fn switch_schema(name: &str, max: i64, ty: &str, inputs: &[&str]) -> NodeSchema {
    let mut s = NodeSchema::new(name)
        .display(&format!("\u{1f500} {name}"))
        .category(LOGIC)
        .input(InputSpec::int("Input").default(1).min(1).max(max));
    for n in inputs {
        let spec = InputSpec::of(n, ty).optional();
        s = s.input(if ty == "STRING" {
            spec.opt("forceInput", true)
        } else {
            spec
        });
    }
    s.output(OutputSpec::new(ty))
        .output(OutputSpec::new("STRING").named("show_help"))
}

/// Input `k` (1-based; anything past the last picks the last, as the pack's `else`).
fn pick(i: &Inputs, names: &[&str], page: &str) -> Result<NodeOutput, NodeError> {
    let k = i.int("Input")?;
    let name = names
        .iter()
        .enumerate()
        .find(|(n, _)| (*n as i128) + 1 == k)
        .map_or(names[names.len() - 1], |(_, n)| n);
    let v = i
        .get(name)
        .cloned()
        .unwrap_or(Value::Json(serde_json::Value::Null));
    Ok(NodeOutput::values(vec![v, help(page)]))
}

struct TextInputSwitch;
impl Node for TextInputSwitch {
    fn schema(&self) -> NodeSchema {
        switch_schema("CR Text Input Switch", 2, "STRING", &["text1", "text2"])
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        pick(i, &["text1", "text2"], "Logic-Nodes#cr-text-input-switch")
    }
}

struct TextInputSwitch4;
impl Node for TextInputSwitch4 {
    fn schema(&self) -> NodeSchema {
        switch_schema(
            "CR Text Input Switch (4 way)",
            4,
            "STRING",
            &["text1", "text2", "text3", "text4"],
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        pick(
            i,
            &["text1", "text2", "text3", "text4"],
            "Logic-Nodes#cr-text-input-switch-4-way",
        )
    }
}

struct ImageInputSwitch;
impl Node for ImageInputSwitch {
    fn schema(&self) -> NodeSchema {
        switch_schema("CR Image Input Switch", 2, "IMAGE", &["image1", "image2"])
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        pick(
            i,
            &["image1", "image2"],
            "Logic-Nodes#cr-image-input-switch",
        )
    }
}

struct ImageInputSwitch4;
impl Node for ImageInputSwitch4 {
    fn schema(&self) -> NodeSchema {
        switch_schema(
            "CR Image Input Switch (4 way)",
            4,
            "IMAGE",
            &["image1", "image2", "image3", "image4"],
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        pick(
            i,
            &["image1", "image2", "image3", "image4"],
            // The pack links the text switch's page here.
            "Logic-Nodes#cr-text-input-switch-4-way",
        )
    }
}

struct LatentInputSwitch;
impl Node for LatentInputSwitch {
    fn schema(&self) -> NodeSchema {
        switch_schema(
            "CR Latent Input Switch",
            2,
            "LATENT",
            &["latent1", "latent2"],
        )
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        pick(
            i,
            &["latent1", "latent2"],
            "Logic-Nodes#cr-latent-input-switch",
        )
    }
}
