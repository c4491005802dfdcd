//! Per-node progress of one run, sent whole as ComfyUI's `progress_state` event (spec §8.2):
//! every node start, progress update and finish re-sends the state of all nodes touched so far.
//!
//! ComfyUI's rules, kept here: a node that starts is `running` at 0 of 1; a progress update
//! sets value and max (still `running`); a finish sets `finished` with value = max. An output
//! node served from cache is only finished (so it shows as 1 of 1). A node whose call fails or
//! is interrupted gets no finish and stays `running`. Nodes never touched are not listed.

use super::events::{Event, EventSink};
use indexmap::IndexMap;
use serde_json::{json, Value as Json};
use std::sync::Mutex;

/// One node's entry: its state name and ComfyUI's numbers (0.0/1.0 floats until a progress
/// update brings the node's own integers).
struct NodeProgress {
    state: &'static str,
    value: Json,
    max: Json,
}

/// The progress of every touched node of one run, in the order they were first touched.
pub(super) struct ProgressStates<'a> {
    prompt_id: &'a str,
    nodes: Mutex<IndexMap<String, NodeProgress>>,
}

impl<'a> ProgressStates<'a> {
    pub(super) fn new(prompt_id: &'a str) -> Self {
        ProgressStates {
            prompt_id,
            nodes: Mutex::new(IndexMap::new()),
        }
    }

    /// The node starts running (before its `executing` event).
    pub(super) fn start(&self, node: &str, events: &dyn EventSink) {
        self.change(node, events, |p| {
            p.state = "running";
            p.value = json!(0.0);
            p.max = json!(1.0);
        });
    }

    /// A progress update of a running node (before its `progress` event).
    pub(super) fn update(&self, node: &str, value: u64, max: u64, events: &dyn EventSink) {
        self.change(node, events, |p| {
            p.state = "running";
            p.value = json!(value);
            p.max = json!(max);
        });
    }

    /// The node finished, or was served from cache (after its `executed` event).
    pub(super) fn finish(&self, node: &str, events: &dyn EventSink) {
        self.change(node, events, |p| {
            p.state = "finished";
            p.value = p.max.clone();
        });
    }

    /// Applies one change and emits the whole state while still holding the lock, so that
    /// parallel workers' snapshots go out in the order they were made.
    fn change(&self, node: &str, events: &dyn EventSink, f: impl FnOnce(&mut NodeProgress)) {
        if !events.wants_progress_state() {
            return;
        }
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let entry = nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeProgress {
                state: "pending",
                value: json!(0),
                max: json!(1),
            });
        f(entry);
        let snapshot: serde_json::Map<String, Json> = nodes
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    json!({
                        "value": p.value, "max": p.max, "state": p.state,
                        "node_id": id, "prompt_id": self.prompt_id,
                        "display_node_id": id, "parent_node_id": null, "real_node_id": id,
                    }),
                )
            })
            .collect();
        events.emit(Event::ProgressState {
            prompt_id: self.prompt_id.to_string(),
            nodes: Json::Object(snapshot),
        });
    }
}
