//! `SDXLPromptStyler` of twri's sdxl_prompt_styler, re-implemented from its schema and
//! observed behaviour, with the pack's style files (MIT, `styles/`, copied unchanged).
//!
//! The pack reads every `*.json` of its folder in `os.listdir` order (filesystem dependent) and
//! renames a repeated style name `name_1`, `name_2`, ...; this crate uses the order ComfyUI
//! listed on the machine the references were made on: sai, twri, base.

use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use serde_json::Value as Json;
use std::collections::HashSet;
use std::sync::OnceLock;

/// The pack's folder name in ComfyUI's `custom_nodes` (its `python_module` suffix).
pub const PACK: &str = "sdxl_prompt_styler";

const FILES: [&str; 3] = [
    include_str!("../styles/sdxl_styles_sai.json"),
    include_str!("../styles/sdxl_styles_twri.json"),
    include_str!("../styles/sdxl_styles_base.json"),
];

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.pack(PACK).register(PromptStyler)
}

/// One style: its (possibly renamed) name, the positive template with `{prompt}`, and the
/// negative prompt it adds.
struct Style {
    name: String,
    prompt: String,
    negative: String,
}

fn styles() -> &'static [Style] {
    static STYLES: OnceLock<Vec<Style>> = OnceLock::new();
    STYLES.get_or_init(|| {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for file in FILES {
            let items: Vec<Json> =
                serde_json::from_str(file).expect("the style files are valid JSON");
            for item in items {
                let original = item["name"].as_str().unwrap_or_default().to_string();
                let mut name = original.clone();
                let mut suffix = 1;
                while seen.contains(&name) {
                    name = format!("{original}_{suffix}");
                    suffix += 1;
                }
                seen.insert(name.clone());
                out.push(Style {
                    name,
                    prompt: item["prompt"].as_str().unwrap_or_default().to_string(),
                    negative: item["negative_prompt"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
        out
    })
}

/// `a, b` when both are non-empty, else whichever is.
fn join_negative(template: &str, user: &str) -> String {
    match (template.is_empty(), user.is_empty()) {
        (false, false) => format!("{template}, {user}"),
        (false, true) => template.to_string(),
        _ => user.to_string(),
    }
}

struct PromptStyler;
impl Node for PromptStyler {
    fn schema(&self) -> NodeSchema {
        let names: Vec<&str> = styles().iter().map(|s| s.name.as_str()).collect();
        let flag = |n: &str| {
            InputSpec::boolean(n)
                .default(true)
                .opt("label_on", "yes")
                .opt("label_off", "no")
        };
        NodeSchema::new("SDXLPromptStyler")
            .display("SDXL Prompt Styler")
            .category("utils")
            .input(
                InputSpec::string("text_positive")
                    .default("")
                    .multiline(true),
            )
            .input(
                InputSpec::string("text_negative")
                    .default("")
                    .multiline(true),
            )
            .input(InputSpec::combo("style", &names))
            .input(flag("log_prompt"))
            .input(flag("style_positive"))
            .input(flag("style_negative"))
            .output(OutputSpec::new("STRING").named("text_positive"))
            .output(OutputSpec::new("STRING").named("text_negative"))
    }
    /// The style's template with `{prompt}` replaced by the positive text, and the style's
    /// negative prompt joined with the negative text; either side unstyled when its flag is
    /// off. An unknown style leaves both texts as they are.
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (pos, neg) = (i.string("text_positive")?, i.string("text_negative")?);
        let style = i.string("style")?;
        let (mut p, mut n) = match styles().iter().find(|s| s.name == style) {
            Some(s) => (
                s.prompt.replace("{prompt}", pos),
                join_negative(&s.negative, neg),
            ),
            None => (pos.to_string(), neg.to_string()),
        };
        if !i.boolean("style_positive")? {
            p = pos.to_string();
        }
        if !i.boolean("style_negative")? {
            n = neg.to_string();
        }
        if i.boolean("log_prompt")? {
            eprintln!("SDXLPromptStyler: style: {style}\ntext_positive_styled: {p}\ntext_negative_styled: {n}");
        }
        Ok(NodeOutput::values(vec![Value::String(p), Value::String(n)]))
    }
}
