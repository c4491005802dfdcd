//! The real `comfyrs serve` binary: a restart in the middle of a queue, and graceful shutdown.

#[path = "../../tests/server_common/mod.rs"]
mod server_common;

use serde_json::json;
use server_common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `comfyrs serve` on an ephemeral port; returns the process and its address.
fn spawn_server(data: &std::path::Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(["serve", "--port", "0", "--dev-nodes", "--data-dir"])
        .arg(data)
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start comfyrs serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server prints its address");
    (child, addr.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(dir.path(), &[]);
    let slow = post_json(
        addr,
        "/prompt",
        &json!({"prompt": sleep_workflow(60_000, "slow")}),
    )
    .await
    .json();
    let slow_id = slow["prompt_id"].as_str().unwrap().to_string();
    wait_queue(addr, 10, |q| {
        q["queue_running"].as_array().unwrap().len() == 1
    })
    .await;
    let mut queued = Vec::new();
    for i in 0..3 {
        let r = post_json(
            addr,
            "/prompt",
            &json!({"prompt": text_workflow(&format!("job {i}")), "client_id": "c"}),
        )
        .await
        .json();
        queued.push(r["prompt_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        get(addr, "/queue").await.json()["queue_pending"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Kill it hard: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, addr) = spawn_server(dir.path(), &[]);
    for id in &queued {
        let h = wait_history(addr, id, 30).await;
        assert_eq!(h["status"]["status_str"], "success", "{h}");
        assert_eq!(h["prompt"][3]["client_id"], "c");
    }
    let h = wait_history(addr, &slow_id, 5).await;
    assert_eq!(h["status"]["status_str"], "error");
    assert_eq!(h["status"]["completed"], false);
    let msg = &h["status"]["messages"][0];
    assert_eq!(msg[0], "execution_error");
    assert!(
        msg[1]["exception_message"]
            .as_str()
            .unwrap()
            .contains("server stopped"),
        "{msg}"
    );
    let job = get(addr, &format!("/api/jobs/{slow_id}")).await.json();
    assert_eq!(job["status"], "failed");
    assert!(job["error"].as_str().unwrap().contains("server stopped"));
    // The counter survives too: a new job is numbered after the old ones.
    let r = post_json(addr, "/prompt", &json!({"prompt": text_workflow("later")}))
        .await
        .json();
    assert_eq!(r["number"], 4);
    let later = r["prompt_id"].as_str().unwrap().to_string();
    let h = wait_history(addr, &later, 30).await;
    assert_eq!(h["status"]["status_str"], "success", "{h}");
    let q = get(addr, "/queue").await.json();
    assert_eq!(q["queue_running"], json!([]));
    assert_eq!(q["queue_pending"], json!([]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_the_running_job_and_keeps_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(dir.path(), &[]);
    let mut ws = ws_connect(addr, "clientId=w").await;
    let _ = ws_next(&mut ws).await;
    let slow = post_json(
        addr,
        "/prompt",
        &json!({"prompt": sleep_workflow(60_000, "slow")}),
    )
    .await
    .json();
    let slow_id = slow["prompt_id"].as_str().unwrap().to_string();
    wait_queue(addr, 10, |q| {
        q["queue_running"].as_array().unwrap().len() == 1
    })
    .await;
    let pending = post_json(addr, "/prompt", &json!({"prompt": text_workflow("p")}))
        .await
        .json();
    let pending_id = pending["prompt_id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(ws);

    let (mut child, addr) = spawn_server(dir.path(), &[]);
    let h = wait_history(addr, &slow_id, 5).await;
    assert_eq!(h["status"]["status_str"], "error");
    let kinds: Vec<&str> = h["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    // Clients saw it interrupted; the server stopped it, so it failed, and says why.
    assert_eq!(kinds.last(), Some(&"execution_error"), "{kinds:?}");
    assert!(kinds.contains(&"execution_interrupted"), "{kinds:?}");
    let err = &h["status"]["messages"].as_array().unwrap().last().unwrap()[1];
    assert_eq!(err["exception_type"], "ServerShutdown");
    assert_eq!(err["exception_message"], comfyrs::store::SHUTDOWN_REASON);
    let job = get(addr, &format!("/api/jobs/{slow_id}")).await.json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"], comfyrs::store::SHUTDOWN_REASON);
    assert_eq!(
        wait_history(addr, &pending_id, 30).await["status"]["status_str"],
        "success"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn non_loopback_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(["serve", "--listen", "0.0.0.0", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}

/// The shipped binary's server lists the packs' classes in `/object_info` with
/// `python_module: "custom_nodes.<pack>"`, next to the core classes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_object_info_has_the_pack_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(dir.path(), &[]);
    let one = get(addr, "/object_info/MathExpression%7Cpysssss")
        .await
        .json();
    assert_eq!(
        one["MathExpression|pysssss"]["python_module"],
        "custom_nodes.ComfyUI-Custom-Scripts"
    );
    let all = get(addr, "/object_info").await.json();
    assert_eq!(
        all["ImageResize+"]["python_module"],
        "custom_nodes.ComfyUI_essentials"
    );
    assert_eq!(all["KSampler"]["python_module"], "nodes");
    child.kill().unwrap();
    child.wait().unwrap();
}
