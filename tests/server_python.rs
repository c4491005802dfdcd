//! `examples/comfy_client.py` (standard-library Python) against an in-process server, when
//! python3 is present.

mod server_common;

use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_full_flow() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the Python client test");
        return;
    }
    let t = start(ServerConfig::default()).await;
    let wf = json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "from python"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "TestSavePng", "inputs": {"prefix": "py"}}
    });
    let wf_path = t.dir.path().join("wf.json");
    std::fs::write(&wf_path, wf.to_string()).unwrap();
    let out_dir = t.dir.path().join("downloads");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/comfy_client.py");
    let addr = t.addr.to_string();
    let (wf_s, out_s) = (wf_path.clone(), out_dir.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--server", &addr, "--workflow"])
            .arg(&wf_s)
            .arg("--out")
            .arg(&out_s)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let s = &summary["summary"];
    assert_eq!(s["status"], "success");
    let events: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let pos = |k: &str| {
        events
            .iter()
            .position(|e| *e == k)
            .unwrap_or_else(|| panic!("{k} in {events:?}"))
    };
    assert_eq!(events[0], "status");
    assert!(pos("execution_start") < pos("execution_cached"));
    assert!(pos("execution_cached") < pos("executing"));
    assert!(pos("executing") < pos("executed"));
    assert!(pos("executed") < pos("execution_success"));
    assert_eq!(*events.last().unwrap(), "executing");
    assert_eq!(s["outputs"]["2"]["text"], json!(["from python"]));
    let downloaded = s["downloaded"][0].as_str().unwrap();
    let name = std::path::Path::new(downloaded).file_name().unwrap();
    assert_eq!(
        std::fs::read(downloaded).unwrap(),
        std::fs::read(t.paths().output.join(name)).unwrap()
    );
    t.server.shutdown().await;
}
