//! Errors of the serverless families: every one is JSON with a stable machine-readable `code`
//! and a human `message` that says what to fix (`details` carries structured data when useful).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

/// The stable error codes clients branch on.
pub mod code {
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const INVALID_JSON: &str = "INVALID_JSON";
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const INVALID_OVERRIDE: &str = "INVALID_OVERRIDE";
    pub const INVALID_WORKFLOW: &str = "INVALID_WORKFLOW";
    pub const INVALID_WEBHOOK: &str = "INVALID_WEBHOOK";
    pub const WEBHOOK_REFUSED: &str = "WEBHOOK_REFUSED";
    pub const DEPLOYMENT_NOT_FOUND: &str = "DEPLOYMENT_NOT_FOUND";
    pub const REQUEST_NOT_FOUND: &str = "REQUEST_NOT_FOUND";
    pub const REQUEST_EXPIRED: &str = "REQUEST_EXPIRED";
    pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";
    pub const ALREADY_FINISHED: &str = "ALREADY_FINISHED";
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    pub const BODY_TOO_LARGE: &str = "BODY_TOO_LARGE";
    pub const MEDIA_REFUSED: &str = "MEDIA_REFUSED";
    pub const MEDIA_FETCH_FAILED: &str = "MEDIA_FETCH_FAILED";
    pub const INVALID_MEDIA: &str = "INVALID_MEDIA";
    pub const INVALID_INPUT: &str = "INVALID_INPUT";
    pub const MODEL_NOT_FOUND: &str = "MODEL_NOT_FOUND";
    pub const LORA_NOT_SUPPORTED: &str = "LORA_NOT_SUPPORTED";
    pub const LORA_FILE_REQUIRED: &str = "LORA_FILE_REQUIRED";
    pub const LORA_NOT_FOUND: &str = "LORA_NOT_FOUND";
    pub const SINGLE_LORA_ONLY: &str = "SINGLE_LORA_ONLY";
    pub const MOE_FORMAT_REQUIRED: &str = "MOE_FORMAT_REQUIRED";
    pub const MOE_FORMAT_NOT_SUPPORTED: &str = "MOE_FORMAT_NOT_SUPPORTED";
    pub const CONTROL_IMAGE_REQUIRED: &str = "CONTROL_IMAGE_REQUIRED";
    pub const INTERNAL: &str = "INTERNAL_ERROR";
    pub const OVER_MEMORY_CEILING: &str = "OVER_MEMORY_CEILING";
}

/// An error answer: HTTP status, code, message, optional details and `Retry-After`.
#[derive(Debug)]
pub struct ServerlessError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Boxed, so `Result<_, ServerlessError>` stays small.
    pub details: Option<Box<Json>>,
    pub retry_after_s: Option<u64>,
}

pub type SResult<T> = Result<T, ServerlessError>;

impl ServerlessError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ServerlessError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_s: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// A failure of the server itself: the cause is logged, the client gets a stable message.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("serverless internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            crate::server::error::INTERNAL_MESSAGE,
        )
    }
    pub fn with_details(mut self, details: Json) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// The JSON body: `{"code", "message", "details"?}`.
    pub fn body(&self) -> Json {
        let mut b = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            b["details"] = (**d).clone();
        }
        b
    }
}

impl IntoResponse for ServerlessError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<tokio::task::JoinError> for ServerlessError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServerlessError::internal(e)
    }
}

impl From<crate::store::StoreError> for ServerlessError {
    fn from(e: crate::store::StoreError) -> Self {
        ServerlessError::internal(e)
    }
}

/// Reads a JSON object body; an empty body is `{}`.
pub fn parse_object(body: &[u8]) -> SResult<serde_json::Map<String, Json>> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(other) => Err(ServerlessError::bad_request(
            code::INVALID_JSON,
            format!(
                "the request body must be a JSON object, found {}",
                json_kind(&other)
            ),
        )),
        Err(e) => Err(ServerlessError::bad_request(
            code::INVALID_JSON,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

pub fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Turns ComfyUI's prompt-error JSON (`{error, node_errors}`, from overrides or validation)
/// into a 400 that lists each problem as `{node_id, class_type, input, reason, allowed?,
/// received?}`. Errors on nodes the request overrode are `INVALID_OVERRIDE`, the rest
/// `INVALID_WORKFLOW`.
pub fn from_prompt_error(comfy: &Json, overridden: &[String]) -> ServerlessError {
    let top = &comfy["error"];
    let mut problems = Vec::new();
    if top["type"] == "invalid_override" {
        let extra = &top["extra_info"];
        problems.push(json!({
            "node_id": extra["node_id"],
            "input": extra["input_name"],
            "reason": top["details"],
        }));
    }
    if let Some(nodes) = comfy["node_errors"].as_object() {
        for (node_id, entry) in nodes {
            for e in entry["errors"].as_array().into_iter().flatten() {
                let extra = &e["extra_info"];
                // ComfyUI's `details` is often just the input's name (min/max, missing
                // input): the reason is then the message.
                let details = e["details"].as_str().unwrap_or("");
                let reason = if details.is_empty() || extra["input_name"] == details {
                    e["message"].clone()
                } else {
                    e["details"].clone()
                };
                let mut p = json!({
                    "node_id": node_id,
                    "class_type": entry["class_type"],
                    "input": extra["input_name"],
                    "reason": reason,
                    "type": e["type"],
                });
                if let Some(allowed) = allowed_values(e) {
                    p["allowed"] = allowed;
                }
                if !extra["received_value"].is_null() {
                    p["received"] = extra["received_value"].clone();
                }
                problems.push(p);
            }
        }
    }
    let on_override = top["type"] == "invalid_override"
        || problems.iter().any(|p| {
            p["node_id"]
                .as_str()
                .is_some_and(|n| overridden.iter().any(|o| o == n))
        });
    let code = if on_override {
        code::INVALID_OVERRIDE
    } else {
        code::INVALID_WORKFLOW
    };
    let mut message = top["message"]
        .as_str()
        .unwrap_or("invalid prompt")
        .to_string();
    if let Some(first) = problems.first() {
        message = format!(
            "{message}: node {} input {}: {}",
            first["node_id"],
            first["input"],
            first["reason"].as_str().unwrap_or("")
        );
    } else if let Some(d) = top["details"].as_str().filter(|d| !d.is_empty()) {
        message = format!("{message}: {d}");
    }
    ServerlessError::bad_request(code, message).with_details(json!({ "errors": problems }))
}

/// Fills `allowed` of combo problems whose `input_config` was left out (ComfyUI omits it for
/// lists longer than 20), from the node's declaration.
pub fn fill_allowed(
    e: &mut ServerlessError,
    registry: &crate::node::Registry,
    env: &crate::env::Environment,
) {
    let Some(list) = e
        .details
        .as_mut()
        .and_then(|d| d.get_mut("errors"))
        .and_then(Json::as_array_mut)
    else {
        return;
    };
    for p in list {
        if p["type"] != "value_not_in_list" || p.get("allowed").is_some() {
            continue;
        }
        let (Some(class), Some(input)) = (p["class_type"].as_str(), p["input"].as_str()) else {
            continue;
        };
        let choices = registry
            .schema(class)
            .and_then(|s| s.input_spec(input))
            .and_then(|i| i.ty.choices(env));
        if let Some(c) = choices {
            p["allowed"] = json!(c);
        }
    }
}

/// What an input accepts, from a validation error's `input_config`: the choices of a combo,
/// the bounds of a number.
fn allowed_values(e: &Json) -> Option<Json> {
    let config = &e["extra_info"]["input_config"];
    match e["type"].as_str()? {
        "value_not_in_list" => {
            let spec = config.get(0)?;
            if spec.is_array() {
                Some(spec.clone())
            } else {
                config.get(1)?.get("options").cloned()
            }
        }
        "value_smaller_than_min" | "value_bigger_than_max" => {
            let opts = config.get(1)?;
            Some(json!({"min": opts.get("min"), "max": opts.get("max")}))
        }
        _ => None,
    }
}
