//! The one executor queue every route family submits to.
//!
//! [`JobQueue::submit`] validates a prompt and stores it as a pending job; one worker task
//! ([`JobQueue::run_worker`]) claims jobs from the store in priority order and runs them on the
//! [`Executor`] (on a blocking thread), records the outcome in the store and publishes every
//! event on a broadcast channel ([`Outbound`]) that the WebSocket (and any other listener) reads.
//! The queue holds no job data of its own: a restart loses nothing but the running job, which
//! the store records as failed.

mod cluster;
mod files;
pub mod memory;

use crate::env::Environment;
use crate::exec::{now_ms, Event, Executor, Interrupt, RunStatus};
use crate::node::Registry;
use crate::prompt::{prepare, PromptError};
use crate::store::{
    Completion, JobRecord, JobStatus, JobStore, Needs, NewJob, StoreError, SHUTDOWN_REASON,
};
use crate::workflow::{workflow_from_json, Overrides};
use serde_json::{json, Map, Value as Json};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, Notify};

/// `extra_data` keys ComfyUI strips before storing (partner-node credentials).
pub const SENSITIVE_KEYS: &[&str] = &["auth_token_comfy_org", "api_key_comfy_org"];

/// A frame for WebSocket clients.
#[derive(Debug, Clone)]
pub enum WsPayload {
    Text(Arc<str>),
    /// An image of a running node; each socket frames it by its client's feature flags (with
    /// or without the metadata JSON, which is serialised as Python's `json.dumps` does).
    Preview {
        metadata: Arc<str>,
        image: crate::node::PreviewImage,
    },
}

/// A message on the queue's event channel: `to: None` goes to every client, `Some(sid)` only
/// to that client.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub to: Option<String>,
    pub prompt_id: Option<String>,
    pub payload: WsPayload,
    /// The cluster node it came from; `None` for this process's own events (only those are
    /// forwarded to the other nodes).
    pub origin: Option<Arc<str>>,
}

/// A prompt to queue, as any route family hands it over.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// API-format graph.
    pub prompt: Json,
    /// The id to use; a fresh UUID when `None`.
    pub prompt_id: Option<String>,
    pub number: Option<f64>,
    pub front: bool,
    /// ComfyUI's `extra_data` object (client_id is filled from `client_id`).
    pub extra_data: Map<String, Json>,
    pub client_id: Option<String>,
    /// `partial_execution_targets`.
    pub targets: Option<Vec<String>>,
    pub owner: Option<String>,
    /// The route family ("comfyui", ...).
    pub source: String,
}

/// What a successful submit answers.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub prompt_id: String,
    pub number: Json,
    pub node_errors: Json,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// ComfyUI's 400 body.
    #[error("invalid prompt")]
    Invalid(Json),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--max-memory` would be crossed.
    #[error(transparent)]
    OverCeiling(#[from] memory::OverCeiling),
}

impl From<PromptError> for SubmitError {
    fn from(e: PromptError) -> Self {
        SubmitError::Invalid(e.to_comfy_json())
    }
}

/// The job being executed right now.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: String,
    pub client_id: Option<String>,
    /// The node executing now, if any.
    pub node: Option<String>,
    /// The running node's last progress (value, max).
    pub progress: Option<(u64, u64)>,
}

/// What to do with the running job on shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Let it run to the end.
    Finish,
    /// Interrupt it: it is recorded as failed with [`SHUTDOWN_REASON`] (a client's
    /// interrupt is recorded as interrupted; the server's is not the client's doing).
    Interrupt,
}

/// Sends a control message (an interrupt) to the other nodes of a cluster.
pub type ControlSender = Box<dyn Fn(Json) + Send + Sync>;

pub struct JobQueue {
    store: Arc<JobStore>,
    executor: Arc<Executor>,
    registry: Arc<Registry>,
    env: Arc<Environment>,
    interrupt: Interrupt,
    running: Mutex<Option<Running>>,
    wake: Notify,
    events: broadcast::Sender<Outbound>,
    free: Mutex<FreeFlags>,
    stopping: AtomicBool,
    /// Set when a shutdown interrupts the running job.
    shutdown_interrupt: AtomicBool,
    /// Sends control messages to the other nodes of a cluster.
    cluster_control: Mutex<Option<ControlSender>>,
    /// How often the running job's lease is renewed (cluster stores); `None`: no leases.
    lease_renewal: Option<std::time::Duration>,
    /// `--max-memory`: submissions and job starts above it are refused.
    pub memory: memory::MemoryCeiling,
    /// Model files the loaders hold (the last jobs' models): this worker's affinity.
    pub warm: crate::cluster::caps::WarmSet,
    /// Set when the running job's lease was lost (another node ended or re-queued it).
    lease_lost: AtomicBool,
    /// Jobs running on other cluster nodes, as their events tell.
    remote: Mutex<std::collections::HashMap<String, Running>>,
    /// `--outputs s3://...`: where output files go and input files come from.
    objects: std::sync::OnceLock<Arc<crate::objects::ObjectFiles>>,
}

#[derive(Default)]
struct FreeFlags {
    unload_models: bool,
    free_memory: bool,
}

impl JobQueue {
    pub fn new(store: Arc<JobStore>, executor: Arc<Executor>) -> Arc<JobQueue> {
        let (events, _) = broadcast::channel(4096);
        let lease_renewal = store.lease().map(|l| l / 3);
        Arc::new(JobQueue {
            registry: executor.registry().clone(),
            env: executor.env().clone(),
            store,
            executor,
            interrupt: Interrupt::new(),
            running: Mutex::new(None),
            wake: Notify::new(),
            events,
            free: Mutex::new(FreeFlags::default()),
            stopping: AtomicBool::new(false),
            shutdown_interrupt: AtomicBool::new(false),
            lease_renewal,
            cluster_control: Mutex::new(None),
            memory: Default::default(),
            warm: Default::default(),
            lease_lost: AtomicBool::new(false),
            objects: std::sync::OnceLock::new(),
            remote: Mutex::new(Default::default()),
        })
    }

    pub fn store(&self) -> &Arc<JobStore> {
        &self.store
    }
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
    pub fn env(&self) -> &Arc<Environment> {
        &self.env
    }

    /// Every event the queue publishes (status changes, execution events).
    pub fn subscribe(&self) -> broadcast::Receiver<Outbound> {
        self.events.subscribe()
    }

    /// The running job, if any.
    pub fn running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Pending plus running jobs (ComfyUI's `queue_remaining`); in a cluster, every node's.
    pub fn queue_remaining(&self) -> usize {
        let running = if self.store.backend() == "sqlite" {
            usize::from(self.running().is_some())
        } else {
            self.store.running_count().unwrap_or(0)
        };
        self.store.pending_count().unwrap_or(0) + running
    }

    /// `{"exec_info": {"queue_remaining": N}}`.
    pub fn status_json(&self) -> Json {
        json!({"exec_info": {"queue_remaining": self.queue_remaining()}})
    }

    /// Broadcasts the `status` message (after any queue change).
    pub fn broadcast_status(&self) {
        let msg = json!({"type": "status", "data": {"status": self.status_json()}});
        self.publish(None, None, msg);
    }

    /// Sends a JSON message to one WebSocket client (the `logs` a terminal panel subscribed to).
    pub fn send_to_client(&self, client_id: &str, msg: Json) {
        self.publish(Some(client_id.to_string()), None, msg);
    }

    fn publish(&self, to: Option<String>, prompt_id: Option<String>, msg: Json) {
        let _ = self.events.send(Outbound {
            to,
            prompt_id,
            payload: WsPayload::Text(msg.to_string().into()),
            origin: None,
        });
    }

    /// Validates and queues a prompt. Blocking (validation lists model folders): async callers
    /// use `spawn_blocking`.
    pub fn submit(&self, sub: Submission) -> Result<Accepted, SubmitError> {
        let id = sub
            .prompt_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.memory.admit(0)?;
        if let Some(n) = sub.number.filter(|n| !n.is_finite()) {
            return Err(SubmitError::Invalid(json!({
                "error": {"type": "invalid_number",
                          "message": format!("number must be a finite number, got {n}"),
                          "details": "", "extra_info": {}},
                "node_errors": {}
            })));
        }
        if self.store.exists(&id)? {
            return Err(SubmitError::Invalid(json!({
                "error": {"type": "invalid_prompt_id",
                          "message": format!("prompt_id '{id}' is already used by another job"),
                          "details": "", "extra_info": {}},
                "node_errors": {}
            })));
        }
        let workflow = workflow_from_json(sub.prompt).map_err(PromptError::from)?;
        let valid = prepare(
            workflow,
            &Overrides::new(),
            &self.registry,
            &self.env,
            sub.targets.as_deref(),
        )?;
        let mut extra = sub.extra_data;
        for k in SENSITIVE_KEYS {
            extra.shift_remove(*k);
        }
        if let Some(c) = &sub.client_id {
            extra.insert("client_id".into(), json!(c));
        }
        extra.insert("create_time".into(), json!(now_ms()));
        let prompt = valid.prompt.into_json();
        // What a cluster node must have to run it (a single process runs everything).
        let needs = if self.store.backend() == "sqlite" {
            Needs::default()
        } else {
            crate::cluster::caps::job_needs(&prompt, &self.env)
        };
        let number = self.store.enqueue(&NewJob {
            id: id.clone(),
            number: sub.number,
            front: sub.front,
            prompt,
            extra_data: Json::Object(extra),
            outputs_to_execute: valid.outputs.clone(),
            client_id: sub.client_id,
            owner: sub.owner,
            source: sub.source,
            needs,
        })?;
        self.broadcast_status();
        self.wake.notify_one();
        Ok(Accepted {
            prompt_id: id,
            number,
            node_errors: valid.node_errors,
        })
    }

    /// Interrupts the running job: any job when `prompt_id` is `None`, else only that one.
    /// Returns whether a running job was interrupted. In a cluster the interrupt also goes to
    /// the other nodes (a job runs on one of them; `None` interrupts every node's job).
    pub fn interrupt(&self, prompt_id: Option<&str>) -> bool {
        let local = self.interrupt_local(prompt_id);
        let hook = self
            .cluster_control
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(send) = hook.as_ref() else {
            return local;
        };
        if local && prompt_id.is_some() {
            return true;
        }
        send(json!({"type": "interrupt", "prompt_id": prompt_id}));
        match prompt_id {
            None => self.store.running_count().unwrap_or(0) > 0,
            Some(p) => {
                local
                    || self
                        .store
                        .get(p)
                        .ok()
                        .flatten()
                        .is_some_and(|j| j.status == JobStatus::Running)
            }
        }
    }

    /// Interrupts this process's running job only.
    pub fn interrupt_local(&self, prompt_id: Option<&str>) -> bool {
        let running = self.running();
        match (prompt_id, &running) {
            (None, _) => {
                self.interrupt.trigger();
                running.is_some()
            }
            (Some(p), Some(r)) if r.id == p => {
                self.interrupt.trigger();
                true
            }
            _ => false,
        }
    }

    /// Cancels a job: dequeues it when pending, interrupts it when running.
    pub fn cancel(&self, id: &str) -> Result<bool, StoreError> {
        if self.store.cancel_pending(id)? {
            self.broadcast_status();
            return Ok(true);
        }
        Ok(self.interrupt(Some(id)))
    }

    /// Removes pending jobs by id (running ones are untouched).
    pub fn delete_pending(&self, ids: &[String]) -> Result<(), StoreError> {
        for id in ids {
            self.store.cancel_pending(id)?;
        }
        self.broadcast_status();
        Ok(())
    }

    pub fn clear_pending(&self) -> Result<(), StoreError> {
        self.store.clear_pending()?;
        self.broadcast_status();
        Ok(())
    }

    /// POST /free: applied by the worker between jobs.
    pub fn request_free(&self, unload_models: bool, free_memory: bool) {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        f.unload_models |= unload_models || free_memory;
        f.free_memory |= free_memory;
        drop(f);
        self.wake.notify_one();
    }

    /// Whether a job may start under `--max-memory`: when over it, model caches and cached
    /// outputs are dropped and freed memory handed back first, as `/free` would.
    fn admit_job(&self) -> Result<(), memory::OverCeiling> {
        if self.memory.admit(0).is_ok() {
            return Ok(());
        }
        tracing::warn!("over --max-memory before a job: clearing caches");
        self.env.resources.clear();
        self.executor.clear_cache();
        memory::release_free_memory();
        self.memory.admit(0)
    }

    fn apply_free(&self) {
        let flags = std::mem::take(&mut *self.free.lock().unwrap_or_else(|e| e.into_inner()));
        if flags.unload_models {
            self.env.resources.clear();
            self.warm.clear();
        }
        if flags.free_memory {
            self.executor.clear_cache();
        }
    }

    /// Stops the worker after the current job; with [`ShutdownMode::Interrupt`] the current
    /// job is interrupted. Pending jobs stay in the store.
    pub fn shutdown(&self, mode: ShutdownMode) {
        self.stopping.store(true, Ordering::SeqCst);
        if mode == ShutdownMode::Interrupt && self.running().is_some() {
            self.shutdown_interrupt.store(true, Ordering::SeqCst);
            self.interrupt.trigger();
        }
        self.wake.notify_one();
    }

    /// The worker loop: run until [`JobQueue::shutdown`].
    pub async fn run_worker(self: Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            self.apply_free();
            let job = match self.store.claim_next() {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!("cannot read the queue: {e}");
                    None
                }
            };
            let Some(job) = job else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                continue;
            };
            self.run_one(job).await;
        }
    }

    async fn run_one(self: &Arc<Self>, job: JobRecord) {
        let id = job.id.clone();
        let client = job.client_id.clone();
        let prompt = job.prompt.clone();
        self.interrupt.reset();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            id: id.clone(),
            client_id: client.clone(),
            node: None,
            progress: None,
        });
        self.broadcast_status();
        let started = std::time::Instant::now();
        self.lease_lost.store(false, Ordering::SeqCst);
        let renewer = self.spawn_lease_renewal(&id);
        self.fetch_inputs(&job).await;
        let this = self.clone();
        let res = tokio::task::spawn_blocking(move || {
            catch_unwind(AssertUnwindSafe(|| this.execute(&job)))
        })
        .await;
        if let Some(r) = renewer {
            r.abort();
        }
        let completion = match res {
            Ok(Ok(c)) => c,
            Ok(Err(panic)) => self.panicked(&id, &client, panic_text(&panic)),
            Err(e) => self.panicked(&id, &client, e.to_string()),
        };
        let completion = self.store_outputs(&id, completion).await;
        if self.store.backend() != "sqlite" && completion.status == JobStatus::Success {
            self.warm
                .ran(crate::cluster::caps::job_needs(&prompt, &self.env).models);
        }
        let store = self.store.clone();
        let (cid, done) = (id.clone(), completion.clone());
        let recorded = tokio::task::spawn_blocking(move || store.complete(&cid, &done)).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::LeaseLost(_))) => {
                tracing::warn!(job = %id, "lost the job's lease while running it: its outcome here is dropped (another node ended or re-queued it)");
            }
            Ok(Err(e)) => tracing::error!(job = %id, "cannot record the job's outcome: {e}"),
            Err(e) => tracing::error!(job = %id, "cannot record the job's outcome: {e}"),
        }
        tracing::info!(
            job = %id,
            status = completion.status.as_str(),
            "Prompt executed in {:.2} seconds",
            started.elapsed().as_secs_f64()
        );
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.broadcast_status();
        if let Some(c) = client {
            let done = Event::Executing {
                prompt_id: id.clone(),
                node: None,
            };
            self.publish(Some(c), Some(id), done.to_message());
        }
    }

    /// A panic outside the nodes (the executor contains node panics): the job fails, the
    /// server lives on.
    fn panicked(&self, id: &str, client: &Option<String>, msg: String) -> Completion {
        tracing::error!(job = %id, "job handling panicked: {msg}");
        let data = error_data(id, &format!("internal error: {msg}"), "Panic");
        self.route_event(
            client,
            &Event::ExecutionError {
                prompt_id: id.to_string(),
                data: data.clone(),
            },
        );
        Completion {
            status: JobStatus::Failed,
            outputs: json!({}),
            messages: vec![("execution_error".into(), data)],
            error: Some(format!("internal error: {msg}")),
        }
    }

    /// Runs one job on this (blocking) thread.
    #[allow(clippy::result_large_err)]
    fn execute(&self, job: &JobRecord) -> Completion {
        if let Err(over) = self.admit_job() {
            let msg = over.to_string();
            let data = error_data(&job.id, &msg, "MemoryCeiling");
            self.route_event(
                &job.client_id,
                &Event::ExecutionError {
                    prompt_id: job.id.clone(),
                    data: data.clone(),
                },
            );
            return Completion {
                status: JobStatus::Failed,
                outputs: json!({}),
                messages: vec![("execution_error".into(), data)],
                error: Some(msg),
            };
        }
        let prepared = workflow_from_json(job.prompt.clone())
            .map_err(PromptError::from)
            .and_then(|wf| {
                prepare(
                    wf,
                    &Overrides::new(),
                    &self.registry,
                    &self.env,
                    Some(&job.outputs_to_execute),
                )
            });
        let valid = match prepared {
            Ok(v) => v,
            Err(e) => {
                // Valid when queued, invalid now (a model or input file went away).
                let body = e.to_comfy_json();
                let msg = format!(
                    "the prompt no longer validates: {}",
                    body["error"]["message"]
                        .as_str()
                        .unwrap_or("invalid prompt")
                );
                let mut data = error_data(&job.id, &msg, "ValidationError");
                data["current_inputs"] = body;
                self.route_event(
                    &job.client_id,
                    &Event::ExecutionError {
                        prompt_id: job.id.clone(),
                        data: data.clone(),
                    },
                );
                return Completion {
                    status: JobStatus::Failed,
                    outputs: json!({}),
                    messages: vec![("execution_error".into(), data)],
                    error: Some(msg),
                };
            }
        };
        let extra_pnginfo = job.extra_data.get("extra_pnginfo");
        let sink = |e: Event| {
            {
                let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(r) = r.as_mut() {
                    match &e {
                        Event::Executing { node, .. } => {
                            r.node = node.clone();
                            r.progress = None;
                        }
                        Event::Progress { value, max, .. } => r.progress = Some((*value, *max)),
                        _ => {}
                    }
                }
            }
            self.route_event(&job.client_id, &e);
        };
        let outcome = self
            .executor
            .run(&job.id, &valid, extra_pnginfo, &self.interrupt, &sink);
        let mut messages = outcome.messages;
        let (status, error) = match &outcome.status {
            RunStatus::Success => (JobStatus::Success, None),
            RunStatus::Error(d) => (
                JobStatus::Failed,
                Some(format!(
                    "{} in node {} ({}): {}",
                    d["exception_type"].as_str().unwrap_or("error"),
                    d["node_id"].as_str().unwrap_or("?"),
                    d["node_type"].as_str().unwrap_or("?"),
                    d["exception_message"].as_str().unwrap_or("").trim_end()
                )),
            ),
            RunStatus::Interrupted(_) if self.shutdown_interrupt.load(Ordering::SeqCst) => {
                // Clients saw `execution_interrupted`; the history also says why.
                messages.push((
                    "execution_error".into(),
                    error_data(&job.id, SHUTDOWN_REASON, "ServerShutdown"),
                ));
                (JobStatus::Failed, Some(SHUTDOWN_REASON.into()))
            }
            RunStatus::Interrupted(_) => (JobStatus::Interrupted, Some("interrupted".into())),
        };
        Completion {
            status,
            outputs: Json::Object(outcome.outputs.into_iter().collect()),
            messages,
            error,
        }
    }

    /// ComfyUI's addressing rule (spec §8.1): to the owner; without an owner, only
    /// interrupts, progress, progress_state and previews are broadcast, the rest is dropped.
    fn route_event(&self, client: &Option<String>, e: &Event) {
        let to = match (client, e) {
            // A node's send_sync without a sid goes to every client, as in ComfyUI.
            (
                _,
                Event::Custom {
                    broadcast: true, ..
                },
            ) => None,
            (client, _) => client.clone(),
        };
        let to = match to {
            Some(c) => Some(c),
            None if matches!(e, Event::Custom { .. }) => None,
            None => match e {
                Event::ExecutionInterrupted { .. }
                | Event::Progress { .. }
                | Event::ProgressState { .. }
                | Event::Preview { .. } => None,
                _ => return,
            },
        };
        if let Event::Preview { image, .. } = e {
            let _ = self.events.send(Outbound {
                to,
                prompt_id: Some(e.prompt_id().to_string()),
                payload: WsPayload::Preview {
                    metadata: crate::nodes::utils::py_json_dumps(&e.data()).into(),
                    image: image.clone(),
                },
                origin: None,
            });
            return;
        }
        self.publish(to, Some(e.prompt_id().to_string()), e.to_message());
    }
}

fn error_data(id: &str, msg: &str, ty: &str) -> Json {
    json!({
        "prompt_id": id,
        "node_id": null,
        "node_type": null,
        "executed": [],
        "exception_message": msg,
        "exception_type": ty,
        "traceback": [],
        "current_inputs": {},
        "current_outputs": [],
        "timestamp": now_ms(),
    })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}
