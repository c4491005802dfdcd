//! JSON Schema building blocks for the OpenAPI document, and the schemas every family shares
//! (errors, request handles, status, result, cancel). Each family declares its own bodies next
//! to the handlers that read and write them (`schemas()` in each module); the route tables name
//! them (`ApiRoute::body`, `ApiRoute::returns`), and [`super::openapi`] puts them under
//! `components/schemas`.
//!
//! Response objects are closed (`additionalProperties: false`), so a field a handler adds
//! without declaring it here is caught by the test that checks live responses against the
//! document (tests/serverless_openapi.rs).

use serde_json::{json, Map, Value};

/// A named schema (a `components/schemas` entry).
pub type Named = (&'static str, Value);

/// A closed object: `required` fields must be present, nothing undeclared is allowed.
pub fn object(required: &[&str], props: Vec<(&str, Value)>) -> Value {
    let mut o = open_object(required, props);
    o["additionalProperties"] = json!(false);
    o
}

/// An object that may carry fields beyond `props` (user-supplied documents).
pub fn open_object(required: &[&str], props: Vec<(&str, Value)>) -> Value {
    let props: Map<String, Value> = props.into_iter().map(|(k, v)| (k.into(), v)).collect();
    let mut o = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

/// An object whose keys are free (node ids, file names) and whose values follow `values`.
pub fn map_of(values: Value) -> Value {
    json!({"type": "object", "additionalProperties": values})
}

pub fn string() -> Value {
    json!({"type": "string"})
}

/// A URL this server hands out or calls.
pub fn uri() -> Value {
    json!({"type": "string", "format": "uri"})
}

/// `2026-07-22T13:05:16.143086` (UTC, the hosted services' format).
pub fn timestamp() -> Value {
    json!({"type": "string", "description": "UTC, ISO 8601 without offset"})
}

pub fn integer() -> Value {
    json!({"type": "integer"})
}

pub fn number() -> Value {
    json!({"type": "number"})
}

pub fn boolean() -> Value {
    json!({"type": "boolean"})
}

pub fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// One of fixed words.
pub fn words(w: &[&str]) -> Value {
    json!({"type": "string", "enum": w})
}

/// `schema` or `null`.
pub fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// Any of `schemas`.
pub fn any_of(schemas: Vec<Value>) -> Value {
    json!({ "anyOf": schemas })
}

/// Any JSON value.
pub fn any() -> Value {
    json!({})
}

/// A reference to a named schema.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `schema` with a description.
pub fn described(mut schema: Value, text: &str) -> Value {
    schema["description"] = json!(text);
    schema
}

/// Every status word of every family.
const STATUS_WORDS: &[&str] = &[
    "in_queue",
    "in_progress",
    "succeeded",
    "completed",
    "failed",
    "cancelled",
    "canceled",
];

/// The schemas every family shares.
pub fn shared() -> Vec<Named> {
    let status = described(
        words(STATUS_WORDS),
        "deployments: in_queue, in_progress, succeeded, failed, cancelled; Model API: completed \
         instead of succeeded; ai-toolkit: canceled",
    );
    vec![
        (
            "Error",
            object(
                &["code", "message"],
                vec![
                    ("code", described(string(), "Stable machine-readable code")),
                    (
                        "message",
                        described(string(), "What went wrong and what to fix"),
                    ),
                    (
                        "details",
                        described(
                            open_object(
                                &[],
                                vec![("errors", array(reference("ValidationProblem")))],
                            ),
                            "Structured data, e.g. the validation problems",
                        ),
                    ),
                ],
            ),
        ),
        (
            "ValidationProblem",
            open_object(
                &["reason"],
                vec![
                    ("node_id", nullable(string())),
                    ("class_type", nullable(string())),
                    ("input", nullable(string())),
                    ("field", described(string(), "Model API: the body field")),
                    ("reason", string()),
                    ("type", string()),
                    (
                        "allowed",
                        described(any(), "Combo choices, or {min, max} of a number"),
                    ),
                    ("received", any()),
                ],
            ),
        ),
        (
            "RequestHandle",
            object(
                &["request_id", "status_url", "result_url", "cancel_url"],
                vec![
                    ("request_id", described(string(), "A random UUIDv4")),
                    ("status_url", uri()),
                    ("result_url", uri()),
                    ("cancel_url", uri()),
                ],
            ),
        ),
        (
            "RequestStatus",
            object(
                &[
                    "request_id",
                    "status",
                    "status_url",
                    "result_url",
                    "created_at",
                ],
                vec![
                    ("request_id", string()),
                    ("status", status.clone()),
                    (
                        "queue_position",
                        described(nullable(integer()), "Only while queued; 0 is next"),
                    ),
                    (
                        "progress",
                        described(
                            object(
                                &["node", "value", "max"],
                                vec![
                                    ("node", nullable(string())),
                                    ("value", integer()),
                                    ("max", integer()),
                                ],
                            ),
                            "Only while running: the running node's sampler steps",
                        ),
                    ),
                    ("status_url", uri()),
                    ("result_url", uri()),
                    ("created_at", timestamp()),
                    ("started_at", timestamp()),
                    ("finished_at", timestamp()),
                ],
            ),
        ),
        (
            "RequestResult",
            object(
                &["request_id", "status", "created_at"],
                vec![
                    ("request_id", string()),
                    ("status", status.clone()),
                    (
                        "outputs",
                        described(
                            any_of(vec![
                                reference("NodeOutputs"),
                                reference("InferenceOutputs"),
                            ]),
                            "Only on success: ComfyUI's history outputs with URLs \
                             (deployments, Model API) or ai-toolkit's images/videos",
                        ),
                    ),
                    (
                        "metadata",
                        any_of(vec![
                            reference("ModelMetadata"),
                            reference("InferenceMetadata"),
                        ]),
                    ),
                    ("error", described(reference("JobError"), "Only on failure")),
                    ("created_at", timestamp()),
                    ("started_at", timestamp()),
                    ("finished_at", timestamp()),
                ],
            ),
        ),
        (
            "JobError",
            object(
                &["type", "message"],
                vec![
                    ("type", string()),
                    ("message", string()),
                    ("node_id", string()),
                    ("class_type", string()),
                ],
            ),
        ),
        (
            "NodeOutputs",
            described(
                map_of(map_of(array(any_of(vec![
                    reference("OutputFile"),
                    json!({"type": ["string", "number", "boolean"]}),
                ])))),
                "Keyed by output node id, then by kind (images, ...), as ComfyUI's history",
            ),
        ),
        (
            "OutputFile",
            open_object(
                &["filename", "subfolder", "type", "url"],
                vec![
                    ("filename", string()),
                    ("subfolder", string()),
                    ("type", words(&["output", "temp", "input"])),
                    ("url", described(uri(), "Served to the request's owner")),
                ],
            ),
        ),
        (
            "CancelResult",
            object(
                &["request_id", "status"],
                vec![
                    ("request_id", string()),
                    ("status", words(&["cancelled", "canceled"])),
                ],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_blocks() {
        assert_eq!(
            object(&["a"], vec![("a", integer())]),
            json!({"type": "object", "properties": {"a": {"type": "integer"}},
                   "required": ["a"], "additionalProperties": false})
        );
        assert_eq!(
            nullable(string()),
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]})
        );
        assert_eq!(
            reference("Error"),
            json!({"$ref": "#/components/schemas/Error"})
        );
    }
}
