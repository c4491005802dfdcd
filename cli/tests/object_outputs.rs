//! `comfyrs serve --outputs s3://bucket/prefix` against a real S3-compatible server on
//! loopback: moto's server (`pip install 'moto[server]'`, which `.ci/run` does), started by
//! the test. A missing `moto_server` fails the test with the reason.
//!
//! Output files leave the worker's disk for the bucket before the job is recorded as
//! finished; `/view` serves them from there (or redirects to a presigned URL); uploads are
//! stored there too.

#[path = "../../tests/server_common/mod.rs"]
mod server_common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);
impl Drop for Proc {
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

/// moto's S3 server on a free port; waits until it answers.
fn start_moto() -> (Proc, String) {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({e}): install the S3-compatible test server with \
                 `pip install 'moto[server]'` (.ci/run does)"
            )
        });
    let proc = Proc(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, endpoint)
}

fn serve(data: &Path, endpoint: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data)
        .args(["--outputs", "s3://comfy-out/runs"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start comfyrs serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on http://").nth(1) {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server prints its address");
    (Proc(child), addr.parse().unwrap())
}

/// The bucket as a server configured with `url` and moto's endpoint sees it.
fn objects_at(endpoint: &str, url: &str) -> comfyrs::objects::ObjectFiles {
    // Every test of this binary sets the same values (only the endpoint's port differs, and
    // each test passes its own endpoint below), so concurrent tests agree.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        std::env::set_var(k, v);
    }
    comfyrs::objects::ObjectFiles::from_url_at(url, endpoint, None).unwrap()
}

async fn body(r: reqwest::Response) -> Vec<u8> {
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_uploads_live_in_the_bucket() {
    let (_moto, endpoint) = start_moto();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // moto takes anonymous requests: create the bucket, read objects directly.
    let r = http
        .put(format!("{endpoint}/comfy-out"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());

    // The test reads the bucket as the server does (moto refuses anonymous reads).
    let bucket = objects_at(&endpoint, "s3://comfy-out/runs");
    let read = |ty: &'static str, name: String| {
        let key = bucket.key(ty, "", &name).unwrap();
        let b = &bucket;
        async move { b.get(&key).await.unwrap() }
    };

    let data = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(data.path(), &endpoint, &[]);
    let wf = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0xff8000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s3test"}}
    });
    let r = http
        .post(format!("http://{addr}/prompt"))
        .header("content-type", "application/json")
        .body(json!({"prompt": wf}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&body(r).await).unwrap();
    let id = v["prompt_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry = loop {
        let h: Value = serde_json::from_slice(
            &body(
                http.get(format!("http://{addr}/history/{id}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        )
        .unwrap();
        if let Some(e) = h.get(&id) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let name = entry["outputs"]["2"]["images"][0]["filename"]
        .as_str()
        .unwrap()
        .to_string();
    // Not on the disk: in the bucket, under prefix/type/name.
    assert!(!data.path().join("output").join(&name).exists());
    let object = read("output", name.clone())
        .await
        .expect("the output is an object in the bucket");
    assert_eq!(&object[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory(&object).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (16, 8));
    assert_eq!(img.get_pixel(3, 3).0, [0xff, 0x80, 0x00]);
    // /view passes the object through; a missing name is a 404.
    let view = http
        .get(format!("http://{addr}/view?filename={name}&type=output"))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200);
    assert_eq!(body(view).await, object);
    let missing = http
        .get(format!("http://{addr}/view?filename=nope.png&type=output"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Uploads are stored in the bucket too.
    let png = object.clone();
    let boundary = "XyZb0undary";
    let mut form = Vec::new();
    form.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"up.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    form.extend_from_slice(&png);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = http
        .post(format!("http://{addr}/upload/image"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up: Value = serde_json::from_slice(&body(r).await).unwrap();
    assert_eq!(up["name"], "up.png");
    let stored = read("input", "up.png".into())
        .await
        .expect("upload in the bucket");
    assert_eq!(stored, png);

    // Presigned: /view redirects to a signed URL of the object, which serves the bytes.
    let data2 = tempfile::tempdir().unwrap();
    let (_signed, addr2) = serve(data2.path(), &endpoint, &["--outputs-presign-secs", "60"]);
    let r = http
        .get(format!("http://{addr2}/view?filename={name}&type=output"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{endpoint}/comfy-out/runs/output/{name}?"))
            && loc.contains("X-Amz-Signature="),
        "{loc}"
    );
    let signed = http.get(&loc).send().await.unwrap();
    assert_eq!(signed.status(), 200);
    assert_eq!(body(signed).await, object);
}

/// Retention of serverless requests deletes their objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_objects() {
    use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
    let (_moto, endpoint) = start_moto();
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{endpoint}/ret-bucket"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let dir = tempfile::tempdir().unwrap();
    let deps = dir.path().join("deployments");
    std::fs::create_dir_all(&deps).unwrap();
    std::fs::write(
        deps.join("saver.json"),
        json!({"id": "saver", "name": "saver",
               "workflow": {"1": {"class_type": "TestSavePng", "inputs": {"prefix": "ret"}}}})
        .to_string(),
    )
    .unwrap();
    let cfg = comfyrs::server::ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![ApiToken {
                name: "t".into(),
                token: "tok".into(),
            }],
            deployments_dir: deps,
            ..Default::default()
        },
        ..Default::default()
    };
    let s = server_common::start_in(dir, None, cfg).await;
    let objects = std::sync::Arc::new(objects_at(&endpoint, "s3://ret-bucket/r"));
    s.server.queue.set_objects(objects.clone());
    let r = server_common::request(
        s.addr,
        "POST",
        "/prod/v1/deployments/saver/inference",
        &[
            ("Authorization", "Bearer tok"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let j = s.server.queue.store().get(&id).unwrap().unwrap();
        if j.status.is_finished() {
            break j;
        }
        assert!(Instant::now() < deadline, "request did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        job.status,
        comfyrs::store::JobStatus::Success,
        "{:?}",
        job.error
    );
    let name = job.outputs["1"]["images"][0]["filename"].as_str().unwrap();
    let key = objects.key("output", "", name).unwrap();
    assert!(objects.get(&key).await.unwrap().is_some(), "stored");
    assert!(!s.dir.path().join("output").join(name).exists());
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(s.server.serverless.expire_before(now + 8 * 86_400_000), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while objects.get(&key).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the expired object is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
