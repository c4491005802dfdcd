//! The one event stream of a run, with ComfyUI's event names and payloads (spec §8.2). The CLI
//! renders it as progress bars; the server forwards it unchanged over WebSocket.

use crate::node::PreviewImage;
use serde_json::{json, Value as Json};
use std::sync::Mutex;

/// Milliseconds since the Unix epoch (ComfyUI's `timestamp`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ExecutionStart {
        prompt_id: String,
        timestamp: u64,
    },
    ExecutionCached {
        prompt_id: String,
        nodes: Vec<String>,
        timestamp: u64,
    },
    /// `node: None` is the "prompt finished" signal, sent by whoever records history.
    Executing {
        prompt_id: String,
        node: Option<String>,
    },
    Progress {
        prompt_id: String,
        node: String,
        value: u64,
        max: u64,
    },
    Executed {
        prompt_id: String,
        node: String,
        output: Option<Json>,
    },
    /// The state of every node touched so far (`{id: {value, max, state, node_id, ...}}`),
    /// re-sent on each node start, progress update and finish.
    ProgressState {
        prompt_id: String,
        nodes: Json,
    },
    ExecutionSuccess {
        prompt_id: String,
        timestamp: u64,
    },
    /// The payload ComfyUI sends (node_id, node_type, executed, exception_message, ...).
    ExecutionError {
        prompt_id: String,
        data: Json,
    },
    ExecutionInterrupted {
        prompt_id: String,
        data: Json,
    },
    /// An image of the running node: a latent preview (JPEG) or a SaveImageWebsocket image
    /// (PNG). Sent over WebSocket as a binary frame, not as JSON: `data()` is the frame's
    /// metadata (ComfyUI's `PREVIEW_IMAGE_WITH_METADATA`).
    Preview {
        prompt_id: String,
        node: String,
        image: PreviewImage,
    },
    /// A message a node sends its frontend extension (ComfyUI's
    /// `PromptServer.instance.send_sync(event, data, sid)` from node code): `{"type": event,
    /// "data": data}`, to the prompt's client, or to every client when `broadcast`.
    Custom {
        prompt_id: String,
        event: String,
        data: Json,
        broadcast: bool,
    },
}

impl Event {
    /// ComfyUI's `type` field.
    pub fn kind(&self) -> &str {
        match self {
            Event::ExecutionStart { .. } => "execution_start",
            Event::ExecutionCached { .. } => "execution_cached",
            Event::Executing { .. } => "executing",
            Event::Progress { .. } => "progress",
            Event::Executed { .. } => "executed",
            Event::ProgressState { .. } => "progress_state",
            Event::ExecutionSuccess { .. } => "execution_success",
            Event::ExecutionError { .. } => "execution_error",
            Event::ExecutionInterrupted { .. } => "execution_interrupted",
            Event::Preview { .. } => "preview_image",
            Event::Custom { event, .. } => event,
        }
    }

    pub fn prompt_id(&self) -> &str {
        match self {
            Event::ExecutionStart { prompt_id, .. }
            | Event::ExecutionCached { prompt_id, .. }
            | Event::Executing { prompt_id, .. }
            | Event::Progress { prompt_id, .. }
            | Event::Executed { prompt_id, .. }
            | Event::ProgressState { prompt_id, .. }
            | Event::ExecutionSuccess { prompt_id, .. }
            | Event::ExecutionError { prompt_id, .. }
            | Event::ExecutionInterrupted { prompt_id, .. }
            | Event::Preview { prompt_id, .. }
            | Event::Custom { prompt_id, .. } => prompt_id,
        }
    }

    /// ComfyUI's `data` field.
    pub fn data(&self) -> Json {
        match self {
            Event::ExecutionStart {
                prompt_id,
                timestamp,
            }
            | Event::ExecutionSuccess {
                prompt_id,
                timestamp,
            } => json!({"prompt_id": prompt_id, "timestamp": timestamp}),
            Event::ExecutionCached {
                prompt_id,
                nodes,
                timestamp,
            } => json!({"nodes": nodes, "prompt_id": prompt_id, "timestamp": timestamp}),
            Event::Executing { prompt_id, node } => match node {
                Some(n) => json!({"node": n, "display_node": n, "prompt_id": prompt_id}),
                None => json!({"node": null, "prompt_id": prompt_id}),
            },
            Event::Progress {
                prompt_id,
                node,
                value,
                max,
            } => json!({"value": value, "max": max, "prompt_id": prompt_id, "node": node}),
            Event::Executed {
                prompt_id,
                node,
                output,
            } => {
                json!({"node": node, "display_node": node, "output": output, "prompt_id": prompt_id})
            }
            Event::ProgressState { prompt_id, nodes } => {
                json!({"prompt_id": prompt_id, "nodes": nodes})
            }
            Event::ExecutionError { data, .. } | Event::ExecutionInterrupted { data, .. } => {
                data.clone()
            }
            Event::Preview {
                prompt_id,
                node,
                image,
            } => json!({"node_id": node, "prompt_id": prompt_id, "display_node_id": node,
                        "parent_node_id": null, "real_node_id": node,
                        "image_type": image.format.mime()}),
            Event::Custom { data, .. } => data.clone(),
        }
    }

    /// `{"type": ..., "data": ...}`, the WebSocket frame.
    pub fn to_message(&self) -> Json {
        json!({"type": self.kind(), "data": self.data()})
    }

    /// Whether ComfyUI records this event in the history entry's `status.messages`.
    pub fn goes_in_history(&self) -> bool {
        matches!(
            self,
            Event::ExecutionStart { .. }
                | Event::ExecutionCached { .. }
                | Event::ExecutionSuccess { .. }
                | Event::ExecutionError { .. }
                | Event::ExecutionInterrupted { .. }
        )
    }
}

/// Where a run's events go.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
    /// Whether this sink takes `progress_state` events. Each one carries the state of every
    /// node touched so far (ComfyUI's payload), so a run of N nodes costs O(N²) to report;
    /// sinks that discard events say no and the run skips building them.
    fn wants_progress_state(&self) -> bool {
        true
    }
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

// The server's queue forwards events over a tokio channel (the `server` feature).
#[cfg(feature = "server")]
impl EventSink for tokio::sync::mpsc::UnboundedSender<Event> {
    fn emit(&self, event: Event) {
        // A closed receiver means nobody listens any more; the run goes on.
        let _ = self.send(event);
    }
}

/// Collects events in memory (tests, history).
#[derive(Default)]
pub struct EventLog {
    pub events: Mutex<Vec<Event>>,
}

impl EventLog {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl EventSink for EventLog {
    fn emit(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

/// Discards events.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: Event) {}
    fn wants_progress_state(&self) -> bool {
        false
    }
}
