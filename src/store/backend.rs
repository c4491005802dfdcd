//! What every store backend provides, split by concern: the job queue and history
//! ([`Jobs`]), webhook deliveries ([`WebhookLog`]), catalog downloads ([`DownloadQueue`]),
//! retention ([`Retention`]) and the cluster's view of its nodes ([`Nodes`]).
//!
//! Two backends implement them: [`super::SqliteStore`] (one process, the embedded default)
//! and [`super::postgres::PgStore`] (many processes sharing one queue). The rest of the
//! program holds an `Arc<JobStore>` (`dyn Store`) and never knows which.

use super::{
    Completion, Delivery, DeliveryState, DownloadJob, JobRecord, JobStatus, NewJob, OutputFile,
    Result, StoredDownloadState,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The queue and history.
pub trait Jobs: Send + Sync {
    /// Adds a job to the queue; returns its number (priority as the client sees it).
    fn enqueue(&self, job: &NewJob) -> Result<Json>;
    /// Whether a job with this id exists (any status).
    fn exists(&self, id: &str) -> Result<bool>;
    /// Takes the next pending job this node may run (smallest priority, then id) and marks it
    /// running, under this node's lease where the backend has leases.
    fn claim_next(&self) -> Result<Option<JobRecord>>;
    /// Extends this node's lease on a running job. False when the lease was lost (the job was
    /// failed or re-queued by another node): the caller stops working on it.
    fn renew_lease(&self, _id: &str) -> Result<bool> {
        Ok(true)
    }
    /// Ends the jobs whose lease expired (their node died): failed with the reason, or
    /// re-queued once where the store is configured to. Returns what was done.
    fn reap_expired(&self) -> Result<Vec<Reaped>> {
        Ok(vec![])
    }
    /// Records how a job ended and puts it in history (capped at [`super::HISTORY_CAP`]).
    /// With leases, only the node holding the job's lease may complete it
    /// ([`super::StoreError::LeaseLost`] otherwise), so a job ends exactly once.
    fn complete(&self, id: &str, done: &Completion) -> Result<()>;
    /// One job, any status.
    fn get(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Jobs with a status in `statuses`, in queue order for pending ones.
    fn list(&self, statuses: &[JobStatus]) -> Result<Vec<JobRecord>>;
    /// The pending queue, smallest priority first.
    fn pending(&self) -> Result<Vec<JobRecord>> {
        self.list(&[JobStatus::Pending])
    }
    /// How many pending jobs run before `id` (0 = next); `None` when it is not pending.
    fn queue_position(&self, id: &str) -> Result<Option<usize>>;
    fn pending_count(&self) -> Result<usize>;
    /// Jobs running anywhere (every node of a cluster).
    fn running_count(&self) -> Result<usize>;
    /// Removes a pending job from the queue (it is kept as `cancelled`, outside history).
    /// False when the job is not pending.
    fn cancel_pending(&self, id: &str) -> Result<bool>;
    /// Cancels every pending job; returns how many.
    fn clear_pending(&self) -> Result<usize>;
    /// History, oldest first, with ComfyUI's max_items/offset rules.
    fn history(&self, max_items: Option<usize>, offset: Option<i64>) -> Result<Vec<JobRecord>>;
    /// Every job in history or in the queue (the jobs API's view).
    fn all_jobs(&self) -> Result<Vec<JobRecord>>;
    /// Drops a job from history (the job row stays, for the job APIs).
    fn delete_history(&self, id: &str) -> Result<()>;
    fn clear_history(&self) -> Result<()>;
    /// The files a job produced.
    fn output_files(&self, id: &str) -> Result<Vec<OutputFile>>;
}

/// What [`Jobs::reap_expired`] did with a job whose node lost its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaped {
    pub id: String,
    /// The node that held the lease.
    pub node: String,
    /// True: back in the queue (its one retry); false: failed with [`super::LEASE_REASON`].
    pub requeued: bool,
}

/// Pending and past webhook deliveries.
pub trait WebhookLog: Send + Sync {
    /// Records an event to deliver now. False when this event id was already recorded.
    fn add_delivery(
        &self,
        id: &str,
        request_id: &str,
        url: &str,
        body: &str,
        is_final: bool,
    ) -> Result<bool>;
    /// Pending deliveries due at `now`, oldest first.
    fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<Delivery>>;
    /// Takes up to `limit` due deliveries and holds them until `lease_until` (if the taker
    /// dies mid-attempt, they are retried after that). Atomic across the nodes of a cluster:
    /// two nodes never take the same delivery.
    fn claim_due_deliveries(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> Result<Vec<Delivery>> {
        let due = self.due_deliveries(now, limit)?;
        for d in &due {
            self.lease_delivery(&d.id, lease_until)?;
        }
        Ok(due)
    }
    /// When the next pending delivery is due, if any.
    fn next_delivery_at(&self) -> Result<Option<i64>>;
    /// Holds a pending delivery back until `until_ms` while an attempt is in flight.
    fn lease_delivery(&self, id: &str, until_ms: i64) -> Result<()>;
    /// Every delivery of a request, in creation order.
    fn deliveries_of(&self, request_id: &str) -> Result<Vec<Delivery>>;
    /// Records one attempt: delivered, retry at `next_at`, or given up.
    fn delivery_attempted(
        &self,
        id: &str,
        state: DeliveryState,
        next_at: i64,
        error: Option<&str>,
    ) -> Result<()>;
    /// Finished jobs that asked for a webhook (`extra_data.serverless.webhook`) but have no
    /// final event recorded, finished after `since_ms`.
    fn finished_without_final_webhook(&self, since_ms: i64) -> Result<Vec<String>>;
}

/// The catalog download queue.
pub trait DownloadQueue: Send + Sync {
    /// Queues a download behind the others. False (and nothing changes) when the file is
    /// already queued or downloading; a failed one is queued again.
    fn enqueue_download(&self, job: &DownloadJob) -> Result<bool>;
    /// The next download to run, marked `downloading`: one a restart interrupted first, then
    /// the queue in request order.
    fn claim_download(&self) -> Result<Option<DownloadJob>>;
    /// A download ended: its row goes (`Ok`), or records the reason (`Err`).
    fn download_finished(&self, file: &str, outcome: std::result::Result<(), &str>) -> Result<()>;
    /// The stored state of `file`'s download, if any.
    fn download_state(&self, file: &str) -> Result<Option<StoredDownloadState>>;
    /// Drops `file`'s row unless it is `downloading`.
    fn forget_download(&self, file: &str) -> Result<()>;
}

/// Retention of finished requests.
pub trait Retention: Send + Sync {
    /// Expires finished jobs of `sources` that finished before `finished_before_ms`: their
    /// outputs, output-file index, history entry and webhook rows are dropped and a tombstone
    /// is kept. Returns each expired job with the files it had (to delete).
    fn expire_finished(
        &self,
        sources: &[&str],
        finished_before_ms: i64,
    ) -> Result<Vec<(String, Vec<OutputFile>)>>;
    /// When a job's results were expired, if they were.
    fn expired_at(&self, id: &str) -> Result<Option<i64>>;
}

/// What a node can run and what it holds, as it advertises it to the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// `api`, `worker` or `all`.
    pub role: String,
    /// Host name and pid, for operators.
    pub host: String,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// Node classes it can execute.
    pub node_classes: Vec<String>,
    /// Model files it has (`folder/name`).
    pub models: Vec<String>,
    /// Model files its loaders hold in memory now (affinity).
    pub warm: Vec<String>,
    /// The job it runs, if any.
    pub running: Option<String>,
    /// Milliseconds since the epoch of its last heartbeat.
    pub heartbeat_at: i64,
}

/// The cluster's nodes (empty for a single-process store).
pub trait Nodes: Send + Sync {
    /// Which backend: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// This process's node id (claims and leases are taken in its name).
    fn node_id(&self) -> &str;
    /// How long a claim holds without renewal; `None` when the store has no leases (one
    /// process: a crash is recovered on the next start).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }
    /// Publishes this node's capabilities and state; what [`Jobs::claim_next`] matches jobs
    /// against. A no-op for a single-process store.
    fn heartbeat(&self, _info: &NodeInfo) -> Result<()> {
        Ok(())
    }
    /// Nodes seen within the liveness window, this one included.
    fn live_nodes(&self) -> Result<Vec<NodeInfo>> {
        Ok(vec![])
    }
    /// Takes this node out of the cluster view (graceful shutdown).
    fn leave(&self) -> Result<()> {
        Ok(())
    }
}

/// Deployments created through the API, shared by every node of a cluster (a single process
/// keeps them as files in its deployments folder and does not use this).
pub trait DeploymentTable: Send + Sync {
    /// Saves a deployment (its JSON); false when the id exists.
    fn save_deployment(&self, _id: &str, _json: &str) -> Result<bool> {
        Ok(false)
    }
    /// One deployment's JSON.
    fn deployment(&self, _id: &str) -> Result<Option<String>> {
        Ok(None)
    }
    /// Every deployment's JSON, oldest first.
    fn deployments(&self) -> Result<Vec<String>> {
        Ok(vec![])
    }
    /// False when there was none.
    fn delete_deployment(&self, _id: &str) -> Result<bool> {
        Ok(false)
    }
}

/// Every part of a store.
pub trait Store: Jobs + WebhookLog + DownloadQueue + Retention + Nodes + DeploymentTable {}
impl<T: Jobs + WebhookLog + DownloadQueue + Retention + Nodes + DeploymentTable> Store for T {}
