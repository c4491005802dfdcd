//! The log lines the frontend's terminal panel shows (ComfyUI's `app/logger.py` and
//! TerminalService): the last 300 lines kept in memory by a tracing layer, `GET /internal/logs`
//! and `/internal/logs/raw`, and `logs` WebSocket messages to the clients that subscribed with
//! `PATCH /internal/logs/subscribe`.

use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};
use tokio::sync::broadcast;

const KEEP: usize = 300;

/// The terminal size reported with the entries (ComfyUI's default when it has no terminal).
pub const SIZE: (u32, u32) = (80, 24);

struct Buffer {
    entries: Mutex<VecDeque<Value>>,
    subscribers: Mutex<HashSet<String>>,
    tx: broadcast::Sender<Value>,
}

fn buffer() -> &'static Buffer {
    static B: OnceLock<Buffer> = OnceLock::new();
    B.get_or_init(|| Buffer {
        entries: Mutex::new(VecDeque::with_capacity(KEEP)),
        subscribers: Mutex::new(HashSet::new()),
        tx: broadcast::channel(1024).0,
    })
}

/// Records one line (`m` ends with a newline, as ComfyUI's entries do).
pub fn record(message: String) {
    let t = chrono::Local::now()
        .naive_local()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    let entry = json!({"t": t, "m": message});
    let b = buffer();
    {
        let mut e = b.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() == KEEP {
            e.pop_front();
        }
        e.push_back(entry.clone());
    }
    let _ = b.tx.send(entry);
}

pub fn entries() -> Vec<Value> {
    buffer()
        .entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

pub fn set_subscribed(client_id: &str, on: bool) {
    let mut s = buffer()
        .subscribers
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if on {
        s.insert(client_id.to_string());
    } else {
        s.remove(client_id);
    }
}

fn subscribers() -> Vec<String> {
    buffer()
        .subscribers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// The `logs` WebSocket message for some entries.
pub fn message(entries: Vec<Value>) -> Value {
    json!({"type": "logs", "data": {"entries": entries,
                                    "size": {"cols": SIZE.0, "rows": SIZE.1}}})
}

/// Forwards new lines to subscribed clients until `stop` flips.
pub async fn forward(
    queue: std::sync::Arc<crate::queue::JobQueue>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rx = buffer().tx.subscribe();
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            e = rx.recv() => match e {
                Ok(entry) => {
                    for c in subscribers() {
                        queue.send_to_client(&c, message(vec![entry.clone()]));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}

/// A tracing layer recording every event as `LEVEL target: message` lines.
pub struct CaptureLayer;

struct MessageVisitor(String);

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}{}", self.0);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = format!("{value}{}", self.0);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let meta = event.metadata();
        record(format!("{} {}: {}\n", meta.level(), meta.target(), v.0));
    }
}
