//! Reads a node declaration in ComfyUI's `/object_info` shape (what a node host sends) into a
//! [`NodeSchema`], the inverse of [`NodeSchema::object_info`]. Hosts speak ComfyUI's format so
//! that existing tooling and packs' own declarations carry over unchanged.

use crate::node::{Hidden, InputSpec, InputType, NodeSchema, OutputSpec, SchemaStyle, Section};
use serde_json::{Map, Value as Json};

/// Parses one `/object_info` entry for class `name`. `default_module` fills a missing
/// `python_module`. Errors say which field is wrong and what was expected.
pub fn schema_from_object_info(
    name: &str,
    info: &Json,
    default_module: &str,
) -> Result<NodeSchema, String> {
    let obj = info
        .as_object()
        .ok_or("the declaration must be a JSON object")?;
    // V3 entries always carry `api_node`; V1 entries never do.
    let v3 = obj.contains_key("api_node");
    let mut s = NodeSchema::new(name);
    if v3 {
        s = s.v3();
    }
    let text = |key: &str| obj.get(key).and_then(Json::as_str).map(str::to_string);
    s.display_name = text("display_name");
    s.category = text("category").unwrap_or_default();
    s.description = text("description").unwrap_or_default();
    s.python_module = text("python_module").unwrap_or_else(|| default_module.to_string());
    let flag = |key: &str| obj.get(key).and_then(Json::as_bool).unwrap_or(false);
    s.output_node = flag("output_node");
    s.deprecated = flag("deprecated");
    s.experimental = flag("experimental");

    let input = match obj.get("input") {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => return Err("'input' must be an object".into()),
    };
    let order = obj.get("input_order").and_then(Json::as_object);
    for (key, section) in [
        ("required", Section::Required),
        ("optional", Section::Optional),
    ] {
        let Some(entries) = input.get(key) else {
            continue;
        };
        let entries = entries
            .as_object()
            .ok_or_else(|| format!("'input.{key}' must be an object"))?;
        // `input_order` gives the declared order; fall back to the object's own order.
        let names: Vec<String> = match order.and_then(|o| o.get(key)).and_then(Json::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            None => entries.keys().cloned().collect(),
        };
        for input_name in names {
            let Some(entry) = entries.get(&input_name) else {
                return Err(format!(
                    "'input_order.{key}' names '{input_name}', which 'input.{key}' lacks"
                ));
            };
            let mut spec =
                input_spec(&input_name, entry).map_err(|e| format!("input '{input_name}': {e}"))?;
            spec.section = section;
            s.inputs.push(spec);
        }
    }
    if let Some(hidden) = input.get("hidden").and_then(Json::as_object) {
        for key in hidden.keys() {
            let h = match key.as_str() {
                "prompt" => Hidden::Prompt,
                "extra_pnginfo" => Hidden::ExtraPngInfo,
                "unique_id" => Hidden::UniqueId,
                "dynprompt" => Hidden::DynPrompt,
                // Other hidden inputs (auth tokens of API nodes, ...) are not supplied.
                _ => continue,
            };
            s.hidden.push(h);
        }
    }

    let list = |key: &str| obj.get(key).and_then(Json::as_array).cloned();
    let types = list("output").unwrap_or_default();
    let is_list = list("output_is_list").unwrap_or_default();
    let names = list("output_name").unwrap_or_default();
    let tooltips = list("output_tooltips").unwrap_or_default();
    for (i, ty) in types.iter().enumerate() {
        // V1 combo outputs are a list of choices: they carry a COMBO value.
        let ty = match ty {
            Json::String(t) => t.clone(),
            Json::Array(_) => "COMBO".to_string(),
            other => return Err(format!("output {i}: type must be a string, got {other}")),
        };
        let mut out = OutputSpec::new(&ty);
        if let Some(n) = names.get(i).and_then(Json::as_str) {
            out.name = n.to_string();
        }
        out.is_list = is_list.get(i).and_then(Json::as_bool).unwrap_or(false);
        out.tooltip = tooltips.get(i).and_then(Json::as_str).map(str::to_string);
        s.outputs.push(out);
    }
    Ok(s)
}

/// One input entry: `["INT", {opts}]`, `[["a", "b"], {opts}]`, or V3's
/// `["COMBO", {"options": [...], "multiselect": false}]`. Elements after the options (some
/// packs put a tooltip there; ComfyUI ignores them) are dropped.
fn input_spec(name: &str, entry: &Json) -> Result<InputSpec, String> {
    let arr = entry
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("expected [type] or [type, options]")?;
    let mut options = match arr.get(1) {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(other) => return Err(format!("options must be an object, got {other}")),
    };
    let ty = match &arr[0] {
        Json::String(t) if t == "COMBO" && options.contains_key("options") => {
            let choices = strings(options.get("options").expect("checked"))?;
            // The V3 renderer adds these two back from the choices.
            options.remove("options");
            options.remove("multiselect");
            InputType::Combo(choices)
        }
        Json::String(t) => InputType::Named(t.clone()),
        // A pack's combo may mix numbers and strings (`["disabled", "center", 0]`): kept as
        // given so `/object_info` shows it unchanged.
        Json::Array(c) if !c.iter().all(Json::is_string) => InputType::MixedCombo(c.clone()),
        Json::Array(_) => InputType::Combo(strings(&arr[0])?),
        other => return Err(format!("type must be a string or a list, got {other}")),
    };
    let mut spec = match ty {
        InputType::Named(t) => InputSpec::of(name, &t),
        InputType::Combo(c) => InputSpec::combo(name, &c),
        InputType::MixedCombo(c) => InputSpec::combo_values(name, c),
        InputType::DynamicCombo(_) => unreachable!("not produced here"),
    };
    spec.always_options = arr.len() >= 2;
    spec.options = options;
    Ok(spec)
}

/// Combo choices. ComfyUI allows numbers in combos; they are compared as their JSON text.
fn strings(v: &Json) -> Result<Vec<String>, String> {
    let arr = v.as_array().ok_or("combo choices must be a list")?;
    Ok(arr
        .iter()
        .map(|c| match c {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect())
}

/// Whether a declaration renders back to exactly what the host sent (used to warn about
/// fields comfyrs does not keep).
pub fn round_trips(schema: &NodeSchema, info: &Json, env: &crate::env::Environment) -> bool {
    schema.style == SchemaStyle::V3 || schema.object_info(env) == *info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Environment, Paths};
    use serde_json::json;

    fn env() -> Environment {
        Environment::new(Paths::under(std::path::Path::new("/nonexistent")))
    }

    #[test]
    fn v1_entry_round_trips() {
        let info = json!({
            "input": {
                "required": {
                    "text": ["STRING", {"multiline": true, "default": ""}],
                    "mode": [["upper", "lower"], {"default": "upper"}],
                    "image": ["IMAGE"],
                    "n": ["INT", {}]
                },
                "optional": {"mask": ["MASK"]},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"}
            },
            "input_order": {
                "required": ["text", "mode", "image", "n"],
                "optional": ["mask"],
                "hidden": ["unique_id", "prompt"]
            },
            "output": ["STRING", "IMAGE"],
            "output_is_list": [true, false],
            "output_name": ["text", "IMAGE"],
            "name": "Pack Node",
            "display_name": "Pack Node (nice)",
            "description": "",
            "python_module": "custom_nodes.pack",
            "category": "utils",
            "output_node": true
        });
        let s = schema_from_object_info("Pack Node", &info, "custom_nodes.x").unwrap();
        assert_eq!(s.inputs.len(), 5);
        assert_eq!(s.inputs[4].section, Section::Optional);
        assert_eq!(s.hidden, vec![Hidden::UniqueId, Hidden::Prompt]);
        assert!(s.outputs[0].is_list);
        assert_eq!(s.object_info(&env()), info);
        assert!(round_trips(&s, &info, &env()));
    }

    #[test]
    fn missing_module_is_filled_and_bad_entries_name_the_input() {
        let info = json!({"input": {"required": {"a": ["INT"]}}, "output": ["INT"]});
        let s = schema_from_object_info("N", &info, "custom_nodes.mine").unwrap();
        assert_eq!(s.python_module, "custom_nodes.mine");
        assert_eq!(s.outputs[0].name, "INT");
        let bad = json!({"input": {"required": {"a": "INT"}}});
        let e = schema_from_object_info("N", &bad, "m").unwrap_err();
        assert_eq!(e, "input 'a': expected [type] or [type, options]");
        let bad =
            json!({"input": {"required": {"a": ["INT"]}}, "input_order": {"required": ["b"]}});
        let e = schema_from_object_info("N", &bad, "m").unwrap_err();
        assert!(e.contains("'b'"), "{e}");
    }

    #[test]
    fn elements_after_the_options_are_ignored() {
        // KJNodes writes a tooltip string as a third element; ComfyUI ignores it.
        let info = json!({"input": {"required": {"p": ["STRING", {"default": "x"}, "a tooltip"]}}});
        let s = schema_from_object_info("N", &info, "m").unwrap();
        assert_eq!(
            s.object_info(&env())["input"]["required"]["p"],
            json!(["STRING", {"default": "x"}])
        );
    }

    #[test]
    fn v3_combo_keeps_choices() {
        let info = json!({
            "input": {"required": {"m": ["COMBO", {"multiselect": false, "options": ["a", "b"]}]}},
            "output": [], "api_node": false
        });
        let s = schema_from_object_info("N", &info, "m").unwrap();
        assert_eq!(s.style, SchemaStyle::V3);
        assert_eq!(s.inputs[0].ty.choices(&env()).unwrap(), vec!["a", "b"]);
        assert_eq!(
            s.object_info(&env())["input"]["required"]["m"],
            json!(["COMBO", {"multiselect": false, "options": ["a", "b"]}])
        );
    }
}
