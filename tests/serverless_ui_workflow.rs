//! Serverless deployments created from a UI-format workflow (what the editor saves) are
//! stored converted to API format, with the original kept; POST /prompt stays API-only.

mod server_common;

use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::path::Path;

const TOKEN: &str = "alice-secret";

fn data(rel: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ui_workflows")
        .join(rel);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[tokio::test]
async fn a_ui_workflow_deployment_is_stored_converted_with_the_original_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![ApiToken {
                name: "alice".into(),
                token: TOKEN.into(),
            }],
            // An admin token also opens the ComfyUI routes (POST /prompt below).
            admins: vec!["alice".into()],
            deployments_dir: dir.path().join("deployments"),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = start_in(dir, None, cfg).await;
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let ui = data("rules/reroutes.json");
    let body = json!({"name": "from the editor", "workflow_api_json": ui});
    let r = request(
        s.addr,
        "POST",
        "/prod/v1/deployments",
        &headers,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["deployment_id"].as_str().unwrap().to_string();
    let shown = request(
        s.addr,
        "GET",
        &format!("/prod/v1/deployments/{id}"),
        &headers,
        b"",
    )
    .await
    .json();
    assert_eq!(shown["workflow_api_json"], data("rules/reroutes.api.json"));
    assert_eq!(shown["ui_workflow"], ui);

    // A UI workflow needing a class comfyrs lacks is refused, naming it.
    let mut bad = data("rules/reroutes.json");
    bad["nodes"].as_array_mut().unwrap().push(
        json!({"id": 99, "type": "VHS_VideoCombine", "mode": 0, "inputs": [], "outputs": []}),
    );
    let r = request(
        s.addr,
        "POST",
        "/prod/v1/deployments",
        &headers,
        json!({"name": "x", "workflow_api_json": bad})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["code"], "INVALID_WORKFLOW", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("VHS_VideoCombine (custom nodes: comfyui-videohelpersuite)"),
        "{e}"
    );

    // POST /prompt takes API format only, as in ComfyUI: a UI workflow is not a prompt.
    let r = request(
        s.addr,
        "POST",
        "/prompt",
        &headers,
        json!({"prompt": ui}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["type"], "invalid_prompt");
    s.server.shutdown().await;
}
