//! LoRAs attached to a graph (Model API `lora`/`loras`, a deployment's `loras`): a chain of
//! LoraLoader nodes after every CheckpointLoaderSimple, whose MODEL and CLIP consumers then
//! read the last LoraLoader.

use super::errors::{code, json_kind, SResult, ServerlessError};
use crate::workflow::{InputRef, Workflow, WorkflowNode};
use serde_json::{json, Value};

/// One LoRA file (under models/loras) and its strength.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: String,
    pub scale: f64,
}

fn bad(msg: String) -> ServerlessError {
    ServerlessError::bad_request(code::INVALID_INPUT, msg)
}

/// Reads `{path, scale?}` items; `field` names them in errors.
pub fn parse_list(field: &str, items: &[Value]) -> SResult<Vec<LoraSpec>> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let path = v
                .get("path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| bad(format!("{field}[{i}].path: the LoRA file name is required")))?;
            let scale = match v.get("scale") {
                None | Some(Value::Null) => 1.0,
                Some(s) => s.as_f64().ok_or_else(|| {
                    bad(format!(
                        "{field}[{i}].scale: expected a number, found {}",
                        json_kind(s)
                    ))
                })?,
            };
            Ok(LoraSpec {
                path: path.to_string(),
                scale,
            })
        })
        .collect()
}

/// The Model API's `lora` (one object) and `loras` (a list), together.
pub fn from_body(lora: Option<&Value>, loras: Option<&Value>) -> SResult<Vec<LoraSpec>> {
    let mut out = Vec::new();
    match lora {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => out.extend(parse_list("lora", std::slice::from_ref(v))?),
        Some(v) => {
            return Err(bad(format!(
                "lora: expected {{path, scale}}, found {}",
                json_kind(v)
            )))
        }
    }
    match loras {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => out.extend(parse_list("loras", a)?),
        Some(v) => {
            return Err(bad(format!(
                "loras: expected a list of {{path, scale}}, found {}",
                json_kind(v)
            )))
        }
    }
    Ok(out)
}

/// Refuses LoRA files that are not under models/loras, naming them.
pub fn check_exist(env: &crate::env::Environment, loras: &[LoraSpec]) -> SResult<()> {
    for l in loras {
        if env.paths.find_model("loras", &l.path).is_none() {
            return Err(ServerlessError::bad_request(
                code::LORA_NOT_FOUND,
                format!("LoRA {:?} is not under models/loras", l.path),
            ));
        }
    }
    Ok(())
}

/// Inserts the LoraLoader chain after every CheckpointLoaderSimple of `wf`.
pub fn attach(wf: &mut Workflow, loras: &[LoraSpec]) {
    if loras.is_empty() {
        return;
    }
    let ckpts: Vec<String> = wf
        .nodes
        .iter()
        .filter(|(_, n)| n.class_type == "CheckpointLoaderSimple")
        .map(|(id, _)| id.clone())
        .collect();
    for c in ckpts {
        let mut prev = c.clone();
        let mut added = Vec::new();
        for (i, l) in loras.iter().enumerate() {
            let id = format!("{c}_lora{i}");
            let mut inputs = indexmap::IndexMap::new();
            inputs.insert("model".to_string(), json!([prev, 0]));
            inputs.insert("clip".to_string(), json!([prev, 1]));
            inputs.insert("lora_name".to_string(), json!(l.path));
            inputs.insert("strength_model".to_string(), json!(l.scale));
            inputs.insert("strength_clip".to_string(), json!(l.scale));
            added.push((
                id.clone(),
                WorkflowNode {
                    class_type: "LoraLoader".into(),
                    inputs,
                    extra: Default::default(),
                },
            ));
            prev = id;
        }
        for (id, node) in wf.nodes.iter_mut() {
            if id == &c {
                continue;
            }
            for v in node.inputs.values_mut() {
                if let InputRef::Link { node: src, slot } = InputRef::classify(v) {
                    if src == c && slot <= 1 {
                        *v = json!([prev, slot]);
                    }
                }
            }
        }
        for (id, n) in added {
            wf.nodes.insert(id, n);
        }
    }
}
