//! §2 Model API: `POST /v1/models/{model_id}` on built-in pipelines. A pipeline is a workflow
//! template that ships in `workflows/` plus a mapping from body fields to node inputs; its
//! JSON Schema (`GET /v1/models/{model_id}/schema`) is derived from the mapped inputs'
//! declarations (object_info), so ranges and choices are the validator's own. Status, result
//! and cancel are the shared `/v1/requests/{id}/...` routes.

use super::auth::Caller;
use super::bases::Base;
use super::errors::{code, json_kind, parse_object, SResult, ServerlessError};
use super::requests::{base_url, request_urls, submit, Family, RequestMeta};
use crate::server::AppState;
use crate::workflow::{workflow_from_json, Workflow};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Map, Value};

/// One body field and the node inputs it sets.
pub struct Field {
    pub name: &'static str,
    pub targets: &'static [(&'static str, &'static str)],
    pub required: bool,
    pub description: &'static str,
}

/// A built-in pipeline.
pub struct Pipeline {
    pub id: &'static str,
    pub description: &'static str,
    template: &'static str,
    /// The CheckpointLoaderSimple node that loads the base files of `base`.
    checkpoint: &'static str,
    /// The family whose checkpoint the pipeline loads.
    pub base: Base,
    pub fields: &'static [Field],
}

const PROMPT: Field = Field {
    name: "prompt",
    targets: &[("2", "text")],
    required: true,
    description: "What to draw.",
};
const NEGATIVE: Field = Field {
    name: "negative_prompt",
    targets: &[("3", "text")],
    required: false,
    description: "What to avoid.",
};
const STEPS: Field = Field {
    name: "steps",
    targets: &[("5", "steps")],
    required: false,
    description: "Sampling steps.",
};
const CFG: Field = Field {
    name: "cfg",
    targets: &[("5", "cfg")],
    required: false,
    description: "Classifier-free guidance scale.",
};
const SEED: Field = Field {
    name: "seed",
    targets: &[("5", "seed")],
    required: false,
    description: "Noise seed; drawn at random (and reported in metadata) when absent.",
};
const SAMPLER: Field = Field {
    name: "sampler",
    targets: &[("5", "sampler_name")],
    required: false,
    description: "Sampler (KSampler's sampler_name).",
};
const SCHEDULER: Field = Field {
    name: "scheduler",
    targets: &[("5", "scheduler")],
    required: false,
    description: "Noise schedule.",
};

/// The pipelines this server runs.
pub const PIPELINES: &[Pipeline] = &[
    Pipeline {
        id: "sd15/txt2img",
        description: "Stable Diffusion 1.5 text to image",
        template: include_str!("../../../workflows/sd15_txt2img.json"),
        checkpoint: "1",
        base: Base::Sd15,
        fields: &[
            PROMPT,
            NEGATIVE,
            Field {
                name: "width",
                targets: &[("4", "width")],
                required: false,
                description: "Image width in pixels (a multiple of 8).",
            },
            Field {
                name: "height",
                targets: &[("4", "height")],
                required: false,
                description: "Image height in pixels (a multiple of 8).",
            },
            STEPS,
            CFG,
            SEED,
            SAMPLER,
            SCHEDULER,
        ],
    },
    Pipeline {
        id: "sd15/img2img",
        description: "Stable Diffusion 1.5 image to image",
        template: include_str!("../../../workflows/sd15_img2img.json"),
        checkpoint: "1",
        base: Base::Sd15,
        fields: &[
            PROMPT,
            NEGATIVE,
            Field {
                name: "image",
                targets: &[("4", "image")],
                required: true,
                description: "The input image: an https URL, a data URI or raw base64.",
            },
            Field {
                name: "strength",
                targets: &[("5", "denoise")],
                required: false,
                description: "How much of the image is redrawn (0 keeps it, 1 ignores it).",
            },
            STEPS,
            CFG,
            SEED,
            SAMPLER,
            SCHEDULER,
        ],
    },
    Pipeline {
        id: "sdxl/txt2img",
        description: "Stable Diffusion XL text to image",
        template: include_str!("../../../workflows/sdxl_txt2img_api.json"),
        checkpoint: "1",
        base: Base::Sdxl,
        fields: &[
            PROMPT,
            NEGATIVE,
            Field {
                name: "width",
                targets: &[("4", "width")],
                required: false,
                description: "Image width in pixels (a multiple of 8).",
            },
            Field {
                name: "height",
                targets: &[("4", "height")],
                required: false,
                description: "Image height in pixels (a multiple of 8).",
            },
            STEPS,
            CFG,
            SEED,
            SAMPLER,
            SCHEDULER,
        ],
    },
    Pipeline {
        id: "flux/txt2img",
        description: "FLUX.1-dev text to image (ComfyUI's flux_dev_example graph)",
        template: include_str!("../../../workflows/flux_txt2img_api.json"),
        checkpoint: "1",
        base: Base::Flux,
        fields: &[
            PROMPT,
            Field {
                name: "width",
                targets: &[("4", "width"), ("8", "width")],
                required: false,
                description: "Image width in pixels (a multiple of 16).",
            },
            Field {
                name: "height",
                targets: &[("4", "height"), ("8", "height")],
                required: false,
                description: "Image height in pixels (a multiple of 16).",
            },
            Field {
                name: "steps",
                targets: &[("9", "steps")],
                required: false,
                description: "Sampling steps.",
            },
            Field {
                name: "guidance",
                targets: &[("6", "guidance")],
                required: false,
                description: "Flux's distilled guidance (FluxGuidance; not CFG).",
            },
            Field {
                name: "seed",
                targets: &[("11", "noise_seed")],
                required: false,
                description: "Noise seed; drawn at random (and reported in metadata) when absent.",
            },
            Field {
                name: "sampler",
                targets: &[("10", "sampler_name")],
                required: false,
                description: "Sampler (KSamplerSelect's sampler_name).",
            },
            Field {
                name: "scheduler",
                targets: &[("9", "scheduler")],
                required: false,
                description: "Noise schedule (BasicScheduler's scheduler).",
            },
        ],
    },
];

/// Body fields every model accepts besides its schema inputs.
const COMMON: &[&str] = &["lora", "loras", "webhook", "webhook_intermediate_status"];

pub fn pipeline(id: &str) -> Option<&'static Pipeline> {
    PIPELINES.iter().find(|p| p.id == id)
}

impl Pipeline {
    fn template(&self) -> Workflow {
        workflow_from_json(serde_json::from_str(self.template).expect("template is JSON"))
            .expect("template is a workflow")
    }

    /// The JSON Schema of the body, from the mapped inputs' declarations.
    pub fn json_schema(&self, state: &AppState) -> Value {
        let wf = self.template();
        let registry = state.queue.registry();
        let env = state.queue.env();
        let mut props = Map::new();
        let mut required = Vec::new();
        for f in self.fields {
            let (node, input) = f.targets[0];
            let n = &wf.nodes[node];
            let spec = registry
                .schema(&n.class_type)
                .and_then(|s| s.input_spec(input));
            let mut p = Map::new();
            if let Some(spec) = spec {
                if let Some(choices) = spec.ty.choices(env) {
                    p.insert("type".into(), json!("string"));
                    if spec.options.get("image_upload") != Some(&json!(true)) {
                        p.insert("enum".into(), json!(choices));
                    }
                } else {
                    let ty = match spec.ty.primitive() {
                        Some(crate::node::Primitive::Int) => "integer",
                        Some(crate::node::Primitive::Float) => "number",
                        Some(crate::node::Primitive::Bool) => "boolean",
                        _ => "string",
                    };
                    p.insert("type".into(), json!(ty));
                    for (k, to) in [("min", "minimum"), ("max", "maximum")] {
                        if let Some(v) = spec.options.get(k) {
                            p.insert(to.into(), v.clone());
                        }
                    }
                }
            }
            if f.name != "seed" && !f.required {
                if let Some(v) = n.inputs.get(input) {
                    p.insert("default".into(), v.clone());
                }
            }
            p.insert("description".into(), json!(f.description));
            props.insert(f.name.into(), Value::Object(p));
            if f.required {
                required.push(f.name);
            }
        }
        let lora = json!({"type": "object", "required": ["path"], "properties": {
            "path": {"type": "string", "description": "LoRA file under models/loras"},
            "scale": {"type": "number", "default": 1.0}}});
        props.insert("lora".into(), lora.clone());
        props.insert("loras".into(), json!({"type": "array", "items": lora}));
        props.insert("webhook".into(), json!({"type": "string", "format": "uri"}));
        props.insert(
            "webhook_intermediate_status".into(),
            json!({"type": "boolean", "default": false}),
        );
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.id,
            "description": self.description,
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }
}

pub fn api() -> Vec<super::openapi::ApiRoute> {
    use super::openapi::ApiRoute;
    const T: &str = "Model API";
    vec![
        ApiRoute::new(
            "POST",
            "/v1/models/{*model_id}",
            T,
            "Run a built-in pipeline (model ids contain slashes)",
            post(run_model),
        )
        .body("ModelInput")
        .returns("RequestHandle"),
        ApiRoute::new(
            "GET",
            "/v1/models/{*model_id}",
            T,
            "A model's JSON Schema (also at .../schema)",
            get(model_get),
        )
        .returns("ModelSchema"),
    ]
}

/// The bodies of the Model API routes (OpenAPI components); each pipeline's own body schema
/// is its [`Pipeline::json_schema`], on its concrete path.
pub fn schemas() -> Vec<super::schemas::Named> {
    use super::schemas::*;
    let lora = reference("LoraRef");
    vec![
        (
            "ModelInput",
            described(
                open_object(
                    &[],
                    vec![
                        ("lora", lora.clone()),
                        ("loras", array(lora)),
                        ("webhook", uri()),
                        ("webhook_intermediate_status", boolean()),
                    ],
                ),
                "The model's own fields (GET /v1/models/{model_id}/schema; each model's \
                 concrete path in this document), plus lora/loras and the webhook",
            ),
        ),
        (
            "ModelSchema",
            described(
                open_object(
                    &["type", "properties"],
                    vec![
                        ("type", json!({"const": "object"})),
                        ("properties", map_of(json!({"type": "object"}))),
                        ("required", array(string())),
                    ],
                ),
                "A JSON Schema of the model's request body",
            ),
        ),
        (
            "ModelMetadata",
            object(
                &["model_id"],
                vec![
                    ("model_id", string()),
                    (
                        "seed",
                        described(integer(), "The seed used (drawn when not given)"),
                    ),
                ],
            ),
        ),
    ]
}

/// The OpenAPI paths of the pipelines: one concrete `POST /v1/models/{id}` each, with its
/// JSON Schema as the request body (added to the document beside the route table's).
pub fn openapi_paths(state: &AppState) -> Map<String, Value> {
    let json_content = |schema: Value| json!({"application/json": {"schema": schema}});
    let error = super::schemas::reference("Error");
    PIPELINES
        .iter()
        .map(|p| {
            (
                format!("/v1/models/{}", p.id),
                json!({"post": {
                    "summary": format!("Run {} ({})", p.id, p.description),
                    "tags": ["Model API"],
                    "operationId": format!("run_{}", p.id.replace(['/', '.'], "_")),
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": json_content(p.json_schema(state))},
                    "responses": {
                        "200": {"description": "RequestHandle", "content": json_content(super::schemas::reference("RequestHandle"))},
                        "4XX": {"description": "An error with a stable code", "content": json_content(error.clone())}
                    }
                }}),
            )
        })
        .collect()
}

fn model_not_found(id: &str) -> ServerlessError {
    let known: Vec<&str> = PIPELINES.iter().map(|p| p.id).collect();
    ServerlessError::not_found(
        code::MODEL_NOT_FOUND,
        format!("no model {id:?}; models: {}", known.join(", ")),
    )
}

/// `GET /v1/models/{model_id}/schema` (and `GET /v1/models/{model_id}`: the same schema).
async fn model_get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(rest): Path<String>,
) -> Response {
    let id = rest.strip_suffix("/schema").unwrap_or(&rest);
    match pipeline(id) {
        Some(p) => Json(p.json_schema(&state)).into_response(),
        None => model_not_found(id).into_response(),
    }
}

fn invalid(field: &str, msg: String) -> ServerlessError {
    ServerlessError::bad_request(code::INVALID_INPUT, format!("{field}: {msg}"))
        .with_details(json!({"errors": [{"field": field, "reason": msg}]}))
}

async fn run_model(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match run_inner(&state, &caller, &headers, &id, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run_inner(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
) -> SResult<Value> {
    let p = pipeline(id).ok_or_else(|| model_not_found(id))?;
    let b = parse_object(body)?;
    for k in b.keys() {
        if !p.fields.iter().any(|f| f.name == k) && !COMMON.contains(&k.as_str()) {
            let mut allowed: Vec<&str> = p.fields.iter().map(|f| f.name).collect();
            allowed.extend(COMMON);
            return Err(invalid(
                k,
                format!("unknown field; {id} takes {}", allowed.join(", ")),
            ));
        }
    }
    let common: super::bodies::ModelCommon = super::bodies::from_value(Value::Object(b.clone()))?;
    let loras = super::loras::from_body(b.get("lora"), b.get("loras"))?;
    super::loras::check_exist(state.queue.env(), &loras)?;
    let files = p
        .base
        .require(id, &state.serverless.config, state.queue.env())?;
    let mut wf = p.template();
    let mut seed_drawn = None;
    for f in p.fields {
        let value = match b.get(f.name) {
            Some(Value::Null) | None if f.name == "seed" => {
                let s = rand::random::<u32>() as u64;
                seed_drawn = Some(s);
                json!(s)
            }
            Some(Value::Null) | None if f.required => {
                return Err(invalid(f.name, "required".into()));
            }
            Some(Value::Null) | None => continue,
            Some(v @ (Value::Array(_) | Value::Object(_))) => {
                return Err(invalid(
                    f.name,
                    format!("expected a single value, found {}", json_kind(v)),
                ))
            }
            Some(v) => v.clone(),
        };
        for (node, input) in f.targets {
            if let Some(n) = wf.nodes.get_mut(*node) {
                n.inputs.insert((*input).into(), value.clone());
            }
        }
    }
    super::loras::attach(&mut wf, &loras);
    let field_of = |node: &str, input: &str| {
        p.fields
            .iter()
            .find(|f| f.targets.iter().any(|(n, i)| *n == node && *i == input))
            .map(|f| f.name)
    };
    super::media::resolve_media_inputs(
        &state.serverless.media,
        state.queue.registry(),
        &state.queue.env().paths.input,
        &mut wf,
    )
    .await
    .map_err(|e| rename_fields(e, &field_of))?;
    let webhook = common.webhook;
    let base = base_url(state, headers);
    let mut extra = json!({"model_id": id});
    if let Some(s) = seed_drawn {
        extra["seed"] = json!(s);
    } else if let Some(s) = b.get("seed") {
        extra["seed"] = s.clone();
    }
    let meta = RequestMeta {
        family: Family::Models,
        deployment_id: None,
        webhook,
        webhook_intermediate_status: common.webhook_intermediate_status.unwrap_or(false),
        base_url: base.clone(),
        extra,
    };
    let touched: Vec<String> = p
        .fields
        .iter()
        .filter(|f| b.contains_key(f.name))
        .flat_map(|f| f.targets.iter().map(|(n, _)| n.to_string()))
        .collect();
    let mut graph = wf.to_json();
    files.apply(&mut graph, p.checkpoint);
    let rid = submit(state, caller, graph, meta.clone(), &touched)
        .await
        .map_err(|e| rename_fields(e, &field_of))?;
    let mut out = Map::new();
    out.insert("request_id".into(), json!(rid));
    out.extend(request_urls(&base, &meta, &rid));
    Ok(Value::Object(out))
}

/// Puts body field names on node-level problems (`{node_id, input}` -> `field`) and in the
/// message, so the client sees its own vocabulary.
fn rename_fields(
    mut e: ServerlessError,
    field_of: &dyn Fn(&str, &str) -> Option<&'static str>,
) -> ServerlessError {
    let mut first = None;
    if let Some(list) = e
        .details
        .as_mut()
        .and_then(|d| d.get_mut("errors"))
        .and_then(Value::as_array_mut)
    {
        for p in list {
            let (Some(n), Some(i)) = (p["node_id"].as_str(), p["input"].as_str()) else {
                continue;
            };
            if let Some(f) = field_of(n, i) {
                p["field"] = json!(f);
                if first.is_none() {
                    first = Some((f, p["reason"].as_str().unwrap_or("").to_string()));
                }
            }
        }
    }
    if let Some((f, reason)) = first {
        if e.code == code::INVALID_OVERRIDE || e.code == code::INVALID_WORKFLOW {
            e.code = code::INVALID_INPUT;
        }
        e.message = format!("{f}: {reason}");
    }
    e
}
