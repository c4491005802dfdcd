//! Node packs' web assets over real HTTP, at ComfyUI's routes (server.py /extensions,
//! app/custom_node_manager.py /i18n and /workflow_templates), from the self-written pack in
//! tests/node_hosts/custom_nodes; and the answers without packs.

mod server_common;

use comfyrs::remote::comfyui::PackAssets;
use comfyrs::server::pack_web::PackWeb;
use comfyrs::server::ServerConfig;
use serde_json::json;
use server_common::*;
use std::path::PathBuf;
use std::sync::Arc;

fn packs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node_hosts/custom_nodes")
}

#[tokio::test]
async fn pack_assets_are_served_where_comfyui_serves_them() {
    // What the ComfyUI host reports as EXTENSION_WEB_DIRS for this folder.
    let web = json!({"demo_pack": packs().join("demo_pack/web/js").display().to_string()});
    let config = ServerConfig {
        custom_nodes: PackWeb {
            assets: Some(Arc::new(PackAssets::new(&packs(), &web))),
            hosts: json!([{"name": "comfyui", "nodes": ["DemoBrighten"], "not_runnable": []}]),
        },
        ..Default::default()
    };
    let t = start(config).await;
    for prefix in ["", "/api"] {
        let r = get(t.addr, &format!("{prefix}/extensions")).await;
        assert_eq!(r.json(), json!(["/extensions/demo_pack/demo.js"]));
        let r = get(t.addr, &format!("{prefix}/i18n")).await;
        assert_eq!(
            r.json(),
            json!({"en": {"nodeDefs": {"DemoBrighten": {"display_name": "Brighten (demo, en)"}}}})
        );
        let r = get(t.addr, &format!("{prefix}/workflow_templates")).await;
        assert_eq!(r.json(), json!({"demo_pack": ["split"]}));
    }
    let r = get(t.addr, "/extensions/demo_pack/demo.js").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("javascript"));
    assert!(String::from_utf8_lossy(&r.body).contains("registerExtension"));
    let r = get(t.addr, "/api/workflow_templates/demo_pack/split.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["1"]["class_type"], "DemoSplitWords");
    // Nothing outside the web folder, nothing of unknown packs.
    for bad in [
        "/extensions/demo_pack/../__init__.py",
        "/extensions/demo_pack/%2e%2e/__init__.py",
        "/extensions/other/demo.js",
        "/api/workflow_templates/demo_pack/../__init__.py",
    ] {
        let r = get(t.addr, bad).await;
        assert_eq!(r.status, 404, "{bad}");
    }
    let r = get(t.addr, "/comfyrs/node_hosts").await;
    assert_eq!(r.json()[0]["nodes"], json!(["DemoBrighten"]));
    t.stop().await;
}

#[tokio::test]
async fn without_packs_the_routes_answer_empty() {
    let t = start(ServerConfig::default()).await;
    assert_eq!(get(t.addr, "/extensions").await.json(), json!([]));
    assert_eq!(get(t.addr, "/i18n").await.json(), json!({}));
    assert_eq!(
        get(t.addr, "/api/workflow_templates").await.json(),
        json!({})
    );
    assert_eq!(get(t.addr, "/comfyrs/node_hosts").await.json(), json!([]));
    assert_eq!(get(t.addr, "/extensions/x/y.js").await.status, 404);
    t.stop().await;
}
