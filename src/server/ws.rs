//! `GET /ws?clientId=…` (spec §8): the status message on connect, feature-flag negotiation,
//! then every queue event addressed to this client or to everyone. Also the binary frame
//! layouts (§8.3) for previews and progress text.

use crate::queue::WsPayload;
use crate::server::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::sync::broadcast::error::RecvError;

/// Binary event types.
pub const PREVIEW_IMAGE: u32 = 1;
pub const TEXT: u32 = 3;
pub const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// Image formats of a `PREVIEW_IMAGE` frame.
pub const FORMAT_JPEG: u32 = 1;
pub const FORMAT_PNG: u32 = 2;

/// Event 1: `u32 BE type, u32 BE format, image bytes` (for clients without
/// `supports_preview_metadata`).
pub fn preview_frame(format: u32, image: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + image.len());
    f.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
    f.extend_from_slice(&format.to_be_bytes());
    f.extend_from_slice(image);
    f
}

/// Event 4: `u32 BE type, u32 BE len(json), json, image bytes`; `meta` is ComfyUI's metadata
/// object (`node_id`, `prompt_id`, `display_node_id`, `parent_node_id`, `real_node_id`,
/// `image_type`), serialised.
pub fn preview_with_metadata_frame(meta: &str, image: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + meta.len() + image.len());
    f.extend_from_slice(&PREVIEW_IMAGE_WITH_METADATA.to_be_bytes());
    f.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    f.extend_from_slice(meta.as_bytes());
    f.extend_from_slice(image);
    f
}

/// Event 3: `u32 BE type, u32 BE len(node_id), node_id, text`.
pub fn text_frame(node_id: &str, text: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + node_id.len() + text.len());
    f.extend_from_slice(&TEXT.to_be_bytes());
    f.extend_from_slice(&(node_id.len() as u32).to_be_bytes());
    f.extend_from_slice(node_id.as_bytes());
    f.extend_from_slice(text.as_bytes());
    f
}

/// The longest `clientId` (it is echoed in every event of the client).
pub const MAX_CLIENT_ID: usize = 256;

/// The largest message a client may send.
pub const MAX_INCOMING: usize = 64 * 1024;

pub async fn handler(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let sid = q
        .get("clientId")
        .filter(|c| !c.is_empty())
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    if sid.len() > MAX_CLIENT_ID {
        return crate::server::error::ApiError::bad_request(format!(
            "clientId is {} bytes long; at most {MAX_CLIENT_ID} are allowed",
            sid.len()
        ))
        .into_response();
    }
    // Clients send only small JSON messages (feature flags); a frame or message above
    // this is refused by the socket instead of buffered.
    ws.max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        .on_upgrade(move |socket| session(s, sid, socket))
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn session(s: AppState, sid: String, mut socket: WebSocket) {
    let mut events = s.queue.subscribe();
    let mut shutdown = s.shutdown.clone();
    let hello = json!({"type": "status", "data": {"status": s.queue.status_json(), "sid": sid}});
    if socket.send(text(hello)).await.is_err() {
        return;
    }
    if let Some(r) = s.queue.running() {
        if r.client_id.as_deref() == Some(sid.as_str()) {
            if let Some(n) = r.node {
                let _ = socket
                    .send(text(json!({"type": "executing", "data": {"node": n}})))
                    .await;
            }
        }
    }
    let mut first_message = true;
    let mut client_flags = Value::Object(Default::default());
    // ComfyUI sends the old-style preview frame after the step's `progress` message (the
    // metadata form before it, which is the order events arrive in): a type-1 frame waits
    // here until the next text message has gone out.
    let mut held_preview: Option<Message> = None;
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|v| *v).await; } => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Text(t))) => {
                        match serde_json::from_str::<Value>(t.as_str()) {
                            Ok(v) if first_message && v["type"] == "feature_flags" => {
                                client_flags = v["data"].clone();
                                let reply = json!({"type": "feature_flags",
                                    "data": crate::server::routes::info::server_features(&s)});
                                if socket.send(text(reply)).await.is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(%sid, "invalid websocket message: {e}"),
                        }
                        first_message = false;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            ev = events.recv() => {
                match ev {
                    Ok(out) => {
                        if out.to.as_deref().is_some_and(|to| to != sid) {
                            continue;
                        }
                        let (msg, then) = match out.payload {
                            WsPayload::Text(t) => {
                                (Message::Text(t.as_ref().into()), held_preview.take())
                            }
                            // ComfyUI sends the metadata form only to clients that said
                            // they support it.
                            WsPayload::Preview { metadata, image }
                                if client_flags["supports_preview_metadata"] == true =>
                            {
                                let frame = preview_with_metadata_frame(&metadata, &image.bytes);
                                (Message::Binary(frame.into()), None)
                            }
                            WsPayload::Preview { image, .. } => {
                                let frame = preview_frame(image.format.code(), &image.bytes);
                                let frame = Message::Binary(frame.into());
                                match held_preview.replace(frame) {
                                    Some(older) => (older, None),
                                    None => continue,
                                }
                            }
                        };
                        if socket.send(msg).await.is_err() {
                            break;
                        }
                        if let Some(preview) = then {
                            if socket.send(preview).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(%sid, "websocket client fell behind: {n} messages dropped");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let f = preview_frame(FORMAT_PNG, b"abc");
        assert_eq!(&f[..8], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(&f[8..], b"abc");
        let t = text_frame("7", "hi");
        assert_eq!(t, [0, 0, 0, 3, 0, 0, 0, 1, b'7', b'h', b'i']);
        let meta = json!({"node_id": "3", "prompt_id": "p", "display_node_id": "3",
                          "parent_node_id": null, "real_node_id": "3", "image_type": "image/jpeg"});
        let m = preview_with_metadata_frame(&meta.to_string(), b"x");
        let len = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        let meta: Value = serde_json::from_slice(&m[8..8 + len]).unwrap();
        assert_eq!(meta["node_id"], "3");
        assert_eq!(meta["image_type"], "image/jpeg");
        assert_eq!(&m[8 + len..], b"x");
        assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), 4);
    }
}
