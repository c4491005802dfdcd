//! The queue's side of a cluster: events of jobs running on other nodes (their progress, the
//! end of a job whose worker was lost), control messages to other nodes, and the lease a
//! worker renews while it runs a job.

use super::{ControlSender, JobQueue, Outbound, Running, WsPayload};
use crate::exec::Event;
use crate::store::JobRecord;
use serde_json::Value as Json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl JobQueue {
    /// Puts an event another cluster node published on this node's channel, and follows
    /// the progress of jobs running elsewhere (for [`JobQueue::running_job`]).
    pub fn inject_remote(&self, out: Outbound) {
        if let (Some(id), WsPayload::Text(t)) = (&out.prompt_id, &out.payload) {
            if t.starts_with(r#"{"type":"executing""#) || t.starts_with(r#"{"type":"progress""#) {
                if let Ok(m) = serde_json::from_str::<Json>(t) {
                    let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
                    let r = remote.entry(id.clone()).or_insert_with(|| Running {
                        id: id.clone(),
                        client_id: out.to.clone(),
                        node: None,
                        progress: None,
                    });
                    if m["type"] == "executing" {
                        r.node = m["data"]["node"].as_str().map(str::to_string);
                        r.progress = None;
                        if m["data"]["node"].is_null() {
                            remote.remove(id);
                        }
                    } else if let (Some(v), Some(max)) =
                        (m["data"]["value"].as_u64(), m["data"]["max"].as_u64())
                    {
                        r.progress = Some((v, max));
                    }
                    // Jobs whose end this node missed do not pile up.
                    if remote.len() > 1024 {
                        remote.clear();
                    }
                }
            }
        }
        let _ = self.events.send(out);
    }

    /// The job `id` if it is running here or, in a cluster, on a node whose events reach this
    /// one: its current node and progress.
    pub fn running_job(&self, id: &str) -> Option<Running> {
        self.running().filter(|r| r.id == id).or_else(|| {
            self.remote
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned()
        })
    }

    /// Sends cluster control messages (set by the cluster's event bridge).
    pub fn set_cluster_control(&self, send: ControlSender) {
        *self
            .cluster_control
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(send);
    }

    /// Wakes the worker loop (a job was queued on another node).
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// Announces to its client that a job ended without its worker (lease expired): the
    /// error and the end of execution, as the worker would have sent them.
    pub fn announce_lost(&self, job: &JobRecord) {
        if let Some(data) = job.exec_status["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m[0] == "execution_error"))
            .map(|m| m[1].clone())
        {
            self.route_event(
                &job.client_id,
                &Event::ExecutionError {
                    prompt_id: job.id.clone(),
                    data,
                },
            );
        }
        if let Some(c) = &job.client_id {
            let done = Event::Executing {
                prompt_id: job.id.clone(),
                node: None,
            };
            self.publish(Some(c.clone()), Some(job.id.clone()), done.to_message());
        }
        self.broadcast_status();
    }

    /// Renews the running job's lease every third of the lease (cluster stores only); when
    /// the lease is lost the job is interrupted, since another node has ended or re-queued it.
    pub(super) fn spawn_lease_renewal(
        self: &Arc<Self>,
        id: &str,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.lease_renewal?;
        let (this, id) = (self.clone(), id.to_string());
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (store, jid) = (this.store.clone(), id.clone());
                match tokio::task::spawn_blocking(move || store.renew_lease(&jid)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::warn!(job = %id, "lost the job's lease: interrupting it");
                        this.lease_lost.store(true, Ordering::SeqCst);
                        this.interrupt.trigger();
                        return;
                    }
                    // A database hiccup: retry; the lease outlives a few missed renewals.
                    Ok(Err(e)) => tracing::warn!(job = %id, "cannot renew the job's lease: {e}"),
                    Err(_) => return,
                }
            }
        }))
    }
}
