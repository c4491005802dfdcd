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
//! a job's events arrive in the order they happened. A node that loses its database session
//! reconnects; events of the gap are lost to live listeners (webhooks reconcile from the
//! store, and clients read history).

use crate::queue::{JobQueue, Outbound, WsPayload};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub const EVENTS: &str = "comfyrs_events";
pub const CONTROL: &str = "comfyrs_control";
pub const JOBS: &str = "comfyrs_jobs";

/// Larger payloads go through the `events` table.
const NOTIFY_MAX: usize = 7000;
/// Stored large events older than this are deleted.
const KEEP_EVENTS: Duration = Duration::from_secs(300);

/// A message between nodes.
fn encode(node: &str, out: &Outbound) -> String {
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

fn decode(text: &str) -> Option<Outbound> {
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
    let (client, mut conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
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

/// Sends `payload` on `channel` (through the `events` table when large).
async fn notify(client: &Client, channel: &str, payload: &str) -> Result<(), String> {
    let text = if payload.len() < NOTIFY_MAX {
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
    loop {
        let (channel, payload) = tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            m = events.recv() => match m {
                Ok(o) if o.origin.is_none() => (EVENTS, encode(&node, &o)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("cluster events: {n} local events not forwarded (lagging)");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            c = control.recv() => match c {
                Some(mut c) => {
                    c["o"] = json!(node);
                    (CONTROL, c.to_string())
                }
                None => continue,
            },
        };
        for attempt in 0..3 {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = match connect(&url).await {
                    Ok((c, _rx)) => Some(c),
                    Err(e) => {
                        tracing::warn!("cluster events: cannot connect to publish: {e}");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        continue;
                    }
                };
            }
            let c = client.as_ref().expect("connected above");
            match notify(c, channel, &payload).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("cluster events: cannot publish: {e}");
                    client = None;
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

async fn listen_loop(
    url: String,
    node: String,
    queue: Arc<JobQueue>,
    mut stop: watch::Receiver<bool>,
) {
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
        if let Err(e) = client
            .batch_execute(&format!(
                "LISTEN {EVENTS}; LISTEN {CONTROL}; LISTEN {JOBS};"
            ))
            .await
        {
            tracing::warn!("cluster events: LISTEN failed: {e}");
            tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        }
        // Jobs queued while we were not listening.
        queue.wake_worker();
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
                match client
                    .query_opt("SELECT payload FROM events WHERE id = $1", &[&id])
                    .await
                {
                    Ok(Some(r)) => text = r.get(0),
                    _ => continue,
                }
            }
            match n.channel() {
                JOBS => queue.wake_worker(),
                EVENTS => {
                    if let Some(out) = decode(&text) {
                        if out.origin.as_deref() != Some(node.as_str()) {
                            queue.inject_remote(out);
                        }
                    }
                }
                CONTROL => {
                    let Ok(m) = serde_json::from_str::<Json>(&text) else {
                        continue;
                    };
                    if m["o"].as_str() == Some(node.as_str()) {
                        continue;
                    }
                    if m["type"] == "interrupt" {
                        queue.interrupt_local(m["prompt_id"].as_str());
                    }
                }
                _ => {}
            }
        }
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
