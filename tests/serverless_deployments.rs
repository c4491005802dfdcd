//! §1 Deployments end to end over real HTTP on 127.0.0.1: deployments from files and from the
//! API, submit with overrides or an inline graph, status/result/cancel, hosted output URLs,
//! override errors field by field, per-token visibility, the queue-depth limit.

mod server_common;

use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-secret";

fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![
                ApiToken {
                    name: "alice".into(),
                    token: ALICE.into(),
                },
                ApiToken {
                    name: "bob".into(),
                    token: BOB.into(),
                },
            ],
            deployments_dir: dir.join("deployments"),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A data dir whose deployments folder holds `files` (`(file name, JSON)`).
fn data_dir(files: &[(&str, Value)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("deployments");
    std::fs::create_dir_all(&d).unwrap();
    for (name, v) in files {
        std::fs::write(d.join(name), v.to_string()).unwrap();
    }
    dir
}

async fn start_with(files: &[(&str, Value)], models: Option<&Path>) -> TestServer {
    start_with_config(files, models, |_| {}).await
}

async fn start_with_config(
    files: &[(&str, Value)],
    models: Option<&Path>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let dir = data_dir(files);
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    start_in(dir, models, cfg).await
}

async fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await
}

/// The path of an absolute URL this server handed out.
fn path_of(addr: SocketAddr, url: &Value) -> String {
    let url = url.as_str().expect("a URL string");
    url.strip_prefix(&format!("http://{addr}"))
        .unwrap_or_else(|| panic!("{url} is not on http://{addr}"))
        .to_string()
}

/// Polls a status URL until `status` is one of `words`.
async fn wait_status(addr: SocketAddr, url: &Value, token: &str, words: &[&str]) -> Value {
    let path = path_of(addr, url);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = call(addr, "GET", &path, token, &Value::Null).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        if words.iter().any(|w| v["status"] == *w) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "still {v}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn saver_deployment() -> Value {
    json!({"id": "saver", "name": "Save a PNG", "description": "model-free",
           "workflow": {"1": {"class_type": "TestSavePng", "inputs": {"prefix": "dep"}}}})
}

fn sleeper_deployment() -> Value {
    json!({"id": "sleeper", "name": "Sleep", "workflow": "sleeper_graph.json"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_poll_result_fetch_and_visibility() {
    let s = start_with(&[("saver.json", saver_deployment())], None).await;
    let addr = s.addr;

    // The file deployment is listed.
    let list = call(addr, "GET", "/prod/v1/deployments", ALICE, &Value::Null)
        .await
        .json();
    assert_eq!(list["deployments"][0]["deployment_id"], "saver");
    assert_eq!(list["deployments"][0]["name"], "Save a PNG");

    // Without a token, or with a wrong one: 401 with a code.
    let r = request(addr, "GET", "/prod/v1/deployments", &[], b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "UNAUTHORIZED");
    let r = call(addr, "GET", "/prod/v1/deployments", "nope", &Value::Null).await;
    assert_eq!(r.status, 401);

    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/saver/inference",
        ALICE,
        &json!({"overrides": {"1": {"inputs": {"prefix": "cat"}}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sub = r.json();
    let rid = sub["request_id"].as_str().unwrap().to_string();
    let uuid = uuid::Uuid::parse_str(&rid).expect("request_id is a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    let prefix = format!("http://{addr}/prod/v1/deployments/saver/requests/{rid}");
    assert_eq!(sub["status_url"], format!("{prefix}/status"));
    assert_eq!(sub["result_url"], format!("{prefix}/result"));
    assert_eq!(sub["cancel_url"], format!("{prefix}/cancel"));

    let st = wait_status(addr, &sub["status_url"], ALICE, &["succeeded", "failed"]).await;
    assert_eq!(st["status"], "succeeded", "{st}");
    assert_eq!(st["request_id"], rid);

    let res = call(
        addr,
        "GET",
        &path_of(addr, &sub["result_url"]),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(res["status"], "succeeded");
    assert!(res["created_at"].as_str().unwrap().contains('T'));
    assert!(res["finished_at"].is_string());
    let img = &res["outputs"]["1"]["images"][0];
    let name = img["filename"].as_str().unwrap();
    assert!(name.starts_with("cat_"), "override applied: {name}");
    assert_eq!(img["type"], "output");
    assert_eq!(img["subfolder"], "");
    assert_eq!(img["url"], format!("http://{addr}/v1/files/{rid}/{name}"));

    // The hosted URL serves the file's bytes.
    let f = call(
        addr,
        "GET",
        &path_of(addr, &img["url"]),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(f.status, 200);
    assert_eq!(f.header("content-type"), Some("image/png"));
    let on_disk = std::fs::read(s.dir.path().join("output").join(name)).unwrap();
    assert_eq!(f.body, on_disk);

    // The shared /v1/requests lookup answers for the owner too.
    let v1 = call(
        addr,
        "GET",
        &format!("/v1/requests/{rid}/status"),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.json()["status"], "succeeded");

    // Bob sees none of it: status, result, file, cancel are 404 like an unknown id.
    for (m, p) in [
        ("GET", path_of(addr, &sub["status_url"])),
        ("GET", path_of(addr, &sub["result_url"])),
        ("POST", path_of(addr, &sub["cancel_url"])),
        ("GET", path_of(addr, &img["url"])),
        ("GET", format!("/v1/requests/{rid}/result")),
    ] {
        let r = call(addr, m, &p, BOB, &Value::Null).await;
        assert_eq!(r.status, 404, "{m} {p}");
        assert_eq!(r.json()["code"], "REQUEST_NOT_FOUND", "{m} {p}");
    }
    // Another deployment's path does not reach this request either.
    let r = call(
        addr,
        "GET",
        &format!("/prod/v1/deployments/other/requests/{rid}/status"),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    // A file the job did not produce is not served.
    let r = call(
        addr,
        "GET",
        &format!("/v1/files/{rid}/comfyrs.db"),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "FILE_NOT_FOUND");

    // An unknown deployment.
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/nope/inference",
        ALICE,
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "DEPLOYMENT_NOT_FOUND");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_api_crud_schema_and_inline_graph() {
    let s = start_with(&[], None).await;
    let addr = s.addr;
    // An unknown class is refused at creation, naming the node and the class.
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments",
        ALICE,
        &json!({"name": "bad", "workflow_api_json": {"5": {"class_type": "NoSuchNode", "inputs": {}}}}),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["code"], "INVALID_WORKFLOW");
    assert!(e["message"].as_str().unwrap().contains("NoSuchNode"), "{e}");
    assert_eq!(e["details"]["errors"][0]["node_id"], "5");
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments",
        ALICE,
        &json!({"workflow_api_json": {}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().starts_with("name:"));

    let graph = json!({"1": {"class_type": "TestSavePng", "inputs": {"prefix": "api"}}});
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments",
        ALICE,
        &json!({"name": "from api", "workflow_api_json": graph}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let dep = r.json();
    let id = dep["deployment_id"].as_str().unwrap().to_string();
    assert_eq!(dep["name"], "from api");
    // Saved as a file in the deployments folder.
    let file = s.dir.path().join("deployments").join(format!("{id}.json"));
    assert!(file.exists());

    let one = call(
        addr,
        "GET",
        &format!("/prod/v1/deployments/{id}"),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(one["workflow_api_json"], graph);
    // It belongs to the token that created it (issue 18, defect 14).
    let r = call(
        addr,
        "GET",
        &format!("/prod/v1/deployments/{id}"),
        BOB,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);

    // The schema lists literal inputs with their object_info declaration.
    let sch = call(
        addr,
        "GET",
        &format!("/prod/v1/deployments/{id}/schema"),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(sch["nodes"]["1"]["class_type"], "TestSavePng");
    assert_eq!(sch["nodes"]["1"]["inputs"]["prefix"]["value"], "api");
    assert_eq!(sch["nodes"]["1"]["inputs"]["prefix"]["config"][0], "STRING");
    assert_eq!(sch["nodes"]["1"]["inputs"]["prefix"]["media"], false);

    // An inline graph replaces the saved one for this request (under /prod/v2 as well).
    let inline = json!({"7": {"class_type": "TestSavePng", "inputs": {"prefix": "inline"}}});
    let sub = call(
        addr,
        "POST",
        &format!("/prod/v2/deployments/{id}/inference"),
        ALICE,
        &json!({"workflow_api_json": inline}),
    )
    .await
    .json();
    wait_status(addr, &sub["status_url"], ALICE, &["succeeded"]).await;
    let res = call(
        addr,
        "GET",
        &path_of(addr, &sub["result_url"]),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    let name = res["outputs"]["7"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    assert!(name.starts_with("inline_"), "{res}");
    assert!(res["outputs"].get("1").is_none());

    // Unknown body fields are named.
    let r = call(
        addr,
        "POST",
        &format!("/prod/v1/deployments/{id}/inference"),
        ALICE,
        &json!({"overide": {}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("unknown field `overide`"));

    let r = call(
        addr,
        "DELETE",
        &format!("/prod/v1/deployments/{id}"),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!file.exists());
    let r = call(
        addr,
        "GET",
        &format!("/prod/v1/deployments/{id}"),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "DEPLOYMENT_NOT_FOUND");
    s.server.shutdown().await;
}

fn tiny_sd_deployment() -> Value {
    let wf: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/workflows/tiny_txt2img.json"
        ))
        .unwrap(),
    )
    .unwrap();
    json!({"id": "tiny-sd", "name": "tiny SD1.5 txt2img", "workflow": wf})
}

fn fixture_models() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

async fn expect_400(addr: SocketAddr, overrides: Value) -> Value {
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/tiny-sd/inference",
        ALICE,
        &json!({ "overrides": overrides }),
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_errors_name_node_input_reason_and_allowed_values() {
    let models = fixture_models();
    let s = start_with(&[("tiny.json", tiny_sd_deployment())], Some(&models)).await;
    let addr = s.addr;

    // A node that is not in the graph.
    let e = expect_400(addr, json!({"99": {"inputs": {"seed": 1}}})).await;
    assert_eq!(e["code"], "INVALID_OVERRIDE");
    let p = &e["details"]["errors"][0];
    assert_eq!(p["node_id"], "99");
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .contains("not in the workflow"),
        "{p}"
    );

    // An input the node neither has nor declares: the allowed inputs are listed.
    let e = expect_400(addr, json!({"5": {"inputs": {"seeed": 1}}})).await;
    assert_eq!(e["code"], "INVALID_OVERRIDE");
    let p = &e["details"]["errors"][0];
    assert_eq!(p["node_id"], "5");
    assert_eq!(p["input"], "seeed");
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("sampler_name") && reason.contains("KSampler"),
        "{reason}"
    );

    // A combo value that is not a choice: the choices come back.
    let e = expect_400(addr, json!({"5": {"inputs": {"sampler_name": "nope"}}})).await;
    assert_eq!(e["code"], "INVALID_OVERRIDE");
    let p = &e["details"]["errors"][0];
    assert_eq!(p["node_id"], "5");
    assert_eq!(p["class_type"], "KSampler");
    assert_eq!(p["input"], "sampler_name");
    assert_eq!(p["type"], "value_not_in_list");
    assert_eq!(p["received"], "nope");
    let allowed: Vec<&str> = p["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        allowed.contains(&"euler") && allowed.contains(&"dpmpp_2m"),
        "{allowed:?}"
    );

    // A number out of range: the bounds come back.
    let e = expect_400(addr, json!({"5": {"inputs": {"steps": 0}}})).await;
    let p = &e["details"]["errors"][0];
    assert_eq!(p["input"], "steps");
    assert_eq!(p["type"], "value_smaller_than_min");
    assert_eq!(p["allowed"]["min"], 1);
    assert_eq!(p["allowed"]["max"], 10000);

    // A wrong type.
    let e = expect_400(addr, json!({"4": {"inputs": {"width": "wide"}}})).await;
    let p = &e["details"]["errors"][0];
    assert_eq!(p["node_id"], "4");
    assert_eq!(p["input"], "width");

    // A malformed overrides document.
    let e = expect_400(addr, json!({"5": {"seed": 1}})).await;
    assert_eq!(e["code"], "INVALID_OVERRIDE");

    // Nothing was queued by any of these.
    assert_eq!(s.server.queue.store().all_jobs().unwrap().len(), 0);

    // A valid override runs the tiny model end to end and serves a 64x64 PNG.
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/tiny-sd/inference",
        ALICE,
        &json!({"overrides": {"5": {"inputs": {"seed": 7, "steps": 2}}, "2": {"inputs": {"text": "a dog"}}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sub = r.json();
    let st = wait_status(addr, &sub["status_url"], ALICE, &["succeeded", "failed"]).await;
    assert_eq!(st["status"], "succeeded", "{st}");
    let res = call(
        addr,
        "GET",
        &path_of(addr, &sub["result_url"]),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    let img = &res["outputs"]["7"]["images"][0];
    let f = call(
        addr,
        "GET",
        &path_of(addr, &img["url"]),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(f.status, 200);
    let decoded = image::load_from_memory(&f.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 64));
    // The job ran the overridden graph.
    let rid = res["request_id"].as_str().unwrap();
    let job = s.server.queue.store().get(rid).unwrap().unwrap();
    assert_eq!(job.prompt["5"]["inputs"]["seed"], 7);
    assert_eq!(job.prompt["2"]["inputs"]["text"], "a dog");
    assert_eq!(job.source, "deployments");
    assert_eq!(job.owner.as_deref(), Some("alice"));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_and_queue_limit() {
    let dir = data_dir(&[("sleeper.json", sleeper_deployment())]);
    std::fs::write(
        dir.path().join("deployments/sleeper_graph.json"),
        sleep_workflow(60_000, "zz").to_string(),
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.serverless.max_queue_depth = 1;
    cfg.serverless.retry_after_s = 7;
    let s = start_in(dir, None, cfg).await;
    let addr = s.addr;
    let empty = json!({});
    let submit = || {
        call(
            addr,
            "POST",
            "/prod/v1/deployments/sleeper/inference",
            ALICE,
            &empty,
        )
    };

    let a = submit().await.json();
    let st = wait_status(addr, &a["status_url"], ALICE, &["in_progress"]).await;
    assert!(st.get("queue_position").is_none());
    let b = submit().await.json();
    let st = call(
        addr,
        "GET",
        &path_of(addr, &b["status_url"]),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(st["status"], "in_queue");
    assert_eq!(st["queue_position"], 0);

    // The queue holds one pending request: the next submit is refused with Retry-After.
    let r = submit().await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.json()["code"], "QUEUE_FULL");

    // The running one reports progress.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = call(
            addr,
            "GET",
            &path_of(addr, &a["status_url"]),
            ALICE,
            &Value::Null,
        )
        .await
        .json();
        if st["progress"]["value"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(st["progress"]["node"], "1");
            assert_eq!(st["progress"]["max"], 6000);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Cancel the queued one: removed from the queue.
    let r = call(
        addr,
        "POST",
        &path_of(addr, &b["cancel_url"]),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"request_id": b["request_id"], "status": "cancelled"})
    );
    assert_eq!(s.server.queue.store().pending_count().unwrap(), 0);
    let st = call(
        addr,
        "GET",
        &path_of(addr, &b["result_url"]),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(st["status"], "cancelled");
    assert!(st.get("outputs").is_none());

    // Cancel the running one: interrupted at its next step.
    let r = call(
        addr,
        "POST",
        &path_of(addr, &a["cancel_url"]),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "cancelled");
    wait_status(addr, &a["status_url"], ALICE, &["cancelled"]).await;

    // A finished request cannot be cancelled.
    let r = call(
        addr,
        "POST",
        &path_of(addr, &a["cancel_url"]),
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["code"], "ALREADY_FINISHED");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_results_and_body_limit() {
    let s = start_with_config(&[("saver.json", saver_deployment())], None, |c| {
        c.serverless.max_body_bytes = 2000;
    })
    .await;
    let addr = s.addr;
    // A body over the cap: 413 with a code, nothing queued.
    let big = json!({"overrides": {"1": {"inputs": {"prefix": "x".repeat(3000)}}}});
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/saver/inference",
        ALICE,
        &big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "BODY_TOO_LARGE");
    assert_eq!(s.server.queue.store().all_jobs().unwrap().len(), 0);

    let sub = call(
        addr,
        "POST",
        "/prod/v1/deployments/saver/inference",
        ALICE,
        &json!({}),
    )
    .await
    .json();
    wait_status(addr, &sub["status_url"], ALICE, &["succeeded"]).await;
    let res = call(
        addr,
        "GET",
        &path_of(addr, &sub["result_url"]),
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    let img = res["outputs"]["1"]["images"][0].clone();
    let file = s
        .dir
        .path()
        .join("output")
        .join(img["filename"].as_str().unwrap());
    assert!(file.exists());

    // Not yet expired a day later (the default retention is 7 days)...
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(s.server.serverless.expire_before(now + 86_400_000), 0);
    // ...expired after 7 days: results and files deleted, lookups say so.
    assert_eq!(
        s.server
            .serverless
            .expire_before(now + 7 * 86_400_000 + 60_000),
        1
    );
    assert!(!file.exists());
    for p in [
        path_of(addr, &sub["status_url"]),
        path_of(addr, &sub["result_url"]),
        path_of(addr, &img["url"]),
    ] {
        let r = call(addr, "GET", &p, ALICE, &Value::Null).await;
        assert_eq!(r.status, 404, "{p}");
        let e = r.json();
        assert_eq!(e["code"], "REQUEST_EXPIRED", "{p}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("more than 7 days ago"),
            "{e}"
        );
    }
    // Another token still gets the plain 404.
    let r = call(
        addr,
        "GET",
        &path_of(addr, &sub["status_url"]),
        BOB,
        &Value::Null,
    )
    .await;
    assert_eq!(r.json()["code"], "REQUEST_NOT_FOUND");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_with_attached_lora() {
    let models = fixture_models();
    let mut dep = tiny_sd_deployment();
    dep["id"] = json!("tiny-lora");
    dep["loras"] = json!([{"path": "style.safetensors", "scale": 0.6}]);
    let mut missing = tiny_sd_deployment();
    missing["id"] = json!("tiny-missing-lora");
    missing["loras"] = json!([{"path": "gone.safetensors"}]);
    let s = start_with(&[("a.json", dep), ("b.json", missing)], Some(&models)).await;
    let addr = s.addr;
    // The LoRA file (one attention projection of the tiny UNet).
    {
        use candle_core::{Device, Tensor};
        let x = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q";
        let mut t = std::collections::HashMap::new();
        let v = |n: usize, k: f32| {
            Tensor::from_vec(
                (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<f32>>(),
                n,
                &Device::Cpu,
            )
            .unwrap()
        };
        t.insert(
            format!("{x}.lora_down.weight"),
            v(256, 0.37).reshape((4, 64)).unwrap(),
        );
        t.insert(
            format!("{x}.lora_up.weight"),
            v(256, 0.91).reshape((64, 4)).unwrap(),
        );
        let dir = s.dir.path().join("models/loras");
        std::fs::create_dir_all(&dir).unwrap();
        candle_core::safetensors::save(&t, dir.join("style.safetensors")).unwrap();
    }
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/tiny-lora/inference",
        ALICE,
        &json!({"overrides": {"5": {"inputs": {"steps": 1}}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sub = r.json();
    let st = wait_status(addr, &sub["status_url"], ALICE, &["succeeded", "failed"]).await;
    assert_eq!(st["status"], "succeeded", "{st}");
    let job = s
        .server
        .queue
        .store()
        .get(sub["request_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        job.prompt["1_lora0"]["inputs"]["lora_name"],
        "style.safetensors"
    );
    assert_eq!(job.prompt["1_lora0"]["inputs"]["strength_clip"], 0.6);
    assert_eq!(job.prompt["5"]["inputs"]["model"], json!(["1_lora0", 0]));
    let r = call(
        addr,
        "POST",
        "/prod/v1/deployments/tiny-missing-lora/inference",
        ALICE,
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "LORA_NOT_FOUND");
    s.server.shutdown().await;
}

/// Deployment files may be TOML as well as JSON (spec §1): inline graphs and workflow paths
/// both work, and bad files are skipped with a reason naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_files_in_toml() {
    let dir = data_dir(&[("saver.json", saver_deployment())]);
    let d = dir.path().join("deployments");
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    // An inline graph: node ids are table keys, links would be arrays.
    write(
        "inline.toml",
        r#"id = "toml_inline"
name = "Saver (TOML)"
description = "inline graph"

[workflow.1]
class_type = "TestSavePng"

[workflow.1.inputs]
prefix = "tomlinline"
"#,
    );
    // A workflow_api.json beside it (in a subfolder: only the folder's own files are
    // deployments).
    std::fs::create_dir_all(d.join("graphs")).unwrap();
    write(
        "graphs/graph.json",
        &json!({"7": {"class_type": "TestSavePng", "inputs": {"prefix": "tomlpath"}}}).to_string(),
    );
    write(
        "by_path.toml",
        "id = \"toml_path\"\nname = \"Saver by path\"\nworkflow = \"graphs/graph.json\"\n",
    );
    // Bad files, each skipped for its own reason.
    write("broken.toml", "id = \"broken\"\nname = \n");
    write(
        "noname.toml",
        "id = \"noname\"\n[workflow.1]\nclass_type = \"TestSavePng\"\n",
    );
    write(
        "missing_graph.toml",
        "id = \"missing\"\nname = \"m\"\nworkflow = \"nowhere.json\"\n",
    );
    write(
        "twice.toml",
        "id = \"saver\"\nname = \"again\"\nworkflow = \"graphs/graph.json\"\n",
    );

    let store = comfyrs::server::serverless::deployments::DeploymentStore::load(&d);
    let shown = |f: &str| d.join(f).display().to_string();
    let problems = store.problems();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let find = |f: &str| {
        problems
            .iter()
            .find(|p| p.starts_with(&format!("{}: ", shown(f))))
            .unwrap_or_else(|| panic!("no problem for {f}: {problems:#?}"))
            .clone()
    };
    let broken = find("broken.toml");
    assert!(
        broken.starts_with(&format!("{}: not TOML: ", shown("broken.toml"))),
        "{broken}"
    );
    assert!(broken.contains(" at line 2 column "), "{broken}");
    assert!(!broken.contains('\n'), "{broken}");
    assert_eq!(
        find("noname.toml"),
        format!(
            "{}: expected {{id, name, workflow, loras?, description?}}: missing field `name`",
            shown("noname.toml")
        )
    );
    let missing = find("missing_graph.toml");
    assert!(
        missing.starts_with(&format!(
            "{}: workflow file {}: ",
            shown("missing_graph.toml"),
            shown("nowhere.json")
        )),
        "{missing}"
    );
    assert_eq!(
        find("twice.toml"),
        format!(
            "{}: deployment \"saver\" is already defined by {}; the first file wins",
            shown("twice.toml"),
            shown("saver.json")
        )
    );

    let mut cfg = config(&dir_of(&d));
    // Only an admin token deletes the operator's deployment files (issue 18, defect 14).
    cfg.serverless.admins = vec!["alice".into()];
    let s = start_in(dir, None, cfg).await;
    let addr = s.addr;
    let list = call(addr, "GET", "/prod/v1/deployments", ALICE, &Value::Null)
        .await
        .json();
    let mut ids: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["saver", "toml_inline", "toml_path"], "{list}");
    let shown_dep = call(
        addr,
        "GET",
        "/prod/v1/deployments/toml_inline",
        ALICE,
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(shown_dep["name"], "Saver (TOML)");
    assert_eq!(shown_dep["description"], "inline graph");
    assert_eq!(
        shown_dep["workflow_api_json"],
        json!({"1": {"class_type": "TestSavePng", "inputs": {"prefix": "tomlinline"}}})
    );

    // Both run, with overrides like any deployment.
    for (id, node, prefix) in [("toml_inline", "1", "a"), ("toml_path", "7", "b")] {
        let r = call(
            addr,
            "POST",
            &format!("/prod/v1/deployments/{id}/inference"),
            ALICE,
            &json!({"overrides": {node: {"inputs": {"prefix": prefix}}}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let sub = r.json();
        wait_status(addr, &sub["status_url"], ALICE, &["succeeded"]).await;
        let res = call(
            addr,
            "GET",
            &path_of(addr, &sub["result_url"]),
            ALICE,
            &Value::Null,
        )
        .await
        .json();
        let img = &res["outputs"][node]["images"][0];
        assert!(
            img["filename"].as_str().unwrap().starts_with(prefix),
            "{res}"
        );
    }

    // Deleting a TOML deployment removes its file.
    let r = call(
        addr,
        "DELETE",
        "/prod/v1/deployments/toml_inline",
        ALICE,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!d.join("inline.toml").exists());
    assert!(d.join("by_path.toml").exists());
    s.server.shutdown().await;
}

/// The data dir above a deployments folder.
fn dir_of(deployments: &Path) -> std::path::PathBuf {
    deployments.parent().unwrap().to_path_buf()
}
