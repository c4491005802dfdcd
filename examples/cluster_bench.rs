//! Queue throughput and submit-to-start latency of a cluster against the single process.
//!
//! `cargo build && cargo run --example cluster_bench -- [JOBS] [WORKERS,...]`
//!
//! For each configuration it starts real `comfyrs serve` processes (the binary next to this
//! example in target/), submits JOBS model-free prompts (PrimitiveString -> PreviewAny, a
//! distinct string each) from 8 concurrent HTTP clients, waits until all finished, and reads
//! the store's own timestamps: `created_at` (accepted), `started_at` (claimed by a worker),
//! `finished_at`. Configurations: SQLite, one process (the default); PostgreSQL with one API
//! node and 1, 2, 4 worker processes (a test server started here, as the tests do).

use comfyrs::store::postgres::testing::TempPostgres;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/examples/cluster_bench -> target/debug/comfyrs
    exe.parent().unwrap().parent().unwrap().join("comfyrs")
}

fn serve(data: &Path, args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(binary())
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start comfyrs serve (cargo build first)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on http://").nth(1) {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("listening");
    (Proc(child), addr.parse().unwrap())
}

async fn submit_all(api: SocketAddr, jobs: usize) -> Duration {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let per = jobs.div_ceil(8);
    let mut tasks = vec![];
    for c in 0..8 {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c * per)..((c + 1) * per).min(jobs) {
                let wf = json!({
                    "1": {"class_type": "PrimitiveString", "inputs": {"value": format!("job {i}")}},
                    "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
                });
                let r = http
                    .post(format!("http://{api}/prompt"))
                    .header("content-type", "application/json")
                    .body(json!({"prompt": wf}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

struct Row {
    created: i64,
    started: i64,
    finished: i64,
}

/// Idle-queue latency: one job at a time, each submitted when the last finished; returns
/// the submit→start times (ms) from the store.
async fn one_at_a_time(
    api: SocketAddr,
    n: usize,
    started_ms: impl Fn(&str) -> Option<(i64, i64)>,
) -> Vec<i64> {
    let http = reqwest::Client::new();
    let mut out = vec![];
    for i in 0..n {
        let wf = json!({
            "1": {"class_type": "PrimitiveString", "inputs": {"value": format!("idle {i}")}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
        });
        let r = http
            .post(format!("http://{api}/prompt"))
            .header("content-type", "application/json")
            .body(json!({"prompt": wf}).to_string())
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let id = v["prompt_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((c, s)) = started_ms(&id) {
                out.push(s - c);
                break;
            }
            assert!(Instant::now() < deadline, "idle job did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    out.sort();
    out
}

fn idle_line(name: &str, lat: &[i64]) {
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!("| {name} | {} | {} | {} |", lat.len(), pct(0.5), pct(0.99));
}

fn summarize(name: &str, rows: &[Row], submit: Duration) {
    let mut lat: Vec<i64> = rows.iter().map(|r| r.started - r.created).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let first = rows.iter().map(|r| r.created).min().unwrap();
    let last = rows.iter().map(|r| r.finished).max().unwrap();
    let span = (last - first) as f64 / 1000.0;
    let run: f64 = rows
        .iter()
        .map(|r| (r.finished - r.started) as f64)
        .sum::<f64>()
        / rows.len() as f64;
    println!(
        "| {name} | {} | {:.1} | {:.1} | {} | {} | {:.1} | {:.2} |",
        rows.len(),
        submit.as_secs_f64(),
        rows.len() as f64 / span,
        pct(0.5),
        pct(0.99),
        span * 1000.0 / rows.len() as f64,
        run
    );
}

async fn wait_done_pg(db: &tokio_postgres::Client, jobs: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = db
            .query_one("SELECT COUNT(*) FROM jobs WHERE status = 'success'", &[])
            .await
            .unwrap()
            .get(0);
        if done as usize >= jobs {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.query("SELECT created_at, started_at, finished_at FROM jobs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| Row {
            created: r.get(0),
            started: r.get(1),
            finished: r.get(2),
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let workers: Vec<usize> = args
        .get(2)
        .map(|a| a.split(',').filter_map(|w| w.parse().ok()).collect())
        .unwrap_or(vec![1, 2, 4]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut idle: Vec<(String, Vec<i64>)> = vec![];
    println!("| store | jobs | submit (s) | jobs/s | p50 submit→start (ms) | p99 (ms) | wall per job (ms) | run (ms) |");
    println!("|---|---|---|---|---|---|---|---|");

    // SQLite, one process.
    {
        let data = tempfile::tempdir().unwrap();
        let (_p, addr) = serve(data.path(), &[]);
        let submit = rt.block_on(submit_all(addr, jobs));
        let db = data.path().join("comfyrs.db");
        let deadline = Instant::now() + Duration::from_secs(600);
        let rows = loop {
            let c = rusqlite::Connection::open(&db).unwrap();
            let done: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'success'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            if done as usize >= jobs {
                let mut st = c
                    .prepare("SELECT created_at, started_at, finished_at FROM jobs")
                    .unwrap();
                break st
                    .query_map([], |r| {
                        Ok(Row {
                            created: r.get(0)?,
                            started: r.get(1)?,
                            finished: r.get(2)?,
                        })
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<_>>();
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(100));
        };
        summarize("SQLite, 1 process", &rows, submit);
        let lat = rt.block_on(one_at_a_time(addr, 50, |id| {
            let c = rusqlite::Connection::open(&db).ok()?;
            c.query_row(
                "SELECT created_at, started_at FROM jobs WHERE id = ?1 AND status = 'success'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
        }));
        idle.push(("SQLite, 1 process".to_string(), lat));
    }

    for w in workers {
        let server = TempPostgres::start();
        let url = server.create_db("bench");
        let data = tempfile::tempdir().unwrap();
        let (_api, addr) = serve(data.path(), &["--store", &url, "--role", "api"]);
        let _workers: Vec<_> = (0..w)
            .map(|i| {
                serve(
                    data.path(),
                    &[
                        "--store",
                        &url,
                        "--role",
                        "worker",
                        "--node-id",
                        &format!("w{i}"),
                    ],
                )
                .0
            })
            .collect();
        let name = format!(
            "PostgreSQL, 1 API + {w} worker{}",
            if w > 1 { "s" } else { "" }
        );
        let (rows, submit, lat) = rt.block_on(async {
            let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let submit = submit_all(addr, jobs).await;
            let rows = wait_done_pg(&db, jobs).await;
            let db = std::sync::Arc::new(db);
            let handle = tokio::runtime::Handle::current();
            let lat = one_at_a_time(addr, 50, move |id| {
                let (db, id) = (db.clone(), id.to_string());
                tokio::task::block_in_place(|| {
                    handle.block_on(async move {
                        db.query_opt(
                            "SELECT created_at, started_at FROM jobs WHERE id = $1 AND status = 'success'",
                            &[&id],
                        )
                        .await
                        .ok()
                        .flatten()
                        .map(|r| (r.get(0), r.get(1)))
                    })
                })
            })
            .await;
            (rows, submit, lat)
        });
        summarize(&name, &rows, submit);
        idle.push((name, lat));
    }
    println!();
    println!("| one job at a time | jobs | p50 submit→start (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    for (name, lat) in &idle {
        idle_line(name, lat);
    }
}
