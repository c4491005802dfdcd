//! §5 Webhooks for every family: events are recorded in the job store when they happen and
//! delivered by a background dispatcher, signed with Standard Webhooks headers
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`). A delivery counts on a 2xx within the timeout; otherwise it is
//! retried with exponential backoff until the event is older than the policy's `max_age`
//! (24 h). The `webhook-id` of an event is the same on every retry, so receivers deduplicate.
//!
//! Receivers are behind the SSRF guard ([`super::ssrf`]): a URL whose host is (or resolves
//! to) a loopback, private, link-local or metadata address is refused when the request is
//! submitted (`400 WEBHOOK_REFUSED`), and checked again at every delivery, inside the client's
//! resolver, since DNS can change; a delivery refused then fails at once with the reason as
//! its `last_error`. Redirects are not followed (a 3xx is a failed attempt), so a receiver
//! cannot bounce a delivery elsewhere.
//!
//! Nothing here can block or crash the server: recording is one SQLite insert, delivery runs
//! on its own tasks with a bounded number in flight, and a restart resumes the pending rows.
//! Events a crash (or a lagging listener) missed are found again by
//! [`JobStore::finished_without_final_webhook`](crate::store::JobStore::finished_without_final_webhook).

use super::config::WebhookPolicy;
use super::errors::{code, SResult, ServerlessError};
use super::requests::{request_urls, result_body, RequestMeta};
use super::ssrf::{guard_error_in, GuardError, UrlGuard};
use crate::queue::{JobQueue, WsPayload};
use crate::store::{Delivery, DeliveryState, JobRecord, JobStatus};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify, Semaphore};

/// How often finished jobs are checked for final events nobody recorded.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

pub struct Webhooks {
    policy: WebhookPolicy,
    queue: Arc<JobQueue>,
    key: Option<Vec<u8>>,
    guard: Arc<UrlGuard>,
    client: reqwest::Client,
    wake: Notify,
    in_flight: Mutex<HashSet<String>>,
}

/// The signing key of a Standard Webhooks secret: `whsec_<base64>` decodes, anything else is
/// used as its bytes.
pub fn secret_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The stable id of a request's event with status word `status`.
pub fn event_id(request_id: &str, status: &str) -> String {
    format!("msg_{}_{status}", request_id.replace('-', ""))
}

impl Webhooks {
    pub fn new(policy: WebhookPolicy, queue: Arc<JobQueue>) -> Webhooks {
        let guard = Arc::new(UrlGuard::new(
            &policy.allow_networks,
            "sending webhooks to it",
        ));
        let client = reqwest::Client::builder()
            .dns_resolver(guard.resolver())
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .user_agent(concat!("comfyrs-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| {
                tracing::error!("webhook HTTP client: {e}; using defaults");
                reqwest::Client::new()
            });
        Webhooks {
            key: policy.secret.as_deref().map(secret_key),
            guard,
            policy,
            queue,
            client,
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Checks a webhook URL when a request is submitted: an absolute http(s) URL
    /// (`INVALID_WEBHOOK`) whose host is public or allow-listed as it resolves now
    /// (`WEBHOOK_REFUSED`; a name that does not resolve is `INVALID_WEBHOOK`).
    pub async fn check_target(&self, url: &str) -> SResult<()> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return Err(ServerlessError::bad_request(
                    code::INVALID_WEBHOOK,
                    format!("webhook must be an absolute http(s) URL, got {url:?}"),
                ))
            }
        };
        match self.guard.check_url_resolved(&parsed, true).await {
            Ok(()) => Ok(()),
            Err(GuardError::Refused(why)) => Err(ServerlessError::bad_request(
                code::WEBHOOK_REFUSED,
                format!("webhook {url} refused: {why}"),
            )),
            Err(GuardError::Unresolvable(why)) => Err(ServerlessError::bad_request(
                code::INVALID_WEBHOOK,
                format!("webhook {url}: {why}"),
            )),
        }
    }

    /// Records an intermediate event (`in_queue` for `Pending`, `in_progress` for `Running`)
    /// when the request asked for them.
    pub fn record_status(&self, request_id: &str, status: JobStatus, meta: &RequestMeta) {
        let (Some(url), true) = (&meta.webhook, meta.webhook_intermediate_status) else {
            return;
        };
        let word = meta.family.status_word(status);
        let mut body = Map::new();
        body.insert("request_id".into(), json!(request_id));
        body.insert("status".into(), json!(word));
        if status == JobStatus::Pending {
            let pos = self.queue.store().queue_position(request_id).ok().flatten();
            body.insert("queue_position".into(), json!(pos.unwrap_or(0)));
        }
        body.extend(request_urls(&meta.base_url, meta, request_id));
        body.remove("cancel_url");
        self.record(request_id, url, word, &Value::Object(body), false);
    }

    /// Records the final event: the result body (outputs or error).
    pub fn record_final(&self, job: &JobRecord, meta: &RequestMeta) {
        let Some(url) = &meta.webhook else { return };
        if !job.status.is_finished() {
            return;
        }
        let body = result_body(&meta.base_url, job, meta);
        let status = meta.family.status_word(job.status);
        self.record(&job.id, url, status, &body, true);
    }

    fn record(&self, request_id: &str, url: &str, status: &str, body: &Value, is_final: bool) {
        let id = event_id(request_id, status);
        match self
            .queue
            .store()
            .add_delivery(&id, request_id, url, &body.to_string(), is_final)
        {
            Ok(true) => self.wake.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::error!(request = %request_id, "cannot record webhook event: {e}"),
        }
    }

    /// Starts the recorder (listens to the queue's events) and the dispatcher; both stop when
    /// `stop` turns true.
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let events = self.queue.subscribe();
        let this = self.clone();
        let recorder = tokio::spawn(this.clone().record_loop(events, stop.clone()));
        let dispatcher = tokio::spawn(this.dispatch_loop(stop));
        tokio::spawn(async move {
            let _ = recorder.await;
            let _ = dispatcher.await;
        })
    }

    /// Turns queue events of serverless jobs into recorded webhook events.
    async fn record_loop(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Outbound>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.reconcile();
        loop {
            let msg = tokio::select! {
                m = events.recv() => m,
                _ = stop.wait_for(|v| *v) => return,
            };
            let out = match msg {
                Ok(o) => o,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("webhook recorder missed {n} events; reconciling");
                    self.reconcile();
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let (Some(id), WsPayload::Text(text)) = (&out.prompt_id, &out.payload) else {
                continue;
            };
            let started = text.starts_with(r#"{"type":"execution_start""#);
            let finished = text.starts_with(r#"{"type":"executing""#)
                && serde_json::from_str::<Value>(text).is_ok_and(|m| m["data"]["node"].is_null());
            if !started && !finished {
                continue;
            }
            let job = match self.queue.store().get(id) {
                Ok(Some(j)) => j,
                _ => continue,
            };
            let Some(meta) = RequestMeta::of(&job) else {
                continue;
            };
            if finished {
                self.record_final(&job, &meta);
            } else {
                self.record_status(&job.id, JobStatus::Running, &meta);
            }
        }
    }

    /// Records the final events of finished jobs that have none (within `max_age`).
    fn reconcile(&self) {
        let since = chrono::Utc::now().timestamp_millis() - self.policy.max_age.as_millis() as i64;
        let ids = match self.queue.store().finished_without_final_webhook(since) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("webhook reconcile: {e}");
                return;
            }
        };
        for id in ids {
            if let Ok(Some(job)) = self.queue.store().get(&id) {
                if let Some(meta) = RequestMeta::of(&job) {
                    self.record_final(&job, &meta);
                }
            }
        }
    }

    /// Sends due deliveries (at most `concurrency` at once) until stopped.
    async fn dispatch_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.policy.concurrency.max(1)));
        let mut last_reconcile = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            if last_reconcile.elapsed() >= RECONCILE_EVERY {
                self.reconcile();
                last_reconcile = tokio::time::Instant::now();
            }
            let now = chrono::Utc::now().timestamp_millis();
            // Claimed with a lease: if we die mid-attempt, the row is retried after the
            // timeout, and no other node of a cluster takes it meanwhile.
            let lease = now + self.policy.timeout.as_millis() as i64 + 1000;
            let free = permits.available_permits().min(64);
            let due = if free == 0 {
                vec![]
            } else {
                self.queue
                    .store()
                    .claim_due_deliveries(now, free, lease)
                    .unwrap_or_else(|e| {
                        tracing::error!("webhook queue: {e}");
                        vec![]
                    })
            };
            for d in due {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Not sent now: due again at once.
                    let _ = self.queue.store().lease_delivery(&d.id, now);
                    continue;
                };
                if !self.lock_in_flight().insert(d.id.clone()) {
                    continue;
                }
                let this = self.clone();
                tokio::spawn(async move {
                    this.attempt(&d).await;
                    this.lock_in_flight().remove(&d.id);
                    drop(permit);
                    this.wake.notify_one();
                });
            }
            let next = self.queue.store().next_delivery_at().ok().flatten();
            let wait_ms = next
                .map(|t| (t - chrono::Utc::now().timestamp_millis()).clamp(5, 1000))
                .unwrap_or(1000);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One delivery attempt, recorded in the store. An address the guard refuses (the URL's
    /// host now resolves somewhere internal) fails the delivery for good; anything else that
    /// goes wrong is retried.
    async fn attempt(&self, d: &Delivery) {
        let store = self.queue.store();
        let outcome = match self.send(d).await {
            Ok(()) => Ok(()),
            Err(SendError::Refused(why)) => {
                let err = format!("refused: {why}");
                tracing::warn!(webhook = %d.id, url = %d.url, "webhook not sent: {err}");
                let res = store.delivery_attempted(&d.id, DeliveryState::Failed, 0, Some(&err));
                if let Err(e) = res {
                    tracing::error!(webhook = %d.id, "cannot record webhook attempt: {e}");
                }
                return;
            }
            Err(SendError::Retry(err)) => Err(err),
        };
        let res = match outcome {
            Ok(()) => store.delivery_attempted(&d.id, DeliveryState::Delivered, 0, None),
            Err(err) => {
                let now = chrono::Utc::now().timestamp_millis();
                let next = now + self.backoff(d.attempts + 1).as_millis() as i64;
                let too_old = next - d.created_at > self.policy.max_age.as_millis() as i64;
                let state = if too_old {
                    tracing::warn!(webhook = %d.id, url = %d.url, "giving up on webhook after {} attempts: {err}", d.attempts + 1);
                    DeliveryState::Failed
                } else {
                    DeliveryState::Pending
                };
                store.delivery_attempted(&d.id, state, next, Some(&err))
            }
        };
        if let Err(e) = res {
            tracing::error!(webhook = %d.id, "cannot record webhook attempt: {e}");
        }
    }

    /// POSTs one event under the guard.
    async fn send(&self, d: &Delivery) -> Result<(), SendError> {
        let url = reqwest::Url::parse(&d.url)
            .map_err(|e| SendError::Refused(format!("not a URL ({e}): {:?}", d.url)))?;
        self.guard
            .check_url(&url, true)
            .map_err(|e| SendError::Refused(e.to_string()))?;
        let ts = chrono::Utc::now().timestamp();
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .body(d.body.clone());
        if let Some(key) = &self.key {
            req = req.header("webhook-signature", sign(key, &d.id, ts, &d.body));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SendError::Retry(format!(
                "receiver answered {}",
                r.status()
            ))),
            Err(e) => Err(match guard_error_in(&e) {
                Some(GuardError::Refused(why)) => SendError::Refused(why),
                _ => SendError::Retry(format!("delivery failed: {e}")),
            }),
        }
    }

    /// The wait after `attempts` failed attempts: base · 2^(attempts−1), capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
        self.policy
            .base_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay)
    }
}

use crate::queue::Outbound;

/// Why a delivery attempt failed.
enum SendError {
    /// The SSRF guard would not connect: final.
    Refused(String),
    /// Anything else (network, timeout, non-2xx): retried with backoff.
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_signature() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn event_ids_are_stable() {
        assert_eq!(
            event_id("9b0c7e0e-1111-4222-8333-444455556666", "succeeded"),
            "msg_9b0c7e0e111142228333444455556666_succeeded"
        );
    }
}
