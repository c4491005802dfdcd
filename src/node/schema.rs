//! A node's declaration as data: inputs, outputs and display facts. The same declaration drives
//! validation, override checks, `/object_info` and `comfyrs nodes`.

use crate::env::Environment;
use serde_json::{json, Map, Value as Json};
use std::fmt;
use std::sync::Arc;

/// Combo choices computed when asked (e.g. the files in a model folder).
pub type ChoicesFn = Arc<dyn Fn(&Environment) -> Vec<String> + Send + Sync>;

/// The declared type of an input.
#[derive(Clone)]
pub enum InputType {
    /// A type name: `INT`, `MODEL`, `*`, or a comma list such as `INT,FLOAT`.
    Named(String),
    /// A fixed list of choices.
    Combo(Vec<String>),
    /// Choices computed at request time.
    DynamicCombo(ChoicesFn),
    /// Fixed choices that are not all strings (a pack's `["disabled", "center", 0]`).
    MixedCombo(Vec<Json>),
}

impl fmt::Debug for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputType::Named(n) => write!(f, "{n}"),
            InputType::Combo(c) => write!(f, "{c:?}"),
            InputType::DynamicCombo(_) => write!(f, "<dynamic combo>"),
            InputType::MixedCombo(c) => write!(f, "{c:?}"),
        }
    }
}

impl InputType {
    pub fn choices(&self, env: &Environment) -> Option<Vec<String>> {
        match self {
            InputType::Named(_) => None,
            InputType::Combo(c) => Some(c.clone()),
            InputType::DynamicCombo(f) => Some(f(env)),
            InputType::MixedCombo(c) => Some(
                c.iter()
                    .map(|j| match j {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
        }
    }

    /// The choices as `/object_info` shows them (strings, or mixed values).
    pub fn choices_json(&self, env: &Environment) -> Option<Vec<Json>> {
        match self {
            InputType::MixedCombo(c) => Some(c.clone()),
            other => other
                .choices(env)
                .map(|c| c.into_iter().map(Json::String).collect()),
        }
    }

    /// Whether a non-string literal is one of a mixed combo's choices (`None` for inputs
    /// that are not combos; `Some(false)` for string-only combos).
    pub fn has_value(&self, value: &Json) -> Option<bool> {
        match self {
            InputType::Named(_) => None,
            InputType::MixedCombo(c) => Some(c.contains(value)),
            InputType::Combo(_) | InputType::DynamicCombo(_) => Some(false),
        }
    }

    /// Whether `value` is one of the choices (`None` for a non-combo input). Avoids building
    /// the choice list for static combos, which validation checks once per literal.
    pub fn has_choice(&self, env: &Environment, value: &str) -> Option<bool> {
        match self {
            InputType::Named(_) => None,
            InputType::Combo(c) => Some(c.iter().any(|x| x == value)),
            InputType::DynamicCombo(f) => Some(f(env).iter().any(|x| x == value)),
            InputType::MixedCombo(c) => Some(c.iter().any(|x| x.as_str() == Some(value))),
        }
    }

    /// The primitive kind literals of this input are converted to.
    pub fn primitive(&self) -> Option<Primitive> {
        match self {
            InputType::Named(n) => match n.as_str() {
                "INT" => Some(Primitive::Int),
                "FLOAT" => Some(Primitive::Float),
                "STRING" => Some(Primitive::String),
                "BOOLEAN" => Some(Primitive::Bool),
                "*" => Some(Primitive::Any),
                // A bare `("COMBO", {...})` without options (LoadImageOutput: the frontend
                // fetches the choices); ComfyUI checks no list for it.
                "COMBO" => Some(Primitive::Combo),
                _ => None,
            },
            InputType::Combo(_) | InputType::DynamicCombo(_) | InputType::MixedCombo(_) => {
                Some(Primitive::Combo)
            }
        }
    }
}

/// Literal kinds, converted the way ComfyUI converts them during validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Int,
    Float,
    String,
    Bool,
    Combo,
    Any,
}

/// Whether an input must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Required,
    Optional,
}

/// Values the executor supplies to nodes that ask for them (ComfyUI's hidden inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    Prompt,
    ExtraPngInfo,
    UniqueId,
    DynPrompt,
}

impl Hidden {
    pub fn key(self) -> &'static str {
        match self {
            Hidden::Prompt => "prompt",
            Hidden::ExtraPngInfo => "extra_pnginfo",
            Hidden::UniqueId => "unique_id",
            Hidden::DynPrompt => "dynprompt",
        }
    }
    pub fn type_name(self) -> &'static str {
        match self {
            Hidden::Prompt => "PROMPT",
            Hidden::ExtraPngInfo => "EXTRA_PNGINFO",
            Hidden::UniqueId => "UNIQUE_ID",
            Hidden::DynPrompt => "DYNPROMPT",
        }
    }
}

/// One declared input.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub ty: InputType,
    pub section: Section,
    /// Options as ComfyUI sends them (`default`, `min`, `max`, `step`, `tooltip`, ...), in order.
    pub options: Map<String, Json>,
    /// Render `[type, {}]` in V1 `/object_info` even with no options (as a node written
    /// `(type, {})` in Python shows).
    pub always_options: bool,
    /// A classic node's combo declared as `(IO.COMBO, {"options": [...]})`: rendered
    /// `["COMBO", {"options": [...], ...}]` in V1 `/object_info` too.
    pub combo_as_type: bool,
}

impl InputSpec {
    fn new(name: &str, ty: InputType) -> Self {
        InputSpec {
            name: name.to_string(),
            ty,
            section: Section::Required,
            options: Map::new(),
            always_options: false,
            combo_as_type: false,
        }
    }
    pub fn always_options(mut self) -> Self {
        self.always_options = true;
        self
    }
    pub fn int(name: &str) -> Self {
        Self::new(name, InputType::Named("INT".into()))
    }
    pub fn float(name: &str) -> Self {
        Self::new(name, InputType::Named("FLOAT".into()))
    }
    pub fn string(name: &str) -> Self {
        Self::new(name, InputType::Named("STRING".into()))
    }
    pub fn boolean(name: &str) -> Self {
        Self::new(name, InputType::Named("BOOLEAN".into()))
    }
    /// An input of a linked type (`MODEL`, `LATENT`, ...) or `*`.
    pub fn of(name: &str, ty: &str) -> Self {
        Self::new(name, InputType::Named(ty.into()))
    }
    pub fn combo<S: AsRef<str>>(name: &str, choices: &[S]) -> Self {
        Self::new(
            name,
            InputType::Combo(choices.iter().map(|c| c.as_ref().to_string()).collect()),
        )
    }
    /// A combo whose choices are not all strings (see [`InputType::MixedCombo`]).
    pub fn combo_values(name: &str, choices: Vec<Json>) -> Self {
        Self::new(name, InputType::MixedCombo(choices))
    }
    /// A combo written `(IO.COMBO, {"options": choices})` in a classic node.
    pub fn combo_typed<S: AsRef<str>>(name: &str, choices: &[S]) -> Self {
        let mut s = Self::combo(name, choices);
        s.combo_as_type = true;
        s
    }
    pub fn combo_fn(
        name: &str,
        choices: impl Fn(&Environment) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        Self::new(name, InputType::DynamicCombo(Arc::new(choices)))
    }
    pub fn optional(mut self) -> Self {
        self.section = Section::Optional;
        self
    }
    /// Sets an option (rendered in `/object_info` in the order set).
    pub fn opt(mut self, key: &str, value: impl Into<Json>) -> Self {
        self.options.insert(key.to_string(), value.into());
        self
    }
    pub fn default(self, v: impl Into<Json>) -> Self {
        self.opt("default", v)
    }
    pub fn min(self, v: impl Into<Json>) -> Self {
        self.opt("min", v)
    }
    pub fn max(self, v: impl Into<Json>) -> Self {
        self.opt("max", v)
    }
    pub fn step(self, v: impl Into<Json>) -> Self {
        self.opt("step", v)
    }
    pub fn tooltip(self, v: &str) -> Self {
        self.opt("tooltip", v)
    }
    pub fn multiline(self, v: bool) -> Self {
        self.opt("multiline", v)
    }
    /// ComfyUI's `{"lazy": True}`: the producer of a linked value runs only when the node's
    /// [`crate::node::Node::check_lazy_status`] asks for it (only the chosen branch of a
    /// switch runs).
    pub fn lazy(self) -> Self {
        self.opt("lazy", true)
    }
    /// Whether the input is declared lazy.
    pub fn is_lazy(&self) -> bool {
        self.options.get("lazy") == Some(&Json::Bool(true))
    }
}

/// One declared output.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub ty: String,
    pub name: String,
    pub is_list: bool,
    pub tooltip: Option<String>,
}

impl OutputSpec {
    pub fn new(ty: &str) -> Self {
        OutputSpec {
            ty: ty.to_string(),
            name: ty.to_string(),
            is_list: false,
            tooltip: None,
        }
    }
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
    pub fn list(mut self) -> Self {
        self.is_list = true;
        self
    }
    pub fn tooltip(mut self, t: &str) -> Self {
        self.tooltip = Some(t.to_string());
        self
    }
}

/// Which of ComfyUI's two `/object_info` shapes a node is rendered in (spec §4.1 / §4.2):
/// classic nodes (`V1`) and nodes ComfyUI defines on its V3 schema API (`V3`: every field
/// present, combos as `["COMBO", {"options": [...]}]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStyle {
    V1,
    V3,
}

/// The whole declaration of a node class.
#[derive(Debug, Clone)]
pub struct NodeSchema {
    pub name: String,
    pub display_name: Option<String>,
    pub category: String,
    pub description: String,
    pub python_module: String,
    pub inputs: Vec<InputSpec>,
    pub hidden: Vec<Hidden>,
    pub outputs: Vec<OutputSpec>,
    pub output_node: bool,
    /// Called once with whole lists instead of once per list element (INPUT_IS_LIST).
    pub input_is_list: bool,
    /// Never shares cache entries across node ids (NOT_IDEMPOTENT).
    pub not_idempotent: bool,
    pub deprecated: bool,
    pub experimental: bool,
    pub style: SchemaStyle,
    /// Optional inputs a prompt may add beyond the declared ones (packs' "flexible" inputs,
    /// e.g. rgthree's Any Switch `any_01`, `any_02`, ...). `/object_info` does not list them.
    pub dynamic_inputs: Option<DynamicInputs>,
}

/// Undeclared inputs a node accepts: every name starting with `prefix`, of type `ty`,
/// optional. Validation adds them to that node's schema (see [`NodeSchema::for_inputs`]).
/// ComfyUI passes such inputs when they are links (a pack's frontend adds the slots, e.g.
/// Impact's `image2`, `image3`, ...), and packs that declare a "flexible" optional dict also
/// show an empty `optional` section in `/object_info` (`listed_empty`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicInputs {
    pub prefix: String,
    pub ty: String,
    pub listed_empty: bool,
    /// The added inputs are lazy (see [`InputSpec::lazy`]).
    pub lazy: bool,
}

impl NodeSchema {
    pub fn new(name: &str) -> Self {
        NodeSchema {
            name: name.to_string(),
            display_name: None,
            category: "sd".into(),
            description: String::new(),
            python_module: "nodes".into(),
            inputs: Vec::new(),
            hidden: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
            input_is_list: false,
            not_idempotent: false,
            deprecated: false,
            experimental: false,
            style: SchemaStyle::V1,
            dynamic_inputs: None,
        }
    }
    /// Accepts undeclared optional inputs named `prefix...` of type `ty` (see
    /// [`DynamicInputs`]).
    pub fn dynamic_inputs(mut self, prefix: &str, ty: &str) -> Self {
        self.dynamic_inputs = Some(DynamicInputs {
            prefix: prefix.to_string(),
            ty: ty.to_string(),
            listed_empty: false,
            lazy: false,
        });
        self
    }
    /// Makes the [`NodeSchema::dynamic_inputs`] lazy, as a switch's `input1`, `input2`, ...
    pub fn lazy_dynamic_inputs(mut self) -> Self {
        if let Some(d) = self.dynamic_inputs.as_mut() {
            d.lazy = true;
        }
        self
    }
    /// [`NodeSchema::dynamic_inputs`] declared as a pack's flexible optional dict: the
    /// `optional` section of `/object_info` shows, empty (rgthree's FlexibleOptionalInputType).
    pub fn flexible_optional_inputs(mut self, prefix: &str, ty: &str) -> Self {
        self.dynamic_inputs = Some(DynamicInputs {
            prefix: prefix.to_string(),
            ty: ty.to_string(),
            listed_empty: true,
            lazy: false,
        });
        self
    }

    /// This schema extended with the dynamic inputs among `names` (a prompt node's input
    /// names), or `None` when there are none to add.
    pub fn for_inputs<'a>(&self, names: impl Iterator<Item = &'a str>) -> Option<NodeSchema> {
        let dynamic = self.dynamic_inputs.as_ref()?;
        let extra: Vec<InputSpec> = names
            .filter(|n| n.starts_with(&dynamic.prefix) && self.input_spec(n).is_none())
            .map(|n| {
                let spec = InputSpec::of(n, &dynamic.ty).optional();
                if dynamic.lazy {
                    spec.lazy()
                } else {
                    spec
                }
            })
            .collect();
        if extra.is_empty() {
            return None;
        }
        let mut schema = self.clone();
        schema.inputs.extend(extra);
        Some(schema)
    }
    pub fn display(mut self, d: &str) -> Self {
        self.display_name = Some(d.to_string());
        self
    }
    pub fn category(mut self, c: &str) -> Self {
        self.category = c.to_string();
        self
    }
    pub fn description(mut self, d: &str) -> Self {
        self.description = d.to_string();
        self
    }
    pub fn module(mut self, m: &str) -> Self {
        self.python_module = m.to_string();
        self
    }
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }
    pub fn experimental(mut self) -> Self {
        self.experimental = true;
        self
    }
    pub fn v3(mut self) -> Self {
        self.style = SchemaStyle::V3;
        self
    }
    pub fn input(mut self, i: InputSpec) -> Self {
        self.inputs.push(i);
        self
    }
    pub fn hidden(mut self, h: Hidden) -> Self {
        self.hidden.push(h);
        self
    }
    pub fn output(mut self, o: OutputSpec) -> Self {
        self.outputs.push(o);
        self
    }
    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }
    pub fn input_is_list(mut self) -> Self {
        self.input_is_list = true;
        self
    }
    pub fn not_idempotent(mut self) -> Self {
        self.not_idempotent = true;
        self
    }

    pub fn input_spec(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// `[declared_type, options]` as ComfyUI puts it in `input_config` of error objects.
    pub fn input_config(&self, spec: &InputSpec, env: &Environment) -> Json {
        if self.style == SchemaStyle::V1 && spec.combo_as_type {
            let mut opts = Map::new();
            opts.insert("options".into(), json!(spec.ty.choices(env)));
            opts.extend(spec.options.clone());
            return json!(["COMBO", opts]);
        }
        let ty = match spec.ty.choices_json(env) {
            Some(choices) if self.style == SchemaStyle::V1 => json!(choices),
            Some(_) => json!("COMBO"),
            None => match &spec.ty {
                InputType::Named(n) => json!(n),
                _ => unreachable!("combos have choices"),
            },
        };
        let mut opts = spec.options.clone();
        if self.style == SchemaStyle::V3 {
            if let Some(choices) = spec.ty.choices_json(env) {
                opts.insert("multiselect".into(), json!(false));
                opts.insert("options".into(), json!(choices));
            }
        }
        json!([ty, opts])
    }

    /// This node's `/object_info` entry.
    pub fn object_info(&self, env: &Environment) -> Json {
        let mut input = Map::new();
        let mut order = Map::new();
        for section in [Section::Required, Section::Optional] {
            let key = match section {
                Section::Required => "required",
                Section::Optional => "optional",
            };
            let specs: Vec<&InputSpec> = self
                .inputs
                .iter()
                .filter(|i| i.section == section)
                .collect();
            // An empty optional section is left out, unless the node declares a flexible
            // optional dict (ComfyUI shows it as `{}`).
            let listed_empty = self.dynamic_inputs.as_ref().is_some_and(|d| d.listed_empty);
            if specs.is_empty() && section == Section::Optional && !listed_empty {
                continue;
            }
            let mut m = Map::new();
            for spec in &specs {
                let config = self.input_config(spec, env);
                // V1 entries without options are 1-element arrays (`["MODEL"]`).
                let entry = if self.style == SchemaStyle::V1
                    && spec.options.is_empty()
                    && !spec.always_options
                    && !spec.combo_as_type
                {
                    json!([config[0]])
                } else {
                    config
                };
                m.insert(spec.name.clone(), entry);
            }
            order.insert(
                key.into(),
                json!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()),
            );
            input.insert(key.into(), Json::Object(m));
        }
        if !self.hidden.is_empty() {
            let mut m = Map::new();
            for h in &self.hidden {
                let v = match self.style {
                    SchemaStyle::V1 => json!(h.type_name()),
                    SchemaStyle::V3 => json!([h.type_name()]),
                };
                m.insert(h.key().into(), v);
            }
            order.insert(
                "hidden".into(),
                json!(self.hidden.iter().map(|h| h.key()).collect::<Vec<_>>()),
            );
            input.insert("hidden".into(), Json::Object(m));
        }
        let mut info = Map::new();
        info.insert("input".into(), Json::Object(input));
        info.insert("input_order".into(), Json::Object(order));
        info.insert(
            "output".into(),
            json!(self.outputs.iter().map(|o| &o.ty).collect::<Vec<_>>()),
        );
        info.insert(
            "output_is_list".into(),
            json!(self.outputs.iter().map(|o| o.is_list).collect::<Vec<_>>()),
        );
        info.insert(
            "output_name".into(),
            json!(self.outputs.iter().map(|o| &o.name).collect::<Vec<_>>()),
        );
        info.insert("name".into(), json!(self.name));
        let display = match (&self.display_name, self.style) {
            (Some(d), _) => json!(d),
            (None, SchemaStyle::V1) => json!(self.name),
            (None, SchemaStyle::V3) => Json::Null,
        };
        info.insert("display_name".into(), display);
        info.insert("description".into(), json!(self.description));
        info.insert("python_module".into(), json!(self.python_module));
        info.insert("category".into(), json!(self.category));
        info.insert("output_node".into(), json!(self.output_node));
        let tooltips: Vec<Option<&String>> =
            self.outputs.iter().map(|o| o.tooltip.as_ref()).collect();
        match self.style {
            SchemaStyle::V1 => {
                if tooltips.iter().any(Option::is_some) {
                    info.insert("output_tooltips".into(), json!(tooltips));
                }
                if self.deprecated {
                    info.insert("deprecated".into(), json!(true));
                }
                if self.experimental {
                    info.insert("experimental".into(), json!(true));
                }
            }
            SchemaStyle::V3 => {
                info.insert("output_tooltips".into(), json!(tooltips));
                info.insert("deprecated".into(), json!(self.deprecated));
                info.insert("experimental".into(), json!(self.experimental));
                info.insert("api_node".into(), json!(false));
            }
        }
        Json::Object(info)
    }
}
