//! Running comfyrs as many processes over one PostgreSQL store (`comfyrs serve --store
//! postgres://... --role api|worker|all`).
//!
//! - [`caps`]: what a job needs and a node has (capability matching, model affinity).
//! - [`events`]: execution events across processes (PostgreSQL `LISTEN/NOTIFY`), so a client
//!   gets its WebSocket messages, progress and webhooks whichever node it talks to.
//!
//! The queue and leases themselves live in the store ([`crate::store::postgres`]).

pub mod caps;
pub mod events;

/// What a process does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Takes requests and serves reads; runs no jobs.
    Api,
    /// Runs jobs; serves only what an operator needs (health, /system_stats).
    Worker,
    /// Both (the single-process default).
    #[default]
    All,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            "all" => Ok(Role::All),
            other => Err(format!("--role {other:?}: use api, worker or all")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::All => "all",
        }
    }
    pub fn runs_jobs(self) -> bool {
        self != Role::Api
    }
}

use crate::queue::JobQueue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How this process takes part in a cluster (`comfyrs serve --store postgres://... --role`).
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub role: Role,
    /// The PostgreSQL URL of the shared store; `None`: a single process.
    pub url: Option<String>,
    /// The device jobs run on, as advertised (`cpu`, `cuda:0`).
    pub device: String,
}

/// How often a node advertises itself (and sees whether others are alive).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// Every how many heartbeats the model folders are listed again (models added to a worker's
/// folders are advertised within this many heartbeats).
const MODELS_EVERY: u64 = 10;

/// Starts this node's cluster duties: the event bridge, the heartbeat that advertises its
/// capabilities, and the reaper of expired leases. Runs until `stop`; the node then leaves
/// the cluster view.
pub fn spawn_node(
    config: &ClusterConfig,
    queue: Arc<JobQueue>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let url = config.url.clone()?;
    let node = queue.store().node_id().to_string();
    let bridge = events::spawn(url, node, queue.clone(), stop.clone());
    let (role, device) = (config.role, config.device.clone());
    let lease = queue.store().lease().unwrap_or(Duration::from_secs(30));
    let duties = tokio::spawn(async move {
        let mut stop = stop;
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut beats: u64 = 0;
        let mut models: Option<Vec<String>> = None;
        let mut reap = tokio::time::interval(
            (lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(5)),
        );
        loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|v| *v).await; } => break,
                _ = beat.tick() => {
                    let q = queue.clone();
                    let device = device.clone();
                    // The model folders are listed every MODELS_EVERY beats, not every beat.
                    let cached = (!beats.is_multiple_of(MODELS_EVERY)).then(|| models.clone()).flatten();
                    beats += 1;
                    let res = tokio::task::spawn_blocking(move || {
                        let listed = cached.unwrap_or_else(|| caps::local_models(q.env()));
                        let info = caps::node_info(
                            role.as_str(),
                            &device,
                            q.registry(),
                            listed.clone(),
                            q.warm.models(),
                            q.running().map(|r| r.id),
                        );
                        q.store().heartbeat(&info).map(|()| listed)
                    })
                    .await;
                    match res {
                        Ok(Ok(listed)) => models = Some(listed),
                        Ok(Err(e)) => tracing::warn!("cluster heartbeat: {e}"),
                        Err(_) => {}
                    }
                }
                _ = reap.tick() => {
                    let q = queue.clone();
                    let res = tokio::task::spawn_blocking(move || {
                        let reaped = q.store().reap_expired()?;
                        for r in &reaped {
                            if r.requeued {
                                tracing::warn!(job = %r.id, node = %r.node, "worker lost: job re-queued");
                                q.wake_worker();
                            } else {
                                tracing::warn!(job = %r.id, node = %r.node, "worker lost: job failed");
                                if let Some(job) = q.store().get(&r.id)? {
                                    q.announce_lost(&job);
                                }
                            }
                        }
                        Ok::<_, crate::store::StoreError>(())
                    })
                    .await;
                    if let Ok(Err(e)) = res {
                        tracing::warn!("cluster reaper: {e}");
                    }
                }
            }
        }
        let q = queue.clone();
        let _ = tokio::task::spawn_blocking(move || q.store().leave()).await;
    });
    Some(tokio::spawn(async move {
        let _ = duties.await;
        let _ = bridge.await;
    }))
}
