//! ComfyUI's HTTP + WebSocket API on axum (spec: comfyui-api.md §2–§8).
//!
//! - [`config`]: [`ServerConfig`] and the data-dir layout.
//! - [`routes`]: one module per route family (prompt/queue/history, files, info, jobs).
//! - [`ws`]: the `/ws` socket and the binary preview framing.
//! - [`auth`]: bearer token, ComfyUI's origin check or CORS, body size limit.
//! - [`paths`]: safe resolution of user-given file names (/view, /upload).
//! - [`dev_nodes`]: test-only nodes (`--dev-nodes`).
//! - [`pack_web`]: node packs' web assets, locales and example workflows.
//! - [`serverless`]: the hosted services' APIs (deployments, webhooks, ...) on the same queue.
//!
//! Handlers translate HTTP to calls on the one [`JobQueue`]; they never execute. Tests start
//! a server in-process with their own [`Registry`] through [`App::new`] and [`start`].

pub mod auth;
pub mod config;
pub mod dev_nodes;
pub mod error;
pub mod frontend;
pub mod internal;
pub mod logs;
pub mod model_library;
pub mod pack_web;
pub mod paths;
pub mod range;
pub mod routes;
pub mod serverless;
pub mod userdata;
pub mod ws;

pub use config::{DataDir, ServerConfig};

use crate::env::Environment;
use crate::exec::{Executor, ExecutorConfig};
use crate::node::Registry;
use crate::queue::JobQueue;
use crate::store::JobStore;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<JobQueue>,
    pub config: Arc<ServerConfig>,
    /// The serverless families' state (deployments, webhooks, tokens).
    pub serverless: Arc<serverless::Serverless>,
    /// Flips to true when the server shuts down (WebSockets close on it).
    pub shutdown: watch::Receiver<bool>,
}

/// The parts of a server before it listens: the queue (store + executor).
pub struct App {
    pub queue: Arc<JobQueue>,
}

impl App {
    pub fn new(
        registry: Arc<Registry>,
        env: Arc<Environment>,
        store: Arc<JobStore>,
        exec: ExecutorConfig,
    ) -> App {
        let executor = Arc::new(Executor::new(registry, env, exec));
        App {
            queue: JobQueue::new(store, executor),
        }
    }
}

/// The router with every route: ComfyUI's under `/` and `/api/` (behind the ComfyUI guard),
/// and the serverless families (behind their own token guard), each with its own body
/// limit (a chunked body is cut at the limit of its family, not the larger of the two).
/// Every error leaves as JSON ([`error::json_errors`]), whoever produced it.
pub fn router(state: AppState) -> Router {
    let comfy = routes::comfy_routes()
        .merge(userdata::routes())
        .merge(model_library::routes());
    let comfy_all = Router::new()
        .merge(comfy.clone())
        .nest("/api", comfy.merge(routes::jobs::routes()))
        .merge(internal::routes())
        .route("/", axum::routing::get(frontend::index))
        // Frontend files (and the optional templates/docs) after every API route; the JSON
        // 404 for anything else.
        .fallback(frontend::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_upload_bytes,
        ));
    let serverless = serverless::routes(&state).layer(axum::extract::DefaultBodyLimit::max(
        state.config.serverless.max_body_bytes,
    ));
    Router::new()
        .merge(serverless)
        .merge(comfy_all)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            error::memory_guard,
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// Runs blocking work (job-store calls: one SQLite connection behind a mutex, a history of
/// thousands of entries) on tokio's blocking pool, so it never holds an async worker (two on
/// a 2-core machine) while every other connection waits.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static + From<tokio::task::JoinError>,
{
    tokio::task::spawn_blocking(f).await?
}

/// A server that is listening.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub queue: Arc<JobQueue>,
    pub serverless: Arc<serverless::Serverless>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, closes sockets, finishes or interrupts the running job (per the
    /// config's shutdown mode) and waits until the store is consistent.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits for the server to stop (after a signal when started by [`serve`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds and starts serving (and the queue worker). Returns once listening.
pub async fn start(app: App, config: ServerConfig) -> std::io::Result<RunningServer> {
    config.check_security().map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind((config.listen, config.port)).await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let mode = config.shutdown_mode;
    app.queue.memory.set(config.max_memory);
    let serverless = Arc::new(serverless::Serverless::new(
        config.serverless.clone(),
        config.token.as_deref(),
        app.queue.clone(),
    ));
    let state = AppState {
        queue: app.queue.clone(),
        config: Arc::new(config),
        serverless: serverless.clone(),
        shutdown: stop_rx.clone(),
    };
    let queue = app.queue.clone();
    // Webhooks listen before the worker runs anything, so no event is missed.
    let hooks = serverless.spawn(stop_rx.clone());
    // A cluster node forwards and receives events before its worker runs anything.
    let cluster = crate::cluster::spawn_node(&state.config.cluster, queue.clone(), stop_rx.clone());
    let worker = state
        .config
        .cluster
        .role
        .runs_jobs()
        .then(|| tokio::spawn(queue.clone().run_worker()));
    tokio::spawn(logs::forward(queue.clone(), stop_rx.clone()));
    let app_router = router(state);
    let task = tokio::spawn(async move {
        let q = queue.clone();
        let mut rx = stop_rx;
        let serve = axum::serve(
            listener,
            app_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|v| *v).await;
            // Stop the worker at once: the running job finishes or is interrupted while
            // connections drain.
            q.shutdown(mode);
        });
        if let Err(e) = serve.await {
            tracing::error!("server error: {e}");
        }
        queue.shutdown(mode);
        if let Some(w) = worker {
            let _ = w.await;
        }
        let _ = hooks.await;
        if let Some(c) = cluster {
            let _ = c.await;
        }
    });
    Ok(RunningServer {
        addr,
        queue: app.queue,
        serverless,
        stop,
        task,
    })
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully (what `comfyrs serve` does).
pub async fn serve_until_signal(app: App, config: ServerConfig) -> std::io::Result<()> {
    // Handlers first: a SIGTERM right after "listening" must not find the default action.
    let signalled = wait_for_signal();
    let server = start(app, config).await?;
    tracing::info!("listening on http://{}", server.addr);
    eprintln!("comfyrs: listening on http://{}", server.addr);
    signalled.await;
    eprintln!("comfyrs: shutting down");
    server.shutdown().await;
    Ok(())
}

/// Installs the SIGINT/SIGTERM handlers now (not when first polled) and returns a future that
/// completes on the first of them.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
