//! Submit-to-`execution_success` latency and throughput of a ComfyUI-API server's queue over
//! real HTTP + WebSocket, on a model-free workflow (PrimitiveString -> PreviewAny, a fresh
//! string per job so nothing is served from cache).
//!
//!     cargo run --example server_bench [-- JOBS]                     # in-process comfyrs
//!     cargo run --example server_bench -- --url http://127.0.0.1:8288 [JOBS]   # any server
//!
//! Without `--url` it starts an in-process `comfyrs` server on 127.0.0.1 (SQLite store in a temp
//! dir). With `--url` the same client harness drives an external server: a release
//! `comfyrs serve`, or ComfyUI itself, so both are measured the same way. For 1, 10 and 100
//! concurrent clients (`--clients`), each client has its own WebSocket (`/ws?clientId=...`), POSTs
//! /prompt over a fresh HTTP/1.1 connection and waits for its own `execution_success` before
//! submitting the next job. JOBS (default 1000) is split across the clients (2..=200 each).

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
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

#[derive(Parser)]
#[command(about = "Submit-to-execution_success latency of a ComfyUI-API server")]
struct Args {
    /// Total jobs per client count, split across the clients (each client runs 2..=200).
    #[arg(default_value_t = 1000)]
    jobs: usize,
    /// Drive an external server (e.g. http://127.0.0.1:8288) instead of an in-process one.
    #[arg(long)]
    url: Option<String>,
    /// Concurrent client counts to measure, in order.
    #[arg(long, value_delimiter = ',', num_args = 1, default_values_t = [1usize, 10, 100])]
    clients: Vec<usize>,
    /// Untimed jobs run by one client before measuring (imports, caches, JIT warm-up).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
}

/// Where the clients connect: the host:port of an `http://` URL (resolved once).
async fn resolve(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url must start with http:// (got {url:?})"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let mut addrs = tokio::net::lookup_host(hostport.as_str())
        .await
        .with_context(|| format!("resolving {hostport}"))?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("{hostport} resolves to no address"))
}

/// POST /prompt on a fresh connection; returns the JSON body of a 200 answer.
async fn post_prompt(addr: SocketAddr, body: &Value) -> Result<Value> {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let req = format!(
        "POST /prompt HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("POST /prompt: no HTTP header end in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let payload = &raw[split + 4..];
    if !status_line.contains(" 200 ") {
        bail!(
            "POST /prompt answered {status_line:?}: {}",
            String::from_utf8_lossy(payload)
        );
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("POST /prompt: chunked answers are not supported by this harness");
    }
    serde_json::from_slice(payload).context("POST /prompt: body is not JSON")
}

/// One client: its own WebSocket, `jobs` sequential submissions; returns each job's latency.
async fn client(addr: SocketAddr, cid: String, jobs: usize) -> Result<Vec<Duration>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?clientId={cid}"))
        .await
        .with_context(|| format!("WebSocket to {addr}"))?;
    // Both servers greet a new socket with a `status` message first.
    let _ = ws.next().await;
    let mut lat = Vec::with_capacity(jobs);
    for j in 0..jobs {
        let wf = json!({
            "1": {"class_type": "PrimitiveString", "inputs": {"value": format!("{cid} job {j}")}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
        });
        let t0 = Instant::now();
        let r = post_prompt(addr, &json!({"prompt": wf, "client_id": cid})).await?;
        let pid = r["prompt_id"]
            .as_str()
            .ok_or_else(|| anyhow!("POST /prompt answer has no prompt_id: {r}"))?
            .to_string();
        loop {
            let msg = ws
                .next()
                .await
                .ok_or_else(|| anyhow!("{cid}: WebSocket closed while waiting for {pid}"))??;
            let Message::Text(t) = msg else { continue };
            let m: Value = serde_json::from_str(t.as_str())?;
            if m["data"]["prompt_id"] != pid.as_str() {
                continue;
            }
            match m["type"].as_str() {
                Some("execution_success") => {
                    lat.push(t0.elapsed());
                    break;
                }
                Some("execution_error") | Some("execution_interrupted") => {
                    bail!("{cid}: job {pid} failed: {m}")
                }
                _ => {}
            }
        }
    }
    Ok(lat)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// An in-process comfyrs server with its store in a temp dir (kept alive by the returned guard).
async fn in_process() -> Result<(comfyrs::server::RunningServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = JobStore::open(&dir.path().join("comfyrs.db"))?;
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
    .await?;
    Ok((server, dir))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (addr, local) = match &args.url {
        Some(url) => (resolve(url).await?, None),
        None => {
            let (server, dir) = in_process().await?;
            (server.addr, Some((server, dir)))
        }
    };
    // A per-run tag keeps every string fresh even across runs against a long-lived server.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..8];
    if args.warmup > 0 {
        client(addr, format!("bench-{run}-warmup"), args.warmup).await?;
    }
    println!("| clients | jobs | p50 ms | p99 ms | jobs/s |");
    println!("|---:|---:|---:|---:|---:|");
    for &clients in &args.clients {
        let per = (args.jobs / clients.max(1)).clamp(2, 200);
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(client(addr, format!("bench-{run}-{clients}-{c}"), per)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
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
    if let Some((server, _dir)) = local {
        server.shutdown().await;
    }
    Ok(())
}
