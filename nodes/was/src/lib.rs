//! Text nodes of WASasquatch's was-node-suite-comfyui, re-implemented from their schemas and
//! observed behaviour (none of the pack's code is used).
//!
//! WAS text nodes expand the pack's tokens: `[time]` (Unix seconds), `[time(FORMAT)]`
//! (strftime of local time), `[hostname]`, `[user]`, `[cuda_device]`, `[cuda_name]`. Custom
//! tokens live in the pack's own database file, which comfyrs does not read.

mod numbers;

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "was-node-suite-comfyui";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    let mut p = r.pack(PACK);
    p.register(TextMultiline)?;
    p.register(TextString)?;
    p.register(TextConcatenate)?;
    p.register(numbers::NumberToText)?;
    p.register(numbers::TextToNumber)?;
    p.register(numbers::NumberToInt)?;
    p.register(numbers::NumberToFloat)?;
    p.register(numbers::LogicBoolean)?;
    p.register(numbers::ImageSizeToNumber)?;
    p.register(numbers::FindAndReplace)?;
    p.register(numbers::NumberOperation)?;
    p.register(numbers::StringToText)?;
    p.register(numbers::ConstantNumber)?;
    Ok(())
}

const CATEGORY: &str = "WAS Suite/Text";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Expands the pack's built-in tokens in `text`.
pub fn parse_tokens(ctx: &NodeContext, text: &str) -> String {
    let now = chrono::Local::now();
    // torch's device string for the device comfyrs runs on.
    let d = &ctx.env.compute.device;
    let device = if d.is_cuda() {
        "cuda:0"
    } else if d.is_metal() {
        "mps"
    } else {
        "cpu"
    };
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "null".into());
    let mut out = text
        .replace("[time]", &now.timestamp().to_string())
        .replace("[hostname]", &hostname())
        .replace("[cuda_device]", device)
        .replace("[cuda_name]", device)
        .replace("[user]", &user);
    // `[time(FORMAT)]`: the shortest match, as the pack's non-greedy pattern.
    while let Some(start) = out.find("[time(") {
        let Some(end) = out[start..].find(")]") else {
            break;
        };
        let fmt = &out[start + 6..start + end];
        let mut formatted = String::new();
        use std::fmt::Write;
        if write!(formatted, "{}", now.format(fmt)).is_err() {
            break;
        }
        out.replace_range(start..start + end + 2, &formatted);
    }
    out
}

struct TextMultiline;
impl Node for TextMultiline {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Text Multiline")
            .category(CATEGORY)
            .input(
                InputSpec::string("text")
                    .default("")
                    .multiline(true)
                    .opt("dynamicPrompts", true),
            )
            .output(OutputSpec::new("STRING"))
    }
    /// Lines whose first non-blank character is `#` are dropped; the rest are joined with
    /// `\n` and tokens expanded.
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let text = i.string("text")?;
        let kept: Vec<&str> = py_lines(text)
            .filter(|l| !l.trim().starts_with('#'))
            .map(|l| l.strip_suffix('\n').unwrap_or(l))
            .collect();
        Ok(NodeOutput::one(Value::String(parse_tokens(
            ctx,
            &kept.join("\n"),
        ))))
    }
}

/// Lines as `io.StringIO` yields them: split after each `\n`, keeping it.
fn py_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

struct TextString;
const STRINGS: [&str; 4] = ["text", "text_b", "text_c", "text_d"];
impl Node for TextString {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new("Text String").category(CATEGORY);
        for (k, n) in STRINGS.iter().enumerate() {
            let spec = InputSpec::string(n).default("").multiline(false);
            s = s.input(if k == 0 { spec } else { spec.optional() });
        }
        s.output(OutputSpec::new("STRING").named("TEXT"))
            .output(OutputSpec::new("STRING").named("TEXT_B"))
            .output(OutputSpec::new("STRING").named("TEXT_C"))
            .output(OutputSpec::new("STRING").named("TEXT_D"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut values = Vec::new();
        for n in STRINGS {
            let s = match i.get(n) {
                None => "",
                Some(_) => i.string(n)?,
            };
            values.push(Value::String(parse_tokens(ctx, s)));
        }
        Ok(NodeOutput::values(values))
    }
}

struct TextConcatenate;
const TEXTS: [&str; 4] = ["text_a", "text_b", "text_c", "text_d"];
impl Node for TextConcatenate {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new("Text Concatenate")
            .category(CATEGORY)
            .input(InputSpec::string("delimiter").default(", "))
            .input(InputSpec::combo("clean_whitespace", &["true", "false"]));
        for t in TEXTS {
            s = s.input(InputSpec::string(t).opt("forceInput", true).optional());
        }
        s.output(OutputSpec::new("STRING"))
    }
    /// The connected texts in input-name order, each stripped when `clean_whitespace` is
    /// "true", empty ones skipped, joined by the delimiter (`\n` when it is a newline or the
    /// two characters `\n`).
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let delimiter = match i.string("delimiter")? {
            "\\n" => "\n",
            d => d,
        };
        let clean = i.string("clean_whitespace")? == "true";
        let mut parts = Vec::new();
        for t in TEXTS {
            if let Some(Value::String(s)) = i.get(t) {
                let s = if clean { s.trim() } else { s.as_str() };
                if !s.is_empty() {
                    parts.push(s);
                }
            }
        }
        Ok(NodeOutput::one(Value::String(parts.join(delimiter))))
    }
}
