//! What the frontend builds for a node class from its `/object_info` entry: the input slots
//! (sockets first, then one slot per widget input), the widgets in order with the
//! frontend-only ones it inserts (`control_after_generate`, the combo filter list, the upload
//! button), and the outputs. Saved `widgets_values` are mapped onto exactly this list.

use serde_json::{Map, Value as Json};

/// The widget types the core frontend draws; an input of any other type is a socket.
const WIDGET_TYPES: &[&str] = &[
    "AUDIOUPLOAD",
    "AUDIO_UI",
    "PREVIEW_3D",
    "PREVIEW_3D_ANIMATION",
    "AUDIO_RECORD",
    "INT",
    "FLOAT",
    "BOOLEAN",
    "STRING",
    "MARKDOWN",
    "COMBO",
    "IMAGEUPLOAD",
    "FILEUPLOAD",
    "COLOR",
    "IMAGECOMPARE",
    "TREESELECT",
    "MULTISELECT",
    "CHART",
    "GALLERIA",
    "SELECTBUTTON",
    "TEXTAREA",
];

/// One input as the frontend's V2 node definition has it.
#[derive(Debug, Clone)]
pub struct InputDef {
    pub name: String,
    /// `COMBO` for lists of options, else the declared type.
    pub ty: String,
    pub optional: bool,
    pub options: Map<String, Json>,
    pub combo_options: Vec<Json>,
}

impl InputDef {
    fn opt_bool(&self, key: &str) -> Option<bool> {
        self.options.get(key).and_then(Json::as_bool)
    }
    pub fn force_input(&self) -> bool {
        self.opt_bool("forceInput") == Some(true)
    }
    pub fn is_widget(&self) -> bool {
        WIDGET_TYPES.contains(&self.ty.as_str()) && !self.force_input()
    }
    /// Counted as two widgets by the frontend's widget-value migration.
    fn counts_two(&self) -> bool {
        self.opt_bool("control_after_generate") == Some(true)
            || self.name == "seed"
            || self.name == "noise_seed"
    }
}

/// What a widget is for.
#[derive(Debug, Clone, PartialEq)]
pub enum WidgetKind {
    /// The widget of an input: its value goes to `inputs[name]`.
    Value,
    /// Frontend-only widgets, never sent: `control_after_generate`, the combo filter list and
    /// the upload button.
    FrontendOnly,
}

#[derive(Debug, Clone)]
pub struct WidgetDef {
    pub name: String,
    pub kind: WidgetKind,
    pub default: Json,
    /// Takes a saved `widgets_values` entry (the frontend's `widget.serialize !== false`).
    pub counted: bool,
    /// `dynamicPrompts: true` strings: comments stripped and `{a|b}` resolved when sent.
    pub dynamic_prompts: bool,
    /// Upload combos whose files live outside `input/` get ` [folder]` appended when sent.
    pub annotate_folder: Option<String>,
}

/// A node class as the frontend instantiates it.
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub class_type: String,
    pub display_name: String,
    /// Inputs in the frontend's order (input_order: required, then optional, then the rest).
    pub inputs: Vec<InputDef>,
    /// Default input slots: sockets first, then widget inputs.
    pub slots: Vec<(String, String, bool)>,
    pub widgets: Vec<WidgetDef>,
    pub outputs: Vec<(String, String)>,
    /// The V2 inputs record order (required then optional, JSON order), for value migration.
    record_order: Vec<usize>,
}

fn input_type(spec: &Json) -> (String, Vec<Json>, Map<String, Json>) {
    let options = spec
        .get(1)
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    match spec.get(0) {
        Some(Json::Array(choices)) => ("COMBO".into(), choices.clone(), options),
        Some(Json::String(s)) if s == "COMBO" => {
            let choices = options
                .get("options")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            ("COMBO".into(), choices, options)
        }
        Some(Json::String(s)) => (s.clone(), Vec::new(), options),
        _ => ("UNKNOWN".into(), Vec::new(), options),
    }
}

fn is_upload_combo(d: &InputDef) -> bool {
    d.ty == "COMBO"
        && ["image_upload", "video_upload", "animated_image_upload"]
            .iter()
            .any(|k| d.opt_bool(k) == Some(true))
}

impl NodeDef {
    /// Builds the frontend's view of a node class from its `/object_info` entry.
    pub fn from_object_info(info: &Json) -> NodeDef {
        let class_type = info
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let display_name = info
            .get("display_name")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&class_type)
            .to_string();
        // The V2 record: required then optional, a name keeping its first position.
        let mut record: Vec<InputDef> = Vec::new();
        for (section, optional) in [("required", false), ("optional", true)] {
            if let Some(Json::Object(map)) = info.pointer(&format!("/input/{section}")) {
                for (name, spec) in map {
                    let (ty, combo_options, options) = input_type(spec);
                    let def = InputDef {
                        name: name.clone(),
                        ty,
                        optional,
                        options,
                        combo_options,
                    };
                    match record.iter_mut().find(|d| d.name == *name) {
                        Some(existing) => *existing = def,
                        None => record.push(def),
                    }
                }
            }
        }
        // Comfy.UploadImage: a required upload combo gets an `upload` button input.
        if let Some(up) = record
            .iter()
            .find(|d| !d.optional && is_upload_combo(d))
            .cloned()
        {
            let mut options = up.options.clone();
            options.insert("imageInputName".into(), Json::String(up.name.clone()));
            let def = InputDef {
                name: "upload".into(),
                ty: "IMAGEUPLOAD".into(),
                optional: false,
                options,
                combo_options: Vec::new(),
            };
            match record.iter_mut().find(|d| d.name == "upload") {
                Some(existing) => *existing = def,
                None => record.push(def),
            }
        }
        // Inputs other core extensions add (audio players and uploads, 3D previews).
        for (name, ty) in super::extensions::extra_inputs(&class_type, &record) {
            let def = InputDef {
                name: name.to_string(),
                ty: ty.to_string(),
                optional: false,
                options: Map::new(),
                combo_options: Vec::new(),
            };
            match record.iter_mut().find(|d| d.name == name) {
                Some(existing) => *existing = def,
                None => record.push(def),
            }
        }
        // getOrderedInputSpecs: input_order.required, then .optional, then the rest.
        let mut order: Vec<usize> = Vec::new();
        if let Some(Json::Object(io)) = info.get("input_order") {
            for (section, optional) in [("required", false), ("optional", true)] {
                if let Some(Json::Array(names)) = io.get(section) {
                    for n in names.iter().filter_map(Json::as_str) {
                        if let Some(i) = record
                            .iter()
                            .position(|d| d.name == n && d.optional == optional)
                        {
                            if !order.contains(&i) {
                                order.push(i);
                            }
                        }
                    }
                }
            }
        }
        for i in 0..record.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        let inputs: Vec<InputDef> = order.iter().map(|&i| record[i].clone()).collect();
        let record_order: Vec<usize> = (0..record.len())
            .map(|r| order.iter().position(|&o| o == r).expect("a permutation"))
            .collect();

        let mut slots = Vec::new();
        for d in inputs.iter().filter(|d| !d.is_widget()) {
            slots.push((d.name.clone(), d.ty.clone(), false));
        }
        let mut widgets = Vec::new();
        for d in inputs.iter().filter(|d| d.is_widget()) {
            slots.push((d.name.clone(), d.ty.clone(), true));
            widgets.extend(widgets_for(d, &inputs));
        }
        widgets.extend(super::extensions::extra_widgets(&class_type));
        let mut outputs = Vec::new();
        if let Some(Json::Array(types)) = info.get("output") {
            let names = info.get("output_name").and_then(Json::as_array);
            for (i, t) in types.iter().enumerate() {
                let ty = match t {
                    Json::Array(_) => "COMBO".to_string(),
                    other => type_name(other),
                };
                let name = names
                    .and_then(|n| n.get(i))
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("output_{i}"));
                outputs.push((name, ty));
            }
        }
        NodeDef {
            class_type,
            display_name,
            inputs,
            slots,
            widgets,
            outputs,
            record_order,
        }
    }

    /// The frontend's `migrateWidgetsValues`: a workflow saved when `forceInput` inputs still
    /// had widgets carries values for them; when the count matches that layout, drop them.
    pub fn migrate_widget_values(&self, values: Vec<Json>) -> Vec<Json> {
        let widget_names: Vec<&str> = self.widgets.iter().map(|w| w.name.as_str()).collect();
        let original: Vec<&InputDef> = self
            .record_order
            .iter()
            .map(|&i| &self.inputs[i])
            .filter(|d| widget_names.contains(&d.name.as_str()) || d.force_input())
            .collect();
        let count: usize = original
            .iter()
            .map(|d| if d.counts_two() { 2 } else { 1 })
            .sum();
        if count != values.len() {
            return values;
        }
        // lodash's zip pads the shorter list with undefined, and a value paired with no input
        // is kept; only values at the position of a forceInput input are dropped.
        values
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !original.get(*i).is_some_and(|d| d.force_input()))
            .map(|(_, v)| v)
            .collect()
    }
}

fn type_name(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The widgets one input gets, in order.
fn widgets_for(d: &InputDef, all: &[InputDef]) -> Vec<WidgetDef> {
    let value = |default: Json| WidgetDef {
        name: d.name.clone(),
        kind: WidgetKind::Value,
        default,
        counted: true,
        dynamic_prompts: false,
        annotate_folder: None,
    };
    let frontend_only = |name: &str, default: Json| WidgetDef {
        name: name.to_string(),
        kind: WidgetKind::FrontendOnly,
        default,
        counted: true,
        dynamic_prompts: false,
        annotate_folder: None,
    };
    let opt = |k: &str| d.options.get(k).cloned();
    let control_name = |default: &str, key: &str| -> String {
        match d.options.get(key) {
            Some(Json::String(s)) => s.clone(),
            _ => match d.options.get("control_prefix").and_then(Json::as_str) {
                Some(p) => format!("{p} {default}"),
                None => default.to_string(),
            },
        }
    };
    match d.ty.as_str() {
        "INT" => {
            let mut w = vec![value(opt("default").unwrap_or(Json::from(0)))];
            let control = match d.options.get("control_after_generate") {
                Some(Json::Bool(b)) => *b,
                Some(Json::Null) | None => d.name == "seed" || d.name == "noise_seed",
                Some(_) => true,
            };
            if control {
                w.push(frontend_only(
                    &control_name("control_after_generate", "control_after_generate"),
                    Json::from("randomize"),
                ));
            }
            w
        }
        "FLOAT" => vec![value(opt("default").unwrap_or(Json::from(0)))],
        "BOOLEAN" => vec![value(opt("default").unwrap_or(Json::Bool(false)))],
        "STRING" | "MARKDOWN" | "TEXTAREA" => {
            let mut w = value(opt("default").unwrap_or(Json::from("")));
            w.dynamic_prompts = d.options.get("dynamicPrompts") == Some(&Json::Bool(true));
            vec![w]
        }
        "COMBO" => {
            let default = match opt("default") {
                Some(v) if truthy(&v) => v,
                _ => d.combo_options.first().cloned().unwrap_or(Json::Null),
            };
            let mut main = value(default);
            if is_upload_combo(d) {
                let folder = d
                    .options
                    .get("image_folder")
                    .and_then(Json::as_str)
                    .unwrap_or("input");
                if folder != "input" {
                    main.annotate_folder = Some(folder.to_string());
                }
            }
            let mut w = vec![main];
            // Remote combos (useRemoteWidget): an auto-refresh toggle, and a refresh button
            // that is a plain widget, so its value "refresh" is sent.
            if let Some(Json::Object(remote)) = d.options.get("remote") {
                w.push(frontend_only(
                    "Auto-refresh after generation",
                    Json::Bool(false),
                ));
                if remote.get("refresh_button").is_some_and(truthy) {
                    w.push(WidgetDef {
                        name: "refresh".into(),
                        ..value(Json::from("refresh"))
                    });
                }
            }
            if d.options.get("control_after_generate").is_some_and(truthy) {
                w.push(frontend_only(
                    &control_name("control_after_generate", "control_after_generate"),
                    Json::from("randomize"),
                ));
                w.push(frontend_only(
                    &control_name("control_filter_list", "control_filter_list"),
                    Json::from(""),
                ));
            }
            w
        }
        "IMAGEUPLOAD" => {
            // A button named after the input; its value is the label "image".
            let _ = all;
            vec![frontend_only(&d.name, Json::from("image"))]
        }
        "AUDIOUPLOAD" => vec![frontend_only(&d.name, Json::from(""))],
        // The audio player: sent (as ""), but takes no saved value.
        "AUDIO_UI" => {
            let mut w = value(Json::from(""));
            w.counted = false;
            vec![w]
        }
        "PREVIEW_3D" | "PREVIEW_3D_ANIMATION" | "AUDIO_RECORD" => vec![value(Json::from(""))],
        _ => vec![value(opt("default").unwrap_or(Json::Null))],
    }
}

/// JavaScript truthiness of a JSON value.
pub fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Json::String(s) => !s.is_empty(),
        _ => true,
    }
}
