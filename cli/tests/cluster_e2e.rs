//! A cluster of real `comfyrs serve` processes over a real PostgreSQL on loopback (started by
//! the test: Debian's `postgresql`, which `.ci/run` installs): API nodes and workers share one
//! queue and one data folder. Submissions go to both APIs while a worker is killed with
//! SIGKILL mid-job and an API node mid-request; every job must reach a final state exactly
//! once, every output be readable from any API node, every webhook be delivered, and a
//! WebSocket client get its job's events from a node that did not run it.
//!
//! `cluster_without_shared_disk_uses_object_storage` runs nodes with their own data folders
//! and the files in moto's S3 server (`pip install 'moto[server]'`).
//!
//! `cluster_end_to_end` is the CI size (well under a minute). The soak
//! (`cargo test --test cluster_e2e -- --ignored soak`) runs 1,000 jobs with 10 kills of each
//! kind; BENCHMARKS.md records its result.

#[path = "../../tests/server_common/mod.rs"]
mod server_common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use comfyrs::store::postgres::testing::TempPostgres;
use serde_json::{json, Value};
use server_common::{ws_connect, ws_until_done};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-token";

/// One `comfyrs serve` process.
struct Node {
    name: String,
    role: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(url: &str, data: &Path, role: &'static str, name: &str) -> Node {
    spawn_node_with(url, data, role, name, &[], &[])
}

fn spawn_node_with(
    url: &str,
    data: &Path,
    role: &'static str,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(["serve", "--port", "0", "--dev-nodes", "--data-dir"])
        .arg(data)
        .args(["--store", url, "--role", role, "--node-id", name])
        .args(if extra.contains(&"--lease-secs") {
            &[][..]
        } else {
            &["--lease-secs", "1.5"][..]
        })
        .arg("--requeue-lost")
        .args(["--api-token", &format!("e2e:{TOKEN}"), "--admin", "e2e"])
        .arg("--serverless-config")
        .arg(data.join("serverless.json"))
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start comfyrs serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log_name = name.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                }
            }
            if line.contains("ERROR") || line.contains("panicked") {
                eprintln!("[{log_name}] {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{name} did not start"));
    Node {
        name: name.into(),
        role,
        child,
        addr: addr.parse().unwrap(),
    }
}

/// The shared data folder: a deployment for the webhook requests, the serverless settings.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("deployments");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("sleeper.json"),
        json!({"id": "sleeper", "name": "sleeper",
               "workflow": {"1": {"class_type": "DevSleep", "inputs": {"ms": 150, "text": "hook"}}}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("serverless.json"),
        json!({"webhook_allow_networks": ["127.0.0.1/32"], "webhook_base_delay_ms": 50,
               "max_queue_depth": 100000})
        .to_string(),
    )
    .unwrap();
    dir
}

/// A job that takes `ms`, then writes one small PNG named after `tag`.
fn workflow(ms: u64, tag: &str) -> Value {
    json!({
        "1": {"class_type": "DevSleep", "inputs": {"ms": ms, "text": tag}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x336699}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": tag}}
    })
}

/// Webhook receiver: every delivery, by webhook-id.
#[derive(Clone, Default)]
struct Hooks {
    hits: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn hook(State(h): State<Hooks>, headers: HeaderMap, body: String) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    h.hits.lock().unwrap().push((id, v));
    StatusCode::OK
}

async fn start_hooks(h: Hooks) -> SocketAddr {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(h);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

struct Scenario {
    workers: usize,
    jobs: usize,
    hook_jobs: usize,
    /// SIGKILLs of a worker holding a job (each restarted under a new id).
    worker_kills: usize,
    /// SIGKILLs of an API node while requests are in flight (each restarted).
    api_kills: usize,
    job_ms: u64,
    deadline: Duration,
}

#[derive(Debug)]
#[allow(dead_code)] // printed
struct Report {
    jobs_in_store: usize,
    succeeded: usize,
    lost_failed: usize,
    requeued_succeeded: usize,
    webhooks: usize,
    webhook_redeliveries: usize,
    /// Jobs other workers finished while the slow job ran.
    passed_slow: usize,
    elapsed: Duration,
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    c
}

async fn submit(http: &reqwest::Client, addr: SocketAddr, body: &Value) -> Option<String> {
    let r = http
        .post(format!("http://{addr}/prompt"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    assert_eq!(r.status(), 200, "submit to {addr}");
    let v: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    Some(v["prompt_id"].as_str()?.to_string())
}

async fn run(url: String, data: PathBuf, sc: Scenario) -> Report {
    let started = Instant::now();
    let db = pg(&url).await;
    let hooks = Hooks::default();
    let hook_addr = start_hooks(hooks.clone()).await;
    let hook_url = format!("http://{hook_addr}/hook");

    // The nodes start together (the first migrates the schema, the others wait on its lock).
    let mut spawns = vec![];
    for i in 0..2 {
        let (u, d) = (url.clone(), data.clone());
        spawns.push(std::thread::spawn(move || {
            spawn_node(&u, &d, "api", &format!("api{i}"))
        }));
    }
    for i in 0..sc.workers {
        let (u, d) = (url.clone(), data.clone());
        spawns.push(std::thread::spawn(move || {
            spawn_node(&u, &d, "worker", &format!("w{i}"))
        }));
    }
    let mut nodes: Vec<Node> = spawns.into_iter().map(|h| h.join().unwrap()).collect();
    let api = |nodes: &[Node], i: usize| {
        let apis: Vec<SocketAddr> = nodes
            .iter()
            .filter(|n| n.role == "api")
            .map(|n| n.addr)
            .collect();
        apis[i % apis.len()]
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // A slow job first: it must not hold up the jobs other workers can take.
    let slow = submit(
        &http,
        api(&nodes, 0),
        &json!({"prompt": workflow(sc.job_ms * 20, "slow")}),
    )
    .await
    .expect("slow job accepted");

    // A WebSocket client on api1 whose job runs on some worker.
    let ws_addr = api(&nodes, 1);
    let mut ws = ws_connect(ws_addr, &format!("clientId=e2e-ws&token={TOKEN}")).await;
    let ws_job = submit(
        &http,
        ws_addr,
        &json!({"prompt": workflow(sc.job_ms, "ws"), "client_id": "e2e-ws"}),
    )
    .await
    .expect("ws job accepted");

    // A deployment created through one API node is served by the other (the store holds it).
    let r = http
        .post(format!("http://{}/prod/v1/deployments", api(&nodes, 0)))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(
            json!({"name": "made-on-api0",
                   "workflow_api_json": {"1": {"class_type": "DevSleep", "inputs": {"ms": 50, "text": "made"}}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let dep = created["deployment_id"].as_str().unwrap().to_string();
    let r = http
        .post(format!(
            "http://{}/prod/v1/deployments/{dep}/inference",
            api(&nodes, 1)
        ))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(json!({"overrides": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the other API node knows the deployment");
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();

    let mut accepted: Vec<String> = vec![
        slow.clone(),
        ws_job.clone(),
        v["request_id"].as_str().unwrap().to_string(),
    ];
    let mut hook_ids: Vec<String> = vec![];
    let mut worker_kills = 0;
    let mut api_kills = 0;
    let mut next_worker = sc.workers;
    let mut lost_jobs: Vec<String> = vec![];
    let per_round = sc.jobs.div_ceil(sc.worker_kills.max(sc.api_kills).max(1));
    let mut i = 0;
    while i < sc.jobs || worker_kills < sc.worker_kills || api_kills < sc.api_kills {
        // A round of submissions, alternating the API nodes.
        let round_end = (i + per_round).min(sc.jobs);
        while i < round_end {
            let addr = api(&nodes, i);
            if let Some(id) = submit(
                &http,
                addr,
                &json!({"prompt": workflow(sc.job_ms, &format!("e2e_{i}"))}),
            )
            .await
            {
                accepted.push(id);
            }
            if hook_ids.len() < sc.hook_jobs && i % 4 == 0 {
                let r = http
                    .post(format!(
                        "http://{}/prod/v1/deployments/sleeper/inference?webhook={}",
                        api(&nodes, i + 1),
                        hook_url
                    ))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(json!({"overrides": {}}).to_string())
                    .send()
                    .await
                    .expect("deployment request");
                assert_eq!(r.status(), 200);
                let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
                hook_ids.push(v["request_id"].as_str().unwrap().to_string());
            }
            i += 1;
        }
        if worker_kills < sc.worker_kills {
            // SIGKILL a worker while it holds a job.
            let deadline = Instant::now() + Duration::from_secs(20);
            let (job, holder) = loop {
                // The first kill catches a ComfyUI job (failed with the reason), later ones
                // any job (serverless ones are re-queued once).
                let only: &str = if worker_kills == 0 { "comfyui" } else { "%" };
                let row = db
                    .query_opt(
                        "SELECT id, node_id FROM jobs WHERE status = 'running' AND source LIKE $1
                         ORDER BY started_at DESC LIMIT 1",
                        &[&only],
                    )
                    .await
                    .unwrap();
                if let Some(r) = row {
                    break (r.get::<_, String>(0), r.get::<_, String>(1));
                }
                assert!(Instant::now() < deadline, "no job ever ran");
                // Keep the workers fed until one is caught mid-job.
                if let Some(id) = submit(&http, api(&nodes, 0), &json!({"prompt": workflow(sc.job_ms * 4, &format!("e2e_extra_{}", accepted.len()))})).await {
                    accepted.push(id);
                }
            };
            let idx = nodes
                .iter()
                .position(|n| n.name == holder)
                .expect("holder is ours");
            nodes[idx].kill9();
            eprintln!("killed worker {holder} holding {job}");
            lost_jobs.push(job);
            nodes.remove(idx);
            let (u, d) = (url.clone(), data.clone());
            nodes.push(spawn_node(&u, &d, "worker", &format!("w{next_worker}")));
            next_worker += 1;
            worker_kills += 1;
        }
        if api_kills < sc.api_kills {
            // SIGKILL an API node while submissions to it are in flight.
            let idx = nodes.iter().position(|n| n.role == "api").unwrap();
            let addr = nodes[idx].addr;
            let inflight: Vec<_> = (0..8)
                .map(|k| {
                    let http = http.clone();
                    tokio::spawn(async move {
                        submit(
                            &http,
                            addr,
                            &json!({"prompt": workflow(10, &format!("e2e_api_{api_kills}_{k}"))}),
                        )
                        .await
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(5)).await;
            nodes[idx].kill9();
            let name = nodes[idx].name.clone();
            for t in inflight {
                // Answered before the kill, or cut off (the job may still have been queued:
                // the store is checked for every job, known to the client or not).
                if let Ok(Some(id)) = t.await {
                    accepted.push(id);
                }
            }
            nodes.remove(idx);
            let (u, d) = (url.clone(), data.clone());
            nodes.push(spawn_node(&u, &d, "api", &format!("{name}r")));
            api_kills += 1;
        }
    }

    // The WebSocket client on api1 got its job's events from whichever worker ran it.
    let msgs = tokio::time::timeout(sc.deadline, ws_until_done(&mut ws, &ws_job))
        .await
        .expect("ws job finished");
    assert!(
        msgs.iter()
            .any(|m| m["type"] == "execution_start" && m["data"]["prompt_id"] == ws_job.as_str())
            || lost_jobs.contains(&ws_job),
        "{msgs:?}"
    );

    // Every job in the store reaches a final state.
    let deadline = started + sc.deadline;
    loop {
        let open: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} jobs still open at the deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = db
        .query(
            "SELECT id, status, source, attempts, history_seq, exec_status, outputs FROM jobs",
            &[],
        )
        .await
        .unwrap();
    let mut by_id: HashMap<String, (String, String, i32, Value, Value)> = HashMap::new();
    let mut seqs = HashSet::new();
    for r in &rows {
        let id: String = r.get(0);
        let seq: Option<i64> = r.get(4);
        assert!(
            seqs.insert(seq.expect("every job in history")),
            "one history entry per end"
        );
        by_id.insert(
            id,
            (
                r.get(1),
                r.get(2),
                r.get(3),
                serde_json::from_str(r.get::<_, &str>(5)).unwrap(),
                serde_json::from_str(r.get::<_, &str>(6)).unwrap(),
            ),
        );
    }
    for id in accepted.iter().chain(&hook_ids) {
        assert!(by_id.contains_key(id), "accepted job {id} is in the store");
    }
    let mut report = Report {
        jobs_in_store: by_id.len(),
        succeeded: 0,
        lost_failed: 0,
        requeued_succeeded: 0,
        webhooks: 0,
        webhook_redeliveries: 0,
        passed_slow: 0,
        elapsed: Duration::ZERO,
    };
    for (id, (status, source, attempts, exec, _)) in &by_id {
        let lost = lost_jobs.contains(id);
        match status.as_str() {
            "success" => {
                report.succeeded += 1;
                if lost {
                    assert_eq!(source, "deployments", "only serverless jobs are re-queued");
                    assert_eq!(*attempts, 2, "{id}: re-queued once");
                    report.requeued_succeeded += 1;
                }
            }
            "failed" => {
                assert!(lost, "{id} failed without its worker being killed: {exec}");
                assert_eq!(source, "comfyui", "{id}");
                assert_eq!(
                    exec["messages"][0][1]["exception_type"], "WorkerLost",
                    "{exec}"
                );
                report.lost_failed += 1;
            }
            other => panic!("{id}: unexpected final status {other}"),
        }
    }
    assert_eq!(
        report.lost_failed + report.requeued_succeeded,
        lost_jobs.iter().collect::<HashSet<_>>().len(),
        "every killed worker's job was failed or re-queued"
    );

    // While the slow job ran, the other workers went on with the rest.
    if by_id[&slow].0 == "success" {
        let passed: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM jobs j, jobs s
                 WHERE s.id = $1 AND j.id <> s.id AND j.node_id <> s.node_id
                   AND j.finished_at BETWEEN s.started_at AND s.finished_at",
                &[&slow],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            passed >= 5,
            "only {passed} jobs finished while the slow one ran"
        );
        report.passed_slow = passed as usize;
    }

    // Outputs are readable from any API node (the data folder is shared).
    let reader = api(&nodes, 0);
    let mut checked = 0;
    for (id, (status, source, _, _, outputs)) in &by_id {
        if status != "success" || source != "comfyui" {
            continue;
        }
        let img = &outputs["3"]["images"][0];
        let name = img["filename"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: {outputs}"));
        let r = http
            .get(format!("http://{reader}/view?filename={name}&type=output"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let bytes = r.bytes().await.unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        checked += 1;
        if checked >= 50 {
            break; // enough to show the files are shared; the rest are indexed alike
        }
    }
    let h: Value = http
        .get(format!("http://{reader}/history/{ws_job}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(h.get(&ws_job).is_some(), "history from an API node: {h}");

    // Every webhook request got its final event, exactly once per event id.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hits = hooks.hits.lock().unwrap().clone();
        let finals: HashMap<String, String> = hits
            .iter()
            .filter(|(_, b)| matches!(b["status"].as_str(), Some("succeeded" | "failed")))
            .map(|(id, b)| {
                (
                    b["request_id"].as_str().unwrap_or("").to_string(),
                    id.clone(),
                )
            })
            .collect();
        if hook_ids.iter().all(|r| finals.contains_key(r)) {
            // At least once per event: a node killed mid-delivery leaves its attempt to be
            // retried under the same webhook-id, which receivers deduplicate.
            let mut per_id: HashMap<&str, usize> = HashMap::new();
            for (id, _) in &hits {
                *per_id.entry(id.as_str()).or_default() += 1;
            }
            report.webhooks = finals.len();
            report.webhook_redeliveries = per_id.values().map(|n| n - 1).sum();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks missing: got {} of {}",
            finals.len(),
            hook_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The cluster view.
    let stats: Value = http
        .get(format!("http://{reader}/system_stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let live = stats["cluster"]["nodes"].as_array().expect("cluster view");
    let workers = live.iter().filter(|n| n["role"] == "worker").count();
    assert!(workers >= sc.workers, "{stats}");
    assert_eq!(stats["cluster"]["queue_pending"], 0);
    report.elapsed = started.elapsed();
    report
}

fn run_scenario(sc: Scenario) -> Report {
    let server = TempPostgres::start();
    let url = server.create_db("e2e");
    let data = data_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(run(url, data.path().to_path_buf(), sc));
    eprintln!("{report:?}");
    report
}

#[test]
fn cluster_end_to_end() {
    let r = run_scenario(Scenario {
        workers: 3,
        jobs: 40,
        hook_jobs: 6,
        worker_kills: 2,
        api_kills: 1,
        job_ms: 150,
        deadline: Duration::from_secs(45),
    });
    assert!(r.succeeded >= 40, "{r:?}");
    assert!(r.lost_failed >= 1, "{r:?}");
    assert_eq!(r.lost_failed + r.requeued_succeeded, 2, "{r:?}");
}

/// The soak: `cargo test --test cluster_e2e -- --ignored soak --nocapture`.
#[test]
#[ignore = "soak: about 2 minutes; run by hand (BENCHMARKS.md)"]
fn soak_1000_jobs_10_kills_each() {
    let r = run_scenario(Scenario {
        workers: 3,
        jobs: 1000,
        hook_jobs: 100,
        worker_kills: 10,
        api_kills: 10,
        job_ms: 100,
        deadline: Duration::from_secs(600),
    });
    assert!(r.succeeded >= 1000, "{r:?}");
}

/// moto's S3 server (`pip install 'moto[server]'`) on a free port, with a bucket.
fn start_moto() -> (Node, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto_server ({e}): `pip install 'moto[server]'` (.ci/run does)")
        });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let node = Node {
        name: "moto".into(),
        role: "s3",
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    (node, format!("http://127.0.0.1:{port}"))
}

/// API node and workers with their own data folders and the files in a bucket: outputs are
/// read back through the API node, an upload to the API node is fetched by the worker that
/// runs the job naming it.
#[test]
fn cluster_without_shared_disk_uses_object_storage() {
    let server = TempPostgres::start();
    let url = server.create_db("objects");
    let (_moto, endpoint) = start_moto();
    let env: Vec<(&str, &str)> = vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let extra = ["--outputs", "s3://cluster-files/e2e"];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| data_dir()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http.put(format!("{endpoint}/cluster-files")).send().await.unwrap();
        assert!(r.status().is_success(), "create bucket");
        let api = spawn_node_with(&url, dirs[0].path(), "api", "api", &extra, &env);
        let _w: Vec<Node> = (1..3)
            .map(|i| {
                spawn_node_with(&url, dirs[i].path(), "worker", &format!("w{i}"), &extra, &env)
            })
            .collect();
        let send = |path: String, body: Value| {
            let http = http.clone();
            async move {
                let r = http
                    .post(format!("http://{}{path}", api.addr))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{path}");
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()
            }
        };
        // An upload to the API node: stored in the bucket (and in the API node's input/).
        let png = {
            let img = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 200, 30]));
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        };
        let boundary = "b0undary";
        let mut form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"green.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(&png);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = http
            .post(format!("http://{}/upload/image", api.addr))
            .bearer_auth(TOKEN)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut ids = vec![];
        for i in 0..6 {
            let wf = json!({
                "1": {"class_type": "LoadImage", "inputs": {"image": "green.png"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": format!("obj_{i}")}}
            });
            let v = send("/prompt".into(), json!({"prompt": wf})).await;
            ids.push(v["prompt_id"].as_str().unwrap().to_string());
        }
        let db = pg(&url).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let open: i64 = db
                .query_one("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')", &[])
                .await
                .unwrap()
                .get(0);
            if open == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "jobs still open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ran_on = HashSet::new();
        for id in &ids {
            let r = db
                .query_one("SELECT status, outputs, node_id, error FROM jobs WHERE id = $1", &[id])
                .await
                .unwrap();
            let (status, outputs, node, error): (String, String, String, Option<String>) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            assert_eq!(status, "success", "{id}: {error:?}");
            ran_on.insert(node);
            let outputs: Value = serde_json::from_str(&outputs).unwrap();
            let name = outputs["2"]["images"][0]["filename"].as_str().unwrap().to_string();
            // Not on any node's disk, served by the API node from the bucket.
            for d in &dirs {
                assert!(!d.path().join("output").join(&name).exists());
            }
            let r = http
                .get(format!("http://{}/view?filename={name}&type=output", api.addr))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}");
            let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap().to_rgb8();
            assert_eq!(img.get_pixel(1, 1).0, [10, 200, 30], "the uploaded image, via the worker");
        }
        // The workers fetched the upload from the bucket into their own input folders.
        let fetched = dirs[1..]
            .iter()
            .filter(|d| d.path().join("input/green.png").exists())
            .count();
        assert_eq!(fetched, ran_on.len(), "{ran_on:?}");
    });
}

/// PostgreSQL goes down (fast shutdown: every session cut) for 3 s while a 1.5 s job runs on
/// a worker and a WebSocket client watches it through an API node: the job ends while the
/// database is away. Its outcome is recorded once, as a success (the end is retried until the
/// database is back; the lease outlives the outage); the events the worker made meanwhile are
/// held and sent after it, and the API node LISTENs again and catches up on them, so the
/// client gets the job's progress in order, its end, and the events of the next job.
#[test]
fn database_restart_mid_job() {
    let mut server = TempPostgres::start();
    let url = server.create_db("restart");
    let data = data_dir();
    let lease = ["--lease-secs", "20"];
    let (u, d) = (url.clone(), data.path().to_path_buf());
    let api = std::thread::spawn(move || spawn_node_with(&u, &d, "api", "api0", &lease, &[]))
        .join()
        .unwrap();
    let _worker = spawn_node_with(&url, data.path(), "worker", "w0", &lease, &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut ws = ws_connect(api.addr, &format!("clientId=restart-ws&token={TOKEN}")).await;
        let body =
            |ms: u64, tag: &str| json!({"prompt": workflow(ms, tag), "client_id": "restart-ws"});
        let a = submit(&http, api.addr, &body(1500, "restart-a"))
            .await
            .unwrap();
        // Running on the worker: its first progress reached the client through the API node.
        let mut before = vec![];
        loop {
            let m = server_common::ws_next(&mut ws).await;
            let first = m["type"] == "progress" && m["data"]["prompt_id"] == a.as_str();
            before.push(m);
            if first {
                break;
            }
        }
        // The outage: 3 s without a database, from the job's first step to after its end.
        tokio::task::block_in_place(|| {
            server.stop_server();
            std::thread::sleep(Duration::from_millis(3000));
            server.start_server();
        });
        let mut msgs = before;
        msgs.extend(
            tokio::time::timeout(Duration::from_secs(60), ws_until_done(&mut ws, &a))
                .await
                .expect("the job's end reaches the client after the restart"),
        );
        let of_a = |t: &str| {
            msgs.iter()
                .filter(|m| m["type"] == t && m["data"]["prompt_id"] == a.as_str())
                .count()
        };
        assert_eq!(of_a("execution_success"), 1, "{msgs:?}");
        assert_eq!(of_a("execution_error"), 0, "{msgs:?}");
        // DevSleep reports 150 steps: in order, none twice, and none missing but the few inline
        // NOTIFYs in flight at the instant the server went down (under 10 ms of events on an
        // idle machine; allowed: 10 steps, 100 ms). Without the held events and the catch-up,
        // the steps of the outage (most of the job) never arrive.
        let steps: Vec<u64> = msgs
            .iter()
            .filter(|m| m["type"] == "progress" && m["data"]["node"] == "1")
            .map(|m| m["data"]["value"].as_u64().unwrap())
            .collect();
        eprintln!("{} of 150 progress steps arrived", steps.len());
        assert!(
            steps.windows(2).all(|w| w[0] < w[1]),
            "progress out of order: {steps:?}"
        );
        assert_eq!(steps.last(), Some(&150), "{steps:?}");
        assert!(
            steps.len() >= 140,
            "{} of 150 progress steps arrived: {steps:?}",
            steps.len()
        );
        // Durable: recorded once, a success, its output readable through the API node.
        let db = pg(&url).await;
        let row = db
            .query_one(
                "SELECT status, outputs, in_history FROM jobs WHERE id = $1",
                &[&a],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "success");
        assert!(row.get::<_, bool>(2));
        let outputs: Value = serde_json::from_str(row.get::<_, &str>(1)).unwrap();
        let img = &outputs["3"]["images"][0];
        let r = http
            .get(format!(
                "http://{}/view?filename={}&type=output&subfolder={}",
                api.addr,
                img["filename"].as_str().unwrap(),
                img["subfolder"].as_str().unwrap()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A new job after the restart: queued through the API node, run by the worker, its
        // events back at the client.
        let b = submit(&http, api.addr, &body(50, "restart-b"))
            .await
            .unwrap();
        let done = tokio::time::timeout(Duration::from_secs(30), ws_until_done(&mut ws, &b))
            .await
            .expect("events of a job queued after the restart");
        assert!(done
            .iter()
            .any(|m| m["type"] == "execution_success" && m["data"]["prompt_id"] == b.as_str()));
    });
}
