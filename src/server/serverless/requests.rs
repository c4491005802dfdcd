//! The request lifecycle every serverless family shares: a request is a job on the one queue
//! whose `extra_data.serverless` holds its [`RequestMeta`]; status, result and cancel read the
//! job store. A request is visible only to the owner whose token created it (others get the
//! same 404 as for an unknown id).

use super::auth::Caller;
use super::errors::{code, from_prompt_error, SResult, ServerlessError};
use super::results::{aitk_result_parts, outputs_with_urls};
use crate::queue::{Submission, SubmitError};
use crate::server::AppState;
use crate::store::{JobRecord, JobStatus};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Which API a request came through; decides its URLs and status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// §1 `/prod/v1/deployments/...`
    Deployments,
    /// §2 `/v1/models/...`
    Models,
    /// §3 ai-toolkit `/v1/inference`
    Inference,
}

impl Family {
    /// The job store's `source` for this family.
    pub fn source(self) -> &'static str {
        match self {
            Family::Deployments => "deployments",
            Family::Models => "models",
            Family::Inference => "inference",
        }
    }

    /// The family's word for a job status (spec §1, §2, §3).
    pub fn status_word(self, s: JobStatus) -> &'static str {
        match (s, self) {
            (JobStatus::Pending, _) => "in_queue",
            (JobStatus::Running, _) => "in_progress",
            (JobStatus::Success, Family::Models) => "completed",
            (JobStatus::Success, _) => "succeeded",
            (JobStatus::Failed, _) => "failed",
            (JobStatus::Interrupted | JobStatus::Cancelled, Family::Inference) => "canceled",
            (JobStatus::Interrupted | JobStatus::Cancelled, _) => "cancelled",
        }
    }
}

/// What a serverless request carries besides its graph (stored in `extra_data.serverless`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestMeta {
    pub family: Family,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(default)]
    pub webhook_intermediate_status: bool,
    /// The base URL the client used, for URLs in webhook bodies.
    pub base_url: String,
    /// Family-specific facts to report back (e.g. the seeds drawn).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub extra: Value,
}

impl RequestMeta {
    pub fn of(job: &JobRecord) -> Option<RequestMeta> {
        serde_json::from_value(job.extra_data.get("serverless")?.clone()).ok()
    }
}

/// The base of the URLs handed out: the configured public URL, else `http://{Host}`.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.serverless.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// `status_url`, `result_url` and `cancel_url` of a request.
pub fn request_urls(base: &str, meta: &RequestMeta, id: &str) -> Map<String, Value> {
    let prefix = match (&meta.family, &meta.deployment_id) {
        (Family::Deployments, Some(d)) => format!("{base}/prod/v1/deployments/{d}/requests/{id}"),
        _ => format!("{base}/v1/requests/{id}"),
    };
    let mut m = Map::new();
    m.insert("status_url".into(), json!(format!("{prefix}/status")));
    m.insert("result_url".into(), json!(format!("{prefix}/result")));
    m.insert("cancel_url".into(), json!(format!("{prefix}/cancel")));
    m
}

/// Queues a request: refuses with 429 when the queue is full, validates the graph (400 with
/// the problems listed, nothing queued), records the `in_queue` webhook when asked.
/// Returns the new request id (a random UUIDv4).
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    prompt: Value,
    meta: RequestMeta,
    overridden: &[String],
) -> SResult<String> {
    let cfg = &state.serverless.config;
    let queue = state.queue.clone();
    let depth = {
        let q = queue.clone();
        crate::server::blocking(move || q.store().pending_count().map_err(ServerlessError::from))
            .await?
    };
    if depth >= cfg.max_queue_depth {
        let mut e = ServerlessError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::QUEUE_FULL,
            format!(
                "the queue is full ({depth} requests waiting, limit {}); retry later",
                cfg.max_queue_depth
            ),
        );
        e.retry_after_s = Some(cfg.retry_after_s);
        return Err(e);
    }
    if let Some(w) = &meta.webhook {
        state.serverless.webhooks.check_target(w).await?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut extra = Map::new();
    extra.insert(
        "serverless".into(),
        serde_json::to_value(&meta).map_err(ServerlessError::internal)?,
    );
    let sub = Submission {
        prompt,
        prompt_id: Some(id.clone()),
        extra_data: extra,
        // Routes the job's events (execution_start, completion) to the event channel, where
        // the webhook recorder listens.
        client_id: Some(id.clone()),
        owner: Some(caller.owner.clone()),
        source: meta.family.source().to_string(),
        ..Default::default()
    };
    let q = queue.clone();
    let res = tokio::task::spawn_blocking(move || q.submit(sub)).await?;
    match res {
        Ok(_) => {}
        Err(SubmitError::Invalid(body)) => {
            let mut e = from_prompt_error(&body, overridden);
            super::errors::fill_allowed(&mut e, queue.registry(), queue.env());
            return Err(e);
        }
        Err(SubmitError::Store(e)) => return Err(e.into()),
        Err(SubmitError::OverCeiling(e)) => return Err(over_ceiling(&e)),
    }
    let hooks = state.serverless.webhooks.clone();
    let rid = id.clone();
    crate::server::blocking(move || {
        hooks.record_status(&rid, JobStatus::Pending, &meta);
        Ok::<_, ServerlessError>(())
    })
    .await?;
    Ok(id)
}

/// 503 with `Retry-After`: `--max-memory` would be crossed.
pub fn over_ceiling(e: &crate::queue::memory::OverCeiling) -> ServerlessError {
    let mut err = ServerlessError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        super::errors::code::OVER_MEMORY_CEILING,
        e.to_string(),
    );
    err.retry_after_s = Some(10);
    err
}

/// The caller's request `id` of `family` (and `deployment_id` for §1). Anything else, a
/// request of another owner included, is the same 404.
pub fn load_owned(
    state: &AppState,
    caller: &Caller,
    id: &str,
    deployment_id: Option<&str>,
) -> SResult<(JobRecord, RequestMeta)> {
    let not_found = || {
        ServerlessError::not_found(
            code::REQUEST_NOT_FOUND,
            format!("no request {id:?} for this token"),
        )
    };
    let job = state.queue.store().get(id)?.ok_or_else(not_found)?;
    let meta = RequestMeta::of(&job).ok_or_else(not_found)?;
    if job.owner.as_deref() != Some(caller.owner.as_str()) {
        return Err(not_found());
    }
    if let Some(d) = deployment_id {
        if meta.deployment_id.as_deref() != Some(d) {
            return Err(not_found());
        }
    }
    if let Some(at) = state.queue.store().expired_at(id)? {
        let days = state.serverless.config.retention.as_secs_f64() / 86400.0;
        return Err(ServerlessError::not_found(
            code::REQUEST_EXPIRED,
            format!(
                "request {id} finished more than {days} days ago; its results and files were deleted at {} (retention period)",
                iso_time(at).as_str().unwrap_or("?")
            ),
        ));
    }
    Ok((job, meta))
}

/// ISO-8601 UTC without offset, microseconds (the hosted services' format).
pub fn iso_time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()))
        .unwrap_or(Value::Null)
}

/// `GET .../status`.
pub fn status_body(state: &AppState, base: &str, job: &JobRecord, meta: &RequestMeta) -> Value {
    let mut b = Map::new();
    b.insert("request_id".into(), json!(job.id));
    b.insert("status".into(), json!(meta.family.status_word(job.status)));
    match job.status {
        JobStatus::Pending => {
            let pos = state.queue.store().queue_position(&job.id).ok().flatten();
            b.insert("queue_position".into(), json!(pos));
        }
        JobStatus::Running => {
            if let Some(r) = state.queue.running_job(&job.id) {
                let (value, max) = r.progress.unwrap_or((0, 0));
                b.insert(
                    "progress".into(),
                    json!({"node": r.node, "value": value, "max": max}),
                );
            }
        }
        _ => {}
    }
    b.extend(request_urls(base, meta, &job.id));
    b.remove("cancel_url");
    add_times(&mut b, job);
    Value::Object(b)
}

fn add_times(b: &mut Map<String, Value>, job: &JobRecord) {
    b.insert("created_at".into(), iso_time(job.created_at));
    if let Some(t) = job.started_at {
        b.insert("started_at".into(), iso_time(t));
    }
    if let Some(t) = job.finished_at {
        b.insert("finished_at".into(), iso_time(t));
    }
}

/// `GET .../result` (and the body of final webhook events): the status, and when finished the
/// outputs with hosted URLs, or the error.
pub fn result_body(base: &str, job: &JobRecord, meta: &RequestMeta) -> Value {
    let mut b = Map::new();
    b.insert("request_id".into(), json!(job.id));
    b.insert("status".into(), json!(meta.family.status_word(job.status)));
    if meta.family == Family::Inference {
        // ai-toolkit's shape: outputs {images, videos}, metadata.timings.
        let (outputs, metadata) = aitk_result_parts(base, job, &meta.extra);
        if job.status == JobStatus::Success {
            b.insert("outputs".into(), outputs);
        }
        b.insert("metadata".into(), metadata);
    } else {
        if job.status == JobStatus::Success {
            b.insert(
                "outputs".into(),
                outputs_with_urls(base, &job.id, &job.outputs),
            );
        }
        if !meta.extra.is_null() {
            b.insert("metadata".into(), meta.extra.clone());
        }
    }
    if job.status == JobStatus::Failed {
        b.insert("error".into(), error_object(job));
    }
    add_times(&mut b, job);
    Value::Object(b)
}

/// `{type, message, node_id?, class_type?}` from the job's `execution_error` message.
fn error_object(job: &JobRecord) -> Value {
    let data = job.exec_status["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m[0] == "execution_error")
        .map(|m| m[1].clone())
        .unwrap_or(Value::Null);
    let mut e = json!({
        "type": data["exception_type"].as_str().unwrap_or("error"),
        // ComfyUI's messages end with a newline; an API error message does not.
        "message": data["exception_message"].as_str().map(str::trim_end)
            .or(job.error.as_deref()).unwrap_or("failed"),
    });
    if let Some(n) = data["node_id"].as_str() {
        e["node_id"] = json!(n);
    }
    if let Some(c) = data["node_type"].as_str() {
        e["class_type"] = json!(c);
    }
    e
}

/// Cancels a request: a queued one is removed, a running one interrupted at the next step;
/// a finished one is a 409.
pub fn cancel(state: &AppState, job: &JobRecord, meta: &RequestMeta) -> SResult<Value> {
    let done = |status: JobStatus| {
        ServerlessError::new(
            StatusCode::CONFLICT,
            code::ALREADY_FINISHED,
            format!(
                "request {} already finished ({}); only queued or running requests can be cancelled",
                job.id,
                meta.family.status_word(status)
            ),
        )
    };
    if job.status.is_finished() {
        return Err(done(job.status));
    }
    if !state.queue.cancel(&job.id)? {
        // It finished between the read and the cancel.
        let now = state.queue.store().get(&job.id)?.map(|j| j.status);
        return Err(done(now.unwrap_or(JobStatus::Failed)));
    }
    if job.status == JobStatus::Pending {
        if let Some(j) = state.queue.store().get(&job.id)? {
            state.serverless.webhooks.record_final(&j, meta);
        }
    }
    Ok(json!({
        "request_id": job.id,
        "status": meta.family.status_word(JobStatus::Cancelled),
    }))
}

/// `/v1/requests/{id}/status|result|cancel`: the lookups shared by §2 and §3 (any family's
/// request id works; the owner rule applies).
pub fn api() -> Vec<super::openapi::ApiRoute> {
    use super::openapi::ApiRoute;
    const T: &str = "Requests";
    vec![
        ApiRoute::new(
            "GET",
            "/v1/requests/{id}/status",
            T,
            "Status of any of the caller's requests",
            get(status),
        )
        .returns("RequestStatus"),
        ApiRoute::new(
            "GET",
            "/v1/requests/{id}/result",
            T,
            "Result of any of the caller's requests",
            get(result),
        )
        .returns("RequestResult"),
        ApiRoute::new(
            "POST",
            "/v1/requests/{id}/cancel",
            T,
            "Cancel a queued or running request",
            post(cancel_route),
        )
        .returns("CancelResult"),
    ]
}

/// What a status, result or cancel route answers.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    Status,
    Result,
    Cancel,
}

/// Looks the caller's request up and answers `what`, on the blocking pool (every step reads
/// the job store): the one implementation behind `/v1/requests/...` and the deployments'
/// `.../requests/...` routes.
pub async fn lookup(
    state: AppState,
    caller: Caller,
    base: String,
    id: String,
    deployment_id: Option<String>,
    what: Lookup,
) -> SResult<Json<Value>> {
    crate::server::blocking(move || {
        let (job, meta) = load_owned(&state, &caller, &id, deployment_id.as_deref())?;
        match what {
            Lookup::Status => Ok(status_body(&state, &base, &job, &meta)),
            Lookup::Result => Ok(result_body(&base, &job, &meta)),
            Lookup::Cancel => cancel(&state, &job, &meta),
        }
    })
    .await
    .map(Json)
}

async fn status(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> SResult<Json<Value>> {
    let base = base_url(&state, &headers);
    lookup(state, caller, base, id, None, Lookup::Status).await
}

async fn result(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> SResult<Json<Value>> {
    let base = base_url(&state, &headers);
    lookup(state, caller, base, id, None, Lookup::Result).await
}

async fn cancel_route(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> SResult<Json<Value>> {
    lookup(state, caller, String::new(), id, None, Lookup::Cancel).await
}
