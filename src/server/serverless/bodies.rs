//! Typed request bodies of the serverless families. A body is deserialised into its struct
//! in one step, so a wrongly typed or unknown field is a 400 naming the field by its path
//! (`prompts[3].width: invalid type: string "x", expected i64`) instead of being skipped; and
//! the OpenAPI document's schema of each body is derived from the same struct
//! ([`schema_of`]), so the two cannot drift.

use super::errors::{code, SResult, ServerlessError};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// The JSON Schema of a body type for the OpenAPI document (2020-12, as OpenAPI 3.1 uses;
/// nested types inlined, no `$schema`/`title`).
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut v = serde_json::to_value(schema).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    v
}

/// Deserialises a JSON body (an empty body is `{}`) into `T`; errors name the field.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> SResult<T> {
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ServerlessError::bad_request(
            code::INVALID_JSON,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ServerlessError::bad_request(
            code::INVALID_JSON,
            format!(
                "the request body must be a JSON object, found {}",
                super::errors::json_kind(&value)
            ),
        ));
    }
    from_value(value)
}

/// Deserialises an already parsed value into `T`; errors name the field.
pub fn from_value<T: DeserializeOwned>(value: Value) -> SResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        let mut inner = e.into_inner().to_string();
        // serde names a missing field at the parent's path: name it like the others.
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            path = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            inner = "this field is required".into();
        }
        let message = if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        };
        let field = (path != ".").then_some(path);
        ServerlessError::bad_request(code::INVALID_REQUEST, message.clone())
            .with_details(serde_json::json!({"errors": [{"field": field, "reason": message}]}))
    })
}

/// `POST /prod/v1/deployments`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// A non-empty name.
    pub name: String,
    /// The API-format graph (Workflow > Export (API)), or a UI-format workflow (as ComfyUI
    /// saves it), stored converted to API format with the original kept as `ui_workflow`.
    pub workflow_api_json: Value,
    #[serde(default)]
    pub description: Option<String>,
    /// LoRAs attached to every request: `[{path, scale}]` (files under models/loras).
    #[serde(default)]
    pub loras: Option<Vec<Value>>,
}

/// `POST /prod/v1/deployments/{id}/inference`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRun {
    /// Per node id, input values to set: `{node_id: {"inputs": {...}}}` (checked by the
    /// override parser, whose errors name node and input).
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, NodeOverride>>")]
    pub overrides: Option<Value>,
    /// Replaces the saved graph for this request.
    #[serde(default)]
    pub workflow_api_json: Option<Value>,
    /// Webhook URL (the query parameter wins).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Also send in_queue/in_progress events (the query parameter wins).
    #[serde(default)]
    pub webhook_intermediate_status: Option<bool>,
}

/// The schema of one node's overrides (the document only; the override parser reads them).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct NodeOverride {
    /// Input name to value.
    inputs: serde_json::Map<String, Value>,
}

/// The fields every Model API body may carry besides its pipeline's own.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ModelCommon {
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub webhook_intermediate_status: Option<bool>,
}

/// The most prompts one ai-toolkit request may carry (each is a sampling chain in one job).
pub const AITK_MAX_PROMPTS: usize = 32;

/// `POST /v1/inference` (ai-toolkit), checked for types before the API's rules apply.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AitkRequest {
    /// An id of GET /v1/models.
    #[schemars(required)]
    pub model: Option<String>,
    /// Replaces [trigger] in the prompts.
    #[serde(default)]
    pub trigger_word: Option<String>,
    /// The LoRA (one unless the model takes more).
    #[schemars(required)]
    pub loras: Option<Vec<AitkLora>>,
    /// 1 to 32 prompts.
    #[schemars(required, length(min = 1, max = 32))]
    pub prompts: Option<Vec<AitkPrompt>>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub webhook_intermediate_status: Option<bool>,
}

/// One LoRA of an ai-toolkit request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AitkLora {
    /// File under models/loras.
    #[serde(default)]
    #[schemars(required)]
    pub path: Option<String>,
    #[serde(default)]
    pub network_multiplier: Option<f64>,
    /// MoE models only.
    #[serde(default)]
    #[schemars(extend("enum" = ["low", "high"]))]
    pub transformer: Option<String>,
}

/// One prompt of an ai-toolkit request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AitkPrompt {
    pub prompt: String,
    #[serde(default)]
    pub neg: Option<String>,
    #[serde(default)]
    pub trigger_word: Option<String>,
    /// Floored to the resolution divisor.
    #[serde(default)]
    pub width: Option<i64>,
    /// Floored to the resolution divisor.
    #[serde(default)]
    pub height: Option<i64>,
    #[serde(default)]
    pub sample_steps: Option<i64>,
    #[serde(default)]
    pub guidance_scale: Option<f64>,
    /// Default: the model's seed + the prompt index; -1 draws one.
    #[serde(default)]
    pub seed: Option<i64>,
    /// A URL (starts with http) or base64 (raw or a data URL); only for models that take one
    /// (requires_control_image in GET /v1/models); sd15 takes none.
    #[serde(default)]
    pub ctrl_img: Option<String>,
    #[serde(default)]
    pub ctrl_img_1: Option<String>,
    #[serde(default)]
    pub ctrl_img_2: Option<String>,
    #[serde(default)]
    pub ctrl_img_3: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_and_unknown_fields_name_the_field() {
        let e = parse::<DeploymentRun>(br#"{"webhook": 5}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        assert_eq!(
            e.message,
            "webhook: invalid type: integer `5`, expected a string"
        );
        let e = parse::<DeploymentRun>(br#"{"webhok": "x"}"#).unwrap_err();
        assert!(
            e.message.starts_with("webhok: unknown field `webhok`"),
            "{}",
            e.message
        );
        let e = parse::<AitkRequest>(
            br#"{"prompts": [{"prompt": "a"}, {"prompt": "b", "width": "x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "prompts[1].width: invalid type: string \"x\", expected i64"
        );
        let e = parse::<CreateDeployment>(br#"{"workflow_api_json": {}}"#).unwrap_err();
        assert_eq!(e.message, "name: this field is required");
        let e = parse::<DeploymentRun>(b"[1]").unwrap_err();
        assert_eq!(e.code, code::INVALID_JSON);
        assert!(parse::<DeploymentRun>(b"  ").is_ok());
    }

    /// The document's body schemas come from the structs: unknown fields are refused there
    /// too, types and required fields match.
    #[test]
    fn derived_schemas() {
        let s = schema_of::<DeploymentRun>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["properties"]["webhook"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert!(s.get("$schema").is_none() && s.get("title").is_none());
        let s = schema_of::<CreateDeployment>();
        assert_eq!(
            s["required"],
            serde_json::json!(["name", "workflow_api_json"])
        );
        let s = schema_of::<AitkRequest>();
        let prompt = &s["properties"]["prompts"]["items"];
        assert_eq!(prompt["required"], serde_json::json!(["prompt"]));
        assert_eq!(
            prompt["properties"]["width"]["type"],
            serde_json::json!(["integer", "null"])
        );
        assert_eq!(s["properties"]["prompts"]["maxItems"], 32);
        assert!(!s.to_string().contains("$ref"), "{s}");
    }
}
