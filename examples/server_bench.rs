//! Submit-to-`execution_success` latency and throughput of `comfyrs serve`'s queue over real
//! HTTP + WebSocket, on a model-free workflow (PrimitiveString -> PreviewAny, a fresh string
//! per job so nothing is served from cache).
//!
//!     cargo run --example server_bench [-- JOBS_PER_CLIENT_CAP]
//!
//! Starts an in-process server on 127.0.0.1 and runs 1, 10 and 100 concurrent clients; each
//! client has its own WebSocket and submits its next job when the previous one succeeded.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::ExecutorConfig;
use comfyrs::node::Registry;
use comfyrs::server::{App, ServerConfig};
use comfyrs::store::JobStore;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn post_prompt(addr: SocketAddr, body: &Value) -> Value {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /prompt HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    serde_json::from_slice(&raw[split + 4..]).unwrap()
}

async fn client(addr: SocketAddr, id: usize, jobs: usize) -> Vec<Duration> {
    let cid = format!("bench-{id}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?clientId={cid}"))
        .await
        .unwrap();
    let _ = ws.next().await;
    let mut lat = Vec::with_capacity(jobs);
    for j in 0..jobs {
        let wf = json!({
            "1": {"class_type": "PrimitiveString", "inputs": {"value": format!("{cid} job {j}")}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
        });
        let t0 = Instant::now();
        let r = post_prompt(addr, &json!({"prompt": wf, "client_id": cid})).await;
        let pid = r["prompt_id"].as_str().unwrap().to_string();
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("socket closed");
            };
            let m: Value = serde_json::from_str(t.as_str()).unwrap();
            if m["type"] == "execution_success" && m["data"]["prompt_id"] == pid.as_str() {
                lat.push(t0.elapsed());
                break;
            }
        }
    }
    lat
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let cap: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(&dir.path().join("comfyrs.db")).unwrap();
    let app = App::new(
        Arc::new(Registry::with_builtin_nodes()),
        Arc::new(Environment::new(Paths::under(dir.path()))),
        Arc::new(store),
        ExecutorConfig::default(),
    );
    let server = comfyrs::server::start(
        app,
        ServerConfig {
            port: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = server.addr;
    println!("| clients | jobs | p50 ms | p99 ms | jobs/s |");
    println!("|---:|---:|---:|---:|---:|");
    for clients in [1usize, 10, 100] {
        let per = (cap / clients).clamp(2, 200);
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(client(addr, clients * 1000 + c, per)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let wall = t0.elapsed().as_secs_f64();
        all.sort();
        println!(
            "| {clients} | {} | {:.2} | {:.2} | {:.1} |",
            all.len(),
            pct(&all, 0.5),
            pct(&all, 0.99),
            all.len() as f64 / wall
        );
    }
    server.shutdown().await;
}
