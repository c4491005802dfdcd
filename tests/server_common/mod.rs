//! Shared by the server tests: a minimal HTTP/1.1 client over TcpStream, a WebSocket helper,
//! test nodes, and an in-process server with a custom registry.
#![allow(dead_code)]

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::ExecutorConfig;
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry,
};
use comfyrs::server::{App, RunningServer, ServerConfig};
use comfyrs::store::JobStore;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..nl])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").await
}

pub async fn post_json(addr: SocketAddr, path: &str, v: &Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        v.to_string().as_bytes(),
    )
    .await
}

/// A multipart/form-data body: `(name, Some(filename), bytes)` for files.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----comfyrsTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub async fn upload(addr: SocketAddr, path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Resp {
    let (ct, body) = multipart(parts);
    request(addr, "POST", path, &[("Content-Type", &ct)], &body).await
}

pub fn png_bytes(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([(x as u8).wrapping_add(seed), y as u8, seed, 200])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Writes a PNG into the output folder and shows it, like SaveImage.
pub struct TestSavePng;
static COUNTER: AtomicU32 = AtomicU32::new(1);

impl Node for TestSavePng {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestSavePng")
            .category("_test")
            .input(InputSpec::string("prefix").default("test"))
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let prefix = i.string("prefix")?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}_{n:05}_.png");
        let dir = ctx.env.paths.output.clone();
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::msg(e.to_string()))?;
        std::fs::write(dir.join(&name), png_bytes(8, 6, n as u8))
            .map_err(|e| NodeError::msg(e.to_string()))?;
        let mut ui = Map::new();
        ui.insert(
            "images".into(),
            json!([{"filename": name, "subfolder": "", "type": "output"}]),
        );
        Ok(NodeOutput::ui(ui))
    }
}

/// Panics when run.
pub struct TestPanic;
impl Node for TestPanic {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestPanic")
            .category("_test")
            .input(InputSpec::string("why").default("boom"))
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        panic!("test panic: {}", i.string("why")?)
    }
}

pub fn test_registry() -> Registry {
    let mut r = Registry::with_builtin_nodes();
    comfyrs::server::dev_nodes::register(&mut r).unwrap();
    r.register(TestSavePng).unwrap();
    r.register(TestPanic).unwrap();
    r
}

pub struct TestServer {
    pub server: RunningServer,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn paths(&self) -> Paths {
        Paths::under(self.dir.path())
    }
}

/// An in-process server on 127.0.0.1 with an ephemeral port and its own data dir.
pub async fn start(config: ServerConfig) -> TestServer {
    start_in(tempfile::tempdir().unwrap(), None, config).await
}

/// Like [`start`], in a given data dir (a restart reuses it) and optionally with another
/// models root (the tiny fixture model: `fixtures/models`).
pub async fn start_in(
    dir: tempfile::TempDir,
    models: Option<&std::path::Path>,
    config: ServerConfig,
) -> TestServer {
    start_with(dir, models, config, |_| {}).await
}

/// Like [`start_in`], with the environment adjusted by `tweak` (e.g. previews on).
pub async fn start_with(
    dir: tempfile::TempDir,
    models: Option<&std::path::Path>,
    config: ServerConfig,
    tweak: impl FnOnce(&mut Environment),
) -> TestServer {
    let mut paths = Paths::under(dir.path());
    if let Some(m) = models {
        // The given root first, the data dir's own models/ second (for files a test writes).
        paths.model_roots = vec![m.to_path_buf(), dir.path().join("models")];
    }
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let store = JobStore::open(&dir.path().join("comfyrs.db")).unwrap();
    let mut env = Environment::new(paths);
    tweak(&mut env);
    let app = App::new(
        Arc::new(test_registry()),
        Arc::new(env),
        Arc::new(store),
        ExecutorConfig::default(),
    );
    let server = comfyrs::server::start(app, ServerConfig { port: 0, ..config })
        .await
        .unwrap();
    let addr = server.addr;
    TestServer { server, addr, dir }
}

impl TestServer {
    /// Shuts the server down and hands back its data dir (for a restart).
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.shutdown().await;
        self.dir
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(addr: SocketAddr, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?{query}"))
        .await
        .expect("websocket connect");
    ws
}

/// The next JSON message (binary frames are skipped), with a timeout.
pub async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("websocket message within 30 s")
            .expect("open socket")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

pub async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Messages until `executing {node: null, prompt_id}`, inclusive.
pub async fn ws_until_done(ws: &mut Ws, prompt_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let m = ws_next(ws).await;
        let done = m["type"] == "executing"
            && m["data"]["node"].is_null()
            && m["data"]["prompt_id"] == prompt_id;
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Polls GET /history/{id} until it has an entry.
pub async fn wait_history(addr: SocketAddr, id: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let h = get(addr, &format!("/history/{id}")).await.json();
        if let Some(e) = h.get(id) {
            return e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no history for {id} after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls GET /queue until `pred` holds.
pub async fn wait_queue(addr: SocketAddr, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    wait_queue_at(addr, "/queue", secs, pred).await
}

/// [`wait_queue`] through `path` (e.g. `/queue?token=T` on a server with tokens).
pub async fn wait_queue_at(
    addr: SocketAddr,
    path: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let q = get(addr, path).await.json();
        if pred(&q) {
            return q;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue never matched: {q}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn text_workflow(text: &str) -> Value {
    json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": text}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    })
}

pub fn sleep_workflow(ms: u64, text: &str) -> Value {
    json!({"1": {"class_type": "DevSleep", "inputs": {"ms": ms, "text": text}}})
}
