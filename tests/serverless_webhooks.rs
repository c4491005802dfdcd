//! §5 Webhooks end to end: a receiver in the test (a local HTTP server) fails the first
//! deliveries, checks every Standard Webhooks signature, sees the retries with the same
//! webhook-id and deduplicates; a restart with pending deliveries and queued requests loses
//! nothing; webhook URLs pointing into internal networks are refused at submit time and
//! again at delivery time.

mod server_common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use comfyrs::store::DeliveryState;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use server_common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "hook-token";
const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    id: String,
    body: Value,
    answered: u16,
}

/// A webhook receiver: answers 503 to the first `fail_first` POSTs (and to all while
/// `down`), verifies each signature, records everything.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    fail_first: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    bad_signatures: Arc<AtomicUsize>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    if sig != expected || !fresh {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
    }
    let fail = r.down.load(Ordering::SeqCst)
        || r.fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let status = if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    r.hits.lock().unwrap().push(Hit {
        id,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        answered: status.as_u16(),
    });
    status
}

async fn start_receiver(r: Receiver) -> SocketAddr {
    let app = axum::Router::new().route("/hook", post(hook)).with_state(r);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
    /// The events delivered (2xx), deduplicated by webhook-id, in first-delivery order.
    fn delivered(&self) -> Vec<Hit> {
        let mut seen = std::collections::HashSet::new();
        self.hits()
            .into_iter()
            .filter(|h| h.answered == 200 && seen.insert(h.id.clone()))
            .collect()
    }
    async fn wait_delivered(&self, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.delivered();
            if pred(&d) {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "webhooks never arrived: {:?}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn config(dir: &Path) -> ServerConfig {
    let mut s = ServerlessConfig {
        tokens: vec![ApiToken {
            name: "hooks".into(),
            token: TOKEN.into(),
        }],
        deployments_dir: dir.join("deployments"),
        ..Default::default()
    };
    s.webhooks.secret = Some(format!("whsec_{SECRET_B64}"));
    s.webhooks.base_delay = Duration::from_millis(40);
    // The receivers of these tests listen on loopback, which the SSRF guard refuses.
    s.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    ServerConfig {
        serverless: s,
        ..Default::default()
    }
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("deployments");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("saver.json"),
        json!({"id": "saver", "name": "saver",
               "workflow": {"1": {"class_type": "TestSavePng", "inputs": {"prefix": "hook"}}}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("sleeper.json"),
        json!({"id": "sleeper", "name": "sleeper", "workflow": sleep_workflow(60_000, "z")})
            .to_string(),
    )
    .unwrap();
    dir
}

async fn submit(addr: SocketAddr, deployment: &str, query: &str, body: Value) -> Value {
    let r = request(
        addr,
        "POST",
        &format!("/prod/v1/deployments/{deployment}/inference{query}"),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_retried_with_stable_ids() {
    let recv = Receiver::default();
    recv.fail_first.store(3, Ordering::SeqCst);
    let raddr = start_receiver(recv.clone()).await;
    let dir = data_dir();
    let cfg = config(dir.path());
    let s = start_in(dir, None, cfg).await;
    let url = format!("http://{raddr}/hook");
    // The query's webhook wins over the body's.
    let sub = submit(
        s.addr,
        "saver",
        &format!("?webhook={}&webhook_intermediate_status=true", encode(&url)),
        json!({"webhook": "http://127.0.0.1:9/never", "overrides": {}}),
    )
    .await;
    let rid = sub["request_id"].as_str().unwrap().to_string();

    // Retries may reorder the events (a failed `in_queue` can land after
    // `succeeded`), so wait for all three distinct events.
    let events = recv
        .wait_delivered(|d| {
            let statuses: std::collections::HashSet<_> =
                d.iter().filter_map(|h| h.body["status"].as_str()).collect();
            statuses.len() >= 3 && statuses.contains("succeeded")
        })
        .await;
    // Every event of the request, once each after dedup.
    let mut words: Vec<&str> = events
        .iter()
        .map(|h| h.body["status"].as_str().unwrap())
        .collect();
    words.sort();
    assert_eq!(
        words,
        ["in_progress", "in_queue", "succeeded"],
        "{events:?}"
    );
    for h in &events {
        assert_eq!(h.body["request_id"], rid);
    }
    // The first three POSTs failed and were retried under the same webhook-id.
    let hits = recv.hits();
    assert!(hits.len() >= 6, "{hits:?}");
    assert_eq!(hits.iter().filter(|h| h.answered == 503).count(), 3);
    for failed in hits.iter().filter(|h| h.answered == 503) {
        assert!(
            hits.iter().any(|h| h.id == failed.id && h.answered == 200),
            "{} was never redelivered",
            failed.id
        );
    }
    assert_eq!(recv.bad_signatures.load(Ordering::SeqCst), 0);
    // Ids are stable per event and distinct between events.
    let ids: std::collections::HashSet<_> = events.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids.len(), 3);

    // The final event carries what the result endpoint says.
    let res = request(
        s.addr,
        "GET",
        &format!("/prod/v1/deployments/saver/requests/{rid}/result"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await
    .json();
    let last = &events
        .iter()
        .find(|h| h.body["status"] == "succeeded")
        .unwrap()
        .body;
    assert_eq!(last["outputs"], res["outputs"]);
    assert!(last["outputs"]["1"]["images"][0]["url"].is_string());

    // The store agrees: all delivered, with the failed attempts counted. The
    // store is written after the receiver answers, so give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = s.server.queue.store().deliveries_of(&rid).unwrap();
        if rows.iter().all(|d| d.state == DeliveryState::Delivered)
            || std::time::Instant::now() > deadline
        {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|d| d.state == DeliveryState::Delivered));
    let attempts: u32 = rows.iter().map(|d| d.attempts).sum();
    assert_eq!(attempts, 6);
    assert!(rows.iter().all(|d| d.last_error.is_none()));

    // Without webhook_intermediate_status only the final event is sent.
    let sub2 = submit(s.addr, "saver", "", json!({"webhook": url})).await;
    let rid2 = sub2["request_id"].as_str().unwrap().to_string();
    let events = recv
        .wait_delivered(|d| d.iter().any(|h| h.body["request_id"] == rid2.as_str()))
        .await;
    let mine: Vec<_> = events
        .iter()
        .filter(|h| h.body["request_id"] == rid2.as_str())
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].body["status"], "succeeded");

    // A bad webhook URL is refused before anything is queued.
    let r = request(
        s.addr,
        "POST",
        "/prod/v1/deployments/saver/inference",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        json!({"webhook": "ftp://x/y"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "INVALID_WEBHOOK");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_pending_deliveries_and_queued_requests() {
    let recv = Receiver::default();
    recv.down.store(true, Ordering::SeqCst);
    let raddr = start_receiver(recv.clone()).await;
    let url = format!("http://{raddr}/hook");
    let dir = data_dir();
    let cfg = config(dir.path());
    let s = start_in(dir, None, cfg.clone()).await;

    // A finished request whose final event cannot be delivered yet.
    let done = submit(s.addr, "saver", "", json!({"webhook": url})).await;
    let done_id = done["request_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = s.server.queue.store().deliveries_of(&done_id).unwrap();
        if rows.first().is_some_and(|d| d.attempts >= 2) {
            assert_eq!(rows[0].state, DeliveryState::Pending);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_id = recv.hits()[0].id.clone();
    // A running request and a queued one behind it.
    let running = submit(s.addr, "sleeper", "", json!({"webhook": url})).await;
    let running_id = running["request_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.server.queue.running().is_none_or(|r| r.id != running_id) {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = submit(s.addr, "saver", "", json!({"webhook": url})).await;
    let queued_id = queued["request_id"].as_str().unwrap().to_string();

    let dir = s.stop().await;
    recv.down.store(false, Ordering::SeqCst);
    let s = start_in(dir, None, cfg).await;

    // Everything arrives: the old pending event (same id), the interrupted one's final event,
    // and the queued request, which ran after the restart.
    let events = recv
        .wait_delivered(|d| {
            [&done_id, &running_id, &queued_id]
                .iter()
                .all(|id| d.iter().any(|h| h.body["request_id"] == id.as_str()))
        })
        .await;
    let of = |id: &str| {
        events
            .iter()
            .find(|h| h.body["request_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(of(&done_id).id, first_id);
    assert_eq!(of(&done_id).body["status"], "succeeded");
    // The server, not the client, stopped the running one: it failed, and says why.
    let interrupted = of(&running_id).body;
    assert_eq!(interrupted["status"], "failed", "{interrupted}");
    assert_eq!(interrupted["error"]["type"], "ServerShutdown");
    assert_eq!(
        interrupted["error"]["message"],
        comfyrs::store::SHUTDOWN_REASON
    );
    assert!(interrupted.get("outputs").is_none(), "{interrupted}");
    let st = request(
        s.addr,
        "GET",
        &format!("/prod/v1/deployments/sleeper/requests/{running_id}/status"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await
    .json();
    assert_eq!(st["status"], "failed", "{st}");
    assert_eq!(of(&queued_id).body["status"], "succeeded");
    assert_eq!(recv.bad_signatures.load(Ordering::SeqCst), 0);
    s.server.shutdown().await;
}

/// Every pending delivery of `request_id` settled (delivered or given up), within a deadline.
async fn wait_settled(s: &TestServer, request_id: &str) -> Vec<comfyrs::store::Delivery> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = s.server.queue.store().deliveries_of(request_id).unwrap();
        if !rows.is_empty() && rows.iter().all(|d| d.state != DeliveryState::Pending) {
            return rows;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_targets_pass_the_ssrf_guard() {
    let recv = Receiver::default();
    let raddr = start_receiver(recv.clone()).await;
    let port = raddr.port();
    let dir = data_dir();
    let mut cfg = config(dir.path());
    // No allow-list: the guard as it runs in production.
    cfg.serverless.webhooks.allow_networks.clear();
    let s = start_in(dir, None, cfg).await;

    // Refused when submitted: literals, and a name that resolves to loopback.
    let cases = [
        (
            format!("http://127.0.0.1:{port}/hook"),
            "127.0.0.1 is a non-public address (loopback); sending webhooks to it is refused",
        ),
        (
            "https://10.1.2.3/hook".to_string(),
            "10.1.2.3 is a non-public address (private); sending webhooks to it is refused",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254 is a non-public address (cloud metadata); sending webhooks to it is refused",
        ),
        (
            format!("http://[::1]:{port}/hook"),
            "[::1] is a non-public address (loopback); sending webhooks to it is refused",
        ),
        (
            format!("http://localhost:{port}/hook"),
            "localhost resolves to ",
        ),
    ];
    for (url, want) in &cases {
        // In the body and in the query alike.
        for (query, body) in [
            (String::new(), json!({"webhook": url})),
            (format!("?webhook={}", encode(url)), json!({})),
        ] {
            let r = request(
                s.addr,
                "POST",
                &format!("/prod/v1/deployments/saver/inference{query}"),
                &[
                    ("Authorization", &format!("Bearer {TOKEN}")),
                    ("Content-Type", "application/json"),
                ],
                body.to_string().as_bytes(),
            )
            .await;
            assert_eq!(r.status, 400, "{url}");
            let e = r.json();
            assert_eq!(e["code"], "WEBHOOK_REFUSED", "{url}: {e}");
            let msg = e["message"].as_str().unwrap();
            let prefix = format!("webhook {url} refused: {want}");
            assert!(msg.starts_with(&prefix), "{url}: {msg}");
            if url.contains("localhost") {
                assert!(
                    msg.ends_with(
                        "a non-public address (loopback); sending webhooks to it is refused"
                    ),
                    "{msg}"
                );
            }
        }
    }
    // Nothing was queued or run for any of them.
    assert!(s.server.queue.store().all_jobs().unwrap().is_empty());

    // Checked again at delivery time (DNS can change between submit and delivery): events
    // whose URL now points inside are failed at once with the reason, never sent, never
    // retried, and the server carries on.
    let store = s.server.queue.store();
    let targets = [
        (
            "msg_dns",
            format!("http://localhost:{port}/hook"),
            "refused: localhost resolves to ",
        ),
        (
            "msg_meta",
            "http://169.254.169.254/hook".to_string(),
            "refused: 169.254.169.254 is a non-public address (cloud metadata); sending webhooks to it is refused",
        ),
        (
            "msg_lo",
            format!("http://127.0.0.1:{port}/hook"),
            "refused: 127.0.0.1 is a non-public address (loopback); sending webhooks to it is refused",
        ),
    ];
    for (id, url, _) in &targets {
        assert!(store
            .add_delivery(id, &format!("req_{id}"), url, "{}", true)
            .unwrap());
    }
    for (id, _, want) in &targets {
        let rows = wait_settled(&s, &format!("req_{id}")).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, DeliveryState::Failed, "{rows:?}");
        assert_eq!(rows[0].attempts, 1);
        let err = rows[0].last_error.as_deref().unwrap();
        assert!(err.starts_with(want), "{id}: {err}");
    }
    assert!(recv.hits().is_empty(), "{:?}", recv.hits());
    // Requests without a webhook still run.
    let sub = submit(s.addr, "saver", "", json!({})).await;
    let rid = sub["request_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = request(
            s.addr,
            "GET",
            &format!("/prod/v1/deployments/saver/requests/{rid}/status"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b"",
        )
        .await
        .json();
        if st["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.server.shutdown().await;
}
