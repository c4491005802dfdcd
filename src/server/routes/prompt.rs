//! POST/GET /prompt, /queue, /interrupt, /history, /free (spec §2.2, §3).

use crate::queue::{Submission, SubmitError};
use crate::server::error::{parse_body, ApiError, ApiResult};
use crate::server::{blocking, AppState};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/prompt", get(get_prompt).post(post_prompt))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/interrupt", post(post_interrupt))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{id}", get(get_history_one))
        .route("/free", post(post_free))
}

async fn get_prompt(State(s): State<AppState>) -> Json<Value> {
    Json(s.queue.status_json())
}

fn prompt_error(ty: &str, message: &str) -> ApiError {
    ApiError::with_body(
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": ty, "message": message, "details": message, "extra_info": {}},
               "node_errors": {}}),
    )
}

/// Python's truthiness for JSON.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Reads a POST /prompt body into a [`Submission`].
pub fn submission_from_body(body: &Value) -> ApiResult<Submission> {
    let Some(prompt) = body.get("prompt").filter(|p| !p.is_null()) else {
        return Err(prompt_error("no_prompt", "No prompt provided"));
    };
    let number = match body.get("number") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => Some(s.trim().parse::<f64>().map_err(|_| {
            prompt_error("invalid_number", &format!("number '{s}' is not a number"))
        })?),
        Some(other) => {
            return Err(prompt_error(
                "invalid_number",
                &format!("number must be a number, got {other}"),
            ))
        }
    };
    // The queue orders by it: NaN and infinities have no place in that order (SQLite stores
    // NaN as NULL).
    if let Some(n) = number.filter(|n| !n.is_finite()) {
        return Err(prompt_error(
            "invalid_number",
            &format!("number must be a finite number, got {n}"),
        ));
    }
    let extra_data = match body.get("extra_data") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(prompt_error(
                "invalid_extra_data",
                "extra_data must be an object",
            ))
        }
    };
    let client_id = match body.get("client_id") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(other) => Some(other.to_string()),
    };
    let prompt_id = match body.get("prompt_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(prompt_error(
                "invalid_prompt_id",
                "prompt_id must be a non-empty string",
            ))
        }
    };
    let targets = match body.get("partial_execution_targets") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        Some(_) => {
            return Err(prompt_error(
                "invalid_partial_execution_targets",
                "partial_execution_targets must be a list of node ids",
            ))
        }
    };
    Ok(Submission {
        prompt: prompt.clone(),
        prompt_id,
        number,
        front: body.get("front").is_some_and(truthy),
        extra_data,
        client_id,
        targets,
        owner: None,
        source: "comfyui".into(),
    })
}

async fn post_prompt(State(s): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| prompt_error("invalid_json", &format!("the body is not valid JSON: {e}")))?;
    tracing::info!("got prompt");
    let sub = submission_from_body(&body)?;
    let q = s.queue.clone();
    let res = tokio::task::spawn_blocking(move || q.submit(sub)).await?;
    match res {
        Ok(a) => Ok(Json(json!({
            "prompt_id": a.prompt_id,
            "number": a.number,
            "node_errors": a.node_errors,
        }))),
        Err(SubmitError::Invalid(body)) => {
            tracing::warn!("invalid prompt: {}", body["error"]);
            Err(ApiError::with_body(StatusCode::BAD_REQUEST, body))
        }
        Err(SubmitError::Store(e)) => Err(ApiError::internal(e)),
        Err(SubmitError::OverCeiling(e)) => Err(crate::server::error::over_ceiling(&e)),
    }
}

async fn get_queue(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    blocking(move || queue_json(&s)).await.map(Json)
}

fn queue_json(s: &AppState) -> ApiResult<Value> {
    let store = s.queue.store();
    // A cluster: every node's running jobs.
    let running: Vec<Value> = if store.backend() != "sqlite" {
        store
            .list(&[crate::store::JobStatus::Running])?
            .iter()
            .map(|j| j.queue_tuple())
            .collect()
    } else {
        match s.queue.running() {
            Some(r) => s
                .queue
                .store()
                .get(&r.id)?
                .map(|j| vec![j.queue_tuple()])
                .unwrap_or_default(),
            None => vec![],
        }
    };
    let pending: Vec<Value> = s
        .queue
        .store()
        .pending()?
        .iter()
        .map(|j| j.queue_tuple())
        .collect();
    Ok(json!({"queue_running": running, "queue_pending": pending}))
}

fn id_list(v: &Value, key: &str) -> ApiResult<Vec<String>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => Ok(a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect()),
        Some(_) => Err(ApiError::bad_request(format!(
            "'{key}' must be a list of ids"
        ))),
    }
}

async fn post_queue(State(s): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let v = parse_body(&body)?;
    let ids = id_list(&v, "delete")?;
    blocking(move || -> ApiResult<()> {
        if v.get("clear").is_some_and(truthy) {
            s.queue.clear_pending()?;
        }
        if !ids.is_empty() {
            s.queue.delete_pending(&ids)?;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

async fn post_interrupt(State(s): State<AppState>, body: Bytes) -> Response {
    // Invalid JSON is treated as {} (ComfyUI).
    let v = parse_body(&body).unwrap_or(json!({}));
    match v.get("prompt_id").and_then(|p| p.as_str()) {
        Some(p) => {
            if !s.queue.interrupt(Some(p)) {
                tracing::info!("interrupt for {p} ignored: it is not running");
            }
        }
        None => {
            s.queue.interrupt(None);
        }
    }
    StatusCode::OK.into_response()
}

async fn get_history(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let max_items = match q.get("max_items") {
        Some(m) => Some(
            m.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("max_items '{m}' is not an integer")))?,
        ),
        None => None,
    };
    let offset = match q.get("offset") {
        Some(o) => Some(
            o.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("offset '{o}' is not an integer")))?,
        ),
        None => None,
    };
    blocking(move || -> ApiResult<Json<Value>> {
        let mut out = Map::new();
        for j in s.queue.store().history(max_items, offset)? {
            out.insert(j.id.clone(), j.history_entry());
        }
        Ok(Json(Value::Object(out)))
    })
    .await
}

async fn get_history_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || -> ApiResult<Json<Value>> {
        let mut out = Map::new();
        if let Some(j) = s.queue.store().get(&id)?.filter(|j| j.in_history) {
            out.insert(j.id.clone(), j.history_entry());
        }
        Ok(Json(Value::Object(out)))
    })
    .await
}

async fn post_history(State(s): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let v = parse_body(&body)?;
    let ids = id_list(&v, "delete")?;
    blocking(move || -> ApiResult<()> {
        if v.get("clear").is_some_and(truthy) {
            s.queue.store().clear_history()?;
        }
        for id in ids {
            s.queue.store().delete_history(&id)?;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

async fn post_free(State(s): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let v = parse_body(&body)?;
    let unload = v.get("unload_models").is_some_and(truthy);
    let free = v.get("free_memory").is_some_and(truthy);
    s.queue.request_free(unload, free);
    Ok(StatusCode::OK.into_response())
}
