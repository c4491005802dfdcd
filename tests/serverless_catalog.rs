//! §4 LoRA catalog admin over real HTTP: X-API-Key auth, live status and stats, pairs by
//! base model, background downloads (resumed with Range, sha256-checked), delete.

mod server_common;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use comfyrs::server::serverless::ServerlessConfig;
use comfyrs::server::ServerConfig;
use futures_util::StreamExt;
use serde_json::{json, Value};
use server_common::*;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "admin-key";

fn blob() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Serves `/lora.safetensors` (honouring `Range: bytes=N-`) and records the Range headers.
async fn file_server(ranges: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/lora.safetensors",
        get(move |h: HeaderMap| {
            let ranges = ranges.clone();
            async move {
                let data = blob();
                if let Some(r) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) {
                    ranges.lock().unwrap().push(r.to_string());
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    return (StatusCode::PARTIAL_CONTENT, data[from..].to_vec()).into_response();
                }
                data.into_response()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

async fn admin(addr: SocketAddr, method: &str, path: &str) -> Resp {
    request(addr, method, path, &[("X-API-Key", KEY)], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_status_pairs_downloads_and_delete() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let fs = file_server(ranges.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{fs}/lora.safetensors");
    let catalog = json!({"version": 2, "date": "2026-03-20 10:00", "categories": [
    {"id": "wan-loras", "name": "WAN LoRAs", "models": [
        {"name": "Ghibli Style High Noise", "file": "ghibli_high.safetensors", "dest": "loras", "size_gb": 0.1,
         "base_model": "WAN 2.1", "pair_id": "ghibli", "pair_role": "high", "tags": ["style"], "url": url, "sha256": sha(&blob())},
        {"name": "Ghibli Style Low Noise", "file": "ghibli_low.safetensors", "dest": "loras", "size_gb": 0.1,
         "base_model": "WAN 2.1", "pair_id": "ghibli", "pair_role": "low", "tags": ["style"], "url": url, "sha256": "00".repeat(32)},
        {"name": "Anime Style LoRA", "file": "anime.safetensors", "dest": "loras", "size_gb": 0.4,
         "base_model": "WAN 2.1", "pair_id": "anime", "pair_role": "both", "tags": []},
        {"name": "SD Thing", "file": "sdthing.safetensors", "dest": "loras", "size_gb": 0.1,
         "base_model": "SD 1.5", "tags": []}
    ]}]});
    std::fs::create_dir_all(dir.path().join("catalogs")).unwrap();
    std::fs::write(dir.path().join("catalogs/loras.json"), catalog.to_string()).unwrap();
    let loras = dir.path().join("models/loras");
    std::fs::create_dir_all(&loras).unwrap();
    std::fs::write(loras.join("anime.safetensors"), vec![1u8; 1234]).unwrap();
    // A partial earlier download of the high-noise file: it must be resumed.
    std::fs::write(
        loras.join("ghibli_high.safetensors.part"),
        &blob()[..40_000],
    )
    .unwrap();
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            admin_keys: vec![KEY.into()],
            catalogs_dir: dir.path().join("catalogs"),
            deployments_dir: dir.path().join("deployments"),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = start_in(dir, None, cfg).await;
    let addr = s.addr;

    // Auth.
    let r = request(addr, "GET", "/api/admin/loras", &[], b"").await;
    assert_eq!(r.status, 401);
    let r = request(
        addr,
        "GET",
        "/api/admin/loras",
        &[("X-API-Key", "wrong")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "UNAUTHORIZED");

    // Listing with live status and stats.
    let l = admin(addr, "GET", "/api/admin/loras").await.json();
    assert_eq!(l["version"], 2);
    let models = &l["categories"][0]["models"];
    let status: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["missing", "missing", "present", "missing"]);
    assert_eq!(models[2]["on_disk_bytes"], 1234);
    assert_eq!(l["stats"]["present_count"], 1);
    assert_eq!(l["stats"]["total_count"], 4);
    assert_eq!(l["stats"]["models_bytes"], 1234);
    assert!(l["stats"]["free_bytes"].as_u64().unwrap() > 0);

    // Pairs by base model, display names without the noise suffix.
    let c = admin(addr, "GET", "/api/admin/loras/compatible/WAN%202.1")
        .await
        .json();
    assert_eq!(
        c,
        json!([
            {"pair_id": "ghibli", "name": "Ghibli Style", "high": "ghibli_high.safetensors", "low": "ghibli_low.safetensors", "both": null},
            {"pair_id": "anime", "name": "Anime Style", "high": null, "low": null, "both": "anime.safetensors"}
        ])
    );
    let c = admin(addr, "GET", "/api/admin/loras/compatible/SD%201.5")
        .await
        .json();
    assert_eq!(c[0]["pair_id"], "sdthing.safetensors");

    // Downloads: resumed and verified; a checksum mismatch fails and leaves nothing.
    let r = admin(
        addr,
        "POST",
        "/api/admin/models/download/ghibli_high.safetensors",
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["status"], "queued");
    let r = admin(
        addr,
        "POST",
        "/api/admin/models/download/ghibli_low.safetensors",
    )
    .await;
    assert_eq!(r.status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let l = loop {
        let l = admin(addr, "GET", "/api/admin/loras").await.json();
        let m = &l["categories"][0]["models"];
        if m[0]["status"] == "present" && m[1]["status"] == "failed" {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(
        std::fs::read(loras.join("ghibli_high.safetensors")).unwrap(),
        blob()
    );
    assert_eq!(ranges.lock().unwrap()[0], "bytes=40000-");
    let err = l["categories"][0]["models"][1]["error"].as_str().unwrap();
    assert!(
        err.starts_with("checksum mismatch for ghibli_low.safetensors"),
        "{err}"
    );
    assert!(!loras.join("ghibli_low.safetensors").exists());
    assert!(!loras.join("ghibli_low.safetensors.part").exists());
    assert_eq!(l["stats"]["present_count"], 2);

    // Unknown files, entries without a URL.
    let r = admin(addr, "POST", "/api/admin/models/download/nope.safetensors").await;
    assert_eq!(r.status, 404);
    let r = admin(
        addr,
        "POST",
        "/api/admin/models/download/sdthing.safetensors",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("no url"));

    // Delete.
    let r = admin(addr, "DELETE", "/api/admin/models/anime.safetensors").await;
    assert_eq!(r.status, 200);
    assert!(!loras.join("anime.safetensors").exists());
    let r = admin(addr, "DELETE", "/api/admin/models/anime.safetensors").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "FILE_NOT_FOUND");
    // The models catalog (absent here) lists empty in the same shape.
    let m = admin(addr, "GET", "/api/admin/models").await.json();
    assert_eq!(m["categories"], json!([]));
    assert_eq!(m["stats"]["total_count"], 0);
    let _: Value = m;
    s.server.shutdown().await;
}

/// Serves `/stall.safetensors`: a request without `Range` gets the first `STALL_AT` bytes and
/// then nothing more (the connection stays open), one with `Range: bytes=N-` the rest; and
/// `/lora.safetensors` whole. Records every Range header.
async fn stalling_server(ranges: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let stall = {
        let ranges = ranges.clone();
        get(move |h: HeaderMap| {
            let ranges = ranges.clone();
            async move {
                let data = blob();
                if let Some(r) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) {
                    ranges.lock().unwrap().push(r.to_string());
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    return (StatusCode::PARTIAL_CONTENT, data[from..].to_vec()).into_response();
                }
                let head = axum::body::Bytes::from(data[..STALL_AT].to_vec());
                let body = futures_util::stream::iter([Ok::<_, std::io::Error>(head)])
                    .chain(futures_util::stream::pending());
                axum::body::Body::from_stream(body).into_response()
            }
        })
    };
    let app = axum::Router::new()
        .route("/stall.safetensors", stall)
        .route(
            "/lora.safetensors",
            get(|| async { blob().into_response() }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

const STALL_AT: usize = 30_000;

/// The download queue is in the job store: a restart resumes the download it cut off (from the
/// `.part` file, with `Range`) and runs the one queued behind it, with no new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_survive_a_restart() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let fs = stalling_server(ranges.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = json!({"version": 1, "date": "2026-12-01", "categories": [
    {"id": "sd", "name": "SD LoRAs", "models": [
        {"name": "Stalling", "file": "stall.safetensors", "dest": "loras", "size_gb": 0.1,
         "base_model": "SD 1.5", "tags": [], "url": format!("http://{fs}/stall.safetensors"),
         "sha256": sha(&blob())},
        {"name": "Queued", "file": "queued.safetensors", "dest": "loras", "size_gb": 0.1,
         "base_model": "SD 1.5", "tags": [], "url": format!("http://{fs}/lora.safetensors"),
         "sha256": sha(&blob())}
    ]}]});
    std::fs::create_dir_all(dir.path().join("catalogs")).unwrap();
    std::fs::write(dir.path().join("catalogs/loras.json"), catalog.to_string()).unwrap();
    let loras = dir.path().join("models/loras");
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            admin_keys: vec![KEY.into()],
            catalogs_dir: dir.path().join("catalogs"),
            deployments_dir: dir.path().join("deployments"),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = start_in(dir, None, cfg.clone()).await;
    for f in ["stall.safetensors", "queued.safetensors"] {
        let r = admin(s.addr, "POST", &format!("/api/admin/models/download/{f}")).await;
        assert_eq!(r.status, 202);
        assert_eq!(r.json()["status"], "queued");
    }
    // The first is stuck part-way with its bytes on disk; the second waits behind it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let l = admin(s.addr, "GET", "/api/admin/loras").await.json();
        let m = &l["categories"][0]["models"];
        if m[0]["status"] == "downloading"
            && m[0]["progress"]["downloaded_bytes"] == STALL_AT as u64
        {
            assert_eq!(m[1]["status"], "queued", "{l}");
            assert_eq!(l["stats"]["downloading_count"], 1);
            assert_eq!(l["stats"]["queued_count"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let dir = s.stop().await;
    assert_eq!(
        std::fs::metadata(loras.join("stall.safetensors.part"))
            .unwrap()
            .len(),
        STALL_AT as u64
    );
    assert!(!loras.join("stall.safetensors").exists());
    assert!(!loras.join("queued.safetensors").exists());
    assert!(ranges.lock().unwrap().is_empty());

    // Restart: both finish without being asked again; the cut-off one resumes where it was.
    let s = start_in(dir, None, cfg).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let l = loop {
        let l = admin(s.addr, "GET", "/api/admin/loras").await.json();
        let m = &l["categories"][0]["models"];
        if m[0]["status"] == "present" && m[1]["status"] == "present" {
            break l;
        }
        assert!(
            !["failed", "missing"].contains(&m[0]["status"].as_str().unwrap()),
            "{l}"
        );
        assert!(std::time::Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(
        ranges.lock().unwrap().clone(),
        vec![format!("bytes={STALL_AT}-")]
    );
    for f in ["stall.safetensors", "queued.safetensors"] {
        assert_eq!(std::fs::read(loras.join(f)).unwrap(), blob(), "{f}");
        assert!(!loras.join(format!("{f}.part")).exists());
    }
    assert_eq!(l["stats"]["present_count"], 2);
    assert_eq!(l["stats"]["queued_count"], 0);
    assert_eq!(l["stats"]["downloading_count"], 0);
    // Nothing is left in the queue.
    let store = s.server.queue.store();
    assert_eq!(store.download_state("stall.safetensors").unwrap(), None);
    assert_eq!(store.download_state("queued.safetensors").unwrap(), None);
    s.server.shutdown().await;
}

/// A catalog file present in another models root (a shared ComfyUI install, extra_model_paths)
/// reads `present`, is not downloaded again, and DELETE removes it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_other_model_roots_count_as_present() {
    let dir = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let catalog = json!({"version": 1, "categories": [{"id": "sd", "name": "SD", "models": [
        {"name": "Elsewhere", "file": "elsewhere.safetensors", "dest": "loras", "size_gb": 0.1,
         "base_model": "SD 1.5", "tags": [], "url": "http://127.0.0.1:9/never"}]}]});
    std::fs::create_dir_all(dir.path().join("catalogs")).unwrap();
    std::fs::write(dir.path().join("catalogs/loras.json"), catalog.to_string()).unwrap();
    // The first root (downloads go there) is `shared`; the file sits in the second one.
    let second = dir.path().join("models/loras");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("elsewhere.safetensors"), vec![7u8; 321]).unwrap();
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            admin_keys: vec![KEY.into()],
            catalogs_dir: dir.path().join("catalogs"),
            deployments_dir: dir.path().join("deployments"),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = start_in(dir, Some(shared.path()), cfg).await;
    let l = admin(s.addr, "GET", "/api/admin/loras").await.json();
    let m = &l["categories"][0]["models"][0];
    assert_eq!(m["status"], "present");
    assert_eq!(m["on_disk_bytes"], 321);
    assert_eq!(l["stats"]["present_count"], 1);
    let r = admin(
        s.addr,
        "POST",
        "/api/admin/models/download/elsewhere.safetensors",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "present");
    assert!(!shared.path().join("loras/elsewhere.safetensors").exists());
    let r = admin(s.addr, "DELETE", "/api/admin/models/elsewhere.safetensors").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!second.join("elsewhere.safetensors").exists());
    let l = admin(s.addr, "GET", "/api/admin/loras").await.json();
    assert_eq!(l["categories"][0]["models"][0]["status"], "missing");
    s.server.shutdown().await;
}
