//! Typed request bodies of the serverless families. A body is deserialised into its struct
//! in one step, so a wrongly typed or unknown field is a 400 naming the field by its path
//! (`prompts[3].width: invalid type: string "x", expected i64`) instead of being skipped.

use super::errors::{code, SResult, ServerlessError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub name: String,
    pub workflow_api_json: Value,
    #[serde(default)]
    pub description: Option<String>,
    /// `[{path, scale}]`, checked by [`super::loras::parse_list`].
    #[serde(default)]
    pub loras: Option<Vec<Value>>,
}

/// `POST /prod/v1/deployments/{id}/inference`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRun {
    /// `{node_id: {"inputs": {...}}}`, checked by the override parser.
    #[serde(default)]
    pub overrides: Option<Value>,
    #[serde(default)]
    pub workflow_api_json: Option<Value>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub webhook_intermediate_status: Option<bool>,
}

/// The fields every Model API body may carry besides its pipeline's own.
#[derive(Debug, Deserialize)]
pub struct ModelCommon {
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub webhook_intermediate_status: Option<bool>,
}

/// The most prompts one ai-toolkit request may carry (each is a sampling chain in one job).
pub const AITK_MAX_PROMPTS: usize = 32;

/// `POST /v1/inference` (ai-toolkit), checked for types before the API's rules apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AitkRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub trigger_word: Option<String>,
    #[serde(default)]
    pub loras: Option<Vec<AitkLora>>,
    #[serde(default)]
    pub prompts: Option<Vec<AitkPrompt>>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub webhook_intermediate_status: Option<bool>,
}

/// One LoRA of an ai-toolkit request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AitkLora {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub network_multiplier: Option<f64>,
    #[serde(default)]
    pub transformer: Option<String>,
}

/// One prompt of an ai-toolkit request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AitkPrompt {
    pub prompt: String,
    #[serde(default)]
    pub neg: Option<String>,
    #[serde(default)]
    pub trigger_word: Option<String>,
    #[serde(default)]
    pub width: Option<i64>,
    #[serde(default)]
    pub height: Option<i64>,
    #[serde(default)]
    pub sample_steps: Option<i64>,
    #[serde(default)]
    pub guidance_scale: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
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
}
