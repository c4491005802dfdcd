//! The serverless deployments API under load, over real HTTP on 127.0.0.1, on a model-free
//! deployment (PrimitiveString -> PreviewAny; every request overrides the string, so nothing
//! is served from cache):
//!
//! - submit throughput and latency: 100 concurrent clients each POST `.../inference` N times;
//! - status-poll latency: 100 concurrent clients GET `.../status` of their requests;
//! - webhook delivery latency: from the job's `finished_at` in the store to the moment a local
//!   receiver gets the final event (signed, as in production).
//!
//!     cargo run --example serverless_bench [-- SUBMITS_PER_CLIENT]

use axum::routing::post;
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::ExecutorConfig;
use comfyrs::node::Registry;
use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::{App, ServerConfig};
use comfyrs::store::JobStore;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "bench-token";
const CLIENTS: usize = 100;

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[9..12]).parse().unwrap();
    (
        status,
        serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null),
    )
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn path_of(addr: SocketAddr, url: &Value) -> String {
    url.as_str()
        .unwrap()
        .strip_prefix(&format!("http://{addr}"))
        .unwrap()
        .to_string()
}

/// `n` submits in a row; returns (latencies, status paths).
async fn submitter(
    addr: SocketAddr,
    c: usize,
    n: usize,
    webhook: Option<String>,
) -> (Vec<Duration>, Vec<String>) {
    let mut lat = Vec::with_capacity(n);
    let mut paths = Vec::with_capacity(n);
    for j in 0..n {
        let mut body =
            json!({"overrides": {"1": {"inputs": {"value": format!("client {c} job {j}")}}}});
        if let Some(w) = &webhook {
            body["webhook"] = json!(w);
        }
        let t0 = Instant::now();
        let (st, r) = http(
            addr,
            "POST",
            "/prod/v1/deployments/echo/inference",
            &body.to_string(),
        )
        .await;
        lat.push(t0.elapsed());
        assert_eq!(st, 200, "{r}");
        paths.push(path_of(addr, &r["status_url"]));
    }
    (lat, paths)
}

#[tokio::main]
async fn main() {
    let per: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let deployments = dir.path().join("deployments");
    std::fs::create_dir_all(&deployments).unwrap();
    std::fs::write(
        deployments.join("echo.json"),
        json!({"id": "echo", "name": "echo", "workflow": {
            "1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}})
        .to_string(),
    )
    .unwrap();
    let store = JobStore::open(&dir.path().join("comfyrs.db")).unwrap();
    let app = App::new(
        Arc::new(Registry::with_builtin_nodes()),
        Arc::new(Environment::new(Paths::under(dir.path()))),
        Arc::new(store),
        ExecutorConfig::default(),
    );
    let mut serverless = ServerlessConfig {
        tokens: vec![ApiToken {
            name: "bench".into(),
            token: TOKEN.into(),
        }],
        deployments_dir: deployments,
        max_queue_depth: 1_000_000,
        ..Default::default()
    };
    serverless.webhooks.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    // The receiver listens on loopback, which the webhook SSRF guard refuses by default.
    serverless.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    let server = comfyrs::server::start(
        app,
        ServerConfig {
            port: 0,
            serverless,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = server.addr;

    // 1. Submit throughput.
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(submitter(addr, c, per, None)))
        .collect();
    let mut lat = Vec::new();
    let mut paths = Vec::new();
    for t in tasks {
        let (l, p) = t.await.unwrap();
        lat.extend(l);
        paths.push(p);
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort();
    println!("| measurement | clients | requests | p50 ms | p99 ms | per s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| submit (POST .../inference) | {CLIENTS} | {} | {:.2} | {:.2} | {:.0} |",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len() as f64 / wall
    );

    // 2. Status polls (while the queue drains, then after).
    let t0 = Instant::now();
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|ps| {
            tokio::spawn(async move {
                let mut l = Vec::with_capacity(ps.len() * 2);
                for _ in 0..2 {
                    for p in &ps {
                        let t = Instant::now();
                        let (st, _) = http(addr, "GET", p, "").await;
                        l.push(t.elapsed());
                        assert_eq!(st, 200);
                    }
                }
                l
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "| status poll (GET .../status) | {CLIENTS} | {} | {:.2} | {:.2} | {:.0} |",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len() as f64 / wall
    );
    // Let the queue drain before measuring webhooks.
    while server.queue.queue_remaining() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 3. Webhook delivery latency: job finished_at -> receiver.
    let got: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let g = got.clone();
    let recv = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let g = g.clone();
            async move {
                let now = chrono::Utc::now().timestamp_micros();
                let v: Value = serde_json::from_str(&body).unwrap();
                g.lock()
                    .unwrap()
                    .push((v["request_id"].as_str().unwrap().to_string(), now));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, recv).await.unwrap() });
    let hooks = (per * CLIENTS / 4).max(100);
    let n_clients = 10;
    let tasks: Vec<_> = (0..n_clients)
        .map(|c| {
            tokio::spawn(submitter(
                addr,
                1000 + c,
                hooks / n_clients,
                Some(format!("http://{raddr}/hook")),
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let want = (hooks / n_clients) * n_clients;
    let deadline = Instant::now() + Duration::from_secs(300);
    while got.lock().unwrap().len() < want {
        assert!(Instant::now() < deadline, "webhooks missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<Duration> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(id, at_us)| {
            let job = server.queue.store().get(id).unwrap().unwrap();
            let fin_us = job.finished_at.unwrap() * 1000;
            Duration::from_micros((at_us - fin_us).max(0) as u64)
        })
        .collect();
    lat.sort();
    println!(
        "| webhook delivery (finished_at -> receiver) | {n_clients} | {} | {:.2} | {:.2} | |",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    server.shutdown().await;
}
