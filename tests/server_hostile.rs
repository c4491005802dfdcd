//! The hostile-input suite (issue 18): each request that once took the server down, reached
//! what it should not or answered badly, over real HTTP and WebSocket on 127.0.0.1, with the
//! answer checked field by field. Each test names the defect it guards.

mod server_common;

use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Map, Value};
use server_common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tokens(admins: &[&str]) -> ServerConfig {
    ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![
                ApiToken {
                    name: "alice".into(),
                    token: "alice-secret".into(),
                },
                ApiToken {
                    name: "bob".into(),
                    token: "bob-secret".into(),
                },
                ApiToken {
                    name: "root".into(),
                    token: "root-secret".into(),
                },
            ],
            admins: admins.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn with_token(addr: SocketAddr, method: &str, path: &str, token: &str, body: &Value) -> Resp {
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

/// A request whose body is sent chunked (no Content-Length), `chunk` bytes at a time.
async fn chunked(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    for c in body.chunks(64 * 1024) {
        // The server may stop reading once over its limit: a failed write is its answer.
        if s.write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(c).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let is_chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let mut body = raw[split + 4..].to_vec();
    if is_chunked {
        // One chunk is enough for the small JSON errors checked here.
        let nl = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&body[..nl]).unwrap(), 16).unwrap();
        body = body[nl + 2..nl + 2 + n].to_vec();
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Defect 1: a 10,000-node ring made a body of n² size (18 GB and a dead server); now each
/// member's error is bounded, and the whole answer is linear in the prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_cycle_gets_a_small_error() {
    let t = start(ServerConfig::default()).await;
    let n = 10_000;
    let mut g = Map::new();
    for i in 0..n {
        let prev = (i + n - 1) % n;
        g.insert(
            i.to_string(),
            json!({"class_type": "ImageInvert", "inputs": {"image": [prev.to_string(), 0]}}),
        );
    }
    g.insert(
        "out".into(),
        json!({"class_type": "PreviewImage", "inputs": {"images": ["0", 0]}}),
    );
    let body = json!({"prompt": g}).to_string();
    let r = request(
        t.addr,
        "POST",
        "/prompt",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.len() < 16 * body.len(),
        "{} bytes of error for a {}-byte prompt",
        r.body.len(),
        body.len()
    );
    let j = r.json();
    assert_eq!(j["error"]["type"], "prompt_outputs_failed_validation");
    let errs = j["node_errors"].as_object().unwrap();
    assert_eq!(errs.len(), n);
    let e = &j["node_errors"]["4321"]["errors"][0];
    assert_eq!(e["type"], "dependency_cycle");
    assert_eq!(e["extra_info"]["node_id"], "4321");
    assert_eq!(e["extra_info"]["cycle_size"], n);
    assert_eq!(e["extra_info"]["cycle_nodes"].as_array().unwrap().len(), 16);
    let details = e["details"].as_str().unwrap();
    assert!(
        details.ends_with(&format!("-> ... ({n} nodes in the cycle)")),
        "{details}"
    );
    assert!(details.len() < 1024, "{details}");
    // Small cycles keep ComfyUI's full listing.
    let small = json!({
        "a": {"class_type": "ImageInvert", "inputs": {"image": ["b", 0]}},
        "b": {"class_type": "ImageInvert", "inputs": {"image": ["a", 0]}},
        "o": {"class_type": "PreviewImage", "inputs": {"images": ["a", 0]}}
    });
    let j = post_json(t.addr, "/prompt", &json!({"prompt": small}))
        .await
        .json();
    let e = &j["node_errors"]["a"]["errors"][0];
    assert_eq!(
        e["details"],
        "a (ImageInvert) -> b (ImageInvert) -> a (ImageInvert)"
    );
    assert_eq!(
        e["extra_info"],
        json!({"node_id": "a", "cycle_nodes": ["a", "b"]})
    );
    t.stop().await;
}

/// Defect 1's sibling: n failed outputs over a chain of n broken nodes listed every output
/// on every node (n² `dependent_outputs`); each node now lists at most 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_outputs_over_a_broken_chain_stay_linear() {
    let t = start(ServerConfig::default()).await;
    let n = 1500;
    let mut g = Map::new();
    g.insert(
        "c0".into(),
        json!({"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}),
    );
    for i in 1..n {
        g.insert(
            format!("c{i}"),
            json!({"class_type": "ImageScale", "inputs": {"image": [format!("c{}", i - 1), 0],
                   "upscale_method": "nearest-exact", "width": "wide", "height": 8, "crop": "disabled"}}),
        );
    }
    for i in 0..n {
        g.insert(
            format!("o{i}"),
            json!({"class_type": "PreviewImage", "inputs": {"images": [format!("c{}", n - 1), 0]}}),
        );
    }
    let body = json!({"prompt": g}).to_string();
    let r = request(
        t.addr,
        "POST",
        "/prompt",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    let j = r.json();
    let errs = j["node_errors"].as_object().unwrap();
    assert_eq!(errs.len(), n - 1);
    for (id, e) in errs {
        let deps = e["dependent_outputs"].as_array().unwrap();
        assert_eq!(deps.len(), 64, "{id}");
        assert_eq!(e["errors"][0]["type"], "invalid_input_type");
    }
    assert_eq!(j["node_errors"]["c5"]["dependent_outputs"][0], "o0");
    assert!(r.body.len() < 4 * 1024 * 1024, "{} bytes", r.body.len());
    t.stop().await;
}

/// Defects 4 and 5: `"number": "NaN"` was a 500 (a NOT NULL constraint), and a FLOAT given
/// as "NaN" or "inf" was accepted and failed at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_infinite_numbers_are_refused_up_front() {
    let t = start(ServerConfig::default()).await;
    for number in [json!("NaN"), json!("inf"), json!("-Infinity")] {
        let r = post_json(
            t.addr,
            "/prompt",
            &json!({"prompt": text_workflow("x"), "number": number}),
        )
        .await;
        assert_eq!(r.status, 400, "{number}");
        let j = r.json();
        assert_eq!(j["error"]["type"], "invalid_number");
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("number must be a finite number, got "),
            "{j}"
        );
    }
    for (raw, shown) in [("NaN", "nan"), ("inf", "inf"), ("-infinity", "-inf")] {
        let wf = json!({
            "1": {"class_type": "PrimitiveFloat", "inputs": {"value": raw}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
        });
        let r = post_json(t.addr, "/prompt", &json!({"prompt": wf})).await;
        assert_eq!(r.status, 400, "{raw}");
        let e = &r.json()["node_errors"]["1"]["errors"][0];
        assert_eq!(e["type"], "invalid_input_type");
        assert_eq!(e["extra_info"]["input_name"], "value");
        assert_eq!(
            e["extra_info"]["exception_message"],
            format!("{shown} is not a finite number")
        );
    }
    // Nothing was queued.
    let q = get(t.addr, "/queue").await.json();
    assert_eq!(q["queue_pending"], json!([]));
    t.stop().await;
}

/// Defect 2 at the door: a string literal over 1 MiB is refused naming node and input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_string_names_node_and_input() {
    let t = start(ServerConfig::default()).await;
    let long = "a ".repeat(600 * 1024);
    let r = post_json(t.addr, "/prompt", &json!({"prompt": text_workflow(&long)})).await;
    assert_eq!(r.status, 400);
    let j = r.json();
    let e = &j["node_errors"]["1"]["errors"][0];
    assert_eq!(e["type"], "value_too_long");
    assert_eq!(e["details"], "value");
    assert_eq!(e["extra_info"]["input_name"], "value");
    assert_eq!(e["extra_info"]["received_length"], long.len());
    assert_eq!(
        e["message"],
        format!(
            "Value of {} bytes longer than the limit of 1048576 bytes",
            long.len()
        )
    );
    t.stop().await;
}

/// Defect 3: API tokens alone left every ComfyUI route open. Now they need the server token
/// or an admin API token; tenant tokens get 401 there and keep the serverless routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_close_the_comfyui_routes() {
    let t = start(tokens(&["root"])).await;
    let addr = t.addr;
    for (m, path) in [
        ("GET", "/history"),
        ("GET", "/queue"),
        ("GET", "/prompt"),
        ("POST", "/prompt"),
        ("GET", "/view?filename=x.png"),
        ("POST", "/interrupt"),
        ("GET", "/api/jobs"),
        ("GET", "/object_info"),
    ] {
        let r = request(addr, m, path, &[], b"{}").await;
        assert_eq!(r.status, 401, "{m} {path} without a token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("admin API token"));
        let r = with_token(addr, m, path, "alice-secret", &json!({})).await;
        assert_eq!(r.status, 401, "{m} {path} with a tenant token");
    }
    let r = with_token(addr, "GET", "/history", "root-secret", &Value::Null).await;
    assert_eq!(r.status, 200);
    let r = get(addr, "/queue?token=root-secret").await;
    assert_eq!(r.status, 200);
    // The socket too.
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?clientId=a")).await;
    assert!(ws.is_err(), "a socket without a token");
    let mut ws = ws_connect(addr, "clientId=a&token=root-secret").await;
    assert_eq!(ws_next(&mut ws).await["type"], "status");
    // Public routes stay public; tenant tokens keep their own routes.
    assert_eq!(get(addr, "/health").await.status, 200);
    assert_eq!(get(addr, "/openapi.json").await.status, 200);
    let r = with_token(
        addr,
        "GET",
        "/prod/v1/deployments",
        "alice-secret",
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    t.stop().await;

    // No admin token at all: the ComfyUI routes are closed to everyone, and say why.
    let t = start(tokens(&[])).await;
    let r = with_token(t.addr, "GET", "/history", "alice-secret", &Value::Null).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"],
        "the ComfyUI API takes the server token (--token) or an admin API token, and this \
         server has neither; API tokens only open the serverless routes"
    );
    t.stop().await;

    // The server token opens both families (it is the admin "default").
    let t = start(ServerConfig {
        token: Some("server-secret".into()),
        ..tokens(&[])
    })
    .await;
    let r = with_token(t.addr, "GET", "/history", "server-secret", &Value::Null).await;
    assert_eq!(r.status, 200);
    let r = with_token(
        t.addr,
        "GET",
        "/prod/v1/deployments",
        "server-secret",
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    t.stop().await;
}

/// Defect 3's start-up half: a non-loopback listen without a credential for the ComfyUI
/// routes refuses to start.
#[test]
fn non_loopback_needs_a_comfyui_credential() {
    let mut c = tokens(&[]);
    c.listen = "0.0.0.0".parse().unwrap();
    let e = c.check_security().unwrap_err();
    assert!(
        e.starts_with("refusing to listen on 0.0.0.0 without authentication for the ComfyUI API"),
        "{e}"
    );
    c.serverless.admins = vec!["root".into()];
    assert!(c.check_security().is_ok());
    c.serverless.admins.clear();
    c.token = Some("t".into());
    assert!(c.check_security().is_ok());
    c.token = None;
    c.allow_no_auth = true;
    assert!(c.check_security().is_ok());
}

/// Defects 6 and 10: a chunked body got past the serverless limit (the larger ComfyUI one
/// applied), and its 413 was text/plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_meet_their_family_limit_in_json() {
    let mut cfg = ServerConfig::default();
    cfg.serverless.max_body_bytes = 256 * 1024;
    cfg.max_upload_bytes = 4 * 1024 * 1024;
    let t = start(cfg).await;
    let big = vec![b' '; 512 * 1024];
    let r = chunked(
        t.addr,
        "/v1/inference",
        &[("Content-Type", "application/json")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["code"], "BODY_TOO_LARGE");
    // The ComfyUI family takes it (it is under 4 MB) ...
    let mut body = json!({"prompt": text_workflow("x")})
        .to_string()
        .into_bytes();
    body.extend(std::iter::repeat_n(b' ', 512 * 1024));
    let r = chunked(
        t.addr,
        "/prompt",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // ... and cuts at its own limit, in its own JSON.
    let big = vec![b' '; 5 * 1024 * 1024];
    let r = chunked(
        t.addr,
        "/prompt",
        &[("Content-Type", "application/json")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("length limit"));
    t.stop().await;
}

/// Defect 10: every error is JSON — 405s, bad UTF-8 in a path, a malformed multipart body,
/// an upgrade-less /ws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let cases: Vec<(Resp, u16)> = vec![
        (request(addr, "DELETE", "/prompt", &[], b"").await, 405),
        (request(addr, "PUT", "/api/history", &[], b"").await, 405),
        (get(addr, "/history/%FF%FE").await, 400),
        (get(addr, "/api/jobs/%C0").await, 400),
        (
            request(
                addr,
                "POST",
                "/upload/image",
                &[("Content-Type", "text/plain")],
                b"hello",
            )
            .await,
            400,
        ),
        (
            request(
                addr,
                "POST",
                "/upload/image",
                &[("Content-Type", "multipart/form-data; boundary=X")],
                b"--X\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nabc",
            )
            .await,
            400,
        ),
        (get(addr, "/ws").await, 400),
    ];
    for (i, (r, status)) in cases.iter().enumerate() {
        assert_eq!(
            r.status,
            *status,
            "case {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "case {i}"
        );
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(!msg.is_empty(), "case {i}");
    }
    assert_eq!(cases[0].0.json()["error"], "method not allowed");
    assert!(cases[0].0.header("allow").is_some());
    // Serverless paths answer with a code.
    let r = request(addr, "DELETE", "/v1/inference", &[], b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json(),
        json!({"code": "METHOD_NOT_ALLOWED", "message": "method not allowed"})
    );
    let r = get(addr, "/v1/requests/%FF/status").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "INVALID_REQUEST");
    t.stop().await;
}

/// Defects 8, 9 and 11: uploads through a symlinked subfolder, onto a symlink, and with a
/// 10,000-character name.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_act_outside_the_folder() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let outside = tempfile::tempdir().unwrap();
    let input = t.paths().input;
    std::os::unix::fs::symlink(outside.path(), input.join("link")).unwrap();
    let png = png_bytes(2, 2, 1);
    let r = upload(
        addr,
        "/upload/image",
        &[
            ("image", Some("a.png"), &png),
            ("subfolder", None, b"link/made_here"),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "subfolder 'link/made_here' resolves outside its folder"
    );
    assert!(
        !outside.path().join("made_here").exists(),
        "a folder was created outside the data dir"
    );
    // A name held by a symlink to an outside file: never compared, never written through.
    let secret = outside.path().join("secret.png");
    std::fs::write(&secret, &png).unwrap();
    std::os::unix::fs::symlink(&secret, input.join("s.png")).unwrap();
    let same = upload(addr, "/upload/image", &[("image", Some("s.png"), &png)]).await;
    let other = png_bytes(2, 2, 9);
    let differ = upload(addr, "/upload/image", &[("image", Some("s.png"), &other)]).await;
    assert_eq!(same.json()["name"], "s (1).png");
    assert_eq!(differ.json()["name"], "s (2).png");
    assert_eq!(std::fs::read(&secret).unwrap(), png);
    // An over-long name is a 400, not a 500.
    let long = format!("{}.png", "n".repeat(10_000));
    let r = upload(addr, "/upload/image", &[("image", Some(&long), &png)]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "the image's file name is 10004 bytes long; at most 239 are allowed"
    );
    let long_sub = "d".repeat(300);
    let r = upload(
        addr,
        "/upload/image",
        &[
            ("image", Some("a.png"), &png),
            ("subfolder", None, long_sub.as_bytes()),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    let r = get(addr, &format!("/view?filename={}", "v".repeat(5000))).await;
    assert_eq!(r.status, 400);
    t.stop().await;
}

/// Defect 15: a small PNG that declares a huge image is refused before decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused() {
    let t = start(ServerConfig::default()).await;
    let (w, h) = (6000u32, 6000u32);
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&vec![0u8; (w * h) as usize]).unwrap();
    }
    assert!(png.len() < 200_000, "{}", png.len());
    std::fs::write(t.paths().input.join("bomb.png"), &png).unwrap();
    let r = get(t.addr, "/view?filename=bomb.png&type=input&preview=webp;90").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "'bomb.png' cannot be shown: the image is 6000x6000; at most 33554432 pixels are decoded"
    );
    // The plain file is still served as it is (no decoding).
    let r = get(t.addr, "/view?filename=bomb.png&type=input").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), png.len());
    t.stop().await;
}

/// The socket refuses oversized and junk messages without harm to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_junk_and_oversized_messages() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let t = start(ServerConfig::default()).await;
    let mut ws = ws_connect(t.addr, "clientId=junk").await;
    assert_eq!(ws_next(&mut ws).await["type"], "status");
    ws.send(Message::Binary(vec![0xff; 1000].into()))
        .await
        .unwrap();
    ws.send(Message::Text("{not json".into())).await.unwrap();
    ws.send(Message::Text("[1,2,3]".into())).await.unwrap();
    // Over the 64 KiB message limit: the server closes this socket.
    let _ = ws.send(Message::Text("x".repeat(200 * 1024).into())).await;
    let mut closed = false;
    while let Ok(Some(m)) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        match m {
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "the socket stayed open after a 200 KiB message");
    // A long clientId is refused; the server still answers.
    let r = get(t.addr, &format!("/ws?clientId={}", "c".repeat(300))).await;
    assert_eq!(r.status, 400);
    assert_eq!(get(t.addr, "/prompt").await.status, 200);
    let mut ws = ws_connect(t.addr, "clientId=after").await;
    assert_eq!(ws_next(&mut ws).await["type"], "status");
    t.stop().await;
}

/// Defects 13 and 14: a wrongly typed field is a 400 naming it, and deployments belong to
/// the token that created them (admin tokens see all; the operator's files are shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_belong_to_their_token_and_fields_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let deployments = dir.path().join("deployments");
    std::fs::create_dir_all(&deployments).unwrap();
    std::fs::write(
        deployments.join("shared.json"),
        json!({"id": "shared", "name": "Shared", "workflow": text_workflow("s")}).to_string(),
    )
    .unwrap();
    let mut cfg = tokens(&["root"]);
    cfg.serverless.deployments_dir = deployments.clone();
    let t = start_in(dir, None, cfg).await;
    let addr = t.addr;
    let r = with_token(
        addr,
        "POST",
        "/prod/v1/deployments",
        "alice-secret",
        &json!({"name": "mine", "workflow_api_json": text_workflow("a")}),
    )
    .await;
    assert_eq!(r.status, 201);
    let id = r.json()["deployment_id"].as_str().unwrap().to_string();
    let ids = |r: Resp| -> Vec<String> {
        r.json()["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deployment_id"].as_str().unwrap().to_string())
            .collect()
    };
    let list =
        |tok: &'static str| with_token(addr, "GET", "/prod/v1/deployments", tok, &Value::Null);
    assert_eq!(
        ids(list("alice-secret").await),
        vec!["shared".to_string(), id.clone()]
    );
    assert_eq!(ids(list("bob-secret").await), vec!["shared".to_string()]);
    assert_eq!(
        ids(list("root-secret").await),
        vec!["shared".to_string(), id.clone()]
    );
    let path = format!("/prod/v1/deployments/{id}");
    for (m, p) in [
        ("GET", path.clone()),
        ("GET", format!("{path}/schema")),
        ("POST", format!("{path}/inference")),
        ("DELETE", path.clone()),
    ] {
        let r = with_token(addr, m, &p, "bob-secret", &json!({})).await;
        assert_eq!(r.status, 404, "{m} {p}");
        assert_eq!(r.json()["code"], "DEPLOYMENT_NOT_FOUND");
    }
    // Anyone runs the shared one; only an admin deletes it.
    let r = with_token(
        addr,
        "POST",
        "/prod/v1/deployments/shared/inference",
        "bob-secret",
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = with_token(
        addr,
        "DELETE",
        "/prod/v1/deployments/shared",
        "bob-secret",
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "FORBIDDEN");
    // Wrong types are named.
    let r = with_token(
        addr,
        "POST",
        &format!("{path}/inference"),
        "alice-secret",
        &json!({"webhook": 5}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "webhook: invalid type: integer `5`, expected a string"
    );
    let r = with_token(
        addr,
        "POST",
        &format!("{path}/inference"),
        "alice-secret",
        &json!({"webhook_intermediate_status": "yes"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "INVALID_REQUEST");
    let r = with_token(
        addr,
        "POST",
        "/prod/v1/deployments",
        "alice-secret",
        &json!({"name": 7, "workflow_api_json": text_workflow("a")}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "name: invalid type: integer `7`, expected a string"
    );
    // The owner (and an admin) delete it.
    let r = with_token(addr, "DELETE", &path, "root-secret", &Value::Null).await;
    assert_eq!(r.status, 200);
    t.stop().await;
}

/// Defect 15: one ai-toolkit request could carry 10,000 prompts; and its fields are typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_toolkit_bodies_are_bounded_and_typed() {
    let t = start(ServerConfig::default()).await;
    let prompts: Vec<Value> = (0..10_000)
        .map(|i| json!({"prompt": format!("p{i}")}))
        .collect();
    let r = post_json(
        t.addr,
        "/v1/inference",
        &json!({"model": "sd15", "loras": [{"path": "x.safetensors"}], "prompts": prompts}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"code": "INVALID_REQUEST",
               "message": "prompts: 10000 prompts in one request; at most 32 are allowed"})
    );
    let r = post_json(
        t.addr,
        "/v1/inference",
        &json!({"model": "sd15", "prompts": [{"prompt": "a", "width": "wide"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "prompts[0].width: invalid type: string \"wide\", expected i64"
    );
    t.stop().await;
}

/// Internal failures answer a stable message, never internal text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_do_not_leak() {
    let e =
        comfyrs::server::error::ApiError::internal("no such table: jobs (/secret/path/comfyrs.db)");
    assert_eq!(e.status, 500);
    assert_eq!(
        e.body,
        json!({"error": "internal server error; the server log has the cause"})
    );
    let e = comfyrs::server::serverless::errors::ServerlessError::internal("disk I/O error");
    assert_eq!(
        e.message,
        "internal server error; the server log has the cause"
    );
}

/// Defect 2 at the encoder: a prompt past 64 windows of 77 tokens is a clear error naming the
/// input instead of gigabytes of conditioning (the text came through a link, or was under the
/// literal limit).
#[test]
fn an_over_long_prompt_is_refused_by_the_text_encoder() {
    use comfyrs::models::fixture::TINY_SD15_PATH;
    use comfyrs::models::text::clip::tokenizer::MAX_PROMPT_WINDOWS;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TINY_SD15_PATH);
    let ck = comfyrs::models::checkpoint::load_sd1_checkpoint(
        path,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .expect("fixture loads");
    // 75 one-token words fill a window.
    let at_limit = "cat ".repeat(75 * MAX_PROMPT_WINDOWS);
    assert_eq!(ck.clip.tokenize(&at_limit).len(), MAX_PROMPT_WINDOWS);
    let over = "cat ".repeat(75 * MAX_PROMPT_WINDOWS + 1);
    let e = ck.clip.encode_text(&over, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "bad input: text: the prompt makes 65 windows of 77 tokens; at most 64 (4800 tokens) are encoded"
    );
}

/// `--max-memory`: above the ceiling, work is refused with a clear 503 (in each family's
/// JSON) instead of being taken on; below it, the same requests run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_memory_refuses_work_over_the_ceiling() {
    use comfyrs::queue::memory::resident_bytes;
    let rss = resident_bytes().expect("linux");
    let t = start(ServerConfig {
        max_memory: Some(rss / 2),
        ..Default::default()
    })
    .await;
    let r = post_json(t.addr, "/prompt", &json!({"prompt": text_workflow("x")})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("10"));
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("the server is at its memory ceiling: ") && msg.ends_with("retry later"),
        "{msg}"
    );
    let r = post_json(t.addr, "/v1/inference", &json!({"model": "sd15"})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "OVER_MEMORY_CEILING");
    // Reading stays possible.
    assert_eq!(get(t.addr, "/queue").await.status, 200);
    t.stop().await;

    let t = start(ServerConfig {
        // Headroom for the other tests of this binary running at the same time.
        max_memory: Some(rss + (2 << 30)),
        ..Default::default()
    })
    .await;
    let r = post_json(t.addr, "/prompt", &json!({"prompt": text_workflow("x")})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A declared body that would cross it once parsed is refused before it is read: only
    // the head is sent.
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let head = format!(
        "POST /prompt HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        t.addr,
        400u64 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = vec![0u8; 4096];
    let n = s.read(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("--max-memory"), "{text}");
    t.stop().await;
}
