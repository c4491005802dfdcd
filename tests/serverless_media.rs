//! Media inputs: URLs under the SSRF guard (loopback, private, link-local and metadata
//! addresses refused after DNS resolution, redirects re-checked, size and time caps, the
//! allow-list for tests), data URIs and raw base64 stored by content hash, end to end through
//! a deployment's LoadImage.

mod server_common;

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use comfyrs::server::serverless::media::{MediaError, MediaFetcher, MediaPolicy};
use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A media server on 127.0.0.1: `/img.png`, `/big` (5000 bytes), `/slow` (answers after 3 s),
/// `/redirect?to=URL`, `/missing` (404).
async fn media_server() -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/img.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], png_bytes(5, 4, 9)) }),
        )
        .route("/big", get(|| async { vec![7u8; 5000] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                png_bytes(2, 2, 1)
            }),
        )
        .route(
            "/redirect",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                (StatusCode::FOUND, [(header::LOCATION, q["to"].clone())]).into_response()
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn refused(r: Result<Vec<u8>, MediaError>) -> String {
    match r {
        Err(MediaError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_refuses_internal_addresses() {
    let m = media_server().await;
    let port = m.port();

    // Default policy: https only.
    let strict = MediaFetcher::new(MediaPolicy::default());
    let e = refused(strict.fetch(&format!("http://{m}/img.png")).await);
    assert_eq!(e, "only https:// URLs are fetched (got http://)");
    let e = refused(strict.fetch("https://127.0.0.1/x.png").await);
    assert_eq!(
        e,
        "127.0.0.1 is a non-public address (loopback); fetching from it is refused"
    );

    // http allowed, no allow-list: every internal address is refused, literal or resolved.
    let guarded = MediaFetcher::new(MediaPolicy {
        allow_http: true,
        ..Default::default()
    });
    let cases = [
        (
            format!("http://127.0.0.1:{port}/img.png"),
            "127.0.0.1 is a non-public address (loopback)",
        ),
        (
            "http://10.1.2.3/x.png".to_string(),
            "10.1.2.3 is a non-public address (private)",
        ),
        (
            "http://192.168.0.7/x.png".to_string(),
            "192.168.0.7 is a non-public address (private)",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254 is a non-public address (cloud metadata)",
        ),
        (
            format!("http://[::1]:{port}/img.png"),
            "[::1] is a non-public address (loopback)",
        ),
        (
            "http://0.0.0.0/".to_string(),
            "0.0.0.0 is a non-public address (unspecified)",
        ),
    ];
    for (url, want) in &cases {
        let e = refused(guarded.fetch(url).await);
        assert!(e.starts_with(want), "{url}: {e}");
    }
    // A DNS name that resolves to loopback is refused after resolution.
    let e = refused(
        guarded
            .fetch(&format!("http://localhost:{port}/img.png"))
            .await,
    );
    assert!(e.starts_with("localhost resolves to "), "{e}");
    assert!(e.contains("loopback"), "{e}");

    // With 127.0.0.1 allowed (tests): the server is reachable, but its redirects to internal
    // addresses are re-checked and refused.
    let open = MediaFetcher::new(MediaPolicy {
        allow_http: true,
        allow_networks: vec!["127.0.0.1/32".into()],
        max_bytes: 1000,
        timeout: Duration::from_millis(500),
        max_redirects: 2,
    });
    let png = open.fetch(&format!("http://{m}/img.png")).await.unwrap();
    assert_eq!(png, png_bytes(5, 4, 9));
    for (target, want) in [
        (
            "http://10.0.0.1/x.png",
            "10.0.0.1 is a non-public address (private)",
        ),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is a non-public address (cloud metadata)",
        ),
        (
            &format!("http://[::1]:{port}/img.png") as &str,
            "[::1] is a non-public address (loopback)",
        ),
        (
            "ftp://127.0.0.1/x",
            "only https:// URLs are fetched (got ftp://)",
        ),
    ] {
        let url = format!("http://{m}/redirect?to={}", enc(target));
        let e = refused(open.fetch(&url).await);
        assert!(e.starts_with(&format!("redirect to {target}")), "{e}");
        assert!(e.contains(want), "{target}: {e}");
    }
    // A redirect to an allowed address is followed; too many redirects are refused.
    let hop = format!("http://{m}/img.png");
    let once = format!("http://{m}/redirect?to={}", enc(&hop));
    assert_eq!(open.fetch(&once).await.unwrap(), png_bytes(5, 4, 9));
    let twice = format!("http://{m}/redirect?to={}", enc(&once));
    let thrice = format!("http://{m}/redirect?to={}", enc(&twice));
    assert_eq!(refused(open.fetch(&thrice).await), "more than 2 redirects");

    // Size and time caps.
    match open.fetch(&format!("http://{m}/big")).await {
        Err(MediaError::Fetch(e)) => {
            assert!(e.ends_with("is larger than the limit of 1000 bytes"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    match open.fetch(&format!("http://{m}/slow")).await {
        Err(MediaError::Fetch(e)) => assert!(e.ends_with("did not answer within 0.5 s"), "{e}"),
        other => panic!("{other:?}"),
    }
    match open.fetch(&format!("http://{m}/missing")).await {
        Err(MediaError::Fetch(e)) => assert!(e.ends_with("answered 404 Not Found"), "{e}"),
        other => panic!("{other:?}"),
    }
}

const TOKEN: &str = "media-token";

async fn media_deployment_server(allow_local: bool) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("deployments");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("loader.json"),
        json!({"id": "loader", "name": "load and save", "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}}
        }})
        .to_string(),
    )
    .unwrap();
    let mut s = ServerlessConfig {
        tokens: vec![ApiToken {
            name: "m".into(),
            token: TOKEN.into(),
        }],
        deployments_dir: d,
        ..Default::default()
    };
    if allow_local {
        s.media.allow_http = true;
        s.media.allow_networks = vec!["127.0.0.1/32".into()];
    }
    let cfg = ServerConfig {
        serverless: s,
        ..Default::default()
    };
    start_in(dir, None, cfg).await
}

async fn run_loader(s: &TestServer, image: &str) -> Result<(Value, Value), Value> {
    let auth = format!("Bearer {TOKEN}");
    let h = [("Authorization", auth.as_str())];
    let body = json!({"overrides": {"1": {"inputs": {"image": image}}}});
    let r = request(
        s.addr,
        "POST",
        "/prod/v1/deployments/loader/inference",
        &h,
        body.to_string().as_bytes(),
    )
    .await;
    if r.status != 200 {
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        return Err(r.json());
    }
    let rid = r.json()["request_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let res = request(
            s.addr,
            "GET",
            &format!("/prod/v1/deployments/loader/requests/{rid}/result"),
            &h,
            b"",
        )
        .await
        .json();
        if res["status"] == "succeeded" || res["status"] == "failed" {
            let job = s.server.queue.store().get(&rid).unwrap().unwrap();
            return Ok((res, job.prompt));
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_inputs_through_a_deployment() {
    let m = media_server().await;
    let s = media_deployment_server(true).await;
    let png = png_bytes(5, 4, 9);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);

    // A data URI, raw base64 and a URL of the same picture all become one content-hash file.
    let mut names = Vec::new();
    for value in [
        format!("data:image/png;base64,{b64}"),
        b64.clone(),
        format!("http://{m}/img.png"),
    ] {
        let (res, prompt) = run_loader(&s, &value).await.unwrap();
        assert_eq!(res["status"], "succeeded", "{res}");
        let name = prompt["1"]["inputs"]["image"].as_str().unwrap().to_string();
        assert_eq!(
            std::fs::read(s.dir.path().join("input").join(&name)).unwrap(),
            png
        );
        names.push(name);
    }
    assert_eq!(names[0], names[1]);
    assert_eq!(names[1], names[2]);
    assert!(
        names[0].ends_with(".png") && names[0].len() == 36,
        "{}",
        names[0]
    );

    // Not an image, bad base64: 400 naming node and input, nothing queued.
    let before = s.server.queue.store().all_jobs().unwrap().len();
    let e = run_loader(&s, &format!("data:image/png;base64,{}", "QUJD".repeat(20)))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "INVALID_MEDIA");
    assert_eq!(e["details"]["errors"][0]["node_id"], "1");
    assert_eq!(e["details"]["errors"][0]["input"], "image");
    let e = run_loader(&s, "data:image/png;base64,@@@@")
        .await
        .unwrap_err();
    assert_eq!(e["code"], "INVALID_MEDIA");
    assert!(
        e["message"].as_str().unwrap().contains("not valid base64"),
        "{e}"
    );
    // A redirect into a private network is refused with the guard's reason.
    let e = run_loader(
        &s,
        &format!("http://{m}/redirect?to={}", enc("http://10.0.0.5/a.png")),
    )
    .await
    .unwrap_err();
    assert_eq!(e["code"], "MEDIA_REFUSED");
    assert_eq!(
        e["message"],
        "node 1 (LoadImage) input image: redirect to http://10.0.0.5/a.png refused: 10.0.0.5 is a non-public address (private); fetching from it is refused"
    );
    assert_eq!(s.server.queue.store().all_jobs().unwrap().len(), before);
    s.server.shutdown().await;

    // The default guard refuses the same local URL.
    let s = media_deployment_server(false).await;
    let e = run_loader(&s, &format!("https://127.0.0.1:{}/img.png", m.port()))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "MEDIA_REFUSED");
    assert!(e["message"].as_str().unwrap().contains("loopback"), "{e}");
    s.server.shutdown().await;
}
