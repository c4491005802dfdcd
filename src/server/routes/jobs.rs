//! The newer `/api/jobs` family (spec §3.8). Mounted under `/api` only.

use crate::server::error::{parse_body, ApiError, ApiResult};
use crate::server::{blocking, AppState};
use crate::store::{JobRecord, JobStatus};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/cancel", post(cancel_many))
        .route("/jobs/{id}", get(one))
        .route("/jobs/{id}/cancel", post(cancel_one))
}

/// The jobs API's status word.
pub fn api_status(j: &JobRecord) -> &'static str {
    match j.status {
        JobStatus::Pending => "pending",
        JobStatus::Running => "in_progress",
        JobStatus::Success => "completed",
        JobStatus::Failed => "failed",
        JobStatus::Interrupted | JobStatus::Cancelled => "cancelled",
    }
}

fn message_ts(j: &JobRecord, kinds: &[&str]) -> Option<Value> {
    j.exec_status["messages"].as_array()?.iter().find_map(|m| {
        let kind = m.get(0)?.as_str()?;
        kinds
            .contains(&kind)
            .then(|| m.get(1)?.get("timestamp").cloned())
            .flatten()
    })
}

fn media_type(kind: &str) -> &'static str {
    match kind {
        "images" => "images",
        "audio" => "audio",
        "video" | "gifs" => "video",
        "3d" => "3d",
        _ => "other",
    }
}

/// `(count, previewable count, first previewable item)`.
fn output_summary(j: &JobRecord) -> (usize, usize, Option<Value>) {
    let mut count = 0;
    let mut previewable = 0;
    let mut first: Option<(bool, Value)> = None;
    if let Some(nodes) = j.outputs.as_object() {
        for (node, ui) in nodes {
            let Some(ui) = ui.as_object() else { continue };
            for (kind, items) in ui {
                if kind == "animated" {
                    continue;
                }
                let Some(items) = items.as_array() else {
                    continue;
                };
                for it in items {
                    count += 1;
                    if it.get("filename").is_some() && media_type(kind) != "other" {
                        previewable += 1;
                        let is_output = it["type"] == "output";
                        if first.as_ref().is_none_or(|(o, _)| !*o && is_output) {
                            let mut v = it.clone();
                            v["nodeId"] = json!(node);
                            v["mediaType"] = json!(media_type(kind));
                            first = Some((is_output, v));
                        }
                    }
                }
            }
        }
    }
    (count, previewable, first.map(|(_, v)| v))
}

/// A job in the jobs API's shape (null fields pruned).
pub fn job_json(j: &JobRecord) -> Value {
    let (count, previewable, preview) = output_summary(j);
    let mut m = Map::new();
    m.insert("id".into(), json!(j.id));
    m.insert("status".into(), json!(api_status(j)));
    m.insert("priority".into(), j.number.clone());
    m.insert(
        "create_time".into(),
        j.extra_data
            .get("create_time")
            .cloned()
            .unwrap_or(json!(j.created_at)),
    );
    m.insert("outputs_count".into(), json!(count));
    m.insert("previewable_outputs_count".into(), json!(previewable));
    if let Some(w) = j.extra_data["extra_pnginfo"]["workflow"].get("id") {
        m.insert("workflow_id".into(), w.clone());
    }
    if j.status.is_finished() {
        if let Some(t) = message_ts(j, &["execution_start"]) {
            m.insert("execution_start_time".into(), t);
        }
        if let Some(t) = message_ts(
            j,
            &[
                "execution_success",
                "execution_error",
                "execution_interrupted",
            ],
        ) {
            m.insert("execution_end_time".into(), t);
        }
        if let Some(e) = j.exec_status["messages"].as_array().and_then(|ms| {
            ms.iter()
                .find(|m| m[0] == "execution_error")
                .map(|m| m[1].clone())
        }) {
            m.insert("execution_error".into(), e);
        }
        if let Some(p) = preview {
            m.insert("preview_output".into(), p);
        }
    }
    m.retain(|_, v| !v.is_null());
    Value::Object(m)
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    const STATUSES: &[&str] = &["pending", "in_progress", "completed", "failed", "cancelled"];
    let wanted: Option<Vec<String>> = match q.get("status") {
        Some(st) if !st.is_empty() => {
            let v: Vec<String> = st.split(',').map(|x| x.trim().to_string()).collect();
            if let Some(bad) = v.iter().find(|x| !STATUSES.contains(&x.as_str())) {
                return Err(ApiError::bad_request(format!("Invalid status: {bad}")));
            }
            Some(v)
        }
        _ => None,
    };
    let sort_by = q.get("sort_by").map(String::as_str).unwrap_or("created_at");
    if !["created_at", "execution_duration"].contains(&sort_by) {
        return Err(ApiError::bad_request(format!("Invalid sort_by: {sort_by}")));
    }
    let desc = match q.get("sort_order").map(String::as_str).unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        o => return Err(ApiError::bad_request(format!("Invalid sort_order: {o}"))),
    };
    let limit = match q.get("limit") {
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(ApiError::bad_request(format!("Invalid limit: {l}"))),
        },
        None => None,
    };
    let offset = match q.get("offset") {
        Some(o) => o
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("Invalid offset: {o}")))?,
        None => 0,
    };
    let workflow_id = q.get("workflow_id").filter(|w| !w.is_empty()).cloned();
    let all = {
        let s = s.clone();
        blocking(move || s.queue.store().all_jobs().map_err(ApiError::from)).await?
    };
    let mut jobs: Vec<(JobRecord, Value)> = all
        .into_iter()
        .map(|j| {
            let v = job_json(&j);
            (j, v)
        })
        .filter(|(j, v)| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|x| x == api_status(j)))
                && workflow_id
                    .as_ref()
                    .is_none_or(|w| v["workflow_id"].as_str() == Some(w.as_str()))
        })
        .collect();
    let key = |v: &Value| -> i64 {
        if sort_by == "execution_duration" {
            match (
                v["execution_start_time"].as_i64(),
                v["execution_end_time"].as_i64(),
            ) {
                (Some(a), Some(b)) => b - a,
                _ => 0,
            }
        } else {
            v["create_time"].as_i64().unwrap_or(0)
        }
    };
    jobs.sort_by_key(|(_, v)| key(v));
    if desc {
        jobs.reverse();
    }
    let total = jobs.len();
    let page: Vec<Value> = jobs
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|(_, v)| v)
        .collect();
    let has_more = offset + page.len() < total;
    Ok(Json(json!({
        "jobs": page,
        "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": has_more},
    })))
}

async fn one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let found = blocking(move || s.queue.store().get(&id).map_err(ApiError::from)).await?;
    let Some(j) = found else {
        return Err(ApiError::not_found("Job not found"));
    };
    let mut v = job_json(&j);
    v["outputs"] = j.outputs.clone();
    v["execution_status"] = j.exec_status.clone();
    v["workflow"] = json!({"prompt": j.prompt, "extra_data": j.extra_data});
    if let Some(e) = &j.error {
        v["error"] = json!(e);
    }
    Ok(Json(v))
}

async fn cancel_one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let cancelled = blocking(move || s.queue.cancel(&id).map_err(ApiError::from)).await?;
    Ok(Json(json!({"cancelled": cancelled})))
}

async fn cancel_many(State(s): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let v = parse_body(&body)?;
    let Some(ids) = v["job_ids"].as_array() else {
        return Err(ApiError::bad_request("'job_ids' must be a list"));
    };
    let mut ids_s = Vec::new();
    for id in ids {
        match id
            .as_str()
            .and_then(|x| uuid::Uuid::parse_str(x).ok().map(|u| (x, u)))
        {
            Some((x, u)) if u.hyphenated().to_string() == x => ids_s.push(x.to_string()),
            _ => return Err(ApiError::bad_request(format!("Invalid job id: {id}"))),
        }
    }
    let any = blocking(move || -> ApiResult<bool> {
        let mut any = false;
        for id in ids_s {
            any |= s.queue.cancel(&id)?;
        }
        Ok(any)
    })
    .await?;
    Ok(Json(json!({"cancelled": any})))
}
