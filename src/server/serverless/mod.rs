//! The serverless route families of the hosted services users come from
//! (spec: serverless-api.md). Every family translates requests into jobs on the one
//! [`JobQueue`](crate::queue::JobQueue) and reads them back from the one job store; none
//! executes anything itself.
//!
//! - [`config`]: tokens, deployments folder, webhook policy, limits.
//! - [`auth`]: Bearer tokens -> the owner of a request; the route guard.
//! - [`bodies`]: typed request bodies (a wrong type or unknown field is a 400 naming it).
//! - [`catalog`], [`downloads`]: §4, the LoRA catalog admin (`/api/admin/...`, X-API-Key).
//! - [`errors`]: JSON errors with stable codes; ComfyUI validation errors -> field lists.
//! - [`requests`]: the shared request lifecycle: submit, status, result, cancel, ownership.
//! - [`schemas`]: JSON Schema building blocks and the bodies every family shares (OpenAPI).
//! - [`results`]: output parts of result bodies (hosted file URLs, the ai-toolkit shape).
//! - [`outputs`]: the route that serves output files.
//! - [`deployments`]: §1, saved workflows as endpoints (`/prod/v1|v2/deployments/...`).
//! - [`inference`]: §3, the ai-toolkit inference API (`/health`, `/v1/models`, `/v1/inference`).
//! - [`loras`]: LoraLoader chains for the Model API's `lora`/`loras` and deployments' `loras`.
//! - [`media`]: media inputs by URL (SSRF-guarded) or base64, stored by content hash.
//! - [`models`]: §2, the Model API on built-in pipelines (`/v1/models/{model_id}`).
//! - [`bases`]: the base checkpoint of each model family (sd15, sdxl, flux) and its presence.
//! - [`openapi`]: route tables -> the router and `/openapi.json` (+ `/docs`).
//! - [`ssrf`]: the address guard of client-given URLs (media inputs, webhook receivers).
//! - [`webhooks`]: §5, signed, retried, persisted event deliveries for every family.

pub mod auth;
pub mod bases;
pub mod bodies;
pub mod catalog;
pub mod config;
pub mod deployments;
pub mod downloads;
pub mod errors;
pub mod inference;
pub mod loras;
pub mod media;
pub mod models;
pub mod openapi;
pub mod outputs;
pub mod requests;
pub mod results;
pub mod schemas;
pub mod ssrf;
pub mod webhooks;

pub use config::{ApiToken, FluxFiles, ServerlessConfig, WebhookPolicy};

use crate::queue::JobQueue;
use crate::server::AppState;
use axum::http::StatusCode;
use axum::Router;
use errors::{code, ServerlessError};
use std::sync::Arc;
use tokio::sync::watch;

/// The shared state of the serverless families.
pub struct Serverless {
    pub config: ServerlessConfig,
    /// The tokens in force (the config's, and the server's token as "default").
    tokens: Vec<ApiToken>,
    /// Owners with admin rights.
    admins: Vec<String>,
    pub deployments: deployments::DeploymentStore,
    pub webhooks: Arc<webhooks::Webhooks>,
    pub media: media::MediaFetcher,
    pub downloads: Arc<downloads::Downloads>,
    queue: Arc<JobQueue>,
}

impl Serverless {
    /// Loads the deployments folder and prepares the webhook machinery (started by
    /// [`Serverless::spawn_tasks`]).
    pub fn new(
        config: ServerlessConfig,
        server_token: Option<&str>,
        queue: Arc<JobQueue>,
    ) -> Serverless {
        let mut tokens = config.tokens.clone();
        let mut admins = config.admins.clone();
        if let Some(t) = server_token {
            tokens.push(ApiToken {
                name: SERVER_TOKEN_OWNER.into(),
                token: t.to_string(),
            });
            admins.push(SERVER_TOKEN_OWNER.into());
        }
        let mut deployments = deployments::DeploymentStore::load(&config.deployments_dir);
        if queue.store().backend() != "sqlite" {
            deployments = deployments.shared_in(queue.store().clone());
        }
        let webhooks = Arc::new(webhooks::Webhooks::new(
            config.webhooks.clone(),
            queue.clone(),
        ));
        let media = media::MediaFetcher::new(config.media.clone());
        Serverless {
            downloads: downloads::Downloads::new(queue.store().clone()),
            queue,
            media,
            config,
            tokens,
            admins,
            deployments,
            webhooks,
        }
    }

    /// Starts the background work (webhook recorder and dispatcher, retention sweeps); it
    /// ends when `stop` turns true.
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let hooks = self.webhooks.spawn(stop.clone());
        let downloads = tokio::spawn(self.downloads.clone().run(stop.clone()));
        let this = self.clone();
        let sweeper = tokio::spawn(async move {
            let mut stop = stop;
            loop {
                let now = chrono::Utc::now().timestamp_millis();
                let this2 = this.clone();
                let _ = tokio::task::spawn_blocking(move || this2.expire_before(now)).await;
                tokio::select! {
                    _ = tokio::time::sleep(this.config.retention_sweep) => {}
                    _ = stop.wait_for(|v| *v) => return,
                }
            }
        });
        tokio::spawn(async move {
            let _ = hooks.await;
            let _ = sweeper.await;
            let _ = downloads.await;
        })
    }

    /// Deletes the results and output files of requests that finished more than the retention
    /// period before `now_ms`; returns how many requests expired.
    pub fn expire_before(&self, now_ms: i64) -> usize {
        let cutoff = now_ms - self.config.retention.as_millis() as i64;
        let sources = [
            requests::Family::Deployments.source(),
            requests::Family::Models.source(),
            requests::Family::Inference.source(),
        ];
        let expired = match self.queue.store().expire_finished(&sources, cutoff) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("retention sweep: {e}");
                return 0;
            }
        };
        let env = self.queue.env();
        if let Some(o) = self.queue.objects().cloned() {
            // With --outputs s3://..., the files are objects.
            let keys: Vec<_> = expired
                .iter()
                .flat_map(|(_, files)| files)
                .filter_map(|f| o.key(&f.folder_type, &f.subfolder, &f.filename))
                .collect();
            if !keys.is_empty() {
                tokio::spawn(async move {
                    for k in keys {
                        if let Err(e) = o.delete(&k).await {
                            tracing::warn!("retention: {e}");
                        }
                    }
                });
            }
        }
        for (id, files) in &expired {
            for f in files {
                let Some(dir) = crate::server::paths::type_dir(env, &f.folder_type) else {
                    continue;
                };
                if let Ok(path) =
                    crate::server::paths::resolve_existing_file(&dir, &f.subfolder, &f.filename)
                {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(request = %id, "cannot delete expired {}: {e}", path.display());
                    }
                }
            }
        }
        if !expired.is_empty() {
            tracing::info!("retention: expired {} requests", expired.len());
        }
        expired.len()
    }

    /// The caller a bearer token stands for; 401 when tokens exist and this is none of them,
    /// and when only other credentials (admin keys) exist: a configured credential closes
    /// every route it does not open.
    pub fn caller_of(&self, bearer: Option<&str>) -> Result<auth::Caller, ServerlessError> {
        if self.tokens.is_empty() {
            if !self.config.admin_keys.is_empty() {
                return Err(ServerlessError::new(
                    StatusCode::UNAUTHORIZED,
                    code::UNAUTHORIZED,
                    "this server has no API token for these routes: start it with --api-token \
                     NAME:TOKEN (or --token)",
                ));
            }
            return Ok(auth::Caller {
                owner: auth::ANONYMOUS.to_string(),
                admin: true,
            });
        }
        let Some(b) = bearer else {
            return Err(ServerlessError::new(
                StatusCode::UNAUTHORIZED,
                code::UNAUTHORIZED,
                "missing token: send 'Authorization: Bearer <token>'",
            ));
        };
        self.token_owner(b)
            .map(|owner| auth::Caller {
                admin: self.is_admin(&owner),
                owner,
            })
            .ok_or_else(|| {
                ServerlessError::new(
                    StatusCode::UNAUTHORIZED,
                    code::UNAUTHORIZED,
                    "unknown token: send 'Authorization: Bearer <token>' with a configured API token",
                )
            })
    }

    /// The owner name of a configured token.
    pub fn token_owner(&self, secret: &str) -> Option<String> {
        self.tokens
            .iter()
            .find(|t| auth::same_secret(&t.token, secret))
            .map(|t| t.name.clone())
    }

    /// Whether the owner has admin rights.
    pub fn is_admin(&self, owner: &str) -> bool {
        self.admins.iter().any(|a| a == owner)
    }

    /// Whether a browser session cookie (see `server::frontend::session_value`) was made
    /// from an admin token.
    pub fn admin_session(&self, cookie: &str) -> bool {
        self.tokens.iter().any(|t| {
            self.is_admin(&t.name)
                && auth::same_secret(&crate::server::frontend::session_value(&t.token), cookie)
        })
    }

    /// Whether an admin token exists (it then opens the ComfyUI routes).
    pub fn has_admin_token(&self) -> bool {
        self.tokens.iter().any(|t| self.is_admin(&t.name))
    }

    /// Whether any credential is configured (tokens or admin keys).
    pub fn has_credentials(&self) -> bool {
        !self.tokens.is_empty() || !self.config.admin_keys.is_empty()
    }
}

/// The owner of requests made with the server's `--token`.
pub const SERVER_TOKEN_OWNER: &str = "default";

/// The routes that take a Bearer token.
fn bearer_routes() -> Vec<openapi::ApiRoute> {
    let mut v = deployments::api();
    v.extend(models::api());
    v.extend(inference::api());
    v.extend(requests::api());
    v.extend(outputs::api());
    v
}

/// Every serverless route (what `/openapi.json` describes).
pub fn all_routes() -> Vec<openapi::ApiRoute> {
    let mut v = bearer_routes();
    v.extend(inference::public_api());
    v.extend(docs_api());
    v.extend(catalog::api());
    v
}

/// `GET /openapi.json` and `GET /docs`: here, where every family's routes are known (so
/// [`openapi`] imports none of them).
fn docs_api() -> Vec<openapi::ApiRoute> {
    use axum::routing::get;
    use openapi::{Access, ApiRoute};
    vec![
        ApiRoute::new(
            "GET",
            "/openapi.json",
            "Docs",
            "This OpenAPI document",
            get(openapi_json),
        )
        .access(Access::Public)
        .returns("OpenApiDocument"),
        ApiRoute::new(
            "GET",
            "/docs",
            "Docs",
            "An HTML index of the routes",
            get(docs_page),
        )
        .access(Access::Public)
        .returns_html(),
    ]
}

/// The whole document: every route table, every schema, the Model API's pipeline paths.
pub fn openapi_document(state: &AppState) -> serde_json::Value {
    openapi::document(&all_routes(), all_schemas(), models::openapi_paths(state))
}

async fn openapi_json(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    axum::Json(openapi_document(&state))
}

async fn docs_page(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Html<String> {
    axum::response::Html(openapi::docs_html(&openapi_document(&state)))
}

/// The named schemas of every route's bodies (the OpenAPI document's components).
pub fn all_schemas() -> Vec<schemas::Named> {
    let mut v = schemas::shared();
    v.extend(deployments::schemas());
    v.extend(models::schemas());
    v.extend(inference::schemas());
    v.extend(catalog::schemas());
    v.extend(openapi::schemas());
    v
}

/// Every serverless route: Bearer routes behind [`auth::guard`], admin routes behind the
/// X-API-Key guard, public ones (health, docs) open.
pub fn routes(state: &AppState) -> Router<AppState> {
    let mut public = inference::public_api();
    public.extend(docs_api());
    openapi::router(bearer_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .merge(openapi::router(public))
        .merge(catalog::router(state))
}
