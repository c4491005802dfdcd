//! Execution events across the processes of a cluster, over PostgreSQL `LISTEN/NOTIFY`.
//!
//! Each node forwards the events its own queue publishes (WebSocket messages, previews,
//! status) on the `comfyrs_events` channel and puts every other node's events on its local
//! channel, so a WebSocket client, the serverless progress views and the webhook recorder see
//! a job's events whichever node runs it. Control messages (interrupts) travel on
//! `comfyrs_control`; `comfyrs_jobs` (sent by the store when a job is queued) wakes idle
//! workers at once instead of at their next poll.
//!
//! A notification carries at most 8000 bytes: a larger event is stored in the `events` table
//! and its row id (`@<id>`) notified; old rows are pruned. One session publishes, in order, so
//! a job's events arrive in the order they happened.
//!
//! Losing the database session (a restart, a failover, a network cut): the publisher keeps
//! the events it could not send (up to [`BACKLOG_MAX`]) and sends them, in order, once it is
//! connected again; for [`CATCH_UP_GRACE`] after any reconnection it sends every event
//! through the `events` table. A listener that reconnects LISTENs again and first reads the
//! table rows it has not seen, so events published while it was away from the database
//! reach it too (each row once). What stays lost: inline events a publisher sent while
//! connected to a listener that was not (a node cut off alone), which are not durable state
//! anyway (history, webhooks and job state are in the store).

use crate::queue::{JobQueue, Outbound, WsPayload};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, Client};

pub const EVENTS: &str = "comfyrs_events";
pub const CONTROL: &str = "comfyrs_control";
pub const JOBS: &str = "comfyrs_jobs";

/// Larger payloads go through the `events` table.
const NOTIFY_MAX: usize = 7000;
/// Stored large events older than this are deleted.
const KEEP_EVENTS: Duration = Duration::from_secs(300);
/// Events kept while the database is unreachable; older ones are dropped beyond this.
pub const BACKLOG_MAX: usize = 20_000;
/// After a publisher reconnects, how long every event goes through the `events` table (where
/// listeners that reconnect later catch up).
pub const CATCH_UP_GRACE: Duration = Duration::from_secs(15);
/// A reconnecting listener reads stored events from this many ids below the highest it had
/// seen (rows committed out of id order), skipping those it already handled.
const CATCH_UP_MARGIN: i64 = 1000;

/// A message between nodes (public for the benchmark, `examples/event_bench.rs`).
#[doc(hidden)]
pub fn encode(node: &str, out: &Outbound) -> String {
    let mut m = json!({"o": node, "to": out.to, "p": out.prompt_id});
    match &out.payload {
        WsPayload::Text(t) => m["t"] = json!(t.as_ref()),
        WsPayload::Preview { metadata, image } => {
            m["m"] = json!(metadata.as_ref());
            m["f"] = json!(image.format.code());
            m["i"] = json!(base64::engine::general_purpose::STANDARD.encode(&image.bytes));
        }
    }
    m.to_string()
}

#[doc(hidden)]
pub fn decode(text: &str) -> Option<Outbound> {
    let m: Json = serde_json::from_str(text).ok()?;
    let payload = if let Some(t) = m["t"].as_str() {
        WsPayload::Text(t.into())
    } else {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m["i"].as_str()?)
            .ok()?;
        WsPayload::Preview {
            metadata: m["m"].as_str()?.into(),
            image: match m["f"].as_u64()? {
                1 => crate::node::PreviewImage::jpeg(bytes),
                _ => crate::node::PreviewImage::png(bytes),
            },
        }
    };
    Some(Outbound {
        to: m["to"].as_str().map(str::to_string),
        prompt_id: m["p"].as_str().map(str::to_string),
        payload,
        origin: Some(m["o"].as_str()?.into()),
    })
}

async fn connect(url: &str) -> Result<(Client, mpsc::UnboundedReceiver<AsyncMessage>), String> {
    let (config, tls) = crate::store::postgres::tls::connect_params(url)?;
    let (client, mut conn) = config.connect(tls).await.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            // Keep driving the connection even when nobody reads its notifications.
            let _ = tx.send(m);
        }
    });
    Ok((client, rx))
}

/// Sends `payload` on `channel`, through the `events` table when large or when `stored`
/// (public for the benchmark).
#[doc(hidden)]
pub async fn notify(
    client: &Client,
    channel: &str,
    payload: &str,
    stored: bool,
) -> Result<(), String> {
    let text = if payload.len() < NOTIFY_MAX && !stored {
        payload.to_string()
    } else {
        let id: i64 = client
            .query_one(
                "INSERT INTO events(created_at, payload) VALUES ($1, $2) RETURNING id",
                &[&chrono::Utc::now().timestamp_millis(), &payload],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        format!("@{id}")
    };
    client
        .execute("SELECT pg_notify($1, $2)", &[&channel, &text])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Starts the bridge between `queue` and the other nodes; runs until `stop`.
pub fn spawn(
    url: String,
    node: String,
    queue: Arc<JobQueue>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // Local interrupts of jobs that run elsewhere go out on the control channel.
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel::<Json>();
    queue.set_cluster_control(Box::new(move |msg| {
        let _ = ctl_tx.send(msg);
    }));
    let events = queue.subscribe();
    let out = tokio::spawn(publish_loop(
        url.clone(),
        node.clone(),
        events,
        ctl_rx,
        stop.clone(),
    ));
    let inn = tokio::spawn(listen_loop(url, node, queue, stop));
    tokio::spawn(async move {
        let _ = out.await;
        let _ = inn.await;
    })
}

async fn publish_loop(
    url: String,
    node: String,
    mut events: broadcast::Receiver<Outbound>,
    mut control: mpsc::UnboundedReceiver<Json>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut last_prune = tokio::time::Instant::now();
    // What is still to send, oldest first.
    let mut backlog: std::collections::VecDeque<(&'static str, String)> = Default::default();
    let mut dropped: u64 = 0;
    let mut connected_before = false;
    let mut stored_until: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let item = tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            m = events.recv() => match m {
                Ok(o) if o.origin.is_none() => Some((EVENTS, encode(&node, &o))),
                Ok(_) => None,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("cluster events: {n} local events not forwarded (lagging)");
                    None
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            c = control.recv() => c.map(|mut c| {
                c["o"] = json!(node);
                (CONTROL, c.to_string())
            }),
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                if retry_at.is_some() => {
                retry_at = None;
                None
            }
        };
        if let Some(item) = item {
            if backlog.len() >= BACKLOG_MAX {
                backlog.pop_front();
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        "cluster events: database unreachable, {dropped} events dropped"
                    );
                }
            }
            backlog.push_back(item);
        }
        if retry_at.is_some() {
            continue; // still waiting before the next connection attempt
        }
        while let Some((channel, payload)) = backlog.front() {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match connect(&url).await {
                    Ok((c, _rx)) => {
                        client = Some(c);
                        if connected_before {
                            tracing::info!(
                                "cluster events: connected again; sending {} held events",
                                backlog.len()
                            );
                            stored_until = Some(tokio::time::Instant::now() + CATCH_UP_GRACE);
                        }
                        connected_before = true;
                    }
                    Err(e) => {
                        tracing::warn!("cluster events: cannot connect to publish: {e}");
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        break;
                    }
                }
            }
            let c = client.as_ref().expect("connected above");
            let stored =
                *channel == EVENTS && stored_until.is_some_and(|t| tokio::time::Instant::now() < t);
            match notify(c, channel, payload, stored).await {
                Ok(()) => {
                    backlog.pop_front();
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!("cluster events: cannot publish: {e}");
                    client = None;
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    break;
                }
            }
        }
        if last_prune.elapsed() > KEEP_EVENTS / 5 {
            last_prune = tokio::time::Instant::now();
            if let Some(c) = &client {
                let before = chrono::Utc::now().timestamp_millis() - KEEP_EVENTS.as_millis() as i64;
                let _ = c
                    .execute("DELETE FROM events WHERE created_at < $1", &[&before])
                    .await;
            }
        }
    }
}

/// The stored events a listener has handled (bounded), so a catch-up after a reconnection and
/// the live notifications deliver each row once.
#[derive(Default)]
struct Seen {
    ids: std::collections::HashSet<i64>,
    order: std::collections::VecDeque<i64>,
    /// The highest stored id when this listener first connected: older rows are never
    /// replayed.
    floor: Option<i64>,
    max: i64,
}

impl Seen {
    /// Records `id`; false when it was handled already.
    fn first_time(&mut self, id: i64) -> bool {
        if self.floor.is_some_and(|f| id <= f) || !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > 4 * CATCH_UP_MARGIN as usize {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.max = self.max.max(id);
        true
    }
}

async fn listen_loop(
    url: String,
    node: String,
    queue: Arc<JobQueue>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = Seen::default();
    loop {
        let (client, mut rx) = match connect(&url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cluster events: cannot connect to listen: {e}");
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let ready = async {
            client
                .batch_execute(&format!(
                    "LISTEN {EVENTS}; LISTEN {CONTROL}; LISTEN {JOBS};"
                ))
                .await
                .map_err(|e| format!("LISTEN failed: {e}"))?;
            // Jobs queued while we were not listening.
            queue.wake_worker();
            catch_up(&client, &mut seen, &queue, &node).await
        };
        if let Err(e) = ready.await {
            tracing::warn!("cluster events: {e}");
            tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        }
        loop {
            let msg = tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                m = rx.recv() => m,
            };
            let Some(AsyncMessage::Notification(n)) = msg else {
                if msg.is_none() {
                    break; // connection lost: reconnect
                }
                continue;
            };
            let mut text = n.payload().to_string();
            if let Some(id) = text.strip_prefix('@').and_then(|i| i.parse::<i64>().ok()) {
                if !seen.first_time(id) {
                    continue;
                }
                match client
                    .query_opt("SELECT payload FROM events WHERE id = $1", &[&id])
                    .await
                {
                    Ok(Some(r)) => text = r.get(0),
                    _ => continue,
                }
            }
            deliver(&queue, &node, n.channel(), text);
        }
    }
}

/// After LISTEN: the first time, notes the highest stored event (the floor: older rows are
/// never replayed); after a reconnection, delivers the stored events not handled yet.
async fn catch_up(
    client: &Client,
    seen: &mut Seen,
    queue: &JobQueue,
    node: &str,
) -> Result<(), String> {
    let Some(floor) = seen.floor else {
        let max: i64 = client
            .query_one("SELECT COALESCE(MAX(id), 0) FROM events", &[])
            .await
            .map_err(|e| format!("cannot read the events table: {e}"))?
            .get(0);
        seen.floor = Some(max);
        seen.max = max;
        return Ok(());
    };
    let from = (seen.max - CATCH_UP_MARGIN).max(floor);
    let rows = client
        .query(
            "SELECT id, payload FROM events WHERE id > $1 ORDER BY id",
            &[&from],
        )
        .await
        .map_err(|e| format!("cannot catch up: {e}"))?;
    let mut n = 0;
    for r in rows {
        if seen.first_time(r.get(0)) {
            n += 1;
            deliver(queue, node, EVENTS, r.get(1));
        }
    }
    if n > 0 {
        tracing::info!("cluster events: {n} stored events caught up after reconnecting");
    }
    Ok(())
}

/// Hands one message from another node to this node's queue.
fn deliver(queue: &JobQueue, node: &str, channel: &str, text: String) {
    match channel {
        JOBS => queue.wake_worker(),
        EVENTS => {
            if let Some(out) = decode(&text) {
                if out.origin.as_deref() != Some(node) {
                    queue.inject_remote(out);
                }
            }
        }
        CONTROL => {
            let Ok(m) = serde_json::from_str::<Json>(&text) else {
                return;
            };
            if m["o"].as_str() == Some(node) {
                return;
            }
            if m["type"] == "interrupt" {
                queue.interrupt_local(m["prompt_id"].as_str());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let o = Outbound {
            to: Some("c1".into()),
            prompt_id: Some("p".into()),
            payload: WsPayload::Text(r#"{"type":"executing"}"#.into()),
            origin: None,
        };
        let back = decode(&encode("n1", &o)).unwrap();
        assert_eq!(back.to.as_deref(), Some("c1"));
        assert_eq!(back.origin.as_deref(), Some("n1"));
        let WsPayload::Text(t) = back.payload else {
            panic!("text")
        };
        assert_eq!(&*t, r#"{"type":"executing"}"#);
        let p = Outbound {
            to: None,
            prompt_id: None,
            payload: WsPayload::Preview {
                metadata: "{}".into(),
                image: crate::node::PreviewImage::png(vec![1, 2, 3]),
            },
            origin: None,
        };
        let WsPayload::Preview { image, .. } = decode(&encode("n", &p)).unwrap().payload else {
            panic!("preview")
        };
        assert_eq!(&*image.bytes, &[1, 2, 3]);
        assert_eq!(image.format.code(), 2);
    }
}
