//! Cross-node event fan-out: PostgreSQL `LISTEN/NOTIFY` (what comfyrs uses) against Redis
//! streams (`XADD`/`XREAD`), with comfyrs-shaped payloads.
//!
//! `cargo run --example event_bench -- [--quick]`
//!
//! Starts a throwaway PostgreSQL (Debian's `postgresql`, as the tests do) and a `redis-server`
//! (Debian's `redis-server` package; not needed by any test) on loopback. N publishers (the
//! workers) send events that M subscribers (the nodes with WebSocket clients) all receive.
//! Payloads are encoded exactly as comfyrs' event bridge encodes them
//! (`comfyrs::cluster::events::encode`):
//!
//! - `progress` (~250 B on the wire): a WebSocket `progress` message;
//! - `executed` (~2 KB): an `executed` message listing 12 output images;
//! - `preview` (~32 KB): a 24 KB JPEG preview frame, base64 in the message (comfyrs forwards
//!   previews across nodes; over `NOTIFY` anything over 7,000 bytes goes through the `events`
//!   table and the row id is notified).
//!
//! Paths: `notify` = comfyrs today (`events::notify`, inline below 7,000 bytes);
//! `notify+table` = every event stored in the `events` table and its id notified (what comfyrs
//! does for 15 s after a reconnection, so listeners can catch up); `redis` = `XADD` to one
//! stream (`MAXLEN ~ 5000`), subscribers blocking in `XREAD` from their last id.
//!
//! Two phases per case: *flood* (every publisher sends its share back to back: throughput in
//! events/s, counted once per event, and deliveries/s = events × M) and *paced* (500 events/s
//! in all: p50/p99 publish-to-receive latency, i.e. what a WebSocket client waits).

use comfyrs::cluster::events::{self, EVENTS};
use comfyrs::queue::{Outbound, WsPayload};
use comfyrs::store::postgres::testing::TempPostgres;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Progress,
    Executed,
    Preview,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Progress => "progress",
            Shape::Executed => "executed",
            Shape::Preview => "preview",
        }
    }
}

/// One comfyrs event as the bridge sends it, stamped with its send time.
fn payload(shape: Shape, seq: u64, preview: &[u8]) -> String {
    let pid = "6f1c2a9e-3b7d-4c55-9a0e-5d2f8b1c7e42";
    let sent = now_ns();
    let out = match shape {
        Shape::Progress => Outbound {
            to: Some("c7d0e0b8a4f94f0d9a6a1f3e2b5c8d71".into()),
            prompt_id: Some(pid.into()),
            payload: WsPayload::Text(
                json!({"type": "progress", "data": {"value": seq % 20 + 1, "max": 20,
                       "prompt_id": pid, "node": "3", "bench_ns": sent}})
                .to_string()
                .into(),
            ),
            origin: None,
        },
        Shape::Executed => {
            let images: Vec<Value> = (0..12)
                .map(|i| {
                    json!({"filename": format!("ComfyUI_{:05}_.png", seq * 12 + i),
                                "subfolder": "batch/2026-12-06", "type": "output"})
                })
                .collect();
            Outbound {
                to: Some("c7d0e0b8a4f94f0d9a6a1f3e2b5c8d71".into()),
                prompt_id: Some(pid.into()),
                payload: WsPayload::Text(
                    json!({"type": "executed", "data": {"node": "9", "display_node": "9",
                           "output": {"images": images, "text": ["a photograph of an astronaut riding a horse, 35mm, golden hour; seed 123456789"]},
                           "prompt_id": pid, "bench_ns": sent}})
                    .to_string()
                    .into(),
                ),
                origin: None,
            }
        }
        Shape::Preview => Outbound {
            to: Some("c7d0e0b8a4f94f0d9a6a1f3e2b5c8d71".into()),
            prompt_id: Some(pid.into()),
            payload: WsPayload::Preview {
                metadata: json!({"node_id": "3", "display_node_id": "3", "parent_node_id": null,
                                 "real_node_id": "3", "prompt_id": pid, "bench_ns": sent})
                .to_string()
                .into(),
                image: comfyrs::node::PreviewImage::jpeg(preview.to_vec()),
            },
            origin: None,
        },
    };
    events::encode("bench-worker", &out)
}

/// The send time inside a received message.
fn sent_ns(text: &str) -> Option<u64> {
    let out = events::decode(text)?;
    let meta: Value = match &out.payload {
        WsPayload::Text(t) => serde_json::from_str::<Value>(t).ok()?["data"].clone(),
        WsPayload::Preview { metadata, .. } => serde_json::from_str(metadata).ok()?,
    };
    meta["bench_ns"].as_u64()
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Notify,
    NotifyTable,
    Redis,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Notify => "notify",
            Path::NotifyTable => "notify+table",
            Path::Redis => "redis",
        }
    }
}

// ---- a minimal RESP2 client (enough for XADD / XREAD / PING / FLUSHALL) ----

#[derive(Debug)]
#[allow(dead_code)] // read through Debug in panics
enum Resp {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

struct Redis {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Redis {
    async fn connect(port: u16) -> Redis {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        Redis {
            r: BufReader::with_capacity(1 << 16, r),
            w,
        }
    }

    async fn cmd(&mut self, args: &[&[u8]]) -> Resp {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&buf).await.unwrap();
        self.read().await
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).await.unwrap();
        l.trim_end().to_string()
    }

    fn read(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resp> + Send + '_>> {
        Box::pin(async move {
            let l = self.line().await;
            let (kind, rest) = l.split_at(1);
            match kind {
                "+" => Resp::Simple(rest.into()),
                "-" => panic!("redis error: {rest}"),
                ":" => Resp::Int(rest.parse().unwrap()),
                "$" => {
                    let n: i64 = rest.parse().unwrap();
                    if n < 0 {
                        return Resp::Bulk(None);
                    }
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b).await.unwrap();
                    b.truncate(n as usize);
                    Resp::Bulk(Some(b))
                }
                "*" => {
                    let n: i64 = rest.parse().unwrap();
                    if n < 0 {
                        return Resp::Array(None);
                    }
                    let mut v = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        v.push(self.read().await);
                    }
                    Resp::Array(Some(v))
                }
                other => panic!("unexpected RESP type {other:?}"),
            }
        })
    }
}

fn bulk(r: &Resp) -> &[u8] {
    match r {
        Resp::Bulk(Some(b)) => b,
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn array(r: &Resp) -> &[Resp] {
    match r {
        Resp::Array(Some(v)) => v,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The server and its folder (removed on drop).
struct RedisServer(Child, #[allow(dead_code)] tempfile::TempDir);
impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis() -> (RedisServer, u16) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian: apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (RedisServer(child, dir), port)
}

// ---- PostgreSQL connections, as the bridge makes them ----

async fn pg_client(
    url: &str,
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<AsyncMessage>,
) {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    (client, rx)
}

/// One subscriber: receives `expect` events, returns their latencies (ns).
async fn subscriber(
    path: Path,
    url: String,
    redis_port: u16,
    expect: usize,
    ready: mpsc::UnboundedSender<()>,
) -> Vec<u64> {
    let mut lat = Vec::with_capacity(expect);
    match path {
        Path::Notify | Path::NotifyTable => {
            let (client, mut rx) = pg_client(&url).await;
            client
                .batch_execute(&format!("LISTEN {EVENTS}"))
                .await
                .unwrap();
            ready.send(()).unwrap();
            while lat.len() < expect {
                let Some(AsyncMessage::Notification(n)) = rx.recv().await else {
                    continue;
                };
                let mut text = n.payload().to_string();
                if let Some(id) = text.strip_prefix('@').and_then(|i| i.parse::<i64>().ok()) {
                    text = client
                        .query_one("SELECT payload FROM events WHERE id = $1", &[&id])
                        .await
                        .unwrap()
                        .get(0);
                }
                let sent = sent_ns(&text).expect("a bench event");
                lat.push(now_ns().saturating_sub(sent));
            }
        }
        Path::Redis => {
            let mut r = Redis::connect(redis_port).await;
            let mut last = b"$".to_vec();
            // The first XREAD fixes the position; ready once it is registered.
            let mut first = true;
            while lat.len() < expect {
                if first {
                    // `$` resolves when the command runs: announce readiness just after sending.
                    let first_cmd: &[u8] = b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$14\r\ncomfyrs:events\r\n$1\r\n$\r\n";
                    r.w.write_all(first_cmd).await.unwrap();
                    // The caller waits until the server lists every subscriber as blocked.
                    ready.send(()).unwrap();
                    first = false;
                } else {
                    let id = last.clone();
                    let mut buf = format!(
                        "*8\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$4\r\n1000\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$14\r\ncomfyrs:events\r\n${}\r\n",
                        id.len()
                    )
                    .into_bytes();
                    buf.extend_from_slice(&id);
                    buf.extend_from_slice(b"\r\n");
                    r.w.write_all(&buf).await.unwrap();
                }
                let reply = r.read().await;
                let streams = array(&reply);
                let entries = array(&array(&streams[0])[1]);
                for e in entries {
                    let e = array(e);
                    last = bulk(&e[0]).to_vec();
                    let fields = array(&e[1]);
                    let text = std::str::from_utf8(bulk(&fields[1])).unwrap();
                    let sent = sent_ns(text).expect("a bench event");
                    lat.push(now_ns().saturating_sub(sent));
                }
            }
        }
    }
    lat
}

/// One publisher: sends `n` events, at `interval` apart (None: back to back).
async fn publisher(
    path: Path,
    url: String,
    redis_port: u16,
    shape: Shape,
    n: usize,
    interval: Option<Duration>,
    preview: Arc<Vec<u8>>,
) {
    let mut tick = interval.map(tokio::time::interval);
    match path {
        Path::Notify | Path::NotifyTable => {
            let (client, _rx) = pg_client(&url).await;
            for i in 0..n {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let p = payload(shape, i as u64, &preview);
                events::notify(&client, EVENTS, &p, path == Path::NotifyTable)
                    .await
                    .unwrap();
            }
        }
        Path::Redis => {
            let mut r = Redis::connect(redis_port).await;
            for i in 0..n {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let p = payload(shape, i as u64, &preview);
                r.cmd(&[
                    b"XADD",
                    b"comfyrs:events",
                    b"MAXLEN",
                    b"~",
                    b"5000",
                    b"*",
                    b"e",
                    p.as_bytes(),
                ])
                .await;
            }
        }
    }
}

struct Outcome {
    events: usize,
    secs: f64,
    lat: Vec<u64>,
}

async fn wait_redis_blocked(port: u16, m: usize) {
    let mut r = Redis::connect(port).await;
    loop {
        let info = r.cmd(&[b"INFO", b"clients"]).await;
        let text = String::from_utf8_lossy(bulk(&info)).into_owned();
        let blocked: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if blocked >= m {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    path: Path,
    url: &str,
    redis_port: u16,
    shape: Shape,
    pubs: usize,
    subs: usize,
    per_pub: usize,
    interval: Option<Duration>,
    preview: Arc<Vec<u8>>,
) -> Outcome {
    let total = pubs * per_pub;
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut sub_tasks = vec![];
    for _ in 0..subs {
        sub_tasks.push(tokio::spawn(subscriber(
            path,
            url.to_string(),
            redis_port,
            total,
            ready_tx.clone(),
        )));
    }
    for _ in 0..subs {
        ready_rx.recv().await.unwrap();
    }
    if path == Path::Redis {
        wait_redis_blocked(redis_port, subs).await;
    }
    let start = Instant::now();
    let mut pub_tasks = vec![];
    for _ in 0..pubs {
        pub_tasks.push(tokio::spawn(publisher(
            path,
            url.to_string(),
            redis_port,
            shape,
            per_pub,
            interval,
            preview.clone(),
        )));
    }
    for t in pub_tasks {
        t.await.unwrap();
    }
    let mut lat = vec![];
    for t in sub_tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    if path == Path::Redis {
        Redis::connect(redis_port)
            .await
            .cmd(&[b"DEL", b"comfyrs:events"])
            .await;
    }
    Outcome {
        events: total,
        secs,
        lat,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    EPOCH.get_or_init(Instant::now);
    let pg = TempPostgres::start();
    let url = pg.create_db("bench");
    // The store's migrations create the `events` table.
    let store = comfyrs::store::postgres::PgStore::connect(&url, Default::default()).unwrap();
    drop(store);
    let (_redis, redis_port) = start_redis();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench(quick, url, redis_port));
}

async fn bench(quick: bool, url: String, redis_port: u16) {
    // NOTIFY's limit, measured.
    let (client, _rx) = pg_client(&url).await;
    let limit_ok = client
        .execute("SELECT pg_notify('x', $1)", &[&"a".repeat(7999)])
        .await
        .is_ok();
    let over = client
        .execute("SELECT pg_notify('x', $1)", &[&"a".repeat(8000)])
        .await
        .map_err(|e| {
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or(e.to_string())
        });
    println!(
        "NOTIFY payload of 7999 bytes: {}; of 8000 bytes: {}",
        if limit_ok { "accepted" } else { "refused" },
        match &over {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!("refused ({e})"),
        }
    );
    let mut preview = vec![0u8; 24 * 1024];
    for (i, b) in preview.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
    }
    let preview = Arc::new(preview);
    for shape in [Shape::Progress, Shape::Executed, Shape::Preview] {
        let p = payload(shape, 1, &preview);
        println!("payload {}: {} bytes encoded", shape.name(), p.len());
    }

    println!();
    println!("| payload | path | N pub × M sub | flood events/s | deliveries/s | flood p50 / p99 ms | paced 500/s p50 / p99 ms |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let configs: &[(usize, usize)] = if quick {
        &[(1, 1)]
    } else {
        &[(1, 1), (4, 3), (8, 6)]
    };
    for shape in [Shape::Progress, Shape::Executed, Shape::Preview] {
        for &(pubs, subs) in configs {
            for path in [Path::Notify, Path::NotifyTable, Path::Redis] {
                if path == Path::NotifyTable && shape == Shape::Preview {
                    continue; // previews go through the table on both NOTIFY paths
                }
                let flood_total = match (shape, quick) {
                    (Shape::Preview, true) => 200,
                    (Shape::Preview, false) => 1600,
                    (_, true) => 1000,
                    (_, false) => 8000,
                };
                let per_pub = flood_total / pubs;
                let flood = run_case(
                    path,
                    &url,
                    redis_port,
                    shape,
                    pubs,
                    subs,
                    per_pub,
                    None,
                    preview.clone(),
                )
                .await;
                // Paced: 500 events/s in all for ~2 s.
                let rate = 500.0;
                let secs = if quick { 1.0 } else { 2.0 };
                let per_pub_paced = ((rate * secs) as usize / pubs).max(1);
                let interval = Duration::from_secs_f64(pubs as f64 / rate);
                let paced = run_case(
                    path,
                    &url,
                    redis_port,
                    shape,
                    pubs,
                    subs,
                    per_pub_paced,
                    Some(interval),
                    preview.clone(),
                )
                .await;
                let mut fl = flood.lat;
                fl.sort_unstable();
                let mut pl = paced.lat;
                pl.sort_unstable();
                let eps = flood.events as f64 / flood.secs;
                println!(
                    "| {} | {} | {pubs} × {subs} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} |",
                    shape.name(),
                    path.name(),
                    eps,
                    eps * subs as f64,
                    pct(&fl, 0.5),
                    pct(&fl, 0.99),
                    pct(&pl, 0.5),
                    pct(&pl, 0.99),
                );
            }
        }
    }
}
