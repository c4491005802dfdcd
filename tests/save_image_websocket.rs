//! SaveImageWebsocket over a real WebSocket, against the traffic ComfyUI 0.3.64 produced for the
//! same prompt (tests/data/save_image_websocket_ref.json, made by
//! tests/data/gen_save_image_websocket_ref.py): the frames' 8-byte header (PREVIEW_IMAGE, PNG)
//! or the metadata form byte for byte, the order of the messages around them, the progress
//! values, and the PNG pixels; only the client that queued the prompt receives the images and
//! nothing is saved.

mod server_common;

use base64::Engine;
use comfyrs::server::ServerConfig;
use futures_util::StreamExt;
use serde_json::{json, Value};
use server_common::*;
use tokio_tungstenite::tungstenite::Message;

fn reference() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/save_image_websocket_ref.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// One received message: a JSON text message or a binary frame.
#[derive(Debug, Clone)]
enum Msg {
    Text(Value),
    Binary(Vec<u8>),
}

impl Msg {
    fn kind(&self) -> String {
        match self {
            Msg::Text(v) => v["type"].as_str().unwrap_or("").to_string(),
            Msg::Binary(_) => "binary".into(),
        }
    }
}

/// The reference's messages for one client.
fn ref_messages(r: &Value, which: &str) -> (Vec<Msg>, String) {
    let msgs = r[which]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m.get("text") {
            Some(t) => Msg::Text(t.clone()),
            None => Msg::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(m["binary"].as_str().unwrap())
                    .unwrap(),
            ),
        })
        .collect();
    (msgs, r[which]["prompt_id"].as_str().unwrap().to_string())
}

/// Messages until `executing {node: null, prompt_id}`, binary frames included.
async fn until_done(ws: &mut Ws, prompt_id: &str) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .expect("websocket message within 60 s")
            .expect("open socket")
            .expect("frame");
        match msg {
            Message::Binary(b) => out.push(Msg::Binary(b.to_vec())),
            Message::Text(t) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                let done = m["type"] == "executing"
                    && m["data"]["node"].is_null()
                    && m["data"]["prompt_id"] == prompt_id;
                out.push(Msg::Text(m));
                if done {
                    return out;
                }
            }
            _ => {}
        }
    }
}

/// The messages from `executing` the SaveImageWebsocket node through `execution_success`.
fn save_node_part(msgs: &[Msg]) -> Vec<Msg> {
    let start = msgs
        .iter()
        .position(
            |m| matches!(m, Msg::Text(v) if v["type"] == "executing" && v["data"]["node"] == "2"),
        )
        .expect("executing node 2");
    let end = msgs
        .iter()
        .position(|m| m.kind() == "execution_success")
        .expect("execution_success");
    msgs[start..=end].to_vec()
}

fn binaries(msgs: &[Msg]) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Binary(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn progress(msgs: &[Msg]) -> Vec<Value> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Text(v) if v["type"] == "progress" => Some(json!([
                v["data"]["value"],
                v["data"]["max"],
                v["data"]["node"]
            ])),
            _ => None,
        })
        .collect()
}

/// A PNG's pixels as 8-bit RGB (the frames are RGB PNGs, as Pillow writes them).
fn png_pixels(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .expect("a decodable PNG");
    assert_eq!(img.color(), image::ColorType::Rgb8);
    (img.width(), img.height(), img.to_rgb8().into_raw())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_reach_the_queuing_client_as_comfyui_sends_them() {
    let r = reference();
    let prompt = r["prompt"].clone();
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;

    let mut plain = ws_connect(addr, "clientId=plain").await;
    assert_eq!(ws_next(&mut plain).await["type"], "status");
    let mut meta = ws_connect(addr, "clientId=meta").await;
    assert_eq!(ws_next(&mut meta).await["type"], "status");
    ws_send(
        &mut meta,
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}}),
    )
    .await;
    assert_eq!(ws_next(&mut meta).await["type"], "feature_flags");
    let mut other = ws_connect(addr, "clientId=other").await;
    assert_eq!(ws_next(&mut other).await["type"], "status");

    // The expected image: EmptyImage's color 0x3366CC on every pixel of a 5x3 image.
    let want: Vec<u8> = [0x33u8, 0x66, 0xCC].repeat(15);

    // 1. A client without feature flags: PREVIEW_IMAGE frames, type 1, format 2 (PNG).
    let (ref_msgs, _) = ref_messages(&r, "legacy");
    let q = post_json(
        addr,
        "/prompt",
        &json!({"prompt": prompt, "client_id": "plain"}),
    )
    .await;
    assert_eq!(q.status, 200, "{}", q.json());
    let id = q.json()["prompt_id"].as_str().unwrap().to_string();
    let got = until_done(&mut plain, &id).await;
    let (ours, theirs) = (save_node_part(&got), save_node_part(&ref_msgs));
    let kinds = |m: &[Msg]| m.iter().map(Msg::kind).collect::<Vec<_>>();
    assert_eq!(kinds(&ours), kinds(&theirs));
    assert_eq!(progress(&ours), progress(&theirs));
    assert_eq!(
        progress(&ours),
        vec![json!([0, 2, "2"]), json!([1, 2, "2"])]
    );
    assert!(
        got.iter().all(|m| m.kind() != "executed"),
        "SaveImageWebsocket has no UI output, so ComfyUI sends no `executed`"
    );
    let (frames, ref_frames) = (binaries(&ours), binaries(&theirs));
    assert_eq!(frames.len(), 2);
    for (f, rf) in frames.iter().zip(&ref_frames) {
        assert_eq!(f[..8], rf[..8], "the 8-byte header");
        assert_eq!(f[..8], [0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(png_pixels(&f[8..]), png_pixels(&rf[8..]));
        assert_eq!(png_pixels(&f[8..]), (5, 3, want.clone()));
    }

    // 2. A client with supports_preview_metadata: PREVIEW_IMAGE_WITH_METADATA, the metadata
    // JSON byte for byte as ComfyUI serialises it.
    let (ref_msgs, ref_id) = ref_messages(&r, "metadata");
    let q = post_json(
        addr,
        "/prompt",
        &json!({"prompt": prompt, "client_id": "meta"}),
    )
    .await;
    let id2 = q.json()["prompt_id"].as_str().unwrap().to_string();
    let got = until_done(&mut meta, &id2).await;
    let (ours, theirs) = (save_node_part(&got), save_node_part(&ref_msgs));
    assert_eq!(kinds(&ours), kinds(&theirs));
    assert_eq!(progress(&ours), progress(&theirs));
    let (frames, ref_frames) = (binaries(&ours), binaries(&theirs));
    assert_eq!(frames.len(), 2);
    for (f, rf) in frames.iter().zip(&ref_frames) {
        let len = u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize;
        let ref_len = u32::from_be_bytes(rf[4..8].try_into().unwrap()) as usize;
        assert_eq!(f[..4], [0, 0, 0, 4]);
        let ref_meta = String::from_utf8(rf[8..8 + ref_len].to_vec())
            .unwrap()
            .replace(&ref_id, &id2);
        assert_eq!(String::from_utf8(f[8..8 + len].to_vec()).unwrap(), ref_meta);
        assert_eq!(png_pixels(&f[8 + len..]), png_pixels(&rf[8 + ref_len..]));
    }

    // 3. The third client received none of those images (one socket's messages keep the
    // queue's order): the only frames it sees are its own run's two, after that run started.
    let q = post_json(
        addr,
        "/prompt",
        &json!({"prompt": prompt, "client_id": "other"}),
    )
    .await;
    let id3 = q.json()["prompt_id"].as_str().unwrap().to_string();
    let got = until_done(&mut other, &id3).await;
    assert_eq!(binaries(&got).len(), 2);
    let started = got
        .iter()
        .position(|m| matches!(m, Msg::Text(v) if v["type"] == "execution_start" && v["data"]["prompt_id"] == id3.as_str()))
        .unwrap();
    assert!(got[..started].iter().all(|m| m.kind() != "binary"));

    // Nothing saved; history has no output for the node, as ComfyUI's has none.
    let h = wait_history(addr, &id, 30).await;
    assert_eq!(h["outputs"], json!({}));
    assert_eq!(h["status"]["status_str"], "success");
    let out_dir = t.paths().output;
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
    t.stop().await;
}

#[tokio::test]
async fn schema_matches_comfyui() {
    let t = start(ServerConfig::default()).await;
    let info = get(t.addr, "/object_info/SaveImageWebsocket").await.json();
    // ComfyUI 0.3.64's /object_info/SaveImageWebsocket.
    assert_eq!(
        info,
        json!({"SaveImageWebsocket": {"input": {"required": {"images": ["IMAGE"]}},
            "input_order": {"required": ["images"]}, "output": [], "output_is_list": [],
            "output_name": [], "name": "SaveImageWebsocket",
            "display_name": "SaveImageWebsocket", "description": "",
            "python_module": "custom_nodes.websocket_image_save", "category": "api/image",
            "output_node": true}})
    );
    t.stop().await;
}

#[tokio::test]
async fn a_latent_is_refused_naming_the_node_and_input() {
    let t = start(ServerConfig::default()).await;
    let prompt = json!({
        "1": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    });
    let q = post_json(t.addr, "/prompt", &json!({"prompt": prompt})).await;
    assert_eq!(q.status, 400);
    let e = q.json();
    let node = &e["node_errors"]["2"];
    assert_eq!(node["class_type"], "SaveImageWebsocket");
    assert_eq!(node["errors"][0]["type"], "return_type_mismatch");
    assert_eq!(node["errors"][0]["extra_info"]["input_name"], "images");
    t.stop().await;
}
