//! §1 Deployments: a saved workflow_api.json with a name, served as an endpoint.
//!
//! Deployments come from files in the deployments folder (`*.json` or `*.toml`: `{id, name,
//! workflow, loras?, description?}`, where `workflow` is an inline graph or a path relative to
//! the file)
//! and from the API, which saves each new deployment there as `{id}.json`. A request applies
//! `overrides` (or replaces the graph with `workflow_api_json`), is validated by the same code
//! as `POST /prompt` and becomes a job; a 400 lists each bad input and queues nothing.

use super::auth::Caller;
use super::errors::{code, SResult, ServerlessError};
use super::openapi::ApiRoute;
use super::requests::{base_url, lookup, request_urls, submit, Family, Lookup, RequestMeta};
use crate::prompt::{apply_registry_overrides, PromptError};
use crate::server::AppState;
use crate::workflow::{overrides_from_json, workflow_from_json};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::RwLock;

/// One deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The API-format graph.
    pub workflow: Value,
    /// The UI-format workflow it was created from, when it was given in that format (kept so
    /// it can be opened in the editor again; `workflow` is its conversion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui_workflow: Option<Value>,
    /// LoRAs attached to every request (`[{path, scale}]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<Value>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub created_at: i64,
    /// The token name that created it through the API: only that token (and admin tokens)
    /// sees, runs and deletes it. `None` for the operator's files: every token sees and runs
    /// those, only admin tokens delete them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Deployment {
    /// Whether `caller` may see and run it.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        caller.admin || self.owner.as_deref().is_none_or(|o| o == caller.owner)
    }
}

/// Where a deployment was defined.
#[derive(Debug, Clone)]
struct Entry {
    deployment: Deployment,
    file: PathBuf,
}

/// The deployments in force, loaded from (and saved to) the deployments folder; with a
/// cluster store, API-created deployments live in the store instead, so every API node sees
/// them (folder files are still read, by each node).
pub struct DeploymentStore {
    dir: PathBuf,
    entries: RwLock<IndexMap<String, Entry>>,
    /// Why files of the folder were skipped at load, each naming the file.
    problems: Vec<String>,
    shared: Option<std::sync::Arc<crate::store::JobStore>>,
}

impl DeploymentStore {
    /// Reads every `*.json` and `*.toml` in `dir` (a missing folder is an empty list; a bad
    /// file is logged and skipped, naming the file and the problem: see
    /// [`DeploymentStore::problems`]).
    pub fn load(dir: &FsPath) -> DeploymentStore {
        let mut entries: IndexMap<String, Entry> = IndexMap::new();
        let mut problems = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for f in files {
            match read_deployment_file(&f) {
                Ok(d) => {
                    if let Some(first) = entries.get(&d.id) {
                        let p = format!(
                            "{}: deployment {:?} is already defined by {}; the first file wins",
                            f.display(),
                            d.id,
                            first.file.display()
                        );
                        tracing::warn!("{p}");
                        problems.push(p);
                        continue;
                    }
                    entries.insert(
                        d.id.clone(),
                        Entry {
                            deployment: d,
                            file: f,
                        },
                    );
                }
                Err(e) => {
                    let p = format!("{}: {e}", f.display());
                    tracing::warn!("skipping deployment file {p}");
                    problems.push(p);
                }
            }
        }
        DeploymentStore {
            dir: dir.to_path_buf(),
            entries: RwLock::new(entries),
            problems,
            shared: None,
        }
    }

    /// Keeps API-created deployments in `store` (a cluster's shared store).
    pub fn shared_in(mut self, store: std::sync::Arc<crate::store::JobStore>) -> Self {
        self.shared = Some(store);
        self
    }

    fn from_store(text: &str) -> Option<Deployment> {
        serde_json::from_str(text)
            .map_err(|e| tracing::warn!("a stored deployment does not parse: {e}"))
            .ok()
    }

    /// Why files were skipped at load (`<file>: <reason>`), in file-name order.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub fn get(&self, id: &str) -> Option<Deployment> {
        let found = {
            let e = self.entries.read().unwrap_or_else(|e| e.into_inner());
            e.get(id).map(|e| e.deployment.clone())
        };
        found.or_else(|| {
            let text = self.shared.as_ref()?.deployment(id).ok()??;
            Self::from_store(&text)
        })
    }

    pub fn list(&self) -> Vec<Deployment> {
        let mut all: Vec<Deployment> = {
            let e = self.entries.read().unwrap_or_else(|e| e.into_inner());
            e.values().map(|e| e.deployment.clone()).collect()
        };
        if let Some(store) = &self.shared {
            match store.deployments() {
                Ok(rows) => {
                    for d in rows.iter().filter_map(|t| Self::from_store(t)) {
                        if !all.iter().any(|x| x.id == d.id) {
                            all.push(d);
                        }
                    }
                }
                Err(e) => tracing::error!("cannot list stored deployments: {e}"),
            }
        }
        all
    }

    /// Saves a new deployment as `{dir}/{id}.json` (in the shared store, in a cluster).
    pub fn create(&self, d: Deployment) -> std::io::Result<()> {
        if let Some(store) = &self.shared {
            let text = serde_json::to_string(&d).map_err(std::io::Error::other)?;
            return match store.save_deployment(&d.id, &text) {
                Ok(true) => Ok(()),
                Ok(false) => Err(std::io::Error::other(format!(
                    "deployment id {:?} exists",
                    d.id
                ))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
        }
        std::fs::create_dir_all(&self.dir)?;
        let file = self.dir.join(format!("{}.json", d.id));
        let text = serde_json::to_vec_pretty(&d).map_err(std::io::Error::other)?;
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &file)?;
        let mut e = self.entries.write().unwrap_or_else(|e| e.into_inner());
        e.insert(
            d.id.clone(),
            Entry {
                deployment: d,
                file,
            },
        );
        Ok(())
    }

    /// Removes a deployment and its file. `Ok(false)` when there is none.
    pub fn delete(&self, id: &str) -> std::io::Result<bool> {
        let mut e = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = e.get(id) else {
            return match &self.shared {
                Some(store) => store
                    .delete_deployment(id)
                    .map_err(|e| std::io::Error::other(e.to_string())),
                None => Ok(false),
            };
        };
        match std::fs::remove_file(&entry.file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        e.shift_remove(id);
        Ok(true)
    }
}

/// Reads one deployment file (JSON or TOML, by extension); `workflow` may be a path relative
/// to the file (a JSON or TOML graph).
fn read_deployment_file(path: &FsPath) -> Result<Deployment, String> {
    let mut v = read_document(path)?;
    if let Some(rel) = v.get("workflow").and_then(Value::as_str) {
        let wf_path = path.parent().unwrap_or(FsPath::new(".")).join(rel);
        v["workflow"] = read_document(&wf_path)
            .map_err(|e| format!("workflow file {}: {e}", wf_path.display()))?;
    }
    let d: Deployment = serde_json::from_value(v)
        .map_err(|e| format!("expected {{id, name, workflow, loras?, description?}}: {e}"))?;
    workflow_from_json(d.workflow.clone()).map_err(|e| format!("workflow: {e}"))?;
    Ok(d)
}

/// A JSON or TOML file (by extension) as a JSON value (the caller names the file in errors).
fn read_document(path: &FsPath) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|x| x == "toml") {
        toml::from_str::<Value>(&text).map_err(|e| {
            // toml's message spans several lines (a source excerpt); keep it on one.
            let msg = e.message().trim().to_string();
            match e.span().map(|s| line_col(&text, s.start)) {
                Some((l, c)) => format!("not TOML: {msg} at line {l} column {c}"),
                None => format!("not TOML: {msg}"),
            }
        })
    } else {
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
    }
}

/// 1-based line and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The deployments routes (the router and the OpenAPI document are built from this).
pub fn api() -> Vec<ApiRoute> {
    const T: &str = "Deployments";
    let mut v = vec![
        ApiRoute::new(
            "POST",
            "/prod/v1/deployments",
            T,
            "Create a deployment from a workflow_api.json",
            post(create),
        )
        .body("DeploymentCreate")
        .returns_status(201, "Deployment"),
        ApiRoute::new(
            "GET",
            "/prod/v1/deployments",
            T,
            "List deployments",
            get(list),
        )
        .returns("DeploymentList"),
        ApiRoute::new(
            "GET",
            "/prod/v1/deployments/{deployment_id}",
            T,
            "One deployment with its graph",
            get(show),
        )
        .returns("DeploymentDetail"),
        ApiRoute::new(
            "DELETE",
            "/prod/v1/deployments/{deployment_id}",
            T,
            "Delete a deployment (and its file)",
            delete(remove),
        )
        .returns("DeploymentDeleted"),
        ApiRoute::new(
            "GET",
            "/prod/v1/deployments/{deployment_id}/schema",
            T,
            "The overridable inputs with their declarations",
            get(schema),
        )
        .returns("DeploymentSchema"),
    ];
    for ver in ["v1", "v2"] {
        let p = format!("/prod/{ver}/deployments/{{deployment_id}}");
        v.push(
            ApiRoute::new(
                "POST",
                format!("{p}/inference"),
                T,
                "Submit a request: overrides or workflow_api_json, webhook",
                post(inference),
            )
            .body("DeploymentInference")
            .returns("RequestHandle")
            .query(
                "webhook",
                super::schemas::uri(),
                "Webhook URL (wins over the body's)",
            )
            .query(
                "webhook_intermediate_status",
                super::schemas::boolean(),
                "Also send in_queue/in_progress events (wins over the body's)",
            ),
        );
        v.push(
            ApiRoute::new(
                "GET",
                format!("{p}/requests/{{request_id}}/status"),
                T,
                "Request status, queue position, progress",
                get(status),
            )
            .returns("RequestStatus"),
        );
        v.push(
            ApiRoute::new(
                "GET",
                format!("{p}/requests/{{request_id}}/result"),
                T,
                "Request result: outputs with URLs, or the error",
                get(result),
            )
            .returns("RequestResult"),
        );
        v.push(
            ApiRoute::new(
                "POST",
                format!("{p}/requests/{{request_id}}/cancel"),
                T,
                "Cancel a queued or running request",
                post(cancel_route),
            )
            .returns("CancelResult"),
        );
    }
    v
}

/// The bodies of the deployments routes (OpenAPI components).
pub fn schemas() -> Vec<super::schemas::Named> {
    use super::schemas::*;
    let graph = reference("ApiGraph");
    let loras = described(
        array(reference("LoraRef")),
        "LoRAs applied to every request (files under models/loras)",
    );
    let deployment = |detail: bool| {
        let mut props = vec![
            ("deployment_id", string()),
            ("name", string()),
            ("description", nullable(string())),
            ("loras", loras.clone()),
            ("created_at", nullable(timestamp())),
        ];
        let mut required = vec![
            "deployment_id",
            "name",
            "description",
            "loras",
            "created_at",
        ];
        if detail {
            props.push(("workflow_api_json", graph.clone()));
            required.push("workflow_api_json");
        }
        object(&required, props)
    };
    vec![
        (
            "ApiGraph",
            described(
                map_of(open_object(
                    &["class_type", "inputs"],
                    vec![
                        ("class_type", string()),
                        (
                            "inputs",
                            described(
                                map_of(any()),
                                "Literal values, or links [node_id, output_index]",
                            ),
                        ),
                        ("_meta", open_object(&[], vec![("title", string())])),
                    ],
                )),
                "An API-format workflow (Workflow > Export (API)), keyed by node id",
            ),
        ),
        (
            "LoraRef",
            object(
                &["path"],
                vec![
                    ("path", described(string(), "File name under models/loras")),
                    ("scale", described(number(), "Strength (default 1.0)")),
                ],
            ),
        ),
        (
            "DeploymentCreate",
            super::bodies::schema_of::<super::bodies::CreateDeployment>(),
        ),
        ("Deployment", deployment(false)),
        ("DeploymentDetail", deployment(true)),
        (
            "DeploymentList",
            object(
                &["deployments"],
                vec![("deployments", array(reference("Deployment")))],
            ),
        ),
        (
            "DeploymentDeleted",
            object(
                &["deployment_id", "deleted"],
                vec![
                    ("deployment_id", string()),
                    ("deleted", json!({"const": true})),
                ],
            ),
        ),
        (
            "DeploymentSchema",
            object(
                &["deployment_id", "nodes"],
                vec![
                    ("deployment_id", string()),
                    (
                        "nodes",
                        map_of(object(
                            &["class_type", "inputs"],
                            vec![
                                ("class_type", string()),
                                ("title", string()),
                                (
                                    "inputs",
                                    map_of(object(
                                        &["value"],
                                        vec![
                                            ("value", described(any(), "The saved value")),
                                            (
                                                "config",
                                                described(
                                                    array(any()),
                                                    "The input's object_info declaration",
                                                ),
                                            ),
                                            (
                                                "media",
                                                described(
                                                    boolean(),
                                                    "Takes a URL, data URI or base64",
                                                ),
                                            ),
                                        ],
                                    )),
                                ),
                            ],
                        )),
                    ),
                ],
            ),
        ),
        (
            "DeploymentInference",
            super::bodies::schema_of::<super::bodies::DeploymentRun>(),
        ),
    ]
}

/// The deployment `id` if `caller` may see it (others get the same 404 as for an unknown id).
fn visible(state: &AppState, caller: &Caller, id: &str) -> Option<Deployment> {
    state
        .serverless
        .deployments
        .get(id)
        .filter(|d| d.visible_to(caller))
}

fn not_found(id: &str) -> ServerlessError {
    ServerlessError::not_found(
        code::DEPLOYMENT_NOT_FOUND,
        format!("no deployment {id:?}; GET /prod/v1/deployments lists them"),
    )
}

fn deployment_json(d: &Deployment) -> Value {
    json!({
        "deployment_id": d.id,
        "name": d.name,
        "description": d.description,
        "loras": d.loras,
        "created_at": super::requests::iso_time(d.created_at),
    })
}

/// A UI-format workflow (what the editor saves) is converted to API format as the editor's
/// Export (API) does; the original is returned too, to be kept. API format passes through.
fn from_ui_format(state: &AppState, given: Value) -> SResult<(Value, Option<Value>)> {
    if !crate::workflow::ui::is_ui_workflow(&given) {
        return Ok((given, None));
    }
    let registry = state.queue.registry();
    let env = state.queue.env();
    let info = |class: &str| registry.schema(class).map(|s| s.object_info(env));
    match crate::workflow::ui::convert_ui_workflow(&given, &info) {
        Ok(c) => Ok((c.prompt, Some(given))),
        Err(e) => Err(ServerlessError::bad_request(
            code::INVALID_WORKFLOW,
            format!("workflow_api_json (a UI-format workflow): {e}"),
        )
        .with_details(e.to_comfy_json())),
    }
}

/// Checks a graph is a workflow whose classes all exist (full validation happens per request,
/// when model files and overrides are known).
fn check_graph(state: &AppState, graph: &Value, what: &str) -> SResult<()> {
    let wf = workflow_from_json(graph.clone()).map_err(|e| {
        ServerlessError::bad_request(code::INVALID_WORKFLOW, format!("{what}: {e}"))
    })?;
    for (id, node) in &wf.nodes {
        if state.queue.registry().schema(&node.class_type).is_none() {
            return Err(ServerlessError::bad_request(
                code::INVALID_WORKFLOW,
                format!(
                    "{what}: node {id} has class_type {:?}, which this server does not have (GET /object_info lists the classes)",
                    node.class_type
                ),
            )
            .with_details(json!({"errors": [{"node_id": id, "class_type": node.class_type, "input": null, "reason": "unknown class_type"}]})));
        }
    }
    Ok(())
}

/// The deployment's attached LoRAs, checked to exist under models/loras.
fn check_loras(state: &AppState, loras: &[Value]) -> SResult<Vec<super::loras::LoraSpec>> {
    let specs = super::loras::parse_list("loras", loras)?;
    super::loras::check_exist(state.queue.env(), &specs)?;
    Ok(specs)
}

async fn create(State(state): State<AppState>, caller: Caller, body: Bytes) -> Response {
    let run = || -> SResult<Deployment> {
        let b: super::bodies::CreateDeployment = super::bodies::parse(&body)?;
        if b.name.trim().is_empty() {
            return Err(ServerlessError::bad_request(
                code::INVALID_REQUEST,
                "name: a non-empty string is required",
            ));
        }
        let (workflow, ui_workflow) = from_ui_format(&state, b.workflow_api_json)?;
        check_graph(&state, &workflow, "workflow_api_json")?;
        let loras = b.loras.unwrap_or_default();
        check_loras(&state, &loras)?;
        Ok(Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            name: b.name,
            description: b.description,
            workflow,
            ui_workflow,
            loras,
            created_at: chrono::Utc::now().timestamp_millis(),
            owner: Some(caller.owner.clone()),
        })
    };
    let d = match run() {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.serverless.deployments.create(d.clone()) {
        return ServerlessError::internal(format!("cannot save the deployment: {e}"))
            .into_response();
    }
    (StatusCode::CREATED, Json(deployment_json(&d))).into_response()
}

async fn list(State(state): State<AppState>, caller: Caller) -> Response {
    let all: Vec<Value> = state
        .serverless
        .deployments
        .list()
        .iter()
        .filter(|d| d.visible_to(&caller))
        .map(deployment_json)
        .collect();
    Json(json!({ "deployments": all })).into_response()
}

async fn show(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    match visible(&state, &caller, &id) {
        Some(d) => {
            let mut j = deployment_json(&d);
            j["workflow_api_json"] = d.workflow.clone();
            if let Some(ui) = &d.ui_workflow {
                j["ui_workflow"] = ui.clone();
            }
            Json(j).into_response()
        }
        None => not_found(&id).into_response(),
    }
}

async fn remove(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let Some(d) = visible(&state, &caller, &id) else {
        return not_found(&id).into_response();
    };
    if !caller.admin && d.owner.as_deref() != Some(caller.owner.as_str()) {
        return ServerlessError::new(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            format!(
                "deployment {id:?} comes from the deployments folder; only an admin token may \
                 delete it"
            ),
        )
        .into_response();
    }
    match state.serverless.deployments.delete(&id) {
        Ok(true) => Json(json!({"deployment_id": id, "deleted": true})).into_response(),
        Ok(false) => not_found(&id).into_response(),
        Err(e) => ServerlessError::internal(format!("cannot delete the deployment file: {e}"))
            .into_response(),
    }
}

/// The overridable inputs: every literal input of every node, with its current value and
/// its declaration from object_info (`[type_or_choices, options]`).
async fn schema(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let Some(d) = visible(&state, &caller, &id) else {
        return not_found(&id).into_response();
    };
    let wf = match workflow_from_json(d.workflow.clone()) {
        Ok(w) => w,
        Err(e) => {
            return ServerlessError::internal(format!("deployment {id} workflow: {e}"))
                .into_response()
        }
    };
    let registry = state.queue.registry();
    let env = state.queue.env();
    let mut nodes = Map::new();
    for (node_id, node) in &wf.nodes {
        let schema = registry.schema(&node.class_type);
        let mut inputs = Map::new();
        for (name, value) in &node.inputs {
            if value.is_array() {
                continue; // a link, not a value
            }
            let spec = schema.and_then(|s| s.input_spec(name).map(|i| (s, i)));
            let mut entry = json!({"value": value});
            if let Some((s, i)) = spec {
                entry["config"] = s.input_config(i, env);
                entry["media"] = json!(i.options.get("image_upload") == Some(&json!(true)));
            }
            inputs.insert(name.clone(), entry);
        }
        let mut n = json!({"class_type": node.class_type, "inputs": inputs});
        if let Some(t) = wf.title(node_id) {
            n["title"] = json!(t);
        }
        nodes.insert(node_id.clone(), n);
    }
    Json(json!({"deployment_id": id, "nodes": nodes})).into_response()
}

/// `POST .../inference`: `overrides` or `workflow_api_json`, `webhook`,
/// `webhook_intermediate_status` (the query wins over the body for the webhook fields).
async fn inference(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    match inference_inner(&state, &caller, &headers, &id, &query, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn inference_inner(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> SResult<Value> {
    let d = visible(state, caller, id).ok_or_else(|| not_found(id))?;
    let lora_specs = check_loras(state, &d.loras)?;
    let b: super::bodies::DeploymentRun = super::bodies::parse(body)?;
    let graph = b.workflow_api_json.unwrap_or_else(|| d.workflow.clone());
    let mut workflow = workflow_from_json(graph).map_err(|e| {
        ServerlessError::bad_request(code::INVALID_WORKFLOW, format!("workflow_api_json: {e}"))
    })?;
    let overrides = match &b.overrides {
        None => Default::default(),
        Some(o) => overrides_from_json(o).map_err(|e| {
            ServerlessError::bad_request(code::INVALID_OVERRIDE, format!("overrides: {e}"))
        })?,
    };
    let overridden: Vec<String> = overrides.keys().cloned().collect();
    let registry = state.queue.registry();
    apply_registry_overrides(&mut workflow, &overrides, registry).map_err(|e| {
        super::errors::from_prompt_error(&PromptError::from(e).to_comfy_json(), &overridden)
    })?;
    super::loras::attach(&mut workflow, &lora_specs);
    super::media::resolve_media_inputs(
        &state.serverless.media,
        registry,
        &state.queue.env().paths.input,
        &mut workflow,
    )
    .await?;
    let webhook = query
        .get("webhook")
        .cloned()
        .or(b.webhook)
        .filter(|w| !w.is_empty());
    let intermediate = match query.get("webhook_intermediate_status") {
        Some(v) => matches!(v.as_str(), "true" | "1" | "True"),
        None => b.webhook_intermediate_status.unwrap_or(false),
    };
    let base = base_url(state, headers);
    let meta = RequestMeta {
        family: Family::Deployments,
        deployment_id: Some(d.id.clone()),
        webhook,
        webhook_intermediate_status: intermediate,
        base_url: base.clone(),
        extra: Value::Null,
    };
    let rid = submit(state, caller, workflow.to_json(), meta.clone(), &overridden).await?;
    let mut out = Map::new();
    out.insert("request_id".into(), json!(rid));
    out.extend(request_urls(&base, &meta, &rid));
    Ok(Value::Object(out))
}

async fn status(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((dep, rid)): Path<(String, String)>,
) -> SResult<Json<Value>> {
    let base = base_url(&state, &headers);
    lookup(state, caller, base, rid, Some(dep), Lookup::Status).await
}

async fn result(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((dep, rid)): Path<(String, String)>,
) -> SResult<Json<Value>> {
    let base = base_url(&state, &headers);
    lookup(state, caller, base, rid, Some(dep), Lookup::Result).await
}

async fn cancel_route(
    State(state): State<AppState>,
    caller: Caller,
    Path((dep, rid)): Path<(String, String)>,
) -> SResult<Json<Value>> {
    lookup(state, caller, String::new(), rid, Some(dep), Lookup::Cancel).await
}
